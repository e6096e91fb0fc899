// The relay server against the mock provider, through the real binary.
// Seals are made with libsodium-wrappers (npm), not with our C++ code.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as h from './lib/harness.mjs';

after(h.stopAll);

const CHAT = '/openai/v1/chat/completions';
const usedKeys = [];
function newKey() {
  const k = h.randomApiKey('sk-relaytest-');
  usedKeys.push(k);
  return k;
}

async function errorOf(res) {
  const body = await res.json();
  assert.equal(body.error.type, 'relay_error');
  assert.equal(typeof body.error.message, 'string');
  return body.error.code;
}

// Sends raw bytes, returns everything the relay answered until it closed (or timeout).
function rawExchange(port, bytes, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = '';
    const t = setTimeout(() => { s.destroy(); resolve({ data, closed: false }); }, timeoutMs);
    s.on('data', (c) => (data += c.toString('latin1')));
    s.on('close', () => { clearTimeout(t); resolve({ data, closed: true }); });
    s.on('error', () => {});
    s.on('connect', () => s.write(bytes));
  });
}

let mock;
let relay;
let keyDir;

before(async () => {
  mock = await h.startMock({ tls: true });
  keyDir = h.tempDir();
  relay = await h.startRelay({
    providers: h.mockProviders(mock),
    max_body_bytes: 64 * 1024,
    metrics_listen: '127.0.0.1:0',
  }, { dir: keyDir });
});

test('a sealed non-streaming request reaches the provider with exactly the sealed key', async () => {
  await mock.reset();
  const apiKey = newKey();
  const body = { model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] };
  const res = await h.sealedRequest(relay.url, {
    apiKey, path: CHAT, body,
    headers: { cookie: 'session=abc', 'x-forwarded-for': '203.0.113.9', 'openai-organization': 'org-1' },
  });
  assert.equal(res.status, 200);
  const json = await res.json();
  assert.equal(json.object, 'chat.completion');
  assert.equal(res.headers.get('x-request-id')?.startsWith('req_'), true, 'x-request-id passed on');
  assert.equal(res.headers.get('set-cookie'), null, 'set-cookie stripped');
  assert.equal(res.headers.get('x-internal-secret'), null, 'unlisted response header stripped');
  assert.equal(res.headers.get('x-accel-buffering'), 'no');
  const [seen] = await mock.requests();
  assert.equal(seen.headers.authorization, `Bearer ${apiKey}`);
  assert.equal(seen.target, '/v1/chat/completions');
  assert.equal(seen.headers.cookie, undefined, 'cookies never forwarded');
  assert.equal(seen.headers['x-forwarded-for'], undefined, 'X-Forwarded-For never forwarded');
  assert.equal(seen.headers['openai-organization'], 'org-1', 'allowlisted header forwarded');
  assert.equal(seen.body_sha256, h.bodySha256(JSON.stringify(body)), 'body forwarded unchanged');
});

test('anthropic routes carry the key in x-api-key', async () => {
  await mock.reset();
  const apiKey = newKey();
  const res = await h.sealedRequest(relay.url, {
    apiKey, path: '/anthropic/v1/messages', body: { model: 'claude-test', max_tokens: 5, messages: [] },
    headers: { 'anthropic-version': '2023-06-01' },
  });
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  const [seen] = await mock.requests();
  assert.equal(seen.headers['x-api-key'], apiKey);
  assert.equal(seen.headers.authorization, undefined);
  assert.equal(seen.headers['anthropic-version'], '2023-06-01');
});

