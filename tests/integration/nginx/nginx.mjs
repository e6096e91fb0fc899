// Runs the real nginx from Debian with the repository's deploy/nginx files,
// rendered by deploy/nginx/render.sh (listen addresses, certificate paths, log
// directory and relay addresses are the only things filled in), plus a small
// HTTPS client that can bind a chosen loopback source address and time the
// arrival of each body chunk.
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import https from 'node:https';
import http from 'node:http';
import http2 from 'node:http2';
import tls from 'node:tls';

export const nginxBin = process.env.BYOK_NGINX_BIN ?? '/usr/sbin/nginx';

// A free loopback port (bound and released; nginx binds it right after).
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// A self-signed certificate for localhost / 127.0.0.1, made by openssl.
export function makeCert(dir) {
  const cert = join(dir, 'tls-cert.pem');
  const key = join(dir, 'tls-key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key, ca: readFileSync(cert) };
}

// Renders deploy/nginx into `prefix`/conf and writes the test's main
// nginx.conf around the chosen site file. Only the main file is test-only:
// it stands in for Debian's /etc/nginx/nginx.conf (events, temp paths, user).
// `patch(confDir)`, if given, may edit the rendered files before nginx reads them.
export function renderConfig({ sourceDir, prefix, site, upstreams, cert, key, httpsPort, httpPort, balance, patch }) {
  const conf = join(prefix, 'conf');
  const logs = join(prefix, 'logs');
  for (const d of [conf, logs, join(prefix, 'tmp')]) mkdirSync(d, { recursive: true });
  execFileSync('sh', [join(sourceDir, 'deploy/nginx/render.sh'), conf], {
    env: {
      ...process.env,
      BYOK_NGINX_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
      BYOK_NGINX_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      BYOK_NGINX_TLS_CERT: cert,
      BYOK_NGINX_TLS_KEY: key,
      BYOK_NGINX_LOG_DIR: logs,
      BYOK_NGINX_UPSTREAMS: upstreams.join(' '),
      ...(balance ? { BYOK_NGINX_BALANCE: balance } : {}),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (patch) patch(conf);
  const tmp = join(prefix, 'tmp');
  const main = [
    // As root, nginx would switch its workers to "nobody", who cannot enter
    // the test's 0700 temp directory; any other user runs the workers as itself.
    process.getuid() === 0 ? 'user root;' : '',
    'worker_processes 2;',
    `error_log ${join(logs, 'main-error.log')} info;`,
    'events { worker_connections 1024; }',
    'http {',
    `  client_body_temp_path ${tmp}/body;`,
    `  proxy_temp_path ${tmp}/proxy;`,
    `  fastcgi_temp_path ${tmp}/fastcgi;`,
    `  uwsgi_temp_path ${tmp}/uwsgi;`,
    `  scgi_temp_path ${tmp}/scgi;`,
    '  default_type application/octet-stream;',
    // Debian's nginx.conf turns gzip on at the http level; keep that here so
    // the site's "gzip off" is what keeps the stream unbuffered.
    '  gzip on;',
    `  access_log ${join(logs, 'main-access.log')};`,
    `  include sites-available/${site};`,
    '}',
    '',
  ].join('\n');
  const mainPath = join(conf, 'nginx.conf');
  writeFileSync(mainPath, main);
  return { conf, logs, mainPath };
}

function workerPids(masterPid) {
  const pids = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === masterPid) pids.push(Number(name));
    } catch {
      // the process went away while we looked
    }
  }
  return pids;
}

function isNginxWorker(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('nginx: worker');
  } catch {
    return false;
  }
}

async function waitTlsPort(port, ca, child, timeoutMs = 10000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}`);
    const ok = await new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nginx did not listen on ${port} in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Starts nginx in the foreground (master + workers) with the rendered config.
export async function startNginx(opts) {
  const { prefix, ca } = opts;
  const { mainPath, logs, conf } = renderConfig(opts);
  execFileSync(nginxBin, ['-t', '-q', '-p', prefix, '-c', mainPath, '-g', `pid ${join(prefix, 'nginx.pid')};`],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  const child = spawn(nginxBin, ['-p', prefix, '-c', mainPath, '-g', `daemon off; pid ${join(prefix, 'nginx.pid')};`],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c) => (output += c));
  child.stderr.on('data', (c) => (output += c));
  const nginx = {
    child, pid: child.pid, prefix, conf, logs, workers: [],
    origin: `https://127.0.0.1:${opts.httpsPort}`,
    httpOrigin: `http://127.0.0.1:${opts.httpPort}`,
    output: () => output,
    accessLog: () => readIf(join(logs, 'byok-relay.access.log')),
    allLogs: () => ['byok-relay.access.log', 'byok-relay.error.log', 'main-error.log', 'main-access.log']
      .map((f) => readIf(join(logs, f))).join('\n') + output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');  // fast shutdown: the master stops its workers
        const t = setTimeout(() => child.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
      // If the master had to be killed, its workers may be left: end them by PID.
      for (const pid of nginx.workers) {
        if (isNginxWorker(pid)) {
          try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
        }
      }
    },
  };
  try {
    await waitTlsPort(opts.httpsPort, ca, child);
    nginx.workers = workerPids(child.pid);
  } catch (e) {
    await nginx.stop();
    throw new Error(`${e.message}\n${output}\n${readIf(join(logs, 'main-error.log'))}`);
  }
  return nginx;
}

function readIf(path) {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

// One HTTPS (HTTP/1.1) request. Resolves with status, headers, the body
// and the arrival time (ms since the response head) of every body chunk.
export function request(url, { method = 'GET', headers = {}, body, ca, localAddress, timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, {
      method, headers, ca, localAddress, agent: false, servername: 'localhost', timeout: timeoutMs,
    }, (res) => {
      const start = Date.now();
      const chunks = [];
      const bufs = [];
      res.on('data', (c) => {
        chunks.push({ t: Date.now() - start, text: c.toString() });
        bufs.push(c);
      });
      res.on('end', () => resolve({
        status: res.statusCode, headers: res.headers, body: Buffer.concat(bufs).toString(), chunks,
      }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${url}`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// The same over HTTP/2, as a browser talks to nginx.
export function request2(origin, { method = 'GET', path, headers = {}, body, ca, timeoutMs = 30000 }) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(origin, { ca, servername: 'localhost' });
    session.on('error', reject);
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`h2 timeout: ${method} ${path}`));
    }, timeoutMs);
    const req = session.request({ ':method': method, ':path': path, ...headers });
    const chunks = [];
    let head;
    let start;
    req.on('response', (h) => {
      head = h;
      start = Date.now();
    });
    req.on('data', (c) => chunks.push({ t: Date.now() - start, text: c.toString() }));
    req.on('end', () => {
      clearTimeout(timer);
      session.close();
      resolve({ status: head[':status'], headers: head, body: chunks.map((c) => c.text).join(''), chunks });
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      session.destroy();
      reject(e);
    });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// Prometheus text → Map of 'name{labels}' → number.
export function parseMetrics(text) {
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}

// Sum of the series of `name` whose labels include every pair in `labels`.
export function metricSum(map, name, labels = {}) {
  let sum = 0;
  for (const [k, v] of map) {
    const brace = k.indexOf('{');
    const n = brace < 0 ? k : k.slice(0, brace);
    if (n !== name) continue;
    const ls = brace < 0 ? '' : k.slice(brace);
    if (Object.entries(labels).every(([lk, lv]) => ls.includes(`${lk}="${lv}"`))) sum += v;
  }
  return sum;
}
