// Admission against an attacker, through the real relay binary: what a
// request may hold before it has earned it. Connections that hold unfinished
// bodies under real seals, bodies that fill memory and stall, 100,000 client
// addresses, chunked trailers, and a flood of accepted seals aimed at the
// replay cache. Raw loopback sockets from many source addresses (127.0.0.0/8
// is all on lo); everything is started and stopped here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash } from 'node:crypto';

import * as h from './lib/harness.mjs';

const CHAT = '/openai/v1/chat/completions';
const MiB = 1024 * 1024;
// The relay runs without ASan's quarantine where RSS is measured (as in abuse.test.mjs).
const lean = { env: { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ?? ''}:quarantine_size_mb=0:thread_local_quarantine_size_kb=0` } };

let mock;

before(async () => {
  mock = await h.startMock({ tls: false, threads: 2 });
});

after(h.stopAll);

function statusOf(text) {
  const m = text.match(/^HTTP\/1\.1 (\d{3}) /);
  return m ? Number(m[1]) : 0;
}

function errorCode(text) {
  try {
    return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).error.code;
  } catch {
    return undefined;
  }
}

// A connection that writes `bytes` and then holds on, recording what the
// relay answers and when it closes. `onWritten` fires when every byte was
// handed to the kernel.
function hold(port, localAddress, bytes) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    const held = { sock: s, text: '', closed: false, closedAt: 0, written: false, writtenAt: 0, openedAt: 0, answeredAt: 0 };
    s.on('data', (d) => {
      held.answeredAt ||= Date.now();
      if (held.text.length < 4096) held.text += d.toString('latin1');
    });
    s.on('close', () => { held.closed = true; held.closedAt = Date.now(); });
    s.on('error', (e) => {
      if (!held.openedAt) {
        reject(e.code === 'EMFILE'
          ? new Error(`out of file descriptors (ulimit -n is too low for this test): ${e.message}`)
          : e);
      }
    });
    s.on('connect', () => {
      held.openedAt = Date.now();
      const parts = Array.isArray(bytes) ? bytes : [bytes];
      parts.forEach((p, i) => s.write(p, i === parts.length - 1 ? (err) => {
        if (!err) {
          held.written = true;
          held.writtenAt = Date.now();
        }
      } : undefined));
      resolve(held);
    });
  });
}

// Runs `fn(i)` for i in [0, n) with at most `conc` at once.
async function pool(n, conc, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(conc, n) }, async () => {
    while (next < n) await fn(next++);
  }));
}

const SIX = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7'];

function sealedHead(authorization, length) {
  return `POST ${CHAT} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\n` +
    `Authorization: ${authorization}\r\nContent-Length: ${length}\r\n\r\n`;
}

async function legitimate(relay, keyConfig, n = 0) {
  const res = await h.sealedRequest(relay.url, {
    apiKey: h.randomApiKey('sk-admission-ok-'), path: CHAT, body: { model: 'm', n }, keyConfig,
  });
  const text = await res.text();
  return { status: res.status, code: res.status === 200 ? undefined : JSON.parse(text).error?.code };
}

test('a. 1,200 connections holding unfinished bodies under valid seals take no in-flight slot: a legitimate request gets 200',
  { timeout: 90000 }, async (t) => {
    // Defaults: max_in_flight 1024, 256 connections per address, body_timeout_s 30.
    const relay = await h.startRelay({ providers: h.mockProviders(mock), metrics_listen: '127.0.0.1:0' });
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    // A real seal for exactly this request (method, path, this body), a fresh
    // one per connection: nothing a header precheck can look at (kid, base64url,
    // length, replay) tells it from a legitimate slow upload, and it would
    // even open. A seal made for another body would pass a precheck just as
    // well but fail once opened; this one leaves the relay no early way out.
    const body = JSON.stringify({ model: 'm', pad: '' }).padEnd(100, ' ');
    assert.equal(Buffer.byteLength(body), 100);
    const N = 1200;
    const heads = [];
    for (let i = 0; i < N; i++) {
      const authorization = await h.seal({ keyConfig, apiKey: h.randomApiKey('sk-stall-'), path: CHAT, body });
      heads.push(sealedHead(authorization, 100) + body[0]);
    }
    const conns = [];
    t.after(() => { for (const c of conns) c.sock.destroy(); });
    const t0 = Date.now();
    await pool(N, 100, async (i) => { conns.push(await hold(relay.port, SIX[i % SIX.length], heads[i])); });
    // Until the relay has read every head (or answered the connection).
    let open = 0;
    for (let i = 0; i < 30; i++) {
      open = await h.metricValue(relay.metricsUrl, 'byok_open_connections');
      if (open + conns.filter((c) => c.closed || c.text !== '').length >= N) break;
      await h.sleep(100);
    }
    await h.sleep(200);
    const heldMs = Date.now() - t0;
    const inFlight = await h.metricValue(relay.metricsUrl, 'byok_in_flight_requests');

    const res = await legitimate(relay, keyConfig);
    const stillHeld = conns.filter((c) => !c.closed && c.text === '').length;
    const answered = {};
    for (const c of conns.filter((x) => x.text !== '')) {
      const k = `${statusOf(c.text)} ${errorCode(c.text)}`;
      answered[k] = (answered[k] ?? 0) + 1;
    }
    console.log(`slots: ${N} stalled bodies sent in ${heldMs} ms; byok_open_connections ${open}, ` +
      `byok_in_flight_requests ${inFlight}; legitimate request: ${JSON.stringify(res)}; ` +
      `${stillHeld} stalled connections still held then; answered: ${JSON.stringify(answered)}`);
    assert.deepEqual(res, { status: 200, code: undefined }, 'the legitimate request is served');
    assert.deepEqual(answered, {}, 'no stalled connection was answered (none was refused for want of a slot)');
    assert.equal(stillHeld, N, 'every stalled connection was still held when the legitimate request went');
  });

test('a2. a bad seal with a large announced body gets its 401 before a byte of the body is sent',
  { timeout: 30000 }, async (t) => {
    const relay = await h.startRelay({ providers: h.mockProviders(mock) });
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    const kid = keyConfig.keys[0].kid;
    const body = JSON.stringify({ model: 'm' });
    const valid = () => h.seal({ keyConfig, apiKey: h.randomApiKey('sk-precheck-'), path: CHAT, body });
    // A seal accepted once, to be replayed.
    const used = await valid();
    const first = await fetch(new URL(CHAT, relay.url), { method: 'POST', body, headers: { authorization: used } });
    assert.equal(first.status, 200);
    await first.arrayBuffer();
    const box = (await valid()).split('.')[1];
    const cases = {
      'no Authorization': [undefined, 'missing_seal'],
      'a bearer key': ['Bearer sk-plain', 'missing_seal'],
      'the scheme in lower case': [`sealed ${kid}.${box}`, 'missing_seal'],
      'an unknown kid': [`Sealed AAAAAAAAAAAA.${box}`, 'unknown_kid'],
      'base64 with padding': [`Sealed ${kid}.${box}==`, 'bad_seal'],
      'base64 with + and /': [`Sealed ${kid}.${Buffer.from(box, 'base64url').toString('base64').replace(/=+$/, '')}+/`, 'bad_seal'],
      'a box too short to be one': [`Sealed ${kid}.${Buffer.alloc(40, 7).toString('base64url')}`, 'bad_seal'],
      'a box too long to be one': [`Sealed ${kid}.${Buffer.alloc(5000, 7).toString('base64url')}`, 'bad_seal'],
      'a replayed seal': [used, 'seal_replayed'],
    };
    const results = await Promise.all(Object.entries(cases).map(async ([name, [authorization]]) => {
      const c = await h.RawConnection.open(relay.port);
      const t0 = Date.now();
      try {
        c.write(`POST ${CHAT} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\n` +
          `${authorization ? `Authorization: ${authorization}\r\n` : ''}Content-Length: 8000000\r\n\r\n`);
        const r = await c.readResponse({ timeoutMs: 3000 });
        return [name, `${r.status} ${JSON.parse(r.body.toString()).error?.code}`, Date.now() - t0];
      } catch (e) {
        return [name, e.timedOut ? 'no answer in 3 s' : e.message.slice(0, 100), Date.now() - t0];
      } finally {
        c.close();
      }
    }));
    console.log(`precheck: ${results.map(([n, r, ms]) => `${n}: ${r} (${ms} ms)`).join('; ')}`);
    assert.deepEqual(Object.fromEntries(results.map(([n, r]) => [n, r])),
      Object.fromEntries(Object.entries(cases).map(([n, [, code]]) => [n, `401 ${code}`])));
  });

test('b. 600 connections stalling after 6 MB of an announced 8 MB body: RSS grows at most max_pending_body_bytes + 64 MiB, others are served, the stalled are dropped by the minimum rate',
  { timeout: 120000 }, async (t) => {
    // The default max_pending_body_bytes (256 MiB): the one a deployment
    // runs with, and far below the 3.6 GB these bodies would otherwise hold.
    // A short rate window so the minimum-rate rule acts within seconds.
    const BUDGET = 268435456;
    const WINDOW_S = 2;
    const relay = await h.startRelay({
      providers: h.mockProviders(mock), metrics_listen: '127.0.0.1:0', body_rate_window_s: WINDOW_S,
    }, lean);
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    for (let i = 0; i < 5; i++) assert.equal((await legitimate(relay, keyConfig, i)).status, 200);
    await h.sleep(300);
    const baseKiB = h.rssKiB(relay.pid);

    const ANNOUNCED = 8000000;
    const SENT = 6 * 1000 * 1000;
    const full = Buffer.alloc(ANNOUNCED, 0x61);
    const bodySha256 = createHash('sha256').update(full).digest('base64url');
    const part = full.subarray(0, SENT);  // one buffer, shared by every connection's write
    const N = 600;
    const heads = [];
    for (let i = 0; i < N; i++) {
      // Real seals for the whole 8 MB body (its hash computed once).
      const payload = JSON.stringify({
        key: h.randomApiKey('sk-fat-'), iat: Math.floor(Date.now() / 1000), method: 'POST', path: CHAT, body_sha256: bodySha256,
      });
      heads.push(sealedHead(await h.seal({ keyConfig, payload }), ANNOUNCED));
    }
    const conns = [];
    t.after(() => { for (const c of conns) c.sock.destroy(); });
    // A refused connection may see its 503 or only a close: the relay may
    // close while the client is still sending, and the reset that follows can
    // destroy the answer on the client's side before it is read (seen with
    // the relay of before issue 11 too, which lingers: 48 of 599 503s).
    const bound = BUDGET / 1024 + 64 * 1024;  // KiB
    let peak = baseKiB;
    let over = false;
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, h.rssKiB(relay.pid));
        if (peak - baseKiB > bound && !over) {
          over = true;  // stop at once: an unbounded relay would take gigabytes
          for (const c of conns) c.sock.destroy();
        }
      } catch { /* the relay is gone; asserted below */ }
    }, 50);
    t.after(() => clearInterval(sampler));

    // Legitimate requests meanwhile, four a second, each noting how full the budget was as it went.
    const legit = [];
    let stopLegit = false;
    const legitLoop = (async () => {
      for (let i = 0; !stopLegit; i++) {
        const pendingThen = await h.metricValue(relay.metricsUrl, 'byok_pending_body_bytes');
        const r = await legitimate(relay, keyConfig, 100 + i).catch((e) => ({ status: 0, code: e.message }));
        legit.push({ ...r, pendingThen });
        await h.sleep(250);
      }
    })();

    const t0 = Date.now();
    await pool(N, 100, async (i) => {
      if (!over) conns.push(await hold(relay.port, SIX[i % SIX.length], [heads[i], part]));
    });
    const openedMs = Date.now() - t0;
    // Every connection ends within a bound: refused at once (503), or
    // dropped by the minimum rate a few windows after it stalled (408 or a
    // close). 4 windows after the last one opened, plus slack.
    const deadline = Date.now() + (4 * WINDOW_S + 8) * 1000;
    while (!over && conns.some((c) => !c.closed) && Date.now() < deadline) await h.sleep(100);
    stopLegit = true;
    await legitLoop;
    clearInterval(sampler);
    // A client sees its connection closed before the relay's session has
    // unwound and given its body lease back (under ASan, CI once read 7
    // leases still held right after the last close): wait a moment for it.
    const pending = await h.metricWhen(relay.metricsUrl, 'byok_pending_body_bytes', (v) => v === 0, 5000);

    const kinds = {};
    let stalledThenDropped = 0;
    const bad = [];
    for (const c of conns) {
      const s = statusOf(c.text);
      const k = c.closed ? `${s || 'closed'}${s ? ' ' + errorCode(c.text) : ''}` : 'still open';
      kinds[k] = (kinds[k] ?? 0) + 1;
      if (s === 503 && !(errorCode(c.text) === 'overloaded' && /\r\nRetry-After: \d+\r\n/i.test(c.text))) {
        bad.push(`a 503 without code overloaded and Retry-After: ${JSON.stringify(c.text.slice(0, 200))}`);
      }
      // Refused on its announced length, not after its bytes filled the budget.
      if (s === 503 && c.answeredAt - c.openedAt > 3000) bad.push(`a 503 ${c.answeredAt - c.openedAt} ms after connecting`);
      if (![0, 408, 503].includes(s)) bad.push(`answered ${s}: ${JSON.stringify(c.text.slice(0, 120))}`);
      if (c.written && c.closed && (s === 408 || s === 0)) ++stalledThenDropped;
    }
    const legitKinds = {};
    for (const r of legit) legitKinds[`${r.status}${r.code ? ' ' + r.code : ''}`] = (legitKinds[`${r.status}${r.code ? ' ' + r.code : ''}`] ?? 0) + 1;
    console.log(`body memory: ${conns.length} connections opened in ${openedMs} ms; relay RSS ${baseKiB} kB before, ` +
      `peak ${peak} kB (+${Math.round((peak - baseKiB) / 1024)} MiB, bound ${bound / 1024} MiB)${over ? ' -- stopped early' : ''}; ` +
      `outcomes ${JSON.stringify(kinds)}; ${stalledThenDropped} sent their 6 MB then were dropped; ` +
      `legitimate meanwhile ${JSON.stringify(legitKinds)}; byok_pending_body_bytes after: ${pending}`);
    assert.ok(!over && peak - baseKiB <= bound,
      `RSS grew by ${Math.round((peak - baseKiB) / 1024)} MiB (bound ${bound / 1024} MiB)`);
    assert.equal(conns.length, N);
    assert.deepEqual(legitKinds, { 200: legit.length }, 'every legitimate request meanwhile got 200');
    const whileFull = legit.filter((r) => r.pendingThen >= BUDGET / 2).length;
    assert.ok(whileFull >= 1, `a legitimate request went while the budget was at least half held (${whileFull}; ` +
      `byok_pending_body_bytes seen: ${legit.map((r) => r.pendingThen).join(' ')})`);
    assert.deepEqual(bad, []);
    assert.equal(kinds['still open'] ?? 0, 0, 'every stalled connection was dropped');
    assert.ok(stalledThenDropped >= 1, 'some bodies were admitted, stalled, and were dropped by the minimum rate');
    assert.equal(pending, 0, 'byok_pending_body_bytes is back to 0');
  });

test('b2. the body budget: a Content-Length that does not fit is refused at once, a chunked body as it grows; what fits is served',
  { timeout: 30000 }, async (t) => {
    const BUDGET = 1048576;
    const relay = await h.startRelay({
      providers: h.mockProviders(mock), metrics_listen: '127.0.0.1:0', max_pending_body_bytes: BUDGET,
    });
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    const sealFor = (body) => h.seal({ keyConfig, apiKey: h.randomApiKey('sk-budget-'), path: CHAT, body });
    const open = async () => {
      const c = await h.RawConnection.open(relay.port);
      t.after(() => c.close());
      return c;
    };
    const answer = async (c) => {
      const r = await c.readResponse({ timeoutMs: 3000 });
      return `${r.status} ${r.status === 200 ? '' : JSON.parse(r.body.toString()).error?.code}`.trim() +
        (r.status === 503 ? ` Retry-After ${r.headers['retry-after']?.[0]}` : '');
    };
    // A holds most of the budget: 1,000,000 bytes announced, 10 sent.
    // A JSON body of exactly n bytes.
    const bodyOf = (n, ch) => JSON.stringify({ model: 'm', pad: ch.repeat(n - JSON.stringify({ model: 'm', pad: '' }).length) });
    const bigBody = bodyOf(1000000, 'a');
    assert.equal(bigBody.length, 1000000);
    const a = await open();
    a.write(sealedHead(await sealFor(bigBody), bigBody.length) + bigBody.slice(0, 10));
    await h.sleep(300);
    const held = await h.metricValue(relay.metricsUrl, 'byok_pending_body_bytes');

    // B announces more than is left: 503 at once, without sending a byte of body.
    const midBody = bodyOf(100000, 'b');
    const b = await open();
    const tb = Date.now();
    b.write(sealedHead(await sealFor(midBody), midBody.length));
    const bAnswer = await answer(b).catch((e) => e.message.slice(0, 80));
    const bMs = Date.now() - tb;

    // C is chunked: 30,000 bytes fit, 30,000 more do not.
    const chunkedBody = bodyOf(60000, 'c');
    const c = await open();
    c.write(`POST ${CHAT} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\n` +
      `Authorization: ${await sealFor(chunkedBody)}\r\nTransfer-Encoding: chunked\r\n\r\n` +
      `7530\r\n${chunkedBody.slice(0, 30000)}\r\n`);
    await h.sleep(300);
    c.write(`7530\r\n${chunkedBody.slice(30000)}\r\n0\r\n\r\n`);
    const cAnswer = await answer(c).catch((e) => e.message.slice(0, 80));

    // A small body still fits.
    const small = await legitimate(relay, keyConfig);

    // Once A leaves, its share comes back: B's body is served.
    a.close();
    const after = await h.metricWhen(relay.metricsUrl, 'byok_pending_body_bytes', (v) => v === 0, 2000);
    const e = await open();
    e.write(sealedHead(await sealFor(midBody), midBody.length) + midBody);
    const eAnswer = await answer(e).catch((err) => err.message.slice(0, 80));

    console.log(`budget ${BUDGET}: held ${held} while A waits; B ${bAnswer} after ${bMs} ms; chunked C ${cAnswer}; ` +
      `small ${JSON.stringify(small)}; after A left ${after}, the same body as B: ${eAnswer}`);
    assert.ok(held >= 1000000 && held <= BUDGET, `byok_pending_body_bytes ${held} while 1,000,000 bytes are announced`);
    assert.match(bAnswer, /^503 overloaded Retry-After \d+$/);
    assert.ok(bMs < 1000, `refused at once (${bMs} ms), with no body sent`);
    assert.match(cAnswer, /^503 overloaded Retry-After \d+$/, 'a chunked body is refused when its growth does not fit');
    assert.deepEqual(small, { status: 200, code: undefined }, 'a small body fits in what is left');
    assert.equal(after, 0, 'the budget is given back');
    assert.equal(eAnswer, '200');
  });

test('b3. the minimum body rate: a body trickling below it gets 408 within a few windows; a slow one above it is served',
  { timeout: 40000 }, async (t) => {
    const WINDOW_S = 2;
    const relay = await h.startRelay({
      providers: h.mockProviders(mock), body_rate_window_s: WINDOW_S, min_body_bytes_per_s: 1024,
    });
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    const body = JSON.stringify({ model: 'm', pad: 'p'.repeat(20000) });
    // Sends `body` at `perSecond` bytes a second, in four steps a second, until done or answered.
    const trickle = async (perSecond) => {
      const c = await h.RawConnection.open(relay.port);
      t.after(() => c.close());
      const t0 = Date.now();
      c.write(sealedHead(await h.seal({ keyConfig, apiKey: h.randomApiKey('sk-rate-'), path: CHAT, body }), body.length));
      let sent = 0;
      while (sent < body.length && !c.closed && c.buf.length === 0 && Date.now() - t0 < 20000) {
        const n = Math.min(Math.ceil(perSecond / 4), body.length - sent);
        c.write(body.slice(sent, sent + n));
        sent += n;
        await h.sleep(250);
      }
      try {
        const r = await c.readResponse({ timeoutMs: 20000 - (Date.now() - t0) });
        return { status: r.status, code: r.status === 200 ? undefined : JSON.parse(r.body.toString()).error?.code, sent, ms: Date.now() - t0 };
      } catch (e) {
        return { status: 0, code: e.timedOut ? 'no answer' : 'closed', sent, ms: Date.now() - t0 };
      }
    };
    // 300 B/s is below 1024 B/s; 2,600 B/s is above it, and takes about 8 s for 20 KB.
    const [slow, steady] = await Promise.all([trickle(300), trickle(2600)]);
    console.log(`minimum rate (${WINDOW_S} s windows, 1024 B/s): 300 B/s -> ${JSON.stringify(slow)}; 2600 B/s -> ${JSON.stringify(steady)}`);
    assert.ok([408, 0].includes(slow.status) && slow.code !== 'no answer', `the trickle was dropped: ${JSON.stringify(slow)}`);
    if (slow.status === 408) assert.equal(slow.code, 'request_timeout');
    assert.ok(slow.ms <= (3 * WINDOW_S + 2) * 1000, `within three windows (${slow.ms} ms)`);
    assert.deepEqual([steady.status, steady.code], [200, undefined], 'a slow upload above the minimum rate is served');
  });

// 127.a.b.c for the i-th connection, away from 127.0.0.x that other tests use.
function addressOf(i, first = 16) {
  return `127.${first + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}

// One short connection from `localAddress`: GET /healthz, read until the relay closes.
function oneShort(port, localAddress) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    let text = '';
    const timer = setTimeout(() => { s.destroy(); resolve('timeout'); }, 10000);
    s.on('connect', () => s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    s.on('data', (d) => { text += d.toString('latin1'); });
    s.on('error', (e) => { clearTimeout(timer); resolve(e.code ?? 'error'); });
    s.on('close', () => { clearTimeout(timer); resolve(String(statusOf(text))); });
  });
}