test('a streamed answer reaches the client event by event', async () => {
  await mock.reset();
  const apiKey = newKey();
  const res = await h.sealedRequest(relay.url, {
    apiKey, path: CHAT, body: { model: 'm', stream: true, mock: { events: 5, interval_ms: 250 } },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const chunks = await h.readChunksTimed(res);
  const text = chunks.map((c) => c.text).join('');
  assert.equal((text.match(/^data: /gm) ?? []).length, 6, '5 events and [DONE]');
  assert.match(text, /data: \[DONE\]/);
  // Not one lump at the end: the events arrived spread over ~1 s.
  const withData = chunks.filter((c) => c.text.includes('data: '));
  assert.ok(withData.length >= 4, `events arrived in ${withData.length} reads`);
  assert.ok(withData.at(-1).t - withData[0].t >= 700, `spread ${withData.at(-1).t - withData[0].t} ms`);
  const [seen] = await mock.requests();
  assert.equal(seen.headers.authorization, `Bearer ${apiKey}`);
});

test('a plain-HTTP loopback provider: JSON, a stream event by event, the exact key, connection reuse', async () => {
  // The non-TLS upstream path (allowed for loopback providers; scripts/demo.sh uses it).
  const plain = await h.startMock({ tls: false });
  const rp = await h.startRelay({
    providers: { plain: { base_url: plain.url, auth: 'bearer', paths: ['/v1/chat/completions'] } }, threads: 1,
  }, { dir: h.tempDir() });
  const path = '/plain/v1/chat/completions';
  for (let i = 0; i < 3; i++) {
    const apiKey = newKey();
    const res = await h.sealedRequest(rp.url, { apiKey, path, body: { model: 'm', n: i } });
    assert.equal(res.status, 200);
    assert.ok((await res.json()).choices, 'the JSON answer arrives whole');
    const seen = (await plain.requests()).at(-1);
    assert.equal(seen.headers.authorization, `Bearer ${apiKey}`);
  }
  const res = await h.sealedRequest(rp.url, {
    apiKey: newKey(), path, body: { model: 'm', stream: true, mock: { events: 4, interval_ms: 200 } },
  });
  assert.equal(res.status, 200);
  const chunks = await h.readChunksTimed(res);
  const withData = chunks.filter((c) => c.text.includes('data: '));
  assert.match(chunks.map((c) => c.text).join(''), /data: \[DONE\]/);
  assert.ok(withData.length >= 3, `events arrived in ${withData.length} reads`);
  const stats = await plain.stats();
  assert.ok(stats.connections_open + stats.connections_closed <= 2, 'the plain connection is pooled and reused');
  await rp.stop();
  await plain.stop();
});

test('a provider whose response head grows past 16 KiB in small fields gets 502, not unbounded memory', async () => {
  const fat = net.createServer((sock) => {
    sock.once('data', () => {
      sock.write('HTTP/1.1 200 OK\r\n');
      for (let i = 0; i < 600; i++) sock.write(`X-Filler-${i}: ${'b'.repeat(40)}\r\n`);  // about 32 KiB, never ended
    });
    sock.on('error', () => {});
  });
  await new Promise((res) => fat.listen(0, '127.0.0.1', res));
  const rf = await h.startRelay({
    providers: { fat: { base_url: `http://127.0.0.1:${fat.address().port}`, auth: 'bearer', paths: ['/v1/chat/completions'] } },
    upstream_timeout_s: 5,
  }, { dir: h.tempDir() });
  const res = await h.sealedRequest(rf.url, { apiKey: newKey(), path: '/fat/v1/chat/completions', body: { model: 'm' } });
  assert.equal(res.status, 502);
  assert.equal(await errorOf(res), 'upstream_bad_response');
  await rf.stop();
  fat.close();
});

test('upstream connections are kept alive and reused across requests', async () => {
  const r9 = await h.startRelay({ providers: h.mockProviders(mock), threads: 1 }, { dir: h.tempDir() });
  const before = await mock.stats();
  for (let i = 0; i < 20; i++) {
    const res = await h.sealedRequest(r9.url, { apiKey: newKey(), path: CHAT, body: { model: 'm', n: i } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  }
  const after = await mock.stats();
  const opened = (after.connections_open + after.connections_closed) - (before.connections_open + before.connections_closed);
  assert.ok(opened <= 2, `20 sequential requests opened ${opened} upstream connections`);
  await r9.stop();
});

test('each seal rejection has its code, status 401, and never reaches the provider', async () => {
  await mock.reset();
  const keys = await h.fetchKeys(relay.url);
  const body = JSON.stringify({ model: 'm' });
  const post = (authorization, path = CHAT, b = body) => fetch(relay.url + path, {
    method: 'POST', headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) }, body: b,
  });
  const apiKey = newKey();

  let res = await post(undefined);
  assert.equal(res.status, 401);
  assert.equal(await errorOf(res), 'missing_seal');

  res = await post(`Bearer ${apiKey}`);
  assert.equal(await errorOf(res), 'missing_seal', 'a plain bearer key is not accepted');

  const good = await h.seal({ keyConfig: keys, apiKey, path: CHAT, body });
  res = await post(good.replace(/Sealed [^.]+\./, 'Sealed AAAAAAAAAAAA.'));
  assert.equal(await errorOf(res), 'unknown_kid');

  res = await post(good.slice(0, -10));
  assert.equal(await errorOf(res), 'bad_seal', 'truncated');
  res = await post(good + '!!');
  assert.equal(await errorOf(res), 'bad_seal', 'not base64url');

  const s = await h.sodium();
  const notJson = await h.seal({ keyConfig: keys, payload: 'this is not json' });
  res = await post(notJson);
  assert.equal(await errorOf(res), 'bad_seal', 'payload not JSON');

  const stale = await h.seal({ keyConfig: keys, apiKey, path: CHAT, body, iat: Math.floor(Date.now() / 1000) - 300 });
  res = await post(stale);
  assert.equal(res.status, 401);
  assert.equal(await errorOf(res), 'seal_expired');
  const date = Date.parse(res.headers.get('date'));
  assert.ok(Math.abs(date - Date.now()) < 5000, 'seal_expired carries the relay Date');

  const future = await h.seal({ keyConfig: keys, apiKey, path: CHAT, body, iat: Math.floor(Date.now() / 1000) + 300 });
  assert.equal(await errorOf(await post(future)), 'seal_expired');

  const forOtherBody = await h.seal({ keyConfig: keys, apiKey, path: CHAT, body: body + ' ' });
  assert.equal(await errorOf(await post(forOtherBody)), 'seal_mismatch', 'body');
  const forOtherPath = await h.seal({ keyConfig: keys, apiKey, path: '/openai/v1/completions', body });
  assert.equal(await errorOf(await post(forOtherPath)), 'seal_mismatch', 'path');
  const forOtherMethod = await h.seal({ keyConfig: keys, apiKey, method: 'GET', path: CHAT, body });
  assert.equal(await errorOf(await post(forOtherMethod)), 'seal_mismatch', 'method');
  const forQuery = await h.seal({ keyConfig: keys, apiKey, path: CHAT + '?a=1', body });
  assert.equal(await errorOf(await post(forQuery)), 'seal_mismatch', 'query is part of the path');

  assert.equal((await mock.requests()).length, 0, 'no rejected request reached the provider');

  res = await post(good);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  res = await post(good);
  assert.equal(res.status, 401);
  assert.equal(await errorOf(res), 'seal_replayed');
  assert.equal((await mock.requests()).length, 1, 'the replay did not reach the provider');
  void s;
});

test('routes, methods and limits answer with the protocol error shape', async () => {
  let res = await fetch(relay.url + '/nowhere');
  assert.equal(res.status, 404);
  assert.equal(await errorOf(res), 'unknown_route');
  res = await fetch(relay.url + '/openai/v1/files', { method: 'POST', body: '{}' });
  assert.equal(res.status, 404, 'a provider path outside `paths`');
  assert.equal(await errorOf(res), 'unknown_route');
  res = await fetch(relay.url + '/openai/v1/chat/completions', { method: 'PUT', body: '{}' });
  assert.equal(res.status, 405);
  assert.equal(await errorOf(res), 'method_not_allowed');
  res = await fetch(relay.url + '/v1/keys', { method: 'POST', body: '' });
  assert.equal(res.status, 405);

  const big = 'x'.repeat(64 * 1024 + 1);
  res = await h.sealedRequest(relay.url, { apiKey: newKey(), path: CHAT, body: big });
  assert.equal(res.status, 413);
  assert.equal(await errorOf(res), 'body_too_large');

  const r = await rawExchange(relay.port,
    `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
  assert.match(r.data, /^HTTP\/1\.1 431 /);
  assert.match(r.data, /"code":"headers_too_large"/);

  res = await fetch(relay.url + '/healthz');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: 'ok' });
});

test('CORS headers only for allowed origins; preflight answers the openai client headers', async () => {
  let res = await fetch(relay.url + '/v1/keys', { headers: { origin: 'http://app.test' } });
  assert.equal(res.headers.get('access-control-allow-origin'), 'http://app.test');
  assert.match(res.headers.get('access-control-expose-headers'), /Date/);
  res = await fetch(relay.url + '/v1/keys', { headers: { origin: 'http://evil.test' } });
  assert.equal(res.headers.get('access-control-allow-origin'), null);

  res = await fetch(relay.url + CHAT, {
    method: 'OPTIONS',
    headers: { origin: 'http://app.test', 'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization, content-type, x-stainless-os' },
  });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('access-control-allow-origin'), 'http://app.test');
  assert.match(res.headers.get('access-control-allow-headers'), /x-stainless-os/);
  assert.match(res.headers.get('access-control-allow-methods'), /POST/);
  res = await fetch(relay.url + CHAT, {
    method: 'OPTIONS', headers: { origin: 'http://evil.test', 'access-control-request-method': 'POST' },
  });
  assert.equal(res.headers.get('access-control-allow-origin'), null);
  assert.equal(res.headers.get('access-control-allow-methods'), null);

  // Sealed responses carry CORS too, so a browser can read them.
  res = await h.sealedRequest(relay.url, { apiKey: newKey(), path: CHAT, body: { model: 'm' }, headers: { origin: 'http://app.test' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), 'http://app.test');
  await res.arrayBuffer();
});

test('upstream failures: unreachable, bad certificate, silent, failing', async () => {
  const dir = h.tempDir();
  // Another mock with its own CA: the relay trusts only the first mock's CA.
  const stranger = await h.startMock({ tls: true });
  // A mock whose certificate (IP:127.0.0.1, DNS:localhost) chains to a trusted
  // CA but does not name the address it is reached at.
  const misnamed = await h.startMock({ tls: true, host: '127.0.0.2' });
  // A port with nothing listening.
  const closedPort = await new Promise((res) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => res(p)); });
  });
  const r2 = await h.startRelay({
    providers: {
      ...h.mockProviders(mock),
      wrongca: { base_url: stranger.url, auth: 'bearer', ca_file: mock.caFile, paths: ['/v1/chat/completions'] },
      down: { base_url: `https://127.0.0.1:${closedPort}`, auth: 'bearer', ca_file: mock.caFile, paths: ['/v1/chat/completions'] },
      misnamed: { base_url: misnamed.url, auth: 'bearer', ca_file: misnamed.caFile, paths: ['/v1/chat/completions'] },
      byname: { base_url: mock.url.replace('127.0.0.1', 'localhost'), auth: 'bearer', ca_file: mock.caFile, paths: ['/v1/chat/completions'] },
    },
    upstream_timeout_s: 2,
  }, { dir });

  // Host-name verification: the certificate must name the host of base_url.
  let named = await h.sealedRequest(r2.url, { apiKey: newKey(), path: '/misnamed/v1/chat/completions', body: { model: 'm' } });
  assert.equal(named.status, 502);
  assert.equal(await errorOf(named), 'upstream_unreachable');
  const misnamedSaw = await h.httpsJson(misnamed.url + '/__mock/requests', { ca: readFileSync(misnamed.caFile), servername: 'localhost' });
  assert.equal(misnamedSaw.length, 0, 'an upstream whose certificate names another host never sees the key');
  named = await h.sealedRequest(r2.url, { apiKey: newKey(), path: '/byname/v1/chat/completions', body: { model: 'm' } });
  assert.equal(named.status, 200, 'a DNS name in the certificate matches base_url\'s host name (SNI sent)');
  await named.text();

  const apiKey = newKey();
  let res = await h.sealedRequest(r2.url, { apiKey, path: '/wrongca/v1/chat/completions', body: { model: 'm' } });
  assert.equal(res.status, 502);
  assert.equal(await errorOf(res), 'upstream_unreachable');
  const strangerSaw = await h.httpsJson(stranger.url + '/__mock/requests', { ca: readFileSync(stranger.caFile) });
  assert.equal(strangerSaw.length, 0, 'an upstream that failed verification never sees the key');

  res = await h.sealedRequest(r2.url, { apiKey: newKey(), path: '/down/v1/chat/completions', body: { model: 'm' } });
  assert.equal(res.status, 502);
  assert.equal(await errorOf(res), 'upstream_unreachable');

  const t0 = Date.now();
  res = await h.sealedRequest(r2.url, { apiKey: newKey(), path: CHAT, body: { model: 'm', mock: { mode: 'hang' } } });
  assert.equal(res.status, 504);
  assert.equal(await errorOf(res), 'upstream_timeout');
  assert.ok(Date.now() - t0 >= 1500, 'waited for the upstream timeout');

  res = await h.sealedRequest(r2.url, { apiKey: newKey(), path: CHAT, body: { model: 'm', mock: { mode: 'fail', status: 500 } } });
  assert.equal(res.status, 500, "the provider's own error status is passed through");
  const failBody = await res.json();
  assert.ok(failBody.error, "the provider's error body is passed through");
  await r2.stop();
  await stranger.stop();
  await misnamed.stop();
});

