#!/usr/bin/env bash
# Job-queue benchmark (crates/worker/examples/throughput.rs), no-op handler, release build, on
# SQLite (fresh temporary file) and PostgreSQL (fresh database, dropped afterwards):
#   - enqueue: JOBS due jobs enqueued by ENQUEUERS concurrent callers, one per transaction;
#   - drain:   one worker, one queue of concurrency C (8 and 32), batch max(C, 16), polling every
#              10 ms, timed from its start until all JOBS have succeeded ("100k queued jobs drained");
#   - latency: afterwards, on the same database, RATE jobs/s enqueued one by one for
#              LATENCY_SECONDS while the worker idles; enqueue→start (now − created_at, seen by
#              the handler) p50/p99. Then, on fresh databases at concurrency 8, the same with the
#              default poll interval of 1000 ms, and on PostgreSQL with LISTEN/NOTIFY wake-ups
#              as `shopkeep` runs it.
# Prints one markdown table; asserts only that every job succeeded.
#
#   bench/jobs.sh                                  # both backends, 100,000 jobs, C = 8 and 32
#   BACKENDS=sqlite JOBS=10000 CONCURRENCIES=8 bench/jobs.sh
#   POLL_COMPARISON=0 bench/jobs.sh                # skip the 1000 ms / LISTEN latency rows
#   SMOKE=1 bench/jobs.sh                          # scripts/test: 200 jobs, C = 8, 1 s of 50
#                                                  # jobs/s, every row, debug build
#   PROFILE=debug bench/jobs.sh                    # any run on target/debug (figures mean little)
#
# The benchmark and PostgreSQL share the machine; on 2 cores they compete for CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    JOBS=${JOBS:-200}
    CONCURRENCIES=${CONCURRENCIES:-8}
    RATE=${RATE:-50}
    LATENCY_SECONDS=${LATENCY_SECONDS:-1}
    PROFILE=${PROFILE:-debug}
fi
JOBS=${JOBS:-100000}
CONCURRENCIES=${CONCURRENCIES:-"8 32"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
ENQUEUERS=${ENQUEUERS:-16}
RATE=${RATE:-200}
LATENCY_SECONDS=${LATENCY_SECONDS:-5}
POLL_COMPARISON=${POLL_COMPARISON:-1}
PROFILE=${PROFILE:-release}
export SHOPKEEP_TEST_POSTGRES_URL=${SHOPKEEP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}

case $PROFILE in
    release) cargo_profile=(--release) ;;
    debug) cargo_profile=() ;;
    *) echo "error: PROFILE is release or debug, not $PROFILE" >&2; exit 1 ;;
esac
if ! command -v jq >/dev/null 2>&1; then
    echo "installing jq (Debian package)" >&2
    (apt-get install -y jq >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y jq >/dev/null)) \
        || { echo "error: jq is required and could not be installed" >&2; exit 1; }
fi
cargo build "${cargo_profile[@]}" --locked -p worker --example throughput >&2
binary=${CARGO_TARGET_DIR:-target}/$PROFILE/examples/throughput
results=$(mktemp)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
trap 'rm -f "$results"' EXIT

# Runs the example; its JSON lines go to the results (and to stderr, to follow progress).
bench() {
    echo "throughput $*" >&2
    "$binary" --enqueuers "$ENQUEUERS" --rate "$RATE" --seconds "$LATENCY_SECONDS" "$@" | tee -a "$results" >&2
}

for backend in $BACKENDS; do
    for concurrency in $CONCURRENCIES; do
        bench --backend "$backend" --jobs "$JOBS" --concurrency "$concurrency"
    done
done
if [ "$POLL_COMPARISON" = 1 ]; then
    for backend in $BACKENDS; do
        bench --backend "$backend" --concurrency 8 --phases latency --latency-poll-ms 1000
        if [ "$backend" = postgres ]; then
            bench --backend postgres --concurrency 8 --phases latency --latency-poll-ms 1000 --listen
            bench --backend postgres --concurrency 8 --phases latency --latency-poll-ms 10 --listen
        fi
    done
fi

# One row per latency line; the enqueue and drain figures of the same run precede it.
table=$(jq -rs '
    def tenths: (. * 10 | round) as $t | "\($t / 10 | floor).\($t % 10)";
    reduce .[] as $line ({rows: [], enqueue: null, drain: null};
        if $line.phase == "enqueue" then .enqueue = $line
        elif $line.phase == "drain" then .drain = $line
        else .rows += [[
            $line.backend, ($line.concurrency | tostring),
            (if .drain then (.drain.batch_size | tostring) else "—" end),
            (if .enqueue then (.enqueue.jobs_per_s | round | tostring) else "—" end),
            (if .drain then (.drain.jobs | tostring) else "—" end),
            (if .drain then (.drain.seconds | tenths) else "—" end),
            (if .drain then (.drain.jobs_per_s | round | tostring) else "—" end),
            "\($line.poll_ms) ms" + (if $line.listen then " + LISTEN" else "" end),
            ($line.rate_per_s | round | tostring),
            ($line.p50_ms | tenths), ($line.p99_ms | tenths), ($line.max_ms | tenths)
          ]] | .enqueue = null | .drain = null
        end)
    | .rows[] | "| " + join(" | ") + " |"' "$results")

printf '\n%s build, %s cores (load average %s before, %s after), %s enqueuers, latency: %s jobs/s for %s s, no-op handler\n\n' \
    "$PROFILE" "$(nproc)" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$ENQUEUERS" "$RATE" "$LATENCY_SECONDS"
echo '| backend | C | batch | enqueue jobs/s | jobs drained | drain s | drain jobs/s | latency poll | latency jobs/s | enqueue→start p50 ms | p99 ms | max ms |'
echo '|---|---|---|---|---|---|---|---|---|---|---|---|'
echo "$table"
