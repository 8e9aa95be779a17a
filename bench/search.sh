#!/usr/bin/env bash
# Search benchmark. For SQLite and PostgreSQL, same run, release build:
#  1. `search_bench` (crates/store-sqlx/examples) seeds PRODUCTS products with realistic names
#     and descriptions (a fixed seed: the same catalog every run) through the store, times a
#     full index rebuild, reports the index's size, and runs each query kind — one common word,
#     two words, a typo'd word, a query with three facets, a type-ahead prefix — from
#     CONCURRENCY tasks, next to the naive `LIKE '%word%'` scan the seed warns about;
#  2. then the same queries over HTTP with wrk at CONNECTIONS connections against a running
#     `shopkeep serve`, beside the server's own /health/live as the ceiling.
# Prints tables; never asserts (except in smoke mode).
#
#   bench/search.sh                       # both backends, 100k products, 16 connections, 10 s each
#   BACKENDS=sqlite PRODUCTS=20000 bench/search.sh
#   SMOKE=1 bench/search.sh               # scripts/test: 200 products, 1 s, debug build; fails
#                                         # unless every HTTP request answered 2xx
#
# On 2 cores the server is pinned to core 0 and wrk to core 1 (the in-process step uses both).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    DURATION=${DURATION:-1}
    CONNECTIONS=${CONNECTIONS:-4}
    PRODUCTS=${PRODUCTS:-200}
    PROFILE=${PROFILE:-debug}
fi
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
PRODUCTS=${PRODUCTS:-100000}
PROFILE=${PROFILE:-release}
BACKENDS=${BACKENDS:-"sqlite postgres"}
POSTGRES_SERVER=${SHOPKEEP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
API=http://127.0.0.1:18081/api/v1

case $PROFILE in
    release) cargo_profile=(--release) ;;
    debug) cargo_profile=() ;;
    *) echo "error: PROFILE is release or debug, not $PROFILE" >&2; exit 1 ;;
esac
source bench/lib/wrk.sh
require_wrk
cargo build "${cargo_profile[@]}" --locked -p shopkeep >&2
cargo build "${cargo_profile[@]}" --locked -p store-sqlx --example search_bench >&2
binary=${CARGO_TARGET_DIR:-target}/$PROFILE/shopkeep
bench_binary=target/$PROFILE/examples/search_bench
work=$(mktemp -d)
database=shopkeep_search_bench_$$
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    if [[ " $BACKENDS " == *" postgres "* ]]; then
        psql "$POSTGRES_SERVER" -qc "drop database if exists $database with (force)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
cores=$(nproc)
server_cpu=0; client_cpu=$(( cores > 1 ? 1 : 0 ))

tables=()
results=()
for backend in $BACKENDS; do
    case $backend in
        sqlite) url="sqlite://$work/search.db" ;;
        postgres) url="${POSTGRES_SERVER%/*}/$database" ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    tables+=("$(DATABASE_URL=$url PRODUCTS=$PRODUCTS CONCURRENCY=$CONNECTIONS DURATION_SECS=$DURATION "$bench_binary")")

    export DATABASE_URL=$url SHOPKEEP_LOG__LEVEL=warn
    # Limits on, but never refusing: the benchmark measures their cost, not their effect.
    for scope in PER_IP ANONYMOUS SEARCH_PER_IP; do
        export SHOPKEEP_RATE_LIMITS__${scope}__COUNT=10000000
    done
    taskset -c $server_cpu "$binary" serve --listen 127.0.0.1:18081 --admin-listen 127.0.0.1:19091 \
        >"$work/$backend.log" 2>&1 &
    pid=$!
    wait_ready $pid "$work/$backend.log" http://127.0.0.1:18081/health/ready
    for path in "products?q=wireless" "products?q=wireless%20headphones" "products?q=wirelss" \
        "products?q=wireless&facets=category,price,inStock" "products/suggestions?q=wir" \
        "products?limit=20" "health/live"; do
        target="$API/$path"
        [ "$path" = health/live ] && target=http://127.0.0.1:18081/health/live
        out=$(taskset -c $client_cpu wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$target" 2>&1)
        results+=("$backend $path $(parse_wrk "$out")")
    done
    kill -TERM $pid; wait $pid || true
    if [ "$backend" = postgres ]; then
        psql "$POSTGRES_SERVER" -qc "drop database if exists $database with (force)" >/dev/null
    fi
    rm -f "$work"/search.db*
done

for table in "${tables[@]}"; do
    printf '%s\n' "$table"
done
printf '\nHTTP: wrk -t1 -c%s -d%ss, %s products, %s build, server on cpu %s, wrk on cpu %s\n\n' \
    "$CONNECTIONS" "$DURATION" "$PRODUCTS" "$PROFILE" "$server_cpu" "$client_cpu"
printf '| %-8s | %-50s | %10s | %9s | %9s | %8s |\n' backend "GET /api/v1/..." "req/s" p50 p99 non-2xx
printf '|%s|\n' "----------|----------------------------------------------------|------------|-----------|-----------|---------"
failed=0
for row in "${results[@]}"; do
    read -r backend path rps p50 p99 errors <<<"$row"
    printf '| %-8s | %-50s | %10s | %9s | %9s | %8s |\n' "$backend" "$path" "$rps" "$p50" "$p99" "$errors"
    if [ "$SMOKE" = 1 ] && { [ "$errors" != 0 ] || ! awk -v rps="$rps" 'BEGIN { exit !(rps + 0 > 0) }'; }; then
        echo "error: $backend $path: $rps req/s, $errors non-2xx answers" >&2
        failed=1
    fi
done
exit $failed
