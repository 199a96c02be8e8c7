#!/usr/bin/env bash
# Foundation: both daemons start on a fresh database, apply the migrations once, serve /healthz,
# /metrics and the templates, mint and honour API keys, refuse a taken port, and stop cleanly on SIGTERM.
# usage: daemons_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
. "$src/tests/integration/lib.sh"
rb_db_create

ctl_port=$(rb_free_port)
ai_port=$(rb_free_port)
apps_port=$(rb_free_port)
export RIGBOX_DATABASE_URL=$RB_DB_URL RIGBOX_CONTROL_LISTEN=127.0.0.1:$ctl_port
export RIGBOX_AI_LISTEN=127.0.0.1:$ai_port RIGBOX_APPS_LISTEN=127.0.0.1:$apps_port
control=$build/control/rigbox-control
gateway=$build/gateway/rigbox-gateway
api=http://127.0.0.1:$ctl_port/api/v1

check "control --version" bash -c "$control --version | grep -q '^rigbox-control '"
check "gateway --version" bash -c "$gateway --version | grep -q '^rigbox-gateway '"
# A start that fails (here: a migration the database refuses) is an error exit with a log line, not a crash.
mkdir -p "$RB_TMP/bad-schema"
echo "CREATE TABLE broken (" >"$RB_TMP/bad-schema/0001_broken.sql"
"$gateway" --config "$src/config/rigbox.yaml" --schema-dir "$RB_TMP/bad-schema" >"$RB_TMP/gw-bad.log" 2>&1
rc=$?
check "gateway: a failed migration exits 1 ($rc), logged" \
    bash -c "[ $rc -eq 1 ] && grep -q 'event=migration_failed' '$RB_TMP/gw-bad.log'"
"$control" --config "$src/config/rigbox.yaml" --schema-dir "$RB_TMP/bad-schema" >"$RB_TMP/ctl-bad.log" 2>&1
rc=$?
check "control: a failed migration exits 1 ($rc), logged" \
    bash -c "[ $rc -eq 1 ] && grep -q 'event=migration_failed' '$RB_TMP/ctl-bad.log'"

# A master key that is malformed, or a key file that is there but cannot be read (here: a symlink
# loop), stops both daemons; before, an unreadable file read as "no key" (BYOK off), and control
# ran on with a malformed key.
ln -sf key-loop "$RB_TMP/key-loop"
sed -e "s|master_key_file: .*|master_key_file: $RB_TMP/key-loop|" -e "s|^models: .*|models: $src/config/models.yaml|" \
    -e "s|^templates: .*|templates: $src/config/templates|" "$src/config/rigbox.yaml" >"$RB_TMP/key.yaml"
timeout 10 "$gateway" --config "$RB_TMP/key.yaml" >"$RB_TMP/gw-key.log" 2>&1
rc=$?
check "gateway: an unreadable master key file exits 1 ($rc), logged" \
    bash -c "[ $rc -eq 1 ] && grep -q 'event=master_key_invalid' '$RB_TMP/gw-key.log'"
RIGBOX_MASTER_KEY=not-hex timeout 10 "$control" --config "$src/config/rigbox.yaml" >"$RB_TMP/ctl-key.log" 2>&1
rc=$?
check "control: a malformed master key exits 1 ($rc), logged" \
    bash -c "[ $rc -eq 1 ] && grep -q 'event=master_key_invalid' '$RB_TMP/ctl-key.log'"

# A metrics token that is malformed (here: too short) stops both daemons; with none configured,
# /metrics answers 403 and the start says so.
RIGBOX_METRICS_TOKEN=short timeout 10 "$gateway" --config "$src/config/rigbox.yaml" >"$RB_TMP/gw-mt.log" 2>&1
rc=$?
check "gateway: a malformed metrics token exits 1 ($rc), logged" \
    bash -c "[ $rc -eq 1 ] && grep -q 'event=metrics_token_invalid' '$RB_TMP/gw-mt.log' && ! grep -q short '$RB_TMP/gw-mt.log'"
