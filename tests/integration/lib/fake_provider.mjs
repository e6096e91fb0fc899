// Providers that misbehave on purpose, over raw node:net sockets, so every
// byte the relay reads upstream is chosen by the test: interim 1xx heads, SSE
// framed by Content-Length, pauses inside an event, a close right after a
// response, bytes after a body. Plain HTTP on loopback (the relay allows
// http:// for a loopback base_url). Also a DNS server that never answers.
import net from 'node:net';
import dgram from 'node:dgram';

// Starts a provider. `onRequest(req, conn)` is called once per request, in
// order per connection (the next request on a connection waits for the
// previous call's promise), with
//   req:  { method, target, headers (lower-case name -> value), body: Buffer, index (on this connection) }
//   conn: { id, write(bytes), end(), destroy(), after(ms) }
// and writes whatever it likes to `conn`. Returns { url, port, stats(),
// requests, close() }; stats() counts connections and requests.
export async function startFakeProvider(onRequest, { host = '127.0.0.1' } = {}) {
  const sockets = new Set();
  const requests = [];
  const counts = { connections: 0, requests: 0, errors: [] };
  const server = net.createServer((sock) => {
    sockets.add(sock);
    const id = ++counts.connections;
    let buf = Buffer.alloc(0);
    let index = 0;
    let busy = Promise.resolve();
    const conn = {
      id,
      write: (bytes) => { if (!sock.destroyed) sock.write(bytes); },
      end: () => sock.end(),
      destroy: () => sock.destroy(),
      after: (ms) => new Promise((r) => setTimeout(r, ms)),
    };
    // Splits the bytes into requests (Content-Length bodies only: the relay sends no other).
    const parse = () => {
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const [requestLine, ...lines] = head.split('\r\n');
        const [method, target] = requestLine.split(' ');
        const headers = {};
        for (const l of lines) {
          const i = l.indexOf(':');
          headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
        }
        if (headers['transfer-encoding']) {
          counts.errors.push(`connection ${id}: a request with Transfer-Encoding ${headers['transfer-encoding']}`);
          sock.destroy();
          return;
        }
        const length = Number(headers['content-length'] ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = Buffer.from(buf.subarray(end + 4, end + 4 + length));
        buf = buf.subarray(end + 4 + length);
        const req = { method, target, headers, body, index: index++, connection: id };
        requests.push(req);
        ++counts.requests;
        busy = busy.then(() => onRequest(req, conn)).catch((e) => {
          counts.errors.push(String(e?.stack ?? e));
          sock.destroy();
        });
      }
    };
    sock.on('data', (d) => { buf = Buffer.concat([buf, d]); parse(); });
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise((r) => server.listen(0, host, r));
  const port = server.address().port;
  return {
    url: `http://${host}:${port}`,
    port,
    requests,
    stats: () => ({ ...counts, open: sockets.size }),
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}

// The head and body of a complete HTTP/1.1 response framed by Content-Length.
export function jsonResponse(value, { status = '200 OK', headers = {} } = {}) {
  const body = typeof value === 'string' ? value : JSON.stringify(value);
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `${extra}\r\n${body}`;
}

// One HTTP/1.1 chunk.
export function chunk(text) {
  return `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
}

// A DNS server on UDP `address`:53 that reads queries and never answers
// (a resolver that is slow without limit). Needs root for port 53.
export async function startSilentDns(address) {
  const sock = dgram.createSocket('udp4');
  let queries = 0;
  sock.on('message', () => { ++queries; });
  await new Promise((res, rej) => {
    sock.once('error', rej);
    sock.bind(53, address, res);
  });
  return { address, queries: () => queries, close: () => new Promise((r) => sock.close(r)) };
}
