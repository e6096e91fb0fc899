// Every built-in provider preset, the generic auth object, {param} and :verb
// paths, forwarded headers, uploads and binary answers: through the real
// relay to the mock provider, which records the exact header and path it
// received. Each preset is pointed at the mock by overriding its base_url
// alone (auth, paths and body limits stay the preset's own).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import * as h from './lib/harness.mjs';

let mock;
let relay;
let keyConfig;

// name -> [base path the test gives it, a path of the preset, auth header, prefix before the key]
const PRESETS = {
  openai: ['', '/v1/chat/completions', 'authorization', 'Bearer '],
  anthropic: ['', '/v1/messages', 'x-api-key', ''],
  gemini: ['', '/v1beta/openai/chat/completions', 'x-goog-api-key', ''],
  mistral: ['', '/v1/chat/completions', 'authorization', 'Bearer '],
  groq: ['/openai', '/v1/chat/completions', 'authorization', 'Bearer '],
  openrouter: ['/api', '/v1/chat/completions', 'authorization', 'Bearer '],
  deepseek: ['', '/chat/completions', 'authorization', 'Bearer '],
  xai: ['', '/v1/chat/completions', 'authorization', 'Bearer '],
  together: ['', '/v1/chat/completions', 'authorization', 'Bearer '],
};
const EMBEDDINGS = { openai: '/v1/embeddings', mistral: '/v1/embeddings', openrouter: '/v1/embeddings',
  xai: '/v1/embeddings', together: '/v1/embeddings', gemini: '/v1beta/openai/embeddings' };
const MODELS = { openai: '/v1/models', anthropic: '/v1/models', mistral: '/v1/models', groq: '/v1/models',
  openrouter: '/v1/models', deepseek: '/models', xai: '/v1/models', together: '/v1/models',
  gemini: '/v1beta/openai/models' };

before(async () => {
  mock = await h.startMock({ tls: true });
  const providers = {};
  for (const [name, [base]] of Object.entries(PRESETS)) {
    providers[name] = { base_url: mock.url + base, ca_file: mock.caFile };
  }
  providers.custom = { base_url: mock.url, ca_file: mock.caFile, auth: { header: 'X-Custom-Key', prefix: 'Token ' },
    paths: ['/v1/chat/completions'] };
  providers.azure = { base_url: mock.url, ca_file: mock.caFile, auth: 'api-key',
    paths: ['/openai/deployments/{deployment}/chat/completions', '/openai/deployments/{deployment}/audio/speech'] };
  // A small chat limit, so an upload path's own limit shows.
  relay = await h.startRelay({ providers, max_body_bytes: 64 * 1024 });
  keyConfig = await h.fetchKeys(relay.url);
});

after(() => h.stopAll());

async function send(path, { method = 'POST', body = { model: 'm', messages: [] }, headers = {}, apiKey } = {}) {
  const key = apiKey ?? h.randomApiKey('sk-prov-');
  const res = await h.sealedRequest(relay.url, { apiKey: key, method, path, body: method === 'GET' ? undefined : body,
    headers: { origin: 'http://app.test', ...headers }, keyConfig });
  const buf = Buffer.from(await res.arrayBuffer());
  return { res, buf, key };
}

// The recorded request that carried `key`, and every header value it appears in.
async function seenWith(key) {
  const all = await mock.requests();
  const hits = all.filter((r) => JSON.stringify(r).includes(key));
  assert.equal(hits.length, 1, `exactly one recorded request carries the key (${hits.length})`);
  const r = hits[0];
  const where = Object.entries(r.headers).filter(([, v]) => v.includes(key)).map(([k]) => k);
  return { r, where };
}

test('every built-in preset: its auth header and prefix, exactly, and its paths', async () => {
  for (const [name, [base, path, header, prefix]] of Object.entries(PRESETS)) {
    for (const [p, method] of [[path, 'POST'], [EMBEDDINGS[name], 'POST'], [MODELS[name], 'GET']]) {
      if (!p) continue;
      const { res, key } = await send(`/${name}${p}`, { method, body: { model: 'm', input: 'x', messages: [] } });
      assert.equal(res.status, 200, `${name} ${p}: ${res.status}`);
      const { r, where } = await seenWith(key);
      assert.equal(r.target, base + p, `${name}: upstream target`);
      assert.deepEqual(where, [header], `${name}: the key is in ${header} only`);
      assert.equal(r.headers[header], prefix + key, `${name}: ${header}`);
      assert.ok(!r.target.includes(key), `${name}: never in the query string`);
      assert.equal(r.headers.host, new URL(mock.url).host);
    }
  }
});

test('the generic auth object: any header name, any prefix', async () => {
  const { res, key } = await send('/custom/v1/chat/completions');
  assert.equal(res.status, 200);
  const { where, r } = await seenWith(key);
  assert.deepEqual(where, ['x-custom-key']);
  assert.equal(r.headers['x-custom-key'], `Token ${key}`);
});