// About 60 s on a loaded 2-core machine; 160 s for the ASan build.
test('c. 100,000 connections from distinct addresses: the address table empties again and RSS returns within 5 %',
  { timeout: 420000 }, async (t) => {
    // Rate limit off (the default); the per-address connection cap (default 256) is what keeps an entry.
    const relay = await h.startRelay({ providers: h.mockProviders(mock), metrics_listen: '127.0.0.1:0' }, lean);
    t.after(() => relay.stop('SIGKILL'));
    const run = async (n, first, conc) => {
      const statuses = {};
      await pool(n, conc, async (i) => {
        const s = await oneShort(relay.port, addressOf(i + 1, first));
        statuses[s] = (statuses[s] ?? 0) + 1;
      });
      return statuses;
    };
    const settled = async () => {
      // Until every connection is closed on the relay's side too.
      await h.metricWhen(relay.metricsUrl, 'byok_open_connections', (v) => v === 0, 5000);
      await h.sleep(500);
    };
    // The baseline is taken after a warm-up of 20,000 connections from their
    // own addresses at twice the concurrency of the run (400 against 200):
    // by then the allocator's arenas of both worker threads have grown to
    // more sessions at once than the run will hold, and whatever the relay
    // sets up lazily is set up. Growth after that is what the 100,000
    // addresses leave behind. (Measured on the relay of before issue 11 with
    // the per-address table switched off: after a warm-up of 5,000 at the
    // run's own concurrency, the allocator's settling alone came to 6.8 %;
    // after 20,000 at the same concurrency, to 1.5-5.1 %.)
    const warm = await run(20000, 250, 400);
    await settled();
    const baseKiB = h.rssKiB(relay.pid);
    const baseEntries = await h.metricValue(relay.metricsUrl, 'byok_address_table_entries');
    const t0 = Date.now();
    const statuses = await run(100000, 16, 200);
    const ms = Date.now() - t0;
    await settled();
    const entries = await h.metricWhen(relay.metricsUrl, 'byok_address_table_entries',
      (v) => v !== undefined && v <= 8, 3000);
    const afterKiB = h.rssKiB(relay.pid);
    console.log(`address table: warm-up ${JSON.stringify(warm)}; 100000 connections in ${ms} ms ${JSON.stringify(statuses)}; ` +
      `RSS ${baseKiB} kB after the warm-up, ${afterKiB} kB after (${((afterKiB / baseKiB - 1) * 100).toFixed(1)} %); ` +
      `byok_address_table_entries ${baseEntries} after the warm-up, ${entries} after`);
    const problems = [];
    if (statuses['200'] !== 100000) problems.push(`not every connection was served: ${JSON.stringify(statuses)}`);
    if (entries === undefined) problems.push('/metrics has no byok_address_table_entries');
    else if (entries > 8) problems.push(`byok_address_table_entries is ${entries}, not back to a few`);
    if (afterKiB > baseKiB * 1.05) {
      problems.push(`RSS ${afterKiB} kB is ${((afterKiB / baseKiB - 1) * 100).toFixed(1)} % above the ${baseKiB} kB baseline`);
    }
    assert.deepEqual(problems, []);
  });

