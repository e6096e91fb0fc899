// Scoped key grants (issue 12, docs/protocol.md §13) through the real relay
// and the mock provider. The mint request is sealed with libsodium-wrappers
// and the proofs are signed with Node's WebCrypto (ECDSA P-256), so neither
// side is our own C++ code. Every refusal is checked to never reach the
// provider (the mock records nothing).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { createHash, webcrypto } from 'node:crypto';
import * as h from './lib/harness.mjs';

after(h.stopAll);

const subtle = webcrypto.subtle;
const CHAT = '/openai/v1/chat/completions';
const ORIGIN = 'http://app.test';
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
after(() => agent.destroy());

let mock;
let relay;

before(async () => {
  mock = await h.startMock({ tls: true });
  relay = await h.startRelay({
    providers: h.mockProviders(mock),
    max_body_bytes: 64 * 1024,
    metrics_listen: '127.0.0.1:0',
  });
});

// ---- the client side, as a browser app would do it --------------------------------------

async function appKey() {
  const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const jwk = await subtle.exportKey('jwk', pair.publicKey);
  return { privateKey: pair.privateKey, jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } };
}

function thumbprint(jwk) {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

function randomJti(bytes = 16) {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(bytes))).toString('base64url');
}

// A compact JWS: WebCrypto's ECDSA signature is already r || s, as ES256 wants.
async function proof(privateKey, { htm = 'POST', htu = CHAT, body = '', iat, jti = randomJti(), header } = {}) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc(header ?? { typ: 'byok-proof+jwt', alg: 'ES256' })}.${enc({
    htm, htu, iat: iat ?? Math.floor(Date.now() / 1000), jti, body_sha256: h.bodySha256(body),
  })}`;
  const sig = await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, Buffer.from(input));
  return `${input}.${Buffer.from(sig).toString('base64url')}`;
}

function mintBody(jwk, over = {}) {
  return JSON.stringify({
    provider: 'openai', paths: ['/v1/chat/completions'], models: ['gpt-4o-mini'], ttl_s: 1800, origin: ORIGIN,
    cnf: { jwk }, ...over,
  });
}

async function mint(apiKey, body, target = relay) {
  return h.sealedRequest(target.url, { apiKey, path: '/v1/grants', body });
}

async function newGrant(over = {}, target = relay) {
  const app = await appKey();
  const apiKey = h.randomApiKey('sk-granttest-');
  const res = await mint(apiKey, mintBody(app.jwk, over), target);
  assert.equal(res.status, 201, await res.clone().text());
  return { app, apiKey, ...(await res.json()) };
}

// One request over node:http (any header, repeated headers, any Origin).
function send(target, { method = 'POST', path = CHAT, headers = {}, body = '' }) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, target.url), { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

async function useGrant(g, { path = CHAT, method = 'POST', body, origin = ORIGIN, proofText, token = g.grant,
  extra = {}, target = relay } = {}) {
  const text = body ?? JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] });
  const p = proofText !== undefined ? proofText
    : await proof(g.app.privateKey, { htm: method, htu: path, body: method === 'GET' ? '' : text });
  const headers = { 'content-type': 'application/json', authorization: `Grant ${token}` };
  if (p !== null) headers['byok-proof'] = p;
  if (origin) headers.origin = origin;
  Object.assign(headers, extra);
  return send(target, { method, path, headers, body: method === 'GET' ? '' : text });
}

async function refusedWithoutUpstream(res, code, status = 401) {
  assert.equal(res.status, status, res.text);
  assert.equal(res.json?.error?.type, 'relay_error', res.text);
  assert.equal(res.json.error.code, code);
  assert.deepEqual(await mock.requests(), [], 'nothing reached the provider');
}

// ---- minting -------------------------------------------------------------------------------

test('POST /v1/grants: a sealed mint answers 201 with the grant, its exp and scope; nothing goes upstream', async () => {
  await mock.reset();
  const app = await appKey();
  const before = Math.floor(Date.now() / 1000);
  const res = await mint(h.randomApiKey(), mintBody(app.jwk, { ttl_s: 600 }));
  assert.equal(res.status, 201);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  const g = await res.json();
  assert.match(g.grant, /^[A-Za-z0-9_-]{12}\.[A-Za-z0-9_-]+$/);
  assert.ok(g.exp >= before + 600 && g.exp <= before + 602, `exp ${g.exp}`);
  assert.deepEqual(g.scope.paths, ['/v1/chat/completions']);
  assert.deepEqual(g.scope.models, ['gpt-4o-mini']);
  assert.equal(g.scope.provider, 'openai');
  assert.equal(g.scope.origin, ORIGIN);
  assert.equal(g.scope.cnf.jkt, thumbprint(app.jwk));
  assert.deepEqual(await mock.requests(), []);
});

test('grant tokens have the same length whatever the key length', async () => {
  const a = await newGrant();
  const app = await appKey();
  const res = await mint('k'.repeat(300), mintBody(app.jwk));
  assert.equal(res.status, 201);
  assert.equal((await res.json()).grant.length, a.grant.length);
});

test('mint refusals: ttl over grant_max_ttl_s, unlisted origin, path outside the allowlist, bad JWK, bad JSON, unsealed', async () => {
  await mock.reset();
  const app = await appKey();
  const cases = [
    [{ ttl_s: 1801 }, 400, 'grant_too_long'],
    [{ origin: 'https://evil.test' }, 403, 'origin_mismatch'],
    [{ paths: ['/v1/files'] }, 403, 'path_not_allowed'],
    [{ paths: ['/v1/chat/completions/../../v1/files'] }, 403, 'path_not_allowed'],
    [{ provider: 'nope' }, 400, 'bad_request'],
    [{ ttl_s: 0 }, 400, 'bad_request'],
    [{ cnf: { jwk: { ...app.jwk, y: app.jwk.x } } }, 400, 'bad_request'],
    [{ cnf: { jwk: { ...app.jwk, crv: 'P-384' } } }, 400, 'bad_request'],
    [{ paths: [] }, 400, 'bad_request'],
  ];
  for (const [over, status, code] of cases) {
    const res = await mint(h.randomApiKey(), mintBody(app.jwk, over));
    assert.equal(res.status, status, JSON.stringify(over));
    assert.equal((await res.json()).error.code, code, JSON.stringify(over));
  }
  const dup = await mint(h.randomApiKey(), mintBody(app.jwk).replace('"ttl_s":1800', '"ttl_s":60,"ttl_s":1800'));
  assert.equal((await dup.json()).error.code, 'bad_request', 'a member twice');
  const unsealed = await send(relay, { path: '/v1/grants', headers: { 'content-type': 'application/json' }, body: mintBody(app.jwk) });
  assert.equal(unsealed.json.error.code, 'missing_seal');
  const get = await send(relay, { method: 'GET', path: '/v1/grants' });
  assert.equal(get.status, 405);
  assert.deepEqual(await mock.requests(), []);
});

// ---- using a grant ---------------------------------------------------------------------------

test('one grant, 100 different requests, each with its own proof: the key arrives, the proof and grant do not', async () => {
  await mock.reset();
  const g = await newGrant();
  for (let i = 0; i < 100; i++) {
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `request ${i}` }] });
    const res = await useGrant(g, { body });
    assert.equal(res.status, 200, `request ${i}: ${res.text}`);
    assert.equal(res.headers['access-control-allow-origin'], ORIGIN);
  }
  const seen = await mock.requests();
  assert.equal(seen.length, 100);
  const hashes = new Set(seen.map((s) => s.body_sha256));
  assert.equal(hashes.size, 100, '100 different bodies');
  for (const s of seen) {
    assert.equal(s.headers.authorization, `Bearer ${g.apiKey}`);
    assert.equal(s.headers['byok-proof'], undefined, 'Byok-Proof is never forwarded');
    assert.equal(s.target, '/v1/chat/completions');
  }
  assert.ok(!relay.stderr().includes(g.grant.split('.')[1].slice(0, 40)), 'the grant is never logged');
  assert.ok(!relay.stderr().includes(g.apiKey), 'the key is never logged');
});

test('a grant without models allows any model; GET on an allowed path works with a proof over the empty body', async () => {
  await mock.reset();
  const g = await newGrant({ models: undefined, paths: ['/v1/chat/completions', '/v1/models'] });
  assert.equal(g.scope.models, undefined);
  const res = await useGrant(g, { body: JSON.stringify({ model: 'any-model', messages: [] }) });
  assert.equal(res.status, 200, res.text);
  const get = await useGrant(g, { method: 'GET', path: '/openai/v1/models' });
  assert.equal(get.status, 200, get.text);
  assert.equal((await mock.requests()).length, 2);
});

test('missing_proof, and two Byok-Proof headers (bad_proof)', async () => {
  const g = await newGrant();
  await mock.reset();
  await refusedWithoutUpstream(await useGrant(g, { proofText: null }), 'missing_proof');
  const p = await proof(g.app.privateKey, { body: '{}' });
  await refusedWithoutUpstream(await useGrant(g, { body: '{}', proofText: p, extra: { 'byok-proof': [p, p] } }),
    'bad_proof');
});

test('proofs re-signed with another key, bound to another path, body or method, stale, malformed: bad_proof', async () => {
  const g = await newGrant();
  await mock.reset();
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [] });
  const thief = await appKey();
  await refusedWithoutUpstream(await useGrant(g, { body, proofText: await proof(thief.privateKey, { body }) }), 'bad_proof');
  await refusedWithoutUpstream(await useGrant(g, {
    body, proofText: await proof(g.app.privateKey, { body, htu: '/openai/v1/embeddings' }),
  }), 'bad_proof');
  await refusedWithoutUpstream(await useGrant(g, {
    body, proofText: await proof(g.app.privateKey, { body: body + ' ' }),
  }), 'bad_proof');
  await refusedWithoutUpstream(await useGrant(g, {
    body, proofText: await proof(g.app.privateKey, { body, htm: 'PUT' }),
  }), 'bad_proof');
  await refusedWithoutUpstream(await useGrant(g, {
    body, proofText: await proof(g.app.privateKey, { body, iat: Math.floor(Date.now() / 1000) - 600 }),
  }), 'bad_proof');
  await refusedWithoutUpstream(await useGrant(g, {
    body, proofText: await proof(g.app.privateKey, { body, jti: randomJti(8) }),
  }), 'bad_proof');
  await refusedWithoutUpstream(await useGrant(g, {
    body, proofText: await proof(g.app.privateKey, { body, header: { typ: 'JWT', alg: 'ES256' } }),
  }), 'bad_proof');
  await refusedWithoutUpstream(await useGrant(g, { body, proofText: 'a.b.c' }), 'bad_proof');
});

test('a proof used twice: proof_replayed, and the second never reaches the provider', async () => {
  const g = await newGrant();
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [] });
  const p = await proof(g.app.privateKey, { body });
  await mock.reset();
  assert.equal((await useGrant(g, { body, proofText: p })).status, 200);
  assert.equal((await mock.requests()).length, 1);
  await mock.reset();
  await refusedWithoutUpstream(await useGrant(g, { body, proofText: p }), 'proof_replayed');
});

test('Origin other than the grant\'s: origin_mismatch; no Origin (a server-side client) is allowed', async () => {
  const g = await newGrant();
  await mock.reset();
  await refusedWithoutUpstream(await useGrant(g, { origin: 'http://evil.test' }), 'origin_mismatch', 403);
  assert.equal((await useGrant(g, { origin: null })).status, 200);
});

test('a model the grant does not name, or no model: model_not_allowed', async () => {
  const g = await newGrant();
  await mock.reset();
  await refusedWithoutUpstream(await useGrant(g, { body: JSON.stringify({ model: 'gpt-4o', messages: [] }) }),
    'model_not_allowed', 403);
  await refusedWithoutUpstream(await useGrant(g, { body: JSON.stringify({ messages: [] }) }), 'model_not_allowed', 403);
  await refusedWithoutUpstream(await useGrant(g, {
    body: '{"model":"gpt-4o-mini","model":"gpt-4o"}',
  }), 'model_not_allowed', 403);
});

test('a path or provider outside the grant: path_not_allowed', async () => {
  const g = await newGrant();
  await mock.reset();
  await refusedWithoutUpstream(await useGrant(g, { path: '/openai/v1/embeddings' }), 'path_not_allowed', 403);
  await refusedWithoutUpstream(await useGrant(g, { path: '/anthropic/v1/messages' }), 'path_not_allowed', 403);
});

test('a grant tampered bit by bit (a sample of every byte, every bit of the nonce): bad_grant', async () => {
  const g = await newGrant();
  await mock.reset();
  const [kid, b64] = g.grant.split('.');
  const bytes = Buffer.from(b64, 'base64url');
  const flips = [];
  for (let i = 0; i < bytes.length; i++) {
    if (i < 24) for (let b = 0; b < 8; b++) flips.push([i, b]);
    else flips.push([i, i % 8]);
  }
  for (const [i, b] of flips) {
    const t = Buffer.from(bytes);
    t[i] ^= 1 << b;
    const res = await useGrant(g, { token: `${kid}.${t.toString('base64url')}` });
    assert.equal(res.json?.error?.code, 'bad_grant', `byte ${i} bit ${b}`);
  }
  await refusedWithoutUpstream(await useGrant(g, { token: `${kid}.${b64}AA` }), 'bad_grant');
  await refusedWithoutUpstream(await useGrant(g, { token: `AAAAAAAAAAAA.${b64}` }), 'bad_grant');
  assert.equal((await useGrant(g)).status, 200, 'the untouched grant still works');
});

test('an expired grant: grant_expired, with Date', async () => {
  const g = await newGrant({ ttl_s: 1 });
  await h.sleep(2100);
  await mock.reset();
  const res = await useGrant(g);
  assert.ok(res.headers.date, 'Date header');
  await refusedWithoutUpstream(res, 'grant_expired');
});

test('a grant of a key rotated out (SIGHUP): bad_grant; grants of the new key work', async () => {
  const dir = h.tempDir();
  const oldKey = String(await h.makeKeyFile(dir));
  const r2 = await h.startRelay({ providers: h.mockProviders(mock), key_files: [oldKey] }, { dir });
  const g = await newGrant({}, r2);
  assert.equal((await useGrant(g, { target: r2 })).status, 200);
  const newKey = await h.makeKeyFile(dir);
  writeFileSync(r2.configPath, JSON.stringify({ ...r2.config, key_files: [String(newKey)] }));
  r2.kill('SIGHUP');
  for (let i = 0; i < 100 && (await h.fetchKeys(r2.url)).keys[0].kid !== newKey.kid; i++) await h.sleep(50);
  assert.equal((await h.fetchKeys(r2.url)).keys[0].kid, newKey.kid, 'reloaded');
  await mock.reset();
  await refusedWithoutUpstream(await useGrant(g, { target: r2 }), 'bad_grant');
  const g2 = await newGrant({}, r2);
  assert.equal((await useGrant(g2, { target: r2 })).status, 200);
});

test('a relay whose key files hold no grant key mints nothing and opens no grant', async () => {
  const dir = h.tempDir();
  const path = String(await h.makeKeyFile(dir));
  const { readFileSync } = await import('node:fs');
  const key = JSON.parse(readFileSync(path, 'utf8'));
  delete key.grant_kid;
  delete key.grant_sk;
  writeFileSync(path, JSON.stringify(key), { mode: 0o600 });
  const r3 = await h.startRelay({ providers: h.mockProviders(mock), key_files: [path] }, { dir });
  const app = await appKey();
  const res = await mint(h.randomApiKey(), mintBody(app.jwk), r3);
  assert.equal(res.status, 404);
  const g = await newGrant();
  await mock.reset();
  await refusedWithoutUpstream(await useGrant(g, { target: r3 }), 'bad_grant');
});

test('CORS: a preflight asking for Byok-Proof is allowed', async () => {
  const res = await send(relay, {
    method: 'OPTIONS', headers: { origin: ORIGIN, 'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization, byok-proof, content-type' },
  });
  assert.equal(res.status, 204);
  assert.match(res.headers['access-control-allow-headers'], /byok-proof/);
});

test('/metrics counts grant outcomes by outcome, and grants minted', async () => {
  const text = await (await fetch(relay.metricsUrl)).text();
  const value = (outcome) => Number(text.match(new RegExp(`^byok_grant_requests_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm'))?.[1]);
  assert.ok(value('accepted') >= 100, `accepted ${value('accepted')}`);
  for (const o of ['bad_grant', 'missing_proof', 'bad_proof', 'proof_replayed', 'origin_mismatch', 'path_not_allowed', 'model_not_allowed']) {
    assert.ok(value(o) >= 1, `${o}: ${value(o)}`);
  }
  assert.ok(Number(text.match(/^byok_grants_minted_total (\d+)$/m)?.[1]) >= 10);
  assert.match(text, /byok_requests_total\{provider="openai",route="grant",status="200"\}/);
});
