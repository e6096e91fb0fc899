// Providers (or the CDNs and gateways in front of them) that do legal but
// unusual things, and some that break HTTP, against the real relay binary:
// SSE framed by Content-Length, interim 1xx heads, a pause inside an event,
// a name that resolves slowly, a close right after a response, bytes after a
// body. The providers are raw sockets (lib/fake_provider.mjs) and so is the
// client (h.RawConnection): every byte on both sides is checked.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';

import * as h from './lib/harness.mjs';
import { startFakeProvider, jsonResponse, chunk, startSilentDns } from './lib/fake_provider.mjs';

after(h.stopAll);

const PATH = '/quirk/v1/chat/completions';
const KEEPALIVE = ': keep-alive\n\n';

// A fake provider answering with `onRequest`, and a relay (one thread, so one
// upstream pool) in front of it; both stopped when the test ends.
async function setup(t, onRequest, overrides = {}) {
  const fake = await startFakeProvider(onRequest);
  const relay = await h.startRelay({
    threads: 1, sse_keepalive_s: 1, upstream_timeout_s: 10, max_connections_per_ip: 0,
    providers: { quirk: { base_url: fake.url, auth: 'bearer', paths: ['/v1/chat/completions'] } },
    ...overrides,
  });
  t.after(async () => {
    await relay.stop('SIGKILL');
    await fake.close();
  });
  const keyConfig = await h.fetchKeys(relay.url);
  const request = (apiKey, body, opts = {}) =>
    h.sealedRequestBytes({ keyConfig, apiKey, path: PATH, body: JSON.stringify(body), ...opts });
  return { fake, relay, request };
}

// What the fake providers answer by default: the key they were given, so a
// client can tell whether the answer was meant for it.
const answerFor = (req, extra = {}) => ({ answer_for: req.headers.authorization, ...extra });
const quirkOf = (req) => JSON.parse(req.body.toString()).quirk;

test('f. SSE framed by Content-Length, paused past sse_keepalive_s: the client gets exactly its bytes, the connection stays usable',
  { timeout: 30000 }, async (t) => {
    const events = ['data: {"n":1}\n\n', 'data: {"n":2}\n\n', 'data: [DONE]\n\n'];
    const sse = events.join('');
    const { request, relay } = await setup(t, async (req, conn) => {
      if (quirkOf(req) === 'sse-length') {
        conn.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n' +
          `Content-Length: ${Buffer.byteLength(sse)}\r\n\r\n${events[0]}`);
        await conn.after(2600);  // more than two keep-alive periods of silence
        conn.write(events[1]);
        await conn.after(1300);
        conn.write(events[2]);
      } else {
        conn.write(jsonResponse(answerFor(req)));
      }
    });
    const c = await h.RawConnection.open(relay.port);
    t.after(() => c.close());
    const k1 = h.randomApiKey('sk-quirk-f1-');
    c.write(await request(k1, { model: 'm', stream: true, quirk: 'sse-length' }));
    const r1 = await c.readResponse({ timeoutMs: 10000 });
    assert.equal(r1.status, 200);
    assert.equal(r1.framing, 'length', `framed as ${r1.framing}: ${JSON.stringify(r1.head)}`);
    assert.deepEqual(r1.headers['content-length'], [String(Buffer.byteLength(sse))], "the provider's Content-Length");
    assert.equal(r1.body.toString('latin1'), sse, "exactly the provider's bytes, no comment inserted");

    // The next request on the same client connection.
    const k2 = h.randomApiKey('sk-quirk-f2-');
    c.write(await request(k2, { model: 'm' }));
    const r2 = await c.readResponse({ timeoutMs: 5000 });
    assert.equal(r2.status, 200);
    assert.deepEqual(JSON.parse(r2.body.toString()), { answer_for: `Bearer ${k2}` });
    await h.sleep(200);
    assert.equal(c.buf.toString('latin1'), '', 'nothing after the second response');
  });

