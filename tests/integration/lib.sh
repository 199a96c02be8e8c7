# tests/integration/lib.sh: helpers for integration tests written in bash (sourced).
#
# Needs RB_TEST_PGHOST (the socket directory of a running test cluster; tools/test sets it). Each test
# gets its own database (rb_db_create) and its own free loopback ports, so tests may run in parallel.
# Results: ok/fail print one line each; rb_finish prints "N passed, N failed" and sets the exit code.

RB_PASSED=0
RB_FAILED=0
RB_PIDS=()
RB_TMP=$(mktemp -d /tmp/rigbox-it.XXXXXX)

# The daemons started by a test read their /metrics token from here; rb_metrics URL fetches one.
export RIGBOX_METRICS_TOKEN=rb-test-metrics-token-0123456789
rb_metrics() { curl -fsS -H "Authorization: Bearer $RIGBOX_METRICS_TOKEN" "$1"; }
export -f rb_metrics # for check ... bash -c

ok() { RB_PASSED=$((RB_PASSED + 1)); echo "ok   - $*"; }
fail() { RB_FAILED=$((RB_FAILED + 1)); echo "FAIL - $*"; }
# check "description" command...: passes when the command succeeds (its stdout is dropped).
check() { local d=$1; shift; if "$@" >/dev/null; then ok "$d"; else fail "$d"; fi; }

rb_cleanup() {
    local pid
    for pid in "${RB_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${RB_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    [[ -n ${RB_DB:-} ]] && psql -h "$RB_TEST_PGHOST" -U postgres -d postgres -qAt \
        -c "DROP DATABASE IF EXISTS $RB_DB WITH (FORCE)" >/dev/null 2>&1
    [[ -f $RB_TMP/claimed-ports ]] && while read -r p; do rmdir "$RB_PORT_CLAIMS/$p" 2>/dev/null; done <"$RB_TMP/claimed-ports"
    rm -rf "$RB_TMP"
}
trap rb_cleanup EXIT

rb_finish() {
    echo "$RB_PASSED passed, $RB_FAILED failed"
    [[ $RB_FAILED -eq 0 ]]
}

rb_require_pg() {
    if [[ -z ${RB_TEST_PGHOST:-} ]]; then
        echo "RB_TEST_PGHOST is not set: run through tools/test, or start tools/lib/pg.sh" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
}

# Creates a fresh database; sets RB_DB and RB_DB_URL.
rb_db_create() {
    rb_require_pg
    RB_DB="rbtest_$(date +%s%N | tail -c 10)_$$"
    psql -h "$RB_TEST_PGHOST" -U postgres -d postgres -qAt -c "CREATE DATABASE $RB_DB" >/dev/null
    RB_DB_URL="host=$RB_TEST_PGHOST user=postgres dbname=$RB_DB"
}

rb_sql() { psql -h "$RB_TEST_PGHOST" -U postgres -d "$RB_DB" -qAt -v ON_ERROR_STOP=1 -c "$1"; }

# Prints a loopback TCP port nobody listens on, below the kernel's ephemeral range (32768+): a port
# in that range may be the local end of some outgoing connection, and then bind() fails later. Each
# port is claimed with an atomic mkdir under RB_PORT_CLAIMS until rb_cleanup, so tests running at the
# same time (and one test's several ports) never get the same one.
RB_PORT_CLAIMS=/tmp/rigbox-port-claims
rb_free_port() {
    local p
    mkdir -p "$RB_PORT_CLAIMS"
    while :; do
        p=$((10000 + RANDOM % 22000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        mkdir "$RB_PORT_CLAIMS/$p" 2>/dev/null || continue
        echo "$p" >>"$RB_TMP/claimed-ports"
        echo "$p"
        return
    done
}

# rb_spawn NAME cmd...: starts a process in the background, logging to $RB_TMP/NAME.log.
rb_spawn() {
    local name=$1
    shift
    "$@" >"$RB_TMP/$name.log" 2>&1 &
    RB_PIDS+=($!)
    RB_LAST_PID=$!
}

# rb_wait_http URL [tries]: waits until URL answers 2xx (0.1 s steps).
rb_wait_http() {
    local i
    for ((i = 0; i < ${2:-100}; i++)); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
