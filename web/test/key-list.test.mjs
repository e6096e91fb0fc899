// The signed key list (docs/protocol.md §2.1) end to end: `byok-relay keygen
// --signing` and `sign-keys` make it offline, the relay checks it against its
// keys and serves it verbatim, and sealedFetch with the pinned signing key
// seals only to what it signed: a proxy in front of the relay that swaps the
// list (another relay's keys, signed by another key or not signed at all)
// gets no seal at all.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  startMock, startRelay, makeKeyFile, mockProviders, randomApiKey, relayBin, tempDir, stopAll, sleep,
} from '../../tests/integration/lib/harness.mjs';
import { sealedFetch, verifyKeyList, parseSigningKey, RelayClientError } from '../byok-relay.js';

const run = promisify(execFile);
after(stopAll);

async function signingKey(dir, name = 'signing.json') {
  const path = join(dir, name);
  const { stdout } = await run(relayBin, ['keygen', '--signing', path]);
  const pk = stdout.match(/pin this public key in the app: ([A-Za-z0-9_-]{43})\n/)?.[1];
  assert.ok(pk, stdout);
  return { path, pk };
}

async function signKeys(dir, signing, keyFiles, exp = '30d', name = `list-${Math.random().toString(36).slice(2)}.json`) {
  const out = join(dir, name);
  await run(relayBin, ['sign-keys', '--signing-key', signing.path, '--exp', exp, '--out', out, ...keyFiles.map(String)]);
  return out;
}

// A proxy in front of the relay that answers GET .../v1/keys itself with
// `list()` (when it returns something) and forwards everything else; it
// records every request that carries a seal.
async function startListSwapProxy(relayUrl) {
  const upstream = new URL(relayUrl);
  const state = { list: null, sealed: 0 };
  const server = http.createServer((req, res) => {
    if (req.url.endsWith('/v1/keys') && state.list) {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store',
                           ...(req.headers.origin ? { 'access-control-allow-origin': req.headers.origin } : {}) })
        .end(state.list);
      return;
    }
    if ((req.headers.authorization ?? '').startsWith('Sealed ')) {
      state.sealed++;
    }
    const out = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url,
                               headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  after(() => new Promise((ok) => {
    server.closeAllConnections();
    server.close(() => ok());
  }));
  return { url: `http://127.0.0.1:${server.address().port}`, state };
}

let mock;
let dir;
let signing;
let keyFile;
let listFile;
let relay;
before(async () => {
  mock = await startMock();
  dir = tempDir('byok-keylist-');
  signing = await signingKey(dir);
  keyFile = await makeKeyFile(dir);
  listFile = await signKeys(dir, signing, [keyFile]);
  relay = await startRelay({ key_files: [keyFile], key_list_file: listFile, providers: mockProviders(mock) }, { dir });
});

const chat = (f, url) => f(url + '/openai/v1/chat/completions', {
  method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] }),
});

test('keygen --signing writes a 0600 file and prints the key to pin; the relay serves the signed list verbatim', async () => {
  const { statSync } = await import('node:fs');
  assert.equal(statSync(signing.path).mode & 0o777, 0o600);
  const file = JSON.parse(readFileSync(signing.path, 'utf8'));
  assert.equal(file.pk, signing.pk);
  const res = await fetch(relay.url + '/v1/keys');
  assert.equal(res.status, 200);
  assert.equal(await res.text(), readFileSync(listFile, 'utf8'), 'the file, byte for byte');
});

test('sealedFetch with the pinned signing key seals to the signed list and goes through', async () => {
  await mock.reset();
  const key = randomApiKey('sk-pinned-');
  const f = sealedFetch(relay.url, () => key, { signingKey: signing.pk });
  const res = await chat(f, relay.url);
  assert.equal(res.status, 200, await res.clone().text());
  await res.text();
  assert.equal((await mock.requests()).at(-1).headers.authorization, `Bearer ${key}`);
});

