#!/usr/bin/env python3
"""Writes the measured part of docs/benchmarks.md from bench/run.sh's results.

usage: report_md.py RESULTS_DIR OUT_MD SOURCE_DIR BUILD_DIR DURATION WARMUP CONNECTIONS LG_CORE PROXY_CORE

Only the text between the MEASURED markers is replaced; anything around it
(the hand-written analysis) is kept.
"""
import json
import os
import platform
import re
import subprocess
import sys
import time

BEGIN = '<!-- BEGIN MEASURED: written by bench/run.sh, do not edit by hand -->'
END = '<!-- END MEASURED -->'


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip() or \
            subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stderr.strip()
    except Exception as e:  # noqa: BLE001 - a version we cannot read is reported as such
        return f'unknown ({e})'


def load(results, name):
    p = os.path.join(results, name + '.json')
    return json.load(open(p)) if os.path.exists(p) else None


def cmd(results, name):
    p = os.path.join(results, name + '.cmd')
    return open(p).read().strip() if os.path.exists(p) else ''


def open_runs(results, kind):
    """The open-loop rounds for one target (json-open-KIND-1..3, or one json-open-KIND)."""
    reps = [load(results, f'json-open-{kind}-{r}') for r in (1, 2, 3)]
    reps = [j for j in reps if j]
    if not reps:
        one = load(results, f'json-open-{kind}')
        reps = [one] if one else []
    return reps


