// byok-relay client: seal the user's own provider API key into each request.
//
//   import { sealedFetch } from 'byok-relay-client';
//   const fetch = sealedFetch('https://relay.example.com', () => userKey);
//   const openai = new OpenAI({ baseURL: 'https://relay.example.com/openai/v1',
//                               apiKey: 'sealed-by-relay', fetch, dangerouslyAllowBrowser: true });
//
// Protocol v1 (docs/protocol.md): per request the key travels only inside
// `Authorization: Sealed <kid>.<base64url(seal(payload))>`, where
// payload = {"key","iat","method","path","body_sha256"} describes exactly the
// request being sent, so a captured seal is worth one copy of that request
// within the relay's time window and nothing else. The seal is HPKE (RFC 9180,
// hpke-x25519-sha256-aes128gcm) made with WebCrypto alone when the engine's
// crypto.subtle has X25519 and the relay offers an HPKE key, else libsodium's
// crypto_box_seal (x25519-sealedbox).
//
// One ES module, no build step: it runs unchanged in browsers and Node 20.
// libsodium-wrappers is loaded only for the sealed box, with a dynamic import
// of the bare specifier (browsers need an import map, see demo/index.html)
// unless the caller passes its own instance as `options.sodium`: an engine
// that seals with HPKE never downloads it.
//
// The key is never logged, never put in an error message, never stored by
// this module. JavaScript strings cannot be wiped; the payload bytes are
// zeroed once sealed, which is as far as a JS client can go.

const DEFAULT_MAX_AGE_S = 60;
const ALG = 'x25519-sealedbox';
const HPKE_ALG = 'hpke-x25519-sha256-aes128gcm';
const HPKE_INFO_PREFIX = 'byok-relay v1 ';
const RELAY_ERROR_TYPE = 'relay_error';

/** The relay error codes (docs/protocol.md), with the HTTP status each comes with. */
export const RELAY_ERROR_CODES = Object.freeze({
  missing_seal: 401,
  unknown_kid: 401,
  bad_seal: 401,
  seal_expired: 401,
  seal_mismatch: 401,
  seal_replayed: 401,
  bad_request: 400,
  unknown_route: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  body_too_large: 413,
  headers_too_large: 431,
  rate_limited: 429,
  upstream_unreachable: 502,
  upstream_bad_response: 502,
  upstream_timeout: 504,
  content_flagged: 400,
  moderation_unavailable: 502,
  overloaded: 503,
  internal_error: 500,
  // Grants (issue 12).
  missing_proof: 401,
  bad_proof: 401,
  proof_replayed: 401,
  bad_grant: 401,
  grant_expired: 401,
  origin_mismatch: 403,
  model_not_allowed: 403,
  path_not_allowed: 403,
  grant_too_long: 400,
});

let sodiumPromise = null;

/** The libsodium-wrappers instance, loaded once and ready. */
export function loadSodium(injected) {
  if (injected) {
    return Promise.resolve(injected.ready).then(() => injected);
  }
  if (!sodiumPromise) {
    sodiumPromise = import('libsodium-wrappers').then(async (mod) => {
      const s = mod.default ?? mod;
      await s.ready;
      return s;
    });
    sodiumPromise.catch(() => {
      sodiumPromise = null;  // let a later call try again
    });
  }
  return sodiumPromise;
}

/** A key is one header value upstream: visible ASCII only, as the relay checks (crypto/seal.cpp). */
export function isValidKey(key) {
  return typeof key === 'string' && key.length > 0 && key.length <= 1024 && /^[\x21-\x7e]+$/.test(key);
}

/** The request-target the relay will see: path and query exactly as serialized, no fragment. */
export function requestTarget(url) {
  const u = new URL(url);
  u.hash = '';
  return u.href.slice(u.origin.length);
}

function stripSlash(s) {
  return s.endsWith('/') ? s.slice(0, -1) : s;
}

/**
 * Resolves `input`/`init` the way fetch will: the method, the URL, the headers
 * (including a Content-Type the body implies, e.g. a multipart boundary) and
 * the exact body bytes. Any body type fetch accepts works (string, ArrayBuffer,
 * typed array, DataView, Blob, URLSearchParams, FormData, ReadableStream).
 * Returns plain data, so the same bytes can be sent again on a retry.
 */
export async function resolveRequest(input, init, baseUrl) {
  if (typeof input === 'string' && baseUrl && !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(input)) {
    // A relative target is relative to the relay (its path prefix included).
    input = stripSlash(baseUrl) + (input.startsWith('/') ? input : '/' + input);
  }
  if (init && init.body !== undefined && init.body !== null) {
    // Read once into the exact bytes that are hashed and sent (a stream
    // cannot be sent twice, and fetch wants `duplex` for one).
    const { bytes, contentType } = await readBodyBytes(init.body);
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    if (contentType !== null && !headers.has('content-type')) {
      headers.set('content-type', contentType);
    }
    headers.delete('content-length');  // fetch sets it for the bytes it sends
    init = { ...init, body: bytes, headers };
    delete init.duplex;
  }
  const req = new Request(input, init);
  const url = new URL(req.url);
  url.hash = '';  // never sent
  let body = null;
  if (req.method !== 'GET' && req.method !== 'HEAD' && req.body !== null) {
    body = new Uint8Array(await req.arrayBuffer());
  }
  const passOn = {};
  for (const k of ['credentials', 'cache', 'redirect', 'referrerPolicy', 'integrity', 'keepalive', 'mode']) {
    if (init && init[k] !== undefined) {
      passOn[k] = init[k];
    } else if (input instanceof Request && input[k] !== undefined && k !== 'mode') {
      passOn[k] = input[k];
    }
  }
  return {
    url: url.href,
    method: req.method,
    headers: new Headers(req.headers),
    body,
    signal: (init && init.signal) || (input instanceof Request ? input.signal : undefined),
    passOn,
  };
}

