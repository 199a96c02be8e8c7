#!/usr/bin/env bash
# tools/lib/pg.sh: a private PostgreSQL cluster in one directory, for tests and tools/up.
#
#   tools/lib/pg.sh start  DIR [--durable]   initdb on first use, start (idempotent), create db "rigbox"
#   tools/lib/pg.sh stop   DIR               pg_ctl -m fast stop (ok when already stopped)
#   tools/lib/pg.sh status DIR               prints running|stopped|absent; exit 0|3|4
#   tools/lib/pg.sh url    DIR               prints the libpq conninfo of database rigbox
#   tools/lib/pg.sh host   DIR               prints the socket directory (what RB_TEST_PGHOST wants)
#   tools/lib/pg.sh psql   DIR [psql args]   opens psql on database rigbox
#
# Sourced (`. tools/lib/pg.sh`), it defines rb_pg_start, rb_pg_stop, rb_pg_status, rb_pg_url,
# rb_pg_host, rb_pg_psql with the same arguments, and sets no shell options in the caller.
#
# Layout of DIR: data/ (the cluster), run/ (the unix socket), server.log, .pg.lock (serialises
# concurrent start/stop). No TCP port is opened (listen_addresses=''), so parallel jobs never collide.
#
# Security: authentication is "trust", so whoever can reach the socket is superuser. DIR is owned by
# postgres with mode 0700: only root and postgres can reach the socket. Keep it that way.
#
# Root: PostgreSQL refuses to run as root, so the server runs as the `postgres` user (runuser). That
# user must be able to traverse every parent of DIR. We do NOT silently loosen permissions: when a
# parent (e.g. /root) is not traversable, start fails and names it; set RB_PG_FIX_PERMS=1 to let this
# script add o+x (traverse only, not list or read) to exactly those parents.
#
# Durability: without --durable the cluster runs with fsync=off, synchronous_commit=off,
# full_page_writes=off (fast, for tests: a power loss may corrupt it). tools/up passes --durable.
#
# Environment: RB_PG_BIN overrides the directory of the PostgreSQL binaries (default: the highest
# version under /usr/lib/postgresql/*/bin).

RB_PG_START_TIMEOUT_S=${RB_PG_START_TIMEOUT_S:-30}
RB_PG_SOCKET_PATH_MAX=107 # sun_path is 108 bytes with the NUL

rb_pg__err() {
    echo "pg.sh: $*" >&2
}

# Prints the PostgreSQL bin directory, or fails.
rb_pg_bin() {
    local d best="" bestv=0 v
    if [[ -n "${RB_PG_BIN:-}" ]]; then
        if [[ ! -x "$RB_PG_BIN/postgres" ]]; then
            rb_pg__err "RB_PG_BIN=$RB_PG_BIN has no postgres binary"
            return 1
        fi
        echo "$RB_PG_BIN"
        return 0
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
        v=${d#/usr/lib/postgresql/}
        v=${v%%/*}
        [[ "$v" =~ ^[0-9]+$ ]] || continue
        if ((v > bestv)); then
            bestv=$v
            best=$d
        fi
    done
    if [[ -z "$best" ]]; then
        rb_pg__err "no PostgreSQL server found under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        return 1
    fi
    echo "$best"
}

# Makes DIR absolute and checks it is usable; prints the absolute path.
rb_pg__dir() {
    local dir=$1
    if [[ -z "$dir" ]]; then
        rb_pg__err "missing DIR"
        return 1
    fi
    case "$dir" in
    /*) ;;
    *) dir="$PWD/$dir" ;;
    esac
    dir=${dir%/}
    # pg_ctl passes -o through a shell: refuse characters that would need quoting.
    if [[ ! "$dir" =~ ^[A-Za-z0-9/._+-]+$ ]]; then
        rb_pg__err "DIR '$dir' has characters other than [A-Za-z0-9/._+-]; pick a simpler path"
        return 1
    fi
    if ((${#dir} + 21 > RB_PG_SOCKET_PATH_MAX)); then
        rb_pg__err "DIR '$dir' is too long: the socket path $dir/run/.s.PGSQL.5432 must fit in $RB_PG_SOCKET_PATH_MAX bytes"
        return 1
    fi
    echo "$dir"
}

rb_pg__as_postgres() {
    runuser -u postgres -- "$@"
}

# Every parent of DIR must be traversable by postgres (see the header).
rb_pg__check_parents() {
    local dir=$1 p blocked=()
    p=$(dirname "$dir")
    while :; do
        # Parents that do not exist yet are made by mkdir -p with mode 0755: traversable.
        if [[ -e "$p" ]] && ! rb_pg__as_postgres test -x "$p"; then
            blocked+=("$p")
        fi
        [[ "$p" == "/" ]] && break
        p=$(dirname "$p")
    done
    ((${#blocked[@]} == 0)) && return 0
    if [[ "${RB_PG_FIX_PERMS:-0}" == 1 ]]; then
        echo "pg.sh: RB_PG_FIX_PERMS=1: chmod o+x ${blocked[*]}" >&2
        chmod o+x "${blocked[@]}" || return 1
        return 0
    fi
    rb_pg__err "user postgres cannot traverse ${blocked[*]} (a parent of $dir)."
    rb_pg__err "Choose a DIR under /tmp or /var, or run: chmod o+x ${blocked[*]}"
    rb_pg__err "(or set RB_PG_FIX_PERMS=1 to let this script do exactly that)"
    return 1
}

# pg_ctl status as postgres: 0 running, 3 stopped, 4 no cluster.
rb_pg__ctl_status() {
    local dir=$1 bin
    [[ -f "$dir/data/PG_VERSION" ]] || return 4
    bin=$(rb_pg_bin) || return 1
    rb_pg__as_postgres "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1
}

rb_pg__initdb() {
    local dir=$1 bin=$2 durable=$3 ver sync_opt=--no-sync
    if [[ -f "$dir/data/PG_VERSION" ]]; then
        ver=$(<"$dir/data/PG_VERSION")
        if [[ "$bin" != */"$ver"/bin && -z "${RB_PG_BIN:-}" ]]; then
            rb_pg__err "$dir/data was made by PostgreSQL $ver but the server found is $bin"
            return 1
        fi
        return 0
    fi
    if [[ -e "$dir/data" ]]; then
        rb_pg__err "$dir/data exists but holds no cluster (no PG_VERSION; an interrupted initdb?)."
        rb_pg__err "Remove it (rm -rf $dir/data) and start again."
        return 1
    fi
    [[ "$durable" == 1 ]] && sync_opt=""
    if ! rb_pg__as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 $sync_opt >"$dir/initdb.log" 2>&1; then
        rb_pg__err "initdb failed; $dir/initdb.log says:"
        tail -n 20 "$dir/initdb.log" >&2
        return 1
    fi
}