RIGBOX_METRICS_TOKEN=short timeout 10 "$control" --config "$src/config/rigbox.yaml" >"$RB_TMP/ctl-mt.log" 2>&1
rc=$?
check "control: a malformed metrics token exits 1 ($rc), logged" \
    bash -c "[ $rc -eq 1 ] && grep -q 'event=metrics_token_invalid' '$RB_TMP/ctl-mt.log'"
sed -e "s|metrics_token_file: .*|metrics_token_file: $RB_TMP/no-such.token|" -e "s|^models: .*|models: $src/config/models.yaml|" \
    -e "s|^templates: .*|templates: $src/config/templates|" "$src/config/rigbox.yaml" >"$RB_TMP/notoken.yaml"
nt_port=$(rb_free_port)
RIGBOX_CONTROL_LISTEN=127.0.0.1:$nt_port rb_spawn control-notoken env -u RIGBOX_METRICS_TOKEN "$control" --config "$RB_TMP/notoken.yaml"
nt_pid=$RB_LAST_PID
rb_wait_http "http://127.0.0.1:$nt_port/api/v1/healthz"
code=$(curl -s -o "$RB_TMP/m403.json" -w '%{http_code}' -H "Authorization: Bearer $RIGBOX_METRICS_TOKEN" "http://127.0.0.1:$nt_port/metrics")
check "no metrics token configured: /metrics answers 403 metrics_off, and the start logs it" \
    bash -c "[ $code = 403 ] && jq -e '.error.code == \"metrics_off\" and .error.details == null and .message == .error.message' $RB_TMP/m403.json >/dev/null && grep -q 'event=metrics_token_missing' '$RB_TMP/control-notoken.log'"
kill "$nt_pid" 2>/dev/null
wait "$nt_pid" 2>/dev/null

rb_spawn control "$control" --config "$src/config/rigbox.yaml"
ctl_pid=$RB_LAST_PID
check "control answers /api/v1/healthz" rb_wait_http "$api/healthz"
rb_spawn gateway "$gateway" --config "$src/config/rigbox.yaml"
gw_pid=$RB_LAST_PID
check "gateway answers /healthz" rb_wait_http "http://127.0.0.1:$ai_port/healthz"
check "control logs its listener" grep -q "event=listening.*:$ctl_port" "$RB_TMP/control.log"
check "gateway logs its listener" grep -q "event=listening.*:$ai_port" "$RB_TMP/gateway.log"
# mimalloc serves the gateway's allocations, except in a sanitizer build (CMakeLists.txt RB_MIMALLOC)
alloc=mimalloc
grep -q '^RB_SANITIZE:STRING=.' "$build/CMakeCache.txt" && alloc=libc
check "gateway allocates with $alloc" grep -q "event=allocator name=$alloc" "$RB_TMP/gateway.log"

migrations=$(ls "$src"/schema/[0-9][0-9][0-9][0-9]_*.sql | wc -l)
check "every migration recorded once" \
    test "$(rb_sql 'SELECT count(*) FROM schema_migrations')" = "$migrations"

t=$(curl -fsS "$api/templates")
check "five templates" test "$(jq '.items | length' <<<"$t")" = 5
for id in base dev ai-agent-starter openclaw web-fullstack; do
    check "template $id has floors and apps" jq -e --arg id "$id" \
        '.items[] | select(.id == $id) | .floors.ram_mb > 0 and .floors.vcpu_count > 0 and
         .floors.disk_size_mb > 0 and (.expected_apps | length) > 0' <<<"$t" >/dev/null
