# Helpers shared by the wrk benchmarks (sourced, not run): installing wrk, nginx, HAProxy and
# PgBouncer, waiting for a server to be ready, and reading wrk's figures.

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

# Installs nginx (Debian nginx-light) when it is missing; returns 1 when it cannot (the
# benchmark then reports no nginx row rather than failing).
require_nginx() {
    command -v nginx >/dev/null 2>&1 && return 0
    echo "installing nginx-light (Debian package)" >&2
    (apt-get install -y nginx-light >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y nginx-light >/dev/null 2>&1)) \
        && command -v nginx >/dev/null 2>&1
}

# Installs HAProxy (Debian package) when it is missing; exits when it cannot.
require_haproxy() {
    command -v haproxy >/dev/null 2>&1 && return 0
    echo "installing haproxy (Debian package)" >&2
    (apt-get install -y haproxy >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y haproxy >/dev/null 2>&1)) \
        || { echo "error: haproxy is required and could not be installed" >&2; exit 1; }
}

# Starts nginx answering `return 200` on 127.0.0.1:$2 with one worker pinned to cpu $3, its
# files under directory $1; prints its pid.
start_nginx() {
    local dir=$1 port=$2 cpu=$3
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 'ok'; }
    }
}
CONF
    taskset -c "$cpu" nginx -c "$dir/nginx.conf" -p "$dir" >/dev/null 2>&1 &
    echo $!
}

# Installs pgbouncer (Debian package) when it is missing; exits when it cannot.
require_pgbouncer() {
    [ -x /usr/sbin/pgbouncer ] && return 0
    echo "installing pgbouncer (Debian package)" >&2
    (apt-get install -y pgbouncer >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y pgbouncer >/dev/null 2>&1)) \
        || { echo "error: pgbouncer is required and could not be installed" >&2; exit 1; }
}

# Starts PgBouncer in transaction mode (stock settings otherwise) on 127.0.0.1:$2 in front of
# the PostgreSQL server at $3:$4, pool size $5, its files under directory $1 (as root it runs as
# the user postgres); prints its pid.
start_pgbouncer() {
    local dir=$1 port=$2 host=$3 server_port=$4 pool=$5
    mkdir -p "$dir"
    printf '"postgres" ""\n' >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<CONF
[databases]
* = host=$host port=$server_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 2000
admin_users = postgres
CONF
    local as_user=()
    if [ "$(id -u)" = 0 ]; then
        chmod 755 "$dir"; chmod 644 "$dir"/*
        as_user=(-u postgres)
    fi
    /usr/sbin/pgbouncer "${as_user[@]}" "$dir/pgbouncer.ini" >"$dir/pgbouncer.log" 2>&1 &
    echo $!
}