test('g. 103 Early Hints and 100 Continue before the answer: skipped; 200 requests from 20 keys over pooled connections each get their own answer; 101 is 502',
  { timeout: 60000 }, async (t) => {
    let served = 0;
    const { request, relay, fake } = await setup(t, async (req, conn) => {
      const quirk = quirkOf(req);
      if (quirk === '101') {
        conn.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
        await conn.after(20);
        conn.write('\x81\x05hello');  // a WebSocket frame: not HTTP any more
        return;
      }
      const n = ++served;
      if (quirk === 'interim') {
        // Early hints as a CDN sends them, then a 100 nobody asked for, each
        // on its own so the relay reads them one at a time.
        conn.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n' +
          'Link: </app.js>; rel=preload; as=script\r\n\r\n');
        await conn.after(40);
        conn.write('HTTP/1.1 100 Continue\r\n\r\n');
        await conn.after(40);
      }
      conn.write(jsonResponse(answerFor(req, { n })));
    });

    const keys = Array.from({ length: 20 }, (_, i) => h.randomApiKey(`sk-quirk-g${String(i).padStart(2, '0')}-`));
    const problems = [];
    let failed = 0;
    const TOTAL = 200;
    let next = 0;
    // One request on its own keep-alive client connection (as a browser's
    // would be: the relay then keeps reading it after an answer).
    const one = async (i) => {
      const key = keys[i % keys.length];
      const c = await h.RawConnection.open(relay.port);
      const before = problems.length;
      try {
        c.write(await request(key, { model: 'm', i, quirk: 'interim' }));
        let r = await c.readResponse({ timeoutMs: 3000 });
        while (r.status < 200) {
          problems.push(`request ${i}: an interim ${r.status} reached the client`);
          r = await c.readResponse({ timeoutMs: 3000 });
        }
        if (r.status !== 200) {
          problems.push(`request ${i}: status ${r.status}`);
          return;
        }
        const got = JSON.parse(r.body.toString()).answer_for;
        if (got !== `Bearer ${key}`) {
          const owner = keys.findIndex((k) => `Bearer ${k}` === got);
          problems.push(`request ${i} (key ${i % keys.length}) RECEIVED THE ANSWER FOR KEY ${owner}`);
        }
        if (c.buf.length) problems.push(`request ${i}: ${c.buf.length} bytes after the response`);
      } catch (e) {
        problems.push(`request ${i}: ${e.timedOut ? 'no complete answer in 3 s' : e.message.slice(0, 160)}`);
      } finally {
        c.close();
        if (problems.length > before) ++failed;
      }
    };
    const t0 = Date.now();
    // One every 20 ms, at most 4 at a time: answers take about 80 ms, so the
    // relay takes connections from its pool while others are busy, in
    // changing order. Given up after 12 failed requests (on an unfixed relay
    // most hang).
    const running = new Set();
    while (next < TOTAL && failed < 12) {
      while (running.size >= 4) await Promise.race(running);
      const p = one(next++).finally(() => running.delete(p));
      running.add(p);
      await h.sleep(20);
    }
    await Promise.all(running);
    const stats = fake.stats();
    console.log(`1xx: ${next} requests in ${Date.now() - t0} ms over ${stats.connections} upstream connections; ` +
      `${problems.length} problems`);
    assert.deepEqual(problems, [], `${next} of ${TOTAL} requests sent`);
    assert.equal(next, TOTAL);
    // Reuse is what could carry one key's answer to another: most requests
    // must have gone over a pooled connection for the check above to mean much.
    assert.ok(stats.connections <= TOTAL / 4, `the relay reused its upstream connections (${stats.connections} for ${TOTAL})`);
    assert.deepEqual(stats.errors, []);

    // 101: not an answer the relay can pass on.
    const c = await h.RawConnection.open(relay.port);
    t.after(() => c.close());
    c.write(await request(h.randomApiKey('sk-quirk-g101-'), { model: 'm', quirk: '101' }));
    const r = await c.readResponse({ timeoutMs: 5000 });
    assert.equal(r.status, 502);
    assert.equal(JSON.parse(r.body.toString()).error.code, 'upstream_bad_response');
    // And the connection that said 101 is not reused.
    const k = h.randomApiKey('sk-quirk-gafter-');
    const c2 = await h.RawConnection.open(relay.port);
    t.after(() => c2.close());
    c2.write(await request(k, { model: 'm' }));
    const r2 = await c2.readResponse({ timeoutMs: 5000 });
    assert.equal(r2.status, 200);
    assert.equal(JSON.parse(r2.body.toString()).answer_for, `Bearer ${k}`);
  });

