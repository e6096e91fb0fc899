// Starts the real binaries for integration tests and seals requests the way
// a browser would: with libsodium-wrappers from npm, not with our C++ code.
// Everything started here is stopped by stopAll() (register it with after()).
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { checkServerIdentity } from 'node:tls';
import net from 'node:net';

const here = new URL('.', import.meta.url).pathname;
export const sourceDir = process.env.BYOK_SOURCE_DIR ?? resolve(here, '../../..');
export const buildDir = process.env.BYOK_BUILD_DIR ?? join(sourceDir, 'build');
export const relayBin = process.env.BYOK_RELAY_BIN ?? join(buildDir, 'byok-relay');
export const mockBin = process.env.BYOK_MOCK_BIN ?? join(buildDir, 'tests/mock_provider/byok-mock-provider');

const require = createRequire(join(sourceDir, 'web', 'package.json'));
const sodiumModule = require('libsodium-wrappers');
export async function sodium() {
  await sodiumModule.ready;
  return sodiumModule;
}

const running = new Set();

export function tempDir(prefix = 'byok-test-') {
  return mkdtempSync(join(tmpdir(), prefix));
}

// Spawns a process and resolves once a line of its output matches `ready`.
function startProcess(bin, args, { ready, stream = 'stderr', timeoutMs = 15000, env } = {}) {
  if (!existsSync(bin)) {
    return Promise.reject(new Error(`${bin} does not exist: build it first (scripts/build.sh)`));
  }
  return new Promise((resolvePromise, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const out = { stdout: '', stderr: '' };
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) {
        settled = true;
        child.kill('SIGKILL');
        reject(new Error(`${bin} did not become ready in ${timeoutMs} ms; stderr:\n${out.stderr}\nstdout:\n${out.stdout}`));
      }
    }, timeoutMs);
    const onData = (name) => (chunk) => {
      out[name] += chunk.toString();
      if (!settled && name === stream) {
        const m = out[name].match(ready);
        if (m) {
          settled = true;
          clearTimeout(timer);
          resolvePromise({ child, out, match: m });
        }
      }
    };
    child.stdout.on('data', onData('stdout'));
    child.stderr.on('data', onData('stderr'));
    child.on('exit', (code, signal) => {
      running.delete(child);
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(new Error(`${bin} exited (${code ?? signal}) before ready; stderr:\n${out.stderr}\nstdout:\n${out.stdout}`));
      }
    });
    running.add(child);
  });
}

