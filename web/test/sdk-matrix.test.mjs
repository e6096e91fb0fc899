// The SDKs a BYOK app uses, each the real npm package with sealedFetch as its
// fetch, through the real relay to the mock provider, streaming and not.
// Every case checks the answer's content (the mock's answers are
// deterministic, see tests/mock_provider/mock_responses.hpp) and that the
// mock saw the user's key in the provider's own auth header.
//
// It also owns the table in web/README.md (between the sdk-matrix markers):
// the test fails when the table differs from what it found;
// BYOK_UPDATE_SDK_MATRIX=1 rewrites it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import OpenAI, { toFile } from 'openai';
import OpenAIv4 from 'openai-v4';
import Anthropic from '@anthropic-ai/sdk';
import { generateText, streamText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { GoogleGenAI } from '@google/genai';
import { ChatOpenAI } from '@langchain/openai';

import {
  startMock, startRelay, randomApiKey, stopAll, sourceDir,
} from '../../tests/integration/lib/harness.mjs';
import { sealedFetch } from '../byok-relay.js';

const require = createRequire(import.meta.url);
const version = (name) => require(join(sourceDir, 'web', 'node_modules', name, 'package.json')).version;

let mock;
let relay;
before(async () => {
  mock = await startMock();
  const at = { base_url: mock.url, ca_file: mock.caFile };  // each preset, pointed at the mock
  relay = await startRelay({ providers: { openai: at, anthropic: at, gemini: at } });
});
after(stopAll);

const EVENTS = 5;
const STREAMED = Array.from({ length: EVENTS }, (_, i) => `tok${i} `).join('');
const mockOpts = { mock: { events: EVENTS } };

// The last request the mock saw with `key`, checked to carry it in `header` as `prefix + key` only.
async function seenWith(key, header, prefix = '') {
  const hits = (await mock.requests()).filter((r) => JSON.stringify(r.headers).includes(key));
  assert.ok(hits.length >= 1, 'the provider saw the key');
  for (const r of hits) {
    assert.equal(r.headers[header], prefix + key, `the key in ${header}`);
    const elsewhere = Object.entries(r.headers).filter(([k, v]) => k !== header && v.includes(key));
    assert.deepEqual(elsewhere, [], 'the key in no other header');
    assert.ok(!r.target.includes(key), 'the key in no query string');
  }
  return hits.at(-1);
}

const sealed = (key) => sealedFetch(relay.url, () => key);

// An "audio file" with every byte value, as an SDK uploads it.
const AUDIO = Buffer.from(Array.from({ length: 70000 }, (_, i) => (i * 13 + (i >> 9)) & 0xff));

function speechBytes(sha) {
  const b = Buffer.alloc(4096);
  for (let i = 0; i < b.length; i += 1) b[i] = (i * 7 + sha.charCodeAt(i % sha.length)) & 0xff;
  return b;
}

function openaiCases(label, Client, viaToFile) {
  const client = (key) => new Client({ baseURL: relay.url + '/openai/v1', apiKey: 'sealed-by-relay',
    fetch: sealed(key), maxRetries: 0 });
  const bearer = (key) => seenWith(key, 'authorization', 'Bearer ');
  return [
    [label, 'chat completions', false, async (key) => {
      const a = await client(key).chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(a.choices[0].message.content, 'mock answer ' + (await bearer(key)).body_sha256);
    }],
    [label, 'chat completions', true, async (key) => {
      const s = await client(key).chat.completions.create({ model: 'gpt-test', stream: true,
        messages: [{ role: 'user', content: 'hi' }], ...mockOpts });
      let text = '';
      for await (const c of s) text += c.choices[0]?.delta?.content ?? '';
      assert.equal(text, STREAMED);
      await bearer(key);
    }],
    [label, 'Responses API', false, async (key) => {
      const r = await client(key).responses.create({ model: 'gpt-test', input: 'hi' });
      assert.equal(r.output_text, 'mock answer ' + (await bearer(key)).body_sha256);
    }],
    [label, 'Responses API', true, async (key) => {
      const s = await client(key).responses.create({ model: 'gpt-test', input: 'hi', stream: true, ...mockOpts });
      let text = '';
      for await (const e of s) if (e.type === 'response.output_text.delta') text += e.delta;
      assert.equal(text, STREAMED);
      await bearer(key);
    }],
    [label, 'embeddings', false, async (key) => {
      const e = await client(key).embeddings.create({ model: 'text-embedding-3-small', input: 'hi' });
      assert.equal(e.data[0].embedding.length, 8);
      await bearer(key);
    }],
    [label, 'audio transcription (multipart upload)', false, async (key) => {
      const file = await viaToFile(AUDIO, 'speech.mp3');
      const t = await client(key).audio.transcriptions.create({ model: 'whisper-1', file });
      const seen = await bearer(key);
      assert.equal(t.text, 'mock transcript ' + seen.body_sha256);
      assert.match(seen.headers['content-type'], /^multipart\/form-data; boundary=/);
      assert.ok(seen.body_bytes > AUDIO.length, `the whole file went up (${seen.body_bytes} bytes)`);
    }],
    [label, 'speech (binary answer)', false, async (key) => {
      const r = await client(key).audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'hello' });
      const got = Buffer.from(await r.arrayBuffer());
      const seen = await bearer(key);
      assert.ok(got.equals(speechBytes(seen.body_sha256)), 'every byte as the provider sent it');
    }],
  ];
}