/**
 * Reads a request body of any type an SDK passes to fetch, once, into bytes:
 * string, ArrayBuffer and its views (Buffer too), Blob/File, FormData (its
 * multipart serialization, made once, so `contentType` carries the boundary
 * of exactly these bytes), URLSearchParams, a web ReadableStream, a Node
 * Readable or any async iterable of bytes or strings (the openai v4 client
 * sends uploads as a Node Readable). Returns { bytes: Uint8Array,
 * contentType: string | null } (the Content-Type the body implies, as fetch
 * would set it).
 */
export async function readBodyBytes(body) {
  const isWebStream = typeof ReadableStream !== 'undefined' && body instanceof ReadableStream;
  if (!isWebStream && typeof body === 'object' && typeof body[Symbol.asyncIterator] === 'function' &&
      !(typeof Blob !== 'undefined' && body instanceof Blob)) {
    const parts = [];
    const enc = new TextEncoder();
    for await (const chunk of body) {
      if (typeof chunk === 'string') {
        parts.push(enc.encode(chunk));
      } else if (chunk instanceof ArrayBuffer) {
        parts.push(new Uint8Array(chunk));
      } else if (ArrayBuffer.isView(chunk)) {
        parts.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      } else {
        throw new TypeError('byok-relay: a streamed body must yield bytes or strings');
      }
    }
    return { bytes: concat(...parts), contentType: null };
  }
  // Everything else is read the way fetch itself would read it.
  const r = new Response(body);
  return { bytes: new Uint8Array(await r.arrayBuffer()), contentType: r.headers.get('content-type') };
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** base64url without padding, the protocol's encoding for binary fields (`sodium` is not needed). */
export function base64url(sodium, bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63] + B64URL[n & 63];
  }
  if (i + 1 === bytes.length) {
    const n = bytes[i] << 16;
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63];
  } else if (i + 2 === bytes.length) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63];
  }
  return out;
}

/** Strict base64url (no padding, canonical) to bytes; null if it is not. */
function fromBase64url(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    return null;
  }
  const out = new Uint8Array(Math.floor(text.length * 3 / 4));
  let acc = 0;
  let bits = 0;
  let n = 0;
  for (const c of text) {
    acc = (acc << 6) | B64URL.indexOf(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (acc >> bits) & 0xff;
    }
  }
  return (acc & ((1 << bits) - 1)) === 0 ? out : null;  // unused low bits must be zero
}

/** SHA-256 of `bytes` (empty body: SHA-256 of nothing), base64url without padding. */
export async function bodySha256(sodium, bytes) {
  const data = bytes ?? new Uint8Array(0);
  let digest;
  if (globalThis.crypto && globalThis.crypto.subtle) {
    digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', data));
  } else {
    // Outside a secure context (plain-http page) WebCrypto's subtle is missing.
    digest = sodium.crypto_hash_sha256(data);
  }
  return base64url(sodium, digest);
}

// ---- HPKE (RFC 9180), base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
// AES-128-GCM, with WebCrypto alone. The relay's implementation is
// crypto/hpke.cpp; both pass the RFC's test vectors.

