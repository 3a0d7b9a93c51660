#!/usr/bin/env bash
# Edge router benchmark, side by side in one run on this machine: the same tenant (`GET /health`
# of a real org started by `molecule up`), the same load generator (wrk) and concurrency,
#   1. direct to the tenant,
#   2. through `molecule router` (Host: bench.localhost),
#   3. through nginx (Debian package; proxy_pass to a keep-alive upstream, same headers set).
# Prints requests/s, p50 and p99 for each and the ratios. Loopback only, bounded by DURATION.
#
#   scripts/bench-router.sh                      # CONNS=64 DURATION=10s THREADS=1 ROUNDS=1
#   ROUNDS=3 DURATION=5s scripts/bench-router.sh  # interleaved rounds, to see the noise
#   CONNS=16 DURATION=5s scripts/bench-router.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}
BENCH_PATH=${BENCH_PATH:-/health}

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  echo "installing nginx and wrk (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk >/dev/null
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p molecule
BIN="$CARGO_TARGET_DIR/release/molecule"

WORK=$(mktemp -d /tmp/molecule-bench-router.XXXXXX)
UP_PID=""
NGINX_PID=""
cleanup() {
  if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
  if [ -n "$UP_PID" ]; then kill -INT "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
CP_PORT=$(free_port)
ROUTER_PORT=$(free_port)
NGINX_PORT=$(free_port)
CP="http://127.0.0.1:$CP_PORT"

RUST_LOG=warn "$BIN" up --data-dir "$WORK/data" --cp-addr "127.0.0.1:$CP_PORT" \
  --router-addr "127.0.0.1:$ROUTER_PORT" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 300); do [ -f "$WORK/data/up.json" ] && break; sleep 0.1; done
[ -f "$WORK/data/up.json" ] || { cat "$WORK/up.log"; echo "molecule up did not start"; exit 1; }

"$BIN" org create bench --name Bench --cp "$CP" \
  --token-file "$WORK/data/secrets/cp_admin_api_token" >/dev/null
BACKEND=""
for _ in $(seq 1 300); do
  BACKEND=$(curl -s "$CP/cp/orgs/bench/instance" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("backend") or "")')
  [ -n "$BACKEND" ] && break
  sleep 0.1
done
[ -n "$BACKEND" ] || { echo "the bench org did not start"; exit 1; }
BACKEND_ADDR=${BACKEND#http://}

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream tenant {
    server $BACKEND_ADDR;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://tenant;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Molecule-Org-Id "bench";
    }
  }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
sleep 0.5

# wrk prints latencies as 812.00us / 1.23ms / 1.02s; in milliseconds:
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "%s", v } }'
}

# run NAME URL → sets RPS_<NAME>, P50_<NAME>, P99_<NAME>
run() {
  local name=$1 url=$2 out
  curl -sf -o /dev/null -H "Host: bench.localhost" "$url" || { echo "$name: $url does not answer"; exit 1; }
  wrk -t"$THREADS" -c"$CONNS" -d2s -H "Host: bench.localhost" "$url" >/dev/null # warm-up
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Host: bench.localhost" "$url")
  if echo "$out" | grep -q "Non-2xx"; then echo "$out"; echo "$name: non-2xx answers"; exit 1; fi
  printf -v "RPS_$name" '%s' "$(echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')"
  printf -v "P50_$name" '%s' "$(to_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')")"
  printf -v "P99_$name" '%s' "$(to_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')")"
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION, GET $BENCH_PATH of one tenant, $(nproc) cores," \
  "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  run direct "$BACKEND$BENCH_PATH"
  run router "http://127.0.0.1:$ROUTER_PORT$BENCH_PATH"
  run nginx "http://127.0.0.1:$NGINX_PORT$BENCH_PATH"
  echo "round $round"
  printf '  %-8s %10s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
  for n in direct router nginx; do
    rps="RPS_$n" p50="P50_$n" p99="P99_$n"
    printf '  %-8s %10s %10s %10s\n' "$n" "${!rps}" "${!p50}" "${!p99}"
  done
  awk -v rd="$RPS_direct" -v rr="$RPS_router" -v rn="$RPS_nginx" \
    -v pd="$P99_direct" -v pr="$P99_router" -v pn="$P99_nginx" 'BEGIN {
      printf "  router/nginx throughput: %.2f   router/direct: %.2f   nginx/direct: %.2f\n", rr / rn, rr / rd, rn / rd
      printf "  added p99 vs direct: router %+.3f ms, nginx %+.3f ms\n", pr - pd, pn - pd }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (figures from a loaded machine are noise)"
