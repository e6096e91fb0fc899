// A client the relay team did not write: seals one request with the npm
// package libsodium-wrappers (libsodium compiled to JavaScript), following
// docs/protocol.md, and prints the Authorization header value.
//
// Usage: node js_seal.mjs <web dir> <kid> <pk base64url> <api key> <method> <path> <body hex> <iat>
// <web dir> holds node_modules/libsodium-wrappers (ESM ignores NODE_PATH, so
// the package is resolved from there explicitly). Exits non-zero on any error.
import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import path from 'node:path';

const [webDir, kid, pkB64, apiKey, method, target, bodyHex, iat] = process.argv.slice(2);
if (iat === undefined) {
  console.error('usage: node js_seal.mjs <web dir> <kid> <pk> <api key> <method> <path> <body hex> <iat>');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(webDir), 'package.json'));
const sodium = require('libsodium-wrappers');
await sodium.ready;

const b64 = sodium.base64_variants.URLSAFE_NO_PADDING;
const body = Buffer.from(bodyHex, 'hex');
const payload = JSON.stringify({
  key: apiKey,
  iat: Number.parseInt(iat, 10),
  method,
  path: target,
  body_sha256: sodium.to_base64(createHash('sha256').update(body).digest(), b64),
});
const pk = sodium.from_base64(pkB64, b64);
if (pk.length !== sodium.crypto_box_PUBLICKEYBYTES) {
  throw new Error('pk is not 32 bytes');
}
const box = sodium.crypto_box_seal(sodium.from_string(payload), pk);
process.stdout.write(`Sealed ${kid}.${sodium.to_base64(box, b64)}\n`);
