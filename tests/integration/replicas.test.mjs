// Replicas that share a Redis replay store (issue 15), all on loopback:
//
//   byok-loadgen / client --HTTPS--> nginx (deploy/nginx, round robin) --> relay 1, 2, 3 --> mock
//                                                                         (one key file)
//                                                                            \--> redis-server
//
// A seal accepted by one replica is refused by the others; one replica
// SIGKILLed and restarted under load forwards nothing twice; Redis stopped
// under load: "refuse" answers 503 and forwards nothing unconfirmed, "local"
// serves and counts; Redis back: the relays reconnect by themselves; a
// replica restarted without Redis refuses a seal made before its start.
// The mock counts every (key, body) pair it receives (pairs_repeated).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { existsSync, rmSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import * as h from './lib/harness.mjs';
import { appKey, mintBody, proof } from './lib/grant_client.mjs';
import { nginxBin, freePort, makeCert, startNginx, request, parseMetrics, metricSum } from './nginx/nginx.mjs';

const redisBin = process.env.BYOK_REDIS_BIN ?? '/usr/bin/redis-server';
const loadgenBin = process.env.BYOK_LOADGEN_BIN ?? join(h.buildDir, 'bench', 'byok-loadgen');
const CHAT = '/openai/v1/chat/completions';
const THREADS = 2;

let dir;
let tls;
let mock;
let redis;
let redisPort;
let keyFile;
const relays = [];  // by replica index; replaced when restarted
const ports = [];
let nginx;

// ---- redis-server: its own port, its own directory, nothing on disk ------------------------

async function startRedis() {
  const child = spawn(redisBin, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', join(dir, 'redis'), '--daemonize', 'no', '--protected-mode', 'yes'],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`redis-server not ready:\n${out}`)), 10000);
    const on = (c) => {
      out += c;
      if (/Ready to accept connections/.test(out)) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`redis-server exited ${code}:\n${out}`)));
  });
  return child;
}

async function stopRedis() {
  if (!redis || redis.exitCode !== null || redis.signalCode !== null) return;
  const exited = new Promise((r) => redis.once('exit', r));
  redis.kill('SIGKILL');  // no persistence to save; gone at once, as in a crash
  await exited;
}

// ---- relays ----------------------------------------------------------------------------------

function relayConfig(i, { onError = 'refuse', store = true } = {}) {
  return {
    listen: `127.0.0.1:${ports[i]}`,
    threads: THREADS,
    providers: h.mockProviders(mock),
    key_files: [String(keyFile)],
    trusted_proxies: ['127.0.0.1'],
    metrics_listen: '127.0.0.1:0',
    max_connections_per_ip: 0,
    ...(store ? { replay_store: { redis: `redis://127.0.0.1:${redisPort}/0`, timeout_ms: 200, on_error: onError } } : {}),
  };
}

async function startReplica(i, opts) {
  const r = await h.startRelay(relayConfig(i, opts), { dir: join(dir, `relay-${i}`) });
  for (let n = 0; n < 100 && !r.metricsUrl; n++) await h.sleep(20);
  relays[i] = r;
  return r;
}

async function metricsOf(r) {
  const res = await fetch(r.metricsUrl);
  return parseMetrics(await res.text());
}

// Every worker of `r` connected to Redis.
async function waitConnected(r, timeoutMs = 8000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const m = await metricsOf(r);
    if (metricSum(m, 'byok_replay_store_connected') === THREADS) return;
    if (Date.now() > until) throw new Error(`relay ${r.url} not connected to Redis:\n${r.stderr()}`);
    await h.sleep(50);
  }
}

// ---- requests --------------------------------------------------------------------------------

// A sealed request straight to one replica (not through nginx), with its seal.
async function direct(r, { authorization, apiKey = h.randomApiKey(), body, iat } = {}) {
  const text = body ?? JSON.stringify({ model: 'mock-1', messages: [{ role: 'user', content: apiKey }] });
  const auth = authorization ?? await h.seal({ keyConfig: await h.fetchKeys(r.url), apiKey, path: CHAT, body: text, iat });
  const res = await fetch(new URL(CHAT, r.url), {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: auth }, body: text,
  });
  const json = await res.json();
  return { status: res.status, code: json?.error?.code, authorization: auth, body: text, headers: res.headers };
}

async function viaNginx(authorization, body) {
  const res = await request(nginx.origin + CHAT, {
    method: 'POST', ca: tls.ca, body,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization },
  });
  return { status: res.status, code: res.status === 200 ? undefined : JSON.parse(res.body)?.error?.code, upstream: res };
}

