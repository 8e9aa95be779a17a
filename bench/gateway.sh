#!/usr/bin/env bash
# Edge benchmark: the same upstreams reached directly, through `shopkeep gateway`, through nginx
# (proxy_pass with upstream keep-alive) and through HAProxy, with the same load tool in the same
# run. Upstreams: nginx answering `return 200` (a static upstream: the proxies' own ceiling), and
# a `serve` instance (per backend in BACKENDS) on /health/live and the warm product list. Prints
# req/s, p50, p99 and the p99 each proxy adds over the direct run; never asserts (except in smoke
# mode, where any non-2xx answer fails the run).
#
#   bench/gateway.sh                          # 64 connections, 20 s per run
#   BACKENDS=sqlite DURATION=10s bench/gateway.sh
#   SMOKE=1 bench/gateway.sh                  # scripts/test: 8 connections, 1 s, debug build
#
# On 2 cores the upstreams and the proxies share core 0 and wrk runs on core 1; nginx and HAProxy
# run one worker/thread each, and the gateway one tokio worker (its affinity is one core).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    DURATION=${DURATION:-1s}
    CONNECTIONS=${CONNECTIONS:-8}
    PROFILE=${PROFILE:-debug}
fi
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
PROFILE=${PROFILE:-release}
BACKENDS=${BACKENDS:-"sqlite postgres"}
POSTGRES_SERVER=${SHOPKEEP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}

case $PROFILE in
    release) cargo_profile=(--release) ;;
    debug) cargo_profile=() ;;
    *) echo "error: PROFILE is release or debug, not $PROFILE" >&2; exit 1 ;;
esac
source bench/lib/wrk.sh
require_wrk
require_nginx || { echo "error: nginx is required and could not be installed" >&2; exit 1; }
require_haproxy
cargo build "${cargo_profile[@]}" --locked -p shopkeep --bin shopkeep >&2
binary=${CARGO_TARGET_DIR:-target}/$PROFILE/shopkeep
work=$(mktemp -d)
static_nginx=""
cleanup() {
    # start_nginx runs in a command substitution: its nginx is not one of this shell's jobs.
    [ -n "$static_nginx" ] && kill "$static_nginx" 2>/dev/null || true
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    psql "$POSTGRES_SERVER" -qc "drop database if exists shopkeep_gwbench_$$ with (force)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
cores=$(nproc)
server_cpu=0; client_cpu=$(( cores > 1 ? 1 : 0 ))

# Upstreams: name, port, health path, measured paths.
upstreams=("static 18400 / /")
static_nginx=$(start_nginx "$work/static" 18400 $server_cpu)
wait_ready "$static_nginx" "$work/static/error.log" http://127.0.0.1:18400/

port=18410
for backend in $BACKENDS; do
    case $backend in
        sqlite) url="sqlite://$work/shop.db" ;;
        postgres) url="${POSTGRES_SERVER%/*}/shopkeep_gwbench_$$" ;;
        *) echo "error: BACKENDS holds sqlite and/or postgres, not $backend" >&2; exit 1 ;;
    esac
    # Limits on but never refusing (every request decided, none refused); access lines off.
    limits=()
    for scope in PER_IP ANONYMOUS CUSTOMER STAFF API_TOKEN SEARCH_PER_IP; do
        limits+=("SHOPKEEP_RATE_LIMITS__${scope}__COUNT=10000000")
    done
    DATABASE_URL=$url "$binary" migrate up >/dev/null
    env "${limits[@]}" DATABASE_URL="$url" SHOPKEEP_LOG__LEVEL=warn \
        taskset -c $server_cpu "$binary" serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$(( port + 5 )) \
        >"$work/serve-$backend.log" 2>&1 &
    wait_ready $! "$work/serve-$backend.log" "http://127.0.0.1:$port/health/ready"
    curl -fsS -o /dev/null "http://127.0.0.1:$port/api/v1/products?limit=20"
    upstreams+=("$backend $port /health/ready /health/live,/api/v1/products?limit=20")
    port=$(( port + 10 ))
done

# One gateway, one nginx server block and one HAProxy frontend per upstream, at upstream
# port + 1, + 2 and + 3.
nginx_servers=""
haproxy_frontends=""
for upstream in "${upstreams[@]}"; do
    read -r name upstream_port health _ <<<"$upstream"
    cat >"$work/gateway-$name.toml" <<TOML
