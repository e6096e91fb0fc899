#!/usr/bin/env node
// Residue scanner: reads a live process's memory through /proc/PID/maps and
// /proc/PID/mem and reports every place where any 12-byte slice of any of
// the given secrets occurs.
//
//   node scripts/residue-scan.mjs PID < secrets.txt     (one secret a line)
//
// Exit status: 0 no hit, 1 hits (listed on stdout), 2 could not scan.
// Used as a module by tests/integration/residue.test.mjs.
//
// Which memory: every readable mapping that is writable, or anonymous
// (heap, thread stacks, sodium_malloc regions, the .data/.bss of the binary
// and of every library, libc's arenas). Read-only file mappings (code,
// rodata) cannot hold a secret that arrived at run time, and PROT_NONE guard
// pages cannot be read at all. [vvar]/[vsyscall] are skipped (not memory).
//
// Root can read a process that set PR_SET_DUMPABLE 0 only with
// CAP_SYS_PTRACE; without it the open fails with EACCES and the scan
// reports an error instead of a clean result.
import { openSync, readSync, closeSync, readFileSync } from 'node:fs';

export const SLICE = 12;

function parseMaps(pid) {
  const text = readFileSync(`/proc/${pid}/maps`, 'latin1');
  const maps = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = line.match(/^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/);
    if (!m) continue;
    maps.push({
      start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], inode: Number(m[6]),
      path: m[7] || '[anon]',
    });
  }
  return maps;
}

// Larger than any real heap or stack of the relay: only AddressSanitizer's
// shadow memory (terabytes of mostly untouched pages, in an ASan build) is.
// Such mappings are reported as skipped, never silently.
export const MAX_MAP = 64 * 2 ** 30;

function wanted(map) {
  if (map.perms[0] !== 'r') return false;
  if (map.path.startsWith('[vvar') || map.path === '[vsyscall]' || map.path === '[vdso]') return false;
  return map.perms[1] === 'w' || map.inode === 0;
}

// Index: every SLICE-byte window of every secret -> index of the secret.
export function buildIndex(secrets, slice = SLICE) {
  const windows = new Map();
  const alphabet = new Uint8Array(256);
  secrets.forEach((s, i) => {
    const b = Buffer.from(s, 'latin1');
    if (b.length < slice) throw new Error(`secret ${i} is shorter than ${slice} bytes`);
    for (const c of b) alphabet[c] = 1;
    for (let o = 0; o + slice <= b.length; ++o) windows.set(b.latin1Slice(o, o + slice), i);
  });
  return { windows, alphabet, slice };
}

// Scans one buffer; calls onHit(position, secretIndex) for every matching window.
export function scanBuffer(buf, n, index, onHit) {
  const { windows, alphabet, slice } = index;
  let i = 0;
  while (i + slice <= n) {
    // A window is a candidate only if all its bytes occur in some secret;
    // a foreign byte at the window's end rules out every window through it.
    if (!alphabet[buf[i + slice - 1]]) {
      i += slice;
      continue;
    }
    let j = i + slice - 2;
    while (j >= i && alphabet[buf[j]]) --j;
    if (j >= i) {
      i = j + 1;
      continue;
    }
    const k = windows.get(buf.latin1Slice(i, i + slice));
    if (k !== undefined) onHit(i, k);
    ++i;
  }
}

// Scans the process; returns { maps, bytes, unreadable, unreadableMaps, skipped, hits: [{ path, perms, mapStart, offset, length, secret }] }.
// Overlapping window hits of the same secret are merged into one region.
// `index` (from buildIndex) may be passed instead of `secrets` to scan repeatedly.
export function scanProcess(pid, secrets, { slice = SLICE, chunk = 1 << 20, index = buildIndex(secrets, slice) } = {}) {
  const all = parseMaps(pid).filter(wanted);
  const maps = all.filter((m) => m.end - m.start <= MAX_MAP);
  const skipped = all.filter((m) => m.end - m.start > MAX_MAP)
    .map((m) => `${m.path} (${m.perms}) 0x${m.start.toString(16)}-0x${m.end.toString(16)}`);
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  const buf = Buffer.allocUnsafe(chunk + slice);
  const hits = [];
  let bytes = 0;
  let unreadable = 0;
  const unreadableMaps = [];
  try {
    for (const map of maps) {
      let last = null;
      for (let pos = map.start; pos < map.end; pos += chunk) {
        // Each read overlaps the previous one by slice-1 bytes, so no window is split.
        const from = pos === map.start ? pos : pos - (slice - 1);
        const len = Math.min(map.end, pos + chunk) - from;
        let n;
        try {
          n = readSync(fd, buf, 0, len, from);
        } catch {
          unreadable += Math.min(map.end, pos + chunk) - pos;
          unreadableMaps.push(`${map.path} (${map.perms}) 0x${map.start.toString(16)}-0x${map.end.toString(16)}`);
          continue;
        }
        bytes += Math.min(map.end, pos + chunk) - pos;
        scanBuffer(buf, n, index, (at, k) => {
          const addr = from + at;
          if (last && last.secret === k && addr <= last.addr + last.length) {
            last.length = addr + slice - last.addr;
            return;
          }
          last = {
            path: map.path, perms: map.perms, mapStart: '0x' + map.start.toString(16),
            offset: addr - map.start, addr, length: slice, secret: k,
            sample: buf.latin1Slice(at, at + slice),
          };
          hits.push(last);
        });
      }
    }
  } finally {
    closeSync(fd);
  }
  return { maps: maps.length, bytes, unreadable, unreadableMaps, skipped, hits };
}

export function formatHit(h) {
  return `${h.path} (${h.perms}) map ${h.mapStart} + 0x${h.offset.toString(16)} ` +
    `(addr 0x${h.addr.toString(16)}): ${h.length} bytes of secret #${h.secret}, starting "${h.sample}"`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const pid = Number(process.argv[2]);
  if (!pid) {
    console.error('usage: residue-scan.mjs PID < secrets.txt  (one secret per line, each >= 12 bytes)');
    process.exit(2);
  }
  const secrets = readFileSync(0, 'latin1').split('\n').filter((s) => s.length > 0);
  let r;
  try {
    r = scanProcess(pid, secrets);
  } catch (e) {
    console.error(`residue-scan: cannot scan pid ${pid}: ${e.message}`);
    process.exit(2);
  }
  console.log(`scanned ${r.maps} maps, ${(r.bytes / 1048576).toFixed(1)} MiB ` +
    `(${r.unreadable} bytes unreadable, ${r.skipped.length} map(s) over 64 GiB skipped), ` +
    `${secrets.length} secrets: ${r.hits.length} hit(s)`);
  for (const h of r.hits) console.log('  ' + formatHit(h));
  process.exit(r.hits.length ? 1 : 0);
}
