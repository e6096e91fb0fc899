// Idle keep-alive client connections (relay/idle_park.hpp): between two
// requests a connection is held by its worker's park, without a session.
// What must keep working across a park: the next request, pipelined
// requests, header_timeout_s for a head that stalls, idle_timeout_s, the
// per-address connection cap, the open-connections gauge and draining. And
// what the park is for: the memory an idle connection holds.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import * as h from './lib/harness.mjs';

const HEALTHZ = 'GET /healthz HTTP/1.1\r\nHost: relay.test\r\n\r\n';
// RSS is measured without ASan's quarantine (as in abuse.test.mjs).
const lean = { env: { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ?? ''}:quarantine_size_mb=0:thread_local_quarantine_size_kb=0` } };

after(async () => {
  await h.stopAll();
});

// Opens a connection and has one /healthz answered on it (kept alive).
async function servedOnce(port) {
  const c = await h.RawConnection.open(port);
  c.write(HEALTHZ);
  const res = await c.readResponse({ timeoutMs: 20000 });
  assert.equal(res.status, 200);
  return c;
}

async function waitFor(what, cond, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await h.sleep(50);
  }
}

test('2,000 idle keep-alive connections after one request each hold at most 1,536 bytes apiece', async () => {
  const relay = await h.startRelay({ threads: 1, max_connections_per_ip: 0, idle_timeout_s: 600 }, lean);
  // Warm-up: the same load once, so pools and caches that any traffic grows are in the base.
  let warm = [];
  for (let i = 0; i < 200; i += 1) warm.push(servedOnce(relay.port));
  warm = await Promise.all(warm);
  for (const c of warm) c.close();
  await h.sleep(500);
  const base = h.rssKiB(relay.pid);
  const n = 2000;
  const conns = [];
  for (let i = 0; i < n; i += 100) {
    const batch = [];
    for (let j = 0; j < 100; j += 1) batch.push(servedOnce(relay.port));
    conns.push(...(await Promise.all(batch)));
  }
  await h.sleep(500);
  const idleKiB = h.rssKiB(relay.pid);
  const perConn = ((idleKiB - base) * 1024) / n;
  console.log(`idle connections: RSS ${base} kB before, ${idleKiB} kB with ${n} idle: ${perConn.toFixed(0)} bytes each`);
  assert.equal(conns.filter((c) => c.closed).length, 0, 'all still open');
  assert.ok(perConn <= 1536, `${perConn.toFixed(0)} bytes per idle connection (bound 1,536; 2,560 before the park)`);
  for (const c of conns) c.close();
  await relay.stop();
});

test('a parked connection serves its next requests, pipelined ones too, and is closed after idle_timeout_s; the gauge follows', async () => {
  const relay = await h.startRelay({ threads: 2, idle_timeout_s: 3, metrics_listen: '127.0.0.1:0' });
  const c = await servedOnce(relay.port);
  for (let i = 0; i < 3; i += 1) {
    await h.sleep(300);  // parked meanwhile
    c.write(HEALTHZ);
    assert.equal((await c.readResponse()).status, 200, `request ${i + 2} on the connection`);
  }
  // Three requests in one write: the first two are served from the read buffer, without a park.
  c.write(HEALTHZ + HEALTHZ + HEALTHZ);
  for (let i = 0; i < 3; i += 1) assert.equal((await c.readResponse()).status, 200, `pipelined request ${i + 1}`);
  assert.equal(await h.metricValue(relay.metricsUrl, 'byok_open_connections'), 1);
  // Then silence: the park's timer closes it.
  await waitFor('the relay to close the idle connection', () => c.closed, 15000);
  assert.equal(c.buf.length, 0, 'closed without an answer');
  await waitFor('the gauge to return to 0', async () => (await h.metricValue(relay.metricsUrl, 'byok_open_connections')) === 0);
  await relay.stop();
});

test('a next request that arrives in pieces right after an answer is served whole: head in pieces, body late, a lone first byte, pipelined', async () => {
  // Right after an answer the session reads the next request's first bytes
  // itself (relay/session.cpp wait_next_request) and parses what is already
  // buffered in place; whatever is missing comes through the ordinary reads.
  const mock = await h.startMock({ tls: true });
  const relay = await h.startRelay({ threads: 1, max_connections_per_ip: 0, providers: h.mockProviders(mock) });
  const keyConfig = await h.fetchKeys(relay.url);
  const path = '/openai/v1/chat/completions';
  const request = (n) => h.sealedRequestBytes({ keyConfig, apiKey: h.randomApiKey(), path, body: JSON.stringify({ model: 'm', n }) });
  const answered = async (c, what) => {
    const res = await c.readResponse({ timeoutMs: 20000 });
    assert.equal(res.status, 200, what);
    assert.ok(JSON.parse(res.body.toString()).choices, `${what}: the provider's answer`);
  };
  const c = await h.RawConnection.open(relay.port);
  c.write(await request(0));
  await answered(c, 'first request');
  for (let i = 1; i <= 3; i += 1) {
    // Each written at once after the answer, in pieces 5 ms apart: the
    // first byte alone, the rest of the head, then the body.
    const bytes = await request(i);
    const headEnd = bytes.indexOf('\r\n\r\n') + 4;
    c.write(bytes.slice(0, 1));
    await h.sleep(5);
    c.write(bytes.slice(1, headEnd));
    await h.sleep(5);
    c.write(bytes.slice(headEnd));
    await answered(c, `request ${i + 1}, in pieces`);
  }
  // A lone first byte, then nothing for longer than the moment before a park.
  const late = await request(4);
  c.write(late.slice(0, 1));
  await h.sleep(300);
  c.write(late.slice(1));
  await answered(c, 'a request whose first byte came 300 ms before the rest');
  // Two requests in one write.
  c.write((await request(5)) + (await request(6)));
  await answered(c, 'pipelined request 1');
  await answered(c, 'pipelined request 2');
  c.close();
  await relay.stop();
});

