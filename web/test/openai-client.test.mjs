// The official openai npm client, with sealedFetch as its fetch, through the
// real relay to the mock provider: the main way a web app uses the relay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import {
  startMock, startRelay, mockProviders, bodySha256, randomApiKey, stopAll,
} from '../../tests/integration/lib/harness.mjs';
import { sealedFetch } from '../byok-relay.js';

after(stopAll);

let mock;
let relay;
// Set up in a hook, so a failure on the way still reaches the after hook.
before(async () => {
  mock = await startMock();
  relay = await startRelay({ providers: mockProviders(mock) });
});

function client(key, baseURL = relay.url + '/openai/v1') {
  return new OpenAI({
    baseURL, apiKey: 'sealed-by-relay', fetch: sealedFetch(relay.url, () => key), maxRetries: 0,
  });
}

test('openai client: stream: true chat completion through sealedFetch, mock saw exactly the key', async () => {
  await mock.reset();
  const key = randomApiKey('sk-proj-');
  const openai = client(key);
  const events = 6;
  const stream = await openai.chat.completions.create({
    model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'stream please' }],
    mock: { events, interval_ms: 70 },
  });
  const arrivals = [];
  let text = '';
  const start = Date.now();
  for await (const chunk of stream) {
    const piece = chunk.choices?.[0]?.delta?.content;
    if (piece) {
      text += piece;
      arrivals.push(Date.now() - start);
    }
  }
  assert.equal(text, Array.from({ length: events }, (_, i) => `tok${i} `).join(''));
  assert.ok(arrivals.at(-1) - arrivals[0] >= 200, `pieces arrived at ${arrivals.join(',')} ms`);
  const seen = await mock.requests();
  assert.equal(seen.length, 1);
  assert.equal(seen[0].headers.authorization, `Bearer ${key}`);
  // Nothing of the relay's scheme or the SDK's placeholder leaks upstream.
  const headerText = JSON.stringify(seen[0].headers);
  assert.ok(!headerText.includes('sealed-by-relay'), headerText);
  assert.ok(!/Sealed /.test(headerText), headerText);
});

test('openai client: non-streaming completion, body hashed exactly as the SDK sent it', async () => {
  await mock.reset();
  const key = randomApiKey();
  const answer = await client(key).chat.completions.create({
    model: 'gpt-test', messages: [{ role: 'user', content: 'plain ✓ "quoted"' }],
  });
  const seen = await mock.requests();
  assert.equal(seen.length, 1);
  assert.equal(answer.choices[0].message.content, 'mock answer ' + seen[0].body_sha256);
  assert.equal(seen[0].headers.authorization, `Bearer ${key}`);
});

test('openai client: a relay error surfaces as an APIError with the relay code', async () => {
  const openai = client(randomApiKey(), relay.url + '/nosuchprovider/v1');
  await assert.rejects(
    openai.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] }),
    (e) => {
      assert.ok(e instanceof OpenAI.APIError, String(e));
      assert.equal(e.status, 404);
      assert.equal(e.code, 'unknown_route');
      assert.equal(e.type, 'relay_error');
      return true;
    });
});

test('openai client: the key is only ever inside the seal', async () => {
  const key = randomApiKey();
  const sent = [];
  const f = sealedFetch(relay.url, () => key, {
    fetch: (url, init) => {
      sent.push({ url: String(url), headers: [...new Headers(init.headers)], body: init.body });
      return fetch(url, init);
    },
  });
  const openai = new OpenAI({ baseURL: relay.url + '/openai/v1', apiKey: 'sealed-by-relay', fetch: f, maxRetries: 0 });
  await openai.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] });
  assert.ok(sent.length >= 2);
  for (const s of sent) {
    const text = JSON.stringify(s.headers) + s.url + (s.body ? Buffer.from(s.body).toString() : '');
    assert.ok(!text.includes(key), `key visible in ${s.url}`);
  }
});
