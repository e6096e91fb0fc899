// Shared by the real-browser tests: headless Debian Chromium through
// playwright-core, and an app server on its own origin that serves the
// library and the npm packages' .js/.mjs files under /web/.
import { readFile } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import { chromium } from 'playwright-core';

import { sourceDir } from '../../../tests/integration/lib/harness.mjs';

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.BYOK_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
}

/** Makes every page of `context` an engine without X25519 in WebCrypto, as Safari before 17 or Firefox before 130. */
export function withoutX25519(context) {
  return context.addInitScript(() => {
    const subtle = crypto.subtle;
    for (const m of ['generateKey', 'importKey', 'deriveBits', 'exportKey']) {
      const real = subtle[m].bind(subtle);
      subtle[m] = (...a) => (a.some((x) => x?.name === 'X25519' || x === 'X25519')
        ? Promise.reject(new DOMException('Unrecognized name.', 'NotSupportedError')) : real(...a));
    }
  });
}

const webDir = join(sourceDir, 'web');

/** Answers GET /web/<file>.js|.mjs from the repository's web/ (404 for anything else). */
export async function serveWebScript(path, res) {
  const file = normalize(join(webDir, path.replace(/^\/web\//, '')));
  if (!path.startsWith('/web/') || !file.startsWith(webDir + '/') || !/\.m?js$/.test(file)) {
    res.writeHead(404).end();
    return;
  }
  try {
    const data = await readFile(file);
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(data);
  } catch {
    res.writeHead(404).end();
  }
}
