// The demo page in a real browser (headless Chromium via playwright-core),
// served by the real relay (web_root), talking to the mock provider: the
// answer streams in over several steps, nothing the page stores holds the
// key, every failure shows its relay error code.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  startMock, startRelay, mockProviders, randomApiKey, sourceDir, stopAll, tempDir,
} from '../../tests/integration/lib/harness.mjs';
import { startPrefixProxy } from './lib/prefix-proxy.mjs';
import { stageWebRoot } from '../demo/stage.mjs';
import { launchChromium, serveWebScript, withoutX25519 } from './lib/browser.mjs';
import { RELAY_ERROR_CODES } from '../byok-relay.js';

const outDir = join(sourceDir, 'tests', 'out');
mkdirSync(outDir, { recursive: true });

// What the relay serves: the demo and the packages it imports, not all of web/node_modules.
const webRoot = stageWebRoot(join(tempDir('byok-web-'), 'web'));

let mock;
let relay;
let browser;
// Set up in a hook, so a failure on the way still reaches the after hook.
before(async () => {
  mock = await startMock();
  relay = await startRelay({
    web_root: webRoot,
    providers: mockProviders(mock, {
      // The demo page's "demo" provider: OpenAI-shaped, answered by the mock.
      demo: { base_url: mock.url, auth: 'bearer', ca_file: mock.caFile, paths: ['/v1/chat/completions'] },
    }),
  });
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await stopAll();
});

// A fresh page (own cookies and storage) with its console and failures collected.
async function openDemo(t) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) {
      problems.push(`console: ${m.text()}`);
    }
  });
  const res = await page.goto(relay.url + '/');
  assert.equal(res.status(), 200);
  assert.equal(new URL(page.url()).pathname, '/web/demo/', 'GET / redirects to the demo');
  await page.waitForFunction(() => document.getElementById('model').value !== '');  // demo.js ran
  return { context, page, problems };
}

// Records every state of the answer text, with its time, as the page changes it.
async function recordAnswer(page) {
  await page.evaluate(() => {
    const el = document.getElementById('answer');
    const start = performance.now();
    window.__steps = [];
    new MutationObserver(() => {
      const text = el.textContent;
      if (text && window.__steps.at(-1)?.text !== text) {
        window.__steps.push({ t: Math.round(performance.now() - start), text });
      }
    }).observe(el, { childList: true, characterData: true, subtree: true });
  });
}

