#!/usr/bin/env bash
# Arrow Flight DoGet throughput: kaifang (unconditional, conditional, conditional with masks)
# against a bare arrow-flight server streaming the same file, same run (see benches/flight.rs).
#
#   benches/flight.sh                        # 10,000,000 rows, 7 runs per figure
#   ROWS=2000000 RUNS=3 benches/flight.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
export ROWS="${ROWS:-10000000}" RUNS SERVER_CPU
cd "$ROOT"
cargo bench --quiet -p kaifang --bench flight --no-run
# The client runs pinned to the other core; the bench starts each server on SERVER_CPU.
taskset -c "$CLIENT_CPU" cargo bench --quiet -p kaifang --bench flight
