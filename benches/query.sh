#!/usr/bin/env bash
# Small and selective queries (issue 15), side by side with their peers in one run:
#
# - `rows?limit=1` on a 10-row CSV dataset, unconditional and conditional (key, one mask,
#   durable audit), against nginx serving the same one-row JSON as a static file behind a key
#   map (`map $http_authorization`), `limit_req` and a buffered access log;
# - on a Parquet file of ROWS_BIG rows (5,000,000 by default, int64 `trip_id` declared as an
#   index, decoded data cached): a lookup by `trip_id` (index), a lookup by an unindexed column,
#   and `limit=1`, against ROAPI on the same file (`/api/tables/t?filter[...]=`, `?limit=1`);
# - CONCURRENT (1,000) connections calling `limit=1` on that file at once: kaifang's peak RSS
#   against its bound (cache + answer memory budget + 64 MiB) and how every call was answered;
# - the whole file as an Arrow IPC stream (`rows?format=arrow`), against ROAPI's Arrow stream
#   answer (`Accept: application/vnd.apache.arrow.stream`), timed with curl.
#
# Every server runs alone on SERVER_CPU (nginx with one worker, kaifang with one runtime
# worker, ROAPI pinned there too) and the client on CLIENT_CPU (wrk -t1 -c32). Figures are
# medians of RUNS runs; a ratio is kaifang's speed over the peer's (requests per second over
# requests per second, or the peer's time over kaifang's), so above 1 means kaifang is faster.
#
#   benches/query.sh                                   # 5,000,000 rows, 3 runs of 10 s per figure
#   ROWS_BIG=200000 RUNS=1 DURATION=2 benches/query.sh # a quick check of the script itself
#   KAIFANG=path/to/kaifang benches/query.sh           # that binary instead of a release build
#
# Other settings: CONNECTIONS (32), CONCURRENT (1000), CONCURRENT_TIMEOUT (10, seconds after
# which wrk counts a call as timed out), LOOKUP_ID (12345), CACHE_BYTES ([cache] max_bytes,
# 1 GiB), BUDGET_BYTES ([server] answer_memory_bytes, 2 GiB), VENV (the virtualenv for ROAPI
# and the data generator, from benches/requirements-roapi.txt; made once and kept in the cache
# directory).
set -euo pipefail
RUNS="${RUNS:-3}"
source "$(dirname "$0")/common.sh"
ROWS_BIG="${ROWS_BIG:-5000000}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
CONCURRENT="${CONCURRENT:-1000}"
CONCURRENT_TIMEOUT="${CONCURRENT_TIMEOUT:-10}"
LOOKUP_ID="${LOOKUP_ID:-12345}"
CACHE_BYTES="${CACHE_BYTES:-1073741824}"
BUDGET_BYTES="${BUDGET_BYTES:-2147483648}"
[ "$LOOKUP_ID" -ge 1 ] && [ "$LOOKUP_ID" -le "$ROWS_BIG" ] || { echo "LOOKUP_ID must be in 1..ROWS_BIG" >&2; exit 1; }

# Peers: nginx and wrk from Debian, ROAPI from PyPI at the version pinned.
need nginx curl taskset
command -v wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
roapi_venv
build_kaifang

# 1,000 connections on each side of loopback, and the servers' files besides.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((CONCURRENT + 256)) ] || { echo "ulimit -n is $(ulimit -n), too low for $CONCURRENT connections" >&2; exit 1; }

WORK="$(mktemp -d)"
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data"

# --- data ---------------------------------------------------------------------------------
# Ten rows of CSV, and ROWS_BIG trips in Parquet: trip_id 1..ROWS_BIG in order, ticket_no a
# permutation of 0..ROWS_BIG-1 (so a lookup by it matches one row and its order helps no one),
# and a few columns of the usual kinds. The Parquet file carries statistics and a page index, as
# files written for serving do; kaifang and ROAPI read the same file.
cat >"$WORK/data/small.csv" <<'CSV'
id,name,district,mobile
1,Zhang Wei,Haizhou,13800000001
2,Wang Fang,Lianyun,13800000002
3,Li Na,Ganyu,13800000003
4,Liu Yang,Donghai,13800000004
5,Chen Jing,Guanyun,13800000005
6,Yang Li,Guannan,13800000006
7,Zhao Lei,Haizhou,13800000007
8,Huang Min,Lianyun,13800000008
9,Zhou Jie,Ganyu,13800000009
10,Wu Qiang,Donghai,13800000010
CSV