test('more in-flight requests than the cap get 503 overloaded', async () => {
  const r3 = await h.startRelay({ providers: h.mockProviders(mock), max_in_flight: 1 }, { dir: h.tempDir() });
  const ac = new AbortController();
  const hanging = h.sealedRequest(r3.url, { apiKey: newKey(), path: CHAT, body: { model: 'm', mock: { mode: 'hang' } } })
    .catch(() => null);
  await h.sleep(300);
  const res = await h.sealedRequest(r3.url, { apiKey: newKey(), path: CHAT, body: { model: 'm' } });
  assert.equal(res.status, 503);
  assert.equal(await errorOf(res), 'overloaded');
  ac.abort();
  await r3.stop('SIGKILL');
  await hanging;
});

test('a client leaving mid-stream closes the upstream connection at once', async () => {
  await mock.reset();
  const res = await h.sealedRequest(relay.url, {
    apiKey: newKey(), path: CHAT, body: { model: 'm', stream: true, mock: { events: 100, interval_ms: 1000 } },
  });
  const reader = res.body.getReader();
  await reader.read();  // the stream has started
  const before = await mock.stats();
  await reader.cancel();
  // The mock only writes every second; the relay must notice the client
  // left and close the upstream well before the mock would find out itself.
  let after;
  for (let i = 0; i < 20; i++) {
    await h.sleep(50);
    after = await mock.stats();
    if (after.streams_aborted > before.streams_aborted) break;
  }
  assert.ok(after.streams_aborted > before.streams_aborted, `upstream stream aborted: ${JSON.stringify(after)}`);
});

