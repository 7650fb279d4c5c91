#!/usr/bin/env bash
# Counts the CPU instructions meshgate spends per proxied HTTP/1.1 request, in user space, with
# valgrind's callgrind. Unlike req/s this number does not move with other load on the machine,
# so it shows whether a hot-path change helped even on a busy 2-core box.
#
#   bash bench/instructions.sh            # builds release, prints instructions per request (/plain)
#   BENCH_SKIP_BUILD=1 bash bench/instructions.sh
#   ROUTE=/observed bash bench/instructions.sh   # the route with an access log and tracing at 100 %
#   ROUTE=/observed PLUGINS='[{name: access-log, config: {path: access.log}}]' bash bench/instructions.sh
#
# ROUTE picks the path measured: `/plain` (the catch-all route, no plugins), `/` (the same route;
# hyper reads this one path by a shortcut, ~0.3k instructions cheaper) or `/observed`, whose
# plugins are PLUGINS (a YAML flow list; by default the benchmark's: access-log to a file, tracing
# at 100 % posting to the upstream nginx, which answers /api/v2/spans with 202 like a collector).
#
# Method: meshgate (1 worker, one catch-all route) runs under callgrind in front of an nginx
# upstream; h2load sends N1, then (in a second run) N2 requests over 10 HTTP/1.1 connections.
# (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown. Kernel time is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUTE=${ROUTE:-/plain}
PLUGINS=${PLUGINS:-"[{name: access-log, config: {path: access.log}}, {name: tracing, config: {sampling: 1.0, zipkin: {url: \"http://127.0.0.1:${PORT_UPSTREAM:-18090}/api/v2/spans\"}}}]"}
N1=${N1:-2000}
N2=${N2:-12000}
PORT_UPSTREAM=${PORT_UPSTREAM:-18090}
PORT_MESHGATE=${PORT_MESHGATE:-18092}
BIN=${MESHGATE_BIN:-target/release/meshgate}

for tool in valgrind callgrind_annotate nginx h2load curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install valgrind nginx-light nghttp2-client curl" >&2; exit 1; }
done
[[ ${BENCH_SKIP_BUILD:-0} == 1 ]] || cargo build --release -p meshgate

TMP=$(mktemp -d /tmp/meshgate-instr.XXXXXX)
cleanup() {
    if [[ -f $TMP/nginx.pid ]]; then kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $TMP/nginx.pid;
error_log $TMP/error.log;
events { worker_connections 1024; }
http {
    client_body_temp_path $TMP/t1; proxy_temp_path $TMP/t2; fastcgi_temp_path $TMP/t3;
    uwsgi_temp_path $TMP/t4; scgi_temp_path $TMP/t5;
    access_log off; keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$PORT_UPSTREAM;
        location /api/v2/spans { return 202; }
        location / { return 200 "$(printf '%0100d' 0)"; }
    }
}
EOF
nginx -p "$TMP" -c "$TMP/nginx.conf"

cat >"$TMP/meshgate.yaml" <<EOF
runtime: { workers: 1, watch_config: false }
listeners: [{ name: bench, address: "127.0.0.1:$PORT_MESHGATE" }]
services: [{ name: upstream, url: "http://127.0.0.1:$PORT_UPSTREAM" }]
routes:
  - { name: all, service: upstream, paths: ["/"] }
  - { name: observed, service: upstream, paths: ["/observed"], plugins: $PLUGINS }
EOF

# Prints the total instructions of one meshgate run that served $1 requests.
measure() {
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$1" "$BIN" run --config "$TMP/meshgate.yaml" \
        >"$TMP/meshgate.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT_MESHGATE$ROUTE" && break; sleep 0.2; done
    h2load --h1 -n "$1" -c 10 "http://127.0.0.1:$PORT_MESHGATE$ROUTE" | grep -q "$1 succeeded" \
        || { echo "h2load: not every request succeeded" >&2; exit 1; }
    sleep 1.5 # the log writer and the span exporter finish what waits (they wake every 50 ms / 1 s)
    kill -INT "$pid"
    wait "$pid" || true
    callgrind_annotate "$TMP/cg.$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

ir1=$(measure "$N1")
ir2=$(measure "$N2")
echo "meshgate $(git rev-parse --short HEAD) $ROUTE: $(( (ir2 - ir1) / (N2 - N1) )) instructions per request (user space; $N1 and $N2 requests: $ir1, $ir2)"