// Everything the page could have kept: web storage, cookies, IndexedDB, Cache Storage.
async function everythingStored(page, context) {
  const inPage = await page.evaluate(async () => {
    const dump = (s) => Object.fromEntries(Array.from({ length: s.length }, (_, i) => [s.key(i), s.getItem(s.key(i))]));
    const idb = [];
    for (const info of await indexedDB.databases()) {
      const db = await new Promise((ok, fail) => {
        const r = indexedDB.open(info.name);
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
      for (const store of db.objectStoreNames) {
        const all = await new Promise((ok, fail) => {
          const r = db.transaction(store).objectStore(store).getAll();
          r.onsuccess = () => ok(r.result);
          r.onerror = () => fail(r.error);
        });
        idb.push({ db: info.name, store, all });
      }
      db.close();
    }
    const cached = [];
    for (const name of await caches.keys()) {
      for (const req of await (await caches.open(name)).keys()) {
        cached.push(req.url);
      }
    }
    return { local: dump(localStorage), session: dump(sessionStorage), cookie: document.cookie, idb, cached,
             url: location.href, history: history.length };
  });
  return { ...inPage, cookies: await context.cookies(), storageState: await context.storageState() };
}

test('the demo streams an answer in several steps; nothing stored holds the key', async (t) => {
  const { context, page, problems } = await openDemo(t);
  await mock.reset();
  const key = randomApiKey('sk-browser-');
  await page.selectOption('#provider', 'demo');
  await page.fill('#key', key);
  await page.fill('#prompt', 'Stream me something.');
  await recordAnswer(page);
  await page.click('#send');
  await page.waitForFunction(() => /^Done/.test(document.getElementById('status').textContent) ||
                                   !document.getElementById('error').hidden, null, { timeout: 30_000 });
  const errorText = await page.evaluate(() => {
    const e = document.getElementById('error');
    return e.hidden ? '' : e.innerText;
  });
  assert.equal(errorText, '', 'the page showed an error');

  const steps = await page.evaluate(() => window.__steps);
  const expected = Array.from({ length: 24 }, (_, i) => `tok${i} `).join('');  // demo.js asks the mock for 24
  assert.equal(steps.at(-1).text, expected);
  assert.ok(steps.length >= 5, `the answer appeared in ${steps.length} step(s): ${JSON.stringify(steps)}`);
  for (let i = 1; i < steps.length; i++) {
    assert.ok(steps[i].text.startsWith(steps[i - 1].text), 'the answer only grows');
  }
  assert.ok(steps.at(-1).t - steps[0].t >= 1000,
    `steps spread over ${steps.at(-1).t - steps[0].t} ms, not streamed? ${steps.map((s) => s.t).join(',')}`);
  await page.screenshot({ path: join(outDir, 'browser-demo-streamed.png'), fullPage: true });

  const seen = await mock.requests();
  assert.equal(seen.length, 1);
  assert.equal(seen[0].headers.authorization, `Bearer ${key}`, 'the mock saw exactly the key');

  const stored = await everythingStored(page, context);
  assert.ok(!JSON.stringify(stored).includes(key), `the key is stored somewhere: ${JSON.stringify(stored)}`);
  assert.deepEqual(problems, []);
});

test('with X25519 in WebCrypto the page seals with HPKE and never fetches libsodium; without it, the sealed box', async (t) => {
  const kids = await (await fetch(relay.url + '/v1/keys')).json();
  const kidOf = (alg) => kids.keys.find((k) => k.alg === alg)?.kid;
  const bytes = {};
  for (const x25519 of [true, false]) {
    const context = await browser.newContext();
    t.after(() => context.close());
    if (!x25519) {
      await withoutX25519(context);
    }
    const page = await context.newPage();
    const requests = [];
    page.on('request', (r) => requests.push({ url: r.url(), authorization: r.headers().authorization, r,
                                               clear: JSON.stringify([r.url(), r.headers(), r.postData()]) }));
    await page.goto(relay.url + '/');
    await page.waitForFunction(() => document.getElementById('model').value !== '');
    await mock.reset();
    const key = randomApiKey('sk-browser-');
    await page.selectOption('#provider', 'demo');
    await page.fill('#key', key);
    await page.fill('#prompt', `Sealed with ${x25519 ? 'HPKE' : 'a sealed box'}.`);
    await page.click('#send');
    await page.waitForFunction(() => /^Done/.test(document.getElementById('status').textContent) ||
                                     !document.getElementById('error').hidden, null, { timeout: 30_000 });
    const sodiumFiles = requests.filter((r) => /libsodium/.test(r.url)).map((r) => new URL(r.url).pathname);
    const sealed = requests.filter((r) => r.authorization?.startsWith('Sealed '));
    assert.equal(sealed.length, 1, JSON.stringify(requests.map((r) => r.url)));
    if (x25519) {
      assert.deepEqual(sodiumFiles, [], 'an HPKE-capable page never downloads libsodium');
      assert.ok(sealed[0].authorization.startsWith(`Sealed ${kidOf('hpke-x25519-sha256-aes128gcm')}.`));
    } else {
      assert.ok(sodiumFiles.length >= 1, 'the fallback loads libsodium');
      assert.ok(sealed[0].authorization.startsWith(`Sealed ${kidOf('x25519-sealedbox')}.`));
    }
    const seen = await mock.requests();
    assert.equal(seen.at(-1)?.headers.authorization, `Bearer ${key}`, 'the provider got exactly the key');
    assert.ok(!requests.some((q) => q.clear.includes(key)), 'no request from the page carried the key in clear');
    bytes[x25519 ? 'hpke' : 'sealed_box'] = await bytesBeforeFirstSeal(requests);
  }
  // The figures in web/README.md ("What a browser downloads before its first request").
  writeFileSync(join(outDir, 'browser-bytes.json'), JSON.stringify(bytes, null, 2) + '\n');
  t.diagnostic(JSON.stringify(bytes));
  assert.equal(bytes.hpke.libsodium.files, 0);
  assert.ok(bytes.sealed_box.libsodium.body > 100_000, 'the fallback downloads libsodium.js');
});

// Chromium's own count (Playwright request.sizes(): bytes of response
// headers and body as received; the relay sends no content coding) of
// everything the page loaded before its first sealed request, by part.
async function bytesBeforeFirstSeal(requests) {
  const first = requests.findIndex((q) => q.authorization?.startsWith('Sealed '));
  const parts = {};
  for (const { url, r } of requests.slice(0, first)) {
    const path = new URL(url).pathname;
    const part = /libsodium/.test(path) ? 'libsodium' : /\/byok-relay\.js$/.test(path) ? 'byok_relay_js'
      : path === '/v1/keys' ? 'v1_keys' : /node_modules\/openai\//.test(path) ? 'openai_client' : 'demo_page';
    const sz = await r.sizes();
    parts[part] ??= { files: 0, body: 0, headers: 0 };
    parts[part].files += 1;
    parts[part].body += sz.responseBodySize;
    parts[part].headers += sz.responseHeadersSize;
  }
  parts.libsodium ??= { files: 0, body: 0, headers: 0 };
  const sum = (keys) => keys.reduce((n, k) => n + (parts[k] ? parts[k].body + parts[k].headers : 0), 0);
  parts.library_total = sum(['byok_relay_js', 'v1_keys', 'libsodium']);
  parts.all_total = sum(Object.keys(parts).filter((k) => !k.endsWith('_total')));
  return parts;
}

test('"remember for this tab" is the only way the key reaches storage, and only sessionStorage', async (t) => {
  const { context, page } = await openDemo(t);
  const key = randomApiKey('sk-remember-');
  await page.fill('#key', key);
  await page.check('#remember');
  await page.click('#send');
  await page.waitForFunction(() => /^Done/.test(document.getElementById('status').textContent), null,
    { timeout: 30_000 });
  const stored = await everythingStored(page, context);
  assert.deepEqual(Object.values(stored.session), [key], 'kept in sessionStorage when asked');
  assert.ok(!JSON.stringify({ ...stored, session: null, storageState: null }).includes(key));
  // A reload of the tab keeps it; unticking removes it.
  await page.reload();
  await page.waitForFunction(() => document.getElementById('key').value !== '');
  assert.equal(await page.inputValue('#key'), key);
  await page.uncheck('#remember');
  assert.ok(!JSON.stringify(await everythingStored(page, context)).includes(key));
});

test('a relay error is shown with its code and message (body changed in flight → seal_mismatch)', async (t) => {
  const { page } = await openDemo(t);
  await mock.reset();
  // Something between the page and the relay rewrites the body after sealing.
  await page.route('**/demo/v1/chat/completions', (route) => {
    const body = JSON.parse(route.request().postData());
    body.messages[0].content += ' (rewritten)';
    return route.continue({ postData: JSON.stringify(body) });
  });
  await page.fill('#key', randomApiKey());
  await page.click('#send');
  const alert = page.getByRole('alert');
  await alert.waitFor({ state: 'visible', timeout: 15_000 });
  const text = await alert.innerText();
  assert.match(text, /Relay error \(HTTP 401\)/);
  assert.match(text, /seal_mismatch/);
  assert.match(text, /different method, path or body/);  // the relay's own message
  assert.equal(await alert.getAttribute('data-code'), 'seal_mismatch');
  assert.equal((await mock.requests()).length, 0, 'nothing reached the provider');
  await page.screenshot({ path: join(outDir, 'browser-demo-error.png'), fullPage: true });
});

test('the Anthropic path: Messages API streamed through sealedFetch and the page\'s SSE reader', async (t) => {
  const { page } = await openDemo(t);
  await mock.reset();
  const key = randomApiKey('sk-ant-');
  await page.selectOption('#provider', 'anthropic');
  assert.equal(await page.inputValue('#model'), 'claude-3-5-haiku-latest');
  await page.fill('#key', key);
  await page.click('#send');
  await page.waitForFunction(() => /^Done/.test(document.getElementById('status').textContent) ||
                                   !document.getElementById('error').hidden, null, { timeout: 30_000 });
  assert.equal(await page.evaluate(() => document.getElementById('error').hidden), true,
    await page.evaluate(() => document.getElementById('error').innerText));
  const text = await page.textContent('#answer');
  assert.match(text, /^tok0 tok1 tok2 /);
  const seen = await mock.requests();
  assert.equal(seen.length, 1);
  assert.equal(seen[0].headers['x-api-key'], key);
  assert.equal(seen[0].headers.authorization, undefined);
});

// A web app on its own origin (the usual case) using the library and the
// openai client against the relay: needs the relay's CORS answers (preflight
// allowing the openai client's headers, Date exposed for the clock retry).
test('cross-origin app: openai client through sealedFetch, clock 5 min off, CORS from the relay', async (t) => {
  const app = http.createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/app.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><meta charset="utf-8"><title>app</title><link rel="icon" href="data:,">
<script type="importmap">{"imports":{
  "libsodium-wrappers":"/web/node_modules/libsodium-wrappers/dist/modules-esm/libsodium-wrappers.mjs",
  "libsodium":"/web/node_modules/libsodium/dist/modules-esm/libsodium.mjs",
  "openai":"/web/node_modules/openai/index.mjs"}}</script><p>app</p>`);
      return;
    }
    await serveWebScript(path, res);
  });
  await new Promise((ok) => app.listen(0, '127.0.0.1', ok));
  t.after(() => new Promise((ok) => {
    app.closeAllConnections();
    app.close(ok);
  }));
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const r = await startRelay({
    allow_origins: [appOrigin],
    providers: mockProviders(mock, {
      demo: { base_url: mock.url, auth: 'bearer', ca_file: mock.caFile, paths: ['/v1/chat/completions'] },
    }),
  });
  t.after(() => r.stop());
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  await page.goto(appOrigin + '/app.html');
  await mock.reset();
  const key = randomApiKey('sk-xorigin-');
  const result = await page.evaluate(async ({ relayUrl, key }) => {
    const { sealedFetch } = await import('/web/byok-relay.js');
    const { default: OpenAI } = await import('openai');
    const log = [];
    const f = sealedFetch(relayUrl, () => key, {
      now: () => Date.now() + 5 * 60_000,
      fetch: async (url, init) => {
        const res = await fetch(url, init);
        log.push(`${new URL(url).pathname} ${res.status}`);
        return res;
      },
    });
    const openai = new OpenAI({ baseURL: relayUrl + '/demo/v1', apiKey: 'sealed-by-relay', fetch: f,
                                dangerouslyAllowBrowser: true, maxRetries: 0 });
    try {
      const stream = await openai.chat.completions.create({
        model: 'demo-model', stream: true, messages: [{ role: 'user', content: 'cross-origin' }],
        mock: { events: 4, interval_ms: 20 },
      });
      let text = '';
      for await (const c of stream) {
        text += c.choices?.[0]?.delta?.content ?? '';
      }
      return { text, log };
    } catch (e) {
      return { error: `${e.constructor.name}: ${e.message} ${e.cause ? '(' + e.cause.message + ')' : ''}`, log };
    }
  }, { relayUrl: r.url, key });
  assert.equal(result.error, undefined, JSON.stringify(result));
  assert.equal(result.text, 'tok0 tok1 tok2 tok3 ');
  assert.deepEqual(result.log, ['/v1/keys 200', '/demo/v1/chat/completions 401', '/demo/v1/chat/completions 200'],
    'one seal_expired answer, then through (the Date header must be readable cross-origin)');
  const seen = await mock.requests();
  assert.equal(seen.at(-1).headers.authorization, `Bearer ${key}`);
});

test('the demo behind a front proxy at /relay (public_path_prefix) works unchanged', async (t) => {
  const r = await startRelay({
    web_root: webRoot,
    public_path_prefix: '/relay',
    providers: mockProviders(mock, {
      demo: { base_url: mock.url, auth: 'bearer', ca_file: mock.caFile, paths: ['/v1/chat/completions'] },
    }),
  });
  t.after(() => r.stop());
  const proxy = await startPrefixProxy(r.url, '/relay');
  t.after(() => proxy.stop());
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  await page.goto(proxy.url + '/');
  assert.equal(new URL(page.url()).pathname, '/relay/web/demo/', 'the / redirect stays under the prefix');
  await page.waitForFunction(() => document.getElementById('model').value !== '');
  assert.equal(await page.textContent('#relay-url'), proxy.url);
  await mock.reset();
  const key = randomApiKey('sk-prefix-');
  await page.fill('#key', key);
  await page.click('#send');
  await page.waitForFunction(() => /^Done/.test(document.getElementById('status').textContent) ||
                                   !document.getElementById('error').hidden, null, { timeout: 30_000 });
  assert.equal(await page.evaluate(() => document.getElementById('error').hidden), true,
    await page.evaluate(() => document.getElementById('error').innerText));
  assert.match(await page.textContent('#answer'), /^tok0 tok1 .*tok23 $/);
  assert.equal((await mock.requests()).at(-1).headers.authorization, `Bearer ${key}`);
});

test('every relay error code is shown with its code, the relay\'s message and a hint', async (t) => {
  const { page } = await openDemo(t);
  let current = null;
  // Answer the sealed request with each relay error in turn (the wire shape of docs/protocol.md).
  await page.route('**/demo/v1/chat/completions', (route) => route.fulfill({
    status: RELAY_ERROR_CODES[current],
    contentType: 'application/json',
    body: JSON.stringify({ error: { message: `relay says ${current}`, type: 'relay_error', code: current } }),
  }));
  await page.fill('#key', randomApiKey());
  for (const code of Object.keys(RELAY_ERROR_CODES)) {
    current = code;
    await page.click('#send');
    await page.waitForFunction((c) => {
      const e = document.getElementById('error');
      return !e.hidden && e.dataset.code === c && !document.getElementById('send').disabled;
    }, code, { timeout: 10_000 });
    const lines = (await page.getByRole('alert').innerText()).split('\n').filter(Boolean);
    assert.equal(lines[0], `Relay error (HTTP ${RELAY_ERROR_CODES[code]}): ${code}`);
    assert.equal(lines[1], `relay says ${code}`);
    assert.ok(lines[2] && lines[2].length > 10, `a hint for ${code}: ${lines}`);
  }
});
