#!/usr/bin/env bash
# Catalog read benchmark: seeds PRODUCTS products, then measures with wrk, same run, release
# build, SQLite and PostgreSQL:
#   /health/live (the server's own ceiling), nginx's `return 200` (the machine's) and a bare axum
#   server's /health/live (examples/bare_live.rs: the framework with no middleware, the naive
#   baseline);
#   GET /api/v1/products?limit=20, GET /api/v1/products/{slug}, a search and GET /users/me
#   (an authenticated read: the sign-in lookup) — with the read cache warm, and again with
#   the cache off (every request to the database: the "cold" figures);
#   the product list once more with rate limits off — the cost of protection — and /health/live
#   and the list at log level info (an access line per request; the other passes run at warn);
#   on PostgreSQL, INSTANCES (20) instances behind one PgBouncer in transaction mode: a cold
#   product read through it, and the connections PgBouncer holds against those PostgreSQL serves.
# Rate limits are on (deciding every request) with quotas too large to refuse any. Also
# reports the cache hit ratio of the warm run, the time from process start to ready and the
# idle RSS. Prints a table; never asserts (except in smoke mode).
#
#   bench/catalog.sh                      # both backends, 64 connections, 20 s each
#   BACKENDS=sqlite DURATION=10s bench/catalog.sh
#   SMOKE=1 bench/catalog.sh              # scripts/test: 50 products, 8 connections, 1 s, debug
#                                         # build; fails unless every request answered 2xx
#   PROFILE=debug bench/catalog.sh        # any run on target/debug (figures mean little)
#
# The staff user signs in as a person would: the default configuration challenges a staff
# sign-in from a new device (202, a confirmation link mailed), so the script reads the link
# from the mail outbox (`shopkeep admin mail list`; no SMTP is configured here), confirms it
# (POST /login-challenges/confirm) and signs in again from the now known device (its cookie).
#
# On 2 cores the server (and nginx) is pinned to core 0 and wrk to core 1.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    DURATION=${DURATION:-1s}
    CONNECTIONS=${CONNECTIONS:-8}
    PRODUCTS=${PRODUCTS:-50}
    IDLE_SECONDS=${IDLE_SECONDS:-0.2}
    PROFILE=${PROFILE:-debug}
fi
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
PRODUCTS=${PRODUCTS:-10000}
IDLE_SECONDS=${IDLE_SECONDS:-2}
PROFILE=${PROFILE:-release}
BACKENDS=${BACKENDS:-"sqlite postgres"}
INSTANCES=${INSTANCES:-$([ "$SMOKE" = 1 ] && echo 2 || echo 20)}
INSTANCE_CONNECTIONS=${INSTANCE_CONNECTIONS:-10}
BOUNCER_POOL=${BOUNCER_POOL:-10}
POSTGRES_SERVER=${SHOPKEEP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PASSWORD="benchmark password 1234"
API=http://127.0.0.1:18080/api/v1

case $PROFILE in
    release) cargo_profile=(--release) ;;
    debug) cargo_profile=() ;;
    *) echo "error: PROFILE is release or debug, not $PROFILE" >&2; exit 1 ;;
esac
source bench/lib/wrk.sh
require_wrk
cargo build "${cargo_profile[@]}" --locked -p shopkeep --bin shopkeep --example bare_live >&2
binary=${CARGO_TARGET_DIR:-target}/$PROFILE/shopkeep
bare_live=${CARGO_TARGET_DIR:-target}/$PROFILE/examples/bare_live
work=$(mktemp -d)
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    if [[ " $BACKENDS " == *" postgres "* ]]; then
        psql "$POSTGRES_SERVER" -qc "drop database if exists shopkeep_bench_$$ with (force)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
cores=$(nproc)
server_cpu=0; client_cpu=$(( cores > 1 ? 1 : 0 ))


# Signs the staff user in with the cookie jar $cookie (its device cookie included); prints the
# HTTP status, keeps the body in $work/login.json.
sign_in() {
    curl -s -o "$work/login.json" -w '%{http_code}' -b "$cookie" -c "$cookie" -H 'content-type: application/json' \
        -d "{\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\"}" "$API/sessions"
}

