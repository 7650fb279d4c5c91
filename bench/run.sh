#!/usr/bin/env bash
# meshgate benchmark harness: one command that installs the load tools, builds meshgate, starts an
# nginx upstream, nginx as reverse proxy and meshgate (10 and 10,000 routes), measures them in
# interleaved rounds with wrk (HTTP/1.1) and h2load (h2c), prints a table of medians and writes
# docs/benchmarks.md. Method: /work/shared/reference/baseline.md; details: bench/README.md.
#
#   bash bench/run.sh                                  # full run: 3 rounds x 8 s per target
#   BENCH_QUICK=1 bash bench/run.sh                    # 1 round x 3 s
#   BENCH_SKIP_MESHGATE=1 BENCH_QUICK=1 bash bench/run.sh   # harness check: direct + nginx only
#   BENCH_ONLY='^meshgate-(noplugin|observed)$' BENCH_ROUNDS=9 BENCH_OUT=/tmp/b.md bash bench/run.sh
#                                                      # some targets only, more rounds
#
# Knobs (environment): BENCH_QUICK, BENCH_ROUNDS, BENCH_DURATION (s), BENCH_WARMUP (s),
# BENCH_CONNECTIONS, BENCH_H2_STREAMS, BENCH_ROUTES (big table size), BENCH_SKIP_BUILD,
# BENCH_SKIP_MESHGATE, BENCH_CLIENT_CPU, BENCH_SERVER_CPU, BENCH_NO_PIN, BENCH_OUT, BENCH_KEEP,
# BENCH_WAIT_IDLE, BENCH_ONLY (an extended regex: the targets whose names match), MESHGATE_BIN.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

# ---------------------------------------------------------------------------------------------
# Knobs
# ---------------------------------------------------------------------------------------------
QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${BENCH_ROUNDS:-1}
    DURATION=${BENCH_DURATION:-3}
else
    ROUNDS=${BENCH_ROUNDS:-3}
    DURATION=${BENCH_DURATION:-8}
fi
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-50}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
BIG_ROUTES=${BENCH_ROUTES:-10000}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
SKIP_MESHGATE=${BENCH_SKIP_MESHGATE:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
SERVER_CPU=${BENCH_SERVER_CPU:-1}
NO_PIN=${BENCH_NO_PIN:-0}
OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}
KEEP=${BENCH_KEEP:-0}
WAIT_IDLE=${BENCH_WAIT_IDLE:-0}
MESHGATE_BIN=${MESHGATE_BIN:-$ROOT/target/release/meshgate}
ONLY=${BENCH_ONLY:-}

PORT_UPSTREAM=18080
PORT_NGINX=18081
PORT_MESHGATE=18082
PORT_NGINX_H2=18083
PORT_MESHGATE_BIG=18084
PORT_MESHGATE_AUTH=18085

# ~100-byte response body of the upstream (exactly 100 bytes).
BODY="meshgate-bench-upstream-$(printf '%076d' 0)"
# A small JSON answer of the upstream (/bench.json) for the body-transform route, and what
# bench/plugin-routes.sh's /transform route makes of it (`internal` removed, `via` added).
BENCH_JSON='{"id":7,"name":"meshgate-bench","internal":"x","items":[1,2,3],"tags":{"a":1,"b":2}}'
BENCH_JSON_TRANSFORMED='{"id":7,"name":"meshgate-bench","items":[1,2,3],"tags":{"a":1,"b":2},"via":"meshgate"}'

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

for v in ROUNDS DURATION WARMUP CONNS H2_STREAMS BIG_ROUTES CLIENT_CPU SERVER_CPU WAIT_IDLE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNS >= 1 && H2_STREAMS >= 1)) || die "rounds, duration, connections and streams must be >= 1"
((BIG_ROUTES >= 20)) || die "BENCH_ROUTES must be >= 20"

# The route in the middle of the big table (see bench/gen-config.sh: route rI is at position I,
# host routes are those with I % 10 != 0).
MID=$((BIG_ROUTES / 2))
while ((MID % 10 == 0)); do MID=$((MID + 1)); done
MID_HOST="svc$MID.example.com"
MID_PATH="/svc$MID/items"

if ((EUID == 0)); then SUDO=(); else SUDO=(sudo); fi

# ---------------------------------------------------------------------------------------------
# Cleanup: every process we start goes into PIDS; the trap ends them, even on failure.
# ---------------------------------------------------------------------------------------------
PIDS=()
SAMPLER_PID=""
TMP=""
POLICY_RC_CREATED=0

