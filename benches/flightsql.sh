#!/usr/bin/env bash
# Flight SQL through the ADBC driver, side by side in one run, on a Parquet file of ROWS_BIG
# trips (benches/common.sh, trips_parquet) held decoded in kaifang's cache:
# - `SELECT * FROM trips` through ADBC against kaifang's plain Flight DoGet of the same dataset
#   (and against ROAPI's Flight SQL endpoint, for context);
# - a GROUP BY over the whole table against ROAPI's Flight SQL endpoint on the same file;
# - a point query `WHERE trip_id = N` on the indexed column: the p50 of LOOKUPS statements one
#   after another on one connection (ROAPI's, which has no index, for context).
# Each figure is the median of RUNS. kaifang runs pinned to SERVER_CPU with one runtime worker,
# ROAPI pinned there too, and the client (benches/flightsql_client.py) on CLIENT_CPU.
#
#   benches/flightsql.sh                                   # 5,000,000 rows, 5 runs
#   ROWS_BIG=1000000 RUNS=3 KAIFANG=target/release/kaifang benches/flightsql.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
ROWS_BIG="${ROWS_BIG:-5000000}"
RUNS="${RUNS:-5}"
LOOKUPS="${LOOKUPS:-200}"
LOOKUP_ID="${LOOKUP_ID:-12345}"
[ "$LOOKUP_ID" -ge 1 ] && [ "$LOOKUP_ID" -le "$ROWS_BIG" ] || { echo "LOOKUP_ID must be in 1..ROWS_BIG" >&2; exit 1; }

need curl taskset
roapi_venv
build_kaifang

WORK="$(mktemp -d)"
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data"
trips_parquet "$WORK/data/trips.parquet" "$ROWS_BIG"
{
    cat <<CONF
[limits]
anonymous_rate = { per_second = 1000000, burst = 1000000 }

[cache]
max_bytes = 1073741824

CONF
    trips_entry
} >"$WORK/kaifang.toml"
start_kaifang "$WORK/kaifang.log" --config "$WORK/kaifang.toml" --data-dir "$WORK/data" --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0
PIDS+=("$KAIFANG_PID")
FLIGHT_ADDR=$(sed -n 's/^kaifang: flight listening on //p' "$WORK/kaifang.log")
# The first call decodes the file into the cache; every figure is of the cached dataset.
curl -s -o /dev/null --fail "http://$KAIFANG_ADDR/v1/datasets/trips/rows?limit=1"
start_roapi "$WORK/data/trips.parquet" "$WORK/roapi.log"
PIDS+=("$ROAPI_PID")

taskset -c "$CLIENT_CPU" "$VENV/bin/python" "$ROOT/benches/flightsql_client.py" \
    "$FLIGHT_ADDR" "127.0.0.1:$ROAPI_FLIGHT_PORT" "$ROWS_BIG" "$RUNS" "$LOOKUP_ID" "$LOOKUPS" >"$WORK/figures"
figure() { awk -v name="$1" '$1 == name { print $2 }' "$WORK/figures"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
sec() { awk -v s="$1" 'BEGIN { printf "%.3f s", s }'; }

echo "kaifang $("$KAIFANG" --version 2>/dev/null | awk '{ print $NF }'), ROAPI $("$VENV/bin/roapi" --version | awk '{ print $NF }'), adbc-driver-flightsql $(sed -n 's/^adbc-driver-flightsql==//p' "$REQUIREMENTS"); $ROWS_BIG rows, median of $RUNS"
machine
echo
echo "| Flight SQL | kaifang | peer, same run | ratio |"
echo "| --- | --- | --- | --- |"
echo "| SELECT * FROM trips through ADBC (peer: kaifang's plain DoGet) | $(sec "$(figure select_all_adbc)") | $(sec "$(figure select_all_doget)") | $(ratio "$(figure select_all_doget)" "$(figure select_all_adbc)") |"
echo "| SELECT * through ADBC (peer: ROAPI Flight SQL) | $(sec "$(figure select_all_adbc)") | $(sec "$(figure select_all_adbc_roapi)") | $(ratio "$(figure select_all_adbc_roapi)" "$(figure select_all_adbc)") |"
echo "| GROUP BY district, count, sum over all rows (peer: ROAPI Flight SQL) | $(sec "$(figure group_by_kaifang)") | $(sec "$(figure group_by_roapi)") | $(ratio "$(figure group_by_roapi)" "$(figure group_by_kaifang)") |"
echo "| WHERE trip_id = $LOOKUP_ID, indexed: p50 of $LOOKUPS (peer: ROAPI) | $(printf '%.2f ms' "$(figure point_p50_ms_kaifang)") | $(printf '%.2f ms' "$(figure point_p50_ms_roapi)") | $(ratio "$(figure point_p50_ms_roapi)" "$(figure point_p50_ms_kaifang)") |"
