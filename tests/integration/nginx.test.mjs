// The deploy/nginx configuration, tested with the real nginx from Debian in
// front of real relays and the mock provider, all on loopback:
//
//   client --HTTPS/h2--> nginx A (byok-relay.conf)        --> relay 1, relay 2 (same key) --> mock
//   client --HTTPS-----> nginx B (byok-relay-prefix.conf) --> relay P (public_path_prefix "/relay")
//
// Client source addresses other than 127.0.0.1 (127.0.0.2 ...) are how the
// test tells the client's address from nginx's own (nginx always reaches the
// relays from 127.0.0.1, the relays' only trusted proxy).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync, rmSync } from 'node:fs';

import * as h from './lib/harness.mjs';
import {
  nginxBin, freePort, makeCert, startNginx, request, request2, parseMetrics, metricSum,
} from './nginx/nginx.mjs';

const MAX_BODY = 8 * 1024 * 1024;  // relay max_body_bytes == nginx client_max_body_size
const CHAT = '/openai/v1/chat/completions';

let dir;
let tlsFiles;
let mock;
let relays;   // the two replicas behind nginx A
let relayP;   // behind nginx B
let nginxA;
let nginxB;
const usedSecrets = [];  // every API key and seal the test sent: none may appear in a log

before(async () => {
  assert.ok(existsSync(nginxBin), `${nginxBin} is missing: scripts/install-deps.sh --test installs Debian's nginx`);
  dir = h.tempDir('byok-nginx-');
  tlsFiles = makeCert(dir);
  mock = await h.startMock({ tls: true });
  // Replicas share one key, as they would share a Kubernetes Secret.
  const key = await h.makeKeyFile(dir);
  const common = {
    // openai with an upload path as well (its preset's body_limits still apply: 26 MiB there).
    providers: h.mockProviders(mock, { openai: { ...h.mockProviders(mock).openai,
      paths: [...h.mockProviders(mock).openai.paths, '/v1/audio/transcriptions'] } }),
    key_files: [String(key)],
    trusted_proxies: ['127.0.0.1'],
    metrics_listen: '127.0.0.1:0',
    max_body_bytes: MAX_BODY,
  };
  relays = [await h.startRelay(common), await h.startRelay(common)];
  relayP = await h.startRelay({ ...common, public_path_prefix: '/relay' });
  for (const r of [...relays, relayP]) {
    // The metrics line follows the "listening on" line the harness waits for.
    for (let i = 0; i < 100 && !r.metricsUrl; i++) await h.sleep(20);
    assert.ok(r.metricsUrl, `relay prints its metrics address:\n${r.stderr()}`);
  }

  const [a1, a2, b1, b2] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  nginxA = await startNginx({
    sourceDir: h.sourceDir, prefix: join(dir, 'nginx-a'), site: 'byok-relay.conf',
    upstreams: relays.map((r) => `127.0.0.1:${r.port}`),
    cert: tlsFiles.cert, key: tlsFiles.key, ca: tlsFiles.ca, httpsPort: a1, httpPort: a2,
  });
  nginxB = await startNginx({
    sourceDir: h.sourceDir, prefix: join(dir, 'nginx-b'), site: 'byok-relay-prefix.conf',
    upstreams: [`127.0.0.1:${relayP.port}`],
    cert: tlsFiles.cert, key: tlsFiles.key, ca: tlsFiles.ca, httpsPort: b1, httpPort: b2,
  });
});

after(async () => {
  // Everything stops, whatever failed: nginx first (by its PID, workers by
  // theirs), then the relays and the mock (harness, by PID).
  await Promise.allSettled([nginxA?.stop(), nginxB?.stop()]);
  await h.stopAll();
  // The nginx trees, logs, certificate and relay key of this run; kept for a
  // look when BYOK_KEEP_TMP is set.
  if (dir && !process.env.BYOK_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
});

const ca = () => tlsFiles.ca;

async function keysVia(origin, path = '/v1/keys', localAddress = '127.0.0.1') {
  const r = await request(origin + path, { ca: ca(), localAddress });
  assert.equal(r.status, 200, `GET ${path} through nginx: ${r.body}`);
  return JSON.parse(r.body);
}

// Seals and sends one request through nginx; `sealPath` is what the browser
// used (it differs from `path` only under a prefix).
async function sealed({ origin, path = CHAT, sealPath, body, keyConfig, localAddress = '127.0.0.1',
  headers = {}, apiKey = h.randomApiKey() }) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const authorization = await h.seal({ keyConfig, apiKey, method: 'POST', path: sealPath ?? path, body: text });
  usedSecrets.push(apiKey, authorization.split('.').slice(1).join('.'));
  const res = await request(origin + path, {
    method: 'POST', ca: ca(), localAddress, body: text,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), authorization, ...headers },
  });
  return { res, authorization, apiKey, text };
}

