// Smoke test of the load-test harness (bench/): byok-loadgen drives the real
// relay in front of the test mock for a few seconds, closed loop and
// streaming, and must report answers and zero errors. Also checks that it
// refuses a non-loopback target and that its numbers hang together, and
// checks its live progress line (issue 17): once a second on stderr when
// stderr is a terminal or --progress is given, never with --quiet, and not
// into a pipe by default; the terminal case runs under `script` (util-linux)
// for a pseudo-terminal when it is installed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import * as h from './lib/harness.mjs';

const loadgenBin = process.env.BYOK_LOADGEN_BIN ?? join(h.buildDir, 'bench', 'byok-loadgen');
const run = promisify(execFile);
// [  2.0/3.0 s]       1234 requests      617 req/s        0 errors  p99     1.234 ms
const progressLine = /\[\s*(\d+\.\d)\/3\.0 s\]\s+(\d+) requests\s+(\d+) req\/s\s+(\d+) errors\s+p99\s+(\d+\.\d{3}) ms/g;

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

test('--seal hpke: RFC 9180 seals to the relay\'s HPKE key, headers bound, every one accepted', async () => {
  const r = await loadgen(['--connections', '2', '--duration', '2', '--seal', 'hpke', '--keys', '4', '--preseal', '20000',
    '--seal-threads', '2']);
  assertSane(r);
  assert.equal(r.seal.alg, 'hpke-x25519-sha256-aes128gcm');
  assert.equal(r.responses_by_status['200'], r.completed_total);
  const def = await loadgen(['--connections', '1', '--duration', '0.5']);
  assert.equal(def.seal.alg, 'x25519-sealedbox', 'the sealed box stays the default');
});

test('open loop: the scheduled rate is what was sent', async () => {
  const r = await loadgen(['--connections', '4', '--duration', '2', '--rate', '100']);
  assertSane(r);
  assert.equal(r.mode, 'open');
  assert.ok(r.requests >= 190 && r.requests <= 201, `requests ${r.requests} at 100/s for 2 s`);
});

test('--idle-after 1: each connection sends one request, then stays open and idle to the end', async () => {
  const r = await loadgen(['--connections', '6', '--duration', '2', '--idle-after', '1', '--keys', '4']);
  assertSane(r);
  assert.equal(r.completed_total, 6, `answers ${r.completed_total}`);
  assert.equal(r.idle_after, 1);
  assert.equal(r.idle_at_end, 6, `idle at the end ${r.idle_at_end}, closed by the server ${r.idle_closed}`);
  assert.equal(r.connects, 6);
});

test('refuses a non-loopback target', async () => {
  await assert.rejects(run(loadgenBin, ['--url', 'http://192.0.2.1:8080', '--duration', '1'], { timeout: 10000 }),
    (e) => e.code === 1 && /loopback/.test(e.stderr));
});

const progressArgs = () => ['--url', relay.url, '--connections', '2', '--duration', '3', '--keys', '4', '--preseal', '20000'];

test('--progress into a pipe: one line a second with elapsed, requests, req/s, errors, p99', async () => {
  const { stdout, stderr } = await run(loadgenBin, [...progressArgs(), '--json', '--progress'], { timeout: 60000 });
  const r = JSON.parse(stdout);
  const lines = [...stderr.matchAll(progressLine)];
  assert.ok(lines.length >= 2 && lines.length <= 4, `progress lines: ${JSON.stringify(stderr)}`);
  assert.equal(stderr.split('\n').filter((l) => l.trim()).length, lines.length, `other stderr: ${stderr}`);
  assert.ok(!stderr.includes('\r'), 'a pipe gets whole lines, not carriage returns');
  let prev = 0;
  for (const m of lines) {
    const [, elapsed, requests, rate, errors, p99] = m.map(Number);
    assert.ok(elapsed >= 0.9 && elapsed <= 3.0, `elapsed ${elapsed}`);
    assert.ok(requests > prev, `requests must grow: ${m[0]}`);
    prev = requests;
    assert.ok(rate > 0 && errors === 0 && p99 > 0, m[0]);
  }
  assert.ok(prev <= r.completed_total, `progress ${prev} > completed ${r.completed_total}`);
});

test('no progress line into a pipe by default, nor with --quiet', async () => {
  for (const extra of [[], ['--progress', '--quiet']]) {
    const { stdout, stderr } = await run(loadgenBin, [...progressArgs(), '--json', ...extra], { timeout: 60000 });
    assert.ok(JSON.parse(stdout).requests > 0);
    assert.equal(stderr, '', `stderr with ${extra.join(' ') || 'no option'}: ${stderr}`);
  }
});

function haveScript() {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('on a terminal (script(1) pseudo-terminal): the line is rewritten in place; --quiet turns it off',
  { skip: haveScript() ? false : 'script (util-linux) is not installed' }, async () => {
    const quote = (a) => `'${a.replaceAll("'", "'\\''")}'`;
    const cmd = (extra) => [loadgenBin, ...progressArgs(), ...extra].map(quote).join(' ');
    // script -e: its exit status is the command's; the pseudo-terminal's
    // output (stdout and stderr together) comes out on script's stdout.
    const tty = await run('script', ['-q', '-e', '-c', cmd([]), '/dev/null'], { timeout: 60000 });
    const shown = [...tty.stdout.matchAll(progressLine)];
    assert.ok(shown.length >= 2, `progress on a terminal: ${JSON.stringify(tty.stdout)}`);
    assert.ok(tty.stdout.includes('\r\x1b[2K['), 'the line is redrawn with CR and erase-line');
    assert.match(tty.stdout, /byok-loadgen http:\/\/127\.0\.0\.1:\d+\r?\n/, 'then the table, on its own line');
    const quiet = await run('script', ['-q', '-e', '-c', cmd(['--quiet']), '/dev/null'], { timeout: 60000 });
    assert.equal([...quiet.stdout.matchAll(progressLine)].length, 0, `--quiet on a terminal: ${JSON.stringify(quiet.stdout)}`);
    assert.match(quiet.stdout, /requests \d+ \(\d+ ok\), errors 0/);
  });
