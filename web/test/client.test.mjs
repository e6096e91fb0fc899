// Unit tests of web/byok-relay.js: what exactly gets hashed and sealed, and
// the client's own logic (key config cache, unknown_kid and seal_expired
// retries, refusals), against an in-process fake that opens the seals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import sodium from 'libsodium-wrappers';

import {
  sealedFetch, resolveRequest, requestTarget, buildPayload, bodySha256, cacheSeconds,
  createKeyStore, isValidKey, parseKeyConfig, RelayClientError,
} from '../byok-relay.js';
import { startFakeRelay, b64 } from './lib/fake-relay.mjs';

await sodium.ready;
const KEY = 'sk-test-' + 'Ab9_'.repeat(8);
const sha = (bytes) => b64(createHash('sha256').update(bytes).digest());

async function fake(t, opts) {
  const relay = await startFakeRelay({ expectKey: KEY, ...opts });
  t.after(() => relay.stop());
  return relay;
}

test('resolveRequest: exact body bytes for every body type fetch accepts', async () => {
  const url = 'http://127.0.0.1:1/openai/v1/x';
  const text = '{"a":"é\\u0000 ✓"}';
  const cases = [
    ['string', text, new TextEncoder().encode(text), /^text\/plain/],
    ['Uint8Array', new Uint8Array([0, 1, 2, 255]), new Uint8Array([0, 1, 2, 255]), null],
    ['ArrayBuffer', new Uint8Array([9, 8, 7]).buffer, new Uint8Array([9, 8, 7]), null],
    ['DataView', new DataView(new Uint8Array([1, 2, 3, 4]).buffer, 1, 2), new Uint8Array([2, 3]), null],
    ['Blob', new Blob(['ab', new Uint8Array([0xff])], { type: 'application/x-test' }),
      new Uint8Array([0x61, 0x62, 0xff]), /^application\/x-test$/],
    ['URLSearchParams', new URLSearchParams({ q: 'a b&c', z: 'ü' }),
      new TextEncoder().encode('q=a+b%26c&z=%C3%BC'), /^application\/x-www-form-urlencoded/],
  ];
  for (const [name, body, want, ctype] of cases) {
    const r = await resolveRequest(url, { method: 'POST', body });
    assert.deepEqual(r.body, want, name);
    if (ctype) {
      assert.match(r.headers.get('content-type'), ctype, name);
    }
    assert.equal(await bodySha256(sodium, r.body), sha(want), name);
  }
  // A stream body is read once, completely.
  const stream = new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode('part1-'));
      c.enqueue(new TextEncoder().encode('part2'));
      c.close();
    },
  });
  const s = await resolveRequest(url, { method: 'POST', body: stream, duplex: 'half' });
  assert.equal(new TextDecoder().decode(s.body), 'part1-part2');
});

test('resolveRequest: FormData bytes match the multipart boundary in Content-Type', async () => {
  const fd = new FormData();
  fd.append('purpose', 'fine-tune');
  fd.append('file', new Blob(['line1\nline2\n'], { type: 'text/plain' }), 'data.jsonl');
  const r = await resolveRequest('http://127.0.0.1:1/openai/v1/files', { method: 'POST', body: fd });
  const boundary = /boundary=(.+)$/.exec(r.headers.get('content-type'))[1];
  const text = new TextDecoder().decode(r.body);
  assert.ok(text.startsWith('--' + boundary + '\r\n'), text.slice(0, 80));
  assert.ok(text.includes('line1\nline2\n'));
  assert.ok(text.trimEnd().endsWith('--' + boundary + '--'));
});

test('resolveRequest: method, URL and headers from a Request, init overriding', async () => {
  const req = new Request('http://127.0.0.1:1/openai/v1/models?limit=2#frag', {
    method: 'post', headers: { 'x-one': '1', authorization: 'Bearer sealed-by-relay' }, body: 'abc',
  });
  const r = await resolveRequest(req);
  assert.equal(r.method, 'POST');  // fetch normalizes the method's case
  assert.equal(r.url, 'http://127.0.0.1:1/openai/v1/models?limit=2');
  assert.equal(r.headers.get('x-one'), '1');
  assert.deepEqual(r.body, new TextEncoder().encode('abc'));
  const r2 = await resolveRequest('http://127.0.0.1:1/a', { method: 'patch', body: 'x' });
  assert.equal(r2.method, 'patch');  // ...but only for the six it normalizes, as it sends it
  const g = await resolveRequest('http://127.0.0.1:1/a');
  assert.equal(g.method, 'GET');
  assert.equal(g.body, null);
});