start_rss_sampler() { # pid file: VmRSS every 0.5 s while the run lasts
    local pid=$1 file=$2
    (while [[ -e /proc/$pid/status ]]; do
        awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null || true
        sleep 0.5
    done) >"$file" &
    SAMPLER_PID=$!
    if ((${#PIN_CLIENT[@]})); then taskset -pc "$CLIENT_CPU" "$SAMPLER_PID" >/dev/null; fi
}
stop_rss_sampler() {
    [[ -n $SAMPLER_PID ]] || return 0
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_rss_sampler
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((POLICY_RC_CREATED)); then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d || true
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        if ((rc == 0)) && [[ $KEEP != 1 ]]; then
            rm -rf "$TMP"
        else
            printf '[bench] configs, logs and raw tool output kept in %s\n' "$TMP" >&2
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'printf "[bench] failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 1. Tools
# ---------------------------------------------------------------------------------------------
find_nginx() {
    command -v nginx 2>/dev/null && return 0
    [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx && return 0
    return 1
}

install_tools() {
    local pkgs=()
    command -v wrk >/dev/null || pkgs+=(wrk)
    find_nginx >/dev/null || pkgs+=(nginx)
    command -v h2load >/dev/null || pkgs+=(nghttp2-client)
    command -v curl >/dev/null || pkgs+=(curl)
    command -v taskset >/dev/null || pkgs+=(util-linux)
    command -v getconf >/dev/null || pkgs+=(libc-bin)
    ((${#pkgs[@]} > 0)) || return 0
    command -v apt-get >/dev/null || die "missing tools (${pkgs[*]}) and no apt-get to install them"
    log "installing ${pkgs[*]} with apt-get"
    # Keep the package's postinst from starting the system nginx on port 80.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    "${SUDO[@]}" apt-get update -q >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
    if ((POLICY_RC_CREATED)); then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
    # If the service got started anyway, stop it: we run our own instances.
    if [[ " ${pkgs[*]} " == *" nginx "* ]] && [[ -s /run/nginx.pid ]] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
        log "stopping the system nginx service the install started"
        "${SUDO[@]}" service nginx stop >&2 || "${SUDO[@]}" kill "$(cat /run/nginx.pid)" || true
    fi
}

install_tools
NGINX=$(find_nginx) || die "nginx not found after install"
for t in wrk h2load curl taskset getconf awk sort; do
    command -v "$t" >/dev/null || die "$t not found"
done

NGINX_VERSION=$("$NGINX" -v 2>&1 | sed -n 's#.*nginx/\([0-9.]*\).*#\1#p')
WRK_VERSION=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}' || true)
H2LOAD_VERSION=$(h2load --version 2>&1 | head -n1 | sed 's/^h2load //' || true)
CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)

if [[ $NO_PIN == 1 ]]; then
    PIN_CLIENT=()
    PIN_SERVER=()
elif ((NPROC < 2)); then
    log "WARNING: only $NPROC CPU(s): running unpinned, numbers are not comparable with the baseline"
    PIN_CLIENT=()
    PIN_SERVER=()
    NO_PIN=1
else
    PIN_CLIENT=(taskset -c "$CLIENT_CPU")
    PIN_SERVER=(taskset -c "$SERVER_CPU")
fi

# ---------------------------------------------------------------------------------------------
# 2. Build
# ---------------------------------------------------------------------------------------------
if [[ $SKIP_MESHGATE != 1 ]]; then
    if [[ $SKIP_BUILD != 1 ]]; then
        log "building: cargo build --release -p meshgate"
        (cd "$ROOT" && cargo build --release -p meshgate) || die "cargo build --release -p meshgate failed (set BENCH_SKIP_MESHGATE=1 to bench only direct + nginx)"
    fi
    [[ -x $MESHGATE_BIN ]] || die "$MESHGATE_BIN not found (build it, or set MESHGATE_BIN / BENCH_SKIP_MESHGATE=1)"
fi

# ---------------------------------------------------------------------------------------------
# Ports, temp dir, configs
# ---------------------------------------------------------------------------------------------
PORTS=("$PORT_UPSTREAM" "$PORT_NGINX" "$PORT_NGINX_H2")
[[ $SKIP_MESHGATE == 1 ]] || PORTS+=("$PORT_MESHGATE" "$PORT_MESHGATE_BIG" "$PORT_MESHGATE_AUTH")
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "${PORTS[@]}"; do
    if port_in_use "$p"; then
        who=""
        command -v ss >/dev/null && who=$(ss -Hltnp "sport = :$p" 2>/dev/null | head -n3 || true)
        die "port $p on 127.0.0.1 is already in use${who:+ by: $who}. The bench needs ports ${PORTS[*]} free: stop whatever listens there (a previous bench run that was killed with -9?) and retry."
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-bench.XXXXXX")
RESULTS=$TMP/results.tsv
THREADS=$TMP/threads.tsv
COMMANDS=$TMP/commands.txt
: >"$RESULTS"
: >"$COMMANDS"

nginx_conf_head() { # $1 = instance dir
    cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_temp_paths() { # $1 = instance dir: keep nginx out of /var/lib/nginx (works without root)
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do
        echo "    ${t}_temp_path $1/tmp-$t;"
    done
}

mkdir -p "$TMP/upstream" "$TMP/nginx" "$TMP/meshgate" "$TMP/meshgate-big" "$TMP/meshgate-auth"
{
    nginx_conf_head "$TMP/upstream"
    cat <<EOF
http {
$(nginx_temp_paths "$TMP/upstream")
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    default_type text/plain;
    server {
        listen 127.0.0.1:$PORT_UPSTREAM backlog=4096;
        location / { return 200 "$BODY"; }
        # A Zipkin collector that accepts every batch (for the traced bench route).
        location = /api/v2/spans { return 202; }
        # A small JSON answer (for the body-transform route and its plain comparison).
        location = /bench.json { default_type application/json; return 200 '$BENCH_JSON'; }
        # Small JSON answers: the backends of the aggregation bench route (and /agg/user alone,
        # through the plain catch-all, as its one-backend baseline).
        location = /agg/user { default_type application/json; return 200 '{"id":7,"name":"bench-user","email":"u7@example.com"}'; }
        location = /agg/orders { default_type application/json; return 200 '{"items":[{"id":1,"total":10},{"id":2,"total":25}]}'; }
        location = /agg/recs { default_type application/json; return 200 '{"items":["a","b","c"]}'; }
    }
}
EOF
} >"$TMP/upstream/nginx.conf"

# nginx >= 1.25.1 replaced `listen ... http2` with the `http2 on;` directive.
if printf '%s\n%s\n' 1.25.1 "$NGINX_VERSION" | sort -V -C; then
    NGINX_H2_LISTEN="listen 127.0.0.1:$PORT_NGINX_H2 backlog=4096; http2 on;"
else
    NGINX_H2_LISTEN="listen 127.0.0.1:$PORT_NGINX_H2 http2 backlog=4096;"
fi
{
    nginx_conf_head "$TMP/nginx"
    cat <<EOF
http {
$(nginx_temp_paths "$TMP/nginx")
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    upstream backend {
        server 127.0.0.1:$PORT_UPSTREAM;
        keepalive 64;
        keepalive_requests 1000000;
    }
    # The h2c server has $((CONNS * H2_STREAMS)) requests in flight: with only 64 idle connections kept it
    # would open and close upstream connections all the time, so it gets a pool that fits them.
    upstream backend_h2 {
        server 127.0.0.1:$PORT_UPSTREAM;
        keepalive $((CONNS * H2_STREAMS > 64 ? CONNS * H2_STREAMS : 64));
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        $NGINX_H2_LISTEN
        location / {
            proxy_pass http://backend_h2;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx/nginx.conf"

if [[ $SKIP_MESHGATE != 1 ]]; then
    bash "$BENCH/gen-config.sh" 10 "$PORT_MESHGATE" "$PORT_UPSTREAM" >"$TMP/meshgate/meshgate.yaml"
    # A third instance: the small table plus routes with plugins (bench/plugin-routes.sh: key-auth
    # with 1,000 consumers, jwt RS256 with a key made here, rate limiting local and in Redis). Its
    # catch-all `/` (sent the same headers) is the "same route without the plugin" they compare with.
    read -r BENCH_API_KEY BENCH_JWT < <(bash "$BENCH/plugin-routes.sh" "$TMP/meshgate-auth")
    { bash "$BENCH/gen-config.sh" 10 "$PORT_MESHGATE_AUTH" "$PORT_UPSTREAM"; cat "$TMP/meshgate-auth/plugins.yaml"; } >"$TMP/meshgate-auth/meshgate.yaml"
    bash "$BENCH/gen-config.sh" "$BIG_ROUTES" "$PORT_MESHGATE_BIG" "$PORT_UPSTREAM" >"$TMP/meshgate-big/meshgate.yaml"
fi

# ---------------------------------------------------------------------------------------------
# 3-5. Servers
# ---------------------------------------------------------------------------------------------
LAST_PID=""
start_bg() { # name log cmd... ; sets LAST_PID
    local name=$1 logf=$2
    shift 2
    echo "${PIN_SERVER[*]}${PIN_SERVER[*]:+ }$*" >>"$TMP/server-commands.txt"
    "${PIN_SERVER[@]}" "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    log "started $name (pid $LAST_PID): $*"
}

alive() { # pid: running (a server that died stays a zombie until reaped, so kill -0 isn't enough)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z ]]
}

wait_ready() { # name pid url [host] [timeout s]
    local name=$1 pid=$2 url=$3 host=${4:-} timeout=${5:-30} i
    local hdr=()
    [[ -n $host ]] && hdr=(-H "Host: $host")
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" || {
            tail -n 30 "$TMP"/*/*.log >&2 2>/dev/null || true
            die "$name (pid $pid) exited during startup; its log is above and in $TMP"
        }
        curl -s -o /dev/null --max-time 1 "${hdr[@]}" "$url" && return 0
        sleep 0.1
    done
    die "$name did not answer $url within ${timeout}s"
}

check_response() { # name url [header line, e.g. "Host: x"] : 200 and the upstream's body
    local name=$1 url=$2 header=${3:-} out code body
    local hdr=()
    [[ -n $header ]] && hdr=(-H "$header")
    out=$(curl -s --max-time 5 "${hdr[@]}" -w '\n%{http_code}' "$url") || die "$name: request to $url failed"
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    [[ $code == 200 && $body == "$BODY" ]] || die "$name: $url${header:+ ($header)} answered $code with body '${body:0:200}', expected 200 and the upstream's ${#BODY}-byte body"
}

check_body() { # name url body : 200 and exactly that body
    local name=$1 url=$2 want=$3 out code body
    out=$(curl -s --max-time 5 -w '\n%{http_code}' "$url") || die "$name: request to $url failed"
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    [[ $code == 200 && $body == "$want" ]] || die "$name: $url answered $code with body '${body:0:200}', expected 200 and '$want'"
}

check_aggregate() { # name url : 200 with every backend's part, nothing marked missing
    local name=$1 url=$2 out
    out=$(curl -s -i --max-time 5 "$url") || die "$name: request to $url failed"
    [[ $out == "HTTP/1.1 200"* && $out == *'"bench-user"'* && $out == *'"orders"'* && $out == *'"recs"'* ]] ||
        die "$name: $url answered '${out:0:300}', expected 200 with the user, orders and recs parts"
    [[ ${out,,} != *x-meshgate-incomplete* ]] || die "$name: $url marked backends missing: '${out:0:300}'"
}

check_h2() { # name url : h2c prior knowledge works
    local name=$1 url=$2 out
    out=$(h2load -n 10 -c 1 "$url" 2>&1) || true
    if ! grep -q '10 succeeded' <<<"$out" || ! grep -q '10 2xx' <<<"$out"; then
        die "$name: h2c (prior knowledge) check against $url failed: $(grep -E 'requests:|status codes:|Application protocol' <<<"$out" | tr '\n' ' ')"
    fi
}

# Machine-wide CPU busy % over $1 s (from /proc/stat), taken while our servers are idle: what
# other processes (another build, say) are using. The bench is only meaningful when this is ~0.
background_busy() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%.0f", (t > 0 ? (y[1] - x[1]) * 100 / t : 0) }'
}

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# CPU ticks of each thread of PID, summed by thread name without a trailing number
# (meshgate-worker-0 and -1 count as meshgate-worker): "name ticks" lines.
thread_ticks() {
    local t s f
    for t in /proc/"$1"/task/*; do
        s=$(<"$t/stat") 2>/dev/null || continue
        f=${s#*(}
        printf '%s %s\n' "${f%%)*}" "$(read -ra x <<<"${s##*) }"; echo $((x[11] + x[12])))"
    done | awk '{ n = $1; sub(/-[0-9]+$/, "", n); t[n] += $2 } END { for (n in t) print n, t[n] }'
}
cpu_ticks() { # utime + stime (fields 14 and 15 of /proc/PID/stat; comm may contain spaces)
    local s f
    s=$(<"/proc/$1/stat")
    s=${s##*) }
    read -ra f <<<"$s"
    echo $((f[11] + f[12]))
}

start_bg upstream "$TMP/upstream/stdout.log" "$NGINX" -p "$TMP/upstream" -e "$TMP/upstream/error.log" -c "$TMP/upstream/nginx.conf"
UPSTREAM_PID=$LAST_PID
wait_ready upstream "$UPSTREAM_PID" "http://127.0.0.1:$PORT_UPSTREAM/"
check_response upstream "http://127.0.0.1:$PORT_UPSTREAM/"

start_bg nginx "$TMP/nginx/stdout.log" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
NGINX_PID=$LAST_PID
wait_ready nginx "$NGINX_PID" "http://127.0.0.1:$PORT_NGINX/"
check_response nginx "http://127.0.0.1:$PORT_NGINX/"
check_h2 nginx-h2 "http://127.0.0.1:$PORT_NGINX_H2/"

declare -A IDLE_RSS=()
IDLE_RSS[nginx]=$(rss_kb "$NGINX_PID" VmRSS)

if [[ $SKIP_MESHGATE != 1 ]]; then
    export RUST_LOG=${RUST_LOG:-warn}
    start_bg meshgate "$TMP/meshgate/meshgate.log" "$MESHGATE_BIN" run --config "$TMP/meshgate/meshgate.yaml"
    MESHGATE_PID=$LAST_PID
    start_bg meshgate-big "$TMP/meshgate-big/meshgate.log" "$MESHGATE_BIN" run --config "$TMP/meshgate-big/meshgate.yaml"
    MESHGATE_BIG_PID=$LAST_PID
    start_bg meshgate-auth "$TMP/meshgate-auth/meshgate.log" "$MESHGATE_BIN" run --config "$TMP/meshgate-auth/meshgate.yaml"
    MESHGATE_AUTH_PID=$LAST_PID
    wait_ready meshgate "$MESHGATE_PID" "http://127.0.0.1:$PORT_MESHGATE/"
    wait_ready meshgate-big "$MESHGATE_BIG_PID" "http://127.0.0.1:$PORT_MESHGATE_BIG/" "" 120
    check_response meshgate "http://127.0.0.1:$PORT_MESHGATE/"
    check_response meshgate "http://127.0.0.1:$PORT_MESHGATE/svc3/x" "Host: svc3.example.com"
    wait_ready meshgate-auth "$MESHGATE_AUTH_PID" "http://127.0.0.1:$PORT_MESHGATE_AUTH/"
    check_response meshgate-key-auth "http://127.0.0.1:$PORT_MESHGATE_AUTH/key" "apikey: $BENCH_API_KEY"
    check_response meshgate-jwt "http://127.0.0.1:$PORT_MESHGATE_AUTH/jwt" "Authorization: Bearer $BENCH_JWT"
    check_response meshgate-rl-local "http://127.0.0.1:$PORT_MESHGATE_AUTH/rl-local"
    check_response meshgate-rl-redis "http://127.0.0.1:$PORT_MESHGATE_AUTH/rl-redis"
    check_response meshgate-observed "http://127.0.0.1:$PORT_MESHGATE_AUTH/observed"
    check_body meshgate-json-plain "http://127.0.0.1:$PORT_MESHGATE_AUTH/bench.json" "$BENCH_JSON"
    check_body meshgate-json-transform "http://127.0.0.1:$PORT_MESHGATE_AUTH/transform/bench.json" "$BENCH_JSON_TRANSFORMED"
    check_aggregate meshgate-aggregate "http://127.0.0.1:$PORT_MESHGATE_AUTH/aggregate"
    for path in key jwt; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_MESHGATE_AUTH/$path")
        [[ $code == 401 ]] || die "meshgate-auth: /$path without credentials answered $code, expected 401"
    done
    check_response meshgate-10k "http://127.0.0.1:$PORT_MESHGATE_BIG/"
    check_response meshgate-10k "http://127.0.0.1:$PORT_MESHGATE_BIG$MID_PATH" "Host: $MID_HOST"
    check_response meshgate-10k "http://127.0.0.1:$PORT_MESHGATE_BIG/api$((MID - MID % 10))/x"
    check_h2 meshgate-h2 "http://127.0.0.1:$PORT_MESHGATE/"
    # Idle RSS: started, the checks above served, 1 s to settle (config loading's transient
    # allocations), no load yet.
    sleep 1
    IDLE_RSS[meshgate]=$(rss_kb "$MESHGATE_PID" VmRSS)
    IDLE_RSS[meshgate-10k]=$(rss_kb "$MESHGATE_BIG_PID" VmRSS)
    IDLE_RSS[meshgate-auth]=$(rss_kb "$MESHGATE_AUTH_PID" VmRSS)
fi

# ---------------------------------------------------------------------------------------------
# 7. Measurements
# ---------------------------------------------------------------------------------------------
# Targets: name|tool|url|extra header line|pid whose CPU/RSS is measured|idle-RSS key
TARGETS=(
    "direct|wrk|http://127.0.0.1:$PORT_UPSTREAM/||$UPSTREAM_PID|"
    "nginx|wrk|http://127.0.0.1:$PORT_NGINX/||$NGINX_PID|nginx"
)
if [[ $SKIP_MESHGATE != 1 ]]; then
    TARGETS+=(
        "meshgate|wrk|http://127.0.0.1:$PORT_MESHGATE/||$MESHGATE_PID|meshgate"
        "meshgate-10k|wrk|http://127.0.0.1:$PORT_MESHGATE_BIG/||$MESHGATE_BIG_PID|meshgate-10k"
        "meshgate-10k-mid|wrk|http://127.0.0.1:$PORT_MESHGATE_BIG$MID_PATH|Host: $MID_HOST|$MESHGATE_BIG_PID|meshgate-10k"
        "meshgate-noauth-key|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/plain|apikey: $BENCH_API_KEY|$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-key-auth|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/key|apikey: $BENCH_API_KEY|$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-noauth-jwt|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/plain|Authorization: Bearer $BENCH_JWT|$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-jwt|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/jwt|Authorization: Bearer $BENCH_JWT|$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-noplugin|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/plain||$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-observed|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/observed||$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-rl-local|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/rl-local||$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-rl-redis|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/rl-redis||$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-json-plain|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/bench.json||$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-json-transform|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/transform/bench.json||$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-agg-one|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/agg/user||$MESHGATE_AUTH_PID|meshgate-auth"
        "meshgate-aggregate|wrk|http://127.0.0.1:$PORT_MESHGATE_AUTH/aggregate||$MESHGATE_AUTH_PID|meshgate-auth"
    )
fi
TARGETS+=("nginx-h2|h2load|http://127.0.0.1:$PORT_NGINX_H2/||$NGINX_PID|nginx")
[[ $SKIP_MESHGATE == 1 ]] || TARGETS+=("meshgate-h2|h2load|http://127.0.0.1:$PORT_MESHGATE/||$MESHGATE_PID|meshgate")
if [[ -n $ONLY ]]; then
    kept=()
    for t in "${TARGETS[@]}"; do
        if [[ ${t%%|*} =~ $ONLY ]]; then kept+=("$t"); fi
    done
    ((${#kept[@]})) || die "BENCH_ONLY='$ONLY' matches no target"
    TARGETS=("${kept[@]}")
fi

# Parses `wrk --latency` output: requests rps p50_ms p99_ms errors
parse_wrk() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /requests in/ { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        END { printf "%d %.2f %.4f %.4f %d\n", req, rps, p50, p99, err }
    ' "$1"
}

# Parses h2load output plus its --log-file (per request: start µs, status, duration µs):
# requests rps p50_ms p99_ms errors
parse_h2load() {
    local out=$1 reqlog=$2 stats pct ndone rps bad p50 p99
    stats=$(awk '
        /^finished in/ { rps = $4 }
        /^requests:/ { ndone = $6; bad = $10 }
        /^status codes:/ { bad += $5 + $7 + $9 }
        END { printf "%d %.2f %d\n", ndone, rps, bad }
    ' "$out")
    pct=$(cut -f3 "$reqlog" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "0 0"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
            printf "%.4f %.4f\n", v[i50] / 1000, v[i99] / 1000
        }')
    read -r ndone rps bad <<<"$stats"
    read -r p50 p99 <<<"$pct"
    echo "$ndone $rps $p50 $p99 $bad"
}

record_cmd() { grep -qxF -- "$1" "$COMMANDS" || echo "$1" >>"$COMMANDS"; }


measure() { # round "name|tool|url|header line|pid|rsskey"
    local round=$1 name tool url header pid rsskey
    IFS='|' read -r name tool url header pid rsskey <<<"$2"
    local raw=$TMP/raw/$name.r$round.txt reqlog=$TMP/raw/$name.r$round.h2log
    local hdr=() warm=() run=()
    mkdir -p "$TMP/raw"
    if [[ $tool == wrk ]]; then
        [[ -n $header ]] && hdr=(-H "$header")
        warm=(wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${hdr[@]}" "$url")
        run=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "$url")
    else
        warm=(h2load -t1 -c"$CONNS" -m"$H2_STREAMS" -D "$WARMUP" "$url")
        run=(h2load -t1 -c"$CONNS" -m"$H2_STREAMS" -D "$DURATION" --log-file="$reqlog" "$url")
    fi
    local shown="${PIN_CLIENT[*]}${PIN_CLIENT[*]:+ }${run[*]}"
    shown=${shown//$reqlog/REQUEST_LOG}
    [[ -n $header ]] && shown=${shown//"$header"/"'$header'"}
    record_cmd "$name: $shown"
    log "round $round/$ROUNDS: $name (${WARMUP}s warm-up + ${DURATION}s)"
    if ((WARMUP > 0)); then
        "${PIN_CLIENT[@]}" "${warm[@]}" >"$raw.warmup" 2>&1 || die "$name warm-up failed: $(tail -n5 "$raw.warmup")"
    fi
    local bg
    bg=$(background_busy 0.5)
    if ((bg > 10)); then
        log "  WARNING: other processes keep the machine ${bg}% busy (of all CPUs): numbers will be low and noisy"
    fi
    local c0 u0 c1 u1
    c0=$(cpu_ticks "$pid")
    u0=$(cpu_ticks "$UPSTREAM_PID")
    thread_ticks "$pid" >"$raw.threads0"
    start_rss_sampler "$pid" "$raw.rss"
    "${PIN_CLIENT[@]}" "${run[@]}" >"$raw" 2>&1 || die "$name: ${run[0]} failed: $(tail -n5 "$raw")"
    stop_rss_sampler
    if ! alive "$pid"; then
        tail -n 30 "$TMP"/*/*.log >&2 2>/dev/null || true
        die "$name: the server (pid $pid) died during the run; logs above and in $TMP"
    fi
    c1=$(cpu_ticks "$pid")
    u1=$(cpu_ticks "$UPSTREAM_PID")
    thread_ticks "$pid" >"$raw.threads1"
    local requests rps p50 p99 errors
    if [[ $tool == wrk ]]; then
        read -r requests rps p50 p99 errors < <(parse_wrk "$raw")
    else
        read -r requests rps p50 p99 errors < <(parse_h2load "$raw" "$reqlog")
        rm -f "$reqlog"
    fi
    ((requests > 0)) || die "$name: no requests completed, see $raw"
    local cpu_us up_us rss_peak hwm
    cpu_us=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    up_us=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    rss_peak=$( (cat "$raw.rss"; rss_kb "$pid" VmRSS) | sort -n | tail -n1)
    hwm=$(rss_kb "$pid" VmHWM)
    if [[ $name == direct ]]; then cpu_us=-; fi # the upstream's own CPU is in up_us
    [[ -n $rsskey ]] || { rss_peak=-; hwm=-; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$name" "$requests" "$rps" "$p50" "$p99" "$errors" "$cpu_us" "$up_us" "$rss_peak" "$hwm" "$bg" >>"$RESULTS"
    log "  $name: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, proxy CPU ${cpu_us} µs/req, upstream CPU ${up_us} µs/req, errors $errors"
    if [[ $name == meshgate* ]]; then
        # The proxy's CPU by thread, µs per request: round, target, thread, µs.
        awk -v r="$round" -v t="$name" -v hz="$CLK_TCK" -v n="$requests" 'NR == FNR { a[$1] = $2; next }
            { d = $2 - a[$1]; if (d > 0) printf "%s\t%s\t%s\t%.2f\n", r, t, $1, d / hz * 1e6 / n }' \
            "$raw.threads0" "$raw.threads1" >>"$THREADS"
    fi
    if ((errors > 0)); then
        log "  WARNING: $name had $errors failed/non-2xx responses: its numbers are not valid"
    fi
}

if ((WAIT_IDLE > 0)); then
    log "waiting up to ${WAIT_IDLE}s for the machine to be idle (background CPU <= 10%)"
    waited=0
    while bg=$(background_busy 2) && ((bg > 10 && waited < WAIT_IDLE)); do
        waited=$((waited + 2))
        if ((waited % 30 == 0)); then log "  still ${bg}% busy after ${waited}s"; fi
    done
    log "background CPU ${bg}% after ${waited}s: starting"
fi

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
for ((r = 1; r <= ROUNDS; r++)); do
    for t in "${TARGETS[@]}"; do
        measure "$r" "$t"
    done
done

# ---------------------------------------------------------------------------------------------
# 8. Report
# ---------------------------------------------------------------------------------------------
# median COLUMN TARGET (columns: 1 round 2 name 3 requests 4 rps 5 p50 6 p99 7 errors 8 cpu 9 upcpu
# 10 rss_peak 11 hwm 12 background busy %); prints "-" when there is no numeric value.
median() {
    awk -F'\t' -v c="$1" -v n="$2" '$2 == n && $c != "-" { print $c }' "$RESULTS" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
total_errors() { awk -F'\t' -v n="$1" '$2 == n { s += $7 } END { print s + 0 }' "$RESULTS"; }
fmt() { # printf format value ("-" stays "-")
    # shellcheck disable=SC2059 # the format is the argument
    if [[ $2 == - || -z $2 ]]; then echo "—"; else LC_ALL=C printf "$1" "$2"; fi
}
mb() { if [[ $1 == - || -z $1 ]]; then echo "—"; else LC_ALL=C awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; fi; }
ratio() { # a b -> a/b with 2 decimals
    if [[ $1 == - || $2 == - || -z $1 || -z $2 ]]; then echo "—"; else LC_ALL=C awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "—"; else printf "%.2f×", a / b }'; fi
}

describe() {
    case $1 in
    direct) echo "direct to upstream (the limit)" ;;
    nginx) echo "nginx $NGINX_VERSION \`proxy_pass\`, upstream keepalive 64" ;;
    meshgate) echo "meshgate, 10 routes (catch-all \`/\`)" ;;
    meshgate-10k) echo "meshgate, $BIG_ROUTES routes (catch-all \`/\`)" ;;
    meshgate-10k-mid) echo "meshgate, $BIG_ROUTES routes (mid-table \`$MID_HOST$MID_PATH\`)" ;;
    meshgate-noauth-key) echo "meshgate + auth routes, \`/plain\` (catch-all) without auth, sent an \`apikey\` header" ;;
    meshgate-key-auth) echo "meshgate + auth routes, \`/key\` with key-auth (1,000 consumers)" ;;
    meshgate-noauth-jwt) echo "meshgate + auth routes, \`/plain\` (catch-all) without auth, sent the RS256 token" ;;
    meshgate-jwt) echo "meshgate + auth routes, \`/jwt\` with jwt (RS256)" ;;
    meshgate-noplugin) echo "meshgate + plugin routes, \`/plain\` (catch-all) without plugins" ;;
    meshgate-rl-local) echo "meshgate + plugin routes, \`/rl-local\`: rate-limiting, local" ;;
    meshgate-rl-redis) echo "meshgate + plugin routes, \`/rl-redis\`: rate-limiting, Redis" ;;
    meshgate-observed) echo "meshgate + plugin routes, \`/observed\`: access log + tracing 100 % (metrics always on)" ;;
    meshgate-json-plain) echo "meshgate + plugin routes, \`/bench.json\` without plugins (small JSON answer)" ;;
    meshgate-json-transform) echo "meshgate + plugin routes, \`/transform/bench.json\`: response-transformer on the JSON body" ;;
    meshgate-agg-one) echo "meshgate + plugin routes, \`/agg/user\`: one small JSON answer through \`/\`" ;;
    meshgate-aggregate) echo "meshgate + plugin routes, \`/aggregate\`: 3 JSON backends called at once and merged" ;;
    nginx-h2) echo "nginx $NGINX_VERSION, h2c client side" ;;
    meshgate-h2) echo "meshgate, 10 routes, h2c client side" ;;
    esac
}
declare -A MED_RPS MED_P50 MED_P99 MED_CPU MED_UP MED_RSS
for t in "${TARGETS[@]}"; do
    name=${t%%|*}
    MED_RPS[$name]=$(median 4 "$name")
    MED_P50[$name]=$(median 5 "$name")
    MED_P99[$name]=$(median 6 "$name")
    MED_CPU[$name]=$(median 8 "$name")
    MED_UP[$name]=$(median 9 "$name")
    MED_RSS[$name]=$(median 10 "$name")