function lastMockRequest(requests) {
  return requests[requests.length - 1];
}

// The relays write their access line after the answer; give them a moment.
async function relayLogsMatching(re, timeoutMs = 2000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const lines = [...relays, relayP].flatMap((r) => r.stderr().split('\n')).filter((l) => re.test(l));
    if (lines.length > 0 || Date.now() > until) return lines;
    await h.sleep(50);
  }
}

async function nginxLogLines(nginx, re, timeoutMs = 2000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const lines = nginx.accessLog().split('\n').filter((l) => re.test(l));
    if (lines.length > 0 || Date.now() > until) return lines;
    await h.sleep(50);
  }
}

async function scrape() {
  const out = [];
  for (const r of relays) {
    const res = await request(r.metricsUrl);
    assert.equal(res.status, 200);
    out.push(parseMetrics(res.body));
  }
  return out;
}
const total = (snaps, name, labels) => snaps.reduce((s, m) => s + metricSum(m, name, labels), 0);

test('a sealed non-streaming request passes through nginx over HTTPS (HTTP/1.1)', async () => {
  const keyConfig = await keysVia(nginxA.origin);
  const { res, apiKey } = await sealed({
    origin: nginxA.origin, keyConfig, body: { model: 'mock-1', messages: [{ role: 'user', content: 'hi' }] },
  });
  assert.equal(res.status, 200, res.body);
  assert.match(res.headers['content-type'], /application\/json/);
  assert.ok(JSON.parse(res.body).choices, 'an OpenAI-shaped answer');
  const seen = lastMockRequest(await mock.requests());
  assert.equal(seen.headers.authorization, `Bearer ${apiKey}`, 'the provider got exactly the sealed key');
  assert.equal(seen.headers['x-forwarded-for'], undefined, 'X-Forwarded-For stops at the relay');
});

test('a streamed answer reaches the client event by event through nginx (HTTP/1.1 and HTTP/2)', async () => {
  const keyConfig = await keysVia(nginxA.origin);
  const body = JSON.stringify({ model: 'mock-1', stream: true, messages: [], mock: { events: 6, interval_ms: 200 } });

  // HTTP/1.1
  const { res } = await sealed({ origin: nginxA.origin, keyConfig, body });
  assert.equal(res.status, 200, res.body);
  assert.match(res.headers['content-type'], /text\/event-stream/);
  assert.equal(res.headers['x-accel-buffering'], undefined, 'nginx consumes X-Accel-Buffering');
  assertSpread(res.chunks, 'HTTP/1.1');

  // HTTP/2, as browsers speak to nginx
  const apiKey = h.randomApiKey();
  const authorization = await h.seal({ keyConfig, apiKey, method: 'POST', path: CHAT, body });
  usedSecrets.push(apiKey, authorization.split('.').slice(1).join('.'));
  const r2 = await request2(nginxA.origin, {
    method: 'POST', path: CHAT, ca: ca(), body,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization },
  });
  assert.equal(r2.status, 200, r2.body);
  assertSpread(r2.chunks, 'HTTP/2');
});

// Six events 200 ms apart must arrive as several chunks spread over ~1 s, not
// as one lump at the end.
function assertSpread(chunks, what) {
  const withData = chunks.filter((c) => c.text.includes('data:'));
  assert.ok(withData.length >= 4, `${what}: events arrived in ${withData.length} chunk(s): ${JSON.stringify(chunks)}`);
  const span = withData[withData.length - 1].t - withData[0].t;
  assert.ok(span >= 700, `${what}: first to last event ${span} ms (expected ~1000)`);
  const gaps = withData.slice(1).map((c, i) => c.t - withData[i].t);
  assert.ok(gaps.filter((g) => g >= 100).length >= 3, `${what}: gaps between chunks ${gaps.join(',')} ms`);
  assert.match(chunks.map((c) => c.text).join(''), /data: \[DONE\]/);
}

