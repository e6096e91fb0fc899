#!/usr/bin/env bash
# The byok-relay benchmark: the relay side by side with nginx (a mature proxy
# doing no cryptography) and with the mock provider reached directly, all
# three driven by byok-loadgen with the same sealed requests, in one run.
#
#   bench/run.sh [--quick] [--soak] [--no-build] [--duration S] [--connections N] [--out FILE]
#   bench/run.sh --redis [--quick] [--no-build] [--duration S]
#
# --redis measures only what the shared replay store (issue 15) adds: the
# relay without and with "replay_store" (redis-server on core 0 beside the
# load generator), CPU per request in a closed loop and p50/p99 in an open
# loop at half the plain relay's peak, three interleaved rounds each. It
# prints a table and writes $WORK/results/redis-summary.md; docs/benchmarks.md
# is left alone.
#
# Layout on this 2-core machine: the load generator and the mock provider on
# core 0, the proxy under test (relay, 1 thread; or nginx, 1 worker) on core 1.
# Everything listens on 127.0.0.1 only. Results: docs/benchmarks.md (the part
# between the MEASURED markers is rewritten; the rest is kept), the latency
# plots (SVG, gnuplot) beside it, and the raw JSON and histograms under the
# work directory printed at the end. --quick: 4 s runs, slow streams held
# 1,000 at a time only (about 7.5 minutes instead of 11). With --no-build,
# BYOK_BENCH_BUILD names the build directory and BYOK_BENCH_SOURCE (optional)
# says in the report what it was built from.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BYOK_BENCH_BUILD:-$SRC/build-bench}
OUT=$SRC/docs/benchmarks.md
DURATION=8
WARMUP=1
CONNECTIONS=32
SOAK=0
REDIS=0
SOAK_S=300
QUICK=0
IDLE_N=${BYOK_BENCH_IDLE_N:-5000}  # (smaller only to try the script out)
BUILD_FIRST=1
LG_CORE=0
PROXY_CORE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --soak) SOAK=1 ;;
    --redis) REDIS=1 ;;
    --quick) QUICK=1; DURATION=4 ;;
    --soak-seconds) SOAK_S=$2; shift ;;
    --no-build) BUILD_FIRST=0 ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d /tmp/byok-bench-XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results