done

summary_table() {
    echo "| target | protocol | req/s | p50 | p99 | proxy CPU µs/req | upstream CPU µs/req | RSS idle | RSS peak under load | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    local t name key
    for t in "${TARGETS[@]}"; do
        IFS='|' read -r name _ _ _ _ key <<<"$t"
        local idle="-"
        [[ -n $key ]] && idle=${IDLE_RSS[$key]:--}
        local pr
        if [[ $name == *-h2 ]]; then pr="h2c (h2load -m$H2_STREAMS)"; else pr="HTTP/1.1 (wrk)"; fi
        echo "| $(describe "$name") | $pr | $(fmt '%.0f' "${MED_RPS[$name]}") | $(fmt '%.3f ms' "${MED_P50[$name]}") | $(fmt '%.3f ms' "${MED_P99[$name]}") | $(fmt '%.1f' "${MED_CPU[$name]}") | $(fmt '%.1f' "${MED_UP[$name]}") | $(mb "$idle") | $(mb "${MED_RSS[$name]}") | $(total_errors "$name") |"
    done
}

# The proxy's CPU per request by thread, median of the rounds, for every meshgate target: where a
# plugin's cost lands (the request's worker, or a background thread such as the span exporter).
thread_table() {
    [[ -s $THREADS ]] || return 0
    echo "| target | thread | CPU µs/req (median of rounds) |"
    echo "|---|---|---|"
    sort -t$'\t' -k2,2 -k3,3 -k4,4n "$THREADS" | awk -F'\t' '
        function flush() { if (n) printf "| %s | %s | %.2f |\n", key[1], key[2], (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; n = 0 }
        { k = $2 SUBSEP $3; if (k != last) { flush(); last = k; split(k, key, SUBSEP) } v[++n] = $4 }
        END { flush() }'
}

raw_table() {
    echo "| round | target | requests | req/s | p50 ms | p99 ms | errors | proxy CPU µs/req | upstream CPU µs/req | RSS peak (VmRSS) | VmHWM | background CPU busy |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{
        rss = ($10 == "-") ? "—" : sprintf("%.1f MB", $10 / 1024)
        hwm = ($11 == "-") ? "—" : sprintf("%.1f MB", $11 / 1024)
        cpu = ($8 == "-") ? "—" : $8
        printf "| %s | %s | %s | %.0f | %.3f | %.3f | %s | %s | %s | %s | %s | %s%% |\n", $1, $2, $3, $4, $5, $6, $7, cpu, $9, rss, hwm, $12
    }' "$RESULTS"
}