test('d. a chunked request with trailer fields gets 400 bad_request and never reaches the provider',
  { timeout: 30000 }, async (t) => {
    const relay = await h.startRelay({ providers: h.mockProviders(mock) });
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    await mock.reset();
    const chunked = (text) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
    const send = async ({ trailer, sealIn = 'header', n }) => {
      const body = JSON.stringify({ model: 'm', trailer_case: n });
      const authorization = await h.seal({ keyConfig, apiKey: h.randomApiKey('sk-trailer-'), path: CHAT, body });
      const head = `POST ${CHAT} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\n` +
        `${sealIn === 'header' ? `Authorization: ${authorization}\r\n` : ''}Transfer-Encoding: chunked\r\n\r\n`;
      const trailers = (trailer ?? '') + (sealIn === 'trailer' ? `Authorization: ${authorization}\r\n` : '');
      const c = await h.RawConnection.open(relay.port);
      try {
        c.write(head + chunked(body.slice(0, 10)) + chunked(body.slice(10)) + `0\r\n${trailers}\r\n`);
        const r = await c.readResponse({ timeoutMs: 5000 });
        return { status: r.status, code: r.status === 200 ? undefined : JSON.parse(r.body.toString()).error?.code, body };
      } finally {
        c.close();
      }
    };
    // Without a trailer a chunked body is fine: what is refused is the trailer.
    const plain = await send({ n: 0 });
    assert.deepEqual([plain.status, plain.code], [200, undefined], 'a chunked body without trailers is served');
    const cases = {
      'a harmless trailer field after a seal in the head': { trailer: 'X-Checksum: 0123\r\n', n: 1 },
      'the seal itself in the trailer': { sealIn: 'trailer', n: 2 },
      'a trailer that would be forwarded upstream': { trailer: 'OpenAI-Organization: org-smuggled\r\n', n: 3 },
    };
    const results = {};
    const bodies = [];
    for (const [name, c] of Object.entries(cases)) {
      const r = await send(c);
      results[name] = `${r.status} ${r.code}`;
      bodies.push(h.bodySha256(r.body));
    }
    const seen = await mock.requests();
    const reached = seen.filter((s) => bodies.includes(s.body_sha256)).length;
    console.log(`trailers: ${JSON.stringify(results)}; ${reached} of them reached the provider`);
    // With no seal in the head, the header precheck may refuse the request
    // (401 missing_seal) before the trailer is ever read; either way the
    // seal that came after the body is never used.
    const expected = Object.fromEntries(Object.keys(cases).map((k) => [k, '400 bad_request']));
    if (results['the seal itself in the trailer'] === '401 missing_seal') {
      expected['the seal itself in the trailer'] = '401 missing_seal';
    }
    assert.deepEqual(results, expected);
    assert.equal(reached, 0, 'no request with a trailer reached the provider');
    assert.equal(seen.length, 1, 'only the request without trailers reached it');
  });