test('requestTarget: path and query exactly as sent, fragment dropped', () => {
  assert.equal(requestTarget('http://h:1/openai/v1/chat/completions'), '/openai/v1/chat/completions');
  assert.equal(requestTarget('http://h:1/a/b?x=1&y=%20z#f'), '/a/b?x=1&y=%20z');
  assert.equal(requestTarget('http://h:1/a?'), '/a?');  // an empty query is still sent
  assert.equal(requestTarget('http://h:1/a b/ü?q=ü'), '/a%20b/%C3%BC?q=%C3%BC');
  assert.equal(requestTarget('http://h:1'), '/');
  assert.equal(requestTarget('https://h/relay/openai/v1/x?q'), '/relay/openai/v1/x?q');
});

test('buildPayload: the protocol fields in order, JSON-escaped', () => {
  const p = buildPayload({ key: 'k"\\', iat: 1700000000, method: 'POST', path: '/p?q="', bodySha256: 'abc' });
  assert.equal(p, '{"key":"k\\"\\\\","iat":1700000000,"method":"POST","path":"/p?q=\\"","body_sha256":"abc"}');
  assert.throws(() => buildPayload({ key: 'k', iat: 1.5, method: 'GET', path: '/', bodySha256: '' }), TypeError);
});

test('bodySha256: empty body is the hash of nothing; base64url without padding', async () => {
  const empty = await bodySha256(sodium, null);
  assert.equal(empty, '47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU');
  assert.doesNotMatch(empty, /[=+/]/);
});

test('cacheSeconds and parseKeyConfig', () => {
  assert.equal(cacheSeconds(null), 60);
  assert.equal(cacheSeconds('public, max-age=300'), 300);
  assert.equal(cacheSeconds('max-age=0'), 0);
  assert.equal(cacheSeconds('no-store'), 0);
  assert.equal(cacheSeconds('public'), 60);
  const pk = b64(sodium.crypto_box_keypair().publicKey);
  const now = 1_800_000_000;
  const pick = parseKeyConfig(sodium, { keys: [
    { kid: 'old', alg: 'x25519-sealedbox', pk, exp: now - 1 },
    { kid: 'new', alg: 'x25519-sealedbox', pk, exp: now + 10 },
  ] }, now);
  assert.equal(pick.kid, 'new');
  assert.throws(() => parseKeyConfig(sodium, { keys: [{ kid: 'a', alg: 'other', pk, exp: now + 1 }] }, now),
    RelayClientError);
  assert.throws(() => parseKeyConfig(sodium, { keys: [{ kid: 'a', alg: 'x25519-sealedbox', pk: pk + 'AA' }] }, now),
    RelayClientError);
});