# paired TARGET BASELINE: the target's req/s and CPU against the baseline measured in the same
# round (just before it), round by round, and the medians of those ratios. On a noisy machine
# the rounds drift together, so these pairs vary less than the ratio of two medians.
paired() {
    awk -F'\t' -v a="$1" -v b="$2" '
        $2 == b { rps[$1] = $4; cpu[$1] = $8 }
        $2 == a && rps[$1] > 0 && cpu[$1] > 0 { n++; r[n] = $4 / rps[$1]; c[n] = $8 / cpu[$1] }
        function med(v, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        END {
            if (n == 0) exit
            s = ""
            for (i = 1; i <= n; i++) s = s sprintf("%s%.2f×", i > 1 ? ", " : "", r[i])
            printf "; round by round against the baseline of the same round: req/s %s (median %.2f×), proxy CPU median %.2f×", s, med(r, n), med(c, n)
        }' "$RESULTS"
}

ratios() {
    has() { [[ -n ${MED_RPS[$1]:-} ]]; }
    if has meshgate && has nginx; then
        echo "- meshgate / nginx, HTTP/1.1: req/s $(ratio "${MED_RPS[meshgate]}" "${MED_RPS[nginx]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate]}" "${MED_CPU[nginx]}"), p99 $(ratio "${MED_P99[meshgate]}" "${MED_P99[nginx]}")"
    fi
    if has meshgate-h2 && has nginx-h2; then
        echo "- meshgate / nginx, h2c: req/s $(ratio "${MED_RPS[meshgate-h2]}" "${MED_RPS[nginx-h2]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-h2]}" "${MED_CPU[nginx-h2]}"), p99 $(ratio "${MED_P99[meshgate-h2]}" "${MED_P99[nginx-h2]}")"
    fi
    if has meshgate-10k && has meshgate; then
        echo "- $BIG_ROUTES / 10 routes, catch-all: req/s $(ratio "${MED_RPS[meshgate-10k]}" "${MED_RPS[meshgate]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-10k]}" "${MED_CPU[meshgate]}")"
    fi
    if has meshgate-10k-mid && has meshgate; then
        echo "- $BIG_ROUTES routes mid-table / 10 routes catch-all: req/s $(ratio "${MED_RPS[meshgate-10k-mid]}" "${MED_RPS[meshgate]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-10k-mid]}" "${MED_CPU[meshgate]}")"
    fi
    if has meshgate-key-auth && has meshgate-noauth-key; then
        echo "- key-auth / same request to a route without auth: req/s $(ratio "${MED_RPS[meshgate-key-auth]}" "${MED_RPS[meshgate-noauth-key]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-key-auth]}" "${MED_CPU[meshgate-noauth-key]}")$(paired meshgate-key-auth meshgate-noauth-key)"
    fi
    if has meshgate-jwt && has meshgate-noauth-jwt; then
        echo "- jwt RS256 / same request to a route without auth: req/s $(ratio "${MED_RPS[meshgate-jwt]}" "${MED_RPS[meshgate-noauth-jwt]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-jwt]}" "${MED_CPU[meshgate-noauth-jwt]}")$(paired meshgate-jwt meshgate-noauth-jwt)"
    fi
    if has meshgate-rl-local && has meshgate-noplugin; then
        echo "- rate-limiting local / same instance without plugins: req/s $(ratio "${MED_RPS[meshgate-rl-local]}" "${MED_RPS[meshgate-noplugin]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-rl-local]}" "${MED_CPU[meshgate-noplugin]}")$(paired meshgate-rl-local meshgate-noplugin)"
    fi
    if has meshgate-rl-redis && has meshgate-noplugin; then
        echo "- rate-limiting Redis / same instance without plugins: req/s $(ratio "${MED_RPS[meshgate-rl-redis]}" "${MED_RPS[meshgate-noplugin]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-rl-redis]}" "${MED_CPU[meshgate-noplugin]}")$(paired meshgate-rl-redis meshgate-noplugin)"
    fi
    if has meshgate-observed && has meshgate-noplugin; then
        echo "- access log + tracing 100 % (+ metrics, always on) / same instance without plugins: req/s $(ratio "${MED_RPS[meshgate-observed]}" "${MED_RPS[meshgate-noplugin]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-observed]}" "${MED_CPU[meshgate-noplugin]}")$(paired meshgate-observed meshgate-noplugin)"
    fi
    if has meshgate-json-transform && has meshgate-json-plain; then
        echo "- response-transformer JSON body (remove + add a field) / same JSON answer without plugins: req/s $(ratio "${MED_RPS[meshgate-json-transform]}" "${MED_RPS[meshgate-json-plain]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-json-transform]}" "${MED_CPU[meshgate-json-plain]}")$(paired meshgate-json-transform meshgate-json-plain)"
    fi
    if has meshgate-aggregate && has meshgate-agg-one; then
        echo "- aggregation over 3 backends / one of those answers through the plain route: req/s $(ratio "${MED_RPS[meshgate-aggregate]}" "${MED_RPS[meshgate-agg-one]}"), p99 $(ratio "${MED_P99[meshgate-aggregate]}" "${MED_P99[meshgate-agg-one]}"), proxy CPU µs/req $(ratio "${MED_CPU[meshgate-aggregate]}" "${MED_CPU[meshgate-agg-one]}")"
    fi
    if has nginx && has direct; then
        echo "- nginx / direct, HTTP/1.1: req/s $(ratio "${MED_RPS[nginx]}" "${MED_RPS[direct]}")"
    fi
    if has meshgate && has direct; then
        echo "- meshgate / direct, HTTP/1.1: req/s $(ratio "${MED_RPS[meshgate]}" "${MED_RPS[direct]}")"
    fi
}