done
check "templates also under /api" bash -c "curl -fsS http://127.0.0.1:$ctl_port/api/templates | jq -e '.items|length==5' >/dev/null"
# /metrics is on the AI listener, which the workspaces' VMs reach: it needs the metrics token.
check "gateway metrics in Prometheus text, with the metrics token" bash -c "rb_metrics http://127.0.0.1:$ai_port/metrics | grep -q '^# TYPE '"
check "control metrics in Prometheus text, with the metrics token" bash -c "rb_metrics http://127.0.0.1:$ctl_port/metrics | grep -q '^# TYPE '"
for m in "http://127.0.0.1:$ai_port/metrics" "http://127.0.0.1:$ctl_port/metrics"; do
    code=$(curl -s -o "$RB_TMP/m.json" -D "$RB_TMP/m.hdr" -w '%{http_code}' "$m")
    check "$m without a token: 401, no metric in the body" \
        bash -c "[ $code = 401 ] && grep -qi '^www-authenticate: Bearer' $RB_TMP/m.hdr && jq -e '.error.code == \"unauthorized\"' $RB_TMP/m.json >/dev/null && ! grep -q rigbox_ $RB_TMP/m.json"
    code=$(curl -s -o "$RB_TMP/m.json" -w '%{http_code}' -H "Authorization: Bearer ${RIGBOX_METRICS_TOKEN}x" "$m")
    check "$m with a wrong token: 401" test "$code" = 401
done
code=$(curl -s -o "$RB_TMP/404.json" -w '%{http_code}' "$api/nope")
check "unknown endpoint is 404 with the error shape" \
    bash -c "[ $code = 404 ] && jq -e '.error.code==\"not_found\" and .message' $RB_TMP/404.json >/dev/null"

code=$(curl -s -o "$RB_TMP/404b.json" -w '%{http_code}' "http://127.0.0.1:$ctl_port/nope")
check "a path outside /api is 404 with the error shape too" \
    bash -c "[ $code = 404 ] && jq -e '.error.code==\"not_found\"' $RB_TMP/404b.json >/dev/null"
head -c $((1024 * 1024 + 1)) /dev/zero | tr '\0' a >"$RB_TMP/big.txt"
code=$(curl -s -o "$RB_TMP/413.json" -w '%{http_code}' -X POST --data-binary @"$RB_TMP/big.txt" "$api/users")
check "a body over the API's 1 MiB is 413 with the error shape" \
    bash -c "[ $code = 413 ] && jq -e '.error.code==\"request_too_large\"' $RB_TMP/413.json >/dev/null"
code=$(curl -s -o "$RB_TMP/gw404.json" -w '%{http_code}' -X POST "http://127.0.0.1:$ai_port/v1/nope")
check "an unknown gateway route is 404 in OpenAI's error shape" \
    bash -c "[ $code = 404 ] && jq -e '.error.type==\"invalid_request_error\" and .error.code==\"not_found\" and .error.message==\"Invalid URL (POST /v1/nope)\"' $RB_TMP/gw404.json >/dev/null"

code=$(curl -s -o "$RB_TMP/401.json" -w '%{http_code}' "$api/api-keys")
check "no key is 401" test "$code" = 401
key=$("$control" --config "$src/config/rigbox.yaml" admin create-key --role admin 2>/dev/null)
check "admin create-key prints an rb_ key" bash -c "[[ '$key' =~ ^rb_[0-9A-Za-z]{40}$ ]]"
# key_hash holds 32 bytes (CHECK), so it cannot hold the 43-character key: look in the whole row,
# and for the key's SHA-256
check "the key is stored only as a hash" \
    test "$(rb_sql "SELECT count(*) FILTER (WHERE key_hash = sha256('$key'::bytea)) || '|' ||
                           count(*) FILTER (WHERE position('$key' in k::text) > 0) FROM api_keys k")" = "1|0"
code=$(curl -s -o "$RB_TMP/keys.json" -w '%{http_code}' -H "Authorization: Bearer $key" "$api/api-keys")
check "the admin key authenticates" bash -c "[ $code = 200 ] && jq -e '.items|length==1' $RB_TMP/keys.json >/dev/null"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${key}x" "$api/api-keys")
check "a wrong key is 401" test "$code" = 401
code=$(curl -s -o "$RB_TMP/user.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
    -X POST "$api/users" -d '{"email":"Alice@Example.com"}')
