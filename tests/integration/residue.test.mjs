// Key residue: after a few thousand sealed requests, each carrying a
// different random provider key, not one 12-byte slice of any of those keys
// may remain anywhere in the relay's writable memory; and its log (stderr)
// holds none of the keys, seals or payloads.
//
// The requests cover every way a key can pass through the relay: answered
// (JSON, SSE, Anthropic's x-api-key, GET, a body too large to go inline with
// the head, a key written with JSON \u escapes, HPKE seals made by @hpke/core),
// refused after the seal was
// opened (payload malformed, seal for another request, expired, replayed),
// refused before it was opened (not a box, unknown kid), and upstream
// failures (error status, reset mid-stream, silence until the relay's
// upstream timeout, silence until the client gives up).
//
// Memory is read through /proc/PID/mem (scripts/residue-scan.mjs); the test
// runs as root with CAP_SYS_PTRACE, which is what it takes to read a process
// that set PR_SET_DUMPABLE 0. A scan that cannot read the relay fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

import * as h from './lib/harness.mjs';

const scanner = await import(join(h.sourceDir, 'scripts', 'residue-scan.mjs'));

const CHAT = '/openai/v1/chat/completions';
const MESSAGES = '/anthropic/v1/messages';
const MODELS = '/openai/v1/models';
const CONCURRENCY = 16;
const QUIET = 16;  // refused opens at the end, each followed by a scan

// How many of each kind; about 3000 requests in all.
const PLAN = {
  ok_json: 900, ok_stream: 500, ok_anthropic: 200, ok_get: 100, ok_large: 60, ok_escaped: 60,
  bad_box: 100, bad_payload: 200, mismatch: 200, expired: 200, replay: 100, unknown_kid: 100,
  upstream_fail: 200, upstream_reset: 100, hang_abort: 50, hang_timeout: 20,
  unsealed: 100, ok_hpke: 200, ok_hpke_stream: 100, mismatch_hpke: 100,
};

let mock;
let relay;
let keyConfig;
const keys = [];       // every provider key sealed in any request
const seals = [];      // every Authorization value sent
const payloads = [];   // every sealed payload text
const canaries = [];   // a marker in every request body
const outcomes = {};   // kind -> { status: count }
const okSeals = [];    // { authorization, body, path } of answered requests, for the replays

before(async () => {
  mock = await h.startMock({ tls: true, threads: 2 });
  relay = await h.startRelay({
    providers: h.mockProviders(mock),
    threads: 2,
    upstream_timeout_s: 2,
    max_connections_per_ip: 0,
  });
  keyConfig = await h.fetchKeys(relay.url);
});

after(async () => {
  for (const sock of quietSockets) sock.destroy();
  await h.stopAll();
});

function newKey() {
  const k = 'sk-rsd-' + randomBytes(24).toString('hex');  // 7 + 48 characters
  keys.push(k);
  return k;
}

function newBody(extra = {}, pad = 0) {
  const canary = 'canary-' + randomBytes(12).toString('hex');
  canaries.push(canary);
  const body = { model: 'gpt-test', messages: [{ role: 'user', content: canary + 'x'.repeat(pad) }], ...extra };
  return JSON.stringify(body);
}

function payloadText({ key, iat = Math.floor(Date.now() / 1000), method, path, body }) {
  return JSON.stringify({ key, iat, method, path, body_sha256: h.bodySha256(body) });
}

async function sealPayload(payload, keySet = keyConfig, hpke = false) {
  payloads.push(payload);
  const auth = hpke ? await h.hpkeSeal({ keyConfig: keySet, payload }) : await h.seal({ keyConfig: keySet, payload });
  seals.push(auth);
  return auth;
}

async function send(path, { method = 'POST', body, authorization, signal }) {
  return fetch(new URL(path, relay.url), {
    method, signal,
    headers: { 'content-type': 'application/json', authorization },
    body: method === 'GET' ? undefined : body,
  });
}