test('gemini native: models/{model}:generateContent and :streamGenerateContent?alt=sse', async () => {
  const body = { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] };
  const one = await send('/gemini/v1beta/models/gemini-2.0-flash:generateContent', { body });
  assert.equal(one.res.status, 200);
  const j = JSON.parse(one.buf.toString());
  const seen = await seenWith(one.key);
  assert.equal(seen.r.target, '/v1beta/models/gemini-2.0-flash:generateContent');
  assert.equal(seen.r.headers['x-goog-api-key'], one.key);
  assert.equal(j.candidates[0].content.parts[0].text, 'mock answer ' + seen.r.body_sha256);

  const s = await send('/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse',
    { body: { ...body, mock: { events: 4 } } });
  assert.equal(s.res.status, 200);
  assert.match(s.res.headers.get('content-type'), /^text\/event-stream/);
  const texts = [...s.buf.toString().matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]).candidates[0].content.parts[0].text);
  assert.deepEqual(texts, ['tok0 ', 'tok1 ', 'tok2 ', 'tok3 ']);
  assert.equal((await seenWith(s.key)).r.target, '/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse');
});

test('azure-style {deployment} paths with ?api-version, key in api-key', async () => {
  const { res, key } = await send('/azure/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21');
  assert.equal(res.status, 200);
  const { r, where } = await seenWith(key);
  assert.equal(r.target, '/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21');
  assert.deepEqual(where, ['api-key']);
  assert.equal(r.headers['api-key'], key);
});

test('open-proxy guard with {param} and :verb entries: refused before the provider', async () => {
  await mock.reset();
  const bad = [
    '/gemini/v1beta/models/x:deleteEverything', '/gemini/v1beta/models/x', '/gemini/v1beta/files',
    '/gemini/v1beta/models/..:generateContent', '/gemini/v1beta/models/%2e%2e:generateContent',
    '/gemini/v1beta/models/a%2fb:generateContent', '/gemini/v1beta/models/a%3Ab:generateContent',
    '/gemini/v1beta/models/x%3AgenerateContent', '/gemini/v1beta/models/x:generateContent/extra',
    '/gemini/v1beta/models/a/b:generateContent', '/gemini/v1beta/models/:generateContent',
    '/azure/openai/deployments/../chat/completions', '/azure/openai/deployments/%2e%2e/chat/completions',
    '/azure/openai/deployments/a%2Fb/chat/completions', '/azure/openai/deployments/a/b/chat/completions',
    '/azure/openai/deployments/x/embeddings', '/azure/openai/deployments/chat/completions',
    '/openai/v1/fine_tuning/jobs', '/anthropic/v1/complete',
  ];
  const statuses = {};
  for (const path of bad) {
    const { res } = await send(path);
    statuses[path] = res.status;
  }
  assert.deepEqual(Object.entries(statuses).filter(([, s]) => s !== 404), [], 'each answered 404 unknown_route');
  assert.deepEqual(await mock.requests(), [], 'the provider saw none of them');
});

test('headers: SDK headers forwarded, the browser-only Anthropic opt-in accepted and dropped, answer headers exposed', async () => {
  const { res, key } = await send('/anthropic/v1/messages', {
    body: { model: 'claude', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] },
    headers: { 'anthropic-version': '2023-06-01', 'anthropic-beta': 'prompt-caching-2024-07-31',
      'anthropic-dangerous-direct-browser-access': 'true', 'x-stainless-os': 'Linux' },
  });
  assert.equal(res.status, 200);
  const { r } = await seenWith(key);
  assert.equal(r.headers['anthropic-version'], '2023-06-01');
  assert.equal(r.headers['anthropic-beta'], 'prompt-caching-2024-07-31');
  assert.equal(r.headers['anthropic-dangerous-direct-browser-access'], undefined);
  assert.equal(r.headers['x-stainless-os'], undefined);
  assert.match(res.headers.get('request-id'), /^req_mock_/);
  assert.equal(res.headers.get('anthropic-ratelimit-requests-remaining'), '9999');
  const exposed = res.headers.get('access-control-expose-headers').toLowerCase().split(/,\s*/);
  for (const name of ['date', 'request-id', 'anthropic-ratelimit-requests-remaining', 'openai-processing-ms']) {
    assert.ok(exposed.includes(name), `${name} exposed: ${exposed}`);
  }
  assert.equal(res.headers.get('set-cookie'), null);

  const g = await send('/gemini/v1beta/models/m:generateContent', {
    body: { contents: [] }, headers: { 'x-goog-api-client': 'google-genai-sdk/1.0.0 gl-node/20' } });
  assert.equal(g.res.status, 200);
  assert.equal((await seenWith(g.key)).r.headers['x-goog-api-client'], 'google-genai-sdk/1.0.0 gl-node/20');
  const o = await send('/openai/v1/chat/completions', { headers: { 'openai-organization': 'org-1', 'openai-project': 'proj_1' } });
  const seenO = (await seenWith(o.key)).r;
  assert.equal(seenO.headers['openai-organization'], 'org-1');
  assert.equal(seenO.headers['openai-project'], 'proj_1');
  const exposedO = o.res.headers.get('access-control-expose-headers').toLowerCase();
  assert.match(exposedO, /x-request-id/);
  assert.match(exposedO, /x-ratelimit-remaining-requests/);
});