const run = promisify(execFile);
// Steady open-loop load through nginx, fresh seals (the pool seals at most
// `ahead` requests in advance), every request its own (key, body) pair.
function loadgen(seconds, rate = 150) {
  return run(loadgenBin, ['--url', nginx.origin, '--ca', join(dir, 'tls-cert.pem'), '--json', '--quiet',
    '--duration', String(seconds), '--rate', String(rate), '--connections', '8', '--keys', '100000',
    '--preseal', '60', '--timeout', '10'], { timeout: (seconds + 30) * 1000 }).then(({ stdout }) => JSON.parse(stdout));
}

const mockStats = () => mock.stats();

// ---- setup -----------------------------------------------------------------------------------

before(async () => {
  assert.ok(existsSync(redisBin), `${redisBin} is missing: scripts/install-deps.sh --test installs redis-server`);
  assert.ok(existsSync(nginxBin), `${nginxBin} is missing: scripts/install-deps.sh --test installs nginx`);
  assert.ok(existsSync(loadgenBin), `byok-loadgen not built at ${loadgenBin}`);
  dir = h.tempDir('byok-replicas-');
  mkdirSync(join(dir, 'redis'));
  tls = makeCert(dir);
  redisPort = await freePort();
  redis = await startRedis();
  mock = await h.startMock({ tls: true, threads: 2 });
  keyFile = await h.makeKeyFile(dir);
  for (let i = 0; i < 3; i++) {
    ports.push(await freePort());
    mkdirSync(join(dir, `relay-${i}`));
  }
  await Promise.all([0, 1, 2].map((i) => startReplica(i)));
  await Promise.all(relays.map((r) => waitConnected(r)));
  const [httpsPort, httpPort] = [await freePort(), await freePort()];
  nginx = await startNginx({
    sourceDir: h.sourceDir, prefix: join(dir, 'nginx'), site: 'byok-relay.conf', balance: 'round-robin',
    upstreams: ports.map((p) => `127.0.0.1:${p}`),
    cert: tls.cert, key: tls.key, ca: tls.ca, httpsPort, httpPort,
    // The load comes from one client address: lift the per-client request
    // rate (10 r/s at the edge) for this test only; everything else as shipped.
    patch: (conf) => {
      const f = join(conf, 'snippets/byok-relay-upstream.conf');
      writeFileSync(f, readFileSync(f, 'utf8').replace('rate=10r/s', 'rate=100000r/s'));
    },
  });
});

after(async () => {
  await Promise.allSettled([nginx?.stop()]);
  await stopRedis();
  await h.stopAll();
  if (dir && !process.env.BYOK_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
});

// ---- the checks ------------------------------------------------------------------------------

test('a seal accepted by one replica is refused by each of the others, directly and round robin', async () => {
  const first = await direct(relays[0]);
  assert.equal(first.status, 200);
  for (const r of [relays[1], relays[2]]) {
    const again = await direct(r, { authorization: first.authorization, body: first.body });
    assert.equal(again.status, 401, `replica ${r.url} accepted a seal replica 0 had accepted`);
    assert.equal(again.code, 'seal_replayed');
  }
  // Through nginx, round robin: one fresh seal sent six times. nginx's two
  // workers each go round the three replicas, so the copies reach at least two.
  const apiKey = h.randomApiKey();
  const body = JSON.stringify({ model: 'mock-1', messages: [{ role: 'user', content: apiKey }] });
  const authorization = await h.seal({ keyConfig: await h.fetchKeys(relays[0].url), apiKey, path: CHAT, body });
  const answers = [];
  for (let i = 0; i < 6; i++) answers.push(await viaNginx(authorization, body));
  assert.deepEqual(answers.map((a) => a.status).sort(), [200, 401, 401, 401, 401, 401]);
  assert.ok(answers.filter((a) => a.status === 401).every((a) => a.code === 'seal_replayed'));
  await h.sleep(200);  // nginx writes its access line after the answer
  const served = new Set(nginx.accessLog().trim().split('\n').slice(-6).map((l) => l.match(/upstream=(\S+)/)[1]));
  assert.ok(served.size >= 2, `round robin sent the copies to ${[...served]}`);
  assert.equal((await mockStats()).pairs_repeated, 0);
});

test('a grant proof accepted by one replica is refused by the others; so is the seal that minted the grant', async () => {
  const ORIGIN = 'http://app.test';
  const app = await appKey();
  const mint = { apiKey: h.randomApiKey('sk-grant-'), path: '/v1/grants', body: mintBody(app.jwk, { origin: ORIGIN }) };
  const mintSeal = await h.seal({ keyConfig: await h.fetchKeys(relays[0].url), ...mint });
  const send = (r, path, headers, body) => fetch(new URL(path, r.url), {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body,
  });
  const minted = await send(relays[0], '/v1/grants', { authorization: mintSeal }, mint.body);
  assert.equal(minted.status, 201, await minted.clone().text());
  const { grant } = await minted.json();
  for (const r of [relays[1], relays[2]]) {
    const again = await send(r, '/v1/grants', { authorization: mintSeal }, mint.body);
    assert.equal(again.status, 401, `replica ${r.url} minted a second grant from one seal`);
    assert.equal((await again.json()).error.code, 'seal_replayed');
  }

  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'once' }] });
  const headers = { authorization: `Grant ${grant}`, origin: ORIGIN,
    'byok-proof': await proof(app.privateKey, { htu: CHAT, body }) };
  const before = (await mockStats()).requests;
  const first = await send(relays[1], CHAT, headers, body);
  assert.equal(first.status, 200, await first.clone().text());
  await first.text();
  for (const r of [relays[0], relays[2]]) {
    const again = await send(r, CHAT, headers, body);
    assert.equal(again.status, 401, `replica ${r.url} accepted a proof replica 1 had accepted`);
    assert.equal((await again.json()).error.code, 'proof_replayed');
  }
  assert.equal((await mockStats()).requests, before + 1, 'the provider saw the granted request once');
});

