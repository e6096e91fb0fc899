#!/usr/bin/env bash
# One command for a new user: installs, builds and starts byok-relay on an
# offline default: a generated relay key, the mock provider on loopback as
# the "demo" provider, and the demo page served by the relay.
#   scripts/demo.sh            (BYOK_DEMO_PORT=8080 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${BYOK_DEMO_PORT:-8080}

scripts/install-deps.sh --web
BUILD_DIR=build BUILD_TARGETS="byok-relay byok-mock-provider" scripts/build.sh >/dev/null

DEMO=$ROOT/.demo
mkdir -p "$DEMO"
chmod 700 "$DEMO"
[ -f "$DEMO/relay-key.json" ] || build/byok-relay keygen --out "$DEMO/relay-key.json" >/dev/null

# The mock provider: plain HTTP is allowed only because it is on loopback.
MOCK_LOG=$DEMO/mock.log
build/tests/mock_provider/byok-mock-provider --listen 127.0.0.1:0 >"$MOCK_LOG" 2>&1 &
MOCK_PID=$!
trap 'kill "$MOCK_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q 'mock: listening on' "$MOCK_LOG" && break
  sleep 0.05
done
MOCK_URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$MOCK_LOG" | head -1)
[ -n "$MOCK_URL" ] || { echo "demo: the mock provider did not start:"; cat "$MOCK_LOG"; exit 1; }

# The demo page, the client and the packages its import map names (not all of web/node_modules).
node "$ROOT/web/demo/stage.mjs" "$DEMO/web"

cat >"$DEMO/relay.json" <<JSON
{
  "listen": "127.0.0.1:$PORT",
  "key_files": ["$DEMO/relay-key.json"],
  "web_root": "$DEMO/web",
  "allow_origins": ["http://127.0.0.1:$PORT", "http://localhost:$PORT"],
  "metrics_listen": "127.0.0.1:0",
  "providers": {
    "demo": {"base_url": "$MOCK_URL", "auth": "bearer",
             "paths": ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/v1/models"]}
  }
}
JSON

cat <<TXT

  byok-relay demo
  ---------------
  Demo page:      http://127.0.0.1:$PORT/         (pick "demo", type any key such as sk-demo-123)
  Relay key:      http://127.0.0.1:$PORT/v1/keys
  Point a client: sealedFetch('http://127.0.0.1:$PORT', getKey)  -> /demo/v1/..., /openai/v1/..., /anthropic/v1/...
  The "demo" provider is a local mock ($MOCK_URL); "openai"/"anthropic" need internet and a real key.
  Ctrl-C stops the relay and the mock.

TXT
build/byok-relay serve --config "$DEMO/relay.json"