test('a head that stalls after a park is dropped after header_timeout_s, not idle_timeout_s', async () => {
  const relay = await h.startRelay({ threads: 1, idle_timeout_s: 120, header_timeout_s: 1 });
  const c = await servedOnce(relay.port);
  await h.sleep(200);
  c.write('GET /healthz HTTP/1.1\r\nHost: rel');
  // (The socket's deadline closes it, as for a first request that stalls: slowloris in abuse.test.mjs.)
  await waitFor('the relay to drop the stalled head', () => c.closed, 60000);
  await relay.stop();
});

test('the per-address cap counts parked connections, and releases them when the client or the timer closes them', async () => {
  const relay = await h.startRelay({ threads: 2, max_connections_per_ip: 3, idle_timeout_s: 2, header_timeout_s: 5 });
  const conns = [await servedOnce(relay.port), await servedOnce(relay.port), await servedOnce(relay.port)];
  const fourth = await h.RawConnection.open(relay.port);
  fourth.write(HEALTHZ);
  assert.equal((await fourth.readResponse()).status, 429, 'a fourth connection over the cap');
  fourth.close();
  // The client closes a parked one: its place is free again.
  conns[0].close();
  let again;
  await waitFor('a connection in the freed place', async () => {
    const t = await h.RawConnection.open(relay.port);
    t.write(HEALTHZ);
    const r = await t.readResponse({ timeoutMs: 5000 });
    if (r.status === 200) {
      again = t;
      return true;
    }
    t.close();
    return false;
  });
  // Then all of them idle past idle_timeout_s: closed by the relay, places freed.
  await waitFor('the idle ones to be closed', () => conns[1].closed && conns[2].closed && again.closed, 15000);
  const fresh = [await servedOnce(relay.port), await servedOnce(relay.port), await servedOnce(relay.port)];
  for (const c of fresh) c.close();
  await relay.stop();
});

test('SIGTERM closes parked connections at once: the relay exits well before shutdown_grace_s', async () => {
  const relay = await h.startRelay({ threads: 2, idle_timeout_s: 600, shutdown_grace_s: 60 });
  const conns = [];
  for (let i = 0; i < 50; i += 1) conns.push(await servedOnce(relay.port));
  const started = Date.now();
  relay.kill('SIGTERM');
  const { code } = await h.waitExit(relay.child, 50000);
  const ms = Date.now() - started;
  assert.equal(code, 0);
  assert.ok(ms < 30000, `exited after ${ms} ms (grace 60 s: parked connections did not hold the drain)`);
  await waitFor('every parked connection closed', () => conns.every((c) => c.closed));
});
