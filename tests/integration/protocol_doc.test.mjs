// docs/protocol.md, taken at its word by code the relay team did not write:
// the worked example is checked with libsodium-wrappers, and the document's
// own minimal client (section 12) is extracted from the Markdown and run
// against the real relay binary and the mock provider.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';
import {
  sourceDir, sodium, startMock, startRelay, mockProviders, fetchKeys, seal, stopAll, tempDir, randomApiKey,
} from './lib/harness.mjs';

after(stopAll);

const doc = readFileSync(join(sourceDir, 'docs', 'protocol.md'), 'utf8');

// Fenced blocks: [{info, text}] with the text's final newline removed.
function blocks() {
  const out = [];
  const re = /^```([^\n]*)\n([\s\S]*?)\n```$/gm;
  for (const m of doc.matchAll(re)) out.push({ info: m[1], text: m[2] });
  return out;
}
function example(name) {
  const found = blocks().filter((b) => b.info.split(/\s+/).includes(`example:${name}`));
  assert.equal(found.length, 1, `exactly one block labelled example:${name}`);
  return found[0].text;
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64url');

test('worked example: libsodium-wrappers agrees with every value in the document', async () => {
  const s = await sodium();
  const sk = Buffer.from(example('test-secret-key-hex'), 'hex');
  assert.equal(sk.length, 32);
  const pk = s.crypto_scalarmult_base(sk);
  assert.equal(b64(pk), example('public-key'));
  assert.equal(b64(createHash('sha256').update(pk).digest().subarray(0, 9)), example('kid'));

  const config = JSON.parse(example('key-config'));
  assert.deepEqual(Object.keys(config), ['keys']);
  assert.equal(config.keys[0].kid, example('kid'));
  assert.equal(config.keys[0].pk, example('public-key'));
  assert.equal(config.keys[0].alg, 'x25519-sealedbox');

  const body = example('body');
  assert.equal(b64(createHash('sha256').update(body, 'utf8').digest()), example('body-sha256'));
  const [method, path] = example('request-line').split(' ');
  const payloadText = example('payload');
  const payload = JSON.parse(payloadText);
  assert.deepEqual(Object.keys(payload).sort(), ['body_sha256', 'iat', 'key', 'method', 'path']);
  assert.equal(payload.method, method);
  assert.equal(payload.path, path);
  assert.equal(payload.body_sha256, example('body-sha256'));
  assert.equal(payload.iat, Number(example('relay-time')));
  assert.ok(Number.isInteger(payload.iat));

  const auth = example('authorization');
  const m = /^Sealed ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(auth);
  assert.ok(m, 'the header matches the grammar of section 3.1');
  assert.equal(m[1], example('kid'));
  const box = s.from_base64(m[2], s.base64_variants.URLSAFE_NO_PADDING);
  assert.equal(box.length, Buffer.byteLength(payloadText) + s.crypto_box_SEALBYTES);
  const opened = s.crypto_box_seal_open(box, pk, sk);
  assert.equal(Buffer.from(opened).toString('utf8'), payloadText);
});

// The section 12 code block, made importable: its import of
// 'libsodium-wrappers' is pointed at web/node_modules, and the function is exported.
async function documentClient() {
  const code = blocks().find((b) => b.info.trim() === 'js' && b.text.includes('async function sealedRequest'));
  assert.ok(code, 'section 12 has a js block defining sealedRequest');
  const entry = join(sourceDir, 'web', 'node_modules', 'libsodium-wrappers', 'dist', 'modules-esm',
    'libsodium-wrappers.mjs');
  const src = code.text.replace(/from 'libsodium-wrappers'/, `from ${JSON.stringify(pathToFileURL(entry).href)}`)
    + '\nexport { sealedRequest };\n';
  const file = join(tempDir('byok-doc-client-'), 'client.mjs');
  writeFileSync(file, src);
  return (await import(pathToFileURL(file).href)).sealedRequest;
}

test('the minimal client of section 12, run as written, gets through the real relay', async () => {
  const sealedRequest = await documentClient();
  const mock = await startMock({ tls: true });
  const relay = await startRelay({ providers: mockProviders(mock) });
  const apiKey = randomApiKey();
  const body = new TextEncoder().encode(JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'h\u00e9' }] }));

  const res = await sealedRequest(relay.url, apiKey, 'POST', '/openai/v1/chat/completions?x=1', body);
  assert.equal(res.status, 200, await res.clone().text());
  await res.arrayBuffer();
  const seen = (await mock.requests()).at(-1);
  assert.equal(seen.method, 'POST');
  assert.equal(seen.target, '/v1/chat/completions?x=1');
  assert.equal(seen.headers.authorization, `Bearer ${apiKey}`);
  assert.equal(seen.body_sha256, b64(createHash('sha256').update(body).digest()), 'body forwarded unchanged');

  // A GET without a body: body_sha256 of zero bytes.
  const models = await sealedRequest(relay.url, apiKey, 'GET', '/openai/v1/models', new Uint8Array());
  assert.equal(models.status, 200, await models.clone().text());
  await models.arrayBuffer();
});

