#!/usr/bin/env bash
# credits_gw_crash_test.sh: nothing lost, nothing billed twice (issue 4).
#   credits_gw_crash_test.sh GATEWAY_BIN MOCK_BIN SOURCE_DIR
# 1. SIGKILL a gateway while streams are in flight and completed records still sit in its spool
#    (writer_flush_ms 4000: well past the ~1 s that the 20 requests and the streams' start take,
#    even on a loaded machine), restart it: the spool is replayed, every served request has exactly one
#    usage row and one usage transfer, and so does each stream the kill cut (from the inflight file:
#    error_code gateway_restarted, the input as the provider stated it or estimated, the output from
#    what it had streamed, billed from its lease);
#    the killed process's leases expire and the sweeper closes them.
# 2. Replay the whole spool again (checkpoint reset): nothing is billed twice.
# 3. Stop PostgreSQL (pg_ctl stop -m fast) for several seconds under load: requests keep being
#    served within the existing lease, a request that needs a new lease gets 503
#    credits_unavailable, and after the restart every served request is in the ledger once.
# Always runs its own throwaway PostgreSQL cluster (it stops it), removed at the end.
set -u
GW_BIN=$1 MOCK_BIN=$2 SRC=$3
. "$SRC/tools/lib/pg.sh"
PGTOP=$(mktemp -d /tmp/rigbox-cgwcrash.XXXXXX)
chmod 755 "$PGTOP"
PGDIR=$PGTOP/pg
rb_pg_start "$PGDIR" >/dev/null 2>&1 || { echo "cannot start PostgreSQL"; echo "0 passed, 1 failed"; exit 1; }
export RB_TEST_PGHOST=$(rb_pg_host "$PGDIR")
. "$SRC/tests/integration/lib.sh"
rb_db_create
. "$SRC/tests/integration/credits_gw_lib.sh"
cg_start_mock
trap 'umount "$RB_TMP/spool-gw-f" 2>/dev/null; rb_pg_start "$PGDIR" >/dev/null 2>&1; rb_cleanup; rb_pg_stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGTOP"' EXIT

PORT=$(rb_free_port)
export CG_LIMITS="writer_flush_ms: 4000"
cg_gateway gw-k "$PORT" RIGBOX_LEASE_WAIT_MS=1500
PID=$CG_PID
kill -0 "$PID" || { fail "gateway runs"; rb_finish; exit 1; }
TOK1=$(cg_user 1)
TOK2=$(cg_user 2)
cg_grant u-cguser01 100000000 g-k-1
GW=http://127.0.0.1:$PORT
CHAT='{"model":"t-chat","messages":[{"role":"user","content":"hello"}]}'
# req TOKEN [curl args…]: one chat call; appends "code rid" to $RB_TMP/reqs.
req() {
    local tok=$1 code rid
    shift
    code=$(curl -sS -o "$RB_TMP/out" -D "$RB_TMP/hdr" -w '%{http_code}' --max-time 10 "$GW/v1/chat/completions" \
        -H "Authorization: Bearer $tok" -H 'content-type: application/json' -d "$CHAT" "$@" 2>/dev/null)
    rid=$(grep -i '^x-rigbox-request-id:' "$RB_TMP/hdr" 2>/dev/null | tr -d '\r' | cut -d' ' -f2)
    echo "$code $rid" >>"$RB_TMP/reqs"
    echo "$code"
}
served_ids() { awk '$1 == 200 {print $2}' "$RB_TMP/reqs" >"$RB_TMP/served.ids"; }

# ---- 1. SIGKILL with records in the spool and streams in flight --------------------------------
: >"$RB_TMP/reqs"
for i in $(seq 1 20); do req "$TOK1" >/dev/null; done
for i in $(seq 1 6); do
    curl -sS -N -o "$RB_TMP/stream$i" -D "$RB_TMP/stream$i.hdr" "$GW/v1/chat/completions" -H "Authorization: Bearer $TOK1" \
        -H 'content-type: application/json' -H 'X-Mock-Behavior: slow=200,chunks=20' \
        -d '{"model":"t-chat","stream":true,"messages":[{"role":"user","content":"x"}]}' 2>/dev/null &
done
# and one Anthropic stream with a cached prompt: message_start states its input buckets
curl -sS -N -o "$RB_TMP/stream7" -D "$RB_TMP/stream7.hdr" "$GW/v1/messages" -H "x-api-key: $TOK1" \
    -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
    -H 'X-Mock-Behavior: slow=200,chunks=20,usage=prompt:40,cached:30000' \
    -d '{"model":"t-claude","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"x"}]}' 2>/dev/null &