rb_pg__ensure_db() {
    local dir=$1 bin=$2 have
    have=$("$bin/psql" -X -q -t -A -h "$dir/run" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = 'rigbox'") || return 1
    [[ "$have" == 1 ]] && return 0
    if ! "$bin/psql" -X -q -h "$dir/run" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE rigbox" >/dev/null 2>"$dir/createdb.err"; then
        # Lost a race with another start? Then it exists now.
        have=$("$bin/psql" -X -q -t -A -h "$dir/run" -U postgres -d postgres \
            -c "SELECT 1 FROM pg_database WHERE datname = 'rigbox'")
        [[ "$have" == 1 ]] && return 0
        rb_pg__err "CREATE DATABASE rigbox failed: $(cat "$dir/createdb.err")"
        return 1
    fi
}

# Waits while the server is "running" but not yet (or no longer) answering: a server that is starting
# up, or one whose postmaster was just killed (its pid lingers until reaped). Returns 0 when it answers,
# 3 when it is not running, 1 on timeout.
rb_pg__wait_ready() {
    local dir=$1 bin=$2 i st
    for ((i = 0; i < RB_PG_START_TIMEOUT_S * 5; i++)); do
        st=0
        rb_pg__ctl_status "$dir" || st=$?
        ((st != 0)) && return 3
        "$bin/pg_isready" -q -h "$dir/run" -U postgres -d postgres -t 2 && return 0
        sleep 0.2
    done
    return 1
}

rb_pg__start_locked() {
    local dir=$1 durable=$2 bin opts fs st=0
    bin=$(rb_pg_bin) || return 1
    rb_pg__initdb "$dir" "$bin" "$durable" || return 1
    mkdir -p "$dir/run" && chown postgres:postgres "$dir/run" && chmod 700 "$dir/run" || return 1
    rb_pg__wait_ready "$dir" "$bin" || st=$?
    if ((st == 0)); then
        fs=$("$bin/psql" -X -q -t -A -h "$dir/run" -U postgres -d postgres -c "SHOW fsync" 2>/dev/null)
        if [[ "$durable" == 1 && "$fs" == off ]]; then
            echo "pg.sh: warning: $dir is already running with fsync=off (not durable); stop it first" >&2
        fi
        echo "pg.sh: $dir already running" >&2
    elif ((st == 3)); then
        opts="-k $dir/run -c listen_addresses=''"
        if [[ "$durable" != 1 ]]; then
            opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        fi
        # pg_ctl removes a stale postmaster.pid itself (a server killed with -9). 9>&-: the server
        # must not inherit the lock's fd, or it would hold .pg.lock for its whole life.
        if ! rb_pg__as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
            -t "$RB_PG_START_TIMEOUT_S" -o "$opts" start >"$dir/pg_ctl.out" 2>&1 9>&-; then
            rb_pg__err "the server in $dir did not start. pg_ctl said:"
            tail -n 5 "$dir/pg_ctl.out" >&2
            rb_pg__err "last lines of $dir/server.log:"
            tail -n 30 "$dir/server.log" >&2 2>/dev/null
            return 1
        fi
    else
        rb_pg__err "$dir has a server process that does not answer on $dir/run; last lines of $dir/server.log:"
        tail -n 30 "$dir/server.log" >&2 2>/dev/null
        return 1
    fi
    rb_pg__ensure_db "$dir" "$bin"
}

# rb_pg_start DIR [--durable]
rb_pg_start() {
    local dir durable=0 arg
    dir=$(rb_pg__dir "${1:-}") || return 1
    shift
    for arg in "$@"; do
        case "$arg" in
        --durable) durable=1 ;;
        *)
            rb_pg__err "start: unknown option $arg"
            return 1
            ;;
        esac
    done
    if [[ $(id -u) != 0 ]]; then
        rb_pg__err "run as root (the server itself runs as postgres through runuser)"
        return 1
    fi
    if ! id postgres >/dev/null 2>&1; then
        rb_pg__err "no 'postgres' user (apt-get install postgresql creates it)"
        return 1
    fi
    rb_pg_bin >/dev/null || return 1
    rb_pg__check_parents "$dir" || return 1
    mkdir -p "$dir" || return 1
    chown postgres:postgres "$dir" && chmod 700 "$dir" || return 1
    (
        flock -w "$RB_PG_START_TIMEOUT_S" 9 || {
            rb_pg__err "timed out waiting for $dir/.pg.lock"
            exit 1
        }
        rb_pg__start_locked "$dir" "$durable"
    ) 9>"$dir/.pg.lock"
}

