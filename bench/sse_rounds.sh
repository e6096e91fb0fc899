#!/usr/bin/env bash
# Issue 11's streaming target, and only it, measured in enough rounds to say
# which side of nginx the relay is on: SSE CPU per stream, relay against
# nginx, in ROUNDS interleaved pairs, each round with the bare seal open
# measured on the proxy's core. bench/run.sh measures everything in 5 rounds;
# there the relay and nginx differed by less than the spread of the rounds.
#
#   bench/sse_rounds.sh [--rounds N] [--duration S] [--connections N]
#                       [--workloads sse,sse-paced,sse-spread] [--out FILE]
#
# Workloads (as in bench/run.sh): sse, 20 events back to back (its 3);
# sse-paced, 20 events 25 ms apart, the connections started at once (3b);
# sse-spread, the same started over one event interval (3c). Default: 12
# rounds of 8 s (after 1 s of warm-up) of each, 32 connections; about 7
# minutes a workload. The order of the two proxies alternates from round to
# round. Prints a Markdown report (and writes it to --out): every round's CPU
# per stream, the median of each side and of the per-round ratios, the rounds
# the relay was at or below nginx, and the relay's figure with one bare open
# taken off (nginx does not open a seal). Binaries from BYOK_BENCH_BUILD
# (default build-bench, as bench/run.sh builds it). Loadgen and mock on core
# 0, the proxy on core 1; loopback only; stops only what it started.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BYOK_BENCH_BUILD:-$SRC/build-bench}
ROUNDS=12
DURATION=8
WARMUP=1
CONNECTIONS=32
WORKLOADS=sse,sse-paced,sse-spread
OUT=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n 2,21p "$0"; exit 0 ;;
    *) echo "sse_rounds.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

WORK=$(mktemp -d /tmp/byok-sse-rounds-XXXXXX)
RESULTS=$WORK/results
mkdir -p "$RESULTS"
log() { printf '%s sse_rounds.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
LG_CORE=0
PROXY_CORE=1
RELAY_BIN=$BUILD/byok-relay
MOCK_BIN=$BUILD/tests/mock_provider/byok-mock-provider
LG_BIN=$BUILD/bench/byok-loadgen
SEAL_BIN=$BUILD/bench/byok-bench-seal
for b in "$RELAY_BIN" "$MOCK_BIN" "$LG_BIN" "$SEAL_BIN"; do
  [ -x "$b" ] || { echo "sse_rounds.sh: $b not built (BYOK_BENCH_BUILD)" >&2; exit 2; }
done
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" || true

IFS=, read -r -a kinds <<<"$WORKLOADS"
for w in "${kinds[@]}"; do
  case $w in
    sse) write_body sse "$WORK/body-sse.json" ;;
    sse-paced|sse-spread) write_body sse-paced "$WORK/body-$w.json" ;;
    *) echo "sse_rounds.sh: no workload $w (sse, sse-paced, sse-spread)" >&2; exit 2 ;;
  esac
done
set_common_args

start_mock
start_relay
start_nginx

for rep in $(seq "$ROUNDS"); do
  taskset -c $PROXY_CORE "$SEAL_BIN" --json >"$RESULTS/seal-$rep.json"
  order=(nginx relay)
  [ $((rep % 2)) = 0 ] && order=(relay nginx)
  for w in "${kinds[@]}"; do
    extra=(--stream --body "$WORK/body-$w.json")
    [ "$w" = sse-spread ] && extra+=(--ramp 0.025)
    for kind in "${order[@]}"; do
      drive "$w-$kind-$rep" "$kind" "${COMMON[@]}" "${extra[@]}"
    done
  done
done

report=$WORK/report.md
python3 - "$RESULTS" "$ROUNDS" "$WORKLOADS" >"$report" <<'PY'
import json, os, statistics, sys
res, rounds, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(',')
def load(name):
    return json.load(open(os.path.join(res, name + '.json')))
opens = [load(f'seal-{r}')['bare_open_ns'] / 1000 for r in range(1, rounds + 1)]
print(f'Bare `crypto_box_seal_open` by round (µs): {", ".join("%.1f" % v for v in opens)}; '
      f'median {statistics.median(opens):.1f}.\n')
what = {'sse': '20 events back to back', 'sse-paced': '20 events 25 ms apart, connections started at once',
        'sse-spread': '20 events 25 ms apart, connections started over 25 ms'}
for w in workloads:
    rows = []
    for r in range(1, rounds + 1):
        n, y = load(f'{w}-nginx-{r}'), load(f'{w}-relay-{r}')
        if n['errors'] or y['errors']:
            sys.exit(f'{w} round {r}: errors (nginx {n["errors"]}, relay {y["errors"]})')
        rows.append((r, n['proxy_cpu_us_per_req'], y['proxy_cpu_us_per_req'], opens[r - 1],
                     n['completed_total'], y['completed_total']))
    print(f'### {w}: {what[w]}\n')
    print('| Round | first | nginx µs/stream | relay µs/stream | relay / nginx | relay − open | (relay − open) / nginx | streams nginx / relay |')
    print('|---|---|---|---|---|---|---|---|')
    for r, n, y, o, cn, cy in rows:
        first = 'nginx' if r % 2 else 'relay'
        print(f'| {r} | {first} | {n:.1f} | {y:.1f} | {y / n:.3f} | {y - o:.1f} | {(y - o) / n:.3f} | {cn} / {cy} |')
    nm = statistics.median(x[1] for x in rows)
    ym = statistics.median(x[2] for x in rows)
    ratios = [x[2] / x[1] for x in rows]
    less = [x[2] - x[3] for x in rows]
    at_or_below = sum(1 for x in rows if x[2] <= x[1])
    less_ratios = [(x[2] - x[3]) / x[1] for x in rows]
    print(f'\nMedians: nginx {nm:.1f}, relay {ym:.1f} µs a stream (ratio of the medians {ym / nm:.3f}); '
          f'median of the per-round ratios {statistics.median(ratios):.3f} '
          f'(from {min(ratios):.3f} to {max(ratios):.3f}); the relay at or below nginx in '
          f'{at_or_below} of {len(rows)} rounds. With the round\'s bare open taken off: relay '
          f'{statistics.median(less):.1f} µs (ratio of the medians {statistics.median(less) / nm:.3f}); '
          f'median of the per-round ratios {statistics.median(less_ratios):.3f} '
          f'(from {min(less_ratios):.3f} to {max(less_ratios):.3f}); at or below nginx '
          f'in {sum(1 for x in rows if x[2] - x[3] <= x[1])} of {len(rows)} rounds.\n')
PY
cat "$report"
[ -z "$OUT" ] || cp "$report" "$OUT"
log "raw results: $RESULTS"