// Builds and sends one request of `kind`; returns the status seen (or a word for a broken exchange).
async function one(kind) {
  const method = kind === 'ok_get' ? 'GET' : 'POST';
  let path = kind === 'ok_anthropic' ? MESSAGES : kind === 'ok_get' ? MODELS : CHAT;
  let body = '';
  if (method === 'POST') {
    if (kind === 'ok_stream' || kind === 'ok_hpke_stream') body = newBody({ stream: true, mock: { events: 5 } });
    else if (kind === 'ok_anthropic') body = newBody({ max_tokens: 16, stream: keys.length % 2 === 0 });
    else if (kind === 'ok_large') body = newBody({}, 40 * 1024);
    else if (kind === 'upstream_fail') body = newBody({ mock: { mode: 'fail' } });
    else if (kind === 'upstream_reset') body = newBody({ stream: true, mock: { mode: 'reset', events: 5 } });
    else if (kind === 'hang_abort' || kind === 'hang_timeout') body = newBody({ mock: { mode: 'hang' } });
    else body = newBody();
  }

  if (kind === 'replay') {
    const orig = okSeals[Math.floor(Math.random() * okSeals.length)];
    const r = await send(orig.path, { body: orig.body, authorization: orig.authorization });
    await r.text();
    return r.status;
  }
  if (kind === 'unsealed') {
    // A client that forgot to seal: its key arrives in clear (as an OpenAI
    // or an Anthropic client would send it) and is refused; the relay must
    // not keep it either.
    const key = newKey();
    const headers = { 'content-type': 'application/json' };
    if (keys.length % 2) headers.authorization = `Bearer ${key}`;
    else headers['x-api-key'] = key;
    const r = await fetch(new URL(path, relay.url), { method: 'POST', headers, body });
    await r.text();
    return r.status;
  }
  if (kind === 'bad_box') {
    const auth = `Sealed ${keyConfig.keys[0].kid}.${randomBytes(150).toString('base64url')}`;
    seals.push(auth);
    const r = await send(path, { body, authorization: auth });
    await r.text();
    return r.status;
  }

  const key = newKey();
  const facts = { key, method, path, body };
  let payload;
  let keySet = keyConfig;
  switch (kind) {
  case 'ok_escaped': {
    // The key's characters as \u escapes: the reader decodes them in place.
    const esc = [...key].map((c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')).join('');
    payload = payloadText(facts).replace(JSON.stringify(key), `"${esc}"`);
    break;
  }
  case 'bad_payload': {
    // Opens, holds the key, but is not an acceptable payload.
    const good = payloadText(facts);
    const variants = [
      good.slice(0, -1),                                      // truncated
      good.replace(/,"body_sha256":"[^"]*"/, ''),             // field missing
      good.replace('{', `{"key":"${key}",`),                  // key twice
      good + 'x',                                             // trailing garbage
      good.replace(`"iat":`, '"iat":"').replace(/,"method"/, '","method"'),  // iat a string
      good.replace(key, key + '\\u0001'),                      // a control character in the key
    ];
    payload = variants[keys.length % variants.length];
    break;
  }
  case 'mismatch':
    payload = payloadText({ ...facts, path: keys.length % 2 ? '/openai/v1/embeddings' : path,
      body: keys.length % 2 ? body : body + ' ' });
    break;
  case 'ok_hpke':
  case 'ok_hpke_stream':
    // HPKE (RFC 9180) seals by @hpke/core: the payload must bind the headers.
    payload = payloadText(facts).replace(/}$/, `,"headers_sha256":"${h.jsonHeadersSha256()}"}`);
    break;
  case 'mismatch_hpke':
    // Opens (the key is in the relay's memory), but binds another content type.
    payload = payloadText(facts).replace(/}$/, `,"headers_sha256":"${h.bodySha256('content-type:text/plain\n')}"}`);
    break;
  case 'expired':
    payload = payloadText({ ...facts, iat: Math.floor(Date.now() / 1000) - 3600 });
    break;
  case 'unknown_kid': {
    const s = await h.sodium();
    const kp = s.crypto_box_keypair();
    keySet = { keys: [{ kid: 'zzzzzzzzzzzz', pk: Buffer.from(kp.publicKey).toString('base64url') }] };
    payload = payloadText(facts);
    break;
  }
  default:
    payload = payloadText(facts);
  }
  const authorization = await sealPayload(payload, keySet, kind.includes('hpke'));

  if (kind === 'hang_abort') {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(), 300);
    try {
      const r = await send(path, { method, body, authorization, signal: ac.signal });
      await r.text();
      return r.status;
    } catch {
      return 'aborted';
    } finally {
      clearTimeout(t);
    }
  }
  const r = await send(path, { method, body, authorization });
  let text;
  try {
    text = await r.text();
  } catch {
    return `${r.status}-broken`;
  }
  if (kind === 'ok_stream' || kind === 'ok_hpke_stream') assert.match(text, /tok4/, 'the whole stream arrived');
  if (r.status === 200 && kind === 'ok_json') okSeals.push({ authorization, body, path });
  return r.status;
}