// Removes keep-alive comments that stand where an event may begin (at the
// start, or after a blank line); one anywhere else stays in and breaks the
// comparison with the provider's bytes.
function withoutBoundaryKeepalives(text) {
  let out = '';
  const at = [];
  let p = 0;
  while (p < text.length) {
    if ((out === '' || out.endsWith('\n\n')) && text.startsWith(KEEPALIVE, p)) {
      at.push(out.length);
      p += KEEPALIVE.length;
    } else {
      out += text[p++];
    }
  }
  return { out, at };
}

test('h. a provider pausing mid-event past sse_keepalive_s (chunked): events arrive whole, keep-alives only between them',
  { timeout: 30000 }, async (t) => {
    const parts = ['data: {"delta":"Hel', 'lo"}\n\n', 'data: [DONE]\n\n'];
    const { request, relay } = await setup(t, async (req, conn) => {
      conn.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n' +
        chunk(parts[0]));
      await conn.after(2600);  // mid-event: no keep-alive may be written here
      conn.write(chunk(parts[1]));
      await conn.after(2600);  // between events: keep-alives expected
      conn.write(chunk(parts[2]) + '0\r\n\r\n');
    });
    const c = await h.RawConnection.open(relay.port);
    t.after(() => c.close());
    c.write(await request(h.randomApiKey('sk-quirk-h-'), { model: 'm', stream: true }));
    const r = await c.readResponse({ timeoutMs: 10000 });
    assert.equal(r.status, 200);
    assert.equal(r.framing, 'chunked', 'the relay frames a stream of unknown length itself');
    const text = r.body.toString('latin1');
    const { out, at } = withoutBoundaryKeepalives(text);
    assert.equal(out, parts.join(''), `events whole; as received: ${JSON.stringify(text)}`);
    const between = at.filter((pos) => pos === parts[0].length + parts[1].length).length;
    assert.ok(between >= 1, `keep-alive comments still flow between events (${JSON.stringify(text)})`);
  });

