#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) into build-fuzz and runs
# each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 60)
#   FUZZ_TARGETS="fuzz_seal fuzz_config" scripts/fuzz.sh 30
#
# 1. Every input in tests/fuzz/regressions/<target>/ is replayed first; any
#    failure fails the script.
# 2. Each target then runs from its seed corpus (tests/fuzz/corpus/<target>/,
#    copied into build-fuzz/fuzz-corpus/ so the checked-in seeds stay small).
#    A crash, a sanitizer report, a leak, a timeout or a violated property
#    fails the script; the crashing input is copied to
#    tests/fuzz/regressions/<target>/ to be committed as a regression test
#    (CTest's fuzz_replay_<target> replays that directory too).
# 3. A summary (executions, exec/s, corpus size, result per target) is
#    printed and written to build-fuzz/fuzz-summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
ALL_TARGETS="fuzz_seal fuzz_json_lite fuzz_base64url fuzz_config fuzz_key_file fuzz_http_request fuzz_grant"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBYOK_FUZZ=ON >/dev/null
fi
# shellcheck disable=SC2086
ninja -C "$BUILD_DIR" -j "${FUZZ_JOBS:-1}" $TARGETS

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
# The libraries are built with recoverable UBSan checks; halt on the first report.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

max_len() {
  case $1 in
    fuzz_http_request) echo 70000 ;;  # past the 16 KiB header limit
    *) echo 8192 ;;
  esac
}

status=0
summary="$BUILD_DIR/fuzz-summary.txt"
printf '%-18s %12s %9s %7s  %s\n' target executions exec/s corpus result > "$summary.tmp"
for t in $TARGETS; do
  bin="$BUILD_DIR/tests/fuzz/$t"
  reg="tests/fuzz/regressions/$t"
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg" 2>/dev/null)" ]; then
    if ! "$bin" -runs=0 "$reg"/* >"$BUILD_DIR/$t.replay.log" 2>&1; then
      echo "fuzz: $t fails a regression input in $reg (log: $BUILD_DIR/$t.replay.log)"
      tail -30 "$BUILD_DIR/$t.replay.log"
      status=1
    fi
  fi
  work="$BUILD_DIR/fuzz-corpus/$t"
  artifacts="$BUILD_DIR/fuzz-artifacts/$t"
  mkdir -p "$work" "$artifacts"
  log="$BUILD_DIR/$t.log"
  result=ok
  if ! "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    result=FAILED
    status=1
    mkdir -p "$reg"
    for a in "$artifacts"/*; do
      [ -e "$a" ] || continue
      cp "$a" "$reg/"
      echo "fuzz: $t: failing input saved as $reg/$(basename "$a") (commit it)"
    done
    grep -E 'ERROR|runtime error|property violated|SUMMARY' "$log" | head -10 || true
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  printf '%-18s %12s %9s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result" >> "$summary.tmp"
done
mv "$summary.tmp" "$summary"
echo "fuzz: ${SECONDS_PER_TARGET} s per target ($(date -u +%FT%TZ), $(clang --version | head -1))"
cat "$summary"
exit $status
