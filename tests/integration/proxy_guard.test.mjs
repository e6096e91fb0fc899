// Open-proxy guard: whatever the request target, encoding, dot segments or
// Host header, a sealed request reaches only the configured provider (the
// mock), and there only a path under one of the provider's allowed prefixes.
// Every request carries a valid seal for exactly the target it sends, so a
// refusal is the router's doing, not the seal check's.
//
// Raw sockets (node:net): fetch and URL would normalise the very targets
// under test. A second listener stands in for "evil.example": it must never
// see a connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import * as h from './lib/harness.mjs';

const ALLOWED = ['/v1/chat/completions', '/v1/completions', '/v1/responses', '/v1/embeddings', '/v1/models',
  '/v1/messages'];

let mock;
let relay;
let keyConfig;
let evil;
let evilPort;
let evilConnections = 0;

before(async () => {
  mock = await h.startMock({ tls: true });
  evil = net.createServer((s) => { evilConnections += 1; s.destroy(); });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  evilPort = evil.address().port;
  relay = await h.startRelay({ providers: h.mockProviders(mock) });
  keyConfig = await h.fetchKeys(relay.url);
});

after(async () => {
  evil?.close();
  await h.stopAll();
});

function exchange(port, data, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const timer = setTimeout(finish, timeoutMs);
    s.on('data', (d) => chunks.push(d));
    s.on('end', finish);
    s.on('error', finish);
    s.on('close', finish);
    s.write(data);
  });
}

// One sealed request, sealed for exactly `target` (as a browser would seal the URL it sends).
async function sealedRaw({ method = 'POST', target, host, apiKey, body = '{"model":"m","messages":[]}', requestLine }) {
  const sealPath = target.startsWith('/') ? target : target.replace(/^[a-z]+:\/\/[^/]*/i, '');
  const authorization = await h.seal({ keyConfig, apiKey, method, path: sealPath, body: method === 'GET' ? '' : body });
  const line = requestLine ?? `${method} ${target} HTTP/1.1`;
  const text = method === 'GET' ? '' : body;
  return exchange(relay.port, `${line}\r\nHost: ${host ?? `127.0.0.1:${relay.port}`}\r\n` +
    `Authorization: ${authorization}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n` +
    `Connection: close\r\n\r\n${text}`);
}

const statusOf = (t) => Number((t.match(/^HTTP\/1\.1 (\d{3})/) ?? [])[1] ?? 0);

// target -> what must happen: 'refused' (4xx, never reaches the mock) or
// 'routed' (reaches the mock at an allowed path).
const E = () => `127.0.0.1:${evilPort}`;
const CASES = () => [
  ['/openai/../x', 'refused'],
  ['/openai/../anthropic/v1/messages', 'refused'],
  ['/openai/v1/../../x', 'refused'],
  ['/openai/v1/chat/completions/../../models', 'refused'],
  ['/openai/v1/chat/completions/..', 'refused'],
  ['/openai/v1/./chat/completions', 'refused'],
  ['/openai/v1/chat/completions/.', 'refused'],
  ['/openai/%2e%2e/x', 'refused'],
  ['/openai/%2E%2E/%2E%2E/x', 'refused'],
  ['/openai/v1/chat/completions/%2e%2e/%2e%2e/files', 'refused'],
  ['/openai/v1/chat/completions/.%2e/x', 'refused'],
  ['/openai/v1%2fchat%2fcompletions', 'refused'],
  ['/openai/v1/chat%2Fcompletions', 'refused'],
  ['/openai%2fv1/chat/completions', 'refused'],
  ['/openai/v1/chat/completions%2f..%2f..%2fx', 'refused'],
  ['/openai/v1/chat/completions%5c..%5cx', 'refused'],
  ['/openai/v1/chat/completions%00', 'refused'],
  ['/openai/v1/chat/completions\\..\\x', 'refused'],
  ['/openai//v1/chat/completions', 'refused'],
  ['//openai/v1/chat/completions', 'refused'],
  ['/openai/v1//chat/completions', 'refused'],
  ['/openai/v1/chat/completions//x', 'refused'],
  ['///evil.example/v1/chat/completions', 'refused'],
  ['//evil.example/openai/v1/chat/completions', 'refused'],
  ['http://evil.example/x', 'refused'],
  ['http://evil.example/openai/v1/chat/completions', 'refused'],
  [`http://${E()}/openai/v1/chat/completions`, 'refused'],
  [`https://${E()}/openai/v1/chat/completions`, 'refused'],
  ['/openai@evil.example/v1/chat/completions', 'refused'],
  [`/openai@${E()}/v1/chat/completions`, 'refused'],
  ['@evil.example/openai/v1/chat/completions', 'refused'],
  ['/evil.example/v1/chat/completions', 'refused'],
  ['/OPENAI/v1/chat/completions', 'refused'],
  ['/openai/V1/chat/completions', 'refused'],
  ['/openai/v1/files', 'refused'],
  ['/openai/v1/chat/completionsX', 'refused'],
  ['/openai', 'refused'],
  ['/openai/', 'refused'],
  ['/openai/v1/chat/completions#x', 'refused'],
  ['/openai/v1/chat/completions?x=1#frag', 'refused'],
  ['/openai/v1/chat/completions?a=b c', 'refused'],
  ['/openai/v1/chat/completions?next=\\evil', 'refused'],
  ['*', 'refused'],
  ['evil.example:443', 'refused'],
  // Legitimately routed: the mock must see exactly an allowed path.
  ['/openai/v1/chat/completions', 'routed'],
  ['/openai/v1/chat/completions?next=http://evil.example/../x', 'routed'],
  ['/openai/v1/chat/completions/%252e%252e/x', 'routed'],
  ['/openai/v1/chat/completions/a@evil.example', 'routed'],
  ['/anthropic/v1/messages', 'routed'],
];