start=$(date +%s.%N)
trips_parquet "$WORK/data/trips.parquet" "$ROWS_BIG"
generated=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
cat "$WORK/data/trips.parquet" >/dev/null
TICKET=$(( (LOOKUP_ID * 7919) % ROWS_BIG ))

# --- kaifang ------------------------------------------------------------------------------
# Limits that would refuse the load itself (rates, quotas, answers per client) are raised out
# of the way; the cache and the answer memory budget are set explicitly, for the RSS bound.
small_entry() { # ID OPEN_TYPE
    cat <<CONF
[[datasets]]
id = "$1"
title = "$1"
owner = "Benchmarks"
open_type = "$2"
format = "csv"
update_frequency = "irregular"
last_updated = "2025-01-01T00:00:00Z"
license = "CC0-1.0"
source = { file = "small.csv" }
fields = [
    { name = "id", type = "int64" },
    { name = "name", type = "string" },
    { name = "district", type = "string" },
    { name = "mobile", type = "string" },
]

CONF
}
{
    cat <<CONF
[limits]
anonymous_rate = { per_second = 1000000, burst = 1000000 }
key_rate = { per_second = 1000000, burst = 1000000 }

[server]
answer_memory_bytes = $BUDGET_BYTES
max_answers_per_client = 1000000

[cache]
max_bytes = $CACHE_BYTES

[[principals]]
id = "bench"
name = "Benchmarks"
role = "user"

[[agreements]]
id = "bench-small"
principal = "bench"
purpose = "Benchmarks"
valid_from = "2025-01-01T00:00:00Z"
valid_until = "2099-12-31T00:00:00Z"
rate = { per_second = 1000000, burst = 1000000 }
quota = { requests_per_day = 1000000000000, rows_per_day = 1000000000000, bytes_per_day = 1000000000000000 }
datasets = [
    { dataset = "small-conditional", columns = ["id", "name", "district", "mobile"], masks = { name = "keep_first(1)" } },
]

CONF
    small_entry small unconditional
    small_entry small-conditional conditional
    trips_entry
} >"$WORK/kaifang.toml"
start_kaifang "$WORK/kaifang.log" --config "$WORK/kaifang.toml" --data-dir "$WORK/data" --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0
PIDS+=("$KAIFANG_PID")
ADMIN_ADDR=$(sed -n 's/^kaifang: admin listening on //p' "$WORK/kaifang.log")
KEY=$("$KAIFANG" keys issue --principal bench --config "$WORK/kaifang.toml" --data-dir "$WORK/data" 2>/dev/null)
AUTH="Authorization: Bearer $KEY"
K="http://$KAIFANG_ADDR/v1/datasets"

# --- nginx --------------------------------------------------------------------------------
# The one-row answer kaifang gives, as a static file; the key kaifang checks, in a map.
NGINX_PORT=$(free_ports 1)
mkdir -p "$WORK/nginx/www"
curl -s --fail "$K/small/rows?limit=1" >"$WORK/nginx/www/rows.json"
run_nginx "$WORK/nginx" "$NGINX_PORT" "$SERVER_CPU" "    map_hash_bucket_size 256;
    map \$http_authorization \$key_ok { default 0; \"Bearer $KEY\" 1; }
    limit_req_zone \$binary_remote_addr zone=callers:1m rate=1000000r/s;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        access_log $WORK/nginx/access.log combined buffer=64k flush=1s;
        root $WORK/nginx/www;
        default_type application/json;
        location = /rows.json {
            limit_req zone=callers burst=100000 nodelay;
            if (\$key_ok = 0) { return 401; }
        }
    }"
PIDS+=("$NGINX_PID")
N="http://127.0.0.1:$NGINX_PORT/rows.json"
# Both check the key: without it, 401.
for url in "$N" "$K/small-conditional/rows?limit=1"; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 401 ] || { echo "$url answers without a key" >&2; exit 1; }
done

# --- ROAPI --------------------------------------------------------------------------------
start_roapi "$WORK/data/trips.parquet" "$WORK/roapi.log"
PIDS+=("$ROAPI_PID")
R="http://127.0.0.1:$ROAPI_PORT/api/tables/t"