test('i. a provider whose name resolves slowly gets 504 upstream_timeout within upstream_connect_timeout_s',
  { timeout: 30000 }, async (t) => {
    const unshare = spawnSync('sh', ['-c', 'command -v unshare'], { encoding: 'utf8' }).stdout.trim();
    if (process.getuid?.() !== 0 || !unshare) {
      t.skip(`needs root and unshare(1) to give the relay its own /etc/resolv.conf (uid ${process.getuid?.()}, ` +
        `unshare ${unshare || 'missing'})`);
      return;
    }
    // A resolver that never answers, on an address of our own in 127/8, and
    // a resolv.conf naming it, bind-mounted over /etc/resolv.conf in a mount
    // namespace of the relay's alone: nothing outside this test is touched.
    const dns = await startSilentDns(`127.53.${randomInt(1, 255)}.${randomInt(1, 255)}`);
    t.after(() => dns.close());
    const dir = h.tempDir('byok-dns-');
    const resolvConf = join(dir, 'resolv.conf');
    writeFileSync(resolvConf, `nameserver ${dns.address}\noptions timeout:30 attempts:1\n`);
    const CONNECT_TIMEOUT_S = 2;
    const relay = await h.startRelay({
      threads: 1, upstream_connect_timeout_s: CONNECT_TIMEOUT_S, upstream_timeout_s: 30, shutdown_grace_s: 1,
      providers: { slowdns: { base_url: 'https://slow-dns.byok-test.example', auth: 'bearer', paths: ['/v1/chat/completions'] } },
    }, { dir, wrap: [unshare, '-m', '--', 'sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolvConf] });
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    const ask = async () => {
      const t0 = Date.now();
      try {
        const path = '/slowdns/v1/chat/completions';
        const body = JSON.stringify({ model: 'm' });
        const authorization = await h.seal({ keyConfig, apiKey: h.randomApiKey('sk-quirk-i-'), path, body });
        const res = await fetch(new URL(path, relay.url), {
          method: 'POST', body, headers: { 'content-type': 'application/json', authorization },
          signal: AbortSignal.timeout(8000),
        });
        const answer = await res.json();
        return { status: res.status, code: answer.error?.code, ms: Date.now() - t0 };
      } catch (e) {
        return { status: 0, code: e.name, ms: Date.now() - t0 };
      }
    };
    // Two at once: the second must not wait behind the first's lookup either.
    const results = await Promise.all([ask(), ask()]);
    console.log(`slow DNS: ${JSON.stringify(results)}; queries seen by the silent resolver: ${dns.queries()}`);
    assert.ok(dns.queries() >= 1, 'the relay asked the silent resolver');
    for (const r of results) {
      assert.deepEqual([r.status, r.code], [504, 'upstream_timeout'], JSON.stringify(r));
      assert.ok(r.ms <= (CONNECT_TIMEOUT_S + 1) * 1000, `answered after ${r.ms} ms`);
    }
    const health = await fetch(new URL('/healthz', relay.url));
    assert.equal(health.status, 200);
  });

test('j. a provider that closes right after a response, sends bytes after its body, ends a body by closing, or sends trailers: no broken connection is reused, no stray byte reaches a client',
  { timeout: 30000 }, async (t) => {
    const injected = jsonResponse({ answer_for: 'INJECTED' });
    const { request, relay, fake } = await setup(t, async (req, conn) => {
      const answer = jsonResponse(answerFor(req));
      switch (quirkOf(req)) {
      case 'close-after':  // complete, keep-alive by its headers, then the connection is gone
        conn.write(answer);
        conn.end();
        break;
      case 'extra-bytes':  // a whole second "response" in the same write
        conn.write(answer + injected);
        break;
      case 'extra-later':  // the same, a moment after the body
        conn.write(answer);
        await conn.after(5);
        conn.write(injected);
        break;
      case 'close-delimited': {  // no length, no chunks: the body ends with the connection
        const body = JSON.stringify(answerFor(req));
        conn.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n${body.slice(0, 10)}`);
        await conn.after(5);
        conn.write(body.slice(10));
        conn.end();
        break;
      }
      case 'chunked-trailer': {  // fields after the last chunk, a moment later: the message ends after them
        const body = JSON.stringify(answerFor(req));
        conn.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(body)}0\r\n`);
        await conn.after(5);
        conn.write('X-Usage: 12\r\nX-Checksum: 34\r\n\r\n');
        break;
      }
      default:
        conn.write(answer);
      }
    });
    const c = await h.RawConnection.open(relay.port);
    t.after(() => c.close());
    const problems = [];
    const quirks = ['close-after', 'extra-bytes', 'extra-later', 'close-delimited', 'chunked-trailer'];
    rounds: for (let round = 0; round < 8; round++) {
      for (const quirk of [...quirks, 'none']) {
        const key = h.randomApiKey(`sk-quirk-j${round}-`);
        c.write(await request(key, { model: 'm', round, quirk }));
        try {
          const r = await c.readResponse({ timeoutMs: 5000 });
          const text = r.body.toString('latin1');
          if (r.status !== 200 || text !== JSON.stringify({ answer_for: `Bearer ${key}` })) {
            problems.push(`round ${round}, after '${quirk}': ${r.status} ${text.slice(0, 120)}`);
          }
        } catch (e) {
          problems.push(`round ${round}, '${quirk}': ${e.message.slice(0, 200)}`);
          break rounds;  // the client connection's framing is lost
        }
        await h.sleep(50);
      }
    }
    await h.sleep(200);
    assert.deepEqual(problems, []);
    assert.equal(c.buf.toString('latin1'), '', 'no stray bytes on the client connection');
    assert.equal(c.closed, false, 'the client connection is still open');
    assert.deepEqual(fake.stats().errors, []);
  });
