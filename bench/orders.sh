#!/usr/bin/env bash
# Checkout benchmark (issue 5): a release `shopkeep serve` with the built-in test-mode payment
# provider and its in-process worker, and CLIENTS concurrent guests (crates/shopkeep/examples/
# checkout_load.rs) each looping "put a product in the cart, POST /orders with a fresh
# Idempotency-Key" for SECONDS. Two workloads per backend: products spread over 1,000 items,
# and everyone on one hot product (every checkout contends for the same stock row). Reports
# completed orders/s and the POST /orders latency p50/p99. Rate limits are off (one client
# address makes every request); everything else runs as in production.
#
#   bench/orders.sh                              # SQLite and PostgreSQL, 32 clients, 15 s each
#   BACKENDS=sqlite SECONDS_PER_RUN=5 bench/orders.sh
#
# The load generator, the server and PostgreSQL share the machine; on 2 cores they compete.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-32}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
BACKENDS=${BACKENDS:-"sqlite postgres"}
POSTGRES_SERVER=${SHOPKEEP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PASSWORD="benchmark password 1234"

if ! command -v jq >/dev/null 2>&1; then
    echo "installing jq (Debian package)" >&2
    (apt-get install -y jq >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y jq >/dev/null)) \
        || { echo "error: jq is required and could not be installed" >&2; exit 1; }
fi
cargo build --release --locked -p shopkeep --bin shopkeep --example checkout_load >&2
binary=target/release/shopkeep
load=target/release/examples/checkout_load
work=$(mktemp -d)
results="$work/results"
databases=()
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    for database in "${databases[@]}"; do
        psql "$POSTGRES_SERVER" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

for backend in $BACKENDS; do
    for products in 1000 1; do
        case $backend in
            sqlite) url="sqlite://$work/bench-$products.db" ;;
            postgres)
                database="shopkeep_orders_bench_$$_$products"
                databases+=("$database")
                url="${POSTGRES_SERVER%/*}/$database"
                ;;
            *) echo "unknown backend $backend" >&2; exit 1 ;;
        esac
        export DATABASE_URL=$url SHOPKEEP_LOG__LEVEL=warn SHOPKEEP_RATE_LIMITS__ENABLED=false
        "$binary" migrate up >/dev/null
        SHOPKEEP_ADMIN_PASSWORD=$PASSWORD "$binary" admin create-user --email bench@example.com --role staff >/dev/null
        # Staff sign-in from a new device would otherwise wait for a mailed confirmation.
        SHOPKEEP_ACCOUNTS__LOGIN_CHALLENGE_ROLES='[]' \
            "$binary" serve --listen 127.0.0.1:18081 --admin-listen 127.0.0.1:19091 >"$work/$backend-$products.log" 2>&1 &
        pid=$!
        until curl -fs -o /dev/null http://127.0.0.1:18081/health/ready; do
            kill -0 $pid 2>/dev/null || { cat "$work/$backend-$products.log" >&2; exit 1; }
            sleep 0.05
        done
        label=$([ "$products" = 1 ] && echo "one hot product" || echo "spread over $products products")
        echo "checkout_load: $backend, $label" >&2
        "$load" --url http://127.0.0.1:18081 --email bench@example.com --password "$PASSWORD" \
            --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" --products "$products" \
            --label "$label" --backend "$backend" | tee -a "$results" >&2
        kill -TERM $pid
        wait $pid || true
    done
done

printf '\nrelease build, %s cores (load average %s before, %s after), %s clients, %s s per run, test-mode payments\n\n' \
    "$(nproc)" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$CLIENTS" "$SECONDS_PER_RUN"
echo '| backend | workload | orders | errors | orders/s | POST /orders p50 ms | p99 ms |'
echo '|---|---|---|---|---|---|---|'
jq -r '"| \(.backend) | \(.label) | \(.orders) | \(.errors) | \(.ordersPerSecond | round) | \(.p50Ms * 10 | round / 10) | \(.p99Ms * 10 | round / 10) |"' "$results"
