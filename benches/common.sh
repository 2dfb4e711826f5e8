# Shared helpers for the load scripts in benches/. Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-7}"
# Servers on one core, the client on the other, so neither steals the other's CPU.
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"

need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing peers: nginx-light curl" >&2
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light curl >/dev/null
    fi
}

# build_kaifang : sets KAIFANG to a release build of the project, built here; a KAIFANG set by
# the caller (KAIFANG=path/to/kaifang benches/....sh) is taken as it is.
build_kaifang() {
    if [ -n "${KAIFANG:-}" ]; then
        [ -x "$KAIFANG" ] || { echo "KAIFANG=$KAIFANG is not an executable" >&2; exit 1; }
        return 0
    fi
    (cd "$ROOT" && cargo build --release --quiet -p kaifang)
    KAIFANG="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/kaifang"
}

# start_kaifang LOG ARGS... : runs kaifang pinned, with one runtime worker, and waits for its
# listening line; sets KAIFANG_PID and KAIFANG_ADDR.
start_kaifang() {
    local log="$1"; shift
    TOKIO_WORKER_THREADS=1 KAIFANG_LOG=warn taskset -c "$SERVER_CPU" "$KAIFANG" serve "$@" >"$log" 2>&1 &
    KAIFANG_PID=$!
    await_kaifang "$log"
}

# await_kaifang LOG : waits for the HTTP listening line of the kaifang writing LOG; sets
# KAIFANG_ADDR.
await_kaifang() {
    local log="$1"
    for _ in $(seq 1 600); do
        KAIFANG_ADDR=$(sed -n 's/^kaifang: http listening on //p' "$log")
        [ -n "$KAIFANG_ADDR" ] && return 0
        sleep 0.1
    done
    echo "kaifang did not start:" >&2; cat "$log" >&2; exit 1
}

# run_nginx DIR PORT CPU HTTP_BODY : writes a one-worker nginx configuration around HTTP_BODY
# (the inside of its http block), starts it pinned to CPU and waits for PORT; sets NGINX_PID.
run_nginx() {
    local dir="$1" port="$2" cpu="$3" body="$4"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir;
    proxy_temp_path $dir;
    fastcgi_temp_path $dir;
    uwsgi_temp_path $dir;
    scgi_temp_path $dir;
$body
}
CONF
    taskset -c "$cpu" nginx -c "$dir/nginx.conf" -p "$dir" &
    NGINX_PID=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0; sleep 0.1; done
    echo "nginx did not start" >&2; cat "$dir/error.log" >&2; exit 1
}

# start_nginx DIR PORT SENDFILE(on|off) ROOT [CPU] : nginx serving ROOT, pinned (default
# SERVER_CPU).
start_nginx() {
    run_nginx "$1" "$2" "${5:-$SERVER_CPU}" "    sendfile $3;
    tcp_nopush on;
    server { listen 127.0.0.1:$2; root $4; }"
}

# start_nginx_proxy DIR PORT ORIGIN_PORT : nginx as a reverse proxy in front of the origin,
# pinned to SERVER_CPU, with its default response buffering (in memory only).
start_nginx_proxy() {
    run_nginx "$1" "$2" "$SERVER_CPU" "    upstream origin { server 127.0.0.1:$3; keepalive 16; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_max_temp_file_size 0;
        }
    }"
}

# median_speed URL : median download speed in bytes/s over RUNS runs, client pinned.
median_speed() {
    local url="$1"
    for _ in $(seq 1 "$RUNS"); do
        taskset -c "$CLIENT_CPU" curl -s -o /dev/null --fail -w '%{speed_download}\n' "$url"
    done | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# median_seconds URL : median wall time in seconds of fetching URL over RUNS runs.
median_seconds() {
    local url="$1"
    for _ in $(seq 1 "$RUNS"); do
        taskset -c "$CLIENT_CPU" curl -s -o /dev/null --fail -w '%{time_total}\n' "$url"
    done | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# start_conditional_site WORK ROWS : the demo datasets at ROWS rows, served with the demo
# configuration plus `enterprises-open`, an unconditional copy of the conditional enterprises
# dataset, with the demo agreement's rate and quotas (and the anonymous rate) raised out of the
# way; sets KEY to a fresh key of the demo user.
start_conditional_site() {
    local work="$1" rows="$2"
    "$KAIFANG" demo-data --rows "$rows" --out "$work/data/demo"
    mkdir -p "$work/config/catalog" "$work/config/calendar"
    cp "$ROOT"/config/catalog/*.toml "$work/config/catalog/"
    cp "$ROOT"/config/calendar/*.toml "$work/config/calendar/"
    sed -e 's/rate = { per_second = 5, burst = 10 }/rate = { per_second = 100000, burst = 100000 }/' \
        -e 's/requests_per_day = 10000, rows_per_day = 1000000, bytes_per_day = 1000000000/requests_per_day = 100000000, rows_per_day = 1000000000000, bytes_per_day = 1000000000000000/' \
        -e 's/^anonymous_rate = .*/anonymous_rate = { per_second = 100000, burst = 100000 }/' \
        "$ROOT/config/kaifang.toml" >"$work/config/kaifang.toml"
    sed -e 's/^id = "enterprises"/id = "enterprises-open"/' -e 's/^open_type = "conditional"/open_type = "unconditional"/' \
        "$ROOT/config/catalog/market.toml" >>"$work/config/catalog/market.toml"
    start_kaifang "$work/kaifang.log" --config "$work/config/kaifang.toml" --data-dir "$work/data" --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0
    KEY=$("$KAIFANG" keys issue --principal demo-analytics --config "$work/config/kaifang.toml" --data-dir "$work/data" 2>/dev/null)
}

peak_rss_mib() {
    awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

machine() {
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); $(date -u +%Y-%m-%d)"
}

# The peer and the data generator of the query benchmarks: ROAPI and pyarrow from PyPI at the
# versions pinned in benches/requirements-roapi.txt, in a virtualenv made once in the cache
# directory (VENV) and made again when the pins change.
REQUIREMENTS="$ROOT/benches/requirements-roapi.txt"
VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kaifang-bench/roapi-venv}"
roapi_venv() {
    if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" 2>/dev/null || {
            apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV"
        }
        "$VENV/bin/pip" install -q -r "$REQUIREMENTS"
        cp "$REQUIREMENTS" "$VENV/requirements.txt"
    fi
}

