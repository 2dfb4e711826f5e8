#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz and libFuzzer) for a given time each, and reports
# for each target the executions, the speed, the corpus reached and whether it crashed.
#
#   benches/fuzz.sh                     # every target, 300 s each
#   FUZZ_SECONDS=30 benches/fuzz.sh     # every target, 30 s each (what .ci/run does)
#   benches/fuzz.sh filter range        # those targets only
#
# On the stable toolchain: `--sanitizer none` leaves out the only flag that needs nightly
# (`-Zsanitizer`); the coverage instrumentation libFuzzer steers by is stable. Each run starts
# from the committed seeds (fuzz/seeds/TARGET, read only) and a corpus kept between runs
# (fuzz/corpus/TARGET, not committed). A crash leaves its input in fuzz/artifacts/TARGET/ and
# makes this script fail; reproduce it with
#   cargo fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-...
# cargo-fuzz is installed from crates.io at the version below when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ_SECONDS="${FUZZ_SECONDS:-300}"
CARGO_FUZZ_VERSION="0.13.1"

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

cd "$ROOT/fuzz"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
# Every target in one build, before the clock of the first run starts.
cargo fuzz build --sanitizer none

failed=()
printf '%-14s %12s %10s %8s %s\n' target executions "exec/s" corpus result
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="$(mktemp)"
    status=0
    cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status): $(grep -m1 -E 'panicked at|ERROR: libFuzzer|error(\[|:)' "$log" || echo 'see the log')"
        failed+=("$target")
        tail -40 "$log" >&2
    fi
    printf '%-14s %12s %10s %8s %s\n' "$target" "${runs:-0}" "${speed:-0}" "$corpus" "$result"
    rm -f "$log"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