SUMMARY=$(summary_table)
RAW=$(raw_table)
THREADS_TABLE=$(thread_table)
RATIOS=$(ratios)

MODE="full: $ROUNDS round(s) × ${DURATION}s per target"
[[ $QUICK == 1 ]] && MODE="QUICK (BENCH_QUICK=1): $ROUNDS round(s) × ${DURATION}s per target — indicative only"
[[ $SKIP_MESHGATE == 1 ]] && MODE="$MODE; meshgate SKIPPED (BENCH_SKIP_MESHGATE=1): harness check only"
[[ $NO_PIN == 1 ]] && MODE="$MODE; NOT pinned to CPUs"
[[ -n $ONLY ]] && MODE="$MODE; only the targets matching BENCH_ONLY='$ONLY'"
MAX_BG=$(awk -F'\t' '$12 > m { m = $12 } END { print m + 0 }' "$RESULTS")
BG_NOTE="highest background CPU load measured just before a run: ${MAX_BG}% of all CPUs"
((MAX_BG > 10)) && BG_NOTE="$BG_NOTE — **the machine was busy with other work: numbers are low and noisy, rerun on an idle machine**"

printf '\n%s\n\nMode: %s\nLoad: %s\n\n%s\n\nRatios (of medians):\n%s\n\n' "Medians over $ROUNDS round(s):" "$MODE" "$BG_NOTE" "$SUMMARY" "${RATIOS:-  (none: meshgate skipped)}"

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l || echo 0)
((DIRTY > 0)) && COMMIT="$COMMIT (+$DIRTY uncommitted changes)"
MESHGATE_INFO="skipped"
if [[ $SKIP_MESHGATE != 1 ]]; then
    MESHGATE_INFO="$MESHGATE_BIN, commit $COMMIT, $(rustc --version 2>/dev/null || echo 'rustc unknown')"