# Waits (up to 30 s) for the login confirmation mail and prints the token of its link.
mailed_login_token() {
    local deadline=$(( $(date +%s) + 30 )) outbox token
    while :; do
        outbox=$("$binary" admin mail list --limit 10 2>&1) || { echo "$outbox" >&2; return 1; }
        token=$(grep -o 'confirm-login?token=[A-Za-z0-9_-]*' <<<"$outbox" | head -n 1 | cut -d= -f2) || true
        if [ -n "$token" ]; then
            echo "$token"
            return 0
        fi
        if [ "$(date +%s)" -gt "$deadline" ]; then
            echo "error: no login confirmation mail in the outbox after 30 s (is SMTP configured?):" >&2
            echo "$outbox" >&2
            return 1
        fi
        sleep 0.1
    done
}

# The staff user's session: signs in; a new-device challenge (202) is confirmed with the
# mailed link, then the same device signs in again.
staff_session() {
    local status token
    status=$(sign_in)
    if [ "$status" = 202 ]; then
        token=$(mailed_login_token)
        curl -fsS -o /dev/null -H 'content-type: application/json' -d "{\"token\":\"$token\"}" \
            "$API/login-challenges/confirm"
        status=$(sign_in)
    fi
    if [ "$status" != 201 ]; then
        echo "error: the staff sign-in answered $status: $(cat "$work/login.json")" >&2
        exit 1
    fi
}

# PostgreSQL behind PgBouncer (transaction mode, pool of $BOUNCER_POOL server connections):
# $INSTANCES instances, each holding $INSTANCE_CONNECTIONS connections to PgBouncer, the read
# cache off so the reads reach the database; wrk reads a product through the first instance.
# Reports the connections PgBouncer holds from clients against those PostgreSQL serves.
pgbouncer_pass() {
    require_pgbouncer
    local bouncer_pid host server_port database bouncer_url i pids=()
    host=$(sed -E 's#^[a-z]+://([^@/]*@)?([^:/]+).*#\2#' <<<"$POSTGRES_SERVER")
    server_port=$(sed -nE 's#^[a-z]+://([^@/]*@)?[^:/]+:([0-9]+).*#\2#p' <<<"$POSTGRES_SERVER")
    database=shopkeep_bench_$$
    bouncer_pid=$(start_pgbouncer "$work/pgbouncer" 16432 "$host" "${server_port:-5432}" "$BOUNCER_POOL")
    for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/16432) 2>/dev/null && break; sleep 0.05; done
    bouncer_url="postgres://postgres@127.0.0.1:16432/$database"
    for i in $(seq 0 $(( INSTANCES - 1 ))); do
        DATABASE_URL=$bouncer_url SHOPKEEP_DATABASE__PGBOUNCER=true SHOPKEEP_DATABASE__DIRECT_URL=$url \
            SHOPKEEP_DATABASE__MIN_CONNECTIONS=$INSTANCE_CONNECTIONS SHOPKEEP_DATABASE__MAX_CONNECTIONS=$INSTANCE_CONNECTIONS \
            SHOPKEEP_CACHE__ENABLED=false taskset -c $server_cpu "$binary" serve --listen 127.0.0.1:$(( 18100 + i )) \
            --admin-listen 127.0.0.1:$(( 19100 + i )) >>"$work/pgbouncer-instances.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait_ready "${pids[$i]}" "$work/pgbouncer-instances.log" "http://127.0.0.1:$(( 18100 + i ))/health/ready"
    done
    sleep "$IDLE_SECONDS"
    results+=("postgres products/{slug},cold,bouncer $(parse_wrk "$(run_wrk "http://127.0.0.1:18100/api/v1/products/product-$(( PRODUCTS / 2 ))")") - 0 0")
    local clients servers
    clients=$(psql "postgres://postgres@127.0.0.1:16432/pgbouncer" -qtAc 'show clients' 2>/dev/null | grep -c "|$database|" || true)
    servers=$(psql "$POSTGRES_SERVER" -qtAc "select count(*) from pg_stat_activity where datname = '$database' and application_name = 'shopkeep'")
    bouncer_line="PgBouncer (transaction mode, default_pool_size $BOUNCER_POOL): $INSTANCES instances × $INSTANCE_CONNECTIONS = $clients client connections to PgBouncer; $servers server connections on PostgreSQL"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    kill "$bouncer_pid" 2>/dev/null || true
    wait "$bouncer_pid" 2>/dev/null || true
    if [ "$SMOKE" = 1 ] && [ "${clients:-0}" -lt "$INSTANCES" ]; then
        echo "error: PgBouncer saw ${clients:-0} clients from $INSTANCES instances" >&2
        exit 1
    fi
}

