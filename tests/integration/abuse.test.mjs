// Hostile clients against the real relay binary, over raw loopback sockets
// (node:net, so nothing normalises the bytes): request-smuggling shapes,
// oversized heads, slowloris, a reader that stalls a large stream, 10,000
// random-byte connections, thousands of bad seals, the per-IP rate limit and
// connection cap, and X-Forwarded-For from trusted and untrusted peers.
// After each case the relay must still answer /healthz.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import * as h from './lib/harness.mjs';

const CHAT = '/openai/v1/chat/completions';
const HEADER_TIMEOUT_S = 2;
const WRITE_TIMEOUT_S = 3;

let mock;
let relay;      // the general one: small timeouts, no per-IP limits
let limited;    // rate limit 2/s burst 5, trusted proxy 127.0.0.2
let capped;     // at most 4 connections per IP
let lean;       // as `relay`, for the memory measurements (see below)

before(async () => {
  mock = await h.startMock({ tls: true, threads: 2 });
  const common = { providers: h.mockProviders(mock), threads: 2 };
  relay = await h.startRelay({
    ...common, header_timeout_s: HEADER_TIMEOUT_S, body_timeout_s: 2, idle_timeout_s: 3,
    write_timeout_s: WRITE_TIMEOUT_S, max_connections_per_ip: 0, upstream_timeout_s: 10,
  });
  limited = await h.startRelay({
    ...common, rate_limit: { requests_per_s: 2, burst: 5 }, trusted_proxies: ['127.0.0.2'],
    max_connections_per_ip: 0,
  });
  capped = await h.startRelay({ ...common, max_connections_per_ip: 4, header_timeout_s: 5 });
  // RSS is the measure of "memory stays bounded". In a sanitizer build
  // AddressSanitizer holds freed blocks in a quarantine (256 MiB by default)
  // that RSS would measure instead; this relay runs without it (a no-op for
  // an ordinary build). The other relays keep the full checks.
  lean = await h.startRelay({
    ...common, header_timeout_s: HEADER_TIMEOUT_S, body_timeout_s: 2, idle_timeout_s: 3,
    write_timeout_s: WRITE_TIMEOUT_S, max_connections_per_ip: 0, upstream_timeout_s: 10,
  }, { env: { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ?? ''}:quarantine_size_mb=0:thread_local_quarantine_size_kb=0` } });
});

after(async () => {
  await h.stopAll();
});

// Writes `data` (a string, Buffer, or list of them sent `gapMs` apart) and
// collects the answer until the server closes or `timeoutMs` passes.
function exchange(port, data, { timeoutMs = 3000, localAddress, gapMs = 0, end = false } = {}) {
  return new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    const chunks = [];
    let serverClosed = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), serverClosed, ms: Date.now() - started });
    };
    const timer = setTimeout(finish, timeoutMs);
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => { serverClosed = true; finish(); });
    s.on('error', () => { serverClosed = true; finish(); });
    s.on('close', finish);
    s.on('connect', async () => {
      const parts = Array.isArray(data) ? data : [data];
      for (const p of parts) {
        if (done) return;
        s.write(p);
        if (gapMs) await h.sleep(gapMs);
      }
      if (end) s.end();
    });
  });
}

function statusOf(text) {
  const m = text.match(/^HTTP\/1\.1 (\d{3}) /);
  return m ? Number(m[1]) : 0;
}

function errorCode(text) {
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  try {
    return JSON.parse(body).error.code;
  } catch {
    return undefined;
  }
}

async function healthy(r = relay) {
  assert.equal(r.child.exitCode, null, 'the relay is still running');
  const res = await fetch(new URL('/healthz', r.url));
  assert.equal(res.status, 200, 'the relay still answers /healthz');
  await res.text();
}

function rssKiB(r) {
  return Number(readFileSync(`/proc/${r.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
}

// ---- framing the parser lets through ------------------------------------------------------

const P = CHAT;
const SMUGGLE = {
  'Content-Length with Transfer-Encoding':
    `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`,
  'Transfer-Encoding with Content-Length':
    `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`,
  'two equal Content-Lengths': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}`,
  'two different Content-Lengths': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\n{}`,
  'a Content-Length list': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}`,
  'a negative Content-Length': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n`,
  'a signed Content-Length': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}`,
  'a Content-Length past 2^64': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617\r\n\r\n{}`,
  'Transfer-Encoding gzip, chunked': `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding chunked, gzip': `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding identity': `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n{}`,
  'Transfer-Encoding xchunked': `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`,
  'two Transfer-Encoding fields': `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  'chunked on HTTP/1.0': `POST ${P} HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  'space before the colon (TE)': `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
  'space before the colon (CL)': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\n{}`,
  'obs-fold in Transfer-Encoding': `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`,
  'obs-fold in Content-Length': `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\t2\r\n\r\n{}`,
  'obs-fold in another header': `GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r\n b\r\n\r\n`,
  'bare LF line endings': `GET /healthz HTTP/1.1\nHost: x\n\n`,
  'a bare LF among CRLFs': `GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n`,
  'a bare CR': `GET /healthz HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n`,
  'a chunk size that is not hex': `POST ${P} HTTP/1.1\r\nHost: x\r\nAuthorization: __SEAL__\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
  'a negative chunk size': `POST ${P} HTTP/1.1\r\nHost: x\r\nAuthorization: __SEAL__\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n`,
  'a chunk size past 2^64': `POST ${P} HTTP/1.1\r\nHost: x\r\nAuthorization: __SEAL__\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000002\r\n{}\r\n0\r\n\r\n`,
  'a chunk longer than its size': `POST ${P} HTTP/1.1\r\nHost: x\r\nAuthorization: __SEAL__\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx\r\n0\r\n\r\n`,
  'a chunk size with a bare LF': `POST ${P} HTTP/1.1\r\nHost: x\r\nAuthorization: __SEAL__\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n`,
  'a NUL in a header value': `GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n`,
  'a header name with a space': `GET /healthz HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n`,
  'HTTP/0.9': `GET /healthz\r\n\r\n`,
  'HTTP/2 preface': `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`,
  'HTTP/1.2': `GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n`,
  'a lower-case version': `GET /healthz http/1.1\r\nHost: x\r\n\r\n`,
  'two spaces in the request line': `GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n`,
};

test('request-smuggling shapes are answered 400 bad_request and the connection is closed', async () => {
  const failures = [];
  // Shapes whose fault is in the body carry a real seal (for another body):
  // the seal's header precheck passes, so the body parser is what refuses them.
  const keys = await h.fetchKeys(relay.url);
  for (const [name, shape] of Object.entries(SMUGGLE)) {
    const raw = shape.includes('__SEAL__')
      ? shape.replace('__SEAL__', await h.seal({ keyConfig: keys, apiKey: h.randomApiKey(), path: CHAT, body: '{}' }))
      : shape;
    const r = await exchange(relay.port, raw);
    const problems = [];
    if (statusOf(r.text) !== 400) problems.push(`status ${statusOf(r.text)}`);
    if (errorCode(r.text) !== 'bad_request') problems.push(`code ${errorCode(r.text)}`);
    if (!/\r\nConnection: close\r\n/i.test(r.text)) problems.push('no Connection: close');
    if (!r.serverClosed) problems.push('connection left open');
    if ((r.text.match(/HTTP\/1\.1 \d{3} /g) ?? []).length !== 1) problems.push('more than one response');
    if (problems.length) failures.push(`${name}: ${problems.join(', ')} -- ${JSON.stringify(r.text.slice(0, 80))}`);
  }
  assert.deepEqual(failures, [], `${Object.keys(SMUGGLE).length} shapes tried`);
  await healthy();
});

test('an oversized request line or header section is answered 431 and closed', async () => {
  const cases = {
    'request line of 20 KiB': `GET /${'a'.repeat(20 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    'one 17 KiB header': `GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ${'b'.repeat(17 * 1024)}\r\n\r\n`,
    '400 small headers': `GET /healthz HTTP/1.1\r\nHost: x\r\n${'X-A: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n'.repeat(400)}\r\n`,
    'a 1 MiB header, never ending': `GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ${'b'.repeat(1 << 20)}`,
  };
  for (const [name, raw] of Object.entries(cases)) {
    const r = await exchange(relay.port, raw);
    assert.equal(statusOf(r.text), 431, `${name}: ${r.text.slice(0, 80)}`);
    assert.equal(errorCode(r.text), 'headers_too_large', name);
    assert.ok(r.serverClosed, `${name}: closed`);
  }
  await healthy();
});

// ---- slow and stalled clients ------------------------------------------------------------------

test('slowloris: 60 connections dribbling a byte a second are dropped within header_timeout_s; others are served meanwhile', async () => {
  const head = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(40);
  const parts = [...head];
  const started = Date.now();
  const slow = Array.from({ length: 60 }, () => exchange(relay.port, parts, { gapMs: 1000, timeoutMs: 15000 }));
  // While they hold their connections, normal clients are served at once.
  await h.sleep(500);
  const lat = [];
  for (let i = 0; i < 20; ++i) {
    const t = Date.now();
    await healthy();
    lat.push(Date.now() - t);
  }
  const results = await Promise.all(slow);
  const closedAfter = results.map((r) => r.ms);
  for (const r of results) {
    assert.ok(r.serverClosed, 'the relay closed the slow connection');
    assert.ok([0, 408].includes(statusOf(r.text)), `answered ${statusOf(r.text)}`);
  }
  const worst = Math.max(...closedAfter);
  console.log(`slowloris: 60 connections dropped after ${Math.min(...closedAfter)}-${worst} ms ` +
    `(header_timeout_s ${HEADER_TIMEOUT_S}); /healthz meanwhile: max ${Math.max(...lat)} ms`);
  assert.ok(worst <= HEADER_TIMEOUT_S * 1000 + 1500, `dropped within the header timeout (worst ${worst} ms)`);
  assert.ok(Math.max(...lat) < 1000, 'others were served meanwhile');
  assert.ok(Date.now() - started < 10000);
  await healthy();
});

test('a client that stops reading a large stream: relay memory stays bounded and the stream is dropped', async () => {
  await mock.reset();
  const keys = await h.fetchKeys(lean.url);
  const body = JSON.stringify({ model: 'm', stream: true, messages: [], mock: { events: 200000 } });
  const authorization = await h.seal({ keyConfig: keys, apiKey: h.randomApiKey(), path: CHAT, body });
  const before = rssKiB(lean);
  const s = net.connect(lean.port, '127.0.0.1');
  let received = 0;
  s.on('data', (d) => { received += d.length; if (received > 256 * 1024) s.pause(); });
  s.on('error', () => {});
  s.write(`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: ${authorization}\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  // The relay's writes succeed until the kernel's socket buffers are full;
  // then write_timeout_s runs, and the relay must drop the client and close
  // the upstream stream (the mock counts it as aborted).
  let peak = before;
  let stats = { streams_aborted: 0 };
  const t0 = Date.now();
  while (Date.now() - t0 < (WRITE_TIMEOUT_S + 12) * 1000 && stats.streams_aborted < 1) {
    await h.sleep(250);
    peak = Math.max(peak, rssKiB(lean));
    stats = await mock.stats();
  }
  const gaveUp = Date.now() - t0;
  s.destroy();
  console.log(`stalled reader: relay RSS ${before} kB before, peak ${peak} kB while stalled; ` +
    `client read ${received} bytes then stopped; the relay closed the upstream after ${gaveUp} ms ` +
    `(write_timeout_s ${WRITE_TIMEOUT_S}; mock streams_aborted ${stats.streams_aborted})`);
  assert.ok(received > 256 * 1024, 'the stream started');
  assert.ok(peak - before < 8 * 1024, `RSS grew ${peak - before} kB (bound 8 MiB)`);
  assert.ok(stats.streams_aborted >= 1, 'the relay gave up on the stalled client and closed the upstream');
  await healthy(lean);
});

// ---- volume ------------------------------------------------------------------------------------------

test('10,000 connections of random bytes: no crash, RSS after within a few MiB of before', async () => {
  const one = () => {
    const n = 1 + Math.floor(Math.random() * 600);
    let bytes = randomBytes(n);
    // A third start like a request, so the parser gets past the method.
    if (Math.random() < 0.33) bytes = Buffer.concat([Buffer.from('POST /openai/v1/chat/completions HTTP/1.1\r\n'), bytes]);
    return exchange(lean.port, bytes, { timeoutMs: 3000, end: true });
  };
  const run = async (total, conc) => {
    let next = 0;
    const statuses = {};
    await Promise.all(Array.from({ length: conc }, async () => {
      while (next < total) {
        ++next;
        const r = await one();
        const s = statusOf(r.text);
        statuses[s] = (statuses[s] ?? 0) + 1;
      }
    }));
    return statuses;
  };
  await run(500, 50);  // warm the allocator
  await h.sleep(300);
  const before = rssKiB(lean);
  const t = Date.now();
  const statuses = await run(10000, 100);
  await h.sleep(500);
  const afterKiB = rssKiB(lean);
  console.log(`random bytes: 10000 connections in ${Date.now() - t} ms, statuses ${JSON.stringify(statuses)}; ` +
    `RSS ${before} kB before, ${afterKiB} kB after`);
  for (const s of Object.keys(statuses)) assert.ok(Number(s) < 500, `no 5xx (${JSON.stringify(statuses)})`);
  assert.ok(afterKiB - before < 4 * 1024, `RSS grew ${afterKiB - before} kB (bound 4 MiB)`);
  await healthy(lean);
});

test('thousands of requests with bad seals: each a 401, none a 5xx', async () => {
  const keys = await h.fetchKeys(relay.url);
  const kid = keys.keys[0].kid;
  const body = JSON.stringify({ model: 'm', messages: [] });
  const forms = [
    () => `Sealed ${kid}.${randomBytes(80 + Math.floor(Math.random() * 200)).toString('base64url')}`,
    () => `Sealed ${kid}.${randomBytes(30).toString('base64url')}`,
    () => `Sealed ${randomBytes(9).toString('base64url')}.${randomBytes(150).toString('base64url')}`,
    () => `Sealed ${kid}.${randomBytes(150).toString('base64')}`,
    () => `Sealed ${kid}`,
    () => `Sealed .${randomBytes(150).toString('base64url')}`,
    () => `Bearer sk-${randomBytes(12).toString('hex')}`,
    () => `Sealed ${kid}.${'A'.repeat(6000)}`,
    () => '',
  ];
  const N = 3000;
  let next = 0;
  const statuses = {};
  const t = Date.now();
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < N) {
      const i = next++;
      const authorization = forms[i % forms.length]();
      const res = await fetch(new URL(CHAT, relay.url), {
        method: 'POST', body, headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
      });
      const j = await res.json();
      const k = `${res.status} ${j.error?.code}`;
      statuses[k] = (statuses[k] ?? 0) + 1;
    }
  }));
  console.log(`bad seals: ${N} requests in ${Date.now() - t} ms: ${JSON.stringify(statuses)}`);
  for (const k of Object.keys(statuses)) assert.match(k, /^401 (bad_seal|unknown_kid|missing_seal)$/);
  const seen = Object.values(statuses).reduce((a, b) => a + b, 0);
  assert.equal(seen, N);
  const reqs = await mock.requests();
  assert.ok(!reqs.some((r) => r.body_sha256 === h.bodySha256(body)), 'none of them reached the provider');
  await healthy();
});

// ---- per-IP limits and client addresses ----------------------------------------------------------------

async function getVia(r, { localAddress = '127.0.0.1', xff, path = '/healthz' } = {}) {
  const x = xff ? `X-Forwarded-For: ${xff}\r\n` : '';
  const res = await exchange(r.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n${x}Connection: close\r\n\r\n`,
    { localAddress, timeoutMs: 3000 });
  return res.text;
}

test('per-IP rate limit: 429 rate_limited with Retry-After; a spoofed X-Forwarded-For from an untrusted peer changes nothing', async () => {
  const seen = [];
  for (let i = 0; i < 15; ++i) {
    // Every request claims to come from somewhere else; 127.0.0.1 is not a trusted proxy.
    seen.push(await getVia(limited, { xff: `198.51.100.${i + 1}`, path: `/healthz?spoof=${i}` }));
  }
  const statuses = seen.map(statusOf);
  const ok = statuses.filter((s) => s === 200).length;
  const limitedOnes = seen.filter((t) => statusOf(t) === 429);
  assert.ok(ok >= 5 && ok <= 7, `burst 5 (plus refill) passed, then limited: ${statuses.join(' ')}`);
  assert.ok(limitedOnes.length >= 8, statuses.join(' '));
  for (const t of limitedOnes) {
    assert.equal(errorCode(t), 'rate_limited');
    const ra = t.match(/\r\nRetry-After: (\d+)\r\n/i);
    assert.ok(ra && Number(ra[1]) >= 1, 'Retry-After in whole seconds');
  }
  await h.sleep(100);
  const log = limited.stderr();
  assert.ok(!/ip=198\.51\.100\./.test(log), 'the access log never shows the spoofed address');
  assert.ok(/ip=127\.0\.0\.1 method=GET provider=- path=\/healthz status=429/.test(log), 'limited under its real address');
});

test('behind a trusted proxy the client is the rightmost untrusted X-Forwarded-For hop', async () => {
  // Through the trusted proxy (127.0.0.2), each client has its own bucket.
  for (let i = 0; i < 8; ++i) {
    const t = await getVia(limited, { localAddress: '127.0.0.2', xff: `203.0.113.200, 192.0.2.${i + 1}` });
    assert.equal(statusOf(t), 200, `client ${i} has its own bucket`);
  }
  // Trusted hops on the right are skipped; the first untrusted one counts.
  assert.equal(statusOf(await getVia(limited, { localAddress: '127.0.0.2', xff: '192.0.2.77, 127.0.0.2' })), 200);
  // A garbage hop stops the walk: the proxy's own address is used.
  assert.equal(statusOf(await getVia(limited, { localAddress: '127.0.0.2', xff: 'not-an-ip' })), 200);
  // One client behind the proxy is still limited.
  const same = [];
  for (let i = 0; i < 10; ++i) same.push(statusOf(await getVia(limited, { localAddress: '127.0.0.2', xff: '192.0.2.99' })));
  assert.ok(same.includes(429), `one client behind the proxy is limited: ${same.join(' ')}`);
  await h.sleep(100);
  const log = limited.stderr();
  for (let i = 0; i < 8; ++i) assert.match(log, new RegExp(`ip=192\\.0\\.2\\.${i + 1} method=GET`));
  assert.match(log, /ip=192\.0\.2\.77 method=GET/);
  assert.match(log, /ip=127\.0\.0\.2 method=GET/);
  assert.ok(!/ip=203\.0\.113\.200/.test(log), 'a hop left of the rightmost untrusted one is never believed');
});

test('per-IP connection cap: the connection over max_connections_per_ip is refused with 429; others are unaffected', async () => {
  const held = [];
  for (let i = 0; i < 4; ++i) {
    const s = net.connect(capped.port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.on('connect', r));
    held.push(s);
  }
  await h.sleep(200);
  try {
    const over = await exchange(capped.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(statusOf(over.text), 429, over.text.slice(0, 80));
    assert.equal(errorCode(over.text), 'rate_limited');
    assert.match(over.text, /\r\nRetry-After: \d+\r\n/i);
    assert.ok(over.serverClosed);
    // Another address is not affected.
    const other = await exchange(capped.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      { localAddress: '127.0.0.3' });
    assert.equal(statusOf(other.text), 200);
  } finally {
    for (const s of held) s.destroy();
  }
  await h.sleep(300);
  const again = await exchange(capped.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal(statusOf(again.text), 200, 'closed connections give their slots back');
  await healthy(capped);
});
