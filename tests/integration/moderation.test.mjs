// The moderation pre-check (issue 14): before forwarding, the relay sends
// the request's text to the provider's POST /v1/moderations with the user's
// own key. The mock flags a body holding MOCK_FLAG and fails (503) one
// holding MOCK_MODERATION_DOWN. Flagged: 400 content_flagged, the provider
// never sees the request. Clean: forwarded, after the check, both with the
// same key. Check down: per on_error. The key is wiped after both calls.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import * as h from './lib/harness.mjs';

const scanner = await import(join(h.sourceDir, 'scripts', 'residue-scan.mjs'));

let mock;
let relay;
let keyConfig;
const keys = [];
const OPERATOR_KEY = 'sk-operator-' + randomBytes(16).toString('hex');

before(async () => {
  mock = await h.startMock({ tls: true });
  const at = { base_url: mock.url, ca_file: mock.caFile };
  const dir = h.tempDir('byok-relay-');
  writeFileSync(join(dir, 'openai-moderation.key'), OPERATOR_KEY + '\n', { mode: 0o600 });
  relay = await h.startRelay({
    metrics_listen: '127.0.0.1:0',
    providers: {
      openai: { ...at, moderation: { model: 'omni-moderation-latest' } },  // on_error: refuse
      lenient: { ...at, paths: ['/v1/chat/completions', '/v1/responses'], moderation: { on_error: 'allow' } },
      anthropic: at,
      // Anthropic's requests checked on openai with the operator's key (the user's key is Anthropic's).
      claude: { ...at, auth: 'x-api-key', paths: ['/v1/messages'],
        moderation: { via: 'openai', key_file: join(dir, 'openai-moderation.key') } },
    },
  }, { dir });
  keyConfig = await h.fetchKeys(relay.url);
});

after(() => h.stopAll());

async function chat(path, content, extra = {}) {
  const key = 'sk-mod-' + randomBytes(20).toString('hex');
  keys.push(key);
  const res = await h.sealedRequest(relay.url, { apiKey: key, path, keyConfig,
    body: { model: 'gpt-test', messages: [{ role: 'user', content }], ...extra } });
  const text = await res.text();
  const seen = (await mock.requests()).filter((r) => r.headers.authorization === `Bearer ${key}`);
  return { res, text, seen, key };
}

test('flagged: 400 content_flagged with the category names, the provider never sees the request', async () => {
  await mock.reset();
  const { res, text, seen } = await chat('/openai/v1/chat/completions', 'please MOCK_FLAG this');
  assert.equal(res.status, 400, text);
  const e = JSON.parse(text).error;
  assert.equal(e.code, 'content_flagged');
  assert.equal(e.type, 'relay_error');
  assert.deepEqual(e.categories, ['violence', 'violence/graphic']);
  assert.ok(!/0\.9|MOCK_FLAG|please/.test(text), 'no scores, no text echoed');
  assert.deepEqual(seen.map((r) => r.target), ['/v1/moderations'], 'only the check reached the provider');
  assert.equal((await mock.requests()).length, 1);
});

test('clean: the check first, then the request, both with the same key', async () => {
  await mock.reset();
  const { res, seen, key } = await chat('/openai/v1/chat/completions', 'a harmless question');
  assert.equal(res.status, 200);
  assert.deepEqual(seen.map((r) => `${r.method} ${r.target}`), ['POST /v1/moderations', 'POST /v1/chat/completions']);
  for (const r of seen) assert.equal(r.headers.authorization, `Bearer ${key}`);
  assert.equal(seen[0].headers['content-type'], 'application/json');
  // Responses input and a streamed answer are checked and forwarded the same way.
  await mock.reset();
  const key2 = 'sk-mod-' + randomBytes(20).toString('hex');
  keys.push(key2);
  const r2 = await h.sealedRequest(relay.url, { apiKey: key2, path: '/openai/v1/responses', keyConfig,
    body: { model: 'gpt-test', input: 'MOCK_FLAG in a Responses input', stream: true } });
  assert.equal(r2.status, 400);
  assert.equal((await r2.json()).error.code, 'content_flagged');
  const r3 = await h.sealedRequest(relay.url, { apiKey: key2 + 'x', path: '/openai/v1/responses', keyConfig,
    body: { model: 'gpt-test', input: 'fine', stream: true, mock: { events: 3 } } });
  keys.push(key2 + 'x');
  assert.equal(r3.status, 200);
  assert.match(await r3.text(), /response\.completed/);
  // A provider without a check is not checked.
  await mock.reset();
  const a = await h.sealedRequest(relay.url, { apiKey: 'sk-ant-' + 'a'.repeat(30), path: '/anthropic/v1/messages',
    keyConfig, body: { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'MOCK_FLAG' }] } });
  assert.equal(a.status, 200);
  assert.deepEqual((await mock.requests()).map((r) => r.target), ['/v1/messages']);
});