mkdir -p "$RESULTS"
log() { printf '%s run.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The helpers, cleanup(), and the mock, relay and nginx as started here and
# by bench/callgrind.sh: bench/lib.sh.
PROXY_WRAP=()  # (lib.sh's options: not taken from the environment here)
PROXY_START_S=20
NGINX_SINGLE_PROCESS=0
NGINX_SSL_PROTOCOLS="TLSv1.2 TLSv1.3"
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"
trap cleanup EXIT

# 10,000 streams need 20,000+ descriptors across the processes.
ulimit -n "$(ulimit -Hn)" || true

if [ "$BUILD_FIRST" = 1 ]; then
  log "building Release in $BUILD"
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBYOK_TESTS=OFF >/dev/null
  ninja -C "$BUILD" -j1 byok-relay byok-mock-provider byok-loadgen byok-bench-seal >/dev/null
fi
RELAY_BIN=$BUILD/byok-relay
MOCK_BIN=$BUILD/tests/mock_provider/byok-mock-provider
LG_BIN=$BUILD/bench/byok-loadgen
SEAL_BIN=$BUILD/bench/byok-bench-seal


# drive(): bench/lib.sh.

# ---- --redis: what the shared replay store adds ------------------------------
redis_bench() {
  start_mock
  local port
  port=$(free_port)
  mkdir -p "$WORK/redis"
  taskset -c $LG_CORE redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK/redis" --daemonize no >"$WORK/redis.log" 2>&1 &
  local redis_pid=$!
  PIDS+=("$redis_pid")
  wait_line "$WORK/redis.log" 'Ready to accept connections' >/dev/null
  start_relay
  local plain_pid=$RELAY_PID plain_url=$RELAY_URL
  RELAY_EXTRA="
  \"replay_store\": {\"redis\": \"redis://127.0.0.1:$port/0\", \"timeout_ms\": 50, \"on_error\": \"refuse\"},"
  start_relay
  RELAY_EXTRA=
  local store_pid=$RELAY_PID store_url=$RELAY_URL
  wait_line "$WORK/relay-$RELAY_N.log" 'replay store: connected' >/dev/null
  local body=$WORK/body-json.json
  write_body json "$body"
  local common=(--connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --keys 64 --body "$body")
  local r0 r1
  r0=$(cpu_ns "$redis_pid")
  for rep in 1 2 3; do
    RELAY_PID=$plain_pid; RELAY_URL=$plain_url
    drive "redis-closed-plain-$rep" relay "${common[@]}" --preseal $(( (DURATION + WARMUP) * 9000 ))
    RELAY_PID=$store_pid; RELAY_URL=$store_url
    drive "redis-closed-store-$rep" relay "${common[@]}" --preseal $(( (DURATION + WARMUP) * 9000 ))
  done
  local peak half
  peak=$(python3 -c "import json,statistics; print(statistics.median(json.load(open('$RESULTS/redis-closed-plain-%d.json' % r))['throughput_rps'] for r in (1,2,3)))")
  half=$(python3 -c "print(max(50, round($peak / 2)))")
  log "open loop at $half req/s (half of the plain relay's median peak $peak)"
  for rep in 1 2 3; do
    RELAY_PID=$plain_pid; RELAY_URL=$plain_url
    drive "redis-open-plain-$rep" relay "${common[@]}" --rate "$half"
    RELAY_PID=$store_pid; RELAY_URL=$store_url
    drive "redis-open-store-$rep" relay "${common[@]}" --rate "$half"
  done
  r1=$(cpu_ns "$redis_pid")
  python3 - "$RESULTS" "$half" "$r0" "$r1" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY' | tee "$RESULTS/redis-summary.md" >&2
import json, statistics, sys
res, half, r0, r1, load = sys.argv[1:]
def runs(kind, mode):
    return [json.load(open(f'{res}/redis-{mode}-{kind}-{r}.json')) for r in (1, 2, 3)]
med = lambda xs: statistics.median(xs)
cpu = {k: med(j['proxy_cpu_us_per_req'] for j in runs(k, 'closed')) for k in ('plain', 'store')}
peak = {k: med(j['throughput_rps'] for j in runs(k, 'closed')) for k in ('plain', 'store')}
p50 = {k: med(j['latency_us']['p50'] for j in runs(k, 'open')) for k in ('plain', 'store')}
p99 = {k: med(j['latency_us']['p99'] for j in runs(k, 'open')) for k in ('plain', 'store')}
errors = sum(j['errors'] for k in ('plain', 'store') for m in ('closed', 'open') for j in runs(k, m))
store_n = sum(j['completed_total'] for m in ('closed', 'open') for j in runs('store', m))
redis_us = (int(r1) - int(r0)) / 1e9 / store_n * 1e6 if store_n else float('nan')
print('| relay (1 thread, core 1) | closed loop: req/s | CPU per request | open loop at %s req/s: p50 | p99 |' % half)
print('|---|---|---|---|---|')
for k, name in (('plain', 'local replay cache only'), ('store', 'with replay_store (Redis on core 0)')):
    print(f'| {name} | {peak[k]:.0f} | {cpu[k]:.1f} µs | {p50[k] / 1000:.3f} ms | {p99[k] / 1000:.3f} ms |')
print(f'\nadded by the store: {cpu["store"] - cpu["plain"]:+.1f} µs CPU per request in the relay, '
      f'{(p50["store"] - p50["plain"]) / 1000:+.3f} ms at p50; redis-server {redis_us:.1f} µs CPU per claim; '
      f'errors {errors}; medians of 3 interleaved rounds; load average at the end {load}')
PY
}
if [ "$REDIS" = 1 ]; then
  redis_bench
  log "raw results in $RESULTS"
  exit 0
fi

start_mock
start_relay
start_nginx

BODY_JSON=$WORK/body-json.json
BODY_STREAM=$WORK/body-stream.json
write_body json "$BODY_JSON"
write_body sse "$BODY_STREAM"

set_common_args

# The CPU targets compare figures taken minutes apart on a shared machine, so
# each closed-loop workload runs in ROUNDS interleaved rounds, and each
# target's row is the round with the median CPU per request (the limit's bare
# open likewise: the crypto microbenchmark runs once per round, on the proxy's
# core with nothing else running there). Every round's figure is kept in
# NAME.rounds.json and printed in the report.
ROUNDS=${BYOK_BENCH_ROUNDS:-3}
pick_median() {  # NAME FIELD: NAME-1..ROUNDS.* -> NAME.*, from the round with the median FIELD (a.b: nested)
  local r
  r=$(python3 - "$RESULTS" "$1" "$2" "$ROUNDS" <<'PY'
import json, os, sys
res, name, field, rounds = sys.argv[1:]
vals = []
for r in range(1, int(rounds) + 1):
    p = os.path.join(res, f'{name}-{r}.json')
    if os.path.exists(p):
        v = json.load(open(p))
        for k in field.split('.'):
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append((v, r))
json.dump({'field': field, 'rounds': [v for v, _ in sorted(vals, key=lambda x: x[1])]},
          open(os.path.join(res, f'{name}.rounds.json'), 'w'))
print(sorted(vals)[len(vals) // 2][1] if vals else '')
PY
)
  [ -n "$r" ] || { log "$1: no round to pick"; return 1; }
  local f
  for f in "$RESULTS/$1-$r".*; do
    cp "$f" "$RESULTS/$1.${f#"$RESULTS/$1-$r."}"
  done
}

closed_rounds() {  # NAME ARGS...: ROUNDS interleaved rounds of direct, nginx, relay; then each one's median-CPU round
  local name=$1 rep kind
  shift
  for rep in $(seq "$ROUNDS"); do
    for kind in direct nginx relay; do
      drive "$name-$kind-$rep" $kind "${COMMON[@]}" "$@"
    done
  done
  for kind in direct nginx relay; do
    pick_median "$name-$kind" proxy_cpu_us_per_req
  done
}

# ---- 0 and 1. the crypto microbenchmark; non-streaming, closed loop: peak ----
# throughput and CPU per request
for rep in $(seq "$ROUNDS"); do
  log "seal microbenchmark, round $rep"
  taskset -c $PROXY_CORE "$SEAL_BIN" --json >"$RESULTS/seal-$rep.json"
  for kind in direct nginx relay; do
    drive "json-closed-$kind-$rep" $kind "${COMMON[@]}" --body "$BODY_JSON"
  done
done
pick_median seal bare_open_ns
log "bare open by round: $(python3 -c "import json; print(', '.join('%.2f us' % (v / 1000) for v in json.load(open('$RESULTS/seal.rounds.json'))['rounds']))")"
for kind in direct nginx relay; do
  pick_median "json-closed-$kind" proxy_cpu_us_per_req
done

# ---- 1b. the relay with a scoped key grant (issue 12), closed loop ------------
# One grant limited to the body's model (so the relay reads each body's
# top-level "model" too) and a fresh ES256 Byok-Proof per request: the CPU per
# granted request, next to the sealed row above and nginx's (which ignores
# both headers; its row above carried the sealed requests).
drive "json-closed-relay-grant" relay "${COMMON[@]}" --body "$BODY_JSON" --grant --grant-model gpt-4o-mini

# ---- 2. non-streaming, open loop at half of the relay's peak: added latency --
PEAK=$(python3 -c "import json; print(json.load(open('$RESULTS/json-closed-relay.json'))['throughput_rps'])")
HALF=$(python3 -c "print(max(50, round($PEAK / 2)))")
log "open loop at $HALF req/s (half of the relay's peak $PEAK)"
# Three interleaved rounds: one stall of the shared machine must not decide the p99.
for rep in 1 2 3; do
  for kind in direct nginx relay; do
    drive "json-open-$kind-$rep" $kind --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" \
      --keys 64 --rate "$HALF" --body "$BODY_JSON"
  done
done

# ---- 3. streaming (20-event SSE), closed loop --------------------------------
closed_rounds stream-closed --stream --body "$BODY_STREAM"

# ---- 3b. paced streaming: 20 events 25 ms apart (about 0.5 s a stream) ------
# What a user sees: the time to the first event and to the last.
BODY_PACED=$WORK/body-paced.json
write_body sse-paced "$BODY_PACED"
closed_rounds stream-paced --stream --body "$BODY_PACED"

# ---- 3c. the same paced streams, the connections started over one event ----
# interval (25 ms) instead of at once. Started at once, every connection's
# events fall due within a millisecond of each other for the whole run, and
# a proxy that forwards the requests fastest gets them in the biggest batches
# per wake-up; started apart, each stream keeps its own phase, as the streams
# of independent users do. Not issue 11's workload: for comparison with 3b.
closed_rounds stream-spread --ramp 0.025 --stream --body "$BODY_PACED"

# ---- 4. memory per concurrent stream: hold N slow streams ---------------------
SLOW=$WORK/body-slow.json
echo '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Take your time."}],"stream":true,"mock":{"events":600,"interval_ms":1000}}' >"$SLOW"
hold_streams() {  # KIND N
  local kind=$1 n=$2 pids url extra=()
  local hold=$(( n >= 5000 ? 30 : 12 )) ramp=$(( n >= 5000 ? 12 : 4 ))  # (after n is set: one local expands all its words first)
  if [ "$kind" = relay ]; then
    stop_pid "$RELAY_PID"; start_relay; pids=("$RELAY_PID"); url=$RELAY_URL
  else
    stop_pid "$NGINX_PID"; start_nginx; pids=("$NGINX_WORKER"); url=$NGINX_URL; extra=(--keys-url "$RELAY_URL/v1/keys")
  fi
  # Warm the fresh process (TLS context, pools, allocator) with a short run first.
  taskset -c $LG_CORE "$LG_BIN" --url "$url" "${extra[@]}" --connections 8 --duration 1 --stream \
    --body "$BODY_STREAM" >/dev/null
  sleep 0.5
  local base peak=0 r
  base=$(rss_kib "${pids[@]}")
  local name=mem-$kind-$n
  local cmd=(taskset -c $LG_CORE "$LG_BIN" --url "$url" "${extra[@]}" --connections "$n" --duration "$hold"
             --ramp "$ramp" --preseal $((n + 500)) --stream --body "$SLOW" --timeout 120 --label "$name" --json)
  echo "${cmd[*]}" | sed "s|$BUILD/||; s|$WORK|\$WORK|g" >"$RESULTS/$name.cmd"
  "${cmd[@]}" >"$RESULTS/$name.raw" 2>"$RESULTS/$name.err" &
  local lg=$!
  while kill -0 $lg 2>/dev/null; do
    r=$(rss_kib "${pids[@]}" 2>/dev/null || echo 0)
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.5
  done
  wait $lg || true
  python3 - "$RESULTS/$name.raw" "$RESULTS/$name.json" "$kind" "$n" "$base" "$peak" <<'PY'
import json, sys
raw, out, kind, n, base, peak = sys.argv[1:]
j = json.load(open(raw))
held = j['streaming_at_end']
j.update(proxy=kind, streams_wanted=int(n), streams_held=held, rss_base_kib=int(base), rss_peak_kib=int(peak),
         rss_per_stream_kib=(int(peak) - int(base)) / held if held else None)
json.dump(j, open(out, 'w'), indent=1)
PY
  log "$name: $(python3 -c "import json; j=json.load(open('$RESULTS/$name.json')); print('held %d of %d streams, RSS %d -> %d KiB, %s KiB per stream, errors %d' % (j['streams_held'], j['streams_wanted'], j['rss_base_kib'], j['rss_peak_kib'], ('%.1f' % j['rss_per_stream_kib']) if j['rss_per_stream_kib'] else '-', j['errors']))")"
}
STREAM_NS=(1000 5000)
[ "$QUICK" = 1 ] && STREAM_NS=(1000)
for n in "${STREAM_NS[@]}"; do
  hold_streams relay $n
  hold_streams nginx $n
done

# ---- 4b. memory per idle keep-alive client connection ------------------------
# N connections each send one request and then stay open, idle, for the rest
# of the run; the proxy's RSS while they are all idle, minus its base, divided
# by the connections still idle and open at the end.
idle_conns() {  # KIND N
  local kind=$1 n=$2 pids url extra=() hold=24 ramp=10
  if [ "$kind" = relay ]; then
    stop_pid "$RELAY_PID"; start_relay; pids=("$RELAY_PID"); url=$RELAY_URL
  else
    stop_pid "$NGINX_PID"; start_nginx; pids=("$NGINX_WORKER"); url=$NGINX_URL; extra=(--keys-url "$RELAY_URL/v1/keys")
  fi
  taskset -c $LG_CORE "$LG_BIN" --url "$url" "${extra[@]}" --connections 8 --duration 1 \
    --body "$BODY_JSON" >/dev/null
  sleep 0.5
  local base r start
  base=$(rss_kib "${pids[@]}")
  local name=idle-$kind-$n
  local cmd=(taskset -c $LG_CORE "$LG_BIN" --url "$url" "${extra[@]}" --connections "$n" --duration "$hold"
             --ramp "$ramp" --idle-after 1 --preseal $((n + 500)) --body "$BODY_JSON" --timeout 120
             --label "$name" --json)
  echo "${cmd[*]}" | sed "s|$BUILD/||; s|$WORK|\$WORK|g" >"$RESULTS/$name.cmd"
  "${cmd[@]}" >"$RESULTS/$name.raw" 2>"$RESULTS/$name.err" &
  local lg=$!
  start=$(date +%s.%N)
  : >"$RESULTS/$name.rss"
  while kill -0 $lg 2>/dev/null; do
    r=$(rss_kib "${pids[@]}" 2>/dev/null || echo 0)
    echo "$(python3 -c "print(round($(date +%s.%N) - $start, 2))") $r" >>"$RESULTS/$name.rss"
    sleep 0.5
  done
  wait $lg || true
  # The plateau: from 3 s after the last connection opened to 1 s before the end.
  python3 - "$RESULTS/$name.raw" "$RESULTS/$name.json" "$RESULTS/$name.rss" "$kind" "$n" "$base" "$ramp" "$hold" <<'PY'
import json, sys
raw, out, rss, kind, n, base, ramp, hold = sys.argv[1:]
j = json.load(open(raw))
pts = [tuple(map(float, l.split())) for l in open(rss) if l.strip()]
plateau = [r for t, r in pts if float(ramp) + 3 <= t <= float(hold) - 1] or [r for _, r in pts]
idle = j.get('idle_at_end', 0)
rss_idle = max(plateau) if plateau else 0
j.update(proxy=kind, conns_wanted=int(n), conns_idle=idle, rss_base_kib=int(base), rss_idle_kib=int(rss_idle),
         bytes_per_conn=(rss_idle - int(base)) * 1024 / idle if idle else None)
json.dump(j, open(out, 'w'), indent=1)
PY
  log "$name: $(python3 -c "import json; j=json.load(open('$RESULTS/$name.json')); print('%d of %d idle at the end, RSS %d -> %d KiB, %s bytes per connection, errors %d' % (j['conns_idle'], j['conns_wanted'], j['rss_base_kib'], j['rss_idle_kib'], ('%.0f' % j['bytes_per_conn']) if j['bytes_per_conn'] is not None else '-', j['errors']))")"
}
idle_conns relay $IDLE_N
idle_conns nginx $IDLE_N

# ---- 5. soak (optional): relay RSS over time at a steady open-loop rate -------
if [ "$SOAK" = 1 ]; then
  stop_pid "$RELAY_PID"; start_relay
  SOAK_RATE=$(python3 -c "print(max(50, round($PEAK / 4)))")
  log "soak: $SOAK_S s at $SOAK_RATE req/s through the relay, RSS every 10 s"
  name=soak-relay
  cmd=(taskset -c $LG_CORE "$LG_BIN" --url "$RELAY_URL" --connections "$CONNECTIONS" --duration "$SOAK_S"
       --rate "$SOAK_RATE" --body "$BODY_JSON" --keys 64 --label "$name" --json)
  echo "${cmd[*]}" | sed "s|$BUILD/||; s|$WORK|\$WORK|g" >"$RESULTS/$name.cmd"
  "${cmd[@]}" >"$RESULTS/$name.raw" 2>"$RESULTS/$name.err" &
  lg=$!
  start=$(date +%s)
  : >"$RESULTS/soak-rss.txt"
  while kill -0 $lg 2>/dev/null; do
    echo "$(( $(date +%s) - start )) $(rss_kib "$RELAY_PID")" >>"$RESULTS/soak-rss.txt"
    sleep 10
  done
  wait $lg || true
  cp "$RESULTS/$name.raw" "$RESULTS/$name.json"
fi

# ---- the plots (SVG beside the report) ----------------------------------------
FIGS=$(dirname "$OUT")
plot() {  # OUT TITLE YLABEL PREFIX SUFFIX: one line per target
  local out=$1 title=$2 ylabel=$3 prefix=$4 suffix=$5
  python3 "$SRC/bench/plot_hist.py" "$FIGS/$out" "$title" "$ylabel" \
    "byok-relay=$RESULTS/${prefix}relay${suffix}" "nginx=$RESULTS/${prefix}nginx${suffix}" \
    "mock direct=$RESULTS/${prefix}direct${suffix}" || log "plot $out failed"
}
if command -v gnuplot >/dev/null; then
  # The open-loop round whose p99 is the median of the rounds (report_md.py picks the same one).
  for kind in relay nginx direct; do
    ROUNDS=3 pick_median "json-open-$kind" latency_us.p99
  done
  plot bench-latency-open.svg "Non-streaming, open loop at $HALF req/s (median round each)" "latency (ms)" \
    json-open- .hgrm
  plot bench-latency-closed.svg "Non-streaming, closed loop, $CONNECTIONS connections" "latency (ms)" json-closed- .hgrm
  plot bench-stream-first-event.svg "Paced SSE (20 events, 25 ms apart): time to the first event" \
    "time to first event (ms)" stream-paced- .first-event.hgrm
  plot bench-stream-last-event.svg "Paced SSE (20 events, 25 ms apart): time to the last event" \
    "time to last event (ms)" stream-paced- .last-event.hgrm
  log "plots in $FIGS"
else
  log "gnuplot not installed (scripts/install-deps.sh --test installs it): no plots"
fi

# ---- the report ---------------------------------------------------------------
python3 "$SRC/bench/report_md.py" "$RESULTS" "$OUT" "$SRC" "$BUILD" "$DURATION" "$WARMUP" "$CONNECTIONS" \
  "$LG_CORE" "$PROXY_CORE"
log "wrote $OUT (raw results in $RESULTS)"
