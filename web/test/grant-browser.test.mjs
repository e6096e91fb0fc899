// Grants in a real browser (headless Chromium via playwright-core), two
// origins: an app on one loopback port, the relay on another. The app asks
// for a grant; the test types the key into the relay's own consent page (a
// popup), approves; the app streams a completion through the official openai
// client with the grant. The key never appears in the app origin's DOM,
// storage or cookies, nor in any request to the app's own origin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import {
  startMock, startRelay, mockProviders, randomApiKey, stopAll,
} from '../../tests/integration/lib/harness.mjs';
import { startPrefixProxy } from './lib/prefix-proxy.mjs';
import { launchChromium, serveWebScript, withoutX25519 } from './lib/browser.mjs';

let mock;
let relay;
let browser;
let app;
const appRequests = [];  // everything the app's own origin received

// The app: one page and the library/openai files, on its own origin.
let relayUrl = '';
function startApp() {
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) {
      chunks.push(c);
    }
    appRequests.push({ url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('latin1') });
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/app.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><html lang="en"><meta charset="utf-8"><title>app</title><link rel="icon" href="data:,">
<script type="importmap">{"imports":{"openai":"/web/node_modules/openai/index.mjs"}}</script>
<button id="grant">Use my own API key</button><pre id="out"></pre>
<script type="module">
import { requestGrant, completeGrant } from '/web/byok-relay.js';
import OpenAI from 'openai';
const q = new URLSearchParams(location.search);
const RELAY = q.get('relay') ?? ${JSON.stringify(relayUrl)};
const options = { provider: 'openai', paths: ['/v1/chat/completions'], models: ['gpt-4o-mini'], ttl_s: 600 };
for (const name of ['mode', 'signingKey']) {
  if (q.get(name)) {
    options[name] = q.get(name);
  }
}
async function use(g) {
  window.__grant = { exp: g.exp, scope: g.scope };
  const openai = new OpenAI({ baseURL: RELAY + '/openai/v1', apiKey: 'granted', fetch: g.fetch,
                              dangerouslyAllowBrowser: true, maxRetries: 0 });
  const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', stream: true,
    messages: [{ role: 'user', content: 'granted' }], mock: { events: 4, interval_ms: 20 } });
  let text = '';
  for await (const c of stream) {
    text += c.choices?.[0]?.delta?.content ?? '';
    document.getElementById('out').textContent = text;
  }
  window.__done = { text };
}
const run = (p) => p.then((g) => g && use(g)).catch((e) => {
  window.__done = { error: e.constructor.name + ': ' + e.message + (e.code ? ' [' + e.code + ']' : '') };
});
document.getElementById('grant').addEventListener('click', () => run(requestGrant(RELAY, options)));
run(completeGrant(RELAY));  // back from the consent page in redirect mode
</script>`);
      return;
    }
    await serveWebScript(path, res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

// Set up in a hook, so a failure on the way still reaches the after hook.
before(async () => {
  mock = await startMock();
  app = await startApp();  // first: the relay's allow_origins names its origin
  relay = await startRelay({ allow_origins: [`http://127.0.0.1:${app.address().port}`], providers: mockProviders(mock) });
  relayUrl = relay.url;
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  if (app) {
    app.closeAllConnections();
    await new Promise((ok) => app.close(ok));
  }
  await stopAll();
});

// Skips a test on a relay built without POST /v1/grants (the relay side of issue 12).
async function withoutGrants(t) {
  const probe = await fetch(relay.url + '/v1/grants', { method: 'POST', body: '{}',
    headers: { 'content-type': 'application/json' } });
  await probe.arrayBuffer();
  if (probe.status === 404) {
    t.skip('this relay has no POST /v1/grants yet (the relay side of issue 12 is not merged)');
    return true;
  }
  return false;
}

// Clicks the app's button, checks what the consent popup shows, types the key
// there, approves, and waits until the app has streamed its answer.
async function approveGrant(page, key, appOrigin, beforeApprove = () => {}) {
  const popupOpened = page.waitForEvent('popup');
  await page.click('#grant');
  const popup = await popupOpened;
  await popup.waitForSelector('#request:not([hidden])', { timeout: 15_000 });
  assert.equal(await popup.textContent('#asker'), appOrigin, 'the consent page shows who asks');
  assert.equal(await popup.textContent('#scope-models'), 'gpt-4o-mini');
  assert.equal(await popup.textContent('#scope-ttl'), '10 minutes');
  await popup.getByRole('textbox', { name: 'Your API key' }).fill(key);
  beforeApprove();
  const closed = popup.waitForEvent('close');
  await popup.getByRole('button', { name: 'Approve' }).click();
  await closed;
  await page.waitForFunction(() => window.__done, null, { timeout: 30_000 });
  const done = await page.evaluate(() => window.__done);
  assert.equal(done.error, undefined, JSON.stringify(done));
  assert.equal(done.text, 'tok0 tok1 tok2 tok3 ');
  return popup;
}

