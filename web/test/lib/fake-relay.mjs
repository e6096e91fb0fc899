// An in-process stand-in for the relay's seal check, for unit tests of the
// client's own logic (retries, caching, clock offset) with exact control over
// the answers. It opens seals with libsodium-wrappers (sealed box) or
// @hpke/core (HPKE, with `hpke: true`), both written by others, and applies
// the checks of crypto/seal.cpp; the real relay is exercised by the other
// test files.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, normalize, extname } from 'node:path';
import { createHash } from 'node:crypto';
import sodium from 'libsodium-wrappers';
import { CipherSuite, Aes128Gcm, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';

await sodium.ready;
const B64 = sodium.base64_variants.URLSAFE_NO_PADDING;

export function b64(bytes) {
  return sodium.to_base64(bytes, B64);
}

export const hpkeSuite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });

// A sealed-box key pair and an HPKE key pair (raw X25519 both), each with its kid.
export function makeRelayKey(kidHint) {
  const kp = sodium.crypto_box_keypair();
  const hkp = sodium.crypto_box_keypair();
  const kid = kidHint ?? b64(sodium.crypto_generichash(8, kp.publicKey));
  return { kid, pk: kp.publicKey, sk: kp.privateKey, exp: Math.floor(Date.now() / 1000) + 86400,
    hpkeKid: 'h' + b64(sodium.crypto_generichash(8, hkp.publicKey)), hpkePk: hkp.publicKey, hpkeSk: hkp.privateKey };
}

// HPKE base-mode open of enc || ct with @hpke/core; throws if it does not open.
export async function hpkeOpen(key, sealed) {
  const recipientKey = await hpkeSuite.kem.deserializePrivateKey(key.hpkeSk);
  const ctx = await hpkeSuite.createRecipientContext({
    recipientKey, enc: sealed.slice(0, 32), info: new TextEncoder().encode('byok-relay v1 ' + key.hpkeKid),
  });
  return new Uint8Array(await ctx.open(sealed.slice(32)));
}

function relayError(res, status, code, extraHeaders = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...extraHeaders });
  res.end(JSON.stringify({ error: { message: `fake relay: ${code}`, type: 'relay_error', code } }));
}

const MIME = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json' };

async function serveStatic(root, rel, res) {
  const path = normalize(join(root, rel.endsWith('/') || rel === '' ? rel + 'index.html' : rel));
  if (!path.startsWith(root) || !MIME[extname(path)]) {
    res.writeHead(404).end();
    return;
  }
  try {
    const data = await readFile(path);
    res.writeHead(200, { 'content-type': MIME[extname(path)] });
    res.end(data);
  } catch {
    res.writeHead(404).end();
  }
}

/**
 * startFakeRelay({ prefix, cacheControl, maxAgeS, maxFutureS, nowMs, hpke })
 * `prefix` is the public path prefix (the fake serves it itself, as a relay
 * behind a stripping proxy would be seen by the client). With `hpke`, the
 * key list also offers each key's HPKE half, after the sealed-box entries.
 */