# Starts the server on 127.0.0.1:18080 (admin 19090) with the environment overrides given as
# NAME=value arguments, pinned to $server_cpu, its output appended to the backend's log; waits
# until it is ready and leaves its pid in $pid.
start_server() {
    env "$@" taskset -c $server_cpu "$binary" serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 \
        >>"$work/$backend.log" 2>&1 &
    pid=$!
    wait_ready $pid "$work/$backend.log" http://127.0.0.1:18080/health/ready
}

# Stops the server started by start_server, gracefully.
stop_server() {
    kill -TERM $pid
    wait $pid || true
}

results=()
hit_ratios=()
bouncer_line=""
if [ "$SMOKE" != 1 ] && require_nginx; then
    nginx_pid=$(start_nginx "$work/nginx" 18090 $server_cpu)
    wait_ready "$nginx_pid" "$work/nginx/error.log" http://127.0.0.1:18090/
    nginx=$(parse_wrk "$(taskset -c $client_cpu wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency http://127.0.0.1:18090/ 2>&1)")
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    results+=("nginx return-200 $nginx - 0 0")
fi
# The naive baseline: bare axum answering /health/live, no middleware (what the framework
# costs before Shopkeep's stack adds anything).
if [ "$SMOKE" != 1 ]; then
    taskset -c $server_cpu "$bare_live" 127.0.0.1:18095 >"$work/bare_live.log" 2>&1 &
    bare_pid=$!
    wait_ready "$bare_pid" "$work/bare_live.log" http://127.0.0.1:18095/health/live
    bare=$(parse_wrk "$(taskset -c $client_cpu wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency http://127.0.0.1:18095/health/live 2>&1)")
    kill "$bare_pid" 2>/dev/null || true
    wait "$bare_pid" 2>/dev/null || true
    results+=("axum bare-health/live $bare - 0 0")