def median_run(runs):
    """The round whose p99 is the median of the rounds."""
    return sorted(runs, key=lambda j: j['latency_us']['p99'])[len(runs) // 2] if runs else None


def rounds(results, name):
    """Every round's figure of NAME (NAME.rounds.json, written by run.sh's pick_median), in round order."""
    j = load(results, name + '.rounds')
    return j['rounds'] if j else []


def rounds_of(results):
    return len(rounds(results, 'json-closed-relay')) or 1


def each(results, name, scale=1.0):
    """' (rounds a, b, c)' for a figure measured in several rounds; '' for one."""
    v = rounds(results, name)
    return f' (rounds {", ".join(f"{x * scale:.1f}" for x in v)})' if len(v) > 1 else ''


def source_note(src):
    """What the binaries were built from: BYOK_BENCH_SOURCE when the build
    directory was not built from this working tree (run.sh --no-build)."""
    if os.environ.get('BYOK_BENCH_SOURCE'):
        return os.environ['BYOK_BENCH_SOURCE']
    return (f'{sh(f"git -C {src} rev-parse --short HEAD")} (working tree; files with uncommitted changes under '
            f'relay/ and crypto/ at run time: {sh(f"git -C {src} status --short -- relay crypto | wc -l")})')


def load_range(results):
    """The 1-minute load average at the start of each load-generator run."""
    p = os.path.join(results, 'loadavg.txt')
    if not os.path.exists(p):
        return ''
    vals = [float(l.split()[1]) for l in open(p) if len(l.split()) >= 2]
    return f'; 1-minute load average at the start of each run: {min(vals):.1f} to {max(vals):.1f}' if vals else ''


def ms(us):
    return f'{us / 1000:.2f}'


def fmt(v, spec='.1f'):
    return '–' if v is None else format(v, spec)


def grant_table(lines, results, seal, get):
    """CPU per request with a scoped key grant (issue 12), beside the sealed
    relay and nginx rows of the closed-loop table."""
    granted = load(results, 'json-closed-relay-grant')
    if not granted:
        return
    rows = [('nginx 1 worker (the sealed requests; it reads neither header)', load(results, 'json-closed-nginx')),
            ('byok-relay 1 thread, sealed', load(results, 'json-closed-relay')),
            ('byok-relay 1 thread, granted', granted)]
    sealed_cpu = get('json-closed-relay', 'proxy_cpu_us_per_req')
    lines.extend(['### Granted requests (scoped key grant + ES256 proof), closed loop', '',
                  'The relay with one grant limited to the body\'s model: every request carries `Authorization: '
                  'Grant <token>` and its own `Byok-Proof`; the relay opens the grant (XChaCha20-Poly1305), checks '
                  'the proof (ES256), reads the body\'s top-level "model", then forwards as for a seal. The other two '
                  'rows are those of the closed-loop table above.', '',
                  '| Target | req/s | p50 ms | p99 ms | proxy CPU µs/req | CPU above the sealed relay µs/req | errors |',
                  '|---|---|---|---|---|---|---|'])
    for name, j in rows:
        if not j:
            continue
        cpu = j.get('proxy_cpu_us_per_req')
        above = cpu - sealed_cpu if j is granted and None not in (cpu, sealed_cpu) else None
        lines.append(f'| {name} | {j["throughput_rps"]:.0f} | {ms(j["latency_us"]["p50"])} | '
                     f'{ms(j["latency_us"]["p99"])} | {fmt(cpu)} | {fmt(above)} | {j["errors"]} |')
    g = (seal or {}).get('grant')
    if g:
        lines.extend(['', f'Expected from the crypto alone (`byok-bench-seal`, above): grant check path − sealed-box '
                          f'check path = {(g["check_path_ns"] - seal["check_path_ns"]) / 1000:.1f} µs.'])
    lines.extend(['', 'Command:', '', '```', cmd(results, 'json-closed-relay-grant'), '```', ''])


def build_type(build):
    """The CMake build type of the binaries measured (--no-build may point at any build directory)."""
    try:
        for line in open(os.path.join(build, 'CMakeCache.txt')):
            if line.startswith('CMAKE_BUILD_TYPE:'):
                return line.split('=', 1)[1].strip() or 'no build type'
    except OSError:
        pass
    return 'build type unknown'


def main():
    results, out, src, build, duration, warmup, conns, lg_core, proxy_core = sys.argv[1:10]
    seal = load(results, 'seal')
    names = ['direct', 'nginx', 'relay']
    label = {'direct': 'mock direct (HTTPS)', 'nginx': 'nginx 1 worker', 'relay': 'byok-relay 1 thread'}
    cpu_model = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    boost = sh("grep -m1 'define BOOST_LIB_VERSION' /usr/include/boost/version.hpp | cut -d'\"' -f2")
    lines = [BEGIN, '']
    lines += [
        f'## Run of {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}',
        '',
        f'- Machine: {os.cpu_count()} CPUs, {cpu_model}, kernel {platform.release()}; '
        f'load average when the report was written: {" ".join(open("/proc/loadavg").read().split()[0:3])}'
        f'{load_range(results)} '
        '(the machine is shared with other engineers\' builds and browser tests; throughput and latency '
        'figures move with their load, CPU time per request much less).',
        f'- Versions: byok-relay {source_note(src)} ({build_type(build)}, GCC '
        f'{sh("gcc -dumpfullversion")}, Boost {boost.replace("_", ".")}), {sh("/usr/sbin/nginx -v 2>&1")}, '
        f'{sh("openssl version")}, libsodium {sh("pkg-config --modversion libsodium")}.',
        f'- Layout: load generator and mock provider pinned to core {lg_core}, the proxy under test '
        f'(relay with `threads: 1`, or nginx with `worker_processes 1`) pinned to core {proxy_core} '
        '(`taskset`). Mock: `byok-mock-provider --tls --no-record --threads 1`. Everything on 127.0.0.1. '
        'Both proxies reach the mock over TLS 1.3 (nginx with `proxy_ssl_protocols TLSv1.2 TLSv1.3`; '
        'in runs before a69413e nginx spoke TLS 1.2, the default of nginx 1.22).',
        f'- Workload: {conns} connections, {duration} s measured after {warmup} s warm-up per run; every request '
        'freshly sealed (sealed before the run, not timed); the same sealed requests go to all three targets '
        '(nginx and the mock ignore the Authorization header).',
        '- CPU per request: the CPU time of every thread of the proxy process (for nginx master+worker; for '
        '"mock direct" the mock itself), from /proc/PID/task/*/schedstat (ns) around the whole load-generator '
        'run, divided by every answer it completed (warm-up included). RSS: VmRSS after the run.',
        f'- The closed-loop workloads and the crypto microbenchmark run in {rounds_of(results)} interleaved rounds '
        '(microbenchmark, then direct, nginx, relay; then the next round); each closed-loop row and each CPU '
        'target uses the round with the median CPU (the limit: the median bare open), and the targets list '
        'every round\'s figure.',
        '',
    ]

    # ---- targets
    def get(name, *path):
        j = load(results, name)
        for p in path:
            if j is None:
                return None
            j = j.get(p) if isinstance(j, dict) else None
        return j

    targets = []
    bare_us = seal['bare_open_ns'] / 1000 if seal else None
    r_cpu, n_cpu = get('json-closed-relay', 'proxy_cpu_us_per_req'), get('json-closed-nginx', 'proxy_cpu_us_per_req')
    if None not in (r_cpu, n_cpu, bare_us):
        limit = n_cpu + 1.2 * bare_us
        targets.append(('Relay CPU per request ≤ nginx CPU per request + 1.2 × bare open',
                        f'relay {r_cpu:.1f} µs{each(results, "json-closed-relay")} vs limit {n_cpu:.1f}'
                        f'{each(results, "json-closed-nginx")} + 1.2 × {bare_us:.1f}'
                        f'{each(results, "seal", 1e-3)} = {limit:.1f} µs', r_cpu <= limit))
    for name, what in (('stream-closed', 'back to back'), ('stream-paced', '20 events 25 ms apart')):
        r, n = get(f'{name}-relay', 'proxy_cpu_us_per_req'), get(f'{name}-nginx', 'proxy_cpu_us_per_req')
        if None not in (r, n) and n > 0:
            targets.append((f'SSE CPU per stream ≤ nginx\'s ({what}; issue 11)',
                            f'relay {r:.1f} µs{each(results, f"{name}-relay")} vs nginx {n:.1f} µs'
                            f'{each(results, f"{name}-nginx")}: {r / n:.2f} ×', r <= n))
    if seal:
        targets.append(('Seal check ≤ 1.1 × bare `crypto_box_seal_open`',
                        f'{seal["check_path_ns"] / 1000:.2f} µs vs {bare_us:.2f} µs: ratio {seal["ratio"]:.3f}',
                        seal['ratio'] <= 1.1))
    r_open, d_open = median_run(open_runs(results, 'relay')), median_run(open_runs(results, 'direct'))
    if r_open and d_open:
        r99, d99 = r_open['latency_us']['p99'], d_open['latency_us']['p99']
        added = r99 - d99
        rounds = len(open_runs(results, 'relay'))
        targets.append(('p99 added latency over direct at half of peak load < 1 ms',
                        f'relay p99 {ms(r99)} ms − direct p99 {ms(d99)} ms = {ms(added)} ms'
                        f'{f" (median of {rounds} interleaved rounds each)" if rounds > 1 else ""}', added < 1000))
    rs, ns_ = get('stream-closed-relay', 'throughput_rps'), get('stream-closed-nginx', 'throughput_rps')
    if None not in (rs, ns_) and ns_ > 0:
        targets.append(('Streaming throughput within 10 % of nginx',
                        f'relay {rs:.0f} vs nginx {ns_:.0f} streams/s ({(rs / ns_ - 1) * 100:+.1f} %)',
                        rs >= 0.9 * ns_))
    for n in (1000, 5000):
        m = load(results, f'mem-relay-{n}')
        if m and m.get('rss_per_stream_kib') is not None:
            targets.append((f'Memory per concurrent stream ≤ 64 KiB ({n} streams)',
                            f'{m["rss_per_stream_kib"]:.1f} KiB ({m["streams_held"]} streams held)',
                            m['rss_per_stream_kib'] <= 64))
    soak_file = os.path.join(results, 'soak-rss.txt')
    if os.path.exists(soak_file):
        # The replay cache fills for seal_max_age_s (60 s) before it forgets
        # as fast as it learns: drift is measured from 2 minutes on, and the
        # figure from 1 minute is shown too.
        pts = [tuple(map(int, l.split())) for l in open(soak_file) if l.strip()]
        last = pts[-1][1] if pts else 0
        def drift_from(sec):
            t0, r0 = next(((t, r) for t, r in pts if t >= sec), pts[0] if pts else (0, 0))
            return t0, r0, ((last - r0) / r0 * 100 if r0 else 0)
        t2, r2, d2 = drift_from(120)
        t1, r1, d1 = drift_from(60)
        targets.append(('No growth over a 5-minute soak (RSS drift < 5 %)',
                        f'RSS {r2} KiB at {t2} s → {last} KiB at {pts[-1][0]} s ({d2:+.1f} %); from {t1} s: {d1:+.1f} %',
                        abs(d2) < 5))
    else:
        targets.append(('No growth over a 5-minute soak (RSS drift < 5 %)', 'not run in this pass (`run.sh --soak`)',
                        None))
    lines += ['### Targets (issues 7 and 11)', '', '| Target | Measured | Result |', '|---|---|---|']
    for t, m, ok in targets:
        lines.append(f'| {t} | {m} | {"MET" if ok else ("MISSED" if ok is not None else "NOT RUN")} |')
    lines.append('')

    # ---- seal microbenchmark
    if seal:
        p, a = seal['parts_ns'], seal.get('alternatives_ns', {})
        lines += [
            '### Per-request crypto path (`byok-bench-seal`, pinned to the proxy core)', '',
            f'{seal["batch"]} fresh seals × {seal["rounds"]} rounds, {seal["body_bytes"]}-byte body, '
            f'{seal["payload_bytes"]}-byte payload; thread CPU time, median of the rounds.', '',
            '| Operation | ns/op |', '|---|---|',
            f'| check path: SHA-256 of the body + `seal_checker::check` | {seal["check_path_ns"]:.0f} |',
            f'| bare `crypto_box_seal_open` | {seal["bare_open_ns"]:.0f} |',
            f'| ratio | {seal["ratio"]:.3f} |',
            f'| — SHA-256 of the 600-byte body (libsodium) | {p["sha256_body"]:.0f} |',
            f'| — base64url decode of the box (libsodium, constant time) | {p["base64url_decode"]:.0f} |',
            f'| — replay lookup + insert | {p["replay_lookup_insert"]:.0f} |',
            f'| — payload parse (json_lite) | {p["payload_parse"]:.0f} |',
            f'| — secret memory allocation | {p["secret_alloc"]:.0f} |',
        ]
        if a:
            lines += [f'| alternative: OpenSSL `SHA256` of the body (SHA extensions) | {a["openssl_sha256_body"]:.0f} |',
                      f'| alternative: table-driven base64url decode | {a["table_base64url_decode"]:.0f} |']
        g = seal.get('grant')
        if g:
            lines += [f'| grant check path: SHA-256 of the body + `grant_checker::open` + `claim_proof` | '
                      f'{g["check_path_ns"]:.0f} |',
                      f'| — its floor: XChaCha20-Poly1305 open of the grant + one ES256 verification | '
                      f'{g["aead_open_ns"]:.0f} + {g["es256_verify_ns"]:.0f} |',
                      f'| — grant check path / floor | {g["check_ratio_vs_floor"]:.3f} |',
                      f'| — grant check path − sealed-box check path | {g["check_path_ns"] - seal["check_path_ns"]:.0f} |']
        lines += [f'| client side, not timed in any run: payload + `crypto_box_seal` + base64url | '
                  f'{seal["client_seal_ns"]:.0f} |', '', f'Command: `taskset -c {proxy_core} byok-bench-seal`', '']

    # ---- tables per workload
    def table(title, prefix, stream=False, open_loop=False):
        if open_loop:
            rounds = {n: open_runs(results, n) for n in names}
            rows = [(n, median_run(rounds[n])) for n in names]
        else:
            rows = [(n, load(results, f'{prefix}-{n}')) for n in names]
        rows = [(n, j) for n, j in rows if j]
        if not rows:
            return
        lines.extend([f'### {title}', ''])
        hdr = '| Target | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |'
        sep = '|---|---|---|---|---|---|---|'
        if stream:
            hdr += ' first event p50 / p99 ms | last event p50 / p99 ms | event gap p50 / p99 ms | events/stream |'
            sep += '---|---|---|---|'
        if open_loop:
            hdr += ' p99 added vs direct ms | p99 of each round ms | late sends |'
            sep += '---|---|---|'
        hdr += ' proxy CPU µs/req | proxy RSS MiB | errors |'
        sep += '---|---|---|'
        lines.extend([hdr, sep])
        direct = dict(rows).get('direct')
        for n, j in rows:
            l = j['latency_us']
            row = (f'| {label[n]} | {j["throughput_rps"]:.0f} | {ms(l["p50"])} | {ms(l["p90"])} | {ms(l["p99"])} | '
                   f'{ms(l["p999"])} | {ms(l["max"])} |')
            if stream:
                f, la, g = j['first_event_us'], j.get('last_event_us', {}), j.get('event_gap_us', {})
                pair = lambda d: f'{ms(d["p50"])} / {ms(d["p99"])}' if 'p50' in d else '–'  # noqa: E731
                row += f' {pair(f)} | {pair(la)} | {pair(g)} | {j.get("events_per_stream", 0):.1f} |'
            if open_loop:
                add = (l['p99'] - direct['latency_us']['p99']) if direct and n != 'direct' else None
                each = ', '.join(ms(r['latency_us']['p99']) for r in rounds[n])
                row += f' {fmt(add / 1000 if add is not None else None, ".2f")} | {each} | {j["late_sends"]} |'
            cpu = j.get('proxy_cpu_us_per_req')
            row += (f' {fmt(cpu)}{" (mock)" if n == "direct" else ""} | {j["proxy_rss_kib"] / 1024:.1f} | '
                    f'{j["errors"]} |')
            lines.append(row)
        lines.append('')
        lines.append('Commands:')
        lines.append('')
        lines.append('```')
        for n, j in rows:
            lines.append(cmd(results, f'{prefix}-{n}') or cmd(results, j.get('label', '')))
        lines.append('```')
        lines.append('')

    table('Non-streaming, closed loop (peak)', 'json-closed')
    grant_table(lines, results, seal, get)
    half = (median_run(open_runs(results, 'relay')) or {}).get('rate')
    table(f'Non-streaming, open loop at half of the relay\'s peak ({fmt(half, ".0f")} req/s; latency from the '
          'intended send time; each row is the round with the median p99)', 'json-open', open_loop=True)
    table('Streaming (20-event SSE, events sent back to back), closed loop', 'stream-closed', stream=True)
    table('Streaming, paced (20 events 25 ms apart), closed loop', 'stream-paced', stream=True)
    table('Streaming, paced, the connections started over one event interval (25 ms) instead of at once',
          'stream-spread', stream=True)
    ratios = []
    for name, what in (('stream-paced', 'started at once (issue 11\'s workload)'),
                       ('stream-spread', 'started over 25 ms')):
        r, n = get(f'{name}-relay', 'proxy_cpu_us_per_req'), get(f'{name}-nginx', 'proxy_cpu_us_per_req')
        if None not in (r, n) and n > 0:
            ratios.append(f'{what} {r / n:.2f} ×')
    if len(ratios) == 2:
        lines.extend([f'Relay CPU per paced stream over nginx\'s: {ratios[0]}; {ratios[1]}. Started at once, the '
                      'streams\' events fall due together all run long, and nginx, which forwards the requests '
                      'without opening a seal, gets more of them per wake-up.', ''])

    figs = [('bench-latency-open.svg', 'Non-streaming latency by percentile, open loop'),
            ('bench-latency-closed.svg', 'Non-streaming latency by percentile, closed loop'),
            ('bench-stream-first-event.svg', 'Paced SSE: time to the first event by percentile'),
            ('bench-stream-last-event.svg', 'Paced SSE: time to the last event by percentile')]
    figdir = os.path.dirname(os.path.abspath(out))
    figs = [(f, t) for f, t in figs if os.path.exists(os.path.join(figdir, f))]
    if figs:
        lines += ['### Latency distributions', '',
                  'From the `--hist-out` histograms of the runs above (HdrHistogram percentile-distribution '
                  'text; drawn by `bench/plot_hist.py` with gnuplot). The x axis is 1/(1−percentile) on a log '
                  'scale, so the tail gets as much room as the median.', '']
        for f, t in figs:
            lines += [f'![{t}]({f})', '']

    mem = [load(results, f'mem-{k}-{n}') for n in (1000, 5000) for k in ('relay', 'nginx')]
    mem = [m for m in mem if m]
    def section(title, intro, columns, rows, names):
        """A memory table: one row per proxy run, then the commands that made them."""
        lines.extend([f'### {title}', '', intro, '', '| ' + ' | '.join(columns) + ' |',
                      '|' + '---|' * len(columns)])
        lines.extend('| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows)
        lines.extend(['', 'Commands:', '', '```'] + [cmd(results, n) for n in names] + ['```', ''])

    if mem:
        section('Memory per concurrent stream (slow SSE: one event a second)',
                'Each proxy is restarted and warmed with a short run, its RSS taken, then N streams are opened and '
                'held; the peak RSS while they are held, minus the base, divided by the streams that had '
                'received their response head when the run ended.',
                ['Proxy', 'streams wanted', 'held', 'RSS base MiB', 'RSS peak MiB', 'KiB per stream', 'errors'],
                [[label[m['proxy']], m['streams_wanted'], m['streams_held'], f'{m["rss_base_kib"] / 1024:.1f}',
                  f'{m["rss_peak_kib"] / 1024:.1f}', fmt(m['rss_per_stream_kib']), m['errors']] for m in mem],
                [f'mem-{m["proxy"]}-{m["streams_wanted"]}' for m in mem])
    idle = [load(results, f[:-5]) for k in ('relay', 'nginx') for f in sorted(os.listdir(results))
            if f.startswith(f'idle-{k}-') and f.endswith('.json')]
    idle = [m for m in idle if m]
    if idle:
        section('Memory per idle keep-alive client connection',
                f'Each proxy is restarted and warmed, its RSS taken; then {idle[0]["conns_wanted"]:,} connections '
                'each send one request (opened over 10 s) and stay open, idle; the highest RSS while all are idle '
                '(from 3 s after the last one opened), minus the base, divided by the connections still idle and '
                'open at the end.',
                ['Proxy', 'connections', 'idle at end', 'RSS base MiB', 'RSS idle MiB', 'bytes per idle connection',
                 'errors'],
                [[label[m['proxy']], m['conns_wanted'], m['conns_idle'], f'{m["rss_base_kib"] / 1024:.1f}',
                  f'{m["rss_idle_kib"] / 1024:.1f}', fmt(m['bytes_per_conn'], '.0f'), m['errors']] for m in idle],
                [f'idle-{m["proxy"]}-{m["conns_wanted"]}' for m in idle])
        by = {m['proxy']: m for m in idle}
        lines += ['Issue 11 memory targets, from this run:', '']
        if 'relay' in by and 'nginx' in by and None not in (by['relay']['bytes_per_conn'], by['nginx']['bytes_per_conn']):
            r, n = by['relay']['bytes_per_conn'], by['nginx']['bytes_per_conn']
            ratio = f'{r / n:.1f} ×' if n > 0 else 'nginx below what RSS resolves'
            lines.append(f'- idle keep-alive connection ≤ 2 × nginx: relay {r:.0f} B vs nginx {n:.0f} B '
                         f'({ratio}): {"MET" if r <= 2 * n else "MISSED"}')
        for n in (5000, 1000):
            r, g = load(results, f'mem-relay-{n}'), load(results, f'mem-nginx-{n}')
            if r and g and r.get('rss_per_stream_kib') and g.get('rss_per_stream_kib'):
                a, b = r['rss_per_stream_kib'], g['rss_per_stream_kib']
                lines.append(f'- held slow stream ≤ nginx ({n} streams): relay {a:.1f} KiB vs nginx {b:.1f} KiB '
                             f'({a / b:.2f} ×): {"MET" if a <= b else "MISSED"}')
                break
        lines.append('')
    if os.path.exists(soak_file):
        pts = [l.split() for l in open(soak_file) if l.strip()]
        s = load(results, 'soak-relay')
        lines += ['### Soak', '', f'`{cmd(results, "soak-relay")}`', '']
        if s:
            lines.append(f'{s["requests"]} requests, {s["errors"]} errors, p99 {ms(s["latency_us"]["p99"])} ms.')
            lines.append('')
        lines += ['RSS (KiB) by second: ' + ', '.join(f'{t}s={r}' for t, r in pts), '']
    lines.append(END)

    text = open(out).read() if os.path.exists(out) else ''
    block = '\n'.join(lines)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    elif text.strip():
        # A file whose markers were edited away: never replace what people
        # wrote around the figures; write the block beside it instead.
        out = out + '.measured'
        text = block + '\n'
        print(f'report_md: {out}: the MEASURED markers are missing from the target; wrote the block here',
              file=sys.stderr)
    else:
        text = ('# Benchmarks\n\nMeasured by `bench/run.sh` (see the end of this file for what each figure '
                'means).\n\n' + block + '\n')
    open(out, 'w').write(text)


if __name__ == '__main__':
    main()