test('one replica SIGKILLed and restarted under load: nothing forwarded twice, failures only in flight on it', async () => {
  await mock.reset();
  const load = loadgen(8);
  await h.sleep(2500);
  const victim = relays[1];
  // Seals the victim accepted just before it dies: in the failover they are
  // new to every replica's own cache, but not to the store.
  const accepted = [];
  for (let i = 0; i < 3; i++) {
    const a = await direct(victim);
    assert.equal(a.status, 200);
    accepted.push(a);
  }
  const before = await metricsOf(victim);
  const inFlight = metricSum(before, 'byok_in_flight_requests');
  victim.kill('SIGKILL');
  await h.waitExit(victim.child);
  const restartAt = Date.now();
  const back = await startReplica(1);
  // Serves again within 2 s of being started, with Redis behind it.
  let served;
  while (Date.now() - restartAt < 2000) {
    served = await direct(back).catch(() => undefined);
    if (served?.status === 200) break;
    await h.sleep(50);
  }
  assert.equal(served?.status, 200, `restarted replica did not serve within 2 s:\n${back.stderr()}`);
  for (const a of accepted) {
    for (let i = 0; i < 2; i++) {
      const again = await viaNginx(a.authorization, a.body);
      assert.equal(again.status, 401, 'a seal the killed replica had accepted was accepted again');
      assert.ok(['seal_replayed', 'seal_expired'].includes(again.code), again.code);
    }
  }
  const r = await load;
  const stats = await mockStats();
  assert.equal(stats.pairs_repeated, 0, 'a (key, body) pair reached the provider twice');
  const failed = r.requests - (r.responses_by_status['200'] ?? 0);
  // nginx resends nothing it wrote to the dead replica (POST is not idempotent),
  // so what fails is what that replica held: at most one request per loadgen
  // connection, and only as nginx's 502.
  assert.ok(failed <= 8, `${failed} failures: ${JSON.stringify(r.responses_by_status)} ${JSON.stringify(r.errors_by_transport)} (in flight on the victim before the kill: ${inFlight})`);
  for (const status of Object.keys(r.responses_by_status)) {
    assert.ok(status === '200' || status === '502', `unexpected status ${status}: ${JSON.stringify(r.responses_by_status)}`);
  }
  assert.ok(r.requests > 500, `load too thin to mean anything: ${r.requests}`);
  // Every answer was forwarded exactly once (+4: the direct requests); of the
  // failed requests, the killed replica may or may not have forwarded each.
  const ok = r.responses_by_status['200'] ?? 0;
  assert.ok(stats.pairs_distinct >= ok + 4 && stats.pairs_distinct <= ok + 4 + failed + r.unfinished_at_end,
    `mock saw ${stats.pairs_distinct} pairs for ${ok} answers, ${failed} failures, ${r.unfinished_at_end} unfinished`);
});

async function redisOutage(onError) {
  await mock.reset();
  const counter = onError === 'refuse' ? 'byok_replay_store_unconfirmed_refused_total' : 'byok_replay_store_unconfirmed_served_total';
  const before = await Promise.all(relays.map(metricsOf));
  const load = loadgen(5, 100);
  await h.sleep(1500);
  await stopRedis();
  await h.sleep(2000);
  redis = await startRedis();
  const r = await load;
  await Promise.all(relays.map((x) => waitConnected(x)));  // reconnected without a restart
  const after_ = await Promise.all(relays.map(metricsOf));
  const delta = after_.reduce((s, m, i) => s + metricSum(m, counter) - metricSum(before[i], counter), 0);
  const stats = await mockStats();
  assert.equal(stats.pairs_repeated, 0);
  const ok = r.responses_by_status['200'] ?? 0;
  // What reached the provider is what was answered 200, plus at most the
  // requests still in flight when the load generator stopped (long after
  // Redis was back): nothing that got a 503 was forwarded.
  assert.ok(stats.pairs_distinct >= ok && stats.pairs_distinct <= ok + r.unfinished_at_end,
    `mock saw ${stats.pairs_distinct}, clients got ${ok} answers, ${r.unfinished_at_end} unfinished`);
  // And fresh seals go through every replica again, confirmed.
  for (const x of relays) assert.equal((await direct(x)).status, 200);
  return { r, delta };
}

