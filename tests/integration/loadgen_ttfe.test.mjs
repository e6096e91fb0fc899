// byok-loadgen --stream times each SSE event when it arrives (issue 17).
// The mock sends its first event at once and the other events a second
// later, the whole answer far smaller than the load generator's read buffer:
// the time to the first event must be that of the first event, not of the
// end of the answer. Directly against the mock and through the relay. Also
// checks --hist-out's HdrHistogram percentile-distribution files.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import * as h from './lib/harness.mjs';

const loadgenBin = process.env.BYOK_LOADGEN_BIN ?? join(h.buildDir, 'bench', 'byok-loadgen');
const run = promisify(execFile);

let mock;
let relay;
let dir;
let bodyFile;

before(async () => {
  assert.ok(existsSync(loadgenBin), `byok-loadgen not built at ${loadgenBin}`);
  mock = await h.startMock({ tls: true, threads: 2 });
  relay = await h.startRelay({ providers: h.mockProviders(mock), max_connections_per_ip: 0 });
  dir = h.tempDir('byok-loadgen-ttfe-');
  bodyFile = join(dir, 'body.json');
  writeFileSync(bodyFile, JSON.stringify({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'First at once, the rest later.' }], stream: true,
    mock: { events: 5, pause_after: 1, pause_ms: 1000 },
  }));
});

after(async () => {
  await h.stopAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function loadgen(url, extra) {
  const { stdout } = await run(loadgenBin, ['--url', url, '--json', '--stream', '--body', bodyFile,
    '--connections', '3', '--duration', '3.5', '--keys', '4', ...extra], { timeout: 60000 });
  return JSON.parse(stdout);
}

function assertTimedPerEvent(r, where) {
  const why = JSON.stringify({ first: r.first_event_us, last: r.last_event_us, gap: r.event_gap_us });
  assert.equal(r.errors, 0, `${where}: errors ${JSON.stringify(r.errors_by_code)} ${JSON.stringify(r.errors_by_transport)}`);
  assert.ok(r.requests >= 3, `${where}: only ${r.requests} streams measured`);
  // 5 content events and data: [DONE]
  assert.equal(r.events_per_stream, 6, `${where}: events per stream ${r.events_per_stream}`);
  assert.ok(r.first_event_us.p50 < 100000, `${where}: first event p50 must be < 100 ms: ${why}`);
  assert.ok(r.last_event_us.p50 >= 1000000, `${where}: last event p50 must be >= 1 s: ${why}`);
  assert.ok(r.last_event_us.p50 <= r.latency_us.p50 + 1, `${where}: last event after the answer ended: ${why}`);
  // One gap of a second per stream (after the first event), the others about 0.
  assert.ok(r.event_gap_us.count === 5 * r.requests, `${where}: gaps ${r.event_gap_us.count} for ${r.requests} streams`);
  assert.ok(r.event_gap_us.max >= 1000000 && r.event_gap_us.p50 < 100000, `${where}: ${why}`);
}

test('directly against the mock: first event at once, last event a second later', async () => {
  const r = await loadgen(mock.url, ['--ca', mock.caFile, '--keys-url', `${relay.url}/v1/keys`]);
  assertTimedPerEvent(r, 'direct');
});

test('through the relay: first event at once, last event a second later; --hist-out files', async () => {
  const base = join(dir, 'relay.hgrm');
  const r = await loadgen(relay.url, ['--hist-out', base]);
  assertTimedPerEvent(r, 'relay');
  assert.equal(r.hist_out, base);
  const files = { latency: base, first: join(dir, 'relay.first-event.hgrm'), last: join(dir, 'relay.last-event.hgrm'),
    gap: join(dir, 'relay.event-gap.hgrm') };
  const json = { latency: r.latency_us, first: r.first_event_us, last: r.last_event_us, gap: r.event_gap_us };
  for (const [k, f] of Object.entries(files)) {
    assert.ok(existsSync(f), `missing ${f}`);
    checkHgrm(readFileSync(f, 'utf8'), json[k], f);
  }
});

// HdrHistogram's outputPercentileDistribution text, values in ms.
function checkHgrm(text, summary, name) {
  const lines = text.split('\n');
  assert.match(lines[0], /^\s+Value\s+Percentile\s+TotalCount\s+1\/\(1-Percentile\)$/, name);
  assert.equal(lines[1], '', name);
  const rows = [];
  let i = 2;
  for (; i < lines.length && !lines[i].startsWith('#'); i++) {
    const f = lines[i].trim().split(/\s+/).map(Number);
    assert.ok(f.length === 4 || f.length === 3, `${name}: row ${lines[i]}`);
    assert.ok(f.every(Number.isFinite), `${name}: row ${lines[i]}`);
    rows.push(f);
  }
  assert.ok(rows.length >= 2, `${name}: ${rows.length} rows`);
  for (let k = 1; k < rows.length; k++) {
    assert.ok(rows[k][0] >= rows[k - 1][0] && rows[k][1] >= rows[k - 1][1] && rows[k][2] >= rows[k - 1][2],
      `${name}: rows out of order at ${k}: ${rows[k - 1]} / ${rows[k]}`);
  }
  for (const f of rows.slice(0, -1)) {
    assert.equal(f.length, 4, name);
    assert.ok(Math.abs(f[3] - 1 / (1 - f[1])) <= 0.01 * f[3], `${name}: 1/(1-p) column ${f}`);
  }
  const last = rows.at(-1);
  assert.equal(last.length, 3, `${name}: the 100 % row has no 1/(1-p)`);
  assert.equal(last[1], 1, name);
  assert.equal(last[2], summary.count, `${name}: total count`);
  assert.ok(Math.abs(last[0] - summary.max / 1000) <= 0.0015, `${name}: max ${last[0]} ms vs ${summary.max} µs`);
  const footer = lines.slice(i).join('\n');
  assert.match(footer, /^#\[Mean {4}= +[\d.]+, StdDeviation {3}= +[\d.]+\]$/m, name);
  const max = footer.match(/^#\[Max {5}= +([\d.]+), Total count {4}= +(\d+)\]$/m);
  assert.ok(max, `${name}: footer ${footer}`);
  assert.equal(Number(max[2]), summary.count, name);
  assert.match(footer, /^#\[Buckets = +\d+, SubBuckets {5}= +\d+\]$/m, name);
  // The median row agrees with the JSON report's p50 (both are bucket tops, in ms vs µs).
  const p50 = rows.find((f) => f[1] >= 0.5);
  assert.ok(Math.abs(p50[0] - summary.p50 / 1000) <= Math.max(0.0015, 0.002 * p50[0]),
    `${name}: p50 ${p50[0]} ms vs ${summary.p50} µs`);
}