test('new upstream connections resume the provider\'s TLS session, even after clients left mid-answer', async () => {
  // A client leaving mid-stream makes the relay close the upstream connection
  // without a close_notify. OpenSSL then marks that connection's session not
  // resumable; the pool keeps a copy of its own (relay/upstream.cpp), so the
  // next connections still resume. Counted at the provider's end.
  const own = await h.startMock({ tls: true });
  const r = await h.startRelay({ threads: 1, providers: h.mockProviders(own) }, { dir: h.tempDir() });
  try {
    const s0 = await own.stats();
    const first = await h.sealedRequest(r.url, { apiKey: newKey(), path: CHAT, body: { model: 'm' } });
    assert.equal(first.status, 200);
    await first.text();  // a complete exchange: the pool keeps its session
    const cycles = 5;
    for (let i = 0; i < cycles; i++) {
      // Each stream takes the only upstream connection there is (the pooled
      // one, then a new one each time) and is left after its first event.
      const res = await h.sealedRequest(r.url, {
        apiKey: newKey(), path: CHAT, body: { model: 'm', stream: true, mock: { events: 50, interval_ms: 200 } },
      });
      assert.equal(res.status, 200);
      const reader = res.body.getReader();
      await reader.read();
      await reader.cancel();
      await h.sleep(300);  // the relay has closed that upstream connection by now
    }
    const last = await h.sealedRequest(r.url, { apiKey: newKey(), path: CHAT, body: { model: 'm' } });
    assert.equal(last.status, 200);
    await last.text();
    const s1 = await own.stats();
    // The relay connected 1 + cycles times (the first stream reused the
    // pooled connection); the stats requests themselves add one handshake.
    const full = s1.tls_full - s0.tls_full;
    const resumed = s1.tls_resumed - s0.tls_resumed;
    assert.ok(resumed >= cycles, `every later connection resumed: ${JSON.stringify({ full, resumed })}`);
    assert.ok(full <= 2, `one full handshake by the relay, one by the stats request at most: ${JSON.stringify({ full, resumed })}`);
  } finally {
    await r.stop('SIGKILL');
    await own.stop();
  }
});

