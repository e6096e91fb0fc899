# shellcheck shell=bash
# The pieces bench/run.sh, bench/callgrind.sh and bench/sse_rounds.sh share:
# helpers, the mock, the relay and nginx started the same way for all, and
# drive(). Sourced, not run.
#
# Expects: WORK, LG_CORE, PROXY_CORE, RELAY_BIN, MOCK_BIN and log(), by the
# time a function is called. Sets PIDS (what was started) and cleanup(),
# which the caller traps on EXIT. Optional: RELAY_EXTRA
# (more relay config), PROXY_WRAP (a command the proxy runs under, such as
# valgrind), PROXY_START_S (how long a proxy may take to start) and
# NGINX_SINGLE_PROCESS=1 (nginx without a master: its worker is NGINX_PID;
# callgrind follows a fork, but writes the child's dumps under the parent's
# name) and NGINX_SSL_PROTOCOLS (what nginx may speak to the mock; by
# default TLS 1.3 is what it does speak, as the relay).
PROXY_START_S=${PROXY_START_S:-20}
NGINX_SINGLE_PROCESS=${NGINX_SINGLE_PROCESS:-0}
NGINX_SSL_PROTOCOLS=${NGINX_SSL_PROTOCOLS:-TLSv1.2 TLSv1.3}