fi

# Keep what people wrote below the analysis marker.
ANALYSIS_MARKER='<!-- analysis -->'
ANALYSIS=$'\n## Analysis\n\n_Written by people. `bench/run.sh` keeps everything below the `<!-- analysis -->` marker\nwhen it regenerates this file._\n'
if [[ -f $OUT ]] && grep -qxF "$ANALYSIS_MARKER" "$OUT"; then
    ANALYSIS=$(awk -v m="$ANALYSIS_MARKER" 'found { print } $0 == m { found = 1 }' "$OUT")
fi

mkdir -p "$(dirname "$OUT")"
{
    cat <<'EOF'
# Benchmarks

<!-- Generated by bench/run.sh: everything above the analysis marker is rewritten on each run. -->

How fast meshgate proxies compared with nginx on the same machine, and what a 10,000-route table
costs. Regenerate with `bash bench/run.sh` (see `bench/README.md` for knobs and how to read this).

**Method** (as in `shared/reference/baseline.md`): an nginx upstream answers `return 200` with a
100-byte body (1 worker, keep-alive on). Each proxy runs 1 worker: nginx with `proxy_pass` to an
`upstream` block with `keepalive 64`; meshgate with `runtime.workers: 1`. The upstream and the proxy
under test are pinned to CPU 1 (`taskset -c 1`), so they **share one core**; the load generator is
pinned to CPU 0. wrk runs `-t1 -c50 --latency` for the measured duration after a separate 2 s
warm-up run against the same target; HTTP/2 is measured client side only: h2load sends h2c with
prior knowledge (`-c50 -m10`) to the proxy, which talks HTTP/1.1 to the upstream. Targets are
measured in interleaved rounds (every target once per round) and the table shows the median of
each column over the rounds.

**Columns**
- *req/s*: wrk `Requests/sec`; h2load `finished in …, N req/s`.
- *p50 / p99*: wrk `--latency` distribution; for h2load, computed from its `--log-file`
  (per-request time from sending the request to the end of the response) because h2load itself
  only prints min/max/mean/sd.
- *proxy CPU µs/req*: the proxy process's utime+stime (`/proc/PID/stat` fields 14+15, all threads)
  during the measured run, divided by the requests completed. The steadiest figure when the machine
  is noisy; lower is better. For *direct* the upstream is the server, see the next column.
- *upstream CPU µs/req*: the same for the upstream nginx; proxy + upstream share CPU 1, so the
  upstream's cost caps what any proxy can reach.
- *RSS idle*: `VmRSS` after start-up, a few check requests and 1 s to settle, before any load.
  *RSS peak under load*: the highest `VmRSS` sampled every 0.5 s during the run; the raw table also
  has `VmHWM` (the process's lifetime high-water mark, so it grows across rounds). Idle can be
  above the load figure when memory allocated at start-up (parsing a big config) is given back
  to the OS later.
- *errors*: non-2xx responses, socket errors, failed streams. A row with errors is not valid.
- *background CPU busy* (raw table): machine-wide CPU use sampled for 0.5 s just before each run,
  while the servers are idle: other people's work (a cargo build, say). Anything above a few %
  makes that run's numbers low and noisy.

Both nginx instances run with `master_process off` (a single process that serves and can be
measured by its pid) and `keepalive_requests 1000000` so that neither side recycles connections
during a run. nginx's h2c listener proxies through its own `upstream` block whose `keepalive`
is 500 (50 connections × 10 streams in flight; with 64 it would open and close upstream
connections all the time). meshgate's 10-route table has a catch-all `/` plus 9
`hosts`+`paths` routes; the big table is `bench/gen-config.sh 10000 …` (catch-all, 999 hostless
`/apiN` prefix routes, 9000 `svcN.example.com` + `/svcN` routes). Its runs hit the catch-all (no
host route matches) and, separately, route N/2+1 in the middle of the file. A third meshgate
instance has the 10-route table plus `/key` (key-auth, 1,000 consumers) and `/jwt` (jwt, RS256
key from the config, `iss`/`aud` checked, `sub` naming a declared consumer); each is compared with
the same request (same credential header) sent to that instance's catch-all route as `/plain`,
which has no authentication, so the ratio is the plugin's cost alone. (Not `/`: hyper reads the
path `/` by a shortcut and every other path in full, which made the plain side ~1 % cheaper.) The same instance has `/rl-local` and
`/rl-redis` (rate-limiting by client IP per second and per hour, limits never reached, counted in
the process or in the machine's Redis on 127.0.0.1:6379, unpinned), and `/observed` (an access
log to a file plus tracing at 100 % sampling, spans batched to a collector stub on the upstream
nginx), compared with `/plain`. `/transform/bench.json` (response-transformer removing one
field of the upstream's 84-byte JSON answer and adding one: the body read whole, rewritten, its
`Content-Length` set) is compared with `/bench.json`, the same answer through the catch-all route.
`/aggregate` is an aggregation route over 3 backends (small
JSON locations of the upstream nginx, called at once, two of them grouped, merged into one
object), compared with one of those JSON answers fetched through the plain catch-all
(`/agg/user`): the upstream serves three requests per aggregated one, which its CPU column shows.
Per-route metrics are on for every route.
EOF
    echo
    echo "## Run"
    echo
    echo "- Date: $START_DATE"
    echo "- Mode: $MODE"
    echo "- Machine: $NPROC CPUs ($CPU_MODEL), $MEM RAM, kernel $(uname -r), $(sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p' /etc/os-release 2>/dev/null)"
    echo "- Background load: $BG_NOTE"
    echo "- Pinning: ${PIN_SERVER[*]:-none} for upstream and proxies, ${PIN_CLIENT[*]:-none} for wrk/h2load"
    echo "- Tools: nginx $NGINX_VERSION, $WRK_VERSION, h2load $H2LOAD_VERSION, CLK_TCK $CLK_TCK"
    echo "- meshgate: $MESHGATE_INFO"
    echo
    echo "## Results (median of $ROUNDS round(s))"
    echo
    echo "$SUMMARY"
    echo
    echo "Ratios (of the medians):"
    echo
    echo "${RATIOS:-- none: meshgate was skipped}"
    echo
    echo "## Proxy CPU by thread"
    echo
    echo "CPU time of each meshgate thread during the measured run (\`/proc/PID/task/*/stat\`, threads"
    echo "of one name summed; names as the kernel keeps them, cut at 15 characters), per request;"
    echo "CLK_TCK resolution, so values under ~1 µs are rough."
    echo
    echo "$THREADS_TABLE"
    echo
    echo "## Per-round raw numbers"
    echo
    echo "$RAW"
    echo
    echo "## Exact commands"
    echo
    echo "Servers (started once, in this order):"
    echo
    echo '```sh'
    sed "s#$TMP#\$TMP#g" "$TMP/server-commands.txt"
    if [[ $SKIP_MESHGATE != 1 ]]; then
        echo "# configs: bench/gen-config.sh 10 $PORT_MESHGATE $PORT_UPSTREAM > \$TMP/meshgate/meshgate.yaml"
        echo "#          { bench/gen-config.sh 10 $PORT_MESHGATE_AUTH $PORT_UPSTREAM; bench/plugin-routes.sh \$TMP/meshgate-auth >/dev/null; cat \$TMP/meshgate-auth/plugins.yaml; } > \$TMP/meshgate-auth/meshgate.yaml"
        echo "#          bench/gen-config.sh $BIG_ROUTES $PORT_MESHGATE_BIG $PORT_UPSTREAM > \$TMP/meshgate-big/meshgate.yaml"
    fi
    echo '```'
    echo
    echo "Load, per target and round (each preceded by the same command with a ${WARMUP}s duration and no \`--latency\`/\`--log-file\` as warm-up):"
    echo
    echo '```sh'
    cat "$COMMANDS"
    echo '```'
    echo
    echo "<details><summary>upstream nginx.conf</summary>"
    echo
    echo '```nginx'
    sed "s#$TMP#\$TMP#g" "$TMP/upstream/nginx.conf"
    echo '```'
    echo
    echo "</details>"
    echo
    echo "<details><summary>proxy nginx.conf</summary>"
    echo
    echo '```nginx'
    sed "s#$TMP#\$TMP#g" "$TMP/nginx/nginx.conf"
    echo '```'
    echo
    echo "</details>"
    if [[ $SKIP_MESHGATE != 1 ]]; then
        echo
        echo "<details><summary>meshgate config, 10 routes</summary>"
        echo
        echo '```yaml'
        cat "$TMP/meshgate/meshgate.yaml"
        echo '```'
        echo
        echo "</details>"
    fi
    echo
    echo "$ANALYSIS_MARKER"
    printf '%s\n' "$ANALYSIS"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote ${OUT#"$ROOT"/}"