# free_ports N : N distinct free loopback ports, on one line.
free_ports() {
    python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

# trips_parquet PATH ROWS : ROWS trips in Parquet: trip_id 1..ROWS in order, ticket_no a
# permutation of 0..ROWS-1 (so a lookup by it matches one row and its order helps no one), and
# a few columns of the usual kinds. The file carries statistics and a page index, as files
# written for serving do; kaifang and ROAPI read the same file.
trips_parquet() {
"$VENV/bin/python" - "$1" "$2" <<'PY'
import sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(15)
trip_id = np.arange(1, n + 1, dtype=np.int64)
districts = np.array(["Haizhou", "Lianyun", "Ganyu", "Donghai", "Guanyun", "Guannan", "Xugou", "Huaguoshan"])
table = pa.table({
    "trip_id": trip_id,
    "ticket_no": (trip_id * 7919) % n,
    "vehicle_id": rng.integers(1, 2001, n, dtype=np.int64),
    "district": pa.array(districts[rng.integers(0, len(districts), n)]),
    "passengers": rng.integers(1, 5, n, dtype=np.int64),
    "distance_km": np.round(rng.gamma(2.0, 3.0, n), 2),
    "fare": np.round(rng.gamma(2.0, 6.0, n) + 10.0, 2),
})
pq.write_table(table, path, write_page_index=True)
PY
}

# trips_entry : the catalog entry of the trips file, unconditional, cached, indexed by trip_id.
trips_entry() {
    cat <<CONF
[[datasets]]
id = "trips"
title = "trips"
owner = "Benchmarks"
open_type = "unconditional"
format = "parquet"
update_frequency = "irregular"
last_updated = "2025-01-01T00:00:00Z"
license = "CC0-1.0"
source = { file = "trips.parquet" }
cache = "always"
index = ["trip_id"]
fields = [
    { name = "trip_id", type = "int64" },
    { name = "ticket_no", type = "int64" },
    { name = "vehicle_id", type = "int64" },
    { name = "district", type = "string" },
    { name = "passengers", type = "int64" },
    { name = "distance_km", type = "float64" },
    { name = "fare", type = "float64" },
]
CONF
}

# start_roapi FILE LOG : ROAPI serving FILE as table `t` (HTTP, and Flight SQL), pinned to
# SERVER_CPU, with its PostgreSQL port on a free one (the machine's own PostgreSQL holds 5432);
# waits until it answers; sets ROAPI_PID, ROAPI_PORT and ROAPI_FLIGHT_PORT.
start_roapi() {
    local file="$1" log="$2" pg_port
    read -r ROAPI_PORT pg_port ROAPI_FLIGHT_PORT < <(free_ports 3)
    taskset -c "$SERVER_CPU" "$VENV/bin/roapi" -a "127.0.0.1:$ROAPI_PORT" -p "127.0.0.1:$pg_port" \
        --addr-flight-sql "127.0.0.1:$ROAPI_FLIGHT_PORT" -t "t=$file" >"$log" 2>&1 &
    ROAPI_PID=$!
    for i in $(seq 1 600); do
        curl -s -o /dev/null --fail "http://127.0.0.1:$ROAPI_PORT/api/tables/t?limit=1" && return 0
        kill -0 "$ROAPI_PID" 2>/dev/null && [ "$i" -lt 600 ] || { echo "ROAPI did not start:" >&2; cat "$log" >&2; exit 1; }
        sleep 0.1
    done
}