test('no target, encoding or dot trick reaches anything but the configured provider\'s allowed paths', async () => {
  await mock.reset();
  const results = [];
  for (const [target, want] of CASES()) {
    const apiKey = h.randomApiKey('sk-guard-');
    const method = target.startsWith('/openai/v1/models') ? 'GET' : 'POST';
    const text = await sealedRaw({ method, target, apiKey });
    results.push({ target, want, status: statusOf(text), apiKey, text });
  }
  // A Host header naming another server changes nothing: the upstream host is the config's.
  const hostKey = h.randomApiKey('sk-guard-');
  const hostRes = await sealedRaw({ target: '/openai/v1/chat/completions', host: E(), apiKey: hostKey });
  results.push({ target: `Host: ${E()}`, want: 'routed', status: statusOf(hostRes), apiKey: hostKey, text: hostRes });
  // CONNECT (authority-form) and an absolute-form GET.
  const connectRes = await exchange(relay.port, `CONNECT ${E()} HTTP/1.1\r\nHost: ${E()}\r\n\r\n`);
  results.push({ target: `CONNECT ${E()}`, want: 'refused', status: statusOf(connectRes), apiKey: '', text: connectRes });

  const seen = await mock.requests();
  const seenKeys = new Map(seen.map((r) => [(r.headers.authorization ?? r.headers['x-api-key'] ?? '')
    .replace(/^Bearer /, ''), r]));
  const mockHost = new URL(mock.url).host;
  const problems = [];
  for (const r of results) {
    const upstream = r.apiKey ? seenKeys.get(r.apiKey) : undefined;
    if (r.want === 'refused') {
      if (!(r.status >= 400 && r.status < 500)) problems.push(`${r.target}: status ${r.status}, want 4xx`);
      if (upstream) problems.push(`${r.target}: reached the provider as ${upstream.target}`);
    } else {
      if (!r.status) problems.push(`${r.target}: no answer`);  // the mock may answer 404 for a path it does not serve
      if (!upstream) {
        problems.push(`${r.target}: did not reach the provider`);
        continue;
      }
      const path = upstream.target.split('?')[0];
      if (!ALLOWED.some((a) => path === a || path.startsWith(a + '/'))) problems.push(`${r.target}: upstream path ${path}`);
      if (/\/\.\.?(\/|$)|%2e|%2f|%5c|\/\//i.test(path)) problems.push(`${r.target}: upstream path ${path}`);
      if (upstream.headers.host !== mockHost) problems.push(`${r.target}: upstream Host ${upstream.headers.host}`);
    }
  }
  for (const s of seen) {
    const path = s.target.split('?')[0];
    if (!ALLOWED.some((a) => path === a || path.startsWith(a + '/'))) problems.push(`the mock saw ${s.target}`);
  }
  const refused = results.filter((r) => r.want === 'refused').length;
  console.log(`proxy guard: ${results.length} targets (${refused} must be refused), ` +
    `mock saw ${seen.length} request(s), the other host ${evilConnections} connection(s); ` +
    `statuses ${JSON.stringify(results.reduce((a, r) => ({ ...a, [r.status]: (a[r.status] ?? 0) + 1 }), {}))}`);
  assert.deepEqual(problems, []);
  assert.equal(seen.length, results.filter((r) => r.want === 'routed').length, 'exactly the routed ones reached the mock');
  assert.equal(evilConnections, 0, 'nothing ever connected to the other host');
});