test('sealedFetch: the seal opens to exactly this request, Authorization replaced', async (t) => {
  const relay = await fake(t);
  const f = sealedFetch(relay.url, () => KEY);
  const body = '{"model":"m","messages":[{"role":"user","content":"héllo"}]}';
  const res = await f(relay.url + '/openai/v1/chat/completions?x=1&y=2', {
    method: 'POST', body, headers: { authorization: 'Bearer sealed-by-relay', 'content-type': 'application/json' },
  });
  assert.equal(res.status, 200, JSON.stringify(relay.state.seen.at(-1)?.error));
  assert.deepEqual(await res.json(), { ok: true, sawKey: 'expected' });
  const seen = relay.state.seen.at(-1);
  assert.match(seen.headers.authorization, /^Sealed [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
  assert.equal(seen.headers['content-type'], 'application/json');
  assert.equal(seen.body.toString(), body);
  const p = seen.payload;
  assert.deepEqual(Object.keys(p), ['key', 'iat', 'method', 'path', 'body_sha256', 'headers_sha256']);
  assert.equal(p.key, KEY);
  assert.equal(p.method, 'POST');
  assert.equal(p.path, '/openai/v1/chat/completions?x=1&y=2');
  assert.equal(p.body_sha256, sha(Buffer.from(body)));
  // The bound header fields: only content-type was set among them.
  assert.equal(p.headers_sha256, sha(Buffer.from('content-type:application/json\n')));
  assert.equal(seen.headersSha256Ok, true);
  assert.ok(Math.abs(p.iat - Date.now() / 1000) < 5);
});

test('sealedFetch: a relay under a path prefix seals the prefixed path; relative targets resolve under it',
  async (t) => {
    const relay = await fake(t, { prefix: '/relay' });
    const f = sealedFetch(relay.url + '/', async () => KEY);
    const res = await f('/openai/v1/models?limit=3');
    assert.equal(res.status, 200);
    assert.equal(relay.state.seen.at(-1).payload.path, '/relay/openai/v1/models?limit=3');
    assert.equal(relay.state.seen.at(-1).payload.method, 'GET');
    assert.equal(relay.state.seen.at(-1).payload.body_sha256, sha(Buffer.alloc(0)));
    assert.equal(relay.state.keyFetches, 1);
  });

test('sealedFetch: refuses to send a seal anywhere but the relay', async (t) => {
  const relay = await fake(t, { prefix: '/relay' });
  const f = sealedFetch(relay.url, () => KEY);
  const origin = new URL(relay.url).origin;
  for (const u of ['http://127.0.0.2:1/relay/openai/v1/x', origin + '/openai/v1/x', origin + '/relayx/openai']) {
    await assert.rejects(f(u, { method: 'POST', body: '{}' }), (e) => e.code === 'foreign_url', u);
  }
  assert.equal(relay.state.seen.length, 0);
});

test('sealedFetch: key config cached for max-age, fetched again after it', async (t) => {
  let clock = Date.now();
  const relay = await fake(t, { cacheControl: 'max-age=30', nowMs: () => clock });
  const f = sealedFetch(relay.url, () => KEY, { now: () => clock });
  await Promise.all([f('/openai/v1/a'), f('/openai/v1/b'), f('/openai/v1/c')]);
  assert.equal(relay.state.keyFetches, 1, 'concurrent first requests share one key fetch');
  clock += 29_000;
  await f('/openai/v1/d');
  assert.equal(relay.state.keyFetches, 1);
  clock += 2_000;
  await f('/openai/v1/e');
  assert.equal(relay.state.keyFetches, 2);
  assert.ok(relay.state.seen.every((s) => !s.error));
});

test('sealedFetch: no Cache-Control means 60 s; no-store means every time', async (t) => {
  let clock = Date.now();
  const relay = await fake(t, { cacheControl: null, nowMs: () => clock });
  const f = sealedFetch(relay.url, () => KEY, { now: () => clock });
  await f('/openai/v1/a');
  clock += 59_000;
  await f('/openai/v1/a');
  assert.equal(relay.state.keyFetches, 1);
  clock += 2_000;
  await f('/openai/v1/a');
  assert.equal(relay.state.keyFetches, 2);
  relay.state.cacheControl = 'no-store';
  clock += 61_000;
  await f('/openai/v1/a');  // the answer that said no-store is still used for its own request
  await f('/openai/v1/a');
  assert.equal(relay.state.keyFetches, 4);
  assert.ok(relay.state.seen.every((s) => !s.error));
});

test('sealedFetch: unknown_kid → key config fetched once more, resealed with the same bytes', async (t) => {
  const relay = await fake(t);
  const f = sealedFetch(relay.url, () => KEY);
  assert.equal((await f('/openai/v1/a', { method: 'POST', body: 'one' })).status, 200);
  const oldKid = relay.state.keys[0].kid;
  const k = relay.rotate();
  const body = new Uint8Array([1, 2, 3, 0, 255]);
  const res = await f('/openai/v1/a', { method: 'POST', body });
  assert.equal(res.status, 200);
  const [refused, retried] = relay.state.seen.slice(-2);
  assert.equal(refused.error, 'unknown_kid');
  assert.ok(refused.headers.authorization.startsWith(`Sealed ${oldKid}.`));
  assert.ok(retried.headers.authorization.startsWith(`Sealed ${k.kid}.`));
  assert.deepEqual(new Uint8Array(refused.body), body);
  assert.deepEqual(new Uint8Array(retried.body), body);
  assert.equal(relay.state.keyFetches, 2);
});

test('sealedFetch: unknown_kid twice is answered, not looped', async (t) => {
  const relay = await fake(t);
  relay.state.accepted = [];  // the relay publishes a key it then refuses
  const f = sealedFetch(relay.url, () => KEY);
  const res = await f('/openai/v1/a', { method: 'POST', body: 'x' });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, 'unknown_kid');
  assert.equal(relay.state.seen.length, 2);
  assert.equal(relay.state.keyFetches, 2);
});

for (const skewMin of [5, -5]) {
  test(`sealedFetch: a client clock ${skewMin} minutes off gets through via the Date retry, once`, async (t) => {
    const relay = await fake(t);
    const f = sealedFetch(relay.url, () => KEY, { now: () => Date.now() + skewMin * 60_000 });
    const res = await f('/openai/v1/a', { method: 'POST', body: 'same bytes' });
    assert.equal(res.status, 200);
    const [refused, retried] = relay.state.seen;
    assert.equal(refused.error, 'seal_expired');
    assert.equal(retried.error, undefined);
    assert.equal(retried.body.toString(), 'same bytes');
    assert.ok(Math.abs(retried.payload.iat - Date.now() / 1000) <= 2);
    // The offset is kept: the next request needs no retry.
    assert.equal((await f('/openai/v1/b')).status, 200);
    assert.equal(relay.state.seen.length, 3);
  });
}

test('sealedFetch: seal_expired twice is answered, not looped', async (t) => {
  const relay = await fake(t, { maxAgeS: -10 });  // nothing is ever fresh enough
  const f = sealedFetch(relay.url, () => KEY);
  const res = await f('/openai/v1/a', { method: 'POST', body: 'x' });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, 'seal_expired');
  assert.equal(relay.state.seen.length, 2);
});