test('e. a flood of accepted seals, some dated 30 s ahead, cannot make the replay cache refuse an honest seal',
  { timeout: 90000 }, async (t) => {
    // The flood's seals carry junk keys but are valid: the relay accepts
    // them (it must remember each) and forwards them to a provider that is
    // down (502, no work for the mock). What it must not do is let a few
    // seals whose iat is 29 s ahead (allowed: seal_max_future_s is 30) keep
    // every later entry alive until they expire. Each entry should leave at
    // its own deadline (iat + seal_max_age_s).
    //
    // Small numbers make the defect show within seconds: seal_max_age_s 2,
    // so an ordinary seal is remembered for 2-3 s; replay_cache_entries 1024
    // (the smallest allowed). 128 future seals first (every shard of the
    // cache gets some), then ordinary ones at about 100 per second for 14 s.
    // Held to their own deadlines (iat + seal_max_age_s + 1) the cache holds
    // about 128 + 100 * 4 = 530 entries at any time, half its size; expired
    // first-in-first-out behind the future ones, it fills within about 9 s
    // and honest seals get 503.
    const closedPort = await new Promise((res) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => res(p)); });
    });
    const relay = await h.startRelay({
      providers: {
        ...h.mockProviders(mock),
        down: { base_url: `http://127.0.0.1:${closedPort}`, auth: 'bearer', paths: ['/v1/chat/completions'] },
      },
      seal_max_age_s: 2, seal_max_future_s: 30, replay_cache_entries: 1024, upstream_connect_timeout_s: 2,
    });
    t.after(() => relay.stop('SIGKILL'));
    const keyConfig = await h.fetchKeys(relay.url);
    const DOWN = '/down/v1/chat/completions';
    const flood = {};
    const fire = async (iatAhead) => {
      const body = JSON.stringify({ model: 'm' });
      const now = Math.floor(Date.now() / 1000);
      const authorization = await h.seal({ keyConfig, apiKey: h.randomApiKey('sk-junk-'), path: DOWN, body, iat: now + iatAhead });
      const res = await fetch(new URL(DOWN, relay.url), {
        method: 'POST', body, headers: { 'content-type': 'application/json', authorization },
      });
      const code = (await res.json()).error?.code;
      const k = `${res.status} ${code}`;
      flood[k] = (flood[k] ?? 0) + 1;
    };
    await pool(128, 8, () => fire(29));
    const t0 = Date.now();
    const RATE = 100;
    const SECONDS = 14;
    let sent = 0;
    while (sent < RATE * SECONDS && Date.now() - t0 < 20000) {
      // Paced: at most RATE per second on average, 8 at a time.
      const due = Math.min(RATE * SECONDS, Math.floor(((Date.now() - t0) / 1000) * RATE) + 8);
      if (sent >= due) {
        await h.sleep(10);
        continue;
      }
      const batch = Math.min(8, due - sent);
      sent += batch;
      await Promise.all(Array.from({ length: batch }, () => fire(0)));
    }
    const floodMs = Date.now() - t0;
    const honest = {};
    for (let i = 0; i < 10; i++) {
      const r = await legitimate(relay, keyConfig, i);
      const k = `${r.status}${r.code ? ' ' + r.code : ''}`;
      honest[k] = (honest[k] ?? 0) + 1;
    }
    console.log(`replay flood: 128 seals 29 s ahead, then ${sent} ordinary in ${floodMs} ms ` +
      `(${Math.round(sent / (floodMs / 1000))}/s); flood answers ${JSON.stringify(flood)}; honest after: ${JSON.stringify(honest)}`);
    assert.deepEqual(honest, { 200: 10 }, 'honest seals are accepted');
    assert.deepEqual(flood, { '502 upstream_unreachable': 128 + sent }, 'every flood seal was accepted (none refused with 503)');
  });