# --- measuring ----------------------------------------------------------------------------
# run_wrk CONNECTIONS URL [wrk options] : one wrk run, pinned; prints "requests/s p50_ms non2xx".
run_wrk() {
    local connections="$1" url="$2"; shift 2
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$connections" -d"${DURATION}s" --latency ${WRK_SCRIPT:+-s "$WRK_SCRIPT"} "$@" "$url" | awk '
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = $2 }
        /Non-2xx or 3xx responses/ { bad = $NF }
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        END { printf "%s %.3f %d\n", rps, ms(p50), bad }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# wrk_median NAME CONNECTIONS URL [wrk options] : RUNS runs; sets NAME_rps and NAME_p50 (medians).
# With WRK_SCRIPT set, wrk runs that script (whose requests choose their own paths; URL is then
# the warm-up call and gives the host).
wrk_median() {
    local name="$1" connections="$2" url="$3"; shift 3
    # wrk's options here are -H headers, which curl takes as they are.
    curl -s -o /dev/null --fail "$@" "$url" || { echo "warm-up call failed: $url" >&2; exit 1; }
    local out="$WORK/wrk-$name"
    : >"$out"
    for _ in $(seq 1 "$RUNS"); do run_wrk "$connections" "$url" "$@" >>"$out"; done
    if awk '$3 > 0 { bad = 1 } END { exit !bad }' "$out"; then
        echo "warning: $name: answers other than 2xx (requests/s p50 non-2xx per run):" >&2; cat "$out" >&2
    fi
    printf -v "${name}_rps" '%s' "$(cut -d' ' -f1 "$out" | median)"
    printf -v "${name}_p50" '%s' "$(cut -d' ' -f2 "$out" | median)"
}

# curl_median NAME URL [curl options] : median seconds of RUNS whole fetches; sets NAME_s.
curl_median() {
    local name="$1" url="$2"; shift 2
    printf -v "${name}_s" '%s' "$(for _ in $(seq 1 "$RUNS"); do
        taskset -c "$CLIENT_CPU" curl -s -o /dev/null --fail -w '%{time_total}\n' "$@" "$url"
    done | median)"
}

enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
BY_TRIP="filter=$(enc "trip_id = $LOOKUP_ID")"
BY_TICKET="filter=$(enc "ticket_no = $TICKET")"

# The first call on the big file decodes it into the cache (and builds the index); the
# figures below are on the cached version.
start=$(date +%s.%N)
curl -s -o /dev/null --fail "$K/trips/rows?limit=1"
decoded=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

# Both sides answer the lookups with the same row.
check_same() { # WHAT KAIFANG_URL ROAPI_URL
    local k r
    k=$(curl -s --fail "$2" | "$VENV/bin/python" -c 'import json, sys; print(sorted(json.load(sys.stdin)[0].items()))' 2>&1) || true
    r=$(curl -s --fail "$3" | "$VENV/bin/python" -c 'import json, sys; print(sorted(json.load(sys.stdin)[0].items()))' 2>&1) || true
    [ "$k" = "$r" ] || echo "warning: $1: kaifang and ROAPI answer differently: $k / $r" >&2
}
check_same "lookup by trip_id" "$K/trips/rows?$BY_TRIP" "$R?filter%5Btrip_id%5D=$LOOKUP_ID"
check_same "lookup by ticket_no" "$K/trips/rows?$BY_TICKET" "$R?filter%5Bticket_no%5D=$TICKET"

wrk_median nginx "$CONNECTIONS" "$N" -H "$AUTH"
wrk_median small "$CONNECTIONS" "$K/small/rows?limit=1"
wrk_median conditional "$CONNECTIONS" "$K/small-conditional/rows?limit=1" -H "$AUTH"

# keys_lua NAME PATH_PREFIX : a wrk script whose every request asks for another key, PATH_PREFIX
# followed by a number drawn uniformly from 1..ROWS_BIG (the same seed on every side), so that
# no answer kept from an earlier call can serve it.
keys_lua() {
    cat >"$WORK/$1.lua" <<LUA
math.randomseed(20261207)
function request() return wrk.format("GET", "$2" .. math.random(1, $ROWS_BIG)) end
LUA
}
keys_lua k_trip "/v1/datasets/trips/rows?filter=trip_id%20%3D%20"
keys_lua r_trip "/api/tables/t?filter%5Btrip_id%5D="
keys_lua k_ticket "/v1/datasets/trips/rows?filter=ticket_no%20%3D%20"
keys_lua r_ticket "/api/tables/t?filter%5Bticket_no%5D="

