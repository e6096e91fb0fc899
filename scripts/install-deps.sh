#!/usr/bin/env bash
# Installs everything byok-relay needs to build and test on Debian 12.
# Used by the README's two commands and by .ci/run; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Build: compiler, CMake, the five libraries the project is written against.
PKGS=(build-essential cmake ninja-build pkg-config
      libboost1.81-dev libssl-dev libsodium-dev nlohmann-json3-dev doctest-dev
      libhiredis-dev openssl ca-certificates)
# Tests: Node for the browser-side library and integration tests, nginx for the
# deploy test, Chromium for the real-browser test, clang for fuzzing/sanitizers,
# gnuplot for the benchmark's latency plots (bench/plot_hist.py), redis-server
# for the shared replay store's test (tests/integration/replicas.test.mjs).
if [ "${1:-}" = "--web" ] || [ "${1:-}" = "--test" ]; then
  PKGS+=(nodejs npm)
fi
if [ "${1:-}" = "--test" ]; then
  PKGS+=(nginx chromium chromium-driver clang libclang-rt-14-dev procps gdb gnuplot-nox redis-server)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node may come from another source than Debian (it does on the dev images);
# only ask apt for it when there is no node at all.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do
    case "$p" in nodejs|npm) ;; *) filtered+=("$p");; esac
  done
  missing=("${filtered[@]}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The browser library's dependencies (libsodium-wrappers, openai, playwright-core),
# pinned by web/package-lock.json; the demo page and the tests both need them.
if [ -f web/package-lock.json ] && { [ "${1:-}" = "--test" ] || [ "${1:-}" = "--web" ]; }; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
