// Seals one request payload with HPKE for the C++ checker to open
// (tests/crypto/hpke_test.cpp runs it): either with @hpke/core +
// @hpke/dhkem-x25519 from npm (an implementation nobody on this team wrote)
// or with web/byok-relay.js's own WebCrypto HPKE. Prints the Authorization
// header value "Sealed <kid>.<base64url(enc || ct)>".
//
// Usage: node hpke-seal.mjs core|lib <kid> <pk base64url> <payload hex>
// Exits non-zero on any error.
import { CipherSuite, Aes128Gcm, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';

import { sealPayloadHpke } from '../../byok-relay.js';

const [mode, kid, pkB64, payloadHex] = process.argv.slice(2);
if (payloadHex === undefined || (mode !== 'core' && mode !== 'lib')) {
  console.error('usage: node hpke-seal.mjs core|lib <kid> <pk base64url> <payload hex>');
  process.exit(2);
}
const pk = Uint8Array.from(Buffer.from(pkB64, 'base64url'));
const payload = Buffer.from(payloadHex, 'hex');
let header;
if (mode === 'core') {
  const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });
  const sender = await suite.createSenderContext({
    recipientPublicKey: await suite.kem.deserializePublicKey(pk),
    info: new TextEncoder().encode('byok-relay v1 ' + kid),
  });
  const ct = new Uint8Array(await sender.seal(payload));  // aad empty
  header = `Sealed ${kid}.${Buffer.concat([new Uint8Array(sender.enc), ct]).toString('base64url')}`;
} else {
  header = await sealPayloadHpke(globalThis.crypto.subtle, { kid, pkBytes: pk }, payload.toString('utf8'));
}
process.stdout.write(header + '\n');