const enc8 = (s) => new TextEncoder().encode(s);
const HPKE_V1 = enc8('HPKE-v1');
const KEM_SUITE = new Uint8Array([0x4b, 0x45, 0x4d, 0x00, 0x20]);                               // "KEM" 0x0020
const HPKE_SUITE = new Uint8Array([0x48, 0x50, 0x4b, 0x45, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);  // "HPKE" 0x0020 0x0001 0x0001

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function hmacSha256(subtle, key, data) {
  // An empty HKDF salt is HashLen zero bytes (RFC 5869), and WebCrypto refuses an empty HMAC key.
  const k = await subtle.importKey('raw', key.length ? key : new Uint8Array(32), { name: 'HMAC', hash: 'SHA-256' },
    false, ['sign']);
  try {
    return new Uint8Array(await subtle.sign('HMAC', k, data));
  } finally {
    data.fill(0);
  }
}

function labeledExtract(subtle, suite, salt, label, ikm) {
  return hmacSha256(subtle, salt, concat(HPKE_V1, suite, enc8(label), ikm));
}

// One HKDF-Expand block is all this suite needs (L <= 32).
async function labeledExpand(subtle, suite, prk, label, info, length) {
  const t1 = await hmacSha256(subtle, prk,
    concat(new Uint8Array([length >> 8, length & 0xff]), HPKE_V1, suite, enc8(label), info, new Uint8Array([1])));
  const out = t1.slice(0, length);
  t1.fill(0);
  return out;
}

/**
 * HPKE base-mode single-shot seal (RFC 9180 SetupBaseS + Seal) of `plaintext`
 * to the X25519 public key `pkR` (32 raw bytes): returns enc || ciphertext.
 * The ephemeral key comes from subtle.generateKey, so a test can make the
 * output deterministic only by handing in its own `subtle`.
 */
export async function hpkeSeal(subtle, pkR, info, aad, plaintext) {
  const eph = await subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
  const enc = new Uint8Array(await subtle.exportKey('raw', eph.publicKey));
  const pkRKey = await subtle.importKey('raw', pkR, { name: 'X25519' }, false, []);
  // WebCrypto refuses an all-zero X25519 result (a low-order pkR) itself.
  const dh = new Uint8Array(await subtle.deriveBits({ name: 'X25519', public: pkRKey }, eph.privateKey, 256));
  const secrets = [dh];
  try {
    const eaePrk = await labeledExtract(subtle, KEM_SUITE, new Uint8Array(0), 'eae_prk', dh);
    secrets.push(eaePrk);
    const shared = await labeledExpand(subtle, KEM_SUITE, eaePrk, 'shared_secret', concat(enc, pkR), 32);
    secrets.push(shared);
    const pskIdHash = await labeledExtract(subtle, HPKE_SUITE, new Uint8Array(0), 'psk_id_hash', new Uint8Array(0));
    const infoHash = await labeledExtract(subtle, HPKE_SUITE, new Uint8Array(0), 'info_hash', info);
    const context = concat(new Uint8Array([0]), pskIdHash, infoHash);
    const secret = await labeledExtract(subtle, HPKE_SUITE, shared, 'secret', new Uint8Array(0));
    secrets.push(secret);
    const key = await labeledExpand(subtle, HPKE_SUITE, secret, 'key', context, 16);
    secrets.push(key);
    const nonce = await labeledExpand(subtle, HPKE_SUITE, secret, 'base_nonce', context, 12);
    secrets.push(nonce);
    const aesKey = await subtle.importKey('raw', key, { name: 'AES-GCM' }, false, ['encrypt']);
    const ct = new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad, tagLength: 128 },
      aesKey, plaintext));
    return concat(enc, ct);
  } finally {
    for (const s of secrets) {
      s.fill(0);
    }
  }
}

const x25519Support = new WeakMap();  // subtle -> Promise<boolean>, detected once each