// One sealed request on a connection of its own (raw socket), left open
// afterwards: the session then waits for the next request, which touches
// little stack, so what the refused open left on the stack stays there.
const quietSockets = [];
async function quietOne(kind) {
  const key = newKey();
  const body = newBody();
  const payload = kind === 'mismatch'
    ? payloadText({ key, method: 'POST', path: CHAT, body: body + ' ' })
    : payloadText({ key, method: 'POST', path: CHAT, body }).slice(0, -1);
  const authorization = await sealPayload(payload);
  const text = await new Promise((resolve) => {
    const sock = net.connect(relay.port, '127.0.0.1');
    quietSockets.push(sock);
    let got = '';
    const timer = setTimeout(() => resolve(got), 5000);
    sock.on('data', (d) => {
      got += d.toString('latin1');
      const end = got.indexOf('\r\n\r\n');
      const len = Number((got.match(/\r\nContent-Length: (\d+)/i) ?? [])[1] ?? -1);
      if (end >= 0 && len >= 0 && got.length >= end + 4 + len) {
        clearTimeout(timer);
        resolve(got);
      }
    });
    sock.on('error', () => resolve(got));
    // The body in a packet of its own, as browsers and fetch send it: the
    // session then waits for it, and checks the seal on a fresh stack.
    sock.write(`POST ${CHAT} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n` +
      `Authorization: ${authorization}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`);
    setTimeout(() => sock.write(body), 20);
  });
  return Number((text.match(/^HTTP\/1\.1 (\d{3})/) ?? [])[1] ?? 0);
}

const EXPECTED = {
  ok_json: [200], ok_stream: [200], ok_anthropic: [200], ok_get: [200], ok_large: [200], ok_escaped: [200],
  bad_box: [401], bad_payload: [401], mismatch: [401], expired: [401], replay: [401], unknown_kid: [401],
  upstream_fail: [500], upstream_reset: ['200-broken'], hang_abort: ['aborted'], hang_timeout: [504],
  unsealed: [401], mismatch_last: [401], bad_payload_last: [401],
  ok_hpke: [200], ok_hpke_stream: [200], mismatch_hpke: [401],
};

test('a few thousand sealed requests of every kind leave no slice of any key in the relay\'s memory', async () => {
  // ok_json first (the replays need answered seals), then everything shuffled.
  const jobs = [];
  for (const [kind, n] of Object.entries(PLAN)) for (let i = 0; i < n; ++i) jobs.push(kind);
  const first = jobs.filter((k) => k === 'ok_json').slice(0, 200);
  const rest = jobs.filter((k, i) => !(k === 'ok_json' && i < 200));
  for (let i = rest.length - 1; i > 0; --i) {
    const j = Math.floor(Math.random() * (i + 1));
    [rest[i], rest[j]] = [rest[j], rest[i]];
  }
  const queue = [...first, ...rest];
  const total = queue.length + QUIET;
  const started = Date.now();
  const workers = Array.from({ length: CONCURRENCY }, async () => {
    while (queue.length) {
      const kind = queue.shift();
      const status = await one(kind);
      const o = (outcomes[kind] ??= {});
      o[status] = (o[status] ?? 0) + 1;
    }
  });
  await Promise.all(workers);
  const elapsed = Date.now() - started;

  for (const [kind, seen] of Object.entries(outcomes)) {
    for (const status of Object.keys(seen)) {
      assert.ok(EXPECTED[kind].map(String).includes(status),
        `${kind}: unexpected outcome ${status} (all: ${JSON.stringify(seen)})`);
    }
  }
  // The relay has finished with every exchange (the aborted and timed-out
  // ones included), and fetch has closed its idle keep-alive connections
  // (undici's keep-alive timeout is 4 s), so nothing else runs in the relay
  // while the quiet ending below happens and the memory is read.
  await h.sleep(5000);
  // A quiet ending: the last thing a worker thread did is open a seal and
  // refuse it, each on a new connection so both threads get some; the
  // memory is read after each one (what an open leaves on a thread's stack
  // survives only until the thread next runs deep code).
  const quietHits = [];
  for (let i = 0; i < QUIET; ++i) {
    const kind = i % 2 ? 'mismatch' : 'bad_payload';
    const status = await quietOne(kind);
    const o = (outcomes[`${kind}_last`] ??= {});
    o[status] = (o[status] ?? 0) + 1;
    assert.equal(status, 401, kind);
    await h.sleep(50);
    const index = scanner.buildIndex(keys);
    quietHits.push(...scanner.scanProcess(relay.pid, null, { index }).hits);
  }
  assert.equal(quietHits.length, 0,
    `key residue after a refused open:\n${quietHits.slice(0, 50).map(scanner.formatHit).join('\n')}`);
  await h.sleep(300);
  const status = readFileSync(`/proc/${relay.pid}/status`, 'utf8');
  const rss = status.match(/VmRSS:\s+(\d+)/)[1];

  // Controls scanned together with the keys: the relay's own kid (a plain
  // string in its heap) and the body canaries (request bodies are not
  // secret and not wiped, and they pass through the same buffers as the
  // key: the client read buffer, the request string, the upstream head).
  const kid = keyConfig.keys[0].kid;
  const result = scanner.scanProcess(relay.pid, [...keys, kid, ...canaries]);
  const keyHits = result.hits.filter((x) => x.secret < keys.length);
  const kidHits = result.hits.filter((x) => x.secret === keys.length);
  const canaryHits = result.hits.filter((x) => x.secret > keys.length);
  const summary = `residue: ${total} requests (${keys.length} distinct keys) in ${elapsed} ms; ` +
    `scanned ${result.maps} maps, ${(result.bytes / 1048576).toFixed(1)} MiB of the relay (RSS ${rss} kB), ` +
    `${result.unreadable} bytes unreadable [${result.unreadableMaps.join('; ')}], ` +
    `skipped [${result.skipped.join('; ')}]; key hits: ${keyHits.length}; ` +
    `controls: kid ${kidHits.length}, body canaries ${canaryHits.length}; outcomes ${JSON.stringify(outcomes)}`;
  console.log(summary);
  // The scanner must demonstrably see the relay's heap and request buffers.
  assert.ok(kidHits.length > 0, 'control: the relay key\'s kid is found in the relay\'s memory');
  assert.ok(canaryHits.length > 0, 'control: leftovers of request bodies are found in the relay\'s memory');
  assert.ok(result.bytes > 4 * 1048576, 'control: megabytes of memory were read');
  assert.equal(keyHits.length, 0,
    `key residue found in the relay's memory:\n${keyHits.slice(0, 50).map(scanner.formatHit).join('\n')}`);
});

