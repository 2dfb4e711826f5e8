#!/usr/bin/env bash
# `rows` throughput on the demo datasets at 10 million rows: CSV to CSV (bus-arrivals) and
# Parquet to Arrow IPC (air-quality), beside a raw download of the same files as the peer that
# only moves bytes.
#
#   benches/rows.sh                 # 10,000,000 rows, 3 runs per figure
#   ROWS=1000000 RUNS=5 benches/rows.sh
set -euo pipefail
RUNS="${RUNS:-3}"
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-10000000}"

need curl taskset
build_kaifang
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

start=$(date +%s.%N)
"$KAIFANG" demo-data --rows "$ROWS" --out "$WORK/data/demo"
generated=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
cat "$WORK/data/demo/bus-arrivals.csv" "$WORK/data/demo/air-quality.parquet" >/dev/null

# The embedded demo configuration finds the generated files and serves them.
start_kaifang "$WORK/kaifang.log" --data-dir "$WORK/data" --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0
base="http://$KAIFANG_ADDR/v1/datasets"

csv_rows=$(median_seconds "$base/bus-arrivals/rows?format=csv")
csv_raw=$(median_seconds "$base/bus-arrivals/download")
arrow_rows=$(median_seconds "$base/air-quality/rows?format=arrow")
filtered=$(median_seconds "$base/bus-arrivals/rows?format=csv&filter=delay_seconds%20%3E%20300%20and%20district%20%3D%20%27Haizhou%27&columns=route,stop_name,delay_seconds")
rss=$(peak_rss_mib "$KAIFANG_PID")

per_sec() { awk -v n="$ROWS" -v t="$1" 'BEGIN { printf "%.2f M rows/s", n / t / 1e6 }'; }
mb_per_sec() { awk -v b="$(stat -c %s "$1")" -v t="$2" 'BEGIN { printf "%.0f MB/s", b / t / 1e6 }'; }

machine
echo "rows: $ROWS per dataset (generated in ${generated} s); ${RUNS} runs each; medians; server on one core"
printf '%-52s %8.2f s  %s\n' "bus-arrivals CSV -> CSV, all rows and columns" "$csv_rows" "$(per_sec "$csv_rows")"
printf '%-52s %8.2f s  %s\n' "bus-arrivals CSV raw download (peer: bytes only)" "$csv_raw" "$(mb_per_sec "$WORK/data/demo/bus-arrivals.csv" "$csv_raw")"
printf '%-52s %8.2f s  %s\n' "bus-arrivals CSV -> CSV, filtered and projected" "$filtered" "$(per_sec "$filtered")"
printf '%-52s %8.2f s  %s\n' "air-quality Parquet -> Arrow IPC, all rows" "$arrow_rows" "$(per_sec "$arrow_rows")"
printf '%-52s %8s MiB\n' "kaifang peak RSS over all of the above" "$rss"