/** Whether `subtle` (default: this engine's) does X25519, detected once with generateKey. */
export function webCryptoX25519(subtle = globalThis.crypto?.subtle) {
  if (!subtle) {
    return Promise.resolve(false);
  }
  let p = x25519Support.get(subtle);
  if (!p) {
    p = Promise.resolve()
      .then(() => subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']))
      .then((k) => Boolean(k && k.privateKey), () => false);
    x25519Support.set(subtle, p);
  }
  return p;
}

/** "Sealed <kid>.<base64url(enc || ct)>" for a payload string, HPKE-sealed to the HPKE `keyEntry`. */
export async function sealPayloadHpke(subtle, keyEntry, payload) {
  const plain = enc8(payload);
  try {
    const sealed = await hpkeSeal(subtle, keyEntry.pkBytes, enc8(HPKE_INFO_PREFIX + keyEntry.kid),
      new Uint8Array(0), plain);
    return `Sealed ${keyEntry.kid}.${base64url(null, sealed)}`;
  } finally {
    plain.fill(0);
  }
}

/** The payload JSON, fields in the protocol's order (headers_sha256 only when given). */
export function buildPayload({ key, iat, method, path, bodySha256: digest, headersSha256: headersDigest }) {
  if (!Number.isSafeInteger(iat)) {
    throw new TypeError('byok-relay: iat must be an integer number of seconds');
  }
  const p = { key, iat, method, path, body_sha256: digest };
  if (headersDigest !== undefined) {
    p.headers_sha256 = headersDigest;
  }
  return JSON.stringify(p);
}

/** The request header fields a seal binds (docs/protocol.md §3.5): forwarded by the relay, set by the app. */
export const SEALED_HEADERS = Object.freeze(['anthropic-beta', 'anthropic-version', 'content-type', 'idempotency-key',
  'openai-beta', 'openai-organization', 'openai-project']);

/**
 * headers_sha256 of a Headers object: SHA-256 of "name:value\n" for each of
 * SEALED_HEADERS present (names in lower case, in that order, values as
 * sent), base64url.
 */
export async function headersSha256(sodium, headers) {
  let text = '';
  for (const name of SEALED_HEADERS) {
    const v = headers.get(name);
    if (v !== null) {
      text += `${name}:${v}\n`;
    }
  }
  return bodySha256(sodium, new TextEncoder().encode(text));
}

/** "Sealed <kid>.<box>" for a payload string, sealed to `keyEntry`. */
export function sealPayload(sodium, keyEntry, payload) {
  const plain = new TextEncoder().encode(payload);
  try {
    const box = sodium.crypto_box_seal(plain, keyEntry.pkBytes);
    return `Sealed ${keyEntry.kid}.${base64url(sodium, box)}`;
  } finally {
    plain.fill(0);
  }
}

/** Seconds from a Cache-Control header; DEFAULT_MAX_AGE_S when it says nothing. */
export function cacheSeconds(cacheControl) {
  if (!cacheControl) {
    return DEFAULT_MAX_AGE_S;
  }
  const cc = cacheControl.toLowerCase();
  if (/(^|[\s,])(no-store|no-cache)([\s,=]|$)/.test(cc)) {
    return 0;
  }
  const m = /(^|[\s,])max-age\s*=\s*"?(\d+)"?/.exec(cc);
  return m ? Number(m[2]) : DEFAULT_MAX_AGE_S;
}

/**
 * Parses and checks a GET /v1/keys answer; returns the entry to seal to: the
 * first usable key of the first algorithm in `algs` that the relay offers
 * (default: the sealed box only), { kid, alg, pkBytes, exp }. `sodium` is
 * not needed.
 */
export function parseKeyConfig(sodium, json, nowS, algs = [ALG]) {
  if (!json || !Array.isArray(json.keys)) {
    throw new RelayClientError('key_config', 'the relay key config has no "keys" list');
  }
  for (const alg of algs) {
    const usable = [];
    for (const k of json.keys) {
      if (!k || k.alg !== alg || typeof k.kid !== 'string' || !/^[A-Za-z0-9_-]+$/.test(k.kid) ||
          typeof k.pk !== 'string') {
        continue;
      }
      const pkBytes = fromBase64url(k.pk);
      if (!pkBytes || pkBytes.length !== 32) {
        continue;
      }
      usable.push({ kid: k.kid, alg, pkBytes, exp: typeof k.exp === 'number' ? k.exp : Infinity });
    }
    if (usable.length > 0) {
      // The first entry is the one to seal to, unless it is past its exp by our clock.
      return usable.find((k) => k.exp > nowS) ?? usable[0];
    }
  }
  throw new RelayClientError('key_config', `the relay offers no ${algs.join(' or ')} key`);
}

// ---- The signed key list (docs/protocol.md §2.1): with a pinned signing key,
// only keys the operator signed offline are sealed to, so a party that can
// answer GET /v1/keys itself (a TLS-terminating proxy or CDN) cannot slip in
// its own key.

const KEY_LIST_TYP = 'byok-relay key list';

/** The 32 bytes of a pinned Ed25519 public key given as base64url (as `byok-relay keygen --signing` prints it). */
export function parseSigningKey(text) {
  const pk = fromBase64url(text);
  if (!pk || pk.length !== 32) {
    throw new TypeError('byok-relay: signingKey must be the base64url Ed25519 public key that '
      + '`byok-relay keygen --signing` printed (43 characters)');
  }
  return pk;
}

/** Ed25519 verify with WebCrypto, or libsodium where the engine has no Ed25519 (loaded only then). */
async function ed25519Verify(subtle, pk, sig, data, sodiumOption) {
  if (subtle) {
    let key = null;
    try {
      key = await subtle.importKey('raw', pk, { name: 'Ed25519' }, false, ['verify']);
    } catch {
      key = null;  // no Ed25519 in this engine's WebCrypto: the fallback below
    }
    if (key) {
      return subtle.verify({ name: 'Ed25519' }, key, sig, data);
    }
  }
  const sodium = await loadSodium(sodiumOption);
  return sodium.crypto_sign_verify_detached(sig, data, pk);
}

/**
 * Checks a GET /v1/keys answer against the pinned signing key `pk` (32
 * bytes) and returns the signed list inside it ({typ, v, iat, exp, keys});
 * only its keys may be sealed to. Throws RelayClientError:
 * key_list_unsigned, key_list_bad_signature (not signed by the pinned key,
 * or altered), key_list_expired (by `nowS`, this machine's clock).
 */
export async function verifyKeyList(json, pk, nowS, { subtle = globalThis.crypto?.subtle, sodium } = {}) {
  const s = json && json.signed;
  if (!s || typeof s !== 'object') {
    throw new RelayClientError('key_list_unsigned',
      'the relay key list is not signed, but a signing key is pinned: refusing to seal to it');
  }
  const list = fromBase64url(s.list);
  const sig = fromBase64url(s.sig);
  if (s.alg !== 'ed25519' || !list || !sig || sig.length !== 64) {
    throw new RelayClientError('key_list_bad_signature', 'the relay key list\'s signature is malformed');
  }
  if (!(await ed25519Verify(subtle, pk, sig, list, sodium))) {
    throw new RelayClientError('key_list_bad_signature',
      'the relay key list is not signed by the pinned signing key: refusing to seal to it');
  }
  let inner;
  try {
    inner = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(list));
  } catch (e) {
    throw new RelayClientError('key_list_bad_signature', 'the signed key list is not JSON', { cause: e });
  }
  if (!inner || inner.typ !== KEY_LIST_TYP || inner.v !== 1 || !Number.isSafeInteger(inner.exp) ||
      !Array.isArray(inner.keys)) {
    throw new RelayClientError('key_list_bad_signature', 'the signed document is not a byok-relay key list v1');
  }
  if (inner.exp <= nowS) {
    throw new RelayClientError('key_list_expired', `the relay's signed key list expired at ${
      new Date(inner.exp * 1000).toISOString()}: refusing to seal to it`);
  }
  return inner;
}

