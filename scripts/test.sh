#!/usr/bin/env bash
# One command: installs everything, builds, and runs every test.
#   0. paths: nothing in the repository reads a path outside it (scripts/check-paths.sh);
#   1. main: unit tests (doctest) and integration tests (Node, against the real
#      binaries: relay, mock provider, load generator, nginx, Chromium), warnings as errors;
#   2. repro: byok-relay built twice (Release, two temporary directories, a second
#      apart) must be bit-identical (scripts/repro-build.sh);
#   3. asan: the same suite under AddressSanitizer + UndefinedBehaviorSanitizer;
#   4. fuzz: each libFuzzer target for a bounded time (BYOK_FUZZ_SECONDS, default 60).
# BYOK_TEST_STAGES picks stages (default "main repro asan fuzz"); paths and deps (the
# packages, scripts/install-deps.sh --test) always run first.
# Each stage says when it starts; at the end there is one line per stage (passed,
# failed, duration) and a last line "total: N passed, N failed". The first failing
# stage stops the run with a non-zero exit, after that summary.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGES=${BYOK_TEST_STAGES:-main repro asan fuzz}
for stage in $STAGES; do
  case $stage in
    paths|deps|main|repro|asan|fuzz) ;;
    *) echo "unknown stage $stage (known: main repro asan fuzz)"; exit 2 ;;
  esac
done
# paths, then deps (Debian packages and npm modules), always run first.
STAGES="paths deps $(printf '%s\n' $STAGES | { grep -vxE 'paths|deps' || true; } | tr '\n' ' ')"

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/byok-test.XXXXXX")
SUMMARY=()
TOTAL_PASSED=0
TOTAL_FAILED=0
START=$SECONDS

duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

print_summary() {
  echo
  echo "== test: summary ($(duration $((SECONDS - START))) in all)"
  local line
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "total: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
}
trap 'rm -rf "$LOGS"' EXIT

# record STAGE PASSED FAILED UNIT SECONDS RC
record() {
  local stage=$1 passed=$2 failed=$3 unit=$4 secs=$5 rc=$6 note=ok
  # A stage that failed before it could count anything (a build error) counts as one failure.
  if [ "$rc" -ne 0 ]; then
    note="FAILED (exit status $rc)"
    if [ "$failed" -eq 0 ]; then failed=1; fi
  fi
  TOTAL_PASSED=$((TOTAL_PASSED + passed))
  TOTAL_FAILED=$((TOTAL_FAILED + failed))
  if [ "$unit" = - ]; then
    SUMMARY+=("$(printf '%-6s %-34s %8s  %s' "$stage" "" "$(duration "$secs")" "$note")")
  else
    SUMMARY+=("$(printf '%-6s %4d %-18s %3d failed %8s  %s' "$stage" "$passed" "$unit passed," "$failed" \
      "$(duration "$secs")" "$note")")
  fi
}

# Counts from ctest's "NN% tests passed, F tests failed out of T" line.
ctest_counts() {
  local line
  line=$(grep -Eo '[0-9]+ tests failed out of [0-9]+' "$1" | tail -1 || true)
  if [ -z "$line" ]; then echo "0 0"; return; fi
  set -- $line
  echo "$(($6 - $1)) $1"
}

run_suite() {
  local dir=$1; shift
  BUILD_DIR=$dir scripts/build.sh -DBYOK_WERROR=ON "$@"
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j 1)
}

run_stage() {
  local stage=$1
  case $stage in
    deps)
      # repro alone needs only the build packages, not nginx, Chromium or npm modules.
      case " $STAGES " in
        *" main "*|*" asan "*|*" fuzz "*)
          echo "== test [deps]: installing what the tests need (Debian packages, npm modules)"
          scripts/install-deps.sh --test ;;
        *)
          echo "== test [deps]: installing what the build needs (Debian packages)"
          scripts/install-deps.sh ;;
      esac ;;
    paths)
      echo "== test [paths]: no test, script, CMake or CI file reads a path outside the repository"
      scripts/check-paths.sh --self-test && scripts/check-paths.sh ;;
    main)
      echo "== test [main]: build and run the suite (warnings are errors)"
      run_suite build ;;
    repro)
      echo "== test [repro]: two Release builds of byok-relay in two temporary directories must be identical"
      scripts/repro-build.sh --worktree --twice ;;
    asan)
      echo "== test [asan]: the suite under ASan + UBSan"
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        BUILD_TYPE=Debug run_suite build-asan -DBYOK_SANITIZE=ON ;;
    fuzz)
      echo "== test [fuzz]: fuzz targets, ${BYOK_FUZZ_SECONDS:-60} s each"
      rm -f "${FUZZ_BUILD_DIR:-build-fuzz}/fuzz-summary.txt"
      scripts/fuzz.sh "${BYOK_FUZZ_SECONDS:-60}" ;;
  esac
}

for stage in $STAGES; do
  t0=$SECONDS
  log="$LOGS/$stage.log"
  set +e
  (set -e; run_stage "$stage") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  secs=$((SECONDS - t0))
  passed=0; failed=0
  case $stage in
    paths) unit=checks; [ "$rc" -eq 0 ] && passed=2 ;;
    deps) unit=- ;;
    main|asan) unit=tests; read -r passed failed < <(ctest_counts "$log") ;;
    repro) unit=comparison; [ "$rc" -eq 0 ] && passed=1 ;;
    fuzz)
      unit=targets
      s="${FUZZ_BUILD_DIR:-build-fuzz}/fuzz-summary.txt"
      if [ -f "$s" ]; then
        passed=$(awk 'NR > 1 && $NF == "ok"' "$s" | wc -l)
        failed=$(awk 'NR > 1 && $NF != "ok"' "$s" | wc -l)
      fi ;;
  esac
  record "$stage" "$passed" "$failed" "$unit" "$secs" "$rc"
  if [ "$rc" -ne 0 ]; then
    echo "== test [$stage]: FAILED (exit status $rc)"
    print_summary
    exit "$rc"
  fi
done
print_summary
