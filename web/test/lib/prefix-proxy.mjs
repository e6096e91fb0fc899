// A front proxy that serves a relay under a path prefix, the way a site's
// reverse proxy would: strips the prefix, forwards the rest unchanged,
// streams both ways. For testing `public_path_prefix`.
import http from 'node:http';

export async function startPrefixProxy(relayUrl, prefix = '/relay') {
  const upstream = new URL(relayUrl);
  const server = http.createServer((req, res) => {
    if (req.url !== prefix && !req.url.startsWith(prefix + '/')) {
      res.writeHead(404).end();
      return;
    }
    const out = http.request({
      host: upstream.hostname, port: upstream.port, method: req.method,
      path: req.url.slice(prefix.length) || '/', headers: req.headers,
    }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${server.address().port}${prefix}`,
    stop: () => new Promise((ok) => {
      server.closeAllConnections();
      server.close(() => ok());
    }),
  };
}