/** A failure on the client side (no response to hand back), never carrying the key. */
export class RelayClientError extends Error {
  constructor(code, message, options) {
    super(`byok-relay: ${message}`, options);
    this.name = 'RelayClientError';
    this.code = code;
  }
}

/** The relay error code of a response, or null when it is not a relay error. */
export async function relayErrorCode(res) {
  if (res.ok || !(res.headers.get('content-type') || '').includes('json')) {
    return null;
  }
  try {
    const j = await res.clone().json();
    if (j && j.error && j.error.type === RELAY_ERROR_TYPE && typeof j.error.code === 'string') {
      return j.error.code;
    }
  } catch {
    // not JSON after all: not ours
  }
  return null;
}

/**
 * Returns a function with fetch's signature that seals `getKey()`'s key into
 * every request to the relay at `relayUrl` (which may carry a path prefix,
 * e.g. https://host/relay; relative request paths are resolved under it).
 *
 * options:
 *   sodium   a ready-or-not libsodium-wrappers instance (default: import it
 *            when it is needed, for the sealed box only)
 *   subtle   the WebCrypto SubtleCrypto to seal with (default: crypto.subtle);
 *            HPKE is used when it does X25519 and the relay offers an HPKE key
 *   fetch    the fetch to send with (default: globalThis.fetch)
 *   now      () => milliseconds since the epoch (default: Date.now); for tests
 *   keysUrl  where the key config lives (default: relayUrl + '/v1/keys')
 *   signingKey  the relay operator's key-list signing key (base64url Ed25519
 *            public key from `byok-relay keygen --signing`), shipped in the
 *            app's own code: then only a list signed by it, not expired, is
 *            sealed to; anything else fails with RelayClientError
 *            key_list_unsigned / key_list_bad_signature / key_list_expired
 *            before any seal is made (docs/protocol.md §2.1)
 *
 * Retries, each at most once per request and always with the same body bytes:
 * `unknown_kid` (fetch the key config again, reseal) and `seal_expired`
 * (take the relay's clock from its Date header, reseal; the offset is kept
 * for later requests). Every other answer is returned as is.
 */
export function sealedFetch(relayUrl, getKey, options = {}) {
  if (typeof relayUrl !== 'string' && !(relayUrl instanceof URL)) {
    throw new TypeError('byok-relay: relayUrl must be a URL');
  }
  const base = new URL(String(relayUrl));
  if (base.search || base.hash) {
    throw new TypeError('byok-relay: relayUrl must not have a query or fragment');
  }
  const baseHref = stripSlash(base.href);
  const basePath = stripSlash(base.pathname);
  if (typeof getKey !== 'function') {
    if (getKey && typeof getKey.get === 'function') {
      const store = getKey;
      getKey = () => store.get();
    } else {
      throw new TypeError('byok-relay: getKey must be a function returning the key');
    }
  }
  const send = options.fetch ?? ((...a) => globalThis.fetch(...a));
  const subtle = 'subtle' in options ? options.subtle ?? null : globalThis.crypto?.subtle;
  const now = options.now ?? Date.now;
  const keysUrl = options.keysUrl ?? baseHref + '/v1/keys';
  const pinned = options.signingKey == null ? null : parseSigningKey(options.signingKey);

  let clockOffsetMs = 0;          // relay clock minus ours, learnt from a Date header
  let keyCache = null;            // { entry, expiresAt, generation }
  let keyFetch = null;            // the key config request in flight, shared
  let generation = 0;

  const relayNowS = () => Math.floor((now() + clockOffsetMs) / 1000);

  async function keyConfig(algs, { staleGeneration } = {}) {
    if (keyCache && keyCache.generation !== staleGeneration && now() < keyCache.expiresAt) {
      return keyCache;
    }
    if (!keyFetch) {
      keyFetch = (async () => {
        let res;
        try {
          res = await send(keysUrl, { method: 'GET', headers: { accept: 'application/json' } });
        } catch (e) {
          throw new RelayClientError('key_config', 'cannot reach the relay for its key config', { cause: e });
        }
        if (!res.ok) {
          await res.body?.cancel();
          throw new RelayClientError('key_config', `the relay key config answered HTTP ${res.status}`);
        }
        let json;
        try {
          json = await res.json();
        } catch (e) {
          throw new RelayClientError('key_config', 'the relay key config is not JSON', { cause: e });
        }
        if (pinned) {
          // This machine's clock, not one corrected by a Date header the list's server could forge.
          json = await verifyKeyList(json, pinned, Math.floor(now() / 1000), { subtle, sodium: options.sodium });
        }
        const entry = parseKeyConfig(null, json, relayNowS(), algs);
        const ttl = cacheSeconds(res.headers.get('cache-control'));
        keyCache = { entry, expiresAt: now() + ttl * 1000, generation: ++generation };
        return keyCache;
      })().finally(() => {
        keyFetch = null;
      });
    }
    return keyFetch;
  }

  async function readKey() {
    const key = await getKey();
    if (!isValidKey(key)) {
      // Say what is wrong without repeating any of it.
      throw new RelayClientError('invalid_key',
        'the API key must be 1 to 1024 visible ASCII characters (no spaces or line breaks)');
    }
    return key;
  }

  return async function byokFetch(input, init) {
    const r = await resolveRequest(input, init, baseHref);
    const u = new URL(r.url);
    if (u.origin !== base.origin || !(basePath === '' || u.pathname === basePath ||
                                      u.pathname.startsWith(basePath + '/'))) {
      // A seal is worth one request to the relay; never hand one to anyone else.
      throw new RelayClientError('foreign_url', 'refusing to send a sealed key outside the relay URL');
    }
    const path = requestTarget(r.url);
    const algs = (await webCryptoX25519(subtle)) ? [HPKE_ALG, ALG] : [ALG];
    // libsodium only for a sealed box, or for hashing where WebCrypto is missing.
    let sodium = null;
    const sodiumFor = async (entry) => {
      if (!sodium && (entry.alg === ALG || !globalThis.crypto?.subtle)) {
        sodium = await loadSodium(options.sodium);
      }
      return sodium;
    };

    let digest = null;
    let headersDigest = null;

    const attempt = async (cfg) => {
      const s = await sodiumFor(cfg.entry);
      const headers = new Headers(r.headers);
      digest ??= await bodySha256(s, r.body);
      headersDigest ??= await headersSha256(s, headers);  // the relay binds these fields (required with HPKE)
      const payload = buildPayload({ key: await readKey(), iat: relayNowS(), method: r.method, path,
                                     bodySha256: digest, headersSha256: headersDigest });
      headers.set('authorization', cfg.entry.alg === HPKE_ALG ? await sealPayloadHpke(subtle, cfg.entry, payload)
                                                               : sealPayload(s, cfg.entry, payload));
      return send(r.url, { ...r.passOn, method: r.method, headers, body: r.body, signal: r.signal });
    };

    let cfg = await keyConfig(algs);
    let res = await attempt(cfg);
    let refetched = false;
    let reclocked = false;
    for (;;) {
      const code = res.status === 401 ? await relayErrorCode(res) : null;
      if (code === 'unknown_kid' && !refetched) {
        refetched = true;
        await res.body?.cancel();
        cfg = await keyConfig(algs, { staleGeneration: cfg.generation });
      } else if (code === 'seal_expired' && !reclocked) {
        const date = Date.parse(res.headers.get('date') ?? '');
        if (Number.isNaN(date)) {
          return res;
        }
        reclocked = true;
        await res.body?.cancel();
        clockOffsetMs = date - now();
      } else {
        return res;
      }
      res = await attempt(cfg);
    }
  };
}

