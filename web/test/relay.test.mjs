// sealedFetch against the real relay and the mock provider: plain and
// streamed answers, a body changed after sealing, a key rotation, a client
// clock five minutes off, a relay behind a path-prefix proxy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  startMock, startRelay, makeKeyFile, mockProviders, fetchKeys, bodySha256, randomApiKey,
  readChunksTimed, tempDir, stopAll, sleep,
} from '../../tests/integration/lib/harness.mjs';
import { sealedFetch } from '../byok-relay.js';
import { startPrefixProxy } from './lib/prefix-proxy.mjs';

after(stopAll);

let mock;
let relay;
// Set up in a hook, so a failure on the way still reaches the after hook.
before(async () => {
  mock = await startMock();
  relay = await startRelay({ providers: mockProviders(mock) });
});

// A fetch that records what the relay answered, for counting retries.
// The kid a key file holds (its "kid" field).
const kidOf = (path) => JSON.parse(readFileSync(String(path), 'utf8')).kid;
// ...and the kid of its HPKE half, which /v1/keys lists after the sealed-box keys.
const hpkeKidOf = (path) => JSON.parse(readFileSync(String(path), 'utf8')).hpke_kid;

function recordingFetch() {
  const log = [];
  const f = async (url, init) => {
    const res = await fetch(url, init);
    let code = null;
    if (!res.ok && (res.headers.get('content-type') || '').includes('json')) {
      code = (await res.clone().json()).error?.code ?? null;
    }
    log.push({ path: new URL(url).pathname, status: res.status, code });
    return res;
  };
  return { f, log };
}

async function lastMockRequest() {
  const seen = await mock.requests();
  return seen.at(-1);
}

test('non-streaming chat completion: answer intact, mock saw exactly the key', async () => {
  const key = randomApiKey();
  const f = sealedFetch(relay.url, () => key);
  const body = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'hello ✓' }] });
  const res = await f(relay.url + '/openai/v1/chat/completions', {
    method: 'POST', body, headers: { 'content-type': 'application/json', authorization: 'Bearer nope' },
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const j = JSON.parse(text);
  assert.equal(j.choices[0].message.content, 'mock answer ' + bodySha256(body));
  const seen = await lastMockRequest();
  assert.equal(seen.headers.authorization, `Bearer ${key}`);
  assert.equal(seen.body_sha256, bodySha256(body));
  assert.match(seen.target, /\/v1\/chat\/completions$/);
});

test('streaming chat completion arrives in several steps', async () => {
  const key = randomApiKey();
  const f = sealedFetch(relay.url, async () => key);
  const events = 6;
  const res = await f(relay.url + '/openai/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'count' }],
      mock: { events, interval_ms: 80 },
    }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const chunks = await readChunksTimed(res);
  const all = chunks.map((c) => c.text).join('');
  let content = '';
  for (const line of all.split('\n')) {
    if (line.startsWith('data: ') && line !== 'data: [DONE]') {
      content += JSON.parse(line.slice(6)).choices?.[0]?.delta?.content ?? '';
    }
  }
  assert.equal(content, Array.from({ length: events }, (_, i) => `tok${i} `).join(''));
  assert.ok(all.includes('data: [DONE]'));
  // Streamed, not buffered: the pieces arrive spread over the mock's intervals.
  const withContent = chunks.filter((c) => c.text.includes('"content"'));
  assert.ok(withContent.length >= 3, `only ${withContent.length} reads carried content`);
  assert.ok(withContent.at(-1).t - withContent[0].t >= 200,
    `arrival times ${withContent.map((c) => c.t).join(',')}`);
  assert.equal((await lastMockRequest()).headers.authorization, `Bearer ${key}`);
});

test('HPKE through the relay: sealed to the HPKE kid with WebCrypto alone; the sealed-box fallback works too', async () => {
  const keys = (await fetchKeys(relay.url)).keys;
  const hpkeKid = keys.find((k) => k.alg === 'hpke-x25519-sha256-aes128gcm')?.kid;
  const boxKid = keys.find((k) => k.alg === 'x25519-sealedbox')?.kid;
  assert.ok(hpkeKid && boxKid, JSON.stringify(keys));
  for (const [subtle, kid] of [[globalThis.crypto.subtle, hpkeKid], [null, boxKid]]) {
    const key = randomApiKey();
    const sent = [];
    const f = sealedFetch(relay.url, () => key, {
      subtle,
      fetch: (url, init) => {
        sent.push(new Headers(init.headers).get('authorization'));
        return fetch(url, init);
      },
    });
    const body = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: `alg ${kid}` }] });
    const res = await f(relay.url + '/openai/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(JSON.parse(text).choices[0].message.content, 'mock answer ' + bodySha256(body));
    assert.equal(sent.filter((a) => a !== null).length, 1);
    assert.ok(sent.at(-1).startsWith(`Sealed ${kid}.`), sent.at(-1).slice(0, 30));
    assert.equal((await lastMockRequest()).headers.authorization, `Bearer ${key}`);
  }
});