test('sealedFetch: other relay errors come back untouched, readable by the caller', async (t) => {
  const relay = await fake(t);
  const f = sealedFetch(relay.url, () => KEY, {
    fetch: (url, init) => {
      if (String(url).endsWith('/v1/keys')) {
        return fetch(url, init);
      }
      // A proxy that changes the body after sealing.
      return fetch(url, { ...init, body: 'changed' });
    },
  });
  const res = await f('/openai/v1/a', { method: 'POST', body: 'original' });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, 'seal_mismatch');
  assert.equal(relay.state.seen.length, 1);
});

test('sealedFetch: an invalid key is refused before sending, without echoing it', async (t) => {
  const relay = await fake(t);
  for (const bad of ['', 'sk-with space', 'sk-line\nbreak', 'sk-ü', 'x'.repeat(1025), null]) {
    const f = sealedFetch(relay.url, () => bad);
    await assert.rejects(f('/openai/v1/a'), (e) => {
      assert.equal(e.code, 'invalid_key');
      assert.ok(!bad || !e.message.includes(bad));
      return true;
    });
  }
  assert.equal(relay.state.seen.length, 0);
  assert.ok(isValidKey(KEY));
});

test('sealedFetch: abort signal reaches the request', async (t) => {
  const relay = await fake(t);
  const f = sealedFetch(relay.url, () => KEY);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(f('/openai/v1/a', { signal: ac.signal }), { name: 'AbortError' });
});

test('createKeyStore: memory by default, sessionStorage only when asked', () => {
  const backing = new Map();
  globalThis.sessionStorage = {
    getItem: (k) => (backing.has(k) ? backing.get(k) : null),
    setItem: (k, v) => backing.set(k, String(v)),
    removeItem: (k) => backing.delete(k),
  };
  try {
    const mem = createKeyStore();
    assert.equal(mem.storage, 'memory');
    assert.throws(() => mem.get(), (e) => e.code === 'no_key');
    mem.set(KEY);
    assert.equal(mem.get(), KEY);
    assert.equal(backing.size, 0, 'memory store writes nothing to sessionStorage');
    assert.equal(JSON.stringify(mem).includes(KEY), false);
    assert.throws(() => mem.set('bad key'), (e) => e.code === 'invalid_key');

    const ses = createKeyStore({ storage: 'session' });
    ses.set(KEY);
    assert.equal(backing.get('byok-relay.key'), KEY);
    assert.equal(createKeyStore({ storage: 'session' }).get(), KEY, 'survives a reload of the page');
    ses.clear();
    assert.equal(backing.size, 0);
    assert.throws(() => createKeyStore({ storage: 'local' }), TypeError);
  } finally {
    delete globalThis.sessionStorage;
  }
});

test('sealedFetch accepts a key store as getKey', async (t) => {
  const relay = await fake(t);
  const store = createKeyStore();
  store.set(KEY);
  const res = await sealedFetch(relay.url, store)('/openai/v1/a');
  assert.deepEqual(await res.json(), { ok: true, sawKey: 'expected' });
});