test('the relay\'s log holds none of the keys, seals, payloads or bodies', () => {
  assert.ok(keys.length > 1000, 'the residue run happened');
  const log = relay.stderr();
  assert.match(log, /ip=127\.0\.0\.1 method=POST provider=openai/, 'the access log was written');
  // The run measured a hardened process (not dumpable, no core files).
  // (A sanitizer build skips PR_SET_DUMPABLE on purpose and says so.)
  const notApplied = log.split('\n').filter((l) => /hardening not applied: (PR_SET_DUMPABLE|RLIMIT_CORE)/.test(l) &&
    !/skipped in a sanitizer build/.test(l));
  assert.deepEqual(notApplied, []);
  const index = scanner.buildIndex(keys);
  const buf = Buffer.from(log, 'latin1');
  const found = [];
  scanner.scanBuffer(buf, buf.length, index, (at, k) => found.push(`key #${k} at log offset ${at}`));
  assert.deepEqual(found, [], 'no 12-byte slice of a key in the log');
  for (const s of seals) {
    const box = s.slice(s.indexOf('.') + 1);
    assert.ok(!log.includes(box.slice(0, 32)), 'no seal in the log');
  }
  for (const p of payloads) assert.ok(!log.includes(p.slice(0, 40)), 'no payload in the log');
  for (const c of canaries) assert.ok(!log.includes(c), 'no request body in the log');
});

// The busy run above mostly overwrites what an open leaves on a thread's
// stack before the scan sees it. Here a fresh relay with one worker thread
// serves one request at a time on one kept-alive connection (refused after
// the open: mismatched body, malformed payload; answered: JSON, SSE; a key
// sent unsealed, refused), and
// its memory is read after each: the worker's stack and buffers are then
// exactly as that request left them.
test('one request at a time on an idle relay: nothing of the key on the worker\'s stack or heap', async () => {
  const quiet = await h.startRelay({ providers: h.mockProviders(mock), threads: 1 });
  const kc = await h.fetchKeys(quiet.url);
  const used = [];
  const hits = [];
  const kinds = ['mismatch', 'bad_payload', 'ok_json', 'ok_stream', 'unsealed'];
  for (let i = 0; i < 20; ++i) {
    const kind = kinds[i % kinds.length];
    const key = newKey();
    used.push(key);
    const body = kind === 'ok_stream' ? newBody({ stream: true, mock: { events: 3 } }) : newBody();
    const payload = kind === 'mismatch' ? payloadText({ key, method: 'POST', path: CHAT, body: body + ' ' })
      : kind === 'bad_payload' ? payloadText({ key, method: 'POST', path: CHAT, body }).slice(0, -1)
        : payloadText({ key, method: 'POST', path: CHAT, body });
    const authorization = kind === 'unsealed' ? `Bearer ${key}` : await sealPayload(payload, kc);
    const r = await fetch(new URL(CHAT, quiet.url), {
      method: 'POST', body, headers: { 'content-type': 'application/json', authorization },
    });
    assert.equal(r.status, kind.startsWith('ok') ? 200 : 401, kind);
    await r.text();
    await h.sleep(100);
    hits.push(...scanner.scanProcess(quiet.pid, used).hits);
  }
  console.log(`idle relay: 20 requests one at a time (8 refused after the open, 8 answered, 4 unsealed), ` +
    `${hits.length} key hit(s) over 20 scans`);
  assert.equal(hits.length, 0, `key residue:\n${hits.map(scanner.formatHit).join('\n')}`);
  await quiet.stop();
});