sleep 0.7
UNPOSTED=$(rb_sql "SELECT 20 - count(*) FROM usage_events")
kill -KILL "$PID"
wait "$PID" 2>/dev/null
wait_streams() { local p; for p in $(jobs -p); do [[ " ${RB_PIDS[*]} " == *" $p "* ]] || wait "$p"; done; }
wait_streams
served_ids
check "kill: 20 requests served before the kill" test "$(wc -l <"$RB_TMP/served.ids")" = 20
check "kill: some of them were not yet in PostgreSQL ($UNPOSTED)" test "$UNPOSTED" -gt 0
check "kill: the streams in flight were cut" bash -c "! grep -q '\[DONE\]\|message_stop' '$RB_TMP'/stream?"
cat "$RB_TMP"/stream?.hdr | grep -i '^x-rigbox-request-id:' | tr -d '\r' | cut -d' ' -f2 >"$RB_TMP/cut.ids"
check "kill: the 7 cut streams had started, with a 200 (their request ids)" \
    test "$(sort -u "$RB_TMP/cut.ids" | wc -l):$(head -qn1 "$RB_TMP"/stream?.hdr | grep -c '^HTTP/1.1 200')" = 7:7
ANT_ID=$(grep -i '^x-rigbox-request-id:' "$RB_TMP/stream7.hdr" | tr -d '\r' | cut -d' ' -f2)
cg_gateway gw-k "$PORT" RIGBOX_LEASE_WAIT_MS=1500
PID=$CG_PID
check "restart: the spool is replayed" grep -q 'event=spool_replay' "$RB_TMP/gw-k.log"
check "restart: the 7 cut streams are recovered from the inflight file" grep -q 'event=inflight_recovered records=7 ' "$RB_TMP/gw-k.log"
cg_wait_sql "SELECT count(*) FROM usage_events" 27 100
check "restart: every served request has one usage row and one usage transfer" cg_served_billed_once "$RB_TMP/served.ids"
check "restart: each cut stream has one usage row and one usage transfer" cg_served_billed_once "$RB_TMP/cut.ids" error
CUT_IN="$(sed "s/.*/'&'/" "$RB_TMP/cut.ids" | paste -sd, -)"
check "restart: a cut stream's row: error gateway_restarted, usage estimated from the bytes streamed, billed" \
    test "$(rb_sql "SELECT count(*) FROM usage_events WHERE request_id IN ($CUT_IN) AND status = 'error' AND error_code = 'gateway_restarted' AND usage_source = 'estimate' AND input_uncached > 0 AND output > 0 AND cost_micro > 0 AND billed")" = 7
check "restart: the cut Anthropic stream's input is as message_start stated it (40 uncached, 30000 cached), not estimated" \
    test "$(rb_sql "SELECT input_uncached || ':' || cache_read FROM usage_events WHERE request_id = '$ANT_ID'")" = 40:30000
check "restart: no other row (27 = 20 served + 7 cut)" test "$(rb_sql "SELECT count(*) FROM usage_events")" = 27
check "restart: ledger identity" cg_identity_ok u-cguser01
sleep 10.5 # lease_ttl_s 10: the killed process stopped renewing
# The restarted gateway holds no lease now (idle ones are returned): a live one is taken by hand, so
# that a sweep closing every open lease shows.
EXPIRED=$(rb_sql "SELECT count(*) FROM credit_leases WHERE closed_at IS NULL AND expires_at < now()")
rb_sql "SELECT rb_lease_take('probe-live', 'gw-probe', 'u-cguser01', 1000, 60)" >/dev/null
rb_sql "SELECT rb_lease_sweep()" >/dev/null
OPEN=$(rb_sql "SELECT string_agg(id, ',') FROM credit_leases WHERE closed_at IS NULL AND (id = 'probe-live' OR expires_at < now())")
check "sweep: the killed process's expired leases ($EXPIRED) are closed, a live one is not (open: $OPEN)" \
    test "$EXPIRED" -ge 1 -a "$OPEN" = probe-live
check "sweep: pending = what live leases still reserve" test "$(rb_sql "SELECT a.debits_pending = (SELECT coalesce(sum(amount_micro - used_micro), 0) FROM credit_leases l WHERE l.user_id = a.user_id AND closed_at IS NULL) FROM credit_accounts a WHERE user_id = 'u-cguser01'")" = t
rb_sql "SELECT rb_lease_return('probe-live')" >/dev/null