/**
 * Where an app keeps the user's key between requests. 'memory' (the default)
 * keeps it in this object only; 'session' keeps it in sessionStorage (this
 * tab, until it closes), which is only for when the user asked for it.
 * Pass the store itself, or `store.get`, as sealedFetch's getKey.
 */
export function createKeyStore({ storage = 'memory', name = 'byok-relay.key' } = {}) {
  if (storage !== 'memory' && storage !== 'session') {
    throw new TypeError("byok-relay: storage must be 'memory' or 'session'");
  }
  const session = () => {
    const s = globalThis.sessionStorage;
    if (!s) {
      throw new RelayClientError('no_session_storage', 'sessionStorage is not available here');
    }
    return s;
  };
  let memory = null;
  if (storage === 'session') {
    memory = session().getItem(name);
  }
  return {
    storage,
    set(key) {
      if (!isValidKey(key)) {
        throw new RelayClientError('invalid_key',
          'the API key must be 1 to 1024 visible ASCII characters (no spaces or line breaks)');
      }
      memory = key;
      if (storage === 'session') {
        session().setItem(name, key);
      }
    },
    get() {
      if (memory === null) {
        throw new RelayClientError('no_key', 'no API key has been entered');
      }
      return memory;
    },
    has() {
      return memory !== null;
    },
    clear() {
      memory = null;
      if (globalThis.sessionStorage) {
        globalThis.sessionStorage.removeItem(name);
      }
    },
    toJSON() {
      return { storage, key: memory === null ? null : '<redacted>' };
    },
  };
}

// ---- Grants (docs/protocol.md "Grants", issue 12): the user pastes the key
// into the relay's own consent page, never into the app; the app gets a grant
// bound to a non-extractable ECDSA P-256 key pair of its own, and signs a
// fresh proof of possession (Byok-Proof) for every call.

const GRANT_WINDOW = 'byok-relay-grant';

/** Compact JWS (ES256) of `claims`, signed with `privateKey` (WebCrypto ECDSA P-256). */
async function es256Jws(subtle, privateKey, header, claims) {
  const input = `${base64url(null, enc8(JSON.stringify(header)))}.${base64url(null, enc8(JSON.stringify(claims)))}`;
  // WebCrypto's ECDSA signature is r || s, 64 bytes: exactly JWS's ES256 form (RFC 7518 §3.4).
  const sig = new Uint8Array(await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, enc8(input)));
  return `${input}.${base64url(null, sig)}`;
}

/**
 * The Byok-Proof header value for one request: a compact JWS with header
 * {"typ":"byok-proof+jwt","alg":"ES256"} and claims
 * {htm, htu (path as sent, query and public prefix included), iat, jti (128
 * random bits), body_sha256}.
 */
