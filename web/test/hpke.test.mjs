// HPKE in web/byok-relay.js (WebCrypto alone): the RFC 9180 vector, seals
// that @hpke/core (an implementation nobody on this team wrote) opens, and
// the choice between HPKE and the sealed box, with libsodium loaded only for
// the latter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import sodium from 'libsodium-wrappers';

import { hpkeSeal, sealPayloadHpke, sealedFetch, webCryptoX25519, base64url } from '../byok-relay.js';
import { startFakeRelay, hpkeOpen, hpkeSuite } from './lib/fake-relay.mjs';

await sodium.ready;
const KEY = 'sk-test-' + 'Hp9_'.repeat(8);
const hex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));
const b64u = (bytes) => Buffer.from(bytes).toString('base64url');

const vectorsPath = new URL('../../tests/vectors/hpke-rfc9180-test-vectors.json', import.meta.url);
const suiteVectors = () => JSON.parse(readFileSync(vectorsPath, 'utf8'))
  .filter((v) => v.mode === 0 && v.kem_id === 0x20 && v.kdf_id === 1 && v.aead_id === 1);

// crypto.subtle, except that generateKey({name:'X25519'}) hands out `pair`
// (the RFC vector's ephemeral key): the only way to make a seal deterministic.
function subtleWithEphemeral(pair) {
  const real = globalThis.crypto.subtle;
  return new Proxy(real, {
    get(target, prop) {
      if (prop === 'generateKey') {
        return async (alg, ...rest) => (alg?.name === 'X25519' ? pair : target.generateKey(alg, ...rest));
      }
      const v = target[prop];
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

// crypto.subtle as an engine without X25519 would have it; counts the attempts.
function subtleWithoutX25519() {
  const real = globalThis.crypto.subtle;
  const calls = { x25519: 0 };
  const subtle = new Proxy(real, {
    get(target, prop) {
      const v = target[prop];
      if (typeof v !== 'function') {
        return v;
      }
      return async (alg, ...rest) => {
        const name = typeof alg === 'string' ? alg : alg?.name ?? rest[1]?.name;
        if (name === 'X25519' || rest.some((a) => a?.name === 'X25519')) {
          calls.x25519 += 1;
          throw new DOMException('Unrecognized name.', 'NotSupportedError');
        }
        return v.call(target, alg, ...rest);
      };
    },
  });
  return { subtle, calls };
}

// A libsodium stand-in that records whether anything touched it.
function sodiumSpy() {
  const used = { count: 0 };
  const spy = new Proxy(sodium, {
    get(target, prop) {
      used.count += 1;
      return target[prop];
    },
  });
  return { spy, used };
}

async function importPair(skHex, pkHex) {
  const d = b64u(hex(skHex));
  const x = b64u(hex(pkHex));
  const subtle = globalThis.crypto.subtle;
  return {
    privateKey: await subtle.importKey('jwk', { kty: 'OKP', crv: 'X25519', d, x }, { name: 'X25519' }, true,
      ['deriveBits']),
    publicKey: await subtle.importKey('raw', hex(pkHex), { name: 'X25519' }, true, []),
  };
}

test('RFC 9180 vector (base mode, this suite): with the vector\'s ephemeral key, hpkeSeal gives its enc || ct', async () => {
  const vectors = suiteVectors();
  assert.ok(vectors.length >= 1);
  for (const v of vectors) {
    const e = v.encryptions[0];  // sequence number 0: a single-shot seal
    const subtle = subtleWithEphemeral(await importPair(v.skEm, v.pkEm));
    const out = await hpkeSeal(subtle, hex(v.pkRm), hex(v.info), hex(e.aad), hex(e.pt));
    assert.equal(Buffer.from(out).toString('hex'), v.enc + e.ct);
    // ...and the vector's recipient, through @hpke/core, opens it.
    const ctx = await hpkeSuite.createRecipientContext({
      recipientKey: await hpkeSuite.kem.deserializePrivateKey(hex(v.skRm)), enc: out.slice(0, 32), info: hex(v.info),
    });
    assert.equal(Buffer.from(await ctx.open(out.slice(32), hex(e.aad))).toString('hex'), e.pt);
  }
});

test('sealPayloadHpke: @hpke/core opens it with info "byok-relay v1 <kid>"; a fresh enc each time', async () => {
  const kp = sodium.crypto_box_keypair();
  const key = { hpkeKid: 'hKid-1', hpkePk: kp.publicKey, hpkeSk: kp.privateKey };
  const entry = { kid: key.hpkeKid, alg: 'hpke-x25519-sha256-aes128gcm', pkBytes: kp.publicKey };
  const payload = JSON.stringify({ key: KEY, iat: 1800000000, method: 'POST', path: '/x', body_sha256: 'AA' });
  const h1 = await sealPayloadHpke(globalThis.crypto.subtle, entry, payload);
  const h2 = await sealPayloadHpke(globalThis.crypto.subtle, entry, payload);
  const m = /^Sealed (hKid-1)\.([A-Za-z0-9_-]+)$/.exec(h1);
  assert.ok(m, h1.slice(0, 20));
  const sealed = Buffer.from(m[2], 'base64url');
  assert.equal(sealed.length, 32 + payload.length + 16);
  assert.equal(new TextDecoder().decode(await hpkeOpen(key, sealed)), payload);
  assert.notEqual(h1.slice(0, 60), h2.slice(0, 60));
  // Under another kid's info it does not open.
  await assert.rejects(hpkeOpen({ ...key, hpkeKid: 'hKid-2' }, sealed));
});

test('base64url: the protocol encoding without libsodium, every length mod 3', () => {
  for (let n = 0; n < 40; n++) {
    const bytes = sodium.randombytes_buf(n);
    assert.equal(base64url(null, bytes), b64u(bytes), `length ${n}`);
  }
});

test('a low-order relay key is refused by WebCrypto before anything is sealed', async () => {
  await assert.rejects(hpkeSeal(globalThis.crypto.subtle, new Uint8Array(32), new Uint8Array(0), new Uint8Array(0),
    new Uint8Array(5)));
});

test('sealedFetch prefers HPKE when crypto.subtle has X25519: @hpke/core opens it, libsodium is never touched', async (t) => {
  const relay = await startFakeRelay({ expectKey: KEY, hpke: true });
  t.after(() => relay.stop());
  assert.equal(await webCryptoX25519(), true);
  const { spy, used } = sodiumSpy();
  const f = sealedFetch(relay.url, () => KEY, { sodium: spy });
  for (let i = 0; i < 3; i++) {
    const res = await f(relay.url + '/openai/v1/chat/completions', { method: 'POST', body: `{"n":${i}}` });
    assert.equal(res.status, 200, await res.clone().text());
    assert.deepEqual(await res.json(), { ok: true, sawKey: 'expected' });
  }
  assert.deepEqual(relay.state.seen.map((r) => r.alg), ['hpke', 'hpke', 'hpke']);
  assert.ok(relay.state.seen.every((r) => r.headers.authorization.startsWith(`Sealed ${relay.state.keys[0].hpkeKid}.`)));
  assert.equal(used.count, 0, 'libsodium was not used');
});

test('sealedFetch falls back to the sealed box where X25519 is missing, detecting it once', async (t) => {
  const relay = await startFakeRelay({ expectKey: KEY, hpke: true });
  t.after(() => relay.stop());
  const { subtle, calls } = subtleWithoutX25519();
  assert.equal(await webCryptoX25519(subtle), false);
  const { spy, used } = sodiumSpy();
  const f = sealedFetch(relay.url, () => KEY, { sodium: spy, subtle });
  for (let i = 0; i < 3; i++) {
    const res = await f(relay.url + '/openai/v1/chat/completions', { method: 'POST', body: `{"n":${i}}` });
    assert.equal(res.status, 200, await res.clone().text());
  }
  assert.deepEqual(relay.state.seen.map((r) => r.alg), ['sealedbox', 'sealedbox', 'sealedbox']);
  assert.ok(used.count > 0, 'libsodium sealed the box');
  assert.equal(calls.x25519, 1, 'X25519 was probed once, never used');
});

test('sealedFetch uses the sealed box with a relay that offers no HPKE key', async (t) => {
  const relay = await startFakeRelay({ expectKey: KEY });
  t.after(() => relay.stop());
  const f = sealedFetch(relay.url, () => KEY, { sodium });
  const res = await f(relay.url + '/openai/v1/models', { method: 'GET' });
  assert.equal(res.status, 200, await res.clone().text());
  assert.deepEqual(relay.state.seen.map((r) => r.alg), ['sealedbox']);
});

test('without crypto.subtle at all (a plain-http page) the sealed box is used', async (t) => {
  const relay = await startFakeRelay({ expectKey: KEY, hpke: true });
  t.after(() => relay.stop());
  const f = sealedFetch(relay.url, () => KEY, { sodium, subtle: undefined });
  const res = await f(relay.url + '/openai/v1/chat/completions', { method: 'POST', body: '{}' });
  assert.equal(res.status, 200, await res.clone().text());
  assert.deepEqual(relay.state.seen.map((r) => r.alg), ['sealedbox']);
});

test('docs/protocol.md §11.2: @hpke/core opens the documented HPKE header to the documented payload', async () => {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
  const example = (name) => {
    const m = new RegExp('```\\w+ example:' + name + '\\n([\\s\\S]*?)\\n```').exec(doc);
    assert.ok(m, name);
    return m[1];
  };
  const sealed = Buffer.from(example('hpke-authorization').split('.')[1], 'base64url');
  const ctx = await hpkeSuite.createRecipientContext({
    recipientKey: await hpkeSuite.kem.deserializePrivateKey(hex(example('hpke-test-secret-key-hex'))),
    enc: sealed.subarray(0, 32), info: new TextEncoder().encode(example('hpke-info')),
  });
  assert.equal(new TextDecoder().decode(await ctx.open(sealed.subarray(32))), example('payload'));
  // ...and this library, given the documented ephemeral key, seals the same bytes.
  const ephPk = b64u(sodium.crypto_scalarmult_base(hex(example('hpke-ephemeral-secret-key-hex'))));
  assert.equal(ephPk, example('hpke-enc'));
  const subtle = subtleWithEphemeral(await importPair(example('hpke-ephemeral-secret-key-hex'),
    Buffer.from(ephPk, 'base64url').toString('hex')));
  const header = await sealPayloadHpke(subtle, {
    kid: example('hpke-kid'), pkBytes: Uint8Array.from(Buffer.from(example('hpke-public-key'), 'base64url')),
  }, example('payload'));
  assert.equal(header, example('hpke-authorization'));
});

test('headers_sha256: the bound header fields as sent; a field changed after sealing is a mismatch', async (t) => {
  for (const hpke of [true, false]) {
    const relay = await startFakeRelay({ expectKey: KEY, hpke });
    t.after(() => relay.stop());
    let tamper = null;
    const f = sealedFetch(relay.url, () => KEY, {
      fetch: (url, init) => {
        const headers = new Headers(init.headers);
        if (tamper && headers.has('authorization')) {
          headers.set('openai-project', tamper);  // what a captured request replayed with other headers looks like
        }
        return fetch(url, { ...init, headers });
      },
    });
    const send = () => f(relay.url + '/openai/v1/chat/completions', {
      method: 'POST', body: '{}',
      headers: { 'Content-Type': 'application/json', 'OpenAI-Project': 'proj_1', 'User-Agent': 'x', 'X-Other': 'y' },
    });
    assert.equal((await send()).status, 200);
    const p = relay.state.seen.at(-1).payload;
    assert.equal(p.headers_sha256, b64u(createHash('sha256')
      .update('content-type:application/json\nopenai-project:proj_1\n').digest()));
    tamper = 'proj_2';
    const res = await send();
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, 'seal_mismatch');
    assert.equal(relay.state.seen.at(-1).alg, hpke ? 'hpke' : 'sealedbox');
  }
});