// A multipart body as a browser would build it, with every byte value in the "file".
function multipart(fileBytes) {
  const boundary = '----byokBoundary' + 'x'.repeat(8);
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n` +
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\nContent-Type: audio/mpeg\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return { body: Buffer.concat([head, fileBytes, tail]), type: `multipart/form-data; boundary=${boundary}` };
}

async function sealedBytes(path, body, type) {
  const key = h.randomApiKey('sk-up-');
  const authorization = await h.seal({ keyConfig, apiKey: key, method: 'POST', path, body });
  const res = await fetch(relay.url + path, { method: 'POST', headers: { authorization, 'content-type': type }, body });
  return { res, key, buf: Buffer.from(await res.arrayBuffer()) };
}

test('uploads: a multipart body over max_body_bytes goes through byte for byte on an upload path only', async () => {
  const file = Buffer.alloc(300 * 1024);
  for (let i = 0; i < file.length; i += 1) file[i] = (i * 31 + (i >> 8)) & 0xff;
  const { body, type } = multipart(file);
  const up = await sealedBytes('/openai/v1/audio/transcriptions', body, type);
  assert.equal(up.res.status, 200, up.buf.toString());
  const { r } = await seenWith(up.key);
  assert.equal(r.body_bytes, body.length);
  assert.equal(r.body_sha256, h.bodySha256(body));
  assert.equal(r.headers['content-type'], type);
  assert.equal(JSON.parse(up.buf.toString()).text, 'mock transcript ' + h.bodySha256(body));
  // The same bytes to the chat path: over its 64 KiB limit.
  await mock.reset();
  const chat = await sealedBytes('/openai/v1/chat/completions', body, type);
  assert.equal(chat.res.status, 413);
  assert.equal(JSON.parse(chat.buf.toString()).error.code, 'body_too_large');
  assert.deepEqual(await mock.requests(), []);
});

test('binary answers: speech passes through unchanged, every byte value', async () => {
  for (const path of ['/openai/v1/audio/speech', '/azure/openai/deployments/tts/audio/speech']) {
    const { res, buf, key } = await send(path, { body: { model: 'tts-1', input: 'hello', voice: 'alloy' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'audio/mpeg');
    const sha = (await seenWith(key)).r.body_sha256;
    const want = Buffer.alloc(4096);
    for (let i = 0; i < want.length; i += 1) want[i] = (i * 7 + sha.charCodeAt(i % sha.length)) & 0xff;
    assert.equal(createHash('sha256').update(buf).digest('hex'), createHash('sha256').update(want).digest('hex'));
  }
});

test('the demo page offers every built-in preset, each at a path its preset allows', async () => {
  const { readFileSync } = await import('node:fs');
  const html = readFileSync(new URL('../../web/demo/index.html', import.meta.url), 'utf8');
  const js = readFileSync(new URL('../../web/demo/demo.js', import.meta.url), 'utf8');
  const offered = [...html.matchAll(/<option value="([a-z]+)"/g)].map((m) => m[1]).filter((n) => n !== 'demo');
  assert.deepEqual(offered.sort(), Object.keys(PRESETS).sort());
  // Each OpenAI-shaped one: base + /chat/completions is a path the relay routes to the provider.
  for (const name of offered.filter((n) => n !== 'anthropic')) {
    const base = js.match(new RegExp(`\\b${name}: \\{ base: '([^']+)'`))?.[1];
    assert.ok(base, `demo.js has a base path for ${name}`);
    const { res } = await send(`${base}/chat/completions`);
    assert.equal(res.status, 200, `${name}: ${base}/chat/completions`);
  }
});

test('OpenAI Realtime, the BYOK way: an ephemeral client secret minted with the user\'s key through the relay', async () => {
  const { res, buf, key } = await send('/openai/v1/realtime/client_secrets', {
    body: { session: { type: 'realtime', model: 'gpt-realtime' } } });
  assert.equal(res.status, 200);
  const secret = JSON.parse(buf.toString());
  assert.match(secret.value, /^ek_mock_\d+$/);
  const { r, where } = await seenWith(key);
  assert.equal(r.target, '/v1/realtime/client_secrets');
  assert.deepEqual(where, ['authorization']);
  assert.ok(!buf.toString().includes(key), 'the answer carries the ephemeral secret, not the key');
});