test('an upstream reset mid-stream closes the client connection', async () => {
  const res = await h.sealedRequest(relay.url, {
    apiKey: newKey(), path: CHAT, body: { model: 'm', stream: true, mock: { mode: 'reset', events: 2, interval_ms: 50 } },
  });
  assert.equal(res.status, 200);
  await assert.rejects(res.text(), 'the client sees a broken body, not a complete one');
});

test('SSE keep-alive comments flow while the provider is silent', async () => {
  const r4 = await h.startRelay({ providers: h.mockProviders(mock), sse_keepalive_s: 1 }, { dir: h.tempDir() });
  const res = await h.sealedRequest(r4.url, {
    apiKey: newKey(), path: CHAT, body: { model: 'm', stream: true, mock: { events: 1, first_delay_ms: 2600 } },
  });
  const text = await res.text();
  assert.match(text, /^: keep-alive\n\n/m);
  assert.match(text, /data: \[DONE\]/);
  await r4.stop();
});

test('SIGTERM lets an in-flight stream finish, then exits 0', async () => {
  const r5 = await h.startRelay({ providers: h.mockProviders(mock) }, { dir: h.tempDir() });
  const res = await h.sealedRequest(r5.url, {
    apiKey: newKey(), path: CHAT, body: { model: 'm', stream: true, mock: { events: 6, interval_ms: 200 } },
  });
  const bodyPromise = res.text();
  await h.sleep(150);
  r5.kill('SIGTERM');
  const text = await bodyPromise;
  assert.match(text, /data: \[DONE\]/, 'the stream completed');
  const { code } = await h.waitExit(r5.child);
  assert.equal(code, 0);
  // No new connections after draining began.
  await assert.rejects(fetch(r5.url + '/healthz'));
});