const CASES = [
  ...openaiCases(`openai ${version('openai')}`, OpenAI, (b, n) => toFile(b, n)),
  // v4 sends an upload as a Node Readable (without `duplex`): sealedFetch must read it once itself.
  ...openaiCases(`openai ${version('openai-v4')} (v4)`, OpenAIv4, (b, n) => OpenAIv4.toFile(b, n)),
  [`@anthropic-ai/sdk ${version('@anthropic-ai/sdk')}`, 'messages', false, async (key) => {
    const c = new Anthropic({ baseURL: relay.url + '/anthropic', apiKey: 'sealed-by-relay', fetch: sealed(key),
      maxRetries: 0 });
    const m = await c.messages.create({ model: 'claude-test', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    const seen = await seenWith(key, 'x-api-key');
    assert.equal(m.content[0].text, 'mock answer ' + seen.body_sha256);
    assert.ok(seen.headers['anthropic-version'], 'anthropic-version forwarded');
  }],
  [`@anthropic-ai/sdk ${version('@anthropic-ai/sdk')}`, 'messages', true, async (key) => {
    const c = new Anthropic({ baseURL: relay.url + '/anthropic', apiKey: 'sealed-by-relay', fetch: sealed(key),
      maxRetries: 0 });
    const s = c.messages.stream({ model: 'claude-test', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }],
      ...mockOpts });
    let text = '';
    s.on('text', (t) => { text += t; });
    await s.finalMessage();
    assert.equal(text, STREAMED);
    await seenWith(key, 'x-api-key');
  }],
  ...['generateText', 'streamText'].flatMap((fn) => [
    [`ai ${version('ai')} + @ai-sdk/openai ${version('@ai-sdk/openai')}`, 'generateText / streamText', fn === 'streamText', async (key) => {
      const openai = createOpenAI({ baseURL: relay.url + '/openai/v1', apiKey: 'sealed-by-relay', fetch: sealed(key) });
      await aiSdkCase(fn, openai('gpt-test'), key, () => seenWith(key, 'authorization', 'Bearer '));
    }],
    [`ai ${version('ai')} + @ai-sdk/anthropic ${version('@ai-sdk/anthropic')}`, 'generateText / streamText', fn === 'streamText', async (key) => {
      const anthropic = createAnthropic({ baseURL: relay.url + '/anthropic/v1', apiKey: 'sealed-by-relay',
        fetch: sealed(key) });
      await aiSdkCase(fn, anthropic('claude-test'), key, () => seenWith(key, 'x-api-key'));
    }],
  ]),
  [`@google/genai ${version('@google/genai')}`, 'generateContent (v1) / generateContentStream (v1beta)', false, async (key) => {
    const ai = new GoogleGenAI({ apiKey: 'sealed-by-relay',
      httpOptions: { baseUrl: relay.url + '/gemini', fetch: sealed(key) } });
    const r = await ai.models.generateContent({ model: 'gemini-test', contents: 'hi' });
    const seen = await seenWith(key, 'x-goog-api-key');
    assert.equal(r.text, 'mock answer ' + seen.body_sha256);
    assert.equal(seen.target, '/v1/models/gemini-test:generateContent');  // its default API version
  }],
  [`@google/genai ${version('@google/genai')}`, 'generateContent (v1) / generateContentStream (v1beta)', true, async (key) => {
    const ai = new GoogleGenAI({ apiKey: 'sealed-by-relay',
      httpOptions: { baseUrl: relay.url + '/gemini', apiVersion: 'v1beta', fetch: sealed(key) } });
    let text = '';
    for await (const c of await ai.models.generateContentStream({ model: 'gemini-test', contents: 'hi' })) {
      text += c.text ?? '';
    }
    const seen = await seenWith(key, 'x-goog-api-key');
    assert.equal(text, Array.from({ length: 20 }, (_, i) => `tok${i} `).join(''));  // no body options: 20 events
    assert.equal(seen.target, '/v1beta/models/gemini-test:streamGenerateContent?alt=sse');
  }],
  [`@langchain/openai ${version('@langchain/openai')}`, 'ChatOpenAI invoke / stream', false, async (key) => {
    const chat = new ChatOpenAI({ model: 'gpt-test', apiKey: 'sealed-by-relay', maxRetries: 0,
      configuration: { baseURL: relay.url + '/openai/v1', fetch: sealed(key) } });
    const m = await chat.invoke('hi');
    assert.equal(m.content, 'mock answer ' + (await seenWith(key, 'authorization', 'Bearer ')).body_sha256);
  }],
  [`@langchain/openai ${version('@langchain/openai')}`, 'ChatOpenAI invoke / stream', true, async (key) => {
    const chat = new ChatOpenAI({ model: 'gpt-test', apiKey: 'sealed-by-relay', maxRetries: 0,
      configuration: { baseURL: relay.url + '/openai/v1', fetch: sealed(key) } });
    let text = '';
    for await (const c of await chat.stream('hi')) text += c.content;
    assert.equal(text, Array.from({ length: 20 }, (_, i) => `tok${i} `).join(''));
    await seenWith(key, 'authorization', 'Bearer ');
  }],
];