fi
for backend in $BACKENDS; do
    case $backend in
        sqlite) url="sqlite://$work/bench.db" ;;
        postgres) url="${POSTGRES_SERVER%/*}/shopkeep_bench_$$" ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    export DATABASE_URL=$url SHOPKEEP_LOG__LEVEL=warn
    # Limits on, but never refusing: the benchmark measures their cost, not their effect.
    for scope in PER_IP ANONYMOUS CUSTOMER STAFF API_TOKEN SEARCH_PER_IP; do
        export SHOPKEEP_RATE_LIMITS__${scope}__COUNT=10000000
    done
    "$binary" migrate up >/dev/null
    SHOPKEEP_ADMIN_PASSWORD=$PASSWORD "$binary" admin create-user --email bench@example.com --role staff >/dev/null

    : >"$work/$backend.log"
    start_ns=$(date +%s%N)
    start_server
    ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))

    cookie="$work/cookie-$backend"
    : >"$cookie"
    staff_session
    token=$(curl -fsS -b "$cookie" -H 'content-type: application/json' -d '{"name":"bench"}' \
        "$API/api-tokens" | sed -E 's/.*"tokenSecret":"([^"]+)".*/\1/')
    category=$(curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' \
        -d '{"name":"Bench"}' "$API/categories" | sed -E 's/.*"id":"([^"]+)".*/\1/')
    seed_start=$(date +%s)
    seq 1 "$PRODUCTS" | xargs -P 16 -I{} curl -fsS -o /dev/null -H "authorization: Bearer $token" \
        -H 'content-type: application/json' \
        -d "{\"name\":\"Product {}\",\"price\":\"$(( RANDOM % 100 )).99\",\"currency\":\"EUR\",\"stock\":{},\"categoryId\":\"$category\"}" \
        "$API/products"
    seed_s=$(( $(date +%s) - seed_start ))
    listed=$(curl -fsS "$API/products?limit=1" | sed -E 's/.*"total":([0-9]+).*/\1/')
    if [ "$listed" != "$PRODUCTS" ]; then
        echo "error: $PRODUCTS products seeded, the storefront lists $listed" >&2
        exit 1
    fi
    sleep "$IDLE_SECONDS"
    rss_kib=$(ps -o rss= -p $pid | tr -d ' ')

    run_wrk() {
        taskset -c $client_cpu wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" 2>&1
    }
    item="$API/products/product-$(( PRODUCTS / 2 ))"
    search="$API/products?q=product%20$(( PRODUCTS / 3 ))&limit=20"
    me="$API/users/me"
    # The reads of one pass; $1 labels them (warm or cold).
    read_pass() {
        local label=$1
        results+=("$backend products?limit=20,$label $(parse_wrk "$(run_wrk "$API/products?limit=20")") $ready_ms $rss_kib $seed_s")
        results+=("$backend products/{slug},$label $(parse_wrk "$(run_wrk "$item")") $ready_ms $rss_kib $seed_s")
        results+=("$backend search,$label $(parse_wrk "$(run_wrk "$search")") $ready_ms $rss_kib $seed_s")
        results+=("$backend users/me,$label $(parse_wrk "$(run_wrk -H "authorization: Bearer $token" "$me")") $ready_ms $rss_kib $seed_s")
    }
    results+=("$backend health/live $(parse_wrk "$(run_wrk 'http://127.0.0.1:18080/health/live')") $ready_ms $rss_kib $seed_s")
    read_pass warm
    hit_ratio=$(curl -fsS http://127.0.0.1:19090/admin/v1/status \
        | jq -r '([.caches[].hits] | add) as $h | ([.caches[].misses] | add) as $m
                 | if ($h + $m) > 0 then (($h * 1000 / ($h + $m)) | floor) / 10 else "none" end')
    stop_server

    start_server SHOPKEEP_CACHE__ENABLED=false
    read_pass cold
    stop_server

    start_server SHOPKEEP_RATE_LIMITS__ENABLED=false
    results+=("$backend products,warm,limits-off $(parse_wrk "$(run_wrk "$API/products?limit=20")") $ready_ms $rss_kib $seed_s")
    stop_server

    # The default log level: one JSON access line per request, written to a file by the
    # non-blocking writer (every other pass runs at warn).
    start_server SHOPKEEP_LOG__LEVEL=info
    results+=("$backend health/live,log-info $(parse_wrk "$(run_wrk 'http://127.0.0.1:18080/health/live')") $ready_ms $rss_kib $seed_s")
    results+=("$backend products,warm,log-info $(parse_wrk "$(run_wrk "$API/products?limit=20")") $ready_ms $rss_kib $seed_s")
    stop_server
    hit_ratios+=("$backend $hit_ratio")
    if [ "$backend" = postgres ]; then
        pgbouncer_pass
    fi
    if [ "$backend" = postgres ]; then
        psql "$POSTGRES_SERVER" -qc "drop database if exists shopkeep_bench_$$ with (force)" >/dev/null
    fi
    rm -f "$work"/bench.db*
done

printf '\nwrk -t1 -c%s -d%s, %s products, %s build, server on cpu %s, wrk on cpu %s\n\n' \
    "$CONNECTIONS" "$DURATION" "$PRODUCTS" "$PROFILE" "$server_cpu" "$client_cpu"
printf '| %-8s | %-30s | %10s | %9s | %9s | %8s | %14s | %13s |\n' backend endpoint "req/s" p50 p99 non-2xx "start→ready ms" "idle RSS MiB"
printf '|%s|\n' "----------|--------------------------------|------------|-----------|-----------|----------|----------------|---------------"
failed=0
for row in "${results[@]}"; do
    read -r backend endpoint rps p50 p99 errors ready rss seed <<<"$row"
    printf '| %-8s | %-30s | %10s | %9s | %9s | %8s | %14s | %13s |\n' \
        "$backend" "$endpoint" "$rps" "$p50" "$p99" "$errors" "$ready" "$(( rss / 1024 ))"
    # Smoke mode checks that the benchmark measured what it says: answers, all of them 2xx.
    if [ "$SMOKE" = 1 ] && { [ "$errors" != 0 ] || ! awk -v rps="$rps" 'BEGIN { exit !(rps + 0 > 0) }'; }; then
        echo "error: $backend $endpoint: $rps req/s, $errors non-2xx answers" >&2
        failed=1
    fi
done
echo
for row in "${hit_ratios[@]}"; do
    read -r backend ratio <<<"$row"
    echo "$backend: cache hit ratio over the warm reads ${ratio}%"
done
[ -n "$bouncer_line" ] && echo "$bouncer_line"
exit $failed
