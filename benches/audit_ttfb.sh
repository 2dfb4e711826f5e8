#!/usr/bin/env bash
# Time added by the audit log to a conditional `rows` call: the same small query (10 rows,
# same columns and filter) on the conditional enterprises dataset (key check, limiter, intent
# fsync'd before the first byte, completion before the end) and on an unconditional copy (no
# audit), under the same load: wrk, one thread, CONNECTIONS concurrent connections (1 by
# default) for DURATION seconds each, server and client on separate cores. For a 10-row answer
# the latency wrk reports is the time to first byte plus a few microseconds.
#
#   benches/audit_ttfb.sh
#   CONNECTIONS=8 DURATION=20 benches/audit_ttfb.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
CONNECTIONS="${CONNECTIONS:-1}"
DURATION="${DURATION:-10}"

need curl taskset
command -v wrk >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
build_kaifang
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
start_conditional_site "$WORK" 100000
base="http://$KAIFANG_ADDR/v1/datasets"
query="limit=10&columns=uscc,name,legal_rep_mobile"

# run_wrk URL [HEADER] : prints "requests/s p50 p99" (latencies in ms).
run_wrk() {
    local url="$1"; shift
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" | awk '
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = $2 }
        /^ +99%/ { p99 = $2 }
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        END { printf "%s %.3f %.3f\n", rps, ms(p50), ms(p99) }'
}

open=$(run_wrk "$base/enterprises-open/rows?$query&filter=district%20%3D%20%27Haizhou%27")
audited=$(run_wrk "$base/enterprises/rows?$query" -H "Authorization: Bearer $KEY")
records=$(wc -l <"$WORK"/data/audit/segment-*.ndjson | tail -1)

machine
echo "wrk: 1 thread, $CONNECTIONS connections, ${DURATION} s each; 10-row JSON answers"
read -r o_rps o_p50 o_p99 <<<"$open"
read -r a_rps a_p50 a_p99 <<<"$audited"
printf '%-34s %9s req/s   p50 %7.3f ms   p99 %7.3f ms\n' "unconditional copy, no audit" "$o_rps" "$o_p50" "$o_p99"
printf '%-34s %9s req/s   p50 %7.3f ms   p99 %7.3f ms\n' "conditional, audited" "$a_rps" "$a_p50" "$a_p99"
printf '%-34s p50 +%.3f ms   p99 +%.3f ms   (%s audit records written)\n' "added by audit, key and limiter" \
    "$(awk -v a="$a_p50" -v b="$o_p50" 'BEGIN { print a - b }')" "$(awk -v a="$a_p99" -v b="$o_p99" 'BEGIN { print a - b }')" "$records"
