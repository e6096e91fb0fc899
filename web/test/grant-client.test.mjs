// The grant client of byok-relay.js without a relay: requestGrant's popup
// hand-shake (with a stand-in window), the key pair it makes, and the
// Byok-Proof it signs for every call, checked with Node's own crypto (not the
// library's) by a small server that also streams an answer to the official
// openai client.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, createPublicKey, verify } from 'node:crypto';
import OpenAI from 'openai';

import { requestGrant, grantKeyPair, makeProof, RelayClientError } from '../byok-relay.js';

const servers = [];
after(() => Promise.all(servers.map((s) => new Promise((ok) => {
  s.closeAllConnections();
  s.close(ok);
}))));

// Checks a Byok-Proof against the JWK and the request the way docs/protocol.md says the relay does.
function checkProof(proof, jwk, { method, target, body }) {
  const parts = proof.split('.');
  assert.equal(parts.length, 3);
  const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
  assert.deepEqual(header, { typ: 'byok-proof+jwt', alg: 'ES256' });
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  const key = createPublicKey({ key: { ...jwk }, format: 'jwk' });
  assert.ok(verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key, dsaEncoding: 'ieee-p1363' },
    Buffer.from(parts[2], 'base64url')), 'ES256 signature');
  assert.equal(claims.htm, method);
  assert.equal(claims.htu, target);
  assert.ok(Math.abs(claims.iat - Date.now() / 1000) < 5);
  assert.ok(Buffer.from(claims.jti, 'base64url').length >= 12, 'jti has at least 96 bits');
  assert.equal(claims.body_sha256, createHash('sha256').update(body).digest('base64url'));
  assert.deepEqual(Object.keys(claims), ['htm', 'htu', 'iat', 'jti', 'body_sha256']);
  return claims;
}

// A stand-in for the browser window: open() gives a popup whose postMessage
// the test answers as the consent page would, from `pageOrigin`.
function fakeWindow(relayOrigin, answer, { pageOrigin = relayOrigin } = {}) {
  const win = new EventTarget();
  win.opened = [];
  win.open = (url, name, features) => {
    const popup = {
      closed: false,
      postMessage(msg, targetOrigin) {
        win.opened.at(-1).received.push({ msg, targetOrigin });
        setTimeout(() => win.emit(popup, pageOrigin, answer(msg)), 5);
      },
    };
    win.opened.push({ url, name, features, popup, received: [] });
    setTimeout(() => win.emit(popup, pageOrigin, { type: 'byok-grant-ready', v: 1 }), 5);
    return popup;
  };
  win.emit = (source, origin, data) => {
    const ev = new Event('message');
    Object.assign(ev, { source, origin, data });
    win.dispatchEvent(ev);
  };
  return win;
}

test('grantKeyPair: the private key cannot be exported; the JWK has only the thumbprint members', async () => {
  const { pair, jwk } = await grantKeyPair();
  assert.deepEqual(Object.keys(jwk), ['crv', 'kty', 'x', 'y']);
  assert.equal(pair.privateKey.extractable, false);
  await assert.rejects(crypto.subtle.exportKey('jwk', pair.privateKey));
  const proof = await makeProof(crypto.subtle, pair.privateKey,
    { method: 'POST', path: '/v1/x?y=1', iat: Math.floor(Date.now() / 1000),
      bodySha256: createHash('sha256').update('{}').digest('base64url') });
  checkProof(proof, jwk, { method: 'POST', target: '/v1/x?y=1', body: '{}' });
});