test('SIGHUP rotation: old and new keys accepted, a removed key rejected', async () => {
  const dir = h.tempDir();
  const oldKey = await h.makeKeyFile(dir, 'old.json');
  const r6 = await h.startRelay({ providers: h.mockProviders(mock), key_files: [oldKey] }, { dir });
  // Each key file offers a sealed box and an HPKE key; rotation is checked on the sealed boxes.
  const boxes = (kc) => ({ keys: kc.keys.filter((k) => (k.alg ?? 'x25519-sealedbox') === 'x25519-sealedbox') });
  const oldConfig = boxes(await h.fetchKeys(r6.url));
  assert.equal(oldConfig.keys.length, 1);

  // The runbook: a new key file, listed first in key_files, then SIGHUP.
  const newKeyFile = await h.makeKeyFile(dir, 'new.json');
  writeFileSync(r6.configPath, JSON.stringify({ ...r6.config, key_files: [String(newKeyFile), String(oldKey)] }));
  r6.kill('SIGHUP');
  await h.sleep(300);
  const both = boxes(await h.fetchKeys(r6.url));
  assert.equal(both.keys.length, 2, 'old and new key served during the rotation window');
  assert.equal(both.keys[0].kid, newKeyFile.kid, 'the new key first');
  for (const kc of [{ keys: [both.keys[0]] }, { keys: [both.keys[1]] }]) {
    const r = await h.sealedRequest(r6.url, { apiKey: newKey(), path: CHAT, body: { model: 'm' }, keyConfig: kc });
    assert.equal(r.status, 200, 'both keys accepted');
    await r.arrayBuffer();
  }
  // Then the old key is removed.
  writeFileSync(r6.configPath, JSON.stringify({ ...r6.config, key_files: [String(newKeyFile)] }));
  r6.kill('SIGHUP');
  await h.sleep(300);
  assert.match(r6.stderr(), /keys reloaded/);
  const rotated = boxes(await h.fetchKeys(r6.url));
  assert.equal(rotated.keys.length, 1);
  assert.equal(rotated.keys[0].kid, newKeyFile.kid, 'only the new key is served');
  const res = await h.sealedRequest(r6.url, { apiKey: newKey(), path: CHAT, body: { model: 'm' }, keyConfig: oldConfig });
  assert.equal(res.status, 401);
  assert.equal(await errorOf(res), 'unknown_kid', 'a removed key is rejected');
  const ok = await h.sealedRequest(r6.url, { apiKey: newKey(), path: CHAT, body: { model: 'm' }, keyConfig: rotated });
  assert.equal(ok.status, 200);
  await ok.arrayBuffer();
  await r6.stop();

  // A broken key file, or a config that no longer parses, keeps the current keys.
  const r7 = await h.startRelay({ providers: h.mockProviders(mock), key_files: [newKeyFile, oldKey] }, { dir });
  writeFileSync(String(oldKey), 'garbage', { mode: 0o600 });
  r7.kill('SIGHUP');
  await h.sleep(300);
  assert.match(r7.stderr(), /key reload failed, keeping the current keys: .*old\.json/);
  assert.equal(boxes(await h.fetchKeys(r7.url)).keys.length, 2);
  writeFileSync(r7.configPath, '{"key_files": [');
  r7.kill('SIGHUP');
  await h.sleep(300);
  assert.match(r7.stderr(), /key reload failed, keeping the current keys: config: not valid JSON/);
  assert.equal(boxes(await h.fetchKeys(r7.url)).keys.length, 2);
  await r7.stop();
});