test('a proxy that swaps the key list gets no seal: another relay\'s list, signed by another key or unsigned', async () => {
  const otherDir = tempDir('byok-keylist-other-');
  const otherKey = await makeKeyFile(otherDir);
  const otherSigning = await signingKey(otherDir);
  const otherRelay = await startRelay({ key_files: [otherKey], providers: mockProviders(mock) }, { dir: otherDir });
  const unsignedOther = await (await fetch(otherRelay.url + '/v1/keys')).text();
  const signedOther = readFileSync(await signKeys(otherDir, otherSigning, [otherKey]), 'utf8');
  // The real list with the other relay's keys put in place of the signed ones.
  const real = JSON.parse(readFileSync(listFile, 'utf8'));
  const forged = JSON.parse(signedOther);
  const reSigned = JSON.stringify({ ...forged, signed: { ...forged.signed, sig: real.signed.sig } });
  const spliced = JSON.stringify({ keys: forged.keys, signed: real.signed });

  const proxy = await startListSwapProxy(relay.url);
  const cases = [
    ['unsigned list of another relay', unsignedOther, 'key_list_unsigned'],
    ['another relay\'s list signed by another key', signedOther, 'key_list_bad_signature'],
    ['another relay\'s list under the real signature', reSigned, 'key_list_bad_signature'],
  ];
  for (const [name, list, code] of cases) {
    proxy.state.list = list;
    let asked = 0;
    const f = sealedFetch(proxy.url, () => {
      asked++;
      return 'sk-never-sealed';
    }, { signingKey: signing.pk });
    await assert.rejects(chat(f, proxy.url), (e) => e instanceof RelayClientError && e.code === code, name);
    assert.equal(asked, 0, `${name}: the key was not even read`);
  }
  assert.equal(proxy.state.sealed, 0, 'not one seal left the browser');

  // The outer "keys" replaced but the real signed part kept: the client seals
  // only to the signed keys, so the swap changes nothing.
  proxy.state.list = spliced;
  await mock.reset();
  const key = randomApiKey('sk-spliced-');
  const res = await chat(sealedFetch(proxy.url, () => key, { signingKey: signing.pk }), proxy.url);
  assert.equal(res.status, 200);
  await res.text();
  assert.equal(proxy.state.sealed, 1);
  const sealedTo = (await mock.requests()).length;
  assert.equal(sealedTo, 1);

  // Without a pinned key the swap works: the case docs/security.md warns about.
  proxy.state.list = unsignedOther;
  const unpinned = sealedFetch(proxy.url, () => 'sk-unpinned', {});
  const r2 = await chat(unpinned, proxy.url);
  assert.equal(r2.status, 401, 'sealed to the other relay\'s key, which this relay does not hold');
  assert.equal((await r2.json()).error.code, 'unknown_kid');
  await otherRelay.stop();
});

test('an expired or altered signed list is refused by the client (this machine\'s clock)', async () => {
  const json = JSON.parse(readFileSync(listFile, 'utf8'));
  const pk = parseSigningKey(signing.pk);
  const inner = await verifyKeyList(json, pk, Math.floor(Date.now() / 1000));
  assert.equal(inner.typ, 'byok-relay key list');
  await assert.rejects(verifyKeyList(json, pk, inner.exp), (e) => e.code === 'key_list_expired');
  const list = Buffer.from(json.signed.list, 'base64url');
  list[list.length - 3] ^= 1;
  const altered = { ...json, signed: { ...json.signed, list: list.toString('base64url') } };
  await assert.rejects(verifyKeyList(altered, pk, 0), (e) => e.code === 'key_list_bad_signature');
  assert.throws(() => sealedFetch(relay.url, () => 'k', { signingKey: 'not-a-key' }), TypeError);
});

test('the relay refuses to start with a list that does not match its keys, or an expired one', async () => {
  const d = tempDir('byok-keylist-bad-');
  const k1 = await makeKeyFile(d);
  const k2 = await makeKeyFile(d);
  const s = await signingKey(d);
  const forK2 = await signKeys(d, s, [k2]);
  await assert.rejects(startRelay({ key_files: [k1], key_list_file: forK2, providers: mockProviders(mock) }, { dir: d }),
    /key_list_file: the list names kid '[^']+', which is not in key_files/);
  const short = await signKeys(d, s, [k1], '1s');
  await sleep(2100);
  await assert.rejects(startRelay({ key_files: [k1], key_list_file: short, providers: mockProviders(mock) }, { dir: d }),
    /key_list_file: the signed list expired at/);
  // A list changed after signing.
  const tampered = join(d, 'tampered.json');
  const j = JSON.parse(readFileSync(await signKeys(d, s, [k1]), 'utf8'));
  j.signed.sig = Buffer.alloc(64).toString('base64url');
  writeFileSync(tampered, JSON.stringify(j));
  await assert.rejects(startRelay({ key_files: [k1], key_list_file: tampered, providers: mockProviders(mock) }, { dir: d }),
    /key_list_file: the signature does not verify/);
  // A key loaded but not in the list: a warning, not a refusal.
  const r = await startRelay({ key_files: [k1, k2], key_list_file: await signKeys(d, s, [k1]),
                               providers: mockProviders(mock) }, { dir: d });
  assert.match(r.stderr(), /warning: key_list_file: kid \S+ is loaded but not in the signed list/);
  await r.stop();
});

