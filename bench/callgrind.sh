#!/usr/bin/env bash
# Where a proxy's user-space instructions go, per request or per stream: the
# relay or nginx run under callgrind, on the bench's mock, set up as
# bench/run.sh sets them up (bench/lib.sh). Instruction counts do not move
# with the machine's load as CPU time does, so two builds, or the relay and
# nginx, can be compared to a few hundred instructions. System calls and the
# kernel are not counted: strace -c and perf are for those.
#
#   bench/callgrind.sh relay|nginx [--workload sse|sse-paced|json]
#                      [--connections N] [--duration S] [--top N]
#
# Default: sse (20 events back to back), 8 connections, each sending a
# fixed number of requests (PER: 150, or 10 paced, or 300 json) within
# --duration (default 20 s), after a warm-up. Uses the binaries of
# BYOK_BENCH_BUILD (default build-bench, as bench/run.sh builds it); needs
# valgrind. The proxy runs on core 1 under valgrind, the mock and the load
# generator on core 0; loopback only; stops only what it started.
# NGINX_SSL_PROTOCOLS=TLSv1.2 measures nginx as it was benchmarked before
# a69413e (TLS 1.2 to the mock). Prints the instructions a request (a
# stream), by library and by function (bench/callgrind_summary.py), and
# where the dump is.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BYOK_BENCH_BUILD:-$SRC/build-bench}
PROXY=${1:-}
case $PROXY in
  relay|nginx) shift ;;
  *) sed -n 2,21p "$0"; exit 2 ;;
esac
WORKLOAD=sse
CONNECTIONS=8
DURATION=20
TOP=25
while [ $# -gt 0 ]; do
  case "$1" in
    --workload) WORKLOAD=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --top) TOP=$2; shift ;;
    *) echo "callgrind.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

WORK=$(mktemp -d /tmp/byok-callgrind-XXXXXX)
log() { printf '%s callgrind.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
LG_CORE=0
PROXY_CORE=1
RELAY_BIN=$BUILD/byok-relay
MOCK_BIN=$BUILD/tests/mock_provider/byok-mock-provider
LG_BIN=$BUILD/bench/byok-loadgen
PROXY_START_S=60  # valgrind starts slowly
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"
trap cleanup EXIT

body=$WORK/body.json
# Each connection sends PER requests, then idles to the end of --duration,
# so that no answer is cut when the load generator stops: a cut stream
# would count its open and half its events as nothing.
case $WORKLOAD in
  sse) stream=(--stream); per=150 ;;
  sse-paced) stream=(--stream); per=10 ;;
  json) stream=(); per=300 ;;
  *) echo "callgrind.sh: --workload sse, sse-paced or json" >&2; exit 2 ;;
esac
write_body "$WORKLOAD" "$body"
PER=${PER:-$per}

start_mock
wrap=(valgrind --tool=callgrind --skip-plt=no "--callgrind-out-file=$WORK/callgrind.out.%p")
if [ "$PROXY" = relay ]; then
  PROXY_WRAP=("${wrap[@]}")
  start_relay
  target=$RELAY_PID url=$RELAY_URL extra=()
else
  start_relay  # not measured: it publishes the key the load generator seals to (nginx ignores the seal)
  PROXY_WRAP=("${wrap[@]}")
  NGINX_SINGLE_PROCESS=1
  start_nginx
  target=$NGINX_WORKER url=$NGINX_URL extra=(--keys-url "$RELAY_URL/v1/keys")
fi
PROXY_WRAP=()

lg=(taskset -c "$LG_CORE" "$LG_BIN" --url "$url" "${extra[@]}" --connections "$CONNECTIONS" --body "$body"
    --timeout 60 "${stream[@]}")
log "warm-up, then $PER requests on each of $CONNECTIONS connections within $DURATION s, workload $WORKLOAD"
# The warm-up's answers end whole too, so its upstream connections go back
# to the pool (and the measured requests reuse them), and nothing of it is
# still being torn down when the counts are zeroed.
"${lg[@]}" --duration 3 --idle-after 3 --quiet >/dev/null 2>"$WORK/warmup.err"
sleep 2
callgrind_control -z "$target" >/dev/null
"${lg[@]}" --duration "$DURATION" --idle-after "$PER" --preseal $((CONNECTIONS * PER + 100)) --quiet --json \
  >"$WORK/loadgen.json" 2>"$WORK/loadgen.err"
callgrind_control -d "$target" >/dev/null
sleep 1
read -r n unfinished errors < <(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
print(j['completed_total'], j.get('unfinished_at_end', 0), j['errors'])" "$WORK/loadgen.json")
if [ "$n" -ne $((CONNECTIONS * PER)) ] || [ "$unfinished" -ne 0 ] || [ "$errors" -ne 0 ]; then
  echo "callgrind.sh: $n of $((CONNECTIONS * PER)) answers whole, $unfinished unfinished, $errors errors:" \
    "raise --duration, or lower PER" >&2
  exit 1
fi
dump=$(ls -t "$WORK"/callgrind.out."$target"* | head -1)
echo "$PROXY, workload $WORKLOAD: $PER answers on each of $CONNECTIONS connections under callgrind ($dump)"
python3 "$SRC/bench/callgrind_summary.py" "$dump" "$n" "$TOP"
