// Smoke test of the load-test harness (bench/): byok-loadgen drives the real
// relay in front of the test mock for a few seconds, closed loop and
// streaming, and must report answers and zero errors. Also checks that it
// refuses a non-loopback target and that its numbers hang together.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import * as h from './lib/harness.mjs';

const loadgenBin = process.env.BYOK_LOADGEN_BIN ?? join(h.buildDir, 'bench', 'byok-loadgen');
const run = promisify(execFile);

let mock;
let relay;

before(async () => {
  assert.ok(existsSync(loadgenBin), `byok-loadgen not built at ${loadgenBin}`);
  mock = await h.startMock({ tls: true });
  relay = await h.startRelay({ providers: h.mockProviders(mock), max_connections_per_ip: 0 });
});

after(async () => {
  await h.stopAll();
});

async function loadgen(args, timeoutMs = 60000) {
  const { stdout } = await run(loadgenBin, ['--url', relay.url, '--json', ...args], { timeout: timeoutMs });
  return JSON.parse(stdout);
}

function assertSane(r) {
  assert.equal(r.errors, 0, `errors: ${JSON.stringify({ codes: r.errors_by_code, transport: r.errors_by_transport, status: r.responses_by_status })}`);
  assert.ok(r.requests > 0, 'no requests completed');
  assert.equal(r.ok, r.requests);
  assert.ok(r.throughput_rps > 0);
  const l = r.latency_us;
  assert.ok(l.min > 0 && l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
    `latency percentiles out of order: ${JSON.stringify(l)}`);
  assert.ok(r.bytes_sent > 0 && r.bytes_received > 0);
  assert.ok(r.seal.us_per_request > 0);
}

test('closed loop, 4 connections, 3 s: answers and zero errors', async () => {
  const r = await loadgen(['--connections', '4', '--duration', '3', '--keys', '8', '--preseal', '30000',
    '--seal-threads', '2']);
  assertSane(r);
  assert.equal(r.mode, 'closed');
  assert.equal(r.responses_by_status['200'], r.completed_total);
});

test('streaming, 2 s: every stream has its 20 events, first event before last', async () => {
  const r = await loadgen(['--connections', '4', '--duration', '2', '--stream', '--preseal', '20000',
    '--seal-threads', '2']);
  assertSane(r);
  assert.ok(r.events_per_stream >= 20, `events per stream ${r.events_per_stream}`);
  assert.ok(r.first_event_us.p50 <= r.last_event_us.p50);
});

test('open loop: the scheduled rate is what was sent', async () => {
  const r = await loadgen(['--connections', '4', '--duration', '2', '--rate', '100']);
  assertSane(r);
  assert.equal(r.mode, 'open');
  assert.ok(r.requests >= 190 && r.requests <= 201, `requests ${r.requests} at 100/s for 2 s`);
});

test('refuses a non-loopback target', async () => {
  await assert.rejects(run(loadgenBin, ['--url', 'http://192.0.2.1:8080', '--duration', '1'], { timeout: 10000 }),
    (e) => e.code === 1 && /loopback/.test(e.stderr));
});