test('SIGHUP: a list naming a key no longer loaded keeps the old keys and list; a matching one is taken', async () => {
  const d = tempDir('byok-keylist-hup-');
  const k1 = await makeKeyFile(d);
  const k2 = await makeKeyFile(d);
  const s = await signingKey(d);
  const l1 = await signKeys(d, s, [k1]);
  const r = await startRelay({ key_files: [k1], key_list_file: l1, providers: mockProviders(mock) }, { dir: d });
  const cfg = JSON.parse(readFileSync(r.configPath, 'utf8'));
  const hup = async (patch, expect) => {
    writeFileSync(r.configPath, JSON.stringify({ ...cfg, ...patch }));
    const before = r.stderr().length;
    r.kill('SIGHUP');
    for (let i = 0; i < 100 && !expect.test(r.stderr().slice(before)); i++) {
      await sleep(50);
    }
    assert.match(r.stderr().slice(before), expect);
  };
  // k1 dropped: the list names a key the relay would no longer hold.
  await hup({ key_files: [String(k2)] }, /key reload failed, keeping the current keys: key_list_file: the list names kid/);
  assert.equal(await (await fetch(r.url + '/v1/keys')).text(), readFileSync(l1, 'utf8'));
  const l2 = await signKeys(d, s, [k2, k1]);
  await hup({ key_files: [String(k2), String(k1)], key_list_file: l2 }, /keys reloaded/);
  assert.equal(await (await fetch(r.url + '/v1/keys')).text(), readFileSync(l2, 'utf8'));
  await r.stop();
});

test('docs/protocol.md §2.1 worked example: every value checks, and the relay loads the example list', async () => {
  const { createHash, createPrivateKey, createPublicKey, sign } = await import('node:crypto');
  const { sourceDir } = await import('../../tests/integration/lib/harness.mjs');
  const doc = readFileSync(join(sourceDir, 'docs', 'protocol.md'), 'utf8');
  const example = (name) => {
    const found = [...doc.matchAll(/^```([^\n]*)\n([\s\S]*?)\n```$/gm)]
      .filter((m) => m[1].split(/\s+/).includes(`example:${name}`));
    assert.equal(found.length, 1, `exactly one block labelled example:${name}`);
    return found[0][2];
  };
  const seed = Buffer.from(example('signing-seed-hex'), 'hex');
  assert.deepEqual(seed, createHash('sha256')
    .update('byok-relay docs/protocol.md worked example - SIGNING TEST KEY, never use').digest());
  const sk = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
                                format: 'der', type: 'pkcs8' });
  const pk = createPublicKey(sk).export({ format: 'der', type: 'spki' }).subarray(12);
  assert.equal(pk.toString('base64url'), example('signing-public-key'));
  const list = example('signed-list');
  assert.equal(sign(null, Buffer.from(list), sk).toString('base64url'), example('signed-list-sig'));
  const served = JSON.parse(example('signed-key-config'));
  assert.equal(Buffer.from(served.signed.list, 'base64url').toString(), list);
  assert.equal(served.signed.sig, example('signed-list-sig'));
  assert.equal(served.signed.signer, example('signing-public-key'));
  assert.deepEqual(served.keys, JSON.parse(example('hpke-key-config')).keys, 'the keys of §11.2');
  const inner = await verifyKeyList(served, parseSigningKey(example('signing-public-key')), 1800000000);
  assert.deepEqual(inner, JSON.parse(list));

  // The relay, given the example's key file and list, serves the list (while its keys are valid).
  const d = tempDir('byok-keylist-doc-');
  const b64 = (hex) => Buffer.from(hex, 'hex').toString('base64url');
  const keyPath = join(d, 'example-key.json');
  writeFileSync(keyPath, JSON.stringify({ v: 1, alg: 'x25519-sealedbox', sk: b64(example('test-secret-key-hex')),
    hpke_sk: b64(example('hpke-test-secret-key-hex')), created: 1800000000, exp: 1807776000 }), { mode: 0o600 });
  const listPath = join(d, 'example-list.json');
  writeFileSync(listPath, example('signed-key-config') + '\n');
  // sign-keys writes the same shape (its iat and exp are now and now + 30d).
  const signingPath = join(d, 'example-signing.json');
  writeFileSync(signingPath, JSON.stringify({ v: 1, alg: 'ed25519', use: 'byok-relay key list',
    pk: example('signing-public-key'), sk: seed.toString('base64url'), created: 1800000000 }), { mode: 0o600 });
  const made = JSON.parse(readFileSync(await signKeys(d, { path: signingPath }, [keyPath], '30d'), 'utf8'));
  assert.deepEqual(Object.keys(made), ['keys', 'signed']);
  assert.deepEqual(made.keys, served.keys);
  assert.equal(made.signed.signer, served.signed.signer);
  const madeInner = JSON.parse(Buffer.from(made.signed.list, 'base64url').toString());
  assert.deepEqual(Object.keys(madeInner), ['typ', 'v', 'iat', 'exp', 'keys']);
  assert.deepEqual({ ...madeInner, iat: 1800000000, exp: 1807776000 }, JSON.parse(list));
  if (Date.now() / 1000 < 1807776000) {
    const r = await startRelay({ key_files: [keyPath], key_list_file: listPath, providers: mockProviders(mock) },
      { dir: d });
    assert.equal(await (await fetch(r.url + '/v1/keys')).text(), example('signed-key-config') + '\n');
    await r.stop();
  }
});

