// The app's side of a scoped key grant (issue 12, docs/protocol.md), as a
// browser app does it, with Node's WebCrypto: a non-extractable ECDSA P-256
// key pair, the mint request's body, and an ES256 proof for one request.
import { createHash, webcrypto } from 'node:crypto';

const subtle = webcrypto.subtle;

export async function appKey() {
  const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const jwk = await subtle.exportKey('jwk', pair.publicKey);
  return { privateKey: pair.privateKey, jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } };
}

// RFC 7638 thumbprint of a P-256 public JWK.
export function thumbprint(jwk) {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

export function randomJti(bytes = 16) {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(bytes))).toString('base64url');
}

const b64urlSha256 = (text) => createHash('sha256').update(text ?? '').digest('base64url');

// A compact JWS: WebCrypto's ECDSA signature is already r || s, as ES256 wants.
export async function proof(privateKey, { htm = 'POST', htu, body = '', iat, jti = randomJti(), header } = {}) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc(header ?? { typ: 'byok-proof+jwt', alg: 'ES256' })}.${enc({
    htm, htu, iat: iat ?? Math.floor(Date.now() / 1000), jti, body_sha256: b64urlSha256(body),
  })}`;
  const sig = await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, Buffer.from(input));
  return `${input}.${Buffer.from(sig).toString('base64url')}`;
}

// The JSON body of POST /v1/grants.
export function mintBody(jwk, { origin, ...over } = {}) {
  return JSON.stringify({
    provider: 'openai', paths: ['/v1/chat/completions'], models: ['gpt-4o-mini'], ttl_s: 1800, origin,
    cnf: { jwk }, ...over,
  });
}
