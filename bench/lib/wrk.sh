# Helpers shared by the wrk benchmarks (sourced, not run): installing wrk, waiting for a
# server to be ready, and reading wrk's figures.

# Installs wrk from the Debian package when it is missing; exits when it cannot.
require_wrk() {
    if ! command -v wrk >/dev/null 2>&1; then
        echo "installing wrk (Debian package)" >&2
        (apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null)) \
            || { echo "error: wrk is required and could not be installed" >&2; exit 1; }
    fi
}

# Waits for the server ($1: pid, $2: its log, $3: its readiness URL) to be ready; exits if it
# exits or takes a minute.
wait_ready() {
    local deadline=$(( $(date +%s) + 60 ))
    until curl -fs -o /dev/null "$3"; do
        if ! kill -0 "$1" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
            echo "error: the server did not become ready; its log:" >&2
            cat "$2" >&2
            exit 1
        fi
        sleep 0.005
    done
}

# Prints "req/s p50 p99 non-2xx" from wrk --latency output ($1).
parse_wrk() {
    local out=$1 rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    echo "${rps:-none} ${p50:-none} ${p99:-none} ${errors:-0}"
}