export function waitExit(child, timeoutMs = 20000) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`pid ${child.pid} did not exit in ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(t);
      res({ code, signal });
    });
  });
}

async function stopChild(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  try {
    await waitExit(child, 10000);
  } catch {
    child.kill('SIGKILL');
    await waitExit(child, 5000);
  }
}

export async function stopAll() {
  await Promise.all([...running].map((c) => stopChild(c)));
}

export async function startMock({ tls = true, threads = 1, delayMs, host = '127.0.0.1' } = {}) {
  const dir = tempDir('byok-mock-');
  const args = ['--listen', `${host}:0`, '--threads', String(threads)];
  if (tls) args.push('--tls', '--cert-dir', dir);
  if (delayMs) args.push('--delay-ms', String(delayMs));
  const { child, out, match } = await startProcess(mockBin, args, {
    ready: /mock: listening on (https?:\/\/127\.\d+\.\d+\.\d+:\d+)/, stream: 'stdout',
  });
  const url = match[1];
  const caFile = tls ? join(dir, 'ca.pem') : undefined;
  const control = (path, init) => httpsJson(url + path, { ...init, ca: caFile ? readFileSync(caFile) : undefined });
  return {
    url, caFile, dir, child, pid: child.pid, out,
    requests: () => control('/__mock/requests'),
    stats: () => control('/__mock/stats'),
    reset: () => control('/__mock/reset', { method: 'POST' }),
    stop: (signal) => stopChild(child, signal),
  };
}

// Node's fetch cannot take a private CA per call; the mock's control
// endpoints are read with node:https instead.
export async function httpsJson(url, { method = 'GET', ca, body, servername } = {}) {
  const mod = url.startsWith('https:') ? await import('node:https') : await import('node:http');
  return new Promise((res, rej) => {
    // `servername`: the name the certificate is checked against, when the URL's host is not in it.
    const tls = servername ? { servername, checkServerIdentity: (_, cert) => checkServerIdentity(servername, cert) } : {};
    const req = mod.request(url, { method, ca, ...tls }, (r) => {
      let data = '';
      r.on('data', (c) => (data += c));
      r.on('end', () => {
        try {
          res(data ? JSON.parse(data) : null);
        } catch (e) {
          rej(new Error(`bad JSON from ${url}: ${data.slice(0, 200)}`));
        }
      });
    });
    req.on('error', rej);
    if (body) req.write(body);
    req.end();
  });
}

export async function makeKeyFile(dir, name = `key-${Date.now()}-${Math.random().toString(36).slice(2)}.json`, days) {
  const path = join(dir, name);
  const args = ['keygen', '--out', path];
  if (days) args.push('--days', String(days));
  const { stdout } = await promisify(execFile)(relayBin, args);
  const kid = stdout.match(/kid ([^\s,)]+)/)?.[1];
  return Object.assign(path, { kid });  // a String object: usable as a path, carries .kid
}

// The openai provider pointed at a mock, with the mock's CA.
export function mockProviders(mock, extra = {}) {
  const paths = ['/v1/chat/completions', '/v1/completions', '/v1/responses', '/v1/embeddings', '/v1/models'];
  return {
    openai: { base_url: mock.url, auth: 'bearer', ca_file: mock.caFile, paths },
    anthropic: { base_url: mock.url, auth: 'x-api-key', ca_file: mock.caFile, paths: ['/v1/messages'] },
    ...extra,
  };
}

// `wrap`: a command the relay is started under (its last argument then the
// relay's path and arguments), e.g. ['unshare', '-m', ...]; it must exec the
// relay, so that the pid is the relay's.
export async function startRelay(overrides = {}, { env, dir = tempDir('byok-relay-'), bin = relayBin, wrap } = {}) {
  const config = {
    listen: '127.0.0.1:0',
    threads: 2,
    seal_max_age_s: 60,
    allow_origins: ['http://app.test'],
    ...overrides,
  };
  if (!config.key_files) config.key_files = [String(await makeKeyFile(dir))];
  config.key_files = config.key_files.map(String);
  const configPath = join(dir, 'relay.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  if (wrap && !existsSync(bin)) throw new Error(`${bin} does not exist: build it first (scripts/build.sh)`);
  const args = ['serve', '--config', configPath];
  const { child, out, match } = await startProcess(wrap ? wrap[0] : bin, wrap ? [...wrap.slice(1), bin, ...args] : args, {
    ready: /byok-relay: listening on (http:\/\/[^\s]+)/, env,
  });
  const url = match[1];
  const relay = {
    url, port: Number(new URL(url).port), child, pid: child.pid, config, configPath, dir,
    stderr: () => out.stderr,
    stdout: () => out.stdout,
    stop: (signal = 'SIGTERM') => stopChild(child, signal),
    kill: (signal) => child.kill(signal),
    get metricsUrl() {
      const m = out.stderr.match(/byok-relay: metrics on (http:\/\/\S+)/);
      return m ? m[1] : undefined;
    },
  };
  return relay;
}

export async function fetchKeys(relayUrl) {
  const r = await fetch(new URL('/v1/keys', relayUrl));
  if (r.status !== 200) throw new Error(`/v1/keys answered ${r.status}`);
  return r.json();
}

export function b64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

export function bodySha256(body) {
  return b64url(createHash('sha256').update(body ?? '').digest());
}

// Builds the payload exactly as docs/protocol.md says and seals it with
// libsodium-wrappers' crypto_box_seal.
export async function seal({ keyConfig, kid, pk, apiKey, method = 'POST', path, body = '', iat, payload }) {
  const s = await sodium();
  const key = keyConfig ? keyConfig.keys[0] : { kid, pk };
  const p = payload ?? JSON.stringify({
    key: apiKey, iat: iat ?? Math.floor(Date.now() / 1000), method, path, body_sha256: bodySha256(body),
  });
  const box = s.crypto_box_seal(typeof p === 'string' ? s.from_string(p) : p,
    s.from_base64(key.pk, s.base64_variants.URLSAFE_NO_PADDING));
  return `Sealed ${key.kid}.${s.to_base64(box, s.base64_variants.URLSAFE_NO_PADDING)}`;
}

// The same payload sealed with HPKE (RFC 9180 base mode) to the relay's HPKE
// key, by @hpke/core from npm (an implementation nobody on this team wrote):
// "Sealed <kid>.<base64url(enc || ct)>", info "byok-relay v1 " + kid, aad empty.
let hpkeSuite = null;
export async function hpkeSeal({ keyConfig, payload }) {
  const key = keyConfig.keys.find((k) => k.alg === 'hpke-x25519-sha256-aes128gcm');
  if (!key) throw new Error('the relay lists no HPKE key');
  if (!hpkeSuite) {
    const { CipherSuite, Aes128Gcm, HkdfSha256 } = require('@hpke/core');
    const { DhkemX25519HkdfSha256 } = require('@hpke/dhkem-x25519');
    hpkeSuite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });
  }
  const sender = await hpkeSuite.createSenderContext({
    recipientPublicKey: await hpkeSuite.kem.deserializePublicKey(Uint8Array.from(Buffer.from(key.pk, 'base64url'))),
    info: new TextEncoder().encode('byok-relay v1 ' + key.kid),
  });
  const ct = new Uint8Array(await sender.seal(new TextEncoder().encode(payload)));
  return `Sealed ${key.kid}.${Buffer.concat([new Uint8Array(sender.enc), ct]).toString('base64url')}`;
}

// headers_sha256 (docs/protocol.md §3.5) of the one bound header these tests send.
export function jsonHeadersSha256() {
  return b64url(createHash('sha256').update('content-type:application/json\n').digest());
}

// One sealed request through fetch. `path` is the relay-side target.
export async function sealedRequest(relayUrl, { apiKey, method = 'POST', path, body, headers = {}, keyConfig, iat, sealPath }) {
  const keys = keyConfig ?? (await fetchKeys(relayUrl));
  const text = body === undefined ? (method === 'GET' ? '' : '') : (typeof body === 'string' ? body : JSON.stringify(body));
  const authorization = await seal({ keyConfig: keys, apiKey, method, path: sealPath ?? path, body: text, iat });
  return fetch(new URL(path, relayUrl), {
    method, headers: { 'content-type': 'application/json', ...headers, authorization },
    body: method === 'GET' || method === 'HEAD' ? undefined : text,
  });
}

export function randomApiKey(prefix = 'sk-test-') {
  const bytes = new Uint8Array(24);
  globalThis.crypto.getRandomValues(bytes);
  return prefix + Buffer.from(bytes).toString('hex');
}

// Reads an SSE response body and records when each chunk arrived.
export async function readChunksTimed(response) {
  const reader = response.body.getReader();
  const chunks = [];
  const start = Date.now();
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push({ t: Date.now() - start, text: dec.decode(value, { stream: true }) });
  }
  return chunks;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export { existsSync };

// ---- raw-socket helpers (admission and upstream-quirk tests) ------------------------------

// The relay's resident set, in KiB, from /proc.
export function rssKiB(pid) {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
}

// The value of an unlabelled metric (a gauge) on the relay's /metrics
// listener; undefined when the relay does not expose it.
export async function metricValue(metricsUrl, name) {
  const text = await (await fetch(metricsUrl)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

// Reads the gauge every 100 ms until `done(value)` holds or `timeoutMs` has
// passed; returns the last value read (the caller asserts on it).
export async function metricWhen(metricsUrl, name, done, timeoutMs) {
  const until = Date.now() + timeoutMs;
  let v = await metricValue(metricsUrl, name);
  while (!done(v) && Date.now() < until) {
    await sleep(100);
    v = await metricValue(metricsUrl, name);
  }
  return v;
}

// The bytes of one sealed request, exactly as they go on the wire. The seal
// binds method, path and the SHA-256 of `body` (give `sealBody` to seal for
// another body than the one sent).
export async function sealedRequestBytes({ keyConfig, apiKey, method = 'POST', path, body = '', sealBody,
  iat, headers = {}, close = false }) {
  const authorization = await seal({ keyConfig, apiKey, method, path, body: sealBody ?? body, iat });
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return `${method} ${path} HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\n` +
    `Authorization: ${authorization}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}` +
    `${close ? 'Connection: close\r\n' : ''}\r\n${body}`;
}

// One client connection over raw bytes, for exact framing checks: write any
// bytes, read one response at a time exactly as the relay framed it.
export class RawConnection {
  static open(port, { host = '127.0.0.1', localAddress } = {}) {
    return new Promise((resolvePromise, reject) => {
      const sock = net.connect({ port, host, localAddress });
      const c = new RawConnection(sock);
      sock.once('connect', () => resolvePromise(c));
      sock.once('error', (e) => { if (!c.connected) reject(e); });
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.error = undefined;
    this.wake = null;
    this.connected = false;
    sock.once('connect', () => { this.connected = true; });
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.poke(); });
    sock.on('end', () => { this.closed = true; this.poke(); });
    sock.on('close', () => { this.closed = true; this.poke(); });
    sock.on('error', (e) => { this.error = e; this.closed = true; this.poke(); });
  }

  poke() {
    const w = this.wake;
    this.wake = null;
    if (w) w();
  }

  write(bytes) {
    if (!this.sock.destroyed) this.sock.write(bytes);
  }

  close() {
    this.sock.destroy();
  }

  // Waits for more bytes (or the close); false once `deadline` (ms since epoch) passed.
  async more(deadline) {
    if (this.closed) return false;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    let timer;
    await new Promise((r) => { this.wake = r; timer = setTimeout(r, left); });
    clearTimeout(timer);
    return Date.now() < deadline || this.buf.length > 0;
  }

  take(n) {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  fail(what, deadline) {
    const why = Date.now() >= deadline ? 'timed out' : 'the connection closed';
    const e = new Error(`${what}: ${why}; unread ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
    e.timedOut = Date.now() >= deadline;
    throw e;
  }

  // Reads one response (an interim 1xx too). Returns { status, head, headers
  // (lower-case name -> list of values), framing: 'length' | 'chunked' |
  // 'close' | 'none', body (decoded), raw (the body bytes as framed on the
  // wire), chunks (chunk payloads, for chunked) }. Throws on timeout or on
  // a close before the response is complete; err.timedOut tells which.
  async readResponse({ timeoutMs = 5000, noBody = false } = {}) {
    const deadline = Date.now() + timeoutMs;
    let end;
    while ((end = this.buf.indexOf('\r\n\r\n')) < 0) {
      if (!(await this.more(deadline)) && this.buf.indexOf('\r\n\r\n') < 0) this.fail('response head', deadline);
    }
    const head = this.take(end + 4).toString('latin1');
    const m = head.match(/^HTTP\/1\.1 (\d{3}) [^\r\n]*\r\n/);
    if (!m) throw new Error(`not an HTTP/1.1 status line: ${JSON.stringify(head.slice(0, 200))}`);
    const status = Number(m[1]);
    const headers = {};
    for (const line of head.slice(m[0].length, -4).split('\r\n').filter(Boolean)) {
      const i = line.indexOf(':');
      const k = line.slice(0, i).toLowerCase();
      (headers[k] ??= []).push(line.slice(i + 1).trim());
    }
    const res = { status, head, headers, body: Buffer.alloc(0), raw: Buffer.alloc(0), chunks: [] };
    const te = headers['transfer-encoding']?.join(',').toLowerCase();
    if (noBody || status < 200 || status === 204 || status === 304) {
      res.framing = 'none';
    } else if (te) {
      if (te !== 'chunked') throw new Error(`unexpected Transfer-Encoding ${te}`);
      res.framing = 'chunked';
      const raw = [];
      for (;;) {
        let eol;
        const notSizeLine = (text) => new Error(`not a chunk size line: ${JSON.stringify(text.slice(0, 100))} ` +
          `(after ${JSON.stringify(Buffer.concat(raw).toString('latin1').slice(-200))})`);
        while ((eol = this.buf.indexOf('\r\n')) < 0) {
          if (this.buf.length > 0 && !/^[0-9a-fA-F]/.test(this.buf.toString('latin1', 0, 1))) {
            throw notSizeLine(this.buf.toString('latin1'));
          }
          if (!(await this.more(deadline)) && this.buf.indexOf('\r\n') < 0) this.fail('chunk size line', deadline);
        }
        const sizeLine = this.take(eol + 2);
        const sizeText = sizeLine.toString('latin1');
        if (!/^[0-9a-fA-F]{1,15}(;[^\r\n]*)?\r\n$/.test(sizeText)) throw notSizeLine(sizeText);
        raw.push(sizeLine);
        const size = parseInt(sizeText, 16);
        if (size === 0) {
          // The trailer section: empty ("\r\n") or fields up to a blank line.
          const trailerEnd = () => (this.buf.indexOf('\r\n') === 0 ? 2
            : this.buf.indexOf('\r\n\r\n') >= 0 ? this.buf.indexOf('\r\n\r\n') + 4 : -1);
          while (trailerEnd() < 0) {
            if (!(await this.more(deadline)) && trailerEnd() < 0) this.fail('last chunk', deadline);
          }
          const tail = this.take(trailerEnd());
          raw.push(tail);
          res.trailers = tail.toString('latin1');
          break;
        }
        while (this.buf.length < size + 2) {
          if (!(await this.more(deadline)) && this.buf.length < size + 2) this.fail('chunk data', deadline);
        }
        const data = this.take(size + 2);
        raw.push(data);
        if (data.subarray(size).toString('latin1') !== '\r\n') throw new Error('chunk data not followed by CRLF');
        res.chunks.push(data.subarray(0, size));
      }
      res.raw = Buffer.concat(raw);
      res.body = Buffer.concat(res.chunks);
    } else if (headers['content-length']) {
      res.framing = 'length';
      const n = Number(headers['content-length'][0]);
      while (this.buf.length < n) {
        if (!(await this.more(deadline)) && this.buf.length < n) this.fail(`body of ${n} bytes (have ${this.buf.length})`, deadline);
      }
      res.body = res.raw = this.take(n);
    } else {
      res.framing = 'close';
      while (!this.closed) {
        if (!(await this.more(deadline)) && !this.closed) this.fail('close-delimited body', deadline);
      }
      res.body = res.raw = this.take(this.buf.length);
    }
    return res;
  }

  // Waits until the peer closes; true if it did within `timeoutMs`.
  async waitClosed(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && (await this.more(deadline))) { /* keep reading */ }
    return this.closed;
  }
}