export async function makeProof(subtle, privateKey, { method, path, iat, bodySha256: digest }) {
  const jti = base64url(null, globalThis.crypto.getRandomValues(new Uint8Array(16)));
  return es256Jws(subtle, privateKey, { typ: 'byok-proof+jwt', alg: 'ES256' },
    { htm: method, htu: path, iat, jti, body_sha256: digest });
}

/** A fresh non-extractable ES256 key pair and its public JWK (only the RFC 7638 members). */
export async function grantKeyPair(subtle = globalThis.crypto?.subtle) {
  const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const full = await subtle.exportKey('jwk', pair.publicKey);  // a public key is always exportable
  return { pair, jwk: { crv: 'P-256', kty: 'EC', x: full.x, y: full.y } };
}

function grantRequestMessage({ provider, paths, models, ttl_s: ttl, signingKey }, jwk) {
  const m = { type: 'byok-grant-request', v: 1, provider, paths, ttl_s: ttl, jwk };
  if (models !== undefined) {
    m.models = models;
  }
  if (signingKey != null) {
    m.signingKey = signingKey;
  }
  return m;
}

function checkGrantScope({ provider, paths, models, ttl_s: ttl }) {
  if (typeof provider !== 'string' || !/^[A-Za-z0-9_-]+$/.test(provider)) {
    throw new TypeError('byok-relay: requestGrant needs a provider name such as "openai"');
  }
  if (!Array.isArray(paths) || paths.length === 0 || !paths.every((p) => typeof p === 'string' && p.startsWith('/'))) {
    throw new TypeError('byok-relay: requestGrant needs paths, e.g. ["/v1/chat/completions"]');
  }
  if (models !== undefined && (!Array.isArray(models) || !models.every((m) => typeof m === 'string'))) {
    throw new TypeError('byok-relay: models must be a list of model names (or left out for any)');
  }
  if (!Number.isSafeInteger(ttl) || ttl <= 0) {
    throw new TypeError('byok-relay: ttl_s must be a whole number of seconds');
  }
}

// Opens the consent page in a popup and waits for its answer: the grant, a
// refusal, or the window closing.
function grantByPopup(win, pageUrl, relayOrigin, message) {
  return new Promise((resolve, reject) => {
    const popup = win.open(pageUrl, GRANT_WINDOW, 'popup,width=520,height=720');
    if (!popup) {
      reject(new RelayClientError('grant_popup_blocked',
        'the browser blocked the consent window: call requestGrant from a click handler'));
      return;
    }
    let settled = false;
    const finish = (fn, v) => {
      if (!settled) {
        settled = true;
        win.removeEventListener('message', onMessage);
        clearInterval(poll);
        fn(v);
      }
    };
    const onMessage = (ev) => {
      // Only the consent window, only from the relay's exact origin.
      if (ev.source !== popup || ev.origin !== relayOrigin || !ev.data || typeof ev.data !== 'object') {
        return;
      }
      if (ev.data.type === 'byok-grant-ready') {
        popup.postMessage(message, relayOrigin);
      } else if (ev.data.type === 'byok-grant') {
        finish(resolve, ev.data);
      } else if (ev.data.type === 'byok-grant-denied') {
        finish(reject, new RelayClientError('grant_denied', 'the user did not approve the grant'));
      }
    };
    win.addEventListener('message', onMessage);
    const poll = setInterval(() => {
      if (popup.closed) {
        finish(reject, new RelayClientError('grant_cancelled', 'the consent window was closed without approving'));
      }
    }, 300);
  });
}

function checkGrantAnswer(a) {
  if (!a || typeof a.grant !== 'string' || !/^[A-Za-z0-9._~-]+$/.test(a.grant) || !Number.isSafeInteger(a.exp)) {
    throw new RelayClientError('bad_grant_answer', 'the consent page answered something that is not a grant');
  }
  return { token: a.grant, exp: a.exp, scope: a.scope ?? null };
}

// The object requestGrant returns, over a key pair and a way to (re)obtain a grant.
function grantHandle(base, keyPair, first, obtain, options) {
  const baseHref = stripSlash(base.href);
  const basePath = stripSlash(base.pathname);
  const subtle = options.subtle ?? globalThis.crypto.subtle;
  const send = options.fetch ?? ((...a) => globalThis.fetch(...a));
  const now = options.now ?? Date.now;
  let current = first;  // { token, exp, scope }: in memory only
  let clockOffsetMs = 0;

  async function grantFetch(input, init) {
    const r = await resolveRequest(input, init, baseHref);
    const u = new URL(r.url);
    if (u.origin !== base.origin || !(basePath === '' || u.pathname === basePath ||
                                      u.pathname.startsWith(basePath + '/'))) {
      throw new RelayClientError('foreign_url', 'refusing to send a grant outside the relay URL');
    }
    const path = requestTarget(r.url);
    const digest = await bodySha256(null, r.body);
    const attempt = async () => {
      const headers = new Headers(r.headers);
      headers.set('authorization', `Grant ${current.token}`);
      headers.set('byok-proof', await makeProof(subtle, keyPair.privateKey, {
        method: r.method, path, iat: Math.floor((now() + clockOffsetMs) / 1000), bodySha256: digest,
      }));
      return send(r.url, { ...r.passOn, method: r.method, headers, body: r.body, signal: r.signal });
    };
    let res = await attempt();
    // A proof refused for its time: take the relay's clock from Date, sign once more.
    if (res.status === 401 && (await relayErrorCode(res)) === 'bad_proof') {
      const date = Date.parse(res.headers.get('date') ?? '');
      if (!Number.isNaN(date) && Math.abs(date - now() - clockOffsetMs) > 5000) {
        await res.body?.cancel();
        clockOffsetMs = date - now();
        res = await attempt();
      }
    }
    return res;
  }

  return {
    fetch: grantFetch,
    get exp() {
      return current.exp;
    },
    get scope() {
      return current.scope;
    },
    /** Asks the user again (the consent page opens again; call it from a click handler). */
    async refresh() {
      current = checkGrantAnswer(await obtain());
      return this;
    },
    toJSON() {
      return { exp: current.exp, scope: current.scope, grant: '<redacted>' };
    },
  };
}