test('the relay serves its consent page: never framed, no inline script', async () => {
  const res = await fetch(relay.url + '/v1/grant');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-security-policy'), /frame-ancestors 'none'/);
  assert.match(res.headers.get('content-security-policy'), /script-src 'self'(;|$)/);
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  const html = await res.text();
  assert.doesNotMatch(html, /<script>|<script type="importmap"|\son[a-z]+=/i, 'no inline script or handler');
});

test('two origins: grant by the relay\'s consent page, then the openai client streams; the app never sees the key', async (t) => {
  if (await withoutGrants(t)) {
    return;
  }
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const relayOrigin = new URL(relay.url).origin;
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const browserRequests = [];
  context.on('request', (r) => browserRequests.push({ url: r.url(), headers: r.headers(), body: r.postData() ?? '' }));
  await page.goto(appOrigin + '/app.html');
  await mock.reset();
  const key = randomApiKey('sk-granted-');

  const popup = await approveGrant(page, key, appOrigin);
  assert.equal(new URL(popup.url()).origin, relayOrigin);
  const seen = await mock.requests();
  assert.equal(seen.at(-1).headers.authorization, `Bearer ${key}`, 'the provider got exactly the key');

  // Where the key went: only into the seal of the consent page's POST /v1/grants.
  const grantCalls = browserRequests.filter((r) => r.url.startsWith(relay.url + '/openai/'));
  assert.ok(grantCalls.some((r) => /^Grant /.test(r.headers.authorization ?? '') && r.headers['byok-proof']));
  assert.ok(!JSON.stringify(browserRequests).includes(key), 'no request carried the key in clear');
  assert.ok(!JSON.stringify(appRequests).includes(key), 'the app origin received nothing with the key');
  const stored = await page.evaluate(async () => ({
    dom: document.documentElement.outerHTML, local: { ...localStorage }, session: { ...sessionStorage },
    cookie: document.cookie, idb: (await indexedDB.databases()).map((d) => d.name),
  }));
  assert.ok(!JSON.stringify(stored).includes(key), 'the app origin\'s DOM and storage do not hold the key');
  assert.ok(!JSON.stringify(await context.cookies()).includes(key));
  const grant = await page.evaluate(() => window.__grant);
  assert.ok(grant.exp > Date.now() / 1000);
});

test('a browser without X25519 in WebCrypto: the consent page says so before a key is typed and sends nothing', async (t) => {
  if (await withoutGrants(t)) {
    return;
  }
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const context = await browser.newContext();
  t.after(() => context.close());
  await withoutX25519(context);  // P-256, which the app's proofs use, still works
  const toRelay = [];
  context.on('request', (r) => {
    if (r.url().startsWith(relay.url + '/v1/grants')) {
      toRelay.push(r.url());
    }
  });
  const page = await context.newPage();
  await page.goto(appOrigin + '/app.html');
  const popupOpened = page.waitForEvent('popup');
  await page.click('#grant');
  const popup = await popupOpened;
  await popup.waitForSelector('#request:not([hidden])', { timeout: 15_000 });
  await popup.waitForSelector('#error:not([hidden])', { timeout: 15_000 });
  assert.equal(await popup.textContent('#asker'), appOrigin, 'the request is still shown');
  assert.match(await popup.textContent('#error'),
    /lacks X25519 in WebCrypto\. Open this page in Chrome or Edge 133\+, Firefox 130\+ or Safari 17\+\. Nothing was sent\./);
  assert.equal(await popup.getAttribute('#error', 'data-code'), 'unsupported_browser');
  assert.ok(await popup.isDisabled('#key'), 'no key can be typed');
  assert.ok(await popup.isDisabled('#approve'));
  assert.deepEqual(toRelay, [], 'nothing was sent to POST /v1/grants');
});

