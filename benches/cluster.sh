#!/usr/bin/env bash
# Requests per second and latency (p50, p99) of keyed calls on conditional data (key check,
# agreement rate and quota, audit intent and completion, a 20-row masked preview): one instance
# on the embedded store and limiter against one on PostgreSQL and Redis, and three instances
# on PostgreSQL and Redis against one, in the same run. wrk drives the load, one wrk per
# instance (the three-instance figure sums their rates and takes the worst p99).
#
#   benches/cluster.sh                       # 10 s per figure, 30 connections in all
#   DURATION=20s CONNECTIONS=60 benches/cluster.sh
# Needs PostgreSQL and Redis (KAIFANG_TEST_POSTGRES / KAIFANG_TEST_REDIS, as the tests).
set -euo pipefail
source "$(dirname "$0")/common.sh"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-30}"
PG="${KAIFANG_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
REDIS="${KAIFANG_TEST_REDIS:-redis://127.0.0.1:6379}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
build_kaifang
WORK="$(mktemp -d)"
DB="kaifang_bench_$$"
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 1; psql -q "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
psql -q "$PG" -c "CREATE DATABASE $DB" >/dev/null
PG_DB="${PG%/*}/$DB"

"$KAIFANG" demo-data --rows 10000 --out "$WORK/data/demo" >/dev/null
mkdir -p "$WORK/config/catalog" "$WORK/config/calendar"
cp "$ROOT"/config/catalog/*.toml "$WORK/config/catalog/"
cp "$ROOT"/config/calendar/*.toml "$WORK/config/calendar/"
sed -e 's/rate = { per_second = 5, burst = 10 }/rate = { per_second = 1000000, burst = 1000000 }/' \
    -e 's/requests_per_day = 10000, rows_per_day = 1000000, bytes_per_day = 1000000000/requests_per_day = 1000000000, rows_per_day = 1000000000000, bytes_per_day = 1000000000000000/' \
    "$ROOT/config/kaifang.toml" >"$WORK/config/embedded.toml"
cp "$WORK/config/embedded.toml" "$WORK/config/cluster.toml"
printf '\n[masks]\nhash_key = "bench"\n\n[cluster]\ninstance = "gw-1"\nstore = "%s"\nlimiter = "%s"\nlimiter_prefix = "bench-%s"\ninstances = 3\n' \
    "$PG_DB" "$REDIS" "$$" >>"$WORK/config/cluster.toml"
export KAIFANG_ADMIN_TOKEN=bench

# start NAME CONFIG [ARGS]: one instance, all runtime workers, on any core; prints its address
# (it runs in a command substitution, so its pid goes to NAME.pid).
start() {
    local name="$1" log="$WORK/$1.log"; shift
    local config="$1"; shift
    KAIFANG_LOG=warn "$KAIFANG" serve --config "$config" --data-dir "$WORK/data" --http 127.0.0.1:0 --flight 127.0.0.1:0 \
        --admin 127.0.0.1:0 "$@" >"$log" 2>&1 &
    echo $! >"$WORK/$name.pid"
    for _ in $(seq 1 600); do
        addr=$(sed -n 's/^kaifang: http listening on //p' "$log")
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        sleep 0.1
    done
    echo "kaifang did not start:" >&2; cat "$log" >&2; exit 1
}

# load KEY CONNECTIONS ADDR... : one wrk per address at once; prints "rps p50_ms p99_ms".
load() {
    local key="$1" connections="$2"; shift 2
    local n=$#; local per=$(( connections / n )); local i=0
    for addr in "$@"; do
        wrk -t1 -c"$per" -d"$DURATION" --latency -H "Authorization: Bearer $key" \
            "http://$addr/v1/datasets/enterprises/preview" >"$WORK/wrk.$i" &
        i=$((i + 1))
    done
    wait $(jobs -p | tail -n "$n") 2>/dev/null || true
    python3 - "$WORK" "$n" <<'PY'
import re, sys
work, n = sys.argv[1], int(sys.argv[2])
def ms(v):
    num, unit = re.match(r'([\d.]+)(\w+)', v).groups()
    return float(num) * {'us': 0.001, 'ms': 1.0, 's': 1000.0}[unit]
rps, p50, p99, errors = 0.0, [], [], 0
for i in range(n):
    text = open(f"{work}/wrk.{i}").read()
    rps += float(re.search(r'Requests/sec:\s+([\d.]+)', text).group(1))
    p50.append(ms(re.search(r'\s50%\s+(\S+)', text).group(1)))
    p99.append(ms(re.search(r'\s99%\s+(\S+)', text).group(1)))
    m = re.search(r'Non-2xx or 3xx responses: (\d+)', text)
    errors += int(m.group(1)) if m else 0
print(f"{rps:.0f} {sorted(p50)[len(p50)//2]:.2f} {max(p99):.2f} {errors}")
PY
}

machine
echo "keyed conditional preview (20 rows, 3 masks, audited), $CONNECTIONS connections, $DURATION per figure; all on this machine"
embedded=$(start embedded "$WORK/config/embedded.toml")
key=$("$KAIFANG" keys issue --principal demo-analytics --config "$WORK/config/embedded.toml" --data-dir "$WORK/data" 2>/dev/null)
read -r e_rps e_p50 e_p99 e_err <<<"$(load "$key" "$CONNECTIONS" "$embedded")"
kill "$(cat "$WORK/embedded.pid")"; sleep 1

one=$(start one "$WORK/config/cluster.toml" --instance gw-1)
key=$("$KAIFANG" keys issue --principal demo-analytics --config "$WORK/config/cluster.toml" 2>/dev/null)
read -r o_rps o_p50 o_p99 o_err <<<"$(load "$key" "$CONNECTIONS" "$one")"
two=$(start two "$WORK/config/cluster.toml" --instance gw-2)
three=$(start three "$WORK/config/cluster.toml" --instance gw-3)
read -r t_rps t_p50 t_p99 t_err <<<"$(load "$key" "$CONNECTIONS" "$one" "$two" "$three")"

printf '%-42s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s\n' "1 instance, embedded (SQLite, local limits)" "$e_rps" "$e_p50" "$e_p99" "$e_err"
printf '%-42s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s\n' "1 instance, PostgreSQL + Redis" "$o_rps" "$o_p50" "$o_p99" "$o_err"
printf '%-42s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s\n' "3 instances, PostgreSQL + Redis" "$t_rps" "$t_p50" "$t_p99" "$t_err"
awk -v e="$e_rps" -v o="$o_rps" -v t="$t_rps" 'BEGIN { printf "PostgreSQL + Redis / embedded: %.2fx   three instances / one: %.2fx\n", o / e, t / o }'