test('the relay sees the client address from nginx, and a spoofed X-Forwarded-For is not believed', async () => {
  const keyConfig = await keysVia(nginxA.origin, '/v1/keys', '127.0.0.2');
  // A client at 127.0.0.2: nginx is the relay's peer (127.0.0.1, trusted),
  // and the relay logs the address nginx put in X-Forwarded-For.
  const plain = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.2', body: { model: 'a' } });
  assert.equal(plain.res.status, 200, plain.res.body);
  assert.ok((await relayLogsMatching(/ ip=127\.0\.0\.2 .*status=200/)).length >= 1,
    `relay logged the client address:\n${relays.map((r) => r.stderr()).join('')}`);

  // The same client writes its own X-Forwarded-For: nginx replaces it.
  const spoofed = await sealed({
    origin: nginxA.origin, keyConfig, localAddress: '127.0.0.3', body: { model: 'b' },
    headers: { 'x-forwarded-for': '203.0.113.7' },
  });
  assert.equal(spoofed.res.status, 200, spoofed.res.body);
  assert.ok((await relayLogsMatching(/ ip=127\.0\.0\.3 /)).length >= 1, 'relay logged the real address');

  // A client on a trusted address (here 127.0.0.1, like a process on the
  // nginx host) spoofing: with "append" the relay would skip the trusted
  // hop and believe the spoofed one; nginx overwrites, so it cannot.
  const local = await sealed({
    origin: nginxA.origin, keyConfig, localAddress: '127.0.0.1', body: { model: 'c' },
    headers: { 'x-forwarded-for': '198.51.100.9' },
  });
  assert.equal(local.res.status, 200, local.res.body);
  await h.sleep(300);
  const all = [...relays, relayP].map((r) => r.stderr()).join('');
  assert.doesNotMatch(all, /ip=203\.0\.113\.7/, 'spoofed address never became the client');
  assert.doesNotMatch(all, /ip=198\.51\.100\.9/, 'spoofed address never became the client');
  // nginx's own log has the TCP peer.
  assert.ok((await nginxLogLines(nginxA, /^127\.0\.0\.3 .*"POST \/openai\/v1\/chat\/completions/)).length >= 1);
});

test('a body over the limit is refused by nginx; the relays never see it', async () => {
  const keyConfig = await keysVia(nginxA.origin, '/v1/keys', '127.0.0.4');
  const before = await scrape();
  const mockBefore = (await mock.requests()).length;
  const relayLinesBefore = relays.map((r) => r.stderr().length);

  const big = JSON.stringify({ model: 'm', pad: 'x'.repeat(MAX_BODY) });  // > 8 MiB
  const { res } = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.4', body: big });
  assert.equal(res.status, 413);
  assert.equal(JSON.parse(res.body).error.code, 'body_too_large', 'nginx answers in the relay\'s JSON shape');
  assert.match(res.headers.server ?? '', /nginx/, 'the 413 came from nginx');
  const lines = await nginxLogLines(nginxA, /^127\.0\.0\.4 .*" 413 .*upstream=- /);
  assert.equal(lines.length, 1, `nginx logged its own 413 with no upstream:\n${nginxA.accessLog()}`);

  // A body of exactly the limit still goes through (the limits are equal).
  const prefix = '{"model":"m","pad":"';
  const exact = prefix + 'y'.repeat(MAX_BODY - prefix.length - 2) + '"}';
  assert.equal(Buffer.byteLength(exact), MAX_BODY);
  const ok = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.4', body: exact });
  assert.equal(ok.res.status, 200, `a body of exactly max_body_bytes passes: ${ok.res.body.slice(0, 300)}`);

  await h.sleep(200);
  const after = await scrape();
  assert.equal((await mock.requests()).length, mockBefore + 1, 'only the in-limit body reached the provider');
  assert.equal(total(after, 'byok_requests_total', { status: '413' }) - total(before, 'byok_requests_total', { status: '413' }), 0,
    'no relay answered 413');
  const newRelayLines = relays.map((r, i) => r.stderr().slice(relayLinesBefore[i])).join('');
  assert.doesNotMatch(newRelayLines, /status=413/);
});

test('the /relay/ prefix variant: seals made for /relay/openai/... are accepted', async () => {
  const keyConfig = await keysVia(nginxB.origin, '/relay/v1/keys');
  const good = await sealed({
    origin: nginxB.origin, path: '/relay' + CHAT, keyConfig, body: { model: 'p' },
  });
  assert.equal(good.res.status, 200, good.res.body);
  const seen = lastMockRequest(await mock.requests());
  assert.equal(seen.headers.authorization, `Bearer ${good.apiKey}`);
  assert.match(seen.target, /^\/v1\/chat\/completions/, 'the provider got the path without the prefix');

  // A seal for the path without the prefix does not match what the browser sent.
  const wrong = await sealed({
    origin: nginxB.origin, path: '/relay' + CHAT, sealPath: CHAT, keyConfig, body: { model: 'p' },
  });
  assert.equal(wrong.res.status, 401);
  assert.equal(JSON.parse(wrong.res.body).error.code, 'seal_mismatch');

  // Streaming works under the prefix too.
  const stream = await sealed({
    origin: nginxB.origin, path: '/relay' + CHAT, keyConfig,
    body: { stream: true, mock: { events: 5, interval_ms: 200 } },
  });
  assert.equal(stream.res.status, 200);
  assertSpread(stream.res.chunks, 'prefix, HTTP/1.1');

  const bare = await request(nginxB.origin + '/relay', { ca: ca() });
  assert.equal(bare.status, 301);
  assert.match(bare.headers.location, /\/relay\/$/);
});

test('percent-encoded paths reach the relay as the client sent them, with and without the /relay/ prefix', async () => {
  // A fine-tuned model's id has colons; clients percent-encode them (and
  // some encode "~"). nginx must pass the client's bytes, not its decoded
  // URI, or the path the seal names differs from what the relay sees.
  const target = '/openai/v1/models/ft%3Agpt-4o-mini%3Aacme%3Ax%7Ey~z';
  for (const [origin, prefix, keysPath] of [[nginxA.origin, '', '/v1/keys'], [nginxB.origin, '/relay', '/relay/v1/keys']]) {
    const keyConfig = await keysVia(origin, keysPath);
    const apiKey = h.randomApiKey();
    const authorization = await h.seal({ keyConfig, apiKey, method: 'GET', path: prefix + target, body: '' });
    usedSecrets.push(apiKey, authorization.split('.').slice(1).join('.'));
    const res = await request(origin + prefix + target, { ca: ca(), headers: { authorization } });
    assert.notEqual(res.status, 401, `${prefix || 'no prefix'}: ${res.body}`);
    const seen = lastMockRequest(await mock.requests());
    assert.equal(seen.headers.authorization, `Bearer ${apiKey}`);
    assert.equal(seen.target, target.slice('/openai'.length), 'the provider got the client\'s bytes, less the prefix');
  }
});

test('two replicas behind "hash consistent": every copy of a seal reaches the same replica', async () => {
  const keyConfig = await keysVia(nginxA.origin, '/v1/keys', '127.0.0.5');
  const before = await scrape();

  // Fresh seals spread over both replicas (the hash key is random per seal).
  const upstreamOf = async (n) => {
    const lines = await nginxLogLines(nginxA, /^127\.0\.0\.5 .*"POST /);
    return lines.slice(-n).map((l) => l.match(/upstream=(\S+)/)[1]);
  };
  for (let i = 0; i < 16; i++) {
    const { res } = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.5', body: { n: i } });
    assert.equal(res.status, 200, res.body);
  }
  await h.sleep(200);
  const spread = new Set(await upstreamOf(16));
  assert.equal(spread.size, 2, `16 fresh seals used both replicas: ${[...spread]}`);

  // One seal, then the same request again, twice, exactly as captured: every
  // copy hashes alike, so all reach the replica that remembers the seal. The
  // relay accepts only the exact spelling "Sealed <kid>.<box>", so a copy
  // respelled to hash elsewhere is refused by any replica without being opened.
  const first = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.5', body: { replay: 1 } });
  assert.equal(first.res.status, 200, first.res.body);
  const token = first.authorization.slice('Sealed '.length);
  const copies = [first.authorization, first.authorization];
  for (const authorization of copies) {
    const res = await request(nginxA.origin + CHAT, {
      method: 'POST', ca: ca(), localAddress: '127.0.0.5', body: first.text,
      headers: { 'content-type': 'application/json', authorization },
    });
    assert.equal(res.status, 401, `replay refused: ${res.body}`);
    assert.equal(JSON.parse(res.body).error.code, 'seal_replayed');
  }
  await h.sleep(200);
  const routed = await upstreamOf(1 + copies.length);
  assert.equal(new Set(routed).size, 1, `the seal and its replays all went to one replica: ${routed}`);
  for (const authorization of [`sealed ${token}`, `SEALED ${token}`, `Sealed    ${token}`, `sEaLeD ${token}  `]) {
    const res = await request(nginxA.origin + CHAT, {
      method: 'POST', ca: ca(), localAddress: '127.0.0.5', body: first.text,
      headers: { 'content-type': 'application/json', authorization },
    });
    assert.equal(res.status, 401, `respelled copy "${authorization.slice(0, 12)}..." refused: ${res.body}`);
    // Not the Sealed scheme (missing_seal), or the scheme with a malformed token (bad_seal): never opened.
    assert.ok(['missing_seal', 'bad_seal'].includes(JSON.parse(res.body).error.code), res.body);
  }

  // Two Authorization headers (one to steer the hash, one for the relay)
  // never get that far: nginx refuses a duplicated Authorization itself.
  const dup = await request(nginxA.origin + CHAT, {
    method: 'POST', ca: ca(), localAddress: '127.0.0.5', body: first.text,
    headers: { 'content-type': 'application/json', authorization: [`Sealed x.${'A'.repeat(40)}`, first.authorization] },
  });
  assert.equal(dup.status, 400);
  assert.equal((await nginxLogLines(nginxA, /^127\.0\.0\.5 .*" 400 .*upstream=- /)).length, 1);

  // Metrics moved as predicted: 16 + 1 successes, 2 replays and 4 respelled copies refused.
  const after = await scrape();
  const d = (name, labels) => total(after, name, labels) - total(before, name, labels);
  assert.equal(d('byok_requests_total', { provider: 'openai', route: 'sealed', status: '200' }), 17);
  assert.equal(d('byok_requests_total', { provider: 'openai', route: 'sealed', status: '401' }), 6);
  assert.equal(d('byok_seal_rejections_total', { code: 'seal_replayed' }), 2);
  // Per replica, too: the replays were all counted where the seal was used.
  const perReplica = relays.map((_, i) => metricSum(after[i], 'byok_seal_rejections_total', { code: 'seal_replayed' })
    - metricSum(before[i], 'byok_seal_rejections_total', { code: 'seal_replayed' }));
  assert.deepEqual(perReplica.sort(), [0, 2]);
  for (const m of after) assert.equal(metricSum(m, 'byok_in_flight_requests'), 0);
  // No label carries a client address, a key or a seal.
  for (const r of relays) {
    const text = (await request(r.metricsUrl)).body;
    assert.doesNotMatch(text, /127\.0\.0\.\d|sk-test-|Sealed [A-Za-z0-9_-]+\./);
  }
});

test('per-client rate limit at the edge answers 429 in the relay\'s error shape', async () => {
  // 120 requests at once from one client: the burst (40) and the per-client
  // concurrency cap (32) let some through, the rest get nginx's JSON 429.
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: 120 }, () =>
    request(nginxA.origin + '/healthz', { ca: ca(), localAddress: '127.0.0.6' })));
  const elapsedS = (Date.now() - t0) / 1000;
  const codes = results.map((r) => r.status);
  const ok = codes.filter((c) => c === 200).length;
  const limited = results.filter((r) => r.status === 429);
  assert.equal(ok + limited.length, 120, `only 200 or 429: ${codes}`);
  assert.ok(ok >= 20, `some got through: ${codes}`);
  assert.ok(ok <= 41 + Math.ceil(10 * elapsedS), `at most burst + rate got through (${ok} in ${elapsedS} s)`);
  assert.ok(limited.length >= 20, `excess refused: ${codes}`);
  assert.equal(JSON.parse(limited[0].body).error.code, 'rate_limited');
  assert.equal(limited[0].headers['retry-after'], '1');
  // Another client is not affected.
  const other = await request(nginxA.origin + '/healthz', { ca: ca(), localAddress: '127.0.0.7' });
  assert.equal(other.status, 200);
});

test('metrics are not reachable through nginx; plain HTTP redirects to HTTPS', async () => {
  const m = await request(nginxA.origin + '/metrics', { ca: ca(), localAddress: '127.0.0.8' });
  assert.equal(m.status, 404);
  assert.doesNotMatch(m.body, /byok_requests_total/);
  const redirect = await request(nginxA.httpOrigin + '/v1/keys', { localAddress: '127.0.0.8' });
  assert.equal(redirect.status, 301);
  assert.match(redirect.headers.location, /^https:\/\//);
});

test('when a replica dies, nginx moves its seals to the other one (and its replay memory is gone)', async () => {
  const keyConfig = await keysVia(nginxA.origin, '/v1/keys', '127.0.0.9');
  // Find a seal that lands on relay 0, remembering its request.
  let onZero;
  for (let i = 0; i < 40 && !onZero; i++) {
    const s = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.9', body: { death: i } });
    assert.equal(s.res.status, 200);
    await h.sleep(50);
    const line = (await nginxLogLines(nginxA, /^127\.0\.0\.9 .*"POST /)).at(-1);
    if (line.includes(`upstream=127.0.0.1:${relays[0].port} `)) onZero = s;
  }
  assert.ok(onZero, 'some seal hashed to relay 0');
  await relays[0].stop('SIGTERM');

  // Fresh seals all still succeed: connection refused is retried on the next
  // replica (the request was never sent, so that is safe even for POST).
  for (let i = 0; i < 6; i++) {
    const { res } = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.9', body: { after: i } });
    assert.equal(res.status, 200, res.body);
  }
  // The documented window (docs/operations.md, "Scaling out"): a seal the
  // dead replica accepted is new to the survivor, so one replay of it is
  // accepted until the seal's iat leaves the seal_max_age_s window.
  const replay = await request(nginxA.origin + CHAT, {
    method: 'POST', ca: ca(), localAddress: '127.0.0.9', body: onZero.text,
    headers: { 'content-type': 'application/json', authorization: onZero.authorization },
  });
  assert.equal(replay.status, 200, 'replay memory is per instance: the survivor has not seen this seal');
  const again = await request(nginxA.origin + CHAT, {
    method: 'POST', ca: ca(), localAddress: '127.0.0.9', body: onZero.text,
    headers: { 'content-type': 'application/json', authorization: onZero.authorization },
  });
  assert.equal(again.status, 401, 'but only once: the survivor now remembers it');
});

test('no key and no seal in any nginx or relay log', async () => {
  assert.ok(usedSecrets.length > 40);
  const logs = nginxA.allLogs() + nginxB.allLogs();
  assert.ok(logs.includes('POST /openai/v1/chat/completions'), 'the logs are the ones the requests went to');
  const relayLogs = [...relays, relayP].map((r) => r.stderr()).join('');
  for (const s of usedSecrets) {
    assert.ok(!logs.includes(s), 'nginx logs hold no key or seal');
    assert.ok(!relayLogs.includes(s), 'relay logs hold no key or seal');
  }
  assert.doesNotMatch(logs, /sealed /i);
});

test('upload paths: nginx lets a body over 8 MiB through to the relay, which holds each path to its own limit', async () => {
  const keyConfig = await keysVia(nginxA.origin, '/v1/keys', '127.0.0.5');
  const big = 'z'.repeat(MAX_BODY + 4096);
  const up = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.5', body: big,
    path: '/openai/v1/audio/transcriptions', headers: { 'content-type': 'multipart/form-data; boundary=b' } });
  assert.equal(up.res.status, 200, up.res.body.slice(0, 200));
  assert.equal(JSON.parse(up.res.body).text, 'mock transcript ' + h.bodySha256(big), 'the provider got every byte');
  // The same body to the chat path: nginx's own 413, as before.
  const chat = await sealed({ origin: nginxA.origin, keyConfig, localAddress: '127.0.0.5', body: big });
  assert.equal(chat.res.status, 413);
  // The /relay/ prefix variant takes the same upload.
  const keyConfigB = await keysVia(nginxB.origin, '/relay/v1/keys', '127.0.0.5');
  const upB = await sealed({ origin: nginxB.origin, keyConfig: keyConfigB, localAddress: '127.0.0.5', body: big,
    path: '/relay/openai/v1/audio/transcriptions', headers: { 'content-type': 'multipart/form-data; boundary=b' } });
  assert.equal(upB.res.status, 200, upB.res.body.slice(0, 200));
});
