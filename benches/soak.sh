#!/usr/bin/env bash
# A soak under mixed load: 10,000 concurrent HTTP connections (catalog, small rows, selective
# rows, downloads, conditional rows with a key), Flight DoGets, workflow writes and slow readers,
# for a stated time, against the demo configuration on SQLite and against a cluster of two
# instances on PostgreSQL and Redis. Reports RSS and open file descriptors over time, and per call
# type the calls, the errors and p50/p99; then checks that `audit verify` passes and that every
# conditional call served has its audit records.
#
#   benches/soak.sh                          # both setups, 30 minutes each
#   SOAK_SECONDS=600 benches/soak.sh         # 10 minutes each
#   SETUPS=embedded benches/soak.sh          # one setup (embedded | cluster)
#   PACE_MS=0 benches/soak.sh                # each connection calls again at once (overload)
#
# Each HTTP connection waits PACE_MS (10000) between its calls, as 10,000 clients each calling
# every ten seconds would: about 1,000 calls a second in all, which this 2-core machine carries
# while it also runs every client, so the errors counted are failures, not refusals of a load
# past what the machine serves. (At PACE_MS=1000 most calls are refused 503 `overloaded`.)
#
# All load comes from one address, so the demo's per-client limits (20 calls/s anonymous,
# 32 answers in flight) are raised out of the way; everything else is the shipped configuration.
# The cluster uses PostgreSQL and Redis on their default local ports (KAIFANG_SOAK_POSTGRES,
# KAIFANG_SOAK_REDIS), in a database made for the run. Not run by CI.
set -euo pipefail
source "$(dirname "$0")/common.sh"
SOAK_SECONDS="${SOAK_SECONDS:-1800}"
SETUPS="${SETUPS:-embedded cluster}"
SAMPLE_SECONDS="${SAMPLE_SECONDS:-10}"
PACE_MS="${PACE_MS:-10000}"
PG_ADMIN="${KAIFANG_SOAK_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
REDIS="${KAIFANG_SOAK_REDIS:-redis://127.0.0.1:6379}"
need curl python3 psql
command -v wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
build_kaifang
# pyarrow for the Flight client, in the same virtualenv as the other benchmarks' peers.
roapi_venv
PYTHON="$VENV/bin/python"

ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 12000 ] || { echo "ulimit -n is $(ulimit -n): the gateway needs 12,000 for 10,000 connections" >&2; exit 1; }

WORK="$(mktemp -d)"
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
MARKET="Municipal Market Supervision Administration"
cat >"$WORK/pace.lua" <<LUA
function delay() return $PACE_MS end
LUA

# The per-call-type HTTP load: NAME CONNECTIONS PATH [header], 10,000 connections in all.
CALLS=(
    "catalog 1500 /v1/catalog?per_page=20"
    "small_rows 3000 /v1/datasets/air-quality/rows?limit=5"
    "selective_rows 2000 /v1/datasets/air-quality/rows?filter=district%20%3D%20%27Haizhou%27&limit=20"
    "download 500 /v1/datasets/bus-arrivals/download"
    "conditional 3000 /v1/datasets/enterprises/rows?limit=3"
)

# configure DIR MAIN : the shipped configuration copied to DIR, MAIN its main file, with the
# per-client limits raised.
configure() {
    cp -r "$ROOT/config" "$1"
    python3 - "$1/$2" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"anonymous_rate = \{[^}]*\}", "anonymous_rate = { per_second = 1000000, burst = 1000000 }", text)
text = re.sub(r"key_rate = \{[^}]*\}", "key_rate = { per_second = 1000000, burst = 1000000 }", text)
text += "\n[server]\nmax_answers_per_client = 1000000\n"
open(path, "w").write(text)
PY
}

# admin_call ADMIN TOKEN METHOD PATH [JSON] : the admin API's answer.
admin_call() {
    curl -s --fail -X "$3" -H "Authorization: Bearer $2" -H 'Content-Type: application/json' \
        ${5:+--data "$5"} "http://$1$4"
}