test('a public path prefix is part of what the seal binds', async () => {
  const r8 = await h.startRelay({ providers: h.mockProviders(mock), public_path_prefix: '/relay' }, { dir: h.tempDir() });
  const body = { model: 'm' };
  let res = await h.sealedRequest(r8.url, { apiKey: newKey(), path: CHAT, sealPath: '/relay' + CHAT, body });
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  res = await h.sealedRequest(r8.url, { apiKey: newKey(), path: CHAT, body });
  assert.equal(await errorOf(res), 'seal_mismatch', 'a seal for the path without the prefix');
  await r8.stop();
});

test('metrics count requests and rejections, with no key, seal or address in a label', async () => {
  const m = await (await fetch(relay.metricsUrl)).text();
  assert.match(m, /byok_requests_total\{provider="openai",route="sealed",status="200"\} \d+/);
  assert.match(m, /byok_seal_rejections_total\{code="seal_replayed"\} [1-9]/);
  assert.match(m, /byok_upstream_ttfb_seconds_count\{provider="openai"\} [1-9]/);
  for (const k of usedKeys) assert.ok(!m.includes(k));
  assert.ok(!m.includes('127.0.0.1'));
});

test('bad configurations stop the relay at start with the field named', () => {
  const dir = h.tempDir();
  const cases = [
    [{ listen: 'nonsense' }, /"listen"/],
    [{ key_files: [] }, /"key_files"/],
    [{ key_files: ['/nonexistent/key.json'] }, /cannot open key file '\/nonexistent\/key.json'/],
    [{ key_files: ['k'], providers: { x: { base_url: 'http://example.com', paths: ['/v1'] } } }, /providers\.x\.base_url/],
    [{ key_files: ['k'], providers: { x: { base_url: 'https://example.com', auth: 'magic', paths: ['/v1'] } } }, /providers\.x\.auth/],
    [{ key_files: ['k'], max_body_bytes: 'big' }, /"max_body_bytes"/],
    [{ key_files: ['k'], lisen: '127.0.0.1:1' }, /"lisen" is not a known setting/],
  ];
  for (const [cfg, re] of cases) {
    const p = join(dir, 'bad.json');
    writeFileSync(p, JSON.stringify(cfg));
    const r = spawnSync(h.relayBin, ['serve', '--config', p], { encoding: 'utf8', timeout: 10000 });
    assert.equal(r.status, 1, `exit code for ${JSON.stringify(cfg)}`);
    assert.match(r.stderr, re);
  }
});