# ---- helpers ----------------------------------------------------------------
# Only processes the script started are stopped, each by its PID.
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  sleep 0.3
  for p in "${PIDS[@]}"; do
    kill -9 "$p" 2>/dev/null || true
  done
}
# write_body KIND FILE: the bench's request bodies, the same for every
# script. json: a short chat completion; sse: 20 events back to back;
# sse-paced: 20 events 25 ms apart (about 0.5 s a stream).
write_body() {
  case $1 in
    json) echo '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}' ;;
    sse) echo '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to twenty."}],"stream":true,"mock":{"events":20}}' ;;
    sse-paced) echo '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to twenty, slowly."}],"stream":true,"mock":{"events":20,"interval_ms":25}}' ;;
    *) echo "bench: no request body called $1" >&2; return 1 ;;
  esac >"$2"
}
wait_line() {  # FILE REGEX [SECONDS]: prints the first match
  local file=$1 re=$2 t=${3:-20} i=0
  while [ $i -lt $((t * 10)) ]; do
    if grep -Eo "$re" "$file" 2>/dev/null | head -1 | grep -q .; then
      grep -Eo "$re" "$file" | head -1
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  echo "bench: timed out waiting for /$re/ in $file" >&2
  cat "$file" >&2 || true
  return 1
}
cpu_ns() {  # PID...: CPU time of every thread of the processes, in ns (/proc/PID/task/*/schedstat:
  # the scheduler's own count; /proc/PID/stat's utime+stime moves in 10 ms ticks, about 5 % of a
  # paced-stream run's CPU)
  cat $(for p in "$@"; do echo /proc/"$p"/task/*/schedstat; done) | awk '{s += $1} END {printf "%.0f\n", s}'
}
rss_kib() {  # PID...: resident set size summed, KiB
  local sum=0 p
  for p in "$@"; do
    sum=$((sum + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")))
  done
  echo $sum
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ---- the mock provider (core 0) -------------------------------------------
start_mock() {
  mkdir -p "$WORK/mock"
  taskset -c $LG_CORE "$MOCK_BIN" --listen 127.0.0.1:0 --tls --cert-dir "$WORK/mock" --no-record --threads 1 \
    >"$WORK/mock.out" 2>"$WORK/mock.err" &
  MOCK_PID=$!
  PIDS+=("$MOCK_PID")
  MOCK_URL=$(wait_line "$WORK/mock.out" 'https://127\.0\.0\.1:[0-9]+')
  MOCK_PORT=${MOCK_URL##*:}
  CA=$WORK/mock/ca.pem
  log "mock provider pid $MOCK_PID at $MOCK_URL"
}

# ---- the relay (core 1, 1 thread) ------------------------------------------
RELAY_N=0
start_relay() {
  RELAY_N=$((RELAY_N + 1))
  [ -f "$WORK/relay-key.json" ] || "$RELAY_BIN" keygen --out "$WORK/relay-key.json" >/dev/null
  local cfg=$WORK/relay-$RELAY_N.json
  cat >"$cfg" <<EOF
{
  "listen": "127.0.0.1:0",
  "threads": 1,
  "key_files": ["$WORK/relay-key.json"],
  "max_in_flight": 12000,
  "max_connections_per_ip": 0,
  "upstream_timeout_s": 600,
  "idle_timeout_s": 600,
  "allow_origins": ["http://localhost"],${RELAY_EXTRA:-}
  "providers": {
    "openai": {"base_url": "$MOCK_URL", "auth": "bearer", "ca_file": "$CA", "paths": ["/v1/chat/completions"]},
    "anthropic": null
  }
}
EOF
  taskset -c $PROXY_CORE ${PROXY_WRAP[@]+"${PROXY_WRAP[@]}"} "$RELAY_BIN" serve --config "$cfg" \
    2>"$WORK/relay-$RELAY_N.log" &
  RELAY_PID=$!
  PIDS+=("$RELAY_PID")
  RELAY_URL=$(wait_line "$WORK/relay-$RELAY_N.log" 'http://127\.0\.0\.1:[0-9]+' "$PROXY_START_S")
  log "relay pid $RELAY_PID at $RELAY_URL"
}
stop_pid() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
}

# ---- nginx (core 1, 1 worker): a plain reverse proxy to the same mock --------
NGINX_N=0
start_nginx() {
  NGINX_N=$((NGINX_N + 1))
  local prefix=$WORK/nginx-$NGINX_N
  mkdir -p "$prefix/logs" "$prefix/tmp"
  NGINX_PORT=$(free_port)
  cat >"$prefix/nginx.conf" <<EOF
user root;
master_process $([ "$NGINX_SINGLE_PROCESS" = 1 ] && echo off || echo on);
worker_processes 1;
worker_rlimit_nofile 20000;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 12000; }
http {
  client_body_temp_path $prefix/tmp/body;
  proxy_temp_path $prefix/tmp/proxy;
  fastcgi_temp_path $prefix/tmp/fastcgi;
  uwsgi_temp_path $prefix/tmp/uwsgi;
  scgi_temp_path $prefix/tmp/scgi;
  access_log $prefix/logs/access.log;
  keepalive_requests 100000;
  keepalive_timeout 600s;
  upstream mock {
    server 127.0.0.1:$MOCK_PORT;
    keepalive 64;
    keepalive_requests 100000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass https://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $CA;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      # TLS 1.3 to the mock, as the relay speaks: nginx 1.22's default stops
      # at TLS 1.2 (1.23.4 added 1.3), whose records OpenSSL 3.0 decrypts for
      # about 1,100 fewer instructions each (callgrind, docs/benchmarks.md).
      proxy_ssl_protocols $NGINX_SSL_PROTOCOLS;
      proxy_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
EOF
  taskset -c $PROXY_CORE ${PROXY_WRAP[@]+"${PROXY_WRAP[@]}"} /usr/sbin/nginx -p "$prefix" \
    -c "$prefix/nginx.conf" -g 'daemon off;' >"$prefix/stdout" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  NGINX_WORKER=
  [ "$NGINX_SINGLE_PROCESS" = 1 ] && NGINX_WORKER=$NGINX_PID
  for _ in $(seq 1 $((PROXY_START_S * 10))); do
    [ -n "$NGINX_WORKER" ] && break
    NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1 || true)
    [ -n "$NGINX_WORKER" ] && break
    sleep 0.1
  done
  [ -n "$NGINX_WORKER" ] || { cat "$prefix/stdout" "$prefix/logs/error.log" >&2; exit 1; }
  NGINX_URL=http://127.0.0.1:$NGINX_PORT
  for _ in $(seq 1 $((PROXY_START_S * 10))); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $NGINX_PORT), 1).close()" 2>/dev/null && break
    sleep 0.1
  done
  log "nginx master $NGINX_PID worker $NGINX_WORKER at $NGINX_URL"
}

# ---- driving ----------------------------------------------------------------
# set_common_args: COMMON, the load generator's arguments every closed-loop
# run shares (from CONNECTIONS, DURATION and WARMUP), with PRESEAL presealed
# requests per run: more than any target can answer in the run.
set_common_args() {
  PRESEAL=$(( (DURATION + WARMUP) * 9000 ))
  COMMON=(--connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --keys 64 --preseal "$PRESEAL")
}
# (drive also expects RESULTS, LG_BIN, BUILD, and the proxies started as above.)
# drive NAME KIND(direct|nginx|relay) LOADGEN-ARGS...: one run, pinned on core 0;
# writes $RESULTS/NAME.json with the proxy's CPU per request and RSS added.
drive() {
  local name=$1 kind=$2
  shift 2
  local url pids=() extra=()
  case $kind in
    direct) url=$MOCK_URL; pids=("$MOCK_PID"); extra=(--ca "$CA" --keys-url "$RELAY_URL/v1/keys") ;;
    nginx) url=$NGINX_URL; pids=("$NGINX_PID" "$NGINX_WORKER"); extra=(--keys-url "$RELAY_URL/v1/keys") ;;
    relay) url=$RELAY_URL; pids=("$RELAY_PID") ;;
  esac
  local cmd=(taskset -c $LG_CORE "$LG_BIN" --url "$url" "${extra[@]}" --label "$name" --json
             --hist-out "$RESULTS/$name.hgrm" "$@")
  echo "${cmd[*]}" | sed "s|$BUILD/||; s|$WORK|\$WORK|g" >"$RESULTS/$name.cmd"
  # CPU is sampled around the load generator's whole run (warm-up included)
  # and divided by every answer it completed (completed_total).
  echo "$name $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/loadavg.txt"
  "${cmd[@]}" >"$RESULTS/$name.raw" 2>"$RESULTS/$name.err" &
  local lg=$!
  # (The load generator seals its pool before it connects; the proxy idles then.)
  local t0 c0
  c0=$(cpu_ns "${pids[@]}")
  t0=$(date +%s.%N)
  wait $lg || { log "$name: loadgen failed"; cat "$RESULTS/$name.err" >&2; return 1; }
  local c1 t1 rss
  c1=$(cpu_ns "${pids[@]}")
  t1=$(date +%s.%N)
  rss=$(rss_kib "${pids[@]}")
  python3 - "$RESULTS/$name.raw" "$RESULTS/$name.json" "$kind" "$c0" "$c1" "$rss" "$t0" "$t1" <<'PY'
import json, sys
raw, out, kind, c0, c1, rss, t0, t1 = sys.argv[1:]
j = json.load(open(raw))
cpu_s = (int(c1) - int(c0)) / 1e9
j['proxy'] = kind
j['proxy_cpu_s'] = cpu_s
n = j['completed_total']
j['proxy_cpu_us_per_req'] = cpu_s / n * 1e6 if n else None
j['proxy_rss_kib'] = int(rss)
json.dump(j, open(out, 'w'), indent=1)
PY
  log "$name: $(python3 -c "import json,sys; j=json.load(open('$RESULTS/$name.json')); print('%.0f req/s, p50 %.2f ms, p99 %.2f ms, errors %d, cpu/req %s us' % (j['throughput_rps'], j['latency_us']['p50']/1000, j['latency_us']['p99']/1000, j['errors'], ('%.1f' % j['proxy_cpu_us_per_req']) if j['proxy_cpu_us_per_req'] else '-'))")"
}