export async function startFakeRelay(opts = {}) {
  const prefix = opts.prefix ?? '';
  const state = {
    keys: [makeRelayKey()],        // published, newest first
    accepted: null,                // kids the seal check accepts (default: published)
    cacheControl: opts.cacheControl === undefined ? 'max-age=60' : opts.cacheControl,
    keyFetches: 0,
    seen: [],                      // every sealed request: { method, target, headers, bodySha256, payload?, error? }
    maxAgeS: opts.maxAgeS ?? 60,
    maxFutureS: opts.maxFutureS ?? 30,
    nowMs: opts.nowMs ?? Date.now,
    replay: new Set(),
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => handle(req, Buffer.concat(chunks), res));
  });
  async function handle(req, body, res) {
    res.setHeader('date', new Date(state.nowMs()).toUTCString());
    if (!req.url.startsWith(prefix + '/')) {
      return relayError(res, 404, 'unknown_route');
    }
    const target = req.url;  // what the client sent: the seal's path
    const inner = req.url.slice(prefix.length);
    if (opts.webRoot && req.method === 'GET' && inner.startsWith('/web/')) {
      return serveStatic(opts.webRoot, decodeURIComponent(inner.slice(5).split('?')[0]), res);
    }
    if (req.method === 'GET' && inner === '/v1/keys') {
      state.keyFetches += 1;
      const h = { 'content-type': 'application/json' };
      if (state.cacheControl !== null) {
        h['cache-control'] = state.cacheControl;
      }
      res.writeHead(200, h);
      const keys = state.keys.map((k) => ({ kid: k.kid, alg: 'x25519-sealedbox', pk: b64(k.pk), exp: k.exp }));
      if (opts.hpke) {
        keys.push(...state.keys.map((k) => ({ kid: k.hpkeKid, alg: 'hpke-x25519-sha256-aes128gcm', pk: b64(k.hpkePk),
          exp: k.exp })));
      }
      return res.end(JSON.stringify({ keys }));
    }
    const bodySha256 = b64(createHash('sha256').update(body).digest());
    const rec = { method: req.method, target, headers: req.headers, body, bodySha256 };
    state.seen.push(rec);
    const fail = (status, code, h) => {
      rec.error = code;
      relayError(res, status, code, h);
    };
    const m = /^Sealed +([^.]+)\.(.*)$/i.exec(req.headers.authorization ?? '');
    if (!m) {
      return fail(401, 'missing_seal');
    }
    const accepted = state.accepted ?? state.keys;
    let key = accepted.find((k) => k.kid === m[1]);
    const hpkeKey = opts.hpke ? accepted.find((k) => k.hpkeKid === m[1]) : undefined;
    if (!key && !hpkeKey) {
      return fail(401, 'unknown_kid');
    }
    rec.alg = hpkeKey ? 'hpke' : 'sealedbox';
    let plain;
    try {
      if (!/^[A-Za-z0-9_-]+$/.test(m[2])) {
        throw new Error('not base64url');
      }
      const sealed = sodium.from_base64(m[2], B64);
      plain = hpkeKey ? await hpkeOpen(hpkeKey, sealed) : sodium.crypto_box_seal_open(sealed, key.pk, key.sk);
      key ??= hpkeKey;
    } catch {
      return fail(401, 'bad_seal');
    }
    let p;
    try {
      p = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plain));
    } catch {
      return fail(401, 'bad_seal');
    }
    rec.payloadText = new TextDecoder().decode(plain);
    rec.payload = p;
    if (typeof p.key !== 'string' || !/^[\x21-\x7e]{1,1024}$/.test(p.key) || !Number.isInteger(p.iat) ||
        typeof p.method !== 'string' || typeof p.path !== 'string' || typeof p.body_sha256 !== 'string') {
      return fail(401, 'bad_seal');
    }
    const nowS = Math.floor(state.nowMs() / 1000);
    if (p.iat < nowS - state.maxAgeS || p.iat > nowS + state.maxFutureS) {
      return fail(401, 'seal_expired');
    }
    if (p.method !== req.method || p.path !== target || p.body_sha256 !== bodySha256) {
      return fail(401, 'seal_mismatch');
    }
    // headers_sha256 when present (docs/protocol.md §3.5), computed here from what arrived.
    if (p.headers_sha256 !== undefined) {
      const names = ['anthropic-beta', 'anthropic-version', 'content-type', 'idempotency-key', 'openai-beta',
        'openai-organization', 'openai-project'];
      const text = names.filter((n) => req.headers[n] !== undefined).map((n) => `${n}:${req.headers[n]}\n`).join('');
      rec.headersSha256Ok = p.headers_sha256 === b64(createHash('sha256').update(text).digest());
      if (!rec.headersSha256Ok) {
        return fail(401, 'seal_mismatch');
      }
    }
    if (state.replay.has(m[2].slice(0, 43))) {
      return fail(401, 'seal_replayed');
    }
    state.replay.add(m[2].slice(0, 43));
    if (opts.respond) {
      return opts.respond({ rec, payload: p, req, res });
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, sawKey: p.key === opts.expectKey ? 'expected' : 'other' }));
  }
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}${prefix}`,
    state,
    rotate() {
      const k = makeRelayKey();
      state.keys = [k];
      return k;
    },
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