test('the access log holds one line per request and none of the keys or seals', async () => {
  const log = relay.stderr();
  assert.match(log, /method=POST provider=openai path=\/openai\/v1\/chat\/completions status=200 upstream=200/);
  for (const k of usedKeys) {
    assert.ok(!log.includes(k), 'a key in the log');
    assert.ok(!log.includes(k.slice(-16)), 'part of a key in the log');
  }
  assert.ok(!/Sealed /.test(log), 'a seal in the log');
});

test('a seal that binds its forwarded headers is refused when they are changed (headers_sha256)', async () => {
  const { createHash } = await import('node:crypto');
  const body = JSON.stringify({ model: 'm', messages: [] });
  const keyConfig = await h.fetchKeys(relay.url);
  // docs/protocol.md §3.5: bound names lowercased and sorted, "name:value\n" each.
  const digest = (headers) => createHash('sha256')
    .update(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}:${v}\n`).join(''))
    .digest('base64url');
  const sent = { 'content-type': 'application/json', 'openai-organization': 'org-alice' };
  const send = async (headers) => {
    const payload = JSON.stringify({
      key: newKey(), iat: Math.floor(Date.now() / 1000), method: 'POST', path: CHAT,
      body_sha256: h.bodySha256(body), headers_sha256: digest(sent),
    });
    const authorization = await h.seal({ keyConfig, payload });
    return fetch(relay.url + CHAT, { method: 'POST', headers: { ...headers, authorization }, body });
  };
  const ok = await send(sent);
  assert.equal(ok.status, 200, await ok.text());
  for (const changed of [
    { ...sent, 'openai-organization': 'org-mallory' },                 // another organization billed
    { ...sent, 'openai-project': 'proj-x' },                           // a bound header added
    { 'content-type': 'application/json' },                            // a bound header dropped
  ]) {
    const res = await send(changed);
    assert.equal(res.status, 401);
    assert.equal(await errorOf(res), 'seal_mismatch');
  }
  // Not bound (browsers set them): accept and user-agent may differ.
  const ua = await send({ ...sent, 'user-agent': 'something else', accept: 'text/plain' });
  assert.equal(ua.status, 200, await ua.text());
});

test('a restarted relay refuses a seal made before it started (it forgot which seals it accepted)', async () => {
  const dir = h.tempDir();
  const keyFile = await h.makeKeyFile(dir, 'restart.json');
  const first = await h.startRelay({ providers: h.mockProviders(mock), key_files: [keyFile] }, { dir });
  const keyConfig = await h.fetchKeys(first.url);
  const body = JSON.stringify({ model: 'm', messages: [] });
  const authorization = await h.seal({ keyConfig, apiKey: newKey(), path: CHAT, body });
  const send = (r, auth) => fetch(r.url + CHAT, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: auth }, body,
  });
  const ok = await send(first, authorization);
  assert.equal(ok.status, 200, await ok.text());
  await first.stop();
  // Past the one second of grace: the restart is at least two seconds after the seal's iat.
  await h.sleep(2100);
  const second = await h.startRelay({ providers: h.mockProviders(mock), key_files: [keyFile] }, { dir });
  // The captured seal, replayed to the restarted relay (whose replay cache is empty).
  const replay = await send(second, authorization);
  assert.equal(replay.status, 401);
  assert.ok(replay.headers.get('date'), 'seal_expired carries Date, so a client can reseal');
  assert.equal(await errorOf(replay), 'seal_expired');
  const fresh = await send(second, await h.seal({ keyConfig, apiKey: newKey(), path: CHAT, body }));
  assert.equal(fresh.status, 200, await fresh.text());
  await second.stop();
});