test('in Chromium: a pinned page verifies the list with WebCrypto Ed25519 and seals with HPKE, no libsodium; a swapped list is refused', async (t) => {
  const { launchChromium, serveWebScript } = await import('./lib/browser.mjs');
  const app = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/app.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
        .end('<!doctype html><meta charset="utf-8"><title>app</title><link rel="icon" href="data:,"><p>app</p>');
      return;
    }
    serveWebScript(path, res);
  });
  await new Promise((ok) => app.listen(0, '127.0.0.1', ok));
  t.after(() => new Promise((ok) => {
    app.closeAllConnections();
    app.close(ok);
  }));
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const r = await startRelay({ key_files: [keyFile], key_list_file: listFile, allow_origins: [appOrigin],
                               providers: mockProviders(mock) }, { dir });
  t.after(() => r.stop());
  const proxy = await startListSwapProxy(r.url);
  const otherDir = tempDir('byok-keylist-other-');
  proxy.state.list = readFileSync(await signKeys(otherDir, await signingKey(otherDir), [await makeKeyFile(otherDir)]),
    'utf8');
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await browser.newPage();
  const requested = [];
  page.on('request', (q) => requested.push(q.url()));
  await page.goto(appOrigin + '/app.html');
  await mock.reset();
  const key = randomApiKey('sk-chromium-pinned-');
  const result = await page.evaluate(async ({ relayUrl, proxyUrl, key, pin }) => {
    const { sealedFetch } = await import('/web/byok-relay.js');
    const send = (base) => sealedFetch(base, () => key, { signingKey: pin })(base + '/openai/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] }),
    });
    const out = {};
    const res = await send(relayUrl);
    out.direct = { status: res.status };
    await res.text();
    try {
      await send(proxyUrl);
      out.swapped = 'sent';
    } catch (e) {
      out.swapped = e.code;
    }
    return out;
  }, { relayUrl: r.url, proxyUrl: proxy.url, key, pin: signing.pk });
  assert.equal(result.direct.status, 200);
  assert.equal(result.swapped, 'key_list_bad_signature');
  const seen = await mock.requests();
  assert.equal(seen.length, 1);
  assert.equal(seen[0].headers.authorization, `Bearer ${key}`);
  assert.deepEqual(requested.filter((u) => /libsodium/.test(u)), [], 'WebCrypto only: no libsodium file');
  assert.equal(proxy.state.sealed, 0);
});
