#!/usr/bin/env bash
# `rows` on the conditional enterprises dataset through a grant (row filter, three masks,
# nine of ten columns) against the same query on an unconditional copy of the same file,
# written out by hand (same filter, same columns, no masks), in the same run.
#
#   benches/conditional.sh                 # 2,000,000 rows, 5 runs per figure
#   ROWS=10000000 RUNS=3 benches/conditional.sh
set -euo pipefail
RUNS="${RUNS:-5}"
source "$(dirname "$0")/common.sh"
ROWS="${ROWS:-2000000}"

need curl taskset
build_kaifang
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
start_conditional_site "$WORK" "$ROWS"
base="http://$KAIFANG_ADDR/v1/datasets"
columns="uscc,name,district,industry,established_on,status,legal_rep_name,legal_rep_id_card,legal_rep_mobile"
filter="district%20%3D%20%27Haizhou%27"

median_with_key() {
    for _ in $(seq 1 "$RUNS"); do
        taskset -c "$CLIENT_CPU" curl -s -o /dev/null --fail -H "Authorization: Bearer $KEY" -w '%{time_total}\n' "$1"
    done | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

machine
echo "rows: $ROWS enterprises, $RUNS runs each, medians, server on one core"
for format in csv arrow; do
    conditional=$(median_with_key "$base/enterprises/rows?format=$format")
    open=$(median_seconds "$base/enterprises-open/rows?format=$format&columns=$columns&filter=$filter")
    printf '%-6s conditional (grant: filter + 3 masks) %7.3f s   unconditional copy, same query %7.3f s   ratio %.2fx\n' \
        "$format" "$conditional" "$open" "$(awk -v a="$open" -v b="$conditional" 'BEGIN { print a / b }')"
done