test('section 6.2: seal_expired carries Date; one reseal with the corrected offset succeeds', async () => {
  const sealedRequest = await documentClient();
  const mock = await startMock({ tls: true });
  const relay = await startRelay({ providers: mockProviders(mock) });
  const apiKey = randomApiKey();
  const body = new TextEncoder().encode('{"model":"m","messages":[]}');

  const skewed = -3600;  // a client clock one hour behind
  const first = await sealedRequest(relay.url, apiKey, 'POST', '/openai/v1/chat/completions', body, skewed);
  assert.equal(first.status, 401);
  const err = await first.json();
  assert.deepEqual(err, {
    error: {
      message: "The seal's iat is outside the accepted window; check your clock against this response's Date header and seal again.",
      type: 'relay_error',
      code: 'seal_expired',
    },
  });
  const date = first.headers.get('date');
  assert.ok(date, 'Date header present');
  // The simulated client's clock reads Date.now() + skewed; section 6.2's correction:
  const clientNow = Date.now() / 1000 + skewed;
  const offset = Math.round(Date.parse(date) / 1000 - clientNow);
  assert.ok(Math.abs(offset - 3600) <= 2, `offset ${offset}`);
  // iat = client_now + offset (the skew is part of the simulation, offset is the fix).
  const second = await sealedRequest(relay.url, apiKey, 'POST', '/openai/v1/chat/completions', body, skewed + offset);
  assert.equal(second.status, 200, await second.clone().text());
  await second.arrayBuffer();
});

test('sections 4, 5, 7: error shape, a replay refused, a seal for another path refused', async () => {
  const mock = await startMock({ tls: true });
  const relay = await startRelay({ providers: mockProviders(mock) });
  const keyConfig = await fetchKeys(relay.url);
  const apiKey = randomApiKey();
  const target = '/openai/v1/chat/completions';
  const body = '{"model":"m","messages":[]}';
  const send = (authorization, path = target) => fetch(new URL(path, relay.url), {
    method: 'POST', headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) }, body,
  });

  const none = await send(undefined);
  assert.equal(none.status, 401);
  const noneBody = await none.json();
  assert.equal(noneBody.error.type, 'relay_error');
  assert.equal(noneBody.error.code, 'missing_seal');

  const auth = await seal({ keyConfig, apiKey, method: 'POST', path: target, body });
  const ok = await send(auth);
  assert.equal(ok.status, 200);
  await ok.arrayBuffer();
  const again = await send(auth);
  assert.equal(again.status, 401);
  assert.equal((await again.json()).error.code, 'seal_replayed');

  const other = await seal({ keyConfig, apiKey, method: 'POST', path: target, body });
  const moved = await send(other, '/openai/v1/embeddings');
  assert.equal(moved.status, 401);
  assert.equal((await moved.json()).error.code, 'seal_mismatch');
});