# rb_pg_stop DIR
rb_pg_stop() {
    local dir bin rc=0
    dir=$(rb_pg__dir "${1:-}") || return 1
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        echo "pg.sh: no cluster in $dir" >&2
        return 0
    fi
    bin=$(rb_pg_bin) || return 1
    (
        flock -w "$RB_PG_START_TIMEOUT_S" 9 || exit 1
        if ! rb_pg__ctl_status "$dir"; then
            echo "pg.sh: $dir not running" >&2
            exit 0
        fi
        rb_pg__as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w -t "$RB_PG_START_TIMEOUT_S" \
            stop >/dev/null
    ) 9>"$dir/.pg.lock" || rc=$?
    if ((rc != 0)); then
        rb_pg__err "stopping $dir failed; last lines of $dir/server.log:"
        tail -n 20 "$dir/server.log" >&2 2>/dev/null
    fi
    return $rc
}

# rb_pg_status DIR: prints running|stopped|absent, returns 0|3|4.
rb_pg_status() {
    local dir rc=0
    dir=$(rb_pg__dir "${1:-}") || return 1
    rb_pg__ctl_status "$dir" || rc=$?
    case $rc in
    0) echo running ;;
    3) echo stopped ;;
    4) echo absent ;;
    *) echo "unknown (pg_ctl status exit $rc)" ;;
    esac
    return $rc
}

# rb_pg_url DIR: the libpq conninfo of database rigbox.
rb_pg_url() {
    local dir
    dir=$(rb_pg__dir "${1:-}") || return 1
    echo "host=$dir/run user=postgres dbname=rigbox"
}

# rb_pg_host DIR: the socket directory (export RB_TEST_PGHOST=$(tools/lib/pg.sh host DIR)).
rb_pg_host() {
    local dir
    dir=$(rb_pg__dir "${1:-}") || return 1
    echo "$dir/run"
}

# rb_pg_psql DIR [args]: psql on database rigbox.
rb_pg_psql() {
    local dir bin
    dir=$(rb_pg__dir "${1:-}") || return 1
    shift
    bin=$(rb_pg_bin) || return 1
    "$bin/psql" -X -h "$dir/run" -U postgres -d rigbox "$@"
}

rb_pg__usage() {
    sed -n '4,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -u
    cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
    start) rb_pg_start "$@" ;;
    stop) rb_pg_stop "$@" ;;
    status) rb_pg_status "$@" ;;
    url) rb_pg_url "$@" ;;
    host) rb_pg_host "$@" ;;
    psql) rb_pg_psql "$@" ;;
    *)
        rb_pg__usage
        exit 2
        ;;
    esac
fi
