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

build_kaifang() {
    (cd "$ROOT" && cargo build --release --quiet -p kaifang)
    KAIFANG="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/kaifang"
}

# start_kaifang LOG ARGS... : runs kaifang pinned, with one runtime worker, and waits for its
# listening line; sets KAIFANG_PID and KAIFANG_ADDR.
start_kaifang() {
    local log="$1"; shift
    TOKIO_WORKER_THREADS=1 KAIFANG_LOG=warn taskset -c "$SERVER_CPU" "$KAIFANG" serve "$@" >"$log" 2>&1 &
    KAIFANG_PID=$!
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