# principal ADMIN TOKEN ID ROLE [DEPARTMENT] : a new principal's key.
principal() {
    local body="{\"id\": \"$3\", \"name\": \"$3\", \"role\": \"$4\"${5:+, \"department\": \"$5\"}}"
    admin_call "$1" "$2" POST /admin/principals "$body" >/dev/null
    admin_call "$1" "$2" POST /admin/keys "{\"principal\": \"$3\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}

# start_gateway LOG ARGS... : kaifang on every core with its default runtime (the soak is not a
# benchmark of one core); sets KAIFANG_PID and KAIFANG_ADDR.
start_gateway() {
    local log="$1"; shift
    KAIFANG_LOG=warn "$KAIFANG" serve "$@" >"$log" 2>&1 &
    KAIFANG_PID=$!
    PIDS+=("$KAIFANG_PID")
    await_kaifang "$log"
}

# rss_fds PID... : total RSS (MiB), open descriptors and threads of the processes.
rss_fds() {
    local rss=0 fds=0 threads=0 pid
    for pid in "$@"; do
        rss=$((rss + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")))
        fds=$((fds + $(ls "/proc/$pid/fd" | wc -l)))
        threads=$((threads + $(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")))
    done
    echo "$((rss / 1024)) $fds $threads"
}

# soak NAME : runs the load against the instances started (HTTP_ADDRS, FLIGHT_ADDR, ADMIN_ADDR,
# TOKEN, GATEWAY_PIDS) and reports.
soak() {
    local name="$1" out="$WORK/$1"
    mkdir -p "$out"
    local owner user applicant agreement
    owner=$(principal "$ADMIN_ADDR" "$TOKEN" soak-owner owner "$MARKET")
    user=$(principal "$ADMIN_ADDR" "$TOKEN" soak-user user)
    applicant=$(principal "$ADMIN_ADDR" "$TOKEN" soak-applicant user)
    agreement=$(admin_call "$ADMIN_ADDR" "$TOKEN" POST /admin/agreements \
        '{"principal": "soak-user", "dataset": "enterprises", "columns": ["uscc", "name", "district", "legal_rep_mobile"],
          "masks": {"legal_rep_mobile": "cn_mobile"}, "valid_until": "2099-01-01T00:00:00Z",
          "rate": {"per_second": 1000000, "burst": 1000000},
          "quota": {"requests_per_day": 1000000000, "rows_per_day": 1000000000000, "bytes_per_day": 1000000000000000}}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    local -a http=($HTTP_ADDRS)
    echo "$name: $SOAK_SECONDS s; gateway pids ${GATEWAY_PIDS[*]}; agreement $agreement"

    echo "seconds rss_mib fds threads" >"$out/samples.txt"
    echo "0 $(rss_fds "${GATEWAY_PIDS[@]}")" >>"$out/samples.txt"
    local started=$SECONDS i=0 spec call conns path addr clients=()
    for spec in "${CALLS[@]}"; do
        read -r call conns path <<<"$spec"
        addr="${http[$((i % ${#http[@]}))]}"
        i=$((i + 1))
        local header=()
        [ "$call" = conditional ] && header=(-H "Authorization: Bearer $user")
        wrk -t1 -c"$conns" -d"${SOAK_SECONDS}s" --timeout 30s --latency -s "$WORK/pace.lua" "${header[@]}" \
            "http://$addr$path" >"$out/$call.txt" 2>&1 &
        clients+=($!)
    done
    "$PYTHON" "$ROOT/benches/soak_clients.py" flight "$SOAK_SECONDS" "grpc://$FLIGHT_ADDR" bus-arrivals 4 >"$out/flight.json" 2>&1 &
    clients+=($!)
    "$PYTHON" "$ROOT/benches/soak_clients.py" writes "$SOAK_SECONDS" "http://${http[0]}" "$owner" "$applicant" >"$out/writes.json" 2>&1 &
    clients+=($!)
    "$PYTHON" "$ROOT/benches/soak_clients.py" slow "$SOAK_SECONDS" "http://${http[-1]}" /v1/datasets/air-quality/download 200 >"$out/slow.json" 2>&1 &
    clients+=($!)
    while [ $((SECONDS - started)) -lt "$SOAK_SECONDS" ]; do
        sleep "$SAMPLE_SECONDS"
        echo "$((SECONDS - started)) $(rss_fds "${GATEWAY_PIDS[@]}")" >>"$out/samples.txt"
    done
    wait "${clients[@]}" || true
    sleep 5
    echo "end+5 $(rss_fds "${GATEWAY_PIDS[@]}")" >>"$out/samples.txt"

    echo
    echo "## $name"
    awk 'NR == 2 { first = $2; fd0 = $3 } NR > 1 { if ($2 > max) max = $2; if (min == "" || $2 < min) min = $2; last = $2; fd = $3; if ($3 > fdmax) fdmax = $3; if ($4 > thmax) thmax = $4; th = $4 }
         END { printf "RSS MiB: start %d, min %d, max %d, end %d; open fds: start %d, max %d, end %d; threads: max %d, end %d\n", first, min, max, last, fd0, fdmax, fd, thmax, th }' "$out/samples.txt"
    printf '%-15s %12s %10s %10s %10s %10s\n' call calls non-2xx "socket err" p50 p99
    local served_conditional=0
    for spec in "${CALLS[@]}"; do
        read -r call conns path <<<"$spec"
        awk -v call="$call" '
            /requests in/ { calls = $1 }
            /Non-2xx or 3xx responses:/ { bad += $NF }
            /Socket errors:/ { gsub(",", ""); socket += $4 + $6 + $8 + $10 }
            /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
            END { printf "%-15s %12d %10d %10d %10s %10s\n", call, calls, bad, socket, p50, p99 }' "$out/$call.txt"
        if [ "$call" = conditional ]; then
            served_conditional=$(awk '/requests in/ { calls = $1 } /Non-2xx or 3xx responses:/ { bad = $NF } END { print calls - bad }' "$out/$call.txt")
        fi
    done
    cat "$out/flight.json" "$out/writes.json" "$out/slow.json"
    # What the gateways logged besides their listening lines, most frequent first (a refusal
    # logs its error code; store, limiter and audit failures log theirs).
    echo "gateway log lines by message:"
    cat "${GATEWAY_LOGS[@]}" | grep -v ' listening on ' | sed -E 's/^[0-9T:.-]+Z +//; s/request_id=[^ ]+//g; s/[0-9a-f]{16,}//g' |
        cut -c1-120 | sort | uniq -c | sort -rn | head -10

    # Every conditional call served has its intent and its completion, and the chain verifies.
    local audit="$out/audit.ndjson"
    curl -s --fail -H "Authorization: Bearer $TOKEN" "http://$ADMIN_ADDR/admin/audit?agreement=$agreement" >"$audit"
    python3 - "$audit" "$served_conditional" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
served = int(sys.argv[2])
intents = {r["request_id"] for r in records if r["kind"] == "intent" and r.get("operation") == "rows"}
completed = {r["request_id"] for r in records if r["kind"] == "completion" and r.get("status") == 200}
print(f"conditional rows served (wrk, 2xx): {served}; audit intents: {len(intents)}; completions with 200: {len(completed)}")
missing = completed - intents
assert not missing, f"completions without intents: {len(missing)}"
assert len(completed) >= served, "a served conditional call without its completion record"
PY
}

for setup in $SETUPS; do
    case "$setup" in
    embedded)
        configure "$WORK/embedded-config" kaifang.toml
        "$KAIFANG" demo-data --out "$WORK/embedded-data/demo" >/dev/null
        start_gateway "$WORK/embedded.log" --config "$WORK/embedded-config/kaifang.toml" --data-dir "$WORK/embedded-data" \
            --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0
        GATEWAY_PIDS=("$KAIFANG_PID")
        GATEWAY_LOGS=("$WORK/embedded.log")
        HTTP_ADDRS="$KAIFANG_ADDR"
        FLIGHT_ADDR=$(sed -n 's/^kaifang: flight listening on //p' "$WORK/embedded.log")
        ADMIN_ADDR=$(sed -n 's/^kaifang: admin listening on //p' "$WORK/embedded.log")
        TOKEN=$(cat "$WORK/embedded-data/admin.token")
        soak embedded
        kill "$KAIFANG_PID"; wait "$KAIFANG_PID" 2>/dev/null || true
        "$KAIFANG" audit verify --config "$WORK/embedded-config/kaifang.toml" --data-dir "$WORK/embedded-data"
        ;;
    cluster)
        configure "$WORK/cluster-config" cluster/kaifang.toml
        db="kaifang_soak_$$"
        psql -q "$PG_ADMIN" -c "CREATE DATABASE $db" >/dev/null
        store="${PG_ADMIN%/*}/$db"
        sed -i "s#^store = .*#store = \"$store\"#; s#^limiter = .*#limiter = \"$REDIS\"#; s#^instances = .*#instances = 2#;
                s#^limiter_prefix = .*#limiter_prefix = \"soak-$$\"#" "$WORK/cluster-config/cluster/kaifang.toml"
        "$KAIFANG" demo-data --out "$WORK/cluster-data/demo" >/dev/null
        # The shipped cluster file reads its sources from the data directory's demo folder.
        export KAIFANG_ADMIN_TOKEN="soak-operator-token-$$"
        GATEWAY_PIDS=()
        GATEWAY_LOGS=("$WORK/gw-1.log" "$WORK/gw-2.log")
        HTTP_ADDRS=""
        for instance in gw-1 gw-2; do
            start_gateway "$WORK/$instance.log" --config "$WORK/cluster-config/cluster/kaifang.toml" \
                --data-dir "$WORK/cluster-data" --instance "$instance" --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0
            GATEWAY_PIDS+=("$KAIFANG_PID")
            HTTP_ADDRS="$HTTP_ADDRS $KAIFANG_ADDR"
        done
        FLIGHT_ADDR=$(sed -n 's/^kaifang: flight listening on //p' "$WORK/gw-1.log")
        ADMIN_ADDR=$(sed -n 's/^kaifang: admin listening on //p' "$WORK/gw-1.log")
        TOKEN="$KAIFANG_ADMIN_TOKEN"
        soak cluster
        kill "${GATEWAY_PIDS[@]}"; wait "${GATEWAY_PIDS[@]}" 2>/dev/null || true
        "$KAIFANG" audit verify --config "$WORK/cluster-config/cluster/kaifang.toml" --data-dir "$WORK/cluster-data"
        psql -q "$PG_ADMIN" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
        ;;
    *) echo "unknown setup $setup (embedded | cluster)" >&2; exit 1 ;;
    esac
done