async function aiSdkCase(fn, model, key, seen) {
  if (fn === 'generateText') {
    const r = await generateText({ model, prompt: 'hi', maxRetries: 0 });
    assert.equal(r.text, 'mock answer ' + (await seen()).body_sha256);
    return;
  }
  const r = streamText({ model, prompt: 'hi', maxRetries: 0, onError: () => {} });
  let text = '';
  for await (const t of r.textStream) text += t;
  assert.equal(text, Array.from({ length: 20 }, (_, i) => `tok${i} `).join(''));
  await seen();
}

const results = [];

for (const [sdk, feature, stream, run] of CASES) {
  test(`${sdk}: ${feature}${stream ? ' (streamed)' : ''}`, async () => {
    const key = randomApiKey('sk-matrix-');
    try {
      await run(key);
      results.push({ sdk, feature, stream, ok: true });
    } catch (e) {
      results.push({ sdk, feature, stream, ok: false, why: String(e?.message ?? e).split('\n')[0] });
      throw e;
    }
  });
}

test('web/README.md: the SDK table says what this run found', () => {
  const rows = new Map();
  for (const r of results) {
    const k = `${r.sdk}|${r.feature}`;
    const row = rows.get(k) ?? { sdk: r.sdk, feature: r.feature };
    row[r.stream ? 'stream' : 'plain'] = r.ok ? 'works' : 'fails';
    rows.set(k, row);
  }
  const table = ['| SDK (npm version tested) | feature | not streamed | streamed |', '| --- | --- | --- | --- |',
    ...[...rows.values()].map((r) => `| \`${r.sdk}\` | ${r.feature} | ${r.plain ?? '-'} | ${r.stream ?? '-'} |`)]
    .join('\n');
  const readme = join(sourceDir, 'web', 'README.md');
  const text = readFileSync(readme, 'utf8');
  const start = '<!-- sdk-matrix:start (generated by web/test/sdk-matrix.test.mjs) -->';
  const end = '<!-- sdk-matrix:end -->';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  assert.ok(a >= 0 && b > a, 'web/README.md has the sdk-matrix markers');
  const want = text.slice(0, a + start.length) + '\n' + table + '\n' + text.slice(b);
  if (process.env.BYOK_UPDATE_SDK_MATRIX === '1') {
    writeFileSync(readme, want);
    return;
  }
  assert.equal(text.slice(a, b), start + '\n' + table + '\n', 'the table is stale: run with BYOK_UPDATE_SDK_MATRIX=1');
});