listen = "127.0.0.1:$(( upstream_port + 1 ))"
admin_listen = "127.0.0.1:$(( upstream_port + 4 ))"
slow_start_ms = 0
[log]
level = "warn"
[health]
path = "$health"
[[backends]]
name = "$name"
address = "127.0.0.1:$upstream_port"
TOML
    taskset -c $server_cpu "$binary" --config "$work/gateway-$name.toml" gateway >"$work/gateway-$name.log" 2>&1 &
    wait_ready $! "$work/gateway-$name.log" "http://127.0.0.1:$(( upstream_port + 4 ))/health/ready"
    nginx_servers+="
    upstream up_$name { server 127.0.0.1:$upstream_port; keepalive 128; }
    server {
        listen 127.0.0.1:$(( upstream_port + 2 ));
        location / {
            proxy_pass http://up_$name;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }"
    haproxy_frontends+="
frontend fe_$name
    bind 127.0.0.1:$(( upstream_port + 3 ))
    default_backend be_$name
backend be_$name
    http-reuse always
    option forwardfor
    server $name 127.0.0.1:$upstream_port
"
done

mkdir -p "$work/proxy"
cat >"$work/proxy/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/proxy/nginx.pid;
error_log $work/proxy/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/proxy/body;
    proxy_temp_path $work/proxy/proxy;
    keepalive_requests 1000000;
$nginx_servers
}
CONF
taskset -c $server_cpu nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" >/dev/null 2>&1 &
wait_ready $! "$work/proxy/error.log" http://127.0.0.1:18402/

cat >"$work/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
$haproxy_frontends
CONF
taskset -c $server_cpu haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
wait_ready $! "$work/haproxy.log" http://127.0.0.1:18403/

run_wrk() {
    taskset -c $client_cpu wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$1" 2>&1
}

# "123us", "1.5ms", "2s" as microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
        else print "none" }'
}

rows=()
failed=0
for upstream in "${upstreams[@]}"; do
    read -r name upstream_port _ paths <<<"$upstream"
    IFS=, read -ra measured <<<"$paths"
    for path in "${measured[@]}"; do
        direct_p99=""
        for via in direct gateway nginx haproxy; do
            case $via in
                direct) target=$upstream_port ;;
                gateway) target=$(( upstream_port + 1 )) ;;
                nginx) target=$(( upstream_port + 2 )) ;;
                haproxy) target=$(( upstream_port + 3 )) ;;
            esac
            read -r rps p50 p99 errors <<<"$(parse_wrk "$(run_wrk "http://127.0.0.1:$target$path")")"
            p99_us=$(to_us "$p99")
            if [ "$via" = direct ]; then
                direct_p99=$p99_us
                added="-"
            else
                added=$(awk -v a="$p99_us" -v b="$direct_p99" 'BEGIN { if (a == "none" || b == "none") print "none"; else printf "%.0fus", a - b }')
            fi
            rows+=("$name $path $via $rps $p50 $p99 $added $errors")
            if [ "$SMOKE" = 1 ] && { [ "$errors" != 0 ] || [ "$rps" = none ]; }; then
                echo "error: $via to $name$path answered $errors non-2xx (or nothing)" >&2
                failed=1
            fi
        done
    done
done

printf '\nwrk -t1 -c%s -d%s, %s build, upstreams and proxies on cpu %s, wrk on cpu %s\n\n' \
    "$CONNECTIONS" "$DURATION" "$PROFILE" "$server_cpu" "$client_cpu"
printf '| %-8s | %-28s | %-7s | %10s | %9s | %9s | %10s | %7s |\n' backend path via req/s p50 p99 "added p99" non-2xx
printf '|%s|\n' "----------|------------------------------|---------|------------|-----------|-----------|------------|---------"
for row in "${rows[@]}"; do
    read -r name path via rps p50 p99 added errors <<<"$row"
    printf '| %-8s | %-28s | %-7s | %10s | %9s | %9s | %10s | %7s |\n' "$name" "$path" "$via" "$rps" "$p50" "$p99" "$added" "$errors"
done
exit $failed
