// sealedFetch with every body type an SDK passes to fetch, through the real
// relay to the mock: the bytes hashed into the seal are the bytes sent, read
// once (a stream cannot be read twice), with no `duplex` needed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';

import { startMock, startRelay, bodySha256, randomApiKey, stopAll } from '../../tests/integration/lib/harness.mjs';
import { sealedFetch, readBodyBytes } from '../byok-relay.js';

let mock;
let relay;
before(async () => {
  mock = await startMock();
  relay = await startRelay({ providers: { openai: { base_url: mock.url, ca_file: mock.caFile } } });  // the preset's paths
});
after(stopAll);

const enc = (s) => new TextEncoder().encode(s);
const JSON_TEXT = '{"model":"m","messages":[{"role":"user","content":"é ✓"}]}';

function bodies() {
  const fd = new FormData();
  fd.append('model', 'whisper-1');
  fd.append('file', new Blob([new Uint8Array([0, 1, 2, 13, 10, 255])], { type: 'audio/mpeg' }), 'a.mp3');
  return [
    ['string', JSON_TEXT],
    ['Uint8Array', enc(JSON_TEXT)],
    ['Buffer', Buffer.from(JSON_TEXT)],
    ['ArrayBuffer', enc(JSON_TEXT).buffer],
    ['DataView', new DataView(enc('xx' + JSON_TEXT).buffer, 2)],
    ['Blob', new Blob([JSON_TEXT], { type: 'application/json' })],
    ['web ReadableStream', new ReadableStream({ start(c) { c.enqueue(enc(JSON_TEXT.slice(0, 9))); c.enqueue(enc(JSON_TEXT.slice(9))); c.close(); } })],
    ['Node Readable', Readable.from([Buffer.from(JSON_TEXT.slice(0, 5)), JSON_TEXT.slice(5)])],
    ['async generator', (async function* gen() { yield enc(JSON_TEXT.slice(0, 3)); yield JSON_TEXT.slice(3); })()],
    ['URLSearchParams', new URLSearchParams({ model: 'm', q: 'a b&c' }), '/openai/v1/chat/completions', 400],
    ['FormData', fd, '/openai/v1/audio/transcriptions'],
  ];
}

test('readBodyBytes: the bytes and the Content-Type fetch would send', async () => {
  const fd = new FormData();
  fd.append('a', 'b');
  const f = await readBodyBytes(fd);
  const boundary = f.contentType.match(/boundary=(.+)$/)[1];
  assert.ok(new TextDecoder().decode(f.bytes).startsWith(`--${boundary}\r\n`));
  assert.equal((await readBodyBytes('x')).contentType, 'text/plain;charset=UTF-8');
  assert.equal((await readBodyBytes(new URLSearchParams('a=1'))).contentType, 'application/x-www-form-urlencoded;charset=UTF-8');
  assert.equal((await readBodyBytes(Readable.from(['a', Buffer.from('b')]))).contentType, null);
  await assert.rejects(readBodyBytes((async function* g() { yield 7; })()), TypeError);
});

test('sealedFetch: every body type reaches the provider exactly as hashed', async () => {
  const mismatches = [];
  for (const [name, body, path = '/openai/v1/chat/completions', status = 200] of bodies()) {
    const key = randomApiKey('sk-body-');
    const f = sealedFetch(relay.url, () => key);
    // content-type for JSON bodies as an SDK sets it; FormData and URLSearchParams imply their own.
    const headers = /FormData|URLSearchParams/.test(name) ? {} : { 'content-type': 'application/json' };
    const res = await f(relay.url + path, { method: 'POST', headers, body });
    await res.arrayBuffer();
    const seen = (await mock.requests()).find((r) => r.headers.authorization === `Bearer ${key}`);
    if (res.status !== status || !seen) {
      mismatches.push(`${name}: status ${res.status}, seen ${Boolean(seen)}`);
      continue;
    }
    if (!/FormData|URLSearchParams/.test(name) && seen.body_sha256 !== bodySha256(JSON_TEXT)) {
      mismatches.push(`${name}: the provider got other bytes`);
    }
    if (name === 'FormData' && !/^multipart\/form-data; boundary=/.test(seen.headers['content-type'])) {
      mismatches.push(`FormData: content-type ${seen.headers['content-type']}`);
    }
  }
  assert.deepEqual(mismatches, []);
});