wrk_median k_lookup "$CONNECTIONS" "$K/trips/rows?$BY_TRIP"
wrk_median r_lookup "$CONNECTIONS" "$R?filter%5Btrip_id%5D=$LOOKUP_ID"
wrk_median k_lookup1 1 "$K/trips/rows?$BY_TRIP"
wrk_median r_lookup1 1 "$R?filter%5Btrip_id%5D=$LOOKUP_ID"
wrk_median k_scan "$CONNECTIONS" "$K/trips/rows?$BY_TICKET"
wrk_median r_scan "$CONNECTIONS" "$R?filter%5Bticket_no%5D=$TICKET"
WRK_SCRIPT="$WORK/k_trip.lua" wrk_median k_lookups "$CONNECTIONS" "$K/trips/rows?$BY_TRIP"
WRK_SCRIPT="$WORK/r_trip.lua" wrk_median r_lookups "$CONNECTIONS" "$R?filter%5Btrip_id%5D=$LOOKUP_ID"
WRK_SCRIPT="$WORK/k_trip.lua" wrk_median k_lookups1 1 "$K/trips/rows?$BY_TRIP"
WRK_SCRIPT="$WORK/r_trip.lua" wrk_median r_lookups1 1 "$R?filter%5Btrip_id%5D=$LOOKUP_ID"
WRK_SCRIPT="$WORK/k_ticket.lua" wrk_median k_scans "$CONNECTIONS" "$K/trips/rows?$BY_TICKET"
WRK_SCRIPT="$WORK/r_ticket.lua" wrk_median r_scans "$CONNECTIONS" "$R?filter%5Bticket_no%5D=$TICKET"
wrk_median k_first "$CONNECTIONS" "$K/trips/rows?limit=1"
wrk_median r_first "$CONNECTIONS" "$R?limit=1"

# CONCURRENT connections on `limit=1`, each call answered 200 or 503 within CONCURRENT_TIMEOUT
# seconds; the peak RSS counts from here (reset where the kernel allows it).
rss_before=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$KAIFANG_PID/status")
echo 5 >"/proc/$KAIFANG_PID/clear_refs" 2>/dev/null || true
cat >"$WORK/statuses.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok, busy, other = 0, 0, 0 end
function response(status, headers, body)
    if status >= 200 and status < 300 then ok = ok + 1
    elseif status == 503 then busy = busy + 1
    else other = other + 1 end
end
function done(summary, latency, requests)
    local o, b, x = 0, 0, 0
    for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("busy"); x = x + t:get("other") end
    local e = summary.errors
    io.write(string.format("answers %d %d %d %d %d\n", o, b, x, e.timeout, e.connect + e.read + e.write))
end
LUA
taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONCURRENT" -d"${DURATION}s" --timeout "${CONCURRENT_TIMEOUT}s" \
    -s "$WORK/statuses.lua" "$K/trips/rows?limit=1" >"$WORK/concurrent.txt"