// Answers POST /v1/grants and the provider route inside the browser: the
// seal is opened with the relay's own HPKE key (@hpke/core) and each proof
// checked with Node's crypto against the minted grant's cnf key.
async function stubGrantEndpoints(context, appOrigin) {
  const { readFileSync } = await import('node:fs');
  const { createHash, createPublicKey, verify } = await import('node:crypto');
  const { hpkeOpen } = await import('./lib/fake-relay.mjs');
  const keyFile = JSON.parse(readFileSync(relay.config.key_files[0], 'utf8'));
  const relayKey = { hpkeKid: keyFile.hpke_kid, hpkeSk: Buffer.from(keyFile.hpke_sk, 'base64url') };
  const minted = [];
  await context.route(relay.url + '/v1/grants', async (route) => {
    const req = route.request();
    const [kid, sealed] = req.headers().authorization.replace(/^Sealed /, '').split('.');
    assert.equal(kid, relayKey.hpkeKid, 'sealed with HPKE to the relay\'s key');
    const payload = JSON.parse(new TextDecoder().decode(await hpkeOpen(relayKey, Buffer.from(sealed, 'base64url'))));
    const body = req.postData();
    minted.push({ payload, body: JSON.parse(body) });
    assert.equal(payload.path, '/v1/grants');
    assert.equal(payload.body_sha256, createHash('sha256').update(body).digest('base64url'));
    await route.fulfill({ status: 201, contentType: 'application/json',
      body: JSON.stringify({ grant: 'stub-grant', exp: Math.floor(Date.now() / 1000) + 600,
                             scope: { provider: 'openai', paths: ['/v1/chat/completions'] } }) });
  });
  const proofs = [];
  await context.route(relay.url + '/openai/**', async (route) => {
    const req = route.request();
    if (req.method() === 'OPTIONS') {
      await route.continue();
      return;
    }
    const h = req.headers();
    const [hd, cl, sig] = h['byok-proof'].split('.');
    const claims = JSON.parse(Buffer.from(cl, 'base64url'));
    const jwk = minted[0].body.cnf.jwk;
    proofs.push({ authorization: h.authorization, claims,
      ok: verify('sha256', Buffer.from(`${hd}.${cl}`), { key: createPublicKey({ key: jwk, format: 'jwk' }),
                                                          dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url')) });
    const chunk = (i) => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm',
      choices: [{ index: 0, delta: { content: `tok${i} ` }, finish_reason: null }] })}\n\n`;
    await route.fulfill({ status: 200, contentType: 'text/event-stream',
      headers: { 'access-control-allow-origin': appOrigin },
      body: [0, 1, 2, 3].map(chunk).join('') + 'data: [DONE]\n\n' });
  });
  return { minted, proofs };
}

// The same flow with the relay's two grant endpoints answered inside the
// browser (Playwright routes), so the browser half (popup hand-shake, the
// consent page, the seal it makes, the proofs) is checked even where the
// relay has no POST /v1/grants: the stand-in opens the page's seal with the
// relay's own HPKE key (@hpke/core) and checks each proof with Node's crypto.
test('browser half with the grant endpoints stubbed: the page seals the key for /v1/grants, the app signs proofs', async (t) => {
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const context = await browser.newContext();
  t.after(() => context.close());
  const key = randomApiKey('sk-stub-');
  const { minted, proofs } = await stubGrantEndpoints(context, appOrigin);
  const page = await context.newPage();
  await page.goto(appOrigin + '/app.html');
  await approveGrant(page, key, appOrigin, () => assert.equal(minted.length, 0, 'nothing minted before "Approve"'));

  assert.equal(minted.length, 1);
  assert.equal(minted[0].payload.key, key, 'the key travelled inside the seal');
  assert.deepEqual(Object.keys(minted[0].body), ['provider', 'paths', 'models', 'ttl_s', 'origin', 'cnf']);
  assert.equal(minted[0].body.origin, appOrigin);
  assert.deepEqual(minted[0].body.models, ['gpt-4o-mini']);
  assert.equal(proofs.length, 1);
  assert.equal(proofs[0].authorization, 'Grant stub-grant');
  assert.ok(proofs[0].ok, 'the proof verifies with the cnf key');
  assert.equal(proofs[0].claims.htu, '/openai/v1/chat/completions');
  assert.ok(!JSON.stringify(appRequests).includes(key));
  const dom = await page.evaluate(() => document.documentElement.outerHTML + JSON.stringify({ ...localStorage }));
  assert.ok(!dom.includes(key));
});

test('redirect mode (stubbed endpoints): to the consent page and back; the grant arrives in the fragment, never at the app\'s server', async (t) => {
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const context = await browser.newContext();
  t.after(() => context.close());
  const key = randomApiKey('sk-redirect-');
  const { minted, proofs } = await stubGrantEndpoints(context, appOrigin);
  const page = await context.newPage();
  await page.goto(appOrigin + '/app.html?mode=redirect');
  await page.click('#grant');
  await page.waitForURL(`${relay.url}/v1/grant`, { timeout: 15_000 });
  await page.waitForSelector('#request:not([hidden])');
  assert.equal(await page.textContent('#asker'), appOrigin, 'the origin of return_to is shown');
  assert.equal(new URL(page.url()).hash, '', 'the request is taken out of the address bar');
  await page.getByRole('textbox', { name: 'Your API key' }).fill(key);
  await page.getByRole('button', { name: 'Approve' }).click();
  await page.waitForURL((u) => u.origin === appOrigin, { timeout: 15_000 });
  await page.waitForFunction(() => window.__done, null, { timeout: 30_000 });
  const done = await page.evaluate(() => window.__done);
  assert.equal(done.error, undefined, JSON.stringify(done));
  assert.equal(done.text, 'tok0 tok1 tok2 tok3 ');
  assert.equal(page.url(), appOrigin + '/app.html?mode=redirect', 'the grant is taken out of the address bar');
  assert.equal(minted.length, 1);
  assert.equal(minted[0].payload.key, key);
  assert.ok(proofs[0].ok);
  assert.ok(!JSON.stringify(appRequests).includes('stub-grant'), 'a fragment is never sent to a server');
  assert.ok(!JSON.stringify(appRequests).includes(key));
  const idb = await page.evaluate(async () => {
    const db = await new Promise((ok) => {
      const r = indexedDB.open('byok-relay-grant', 1);
      r.onsuccess = () => ok(r.result);
    });
    const n = await new Promise((ok) => {
      const r = db.transaction('pending').objectStore('pending').count();
      r.onsuccess = () => ok(r.result);
    });
    db.close();
    return n;
  });
  assert.equal(idb, 0, 'the parked key pair is gone once used');
});

test('an app that pins a signing key: the consent page refuses an unsigned key list and mints nothing', async (t) => {
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const context = await browser.newContext();
  t.after(() => context.close());
  const { minted } = await stubGrantEndpoints(context, appOrigin);
  const page = await context.newPage();
  // This relay serves no signed list, so any pinned key must be refused.
  await page.goto(`${appOrigin}/app.html?signingKey=${Buffer.alloc(32, 7).toString('base64url')}`);
  const popupOpened = page.waitForEvent('popup');
  await page.click('#grant');
  const popup = await popupOpened;
  await popup.waitForSelector('#request:not([hidden])', { timeout: 15_000 });
  await popup.getByRole('textbox', { name: 'Your API key' }).fill(randomApiKey('sk-pinned-'));
  await popup.getByRole('button', { name: 'Approve' }).click();
  const alert = popup.getByRole('alert');
  await alert.waitFor({ state: 'visible', timeout: 15_000 });
  assert.equal(await alert.getAttribute('data-code'), 'key_list_unsigned');
  assert.equal(minted.length, 0, 'no seal was made');
  await popup.close();
  await page.waitForFunction(() => window.__done, null, { timeout: 15_000 });
  assert.match((await page.evaluate(() => window.__done)).error, /grant_cancelled/);
});

test('a relay behind a front proxy at /relay (public_path_prefix): the consent page and the grant work under the prefix', async (t) => {
  if (await withoutGrants(t)) {
    return;
  }
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const r = await startRelay({ allow_origins: [appOrigin], public_path_prefix: '/relay',
                               providers: mockProviders(mock) });
  t.after(() => r.stop());
  const proxy = await startPrefixProxy(r.url, '/relay');
  t.after(() => proxy.stop());
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  await page.goto(`${appOrigin}/app.html?relay=${encodeURIComponent(proxy.url)}`);
  await mock.reset();
  const key = randomApiKey('sk-prefix-grant-');
  const popup = await approveGrant(page, key, appOrigin);
  assert.equal(new URL(popup.url()).pathname, '/relay/v1/grant');
  assert.equal((await mock.requests()).at(-1).headers.authorization, `Bearer ${key}`);
});
