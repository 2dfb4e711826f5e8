#!/usr/bin/env bash
# Arrow Flight DoGet throughput: kaifang (unconditional, conditional, conditional with masks;
# read from the file and held decoded in memory) against a bare arrow-flight server streaming
# the same file and a bare pyarrow Flight server holding its table in memory, same run (see
# benches/flight.rs).
#
#   benches/flight.sh                        # 10,000,000 rows, 5 runs per figure
#   ROWS=2000000 RUNS=3 benches/flight.sh
#
# pyarrow comes from PyPI at the version the interop checks pin (tests/interop/requirements.txt),
# in a virtualenv made once in the cache directory (VENV).
set -euo pipefail
RUNS="${RUNS:-5}"
source "$(dirname "$0")/common.sh"
PIN="$(grep '^pyarrow==' "$ROOT/tests/interop/requirements.txt")"
VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kaifang-bench/pyarrow-venv}"
if [ "$(cat "$VENV/requirements.txt" 2>/dev/null)" != "$PIN" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" 2>/dev/null || {
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    }
    "$VENV/bin/pip" install -q "$PIN"
    echo "$PIN" >"$VENV/requirements.txt"
fi
export ROWS="${ROWS:-10000000}" RUNS SERVER_CPU PYTHON="$VENV/bin/python"
cd "$ROOT"
cargo bench --quiet -p kaifang --bench flight --no-run
# The client runs pinned to the other core; the bench starts each server on SERVER_CPU.
taskset -c "$CLIENT_CPU" cargo bench --quiet -p kaifang --bench flight