check "admin creates a user (201, lowercased email, u- id)" bash -c \
    "[ $code = 201 ] && jq -e '.user.email==\"alice@example.com\" and (.user.id|test(\"^u-[0-9a-z]{8}$\"))' $RB_TMP/user.json >/dev/null"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" -X POST "$api/users" \
    -d '{"email":"alice@example.com"}')
check "a second user with that email is 409" test "$code" = 409
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" -X POST "$api/users" -d '{"email":')
check "bad JSON is 400" test "$code" = 400

# A second control on the same port must refuse to start, and must not apply migrations twice.
"$control" --config "$src/config/rigbox.yaml" >"$RB_TMP/control2.log" 2>&1
rc=$?
check "a taken port is refused with a clear message" \
    bash -c "[ $rc -ne 0 ] && grep -q 'cannot listen on 127.0.0.1:$ctl_port' $RB_TMP/control2.log"
check "a restart applies no migration" grep -q "event=migrations applied=0" "$RB_TMP/control2.log"

# Open files: the gateway raises its soft limit to the hard one (services often start at 1024;
# every call holds two descriptors). Out of descriptors, it stops accepting for a moment instead of
# spinning on the readable listener, and serves again once connections close.
lim_port=$(rb_free_port)
lim_apps=$(rb_free_port)
(ulimit -S -n 40 && RIGBOX_AI_LISTEN=127.0.0.1:$lim_port RIGBOX_APPS_LISTEN=127.0.0.1:$lim_apps \
    RIGBOX_SPOOL_DIR=$RB_TMP/spool-lim exec "$gateway" --config "$src/config/rigbox.yaml") >"$RB_TMP/gw-lim.log" 2>&1 &
lim_pid=$!
RB_PIDS+=("$lim_pid")
rb_wait_http "http://127.0.0.1:$lim_port/healthz"
check "a gateway started at a soft limit of 40 open files raises it to the hard limit ($(ulimit -H -n))" \
    grep -q "event=fd_limit server=rigbox-gateway open_files=$(ulimit -H -n)" "$RB_TMP/gw-lim.log"
kill "$lim_pid" 2>/dev/null
wait "$lim_pid" 2>/dev/null
(ulimit -n 40 && RIGBOX_AI_LISTEN=127.0.0.1:$lim_port RIGBOX_APPS_LISTEN=127.0.0.1:$lim_apps \
    RIGBOX_SPOOL_DIR=$RB_TMP/spool-lim exec "$gateway" --config "$src/config/rigbox.yaml") >"$RB_TMP/gw-lim.log" 2>&1 &
lim_pid=$!
RB_PIDS+=("$lim_pid")
rb_wait_http "http://127.0.0.1:$lim_port/healthz"
cpu() { awk '{ print $14 + $15 }' "/proc/$lim_pid/stat"; } # clock ticks used so far
python3 - "$lim_port" "$RB_TMP/held" <<'PY' &
import socket, sys, time, os
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(60)]
open(sys.argv[2], "w").close()
time.sleep(3)
PY
holder=$!
for _ in $(seq 50); do [[ -f $RB_TMP/held ]] && break; sleep 0.1; done
c0=$(cpu)
sleep 2
c1=$(cpu)
check "out of descriptors (hard limit 40, 60 connections): accepting pauses, the loop does not spin ($((c1 - c0)) ticks in 2 s)" \
    bash -c "[ $((c1 - c0)) -lt $(($(getconf CLK_TCK) / 2)) ] && grep -q 'event=accept_paused' '$RB_TMP/gw-lim.log'"
wait "$holder"
check "and it serves again once they closed" rb_wait_http "http://127.0.0.1:$lim_port/healthz"
kill "$lim_pid" 2>/dev/null
wait "$lim_pid" 2>/dev/null

kill -TERM "$ctl_pid" "$gw_pid"
wait "$ctl_pid"
rc1=$?
wait "$gw_pid"
rc2=$?
check "control exits 0 on SIGTERM" test "$rc1" = 0
check "gateway exits 0 on SIGTERM" test "$rc2" = 0
RB_PIDS=()
rb_finish
