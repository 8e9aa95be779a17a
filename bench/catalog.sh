#!/usr/bin/env bash
# Catalog read benchmark (issues 2 and 3): seeds PRODUCTS products, then measures with wrk
#   GET /api/v1/products?limit=20   and, in the same run as a ceiling,   GET /health/live
# on a release build, for SQLite and PostgreSQL, with the stability stack on (rate limits
# deciding every request, with quotas too large to refuse any) and, for the products list,
# again with rate limits off — the cost of protection. Also reports the time from process
# start to ready and the idle RSS. Prints a table; never asserts.
#
#   bench/catalog.sh                      # both backends, 64 connections, 20 s each
#   BACKENDS=sqlite DURATION=10s bench/catalog.sh
#
# On 2 cores the server is pinned to core 0 and wrk to core 1 (TOOLING.md).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
PRODUCTS=${PRODUCTS:-10000}
BACKENDS=${BACKENDS:-"sqlite postgres"}
POSTGRES_SERVER=${SHOPKEEP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PASSWORD="benchmark password 1234"

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian package)" >&2
    (apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null)) \
        || { echo "error: wrk is required and could not be installed" >&2; exit 1; }
fi
cargo build --release --locked -p shopkeep >&2
binary=target/release/shopkeep
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cores=$(nproc)
server_cpu=0; client_cpu=$(( cores > 1 ? 1 : 0 ))

results=()
for backend in $BACKENDS; do
    case $backend in
        sqlite) url="sqlite://$work/bench.db" ;;
        postgres) url="${POSTGRES_SERVER%/*}/shopkeep_bench_$$" ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    export DATABASE_URL=$url SHOPKEEP_LOG__LEVEL=warn
    # Limits on, but never refusing: the benchmark measures their cost, not their effect.
    for scope in PER_IP ANONYMOUS CUSTOMER STAFF API_TOKEN; do
        export SHOPKEEP_RATE_LIMITS__${scope}__COUNT=10000000
    done
    "$binary" migrate up >/dev/null
    SHOPKEEP_ADMIN_PASSWORD=$PASSWORD "$binary" admin create-user --email bench@example.com --role staff >/dev/null

    start_ns=$(date +%s%N)
    taskset -c $server_cpu "$binary" serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 >"$work/$backend.log" 2>&1 &
    pid=$!
    until curl -fs -o /dev/null http://127.0.0.1:18080/health/ready; do sleep 0.005; done
    ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))

    cookie="$work/cookie"
    curl -fs -c "$cookie" -H 'content-type: application/json' \
        -d "{\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\"}" http://127.0.0.1:18080/api/v1/sessions >/dev/null
    token=$(curl -fs -b "$cookie" -H 'content-type: application/json' -d '{"name":"bench"}' \
        http://127.0.0.1:18080/api/v1/api-tokens | sed -E 's/.*"tokenSecret":"([^"]+)".*/\1/')
    category=$(curl -fs -H "authorization: Bearer $token" -H 'content-type: application/json' \
        -d '{"name":"Bench"}' http://127.0.0.1:18080/api/v1/categories | sed -E 's/.*"id":"([^"]+)".*/\1/')
    seed_start=$(date +%s)
    seq 1 "$PRODUCTS" | xargs -P 16 -I{} curl -fs -o /dev/null -H "authorization: Bearer $token" \
        -H 'content-type: application/json' \
        -d "{\"name\":\"Product {}\",\"price\":\"$(( RANDOM % 100 )).99\",\"currency\":\"EUR\",\"stock\":{},\"categoryId\":\"$category\"}" \
        http://127.0.0.1:18080/api/v1/products
    seed_s=$(( $(date +%s) - seed_start ))
    sleep 2
    rss_kib=$(ps -o rss= -p $pid | tr -d ' ')

    run_wrk() {
        taskset -c $client_cpu wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$1" 2>&1
    }
    parse() { # rps p50 p99
        local out=$1
        local rps p50 p99 errors
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1=="50%" {print $2}' <<<"$out")
        p99=$(awk '$1=="99%" {print $2}' <<<"$out")
        errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
        echo "$rps $p50 $p99 ${errors:-0}"
    }
    products=$(parse "$(run_wrk 'http://127.0.0.1:18080/api/v1/products?limit=20')")
    live=$(parse "$(run_wrk 'http://127.0.0.1:18080/health/live')")
    kill -TERM $pid; wait $pid || true
    SHOPKEEP_RATE_LIMITS__ENABLED=false taskset -c $server_cpu "$binary" serve --listen 127.0.0.1:18080 \
        --admin-listen 127.0.0.1:19090 >>"$work/$backend.log" 2>&1 &
    pid=$!
    until curl -fs -o /dev/null http://127.0.0.1:18080/health/ready; do sleep 0.005; done
    unlimited=$(parse "$(run_wrk 'http://127.0.0.1:18080/api/v1/products?limit=20')")
    kill -TERM $pid; wait $pid || true
    results+=("$backend products?limit=20 $products $ready_ms $rss_kib $seed_s")
    results+=("$backend products,limits-off $unlimited $ready_ms $rss_kib $seed_s")
    results+=("$backend health/live $live $ready_ms $rss_kib $seed_s")
    if [ "$backend" = postgres ]; then
        psql "$POSTGRES_SERVER" -qc "drop database if exists shopkeep_bench_$$ with (force)" >/dev/null
    fi
    rm -f "$work"/bench.db*
done

printf '\nwrk -t1 -c%s -d%s, %s products, release build, server on cpu %s, wrk on cpu %s\n\n' \
    "$CONNECTIONS" "$DURATION" "$PRODUCTS" "$server_cpu" "$client_cpu"
printf '| %-8s | %-20s | %10s | %9s | %9s | %8s | %14s | %13s |\n' backend endpoint "req/s" p50 p99 non-2xx "start→ready ms" "idle RSS MiB"
printf '|%s|\n' "----------|----------------------|------------|-----------|-----------|----------|----------------|---------------"
for row in "${results[@]}"; do
    read -r backend endpoint rps p50 p99 errors ready rss seed <<<"$row"
    printf '| %-8s | %-20s | %10s | %9s | %9s | %8s | %14s | %13s |\n' \
        "$backend" "$endpoint" "$rps" "$p50" "$p99" "$errors" "$ready" "$(( rss / 1024 ))"
done
