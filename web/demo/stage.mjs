// Assembles the tree a relay serves as its web_root for the demo: demo/,
// byok-relay.js, and from node_modules only the packages the page's import
// map names. web/node_modules also holds the SDKs the tests use (over 100 MiB
// of .js/.json files, past the relay's 64 MiB web_root cap, and nothing a
// browser should download), so the relay is never pointed at web/ itself.
//
//   node web/demo/stage.mjs OUT_DIR        (scripts/demo.sh)
//   import { stageWebRoot } from './stage.mjs'; stageWebRoot(outDir)  (web/test/browser.test.mjs)
import { cpSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The npm package names the demo's import map points into node_modules for. */
export function importMapPackages(html = readFileSync(join(webDir, 'demo', 'index.html'), 'utf8')) {
  const map = html.match(/<script type="importmap">([\s\S]*?)<\/script>/);
  if (!map) {
    throw new Error('web/demo/index.html has no import map');
  }
  const names = new Set();
  for (const target of Object.values(JSON.parse(map[1]).imports)) {
    const m = target.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (m) {
      names.add(m[1]);
    }
  }
  return [...names];
}

/** Copies what the demo needs into `outDir` (emptied first); returns `outDir`. */
export function stageWebRoot(outDir) {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  cpSync(join(webDir, 'demo'), join(outDir, 'demo'), { recursive: true });
  cpSync(join(webDir, 'byok-relay.js'), join(outDir, 'byok-relay.js'));
  for (const name of importMapPackages()) {
    cpSync(join(webDir, 'node_modules', name), join(outDir, 'node_modules', name), { recursive: true, dereference: true });
  }
  return outDir;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.length !== 3) {
    console.error('usage: node web/demo/stage.mjs OUT_DIR');
    process.exit(2);
  }
  stageWebRoot(resolve(process.argv[2]));
}