test('a body changed after sealing is refused with seal_mismatch and never reaches the provider', async () => {
  await mock.reset();
  const key = randomApiKey();
  const f = sealedFetch(relay.url, () => key, {
    fetch: (url, init) => (new URL(url).pathname === '/v1/keys' ? fetch(url, init)
      : fetch(url, { ...init, body: init.body && JSON.stringify({ model: 'gpt-test', messages: [], evil: 1 }) })),
  });
  const res = await f(relay.url + '/openai/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-test', messages: [] }),
  });
  assert.equal(res.status, 401);
  const j = await res.json();
  assert.equal(j.error.code, 'seal_mismatch');
  assert.equal(j.error.type, 'relay_error');
  assert.ok(!JSON.stringify(j).includes(key));
  assert.equal((await mock.requests()).length, 0);
});

test('a client clock five minutes off succeeds through one Date retry', async () => {
  for (const skew of [5 * 60_000, -5 * 60_000]) {
    const key = randomApiKey();
    const { f: rec, log } = recordingFetch();
    const f = sealedFetch(relay.url, () => key, { fetch: rec, now: () => Date.now() + skew });
    const body = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: `skew ${skew}` }] });
    const res = await f(relay.url + '/openai/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(JSON.parse(text).choices[0].message.content, 'mock answer ' + bodySha256(body));
    const sealed = log.filter((l) => l.path !== '/v1/keys');
    assert.deepEqual(sealed.map((l) => l.code ?? l.status), ['seal_expired', 200], `skew ${skew}`);
    // The learnt offset is kept: the next request goes through first time.
    const res2 = await f(relay.url + '/openai/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    });
    assert.equal(res2.status, 200);
    assert.equal(log.filter((l) => l.path !== '/v1/keys').length, 3);
  }
});

test('a key rotation on the relay (SIGHUP) is picked up after one unknown_kid', async (t) => {
  const dir = tempDir('byok-rotate-');
  const keyPath = join(dir, 'current.json');
  const first = await makeKeyFile(dir);
  const firstKid = kidOf(first);
  renameSync(String(first), keyPath);
  const r = await startRelay({ providers: mockProviders(mock), key_files: [keyPath] }, { dir });
  t.after(() => r.stop());
  const key = randomApiKey();
  const { f: rec, log } = recordingFetch();
  const f = sealedFetch(r.url, () => key, { fetch: rec });
  const send = () => f(r.url + '/openai/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'rotate' }] }),
  });
  assert.equal((await send()).status, 200);
  assert.equal((await fetchKeys(r.url)).keys[0].kid, firstKid);

  const second = await makeKeyFile(dir);
  const secondKid = kidOf(second);
  const secondHpkeKid = hpkeKidOf(second);
  assert.notEqual(secondKid, firstKid);
  renameSync(String(second), keyPath);
  r.kill('SIGHUP');
  const deadline = Date.now() + 10_000;
  while ((await fetchKeys(r.url)).keys[0].kid !== secondKid) {
    assert.ok(Date.now() < deadline, 'the relay did not reload its key file after SIGHUP');
    await sleep(50);
  }
  const keysAfter = await fetchKeys(r.url);
  assert.deepEqual(keysAfter.keys.map((k) => k.kid), [secondKid, secondHpkeKid], 'the old key is gone');

  log.length = 0;
  const res = await send();
  assert.equal(res.status, 200, await res.clone().text());
  assert.deepEqual(log.map((l) => `${l.path} ${l.code ?? l.status}`), [
    '/openai/v1/chat/completions unknown_kid',
    '/v1/keys 200',
    '/openai/v1/chat/completions 200',
  ]);
  assert.equal((await lastMockRequest()).headers.authorization, `Bearer ${key}`);
});

test('behind a front proxy at /relay (public_path_prefix): the seal covers the prefixed path', async (t) => {
  const r = await startRelay({ providers: mockProviders(mock), public_path_prefix: '/relay' });
  t.after(() => r.stop());
  const proxy = await startPrefixProxy(r.url, '/relay');
  t.after(() => proxy.stop());
  const base = proxy.url;
  const key = randomApiKey();
  const f = sealedFetch(base, () => key);
  const body = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'prefix' }] });
  const res = await f('/openai/v1/chat/completions?trace=1', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body,
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.equal(JSON.parse(text).choices[0].message.content, 'mock answer ' + bodySha256(body));
  const seen = await lastMockRequest();
  assert.equal(seen.headers.authorization, `Bearer ${key}`);
  assert.match(seen.target, /\/v1\/chat\/completions\?trace=1$/);
});
