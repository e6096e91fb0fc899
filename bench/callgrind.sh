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
# Default: sse (20 events back to back), 8 connections, 8 s measured after a
# warm-up. Uses the binaries of BYOK_BENCH_BUILD (default build-bench, as
# bench/run.sh builds it); needs valgrind. The proxy runs on core 1 under
# valgrind, the mock and the load generator on core 0; loopback only; stops
# only what it started. Prints the instructions a request (a stream), by
# library and by function (bench/callgrind_summary.py), and where the dump is.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BYOK_BENCH_BUILD:-$SRC/build-bench}
PROXY=${1:-}
case $PROXY in
  relay|nginx) shift ;;
  *) sed -n 2,17p "$0"; exit 2 ;;
esac
WORKLOAD=sse
CONNECTIONS=8
DURATION=8
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
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
LG_CORE=0
PROXY_CORE=1
RELAY_BIN=$BUILD/byok-relay
MOCK_BIN=$BUILD/tests/mock_provider/byok-mock-provider
LG_BIN=$BUILD/bench/byok-loadgen
PROXY_START_S=60  # valgrind starts slowly
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"

body=$WORK/body.json
case $WORKLOAD in
  sse) echo '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to twenty."}],"stream":true,"mock":{"events":20}}' >"$body"; stream=(--stream) ;;
  sse-paced) echo '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to twenty, slowly."}],"stream":true,"mock":{"events":20,"interval_ms":25}}' >"$body"; stream=(--stream) ;;
  json) echo '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}' >"$body"; stream=() ;;
  *) echo "callgrind.sh: --workload sse, sse-paced or json" >&2; exit 2 ;;
esac

start_mock
wrap=(valgrind --tool=callgrind "--callgrind-out-file=$WORK/callgrind.out.%p")
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
log "warm-up (3 s), then $DURATION s measured, $CONNECTIONS connections, workload $WORKLOAD"
"${lg[@]}" --duration 3 --quiet >/dev/null 2>"$WORK/warmup.err"
callgrind_control -z "$target" >/dev/null
"${lg[@]}" --duration "$DURATION" --preseal 20000 --quiet --json >"$WORK/loadgen.json" 2>"$WORK/loadgen.err"
callgrind_control -d "$target" >/dev/null
sleep 1
n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['completed_total'])" "$WORK/loadgen.json")
dump=$(ls -t "$WORK"/callgrind.out."$target"* | head -1)
echo "$PROXY, workload $WORKLOAD, $CONNECTIONS connections: $n answers in $DURATION s under callgrind ($dump)"
python3 "$SRC/bench/callgrind_summary.py" "$dump" "$n" "$TOP"
