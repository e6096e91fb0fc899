#!/usr/bin/env bash
# One command: installs everything, builds, and runs every test.
#   1. unit tests (doctest) and integration tests (Node, against the real
#      binaries: relay, mock provider, load generator, nginx, Chromium), warnings as errors;
#   2. the same suite under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. each libFuzzer target for a bounded time (BYOK_FUZZ_SECONDS, default 60).
# BYOK_TEST_STAGES picks stages (default "main asan fuzz").
set -euo pipefail
cd "$(dirname "$0")/.."
STAGES=${BYOK_TEST_STAGES:-main asan fuzz}

scripts/install-deps.sh --test

run_suite() {
  local dir=$1; shift
  BUILD_DIR=$dir scripts/build.sh -DBYOK_WERROR=ON "$@"
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j 1)
}

for stage in $STAGES; do
  case $stage in
    main)
      echo "== test: build and run the suite (warnings are errors)"
      run_suite build
      ;;
    asan)
      echo "== test: the suite under ASan + UBSan"
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        BUILD_TYPE=Debug run_suite build-asan -DBYOK_SANITIZE=ON
      ;;
    fuzz)
      if [ -x scripts/fuzz.sh ]; then
        echo "== test: fuzz targets"
        scripts/fuzz.sh "${BYOK_FUZZ_SECONDS:-60}"
      fi
      ;;
    *) echo "unknown stage $stage"; exit 2;;
  esac
done
echo "== test: all stages passed ($STAGES)"