# ---- 2. replaying everything again bills nothing twice ----------------------------------------
for i in $(seq 1 5); do req "$TOK1" >/dev/null; done
served_ids
kill -TERM "$PID"
wait "$PID" 2>/dev/null
POSTED=$(rb_sql "SELECT debits_posted FROM credit_accounts WHERE user_id = 'u-cguser01'")
ROWS=$(rb_sql "SELECT count(*) FROM usage_events")
printf '%020d\n' 0 >"$RB_TMP/spool-gw-k/checkpoint"
cg_gateway gw-k "$PORT" RIGBOX_LEASE_WAIT_MS=1500
PID=$CG_PID
# the replay is posted once the writer's batch is due (writer_flush_ms 4000): wait for the checkpoint
# to reach the spool's end (the ledger already holds every row, so waiting for rows proves nothing)
spool_committed() { [[ $(stat -c %s "$RB_TMP/spool-gw-k/usage.spool") == $((10#$(head -c 20 "$RB_TMP/spool-gw-k/checkpoint"))) ]]; }
for i in $(seq 1 150); do spool_committed && break; sleep 0.1; done
check "replay from 0: the whole spool posted again" spool_committed
check "replay from 0: no record refused (nothing set aside in rejected.spool)" test ! -s "$RB_TMP/spool-gw-k/rejected.spool"
check "replay from 0: no new row, no new debit" test "$(rb_sql "SELECT (SELECT count(*) FROM usage_events) || ':' || (SELECT debits_posted FROM credit_accounts WHERE user_id = 'u-cguser01')")" = "$ROWS:$POSTED"
check "replay from 0: every served request still billed once" cg_served_billed_once "$RB_TMP/served.ids"

# ---- 3. PostgreSQL down under load ------------------------------------------------------------
req "$TOK1" >/dev/null # the lease is warm
req "$TOK2" -H 'X-Rigbox-Provider-Key: sk-own' >/dev/null # u2's token is cached (BYOK: no lease)
sed -i '$d' "$RB_TMP/reqs" # (not billed: kept out of the served list)
cg_grant u-cguser02 100000000 g-k-2
rb_pg_stop "$PGDIR" >/dev/null 2>&1
DOWN_OK=0
for i in $(seq 1 15); do [[ $(req "$TOK1") == 200 ]] && DOWN_OK=$((DOWN_OK + 1)); sleep 0.2; done
st=$(req "$TOK2")
check "outage: requests within the lease are served ($DOWN_OK/15)" test "$DOWN_OK" = 15
check "outage: a request needing a new lease: 503 credits_unavailable" test "$st:$(jq -r .error.code "$RB_TMP/out")" = "503:credits_unavailable"
rb_pg_start "$PGDIR" >/dev/null 2>&1
for i in $(seq 1 5); do req "$TOK1" >/dev/null; done
served_ids
N=$(wc -l <"$RB_TMP/served.ids")
cg_wait_sql "SELECT count(*) FROM usage_events WHERE request_id IN ($(sed "s/.*/'&'/" "$RB_TMP/served.ids" | paste -sd, -))" "$N" 150
check "outage over: every served request ($N) has one usage row and one usage transfer" cg_served_billed_once "$RB_TMP/served.ids"
check "outage over: the refused request is recorded too" test "$(rb_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser02' AND error_code = 'credits_unavailable'")" = 1
kill -TERM "$PID"
wait "$PID" 2>/dev/null
check "stop: the spool is fully committed" spool_committed
check "stop: no record refused" test ! -s "$RB_TMP/spool-gw-k/rejected.spool"
check "stop: ledger identity (u1)" cg_identity_ok u-cguser01
check "stop: balance = granted - Σ usage - live reserve" test "$(rb_sql "SELECT credits_posted - debits_posted - debits_pending = 100000000 - (SELECT sum(amount_micro) FROM credit_transfers WHERE user_id = 'u-cguser01' AND kind = 'usage') - (SELECT coalesce(sum(amount_micro - used_micro), 0) FROM credit_leases WHERE user_id = 'u-cguser01' AND closed_at IS NULL) FROM credit_accounts WHERE user_id = 'u-cguser01'")" = t

# ---- 4. The spool's disk full ----------------------------------------------------------------
# The spool on a small tmpfs. A disk without room for the inflight file fails the start (its
# blocks are allocated then: a store into a hole of its shared mapping on a full disk was a SIGBUS
# mid-call). With the file in place and 64 KB left, 800 calls write ~170 KB of records: a spool
# whose records are all committed is emptied (it was kept up to 64 MB, the disk filled, the
# gateway died of SIGBUS and every later record was dropped); a record that still cannot be written
# refuses new calls for a moment (503 ledger_backlog) instead of serving calls it cannot record;
# and after a stop every served call has exactly one usage row.
FDIR=$RB_TMP/spool-gw-f
mkdir -p "$FDIR"
if ! mount -t tmpfs -o size=4m tmpfs "$FDIR" 2>"$RB_TMP/mount.err"; then
    echo "SKIP: the spool's disk full (cannot mount a tmpfs here: $(cat "$RB_TMP/mount.err"))"
else
    FPORT=$(rb_free_port)
    CG_LIMITS="" # the writer's default flush (50 ms), not section 1's 4 s
    cg_config gw-f "$FPORT" ""
    timeout 30 env RIGBOX_NODE_ID=gw-f RIGBOX_SPOOL_DIR="$FDIR" RIGBOX_MOCKOAI_API_KEY=sk-oai \
        "$GW_BIN" --config "$RB_TMP/gw-f.yaml" --schema-dir "$SRC/schema" >"$RB_TMP/gw-f0.log" 2>&1
    rc=$?
    check "disk full: no room for the inflight file fails the start ($rc), saying so" \
        bash -c "[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q 'inflight.*No space left on device' '$RB_TMP/gw-f0.log'"
    umount "$FDIR" && mount -t tmpfs -o size=16m tmpfs "$FDIR"
    cg_gateway gw-f "$FPORT"
    FPID=$CG_PID
    avail=$(df --output=avail -B1 "$FDIR" | tail -1)
    fallocate -l $((avail - 65536)) "$FDIR/filler"
    seq 800 | xargs -P 8 -I{} curl -sS -o /dev/null --max-time 10 -w '%{http_code} %header{x-rigbox-request-id}\n' \
        "http://127.0.0.1:$FPORT/v1/chat/completions" -H "Authorization: Bearer $TOK1" -H 'content-type: application/json' \
        -d "$CHAT" >"$RB_TMP/full.reqs" 2>/dev/null
    awk '$1 == 200 {print $2}' "$RB_TMP/full.reqs" >"$RB_TMP/full.ids"
    NF_OK=$(wc -l <"$RB_TMP/full.ids")
    NF_503=$(awk '$1 == 503' "$RB_TMP/full.reqs" | wc -l)
    check "disk full: the gateway is alive" kill -0 "$FPID"
    check "disk full: calls served ($NF_OK) or refused with 503 ($NF_503), nothing else" test $((NF_OK + NF_503)) = 800
    check "disk full: their records (~215 B each) overflowed the 64 KB left more than once" test "$NF_OK" -gt 600
    ids=$(sed "s/.*/'&'/" "$RB_TMP/full.ids" | paste -sd, -)
    cg_wait_sql "SELECT count(*) >= $NF_OK * 9 / 10 FROM usage_events WHERE request_id IN ($ids) AND status = 'ok'" t 100
    check "disk full: at least 9 in 10 served calls have their own row at once" \
        test "$(rb_sql "SELECT count(*) >= $NF_OK * 9 / 10 FROM usage_events WHERE request_id IN ($ids) AND status = 'ok'")" = t
    kill -TERM "$FPID"
    wait "$FPID" 2>/dev/null
    check "disk full, after the stop: every served call has exactly one usage row" \
        test "$(rb_sql "SELECT count(*) FILTER (WHERE n = 1) || '|' || count(*) FROM (SELECT (SELECT count(*) FROM usage_events e WHERE e.request_id = r.id) n FROM unnest(ARRAY[$ids]) AS r(id)) x")" = "$NF_OK|$NF_OK"
    check "disk full: ledger identity (u1)" cg_identity_ok u-cguser01
    umount "$FDIR"
fi
if grep -q 'runtime error\|ERROR: AddressSanitizer' "$RB_TMP"/gw-*.log; then
    fail "no sanitizer report"
else
    ok "no sanitizer report"
fi
((RB_FAILED > 0)) && grep -v 'level=info' "$RB_TMP"/gw-k.log | tail -n 30
rb_finish