/**
 * Asks the user, on the relay's own consent page, for a grant to use their
 * key for `provider`/`paths`/`models` during `ttl_s` seconds, without the key
 * ever reaching this page. Resolves to { fetch, exp, scope, refresh() }:
 * `fetch` works as sealedFetch's (the openai client's `fetch`, streaming
 * included), sending `Authorization: Grant <token>` and a fresh
 * `Byok-Proof` signed with a non-extractable key made here. The grant is kept
 * in memory only.
 *
 * options:
 *   provider, paths, models (optional: any), ttl_s (default 1800)
 *   signingKey  the relay's pinned key-list signing key, passed on to the
 *            consent page, which then seals only to a signed list
 *   mode     'popup' (default; call from a click handler) or 'redirect'
 *            (the page navigates away; call completeGrant() when it loads again)
 *   returnTo for 'redirect': where to come back (default: this page's address)
 *   fetch, now, subtle, window  for tests
 * Errors: RelayClientError grant_popup_blocked, grant_denied,
 * grant_cancelled, bad_grant_answer.
 */
export async function requestGrant(relayUrl, options = {}) {
  const base = new URL(String(relayUrl));
  if (base.search || base.hash) {
    throw new TypeError('byok-relay: relayUrl must not have a query or fragment');
  }
  const scope = { ttl_s: 1800, ...options };
  checkGrantScope(scope);
  if (scope.signingKey != null) {
    parseSigningKey(scope.signingKey);
  }
  const win = options.window ?? globalThis;
  const pageUrl = stripSlash(base.href) + '/v1/grant';
  const { pair, jwk } = await grantKeyPair(options.subtle);
  const message = grantRequestMessage(scope, jwk);
  if (options.mode === 'redirect') {
    const returnTo = new URL(options.returnTo ?? win.location.href);
    returnTo.hash = '';
    await storePendingKey(returnTo.href, pair);
    const request = { ...message, return_to: returnTo.href };
    win.location.assign(`${pageUrl}#request=${base64url(null, enc8(JSON.stringify(request)))}`);
    return new Promise(() => {});  // the page is going away
  }
  const obtain = () => grantByPopup(win, pageUrl, base.origin, message);
  return grantHandle(base, pair, checkGrantAnswer(await obtain()), obtain, options);
}

// The redirect mode keeps the non-extractable key pair in IndexedDB (a
// CryptoKey survives structured cloning without becoming extractable) for the
// one navigation to the consent page and back; completeGrant deletes it.
const PENDING_DB = 'byok-relay-grant';

function pendingStore(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(PENDING_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore('pending');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction('pending', mode);
      const req = fn(tx.objectStore('pending'));
      tx.oncomplete = () => {
        db.close();
        resolve(req.result);
      };
      tx.onerror = () => {
        db.close();
        reject(tx.error);
      };
    };
  });
}

function storePendingKey(returnTo, pair) {
  return pendingStore('readwrite', (s) => s.put(pair, returnTo));
}

/**
 * For requestGrant's 'redirect' mode: on the page the consent page came back
 * to, takes the grant out of the address's fragment (and removes it from the
 * address bar and history), and returns the same object as requestGrant, or
 * null when this load is not a return from the consent page.
 */
export async function completeGrant(relayUrl, options = {}) {
  const base = new URL(String(relayUrl));
  const win = options.window ?? globalThis;
  const here = new URL(win.location.href);
  const hash = here.hash;
  if (!hash.startsWith('#byok_grant')) {
    return null;
  }
  here.hash = '';
  win.history.replaceState(null, '', here.href);
  const pair = await pendingStore('readonly', (s) => s.get(here.href));
  await pendingStore('readwrite', (s) => s.delete(here.href));
  if (hash === '#byok_grant_denied') {
    throw new RelayClientError('grant_denied', 'the user did not approve the grant');
  }
  if (!pair || !hash.startsWith('#byok_grant=')) {
    throw new RelayClientError('bad_grant_answer', 'no grant request of this page is pending');
  }
  const text = fromBase64url(hash.slice('#byok_grant='.length));
  let answer = null;
  try {
    answer = text && JSON.parse(new TextDecoder().decode(text));
  } catch {
    answer = null;
  }
  const obtain = () => {
    throw new RelayClientError('grant_refresh_redirect', 'call requestGrant with mode "redirect" again to refresh');
  };
  return grantHandle(base, pair, checkGrantAnswer(answer), obtain, options);
}
