#!/usr/bin/env bash
# Raw download and streaming proxy throughput: kaifang against nginx, in the same run.
#
#   benches/download.sh            # 1 GiB file, 7 runs per figure
#   SIZE_MIB=4096 RUNS=5 benches/download.sh
#
# Raw download: each server runs alone on one core (SERVER_CPU, default 0: nginx with one
# worker, kaifang with one runtime worker) and curl on the other (CLIENT_CPU, default 1).
# Streaming proxy: the origin (nginx, sendfile on) shares the client's core in both cases, so
# the only difference between "direct" and "through kaifang" is the gateway hop on its own
# core, as in a deployment where the gateway has its own machine; nginx as a reverse proxy
# (proxy_pass, default buffering) takes the same place as a peer. Figures are medians.
set -euo pipefail
source "$(dirname "$0")/common.sh"
SIZE_MIB="${SIZE_MIB:-1024}"

need nginx curl taskset
build_kaifang
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$WORK/data/big.bin"
head -c "$((SIZE_MIB * 1024 * 1024 / 4))" /dev/urandom >"$WORK/data/quarter.bin"

NGINX_PORT=18181
dataset() { # ID SOURCE
    cat <<CONF
[[datasets]]
id = "$1"
title = "$1"
owner = "Benchmarks"
open_type = "unconditional"
format = "csv"
update_frequency = "irregular"
last_updated = "2025-01-01T00:00:00Z"
license = "CC0-1.0"
source = $2
fields = [{ name = "x", type = "string" }]

CONF
}
{
    printf '[limits]\ndownload_chunk_bytes = %s\n\n' "${CHUNK_BYTES:-262144}"
    dataset big '{ file = "big.bin" }'
    dataset quarter '{ file = "quarter.bin" }'
    dataset proxied "{ url = \"http://127.0.0.1:$NGINX_PORT/big.bin\" }"
} >"$WORK/kaifang.toml"

gbs() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Warm the page cache so every server reads from memory.
cat "$WORK/data/big.bin" "$WORK/data/quarter.bin" >/dev/null

start_nginx "$WORK/nginx-on" $NGINX_PORT on "$WORK/data"
nginx_on=$(median_speed "http://127.0.0.1:$NGINX_PORT/big.bin")
kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
start_nginx "$WORK/nginx-off" $NGINX_PORT off "$WORK/data"
nginx_off=$(median_speed "http://127.0.0.1:$NGINX_PORT/big.bin")
kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true

start_kaifang "$WORK/kaifang.log" --config "$WORK/kaifang.toml" --data-dir "$WORK/data" --http 127.0.0.1:0 --flight 127.0.0.1:0 --admin 127.0.0.1:0
base="http://$KAIFANG_ADDR/v1/datasets"
median_speed "$base/quarter/download" >/dev/null
rss_quarter=$(peak_rss_mib "$KAIFANG_PID")
kaifang=$(median_speed "$base/big/download")
rss_big=$(peak_rss_mib "$KAIFANG_PID")
start_nginx "$WORK/origin" $NGINX_PORT on "$WORK/data" "$CLIENT_CPU"
direct=$(median_speed "http://127.0.0.1:$NGINX_PORT/big.bin")
proxied=$(median_speed "$base/proxied/download")
rss_proxy=$(peak_rss_mib "$KAIFANG_PID")
kill "$KAIFANG_PID"; wait "$KAIFANG_PID" 2>/dev/null || true
start_nginx_proxy "$WORK/proxy" 18182 $NGINX_PORT
nginx_proxied=$(median_speed "http://127.0.0.1:18182/big.bin")

machine
echo "file: ${SIZE_MIB} MiB from page cache; ${RUNS} runs each; medians"
printf '%-44s %8s GB/s\n' "nginx, sendfile on" "$(gbs "$nginx_on")"
printf '%-44s %8s GB/s\n' "nginx, sendfile off" "$(gbs "$nginx_off")"
printf '%-44s %8s GB/s\n' "kaifang download" "$(gbs "$kaifang")"
printf '%-44s %8s\n' "  ratio to nginx sendfile on" "$(ratio "$kaifang" "$nginx_on")x"
printf '%-44s %8s\n' "  ratio to nginx sendfile off" "$(ratio "$kaifang" "$nginx_off")x"
printf '%-44s %8s GB/s\n' "origin (nginx, sendfile on) read directly" "$(gbs "$direct")"
printf '%-44s %8s GB/s\n' "kaifang proxying that origin" "$(gbs "$proxied")"
printf '%-44s %8s\n' "  ratio to direct" "$(ratio "$proxied" "$direct")x"
printf '%-44s %8s GB/s\n' "nginx proxy_pass in front of that origin" "$(gbs "$nginx_proxied")"
printf '%-44s %8s\n' "  kaifang's ratio to nginx as proxy" "$(ratio "$proxied" "$nginx_proxied")x"
printf '%-44s %8s MiB\n' "kaifang peak RSS after $((SIZE_MIB / 4)) MiB downloads" "$rss_quarter"
printf '%-44s %8s MiB\n' "kaifang peak RSS after ${SIZE_MIB} MiB downloads" "$rss_big"
printf '%-44s %8s MiB\n' "kaifang peak RSS after proxying" "$rss_proxy"
