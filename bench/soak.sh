#!/usr/bin/env bash
# Overload soak: the release gateway (2 workers, pinned to CPU 1 by default) against 10,000
# connections that hold it without using it, then HTTP/2 floods, while 16 normal clients keep
# sending requests; the driver (crates/meshgate-e2e/examples/soak.rs) runs on CPU 0 and prints a
# Markdown report (per phase: normal req/s and latency, gateway CPU, memory and descriptors).
#
#   bash bench/soak.sh                      # ~3.5 min: SOAK_ATTACK=10000 SOAK_SECONDS=90 SOAK_H2_SECONDS=15
#   SOAK_ATTACK=2000 SOAK_SECONDS=30 bash bench/soak.sh
#
# Knobs: SOAK_ATTACK, SOAK_SECONDS, SOAK_H2_SECONDS, SOAK_GATEWAY_CPU (default 1), SOAK_DRIVER_CPU
# (default 0), SOAK_SKIP_BUILD=1, SOAK_OUT (default target/soak.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${SOAK_OUT:-$ROOT/target/soak.md}
if [[ ${SOAK_SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --locked -p meshgate >&2
    cargo build --release --locked -p meshgate-e2e --example soak >&2
fi
# 10,000 attack connections on each side, plus the upstream's and the normal clients'.
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= 16384 )) || { echo "soak: needs 16384 open files (ulimit -n), have $(ulimit -n)" >&2; exit 1; }
export SOAK_GATEWAY_CPU=${SOAK_GATEWAY_CPU:-1}
{
    echo "Soak run $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); command: \`bash bench/soak.sh\` (SOAK_ATTACK=${SOAK_ATTACK:-10000}, SOAK_SECONDS=${SOAK_SECONDS:-90}, SOAK_H2_SECONDS=${SOAK_H2_SECONDS:-15})"
    echo
    taskset -c "${SOAK_DRIVER_CPU:-0}" "$ROOT/target/release/examples/soak" "$ROOT/target/release/meshgate"
} | tee "$OUT"