test('moderation down: on_error "refuse" answers 502 moderation_unavailable, "allow" forwards', async () => {
  await mock.reset();
  const refused = await chat('/openai/v1/chat/completions', 'MOCK_MODERATION_DOWN');
  assert.equal(refused.res.status, 502, refused.text);
  assert.equal(JSON.parse(refused.text).error.code, 'moderation_unavailable');
  assert.deepEqual(refused.seen.map((r) => r.target), ['/v1/moderations']);

  const allowed = await chat('/lenient/v1/chat/completions', 'MOCK_MODERATION_DOWN');
  assert.equal(allowed.res.status, 200, allowed.text);
  assert.deepEqual(allowed.seen.map((r) => r.target), ['/v1/moderations', '/v1/chat/completions']);
  const flagged = await chat('/lenient/v1/chat/completions', 'MOCK_FLAG');
  assert.equal(flagged.res.status, 400, 'allow is about a failed check, not a flagged one');
});

test('via another provider: the check with the operator\'s key there, the user\'s key only to its own provider', async () => {
  for (const [content, status] of [['a harmless question', 200], ['MOCK_FLAG it', 400]]) {
    await mock.reset();
    const key = 'sk-ant-' + randomBytes(20).toString('hex');
    keys.push(key);
    const res = await h.sealedRequest(relay.url, { apiKey: key, path: '/claude/v1/messages', keyConfig,
      body: { model: 'c', max_tokens: 5, system: 'be brief', messages: [{ role: 'user', content }] } });
    assert.equal(res.status, status, await res.text());
    const seen = await mock.requests();
    assert.equal(seen[0].target, '/v1/moderations');
    assert.equal(seen[0].headers.authorization, `Bearer ${OPERATOR_KEY}`);
    assert.ok(!JSON.stringify(seen[0]).includes(key), 'the user\'s key never went to the other provider');
    if (status === 200) {
      assert.deepEqual(seen.map((r) => r.target), ['/v1/moderations', '/v1/messages']);
      assert.equal(seen[1].headers['x-api-key'], key);
    } else {
      assert.equal(seen.length, 1, 'a flagged request never reached its provider');
    }
  }
});

test('/metrics: the time the checks added, per provider', async () => {
  const text = await (await fetch(relay.metricsUrl)).text();
  const count = (p) => Number(text.match(new RegExp(`^byok_moderation_check_seconds_count\\{provider="${p}"\\} (\\d+)$`, 'm'))?.[1]);
  assert.ok(count('openai') >= 5, `openai checks counted: ${count('openai')}`);
  assert.ok(count('lenient') >= 2, `lenient checks counted: ${count('lenient')}`);
  assert.equal(count('anthropic'), 0);
});

test('the keys of every moderated request are gone from the relay\'s memory afterwards', async () => {
  for (let i = 0; i < 30; i += 1) {
    const kind = ['fine', 'MOCK_FLAG', 'MOCK_MODERATION_DOWN'][i % 3];
    await chat(i % 2 ? '/openai/v1/chat/completions' : '/lenient/v1/chat/completions', kind + ' ' + i);
  }
  await h.sleep(300);
  const kid = keyConfig.keys[0].kid;
  const result = scanner.scanProcess(relay.pid, [...keys, kid]);
  const keyHits = result.hits.filter((x) => x.secret < keys.length);
  assert.ok(result.hits.some((x) => x.secret === keys.length), 'control: the scan sees the relay\'s heap (its kid)');
  assert.equal(keyHits.length, 0, `key residue:\n${keyHits.slice(0, 20).map(scanner.formatHit).join('\n')}`);
});