test('Redis stopped under load, on_error "refuse": 503 with Retry-After, never forwarded; reconnects', async () => {
  const { r, delta } = await redisOutage('refuse');
  assert.ok((r.responses_by_status['503'] ?? 0) > 0, `no 503 while Redis was down: ${JSON.stringify(r.responses_by_status)}`);
  assert.ok(delta > 0, 'refusals counted in /metrics');
  for (const status of Object.keys(r.responses_by_status)) {
    assert.ok(status === '200' || status === '503', `unexpected status ${status}`);
  }
  await stopRedis();
  const refused = await direct(relays[0]);
  assert.equal(refused.status, 503);
  assert.equal(refused.code, 'overloaded');
  assert.ok(refused.headers.get('retry-after'), 'Retry-After on the 503');
  redis = await startRedis();
  await Promise.all(relays.map((x) => waitConnected(x)));
});

test('Redis stopped under load, on_error "local": served and counted; reconnects', async () => {
  for (let i = 0; i < 3; i++) {
    await relays[i].stop();
    await startReplica(i, { onError: 'local' });
  }
  await Promise.all(relays.map((x) => waitConnected(x)));
  const { r, delta } = await redisOutage('local');
  assert.equal(r.responses_by_status['200'], r.requests, `not all served: ${JSON.stringify(r.responses_by_status)}`);
  assert.ok(delta > 0, 'requests served without the store are counted in /metrics');
});

test('a replica restarted without Redis refuses a seal made before its start, accepts a fresh one', async () => {
  const keyConfig = await h.fetchKeys(relays[2].url);
  const apiKey = h.randomApiKey();
  const body = JSON.stringify({ model: 'mock-1', messages: [{ role: 'user', content: apiKey }] });
  const early = await h.seal({ keyConfig, apiKey, path: CHAT, body });
  await h.sleep(2100);  // the relay's start second is then at least 2 s after the seal's iat
  await relays[2].stop();
  const bare = await startReplica(2, { store: false });
  const old = await direct(bare, { authorization: early, body });
  assert.equal(old.status, 401);
  assert.equal(old.code, 'seal_expired');
  assert.ok(old.headers.get('date'), 'a Date to correct the client clock from');
  assert.equal((await direct(bare)).status, 200);
});

test('rediss://: the store\'s certificate is verified against the configured CA; a password from a file', async () => {
  const tlsPort = await freePort();
  mkdirSync(join(dir, 'relay-tls'));
  const other = makeCert(join(dir, 'relay-tls'));  // a CA that did not sign the store's certificate
  writeFileSync(join(dir, 'redis-password'), 's3cret-from-a-file\n', { mode: 0o600 });
  const child = spawn(redisBin, ['--port', '0', '--tls-port', String(tlsPort), '--tls-cert-file', tls.cert,
    '--tls-key-file', tls.key, '--tls-auth-clients', 'no', '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', join(dir, 'redis'), '--requirepass', 's3cret-from-a-file'], { stdio: 'ignore' });
  try {
    await h.sleep(300);
    const store = (ca) => ({ replay_store: { redis: `rediss://localhost:${tlsPort}/0`, ca_file: ca, password_file: join(dir, 'redis-password') } });
    const good = await h.startRelay({ ...relayConfig(0, { store: false }), listen: '127.0.0.1:0', ...store(tls.cert) },
      { dir: join(dir, 'relay-tls') });
    for (let n = 0; n < 100 && !good.metricsUrl; n++) await h.sleep(20);
    await waitConnected(good);
    assert.equal((await direct(good)).status, 200);
    await good.stop();
    const bad = await h.startRelay({ ...relayConfig(0, { store: false }), listen: '127.0.0.1:0', ...store(other.cert) },
      { dir: join(dir, 'relay-tls') });
    const refused = await direct(bad);
    assert.equal(refused.status, 503, 'a store whose certificate does not verify is not trusted');
    for (let n = 0; n < 100 && !/replay store: cannot reach rediss:/.test(bad.stderr()); n++) await h.sleep(20);
    assert.match(bad.stderr(), /replay store: cannot reach rediss:.*certificate verify failed/);
    await bad.stop();
  } finally {
    child.kill('SIGKILL');
  }
});