read -r c_ok c_503 c_other c_timeouts c_errors < <(sed -n 's/^answers //p' "$WORK/concurrent.txt")
c_rps=$(awk '/Requests\/sec/ { print $2 }' "$WORK/concurrent.txt")
rss_peak=$(peak_rss_mib "$KAIFANG_PID")
metric() { curl -s "http://$ADMIN_ADDR/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
cache_held=$(metric kaifang_decoded_cache_bytes)
cache_held_mib=$(awk -v b="${cache_held:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')
bound_mib=$(awk -v c="$CACHE_BYTES" -v b="$BUDGET_BYTES" 'BEGIN { printf "%.0f", (c + b) / 1048576 + 64 }')
held_bound_mib=$(awk -v c="${cache_held:-0}" -v b="$BUDGET_BYTES" 'BEGIN { printf "%.0f", (c + b) / 1048576 + 64 }')

# The whole file as an Arrow IPC stream; both answers are checked for every row once.
count_rows() { "$VENV/bin/python" -c 'import sys, pyarrow.ipc as ipc; print(ipc.open_stream(sys.stdin.buffer).read_all().num_rows)'; }
ARROW_ACCEPT="Accept: application/vnd.apache.arrow.stream"
k_rows=$(curl -s --fail "$K/trips/rows?format=arrow" | count_rows)
r_rows=$(curl -s --fail -H "$ARROW_ACCEPT" "$R" | count_rows)
[ "$k_rows" = "$ROWS_BIG" ] && [ "$r_rows" = "$ROWS_BIG" ] || echo "warning: Arrow streams hold $k_rows (kaifang) and $r_rows (ROAPI) rows, not $ROWS_BIG" >&2
curl_median k_bulk "$K/trips/rows?format=arrow"
curl_median r_bulk "$R" -H "$ARROW_ACCEPT"

# --- report -------------------------------------------------------------------------------
x() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
row() { printf '%-62s %16s %16s %9s\n' "$@"; }
rps() { printf '%.0f req/s' "$1"; }
ms() { printf '%.3f ms' "$1"; }
sec() { printf '%.3f s' "$1"; }

machine
echo "kaifang $("$KAIFANG" --version 2>/dev/null | awk '{ print $NF }'), $(nginx -v 2>&1 | sed 's/^nginx version: //'), ROAPI $("$VENV/bin/roapi" --version | awk '{ print $NF }'), $(wrk --version 2>&1 | awk 'NR == 1 { print $1, $2 }')"
echo "run: $(date -u +%Y-%m-%dT%H:%M:%SZ); servers pinned to CPU $SERVER_CPU (kaifang: one runtime worker; nginx: one worker), client to CPU $CLIENT_CPU"
echo "wrk -t1 -c$CONNECTIONS, ${DURATION} s a run; medians of $RUNS runs; ratio: kaifang's speed over the peer's"
echo "big file: $ROWS_BIG rows of Parquet, $(du -m "$WORK/data/trips.parquet" | cut -f1) MiB (generated in ${generated} s; kaifang's first call, decoding it: ${decoded} s)"
echo
row "what" "kaifang" "peer" "ratio"
row "rows?limit=1, 10-row CSV, unconditional (peer: nginx)" "$(rps "$small_rps")" "$(rps "$nginx_rps")" "$(x "$small_rps" "$nginx_rps")"
row "rows?limit=1, 10-row CSV, conditional (peer: nginx)" "$(rps "$conditional_rps")" "$(rps "$nginx_rps")" "$(x "$conditional_rps" "$nginx_rps")"
row "filter=trip_id = K, indexed, K new each call (peer: ROAPI filter)" "$(rps "$k_lookups_rps")" "$(rps "$r_lookups_rps")" "$(x "$k_lookups_rps" "$r_lookups_rps")"
row "  p50 latency, $CONNECTIONS connections" "$(ms "$k_lookups_p50")" "$(ms "$r_lookups_p50")" "$(x "$r_lookups_p50" "$k_lookups_p50")"
row "  p50 latency, 1 connection" "$(ms "$k_lookups1_p50")" "$(ms "$r_lookups1_p50")" "$(x "$r_lookups1_p50" "$k_lookups1_p50")"
row "filter=ticket_no = K, unindexed, cached, K new each call (peer: ROAPI)" "$(rps "$k_scans_rps")" "$(rps "$r_scans_rps")" "$(x "$k_scans_rps" "$r_scans_rps")"
row "filter=trip_id = $LOOKUP_ID, the same call repeated (kept answer)" "$(rps "$k_lookup_rps")" "$(rps "$r_lookup_rps")" "$(x "$k_lookup_rps" "$r_lookup_rps")"
row "  p50 latency, $CONNECTIONS connections" "$(ms "$k_lookup_p50")" "$(ms "$r_lookup_p50")" "$(x "$r_lookup_p50" "$k_lookup_p50")"
row "  p50 latency, 1 connection" "$(ms "$k_lookup1_p50")" "$(ms "$r_lookup1_p50")" "$(x "$r_lookup1_p50" "$k_lookup1_p50")"
row "filter=ticket_no = $TICKET, the same call repeated (kept answer)" "$(rps "$k_scan_rps")" "$(rps "$r_scan_rps")" "$(x "$k_scan_rps" "$r_scan_rps")"
row "rows?limit=1 on the big file (peer: ROAPI ?limit=1)" "$(rps "$k_first_rps")" "$(rps "$r_first_rps")" "$(x "$k_first_rps" "$r_first_rps")"
row "Arrow stream of all $ROWS_BIG rows (peer: ROAPI ArrowStream)" "$(sec "$k_bulk_s")" "$(sec "$r_bulk_s")" "$(x "$r_bulk_s" "$k_bulk_s")"
echo
echo "$CONCURRENT connections calling rows?limit=1 on the big file for ${DURATION} s (wrk timeout ${CONCURRENT_TIMEOUT} s), kaifang alone:"
printf '  %-58s %s\n' "throughput" "$(rps "$c_rps")"
printf '  %-58s %s\n' "answered 2xx / 503 / other status" "$c_ok / $c_503 / $c_other"
printf '  %-58s %s\n' "timeouts / socket errors" "$c_timeouts / $c_errors"
printf '  %-58s %s MiB (%s MiB before the load)\n' "peak RSS during the load" "$rss_peak" "$rss_before"
printf '  %-58s %s MiB (cache held %s MiB + budget + 64 MiB: %s MiB)\n' "bound: [cache] max_bytes + answer_memory_bytes + 64 MiB" "$bound_mib" "$cache_held_mib" "$held_bound_mib"