test('requestGrant (popup) and its fetch: the openai client streams; every call carries the grant and a fresh proof', async () => {
  const seen = [];
  let jwk = null;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      try {
        assert.equal(req.headers.authorization, 'Grant tok.en-1');
        const claims = checkProof(req.headers['byok-proof'], jwk, { method: req.method, target: req.url, body });
        seen.push({ url: req.url, jti: claims.jti });
      } catch (e) {
        res.writeHead(401, { 'content-type': 'application/json' })
          .end(JSON.stringify({ error: { type: 'relay_error', code: 'bad_proof', message: String(e.message) } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 0; i < 3; i++) {
        res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm',
          choices: [{ index: 0, delta: { content: `tok${i} ` }, finish_reason: null }] })}\n\n`);
      }
      res.end('data: [DONE]\n\n');
    });
  });
  servers.push(server);
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const relay = origin + '/relay';  // a relay behind a public path prefix
  const exp = Math.floor(Date.now() / 1000) + 1800;
  const win = fakeWindow(origin, (msg) => {
    jwk = msg.jwk;
    return { type: 'byok-grant', grant: 'tok.en-1', exp, scope: { provider: msg.provider, paths: msg.paths } };
  });
  const g = await requestGrant(relay, { provider: 'openai', paths: ['/v1/chat/completions'], models: ['gpt-4o-mini'],
                                        window: win });
  assert.equal(win.opened.length, 1);
  assert.equal(win.opened[0].url, relay + '/v1/grant');
  const [{ msg, targetOrigin }] = win.opened[0].received;
  assert.equal(targetOrigin, origin, 'the request goes to the relay origin only');
  assert.deepEqual({ ...msg, jwk: undefined }, { type: 'byok-grant-request', v: 1, provider: 'openai',
    paths: ['/v1/chat/completions'], ttl_s: 1800, jwk: undefined, models: ['gpt-4o-mini'] });
  assert.equal(g.exp, exp);
  assert.deepEqual(g.scope, { provider: 'openai', paths: ['/v1/chat/completions'] });
  assert.ok(!JSON.stringify(g).includes('tok.en-1'), 'the token is not in the object\'s JSON');

  const openai = new OpenAI({ baseURL: relay + '/openai/v1', apiKey: 'granted', fetch: g.fetch, maxRetries: 0 });
  for (let i = 0; i < 2; i++) {
    const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', stream: true,
      messages: [{ role: 'user', content: `hello ${i}` }] });
    let text = '';
    for await (const c of stream) {
      text += c.choices[0]?.delta?.content ?? '';
    }
    assert.equal(text, 'tok0 tok1 tok2 ');
  }
  const q = await g.fetch(relay + '/openai/v1/models?limit=2');
  assert.equal(q.status, 200);
  await q.text();
  assert.deepEqual(seen.map((s) => s.url), ['/relay/openai/v1/chat/completions', '/relay/openai/v1/chat/completions',
    '/relay/openai/v1/models?limit=2']);
  assert.equal(new Set(seen.map((s) => s.jti)).size, 3, 'a fresh jti every call');
  await assert.rejects(g.fetch('https://elsewhere.example/openai/v1/models'), (e) => e.code === 'foreign_url');
});

test('requestGrant ignores answers from another origin; a denial and a closed window are errors', async () => {
  const origin = 'https://relay.example';
  // Answers from an origin that is not the relay's are not taken; the window then closes.
  const wrong = fakeWindow(origin, () => ({ type: 'byok-grant', grant: 'x', exp: 1 }), { pageOrigin: 'https://evil.example' });
  const p = requestGrant(origin, { provider: 'openai', paths: ['/v1/chat/completions'], window: wrong });
  await new Promise((ok) => setTimeout(ok, 50));
  assert.equal(wrong.opened[0].received.length, 0, 'no request sent to a window that is not the relay origin');
  wrong.opened[0].popup.closed = true;
  await assert.rejects(p, (e) => e instanceof RelayClientError && e.code === 'grant_cancelled');

  const denied = fakeWindow(origin, () => ({ type: 'byok-grant-denied' }));
  await assert.rejects(requestGrant(origin, { provider: 'openai', paths: ['/v1/chat/completions'], window: denied }),
    (e) => e.code === 'grant_denied');

  const blocked = new EventTarget();
  blocked.open = () => null;
  await assert.rejects(requestGrant(origin, { provider: 'openai', paths: ['/v1/chat/completions'], window: blocked }),
    (e) => e.code === 'grant_popup_blocked');
  await assert.rejects(requestGrant(origin, { provider: 'openai', paths: [], window: blocked }), TypeError);
});

test('refresh() asks again and replaces the grant; a proof refused for its time is signed once more on the relay\'s clock', async () => {
  const tokens = [];
  let answered = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const claims = JSON.parse(Buffer.from(req.headers['byok-proof'].split('.')[1], 'base64url'));
      tokens.push({ authorization: req.headers.authorization, iat: claims.iat });
      const relayNow = Date.now() + 300_000;  // the relay's clock is 5 minutes ahead
      if (Math.abs(claims.iat - relayNow / 1000) > 60) {
        res.writeHead(401, { 'content-type': 'application/json', date: new Date(relayNow).toUTCString() })
          .end(JSON.stringify({ error: { type: 'relay_error', code: 'bad_proof', message: 'iat' } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  servers.push(server);
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const win = fakeWindow(origin, () => ({ type: 'byok-grant', grant: `g${++answered}`, exp: 2e9 + answered }));
  const g = await requestGrant(origin, { provider: 'openai', paths: ['/v1/models'], window: win });
  let res = await g.fetch(origin + '/openai/v1/models');
  assert.equal(res.status, 200);
  assert.deepEqual(tokens.map((x) => x.authorization), ['Grant g1', 'Grant g1']);
  assert.ok(tokens[1].iat - tokens[0].iat >= 290, 'the second proof is on the relay\'s clock');
  res = await g.fetch(origin + '/openai/v1/models');
  assert.equal(tokens.length, 3, 'the offset is kept: one call, no retry');
  assert.equal(g.exp, 2e9 + 1);
  assert.equal(await g.refresh(), g);
  assert.equal(win.opened.length, 2, 'the consent page opened again');
  assert.equal(g.exp, 2e9 + 2);
  await g.fetch(origin + '/openai/v1/models');
  assert.equal(tokens.at(-1).authorization, 'Grant g2');
});
