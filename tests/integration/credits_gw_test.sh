#!/usr/bin/env bash
# credits_gw_test.sh: the gateway's credit admission against a real PostgreSQL (issue 4).
#   credits_gw_test.sh GATEWAY_BIN MOCK_BIN SOURCE_DIR
# (a) NO OVERSPEND: two gateway processes on one database, 60 concurrent streamed requests whose
#     possible cost is ~4x the balance: no cost posted past the credits (overrun 0), every request
#     is served and billed in full or refused with 402, the ledger identity holds, and once the
#     gateways stopped every lease is closed and nothing is pending.
# (c) 402 bodies in both dialects with a rejected usage row and nothing sent upstream, BYOK calls
#     not debited, a grant unblocking a refused user within a second, idempotent grants.
# (d) backpressure: with its ledger blocked, a gateway serves calls while its spool has room, then
#     refuses new ones (503 ledger_backlog, Retry-After; counted, not recorded); every served call
#     is billed once.
# (e) refill: the lease taken ahead of need is kept until drawn on, not returned unused at once.
# (f) renewal: 300 leases on one gateway all renewed; a lease swept while the gateway was cut off
#     is not carved from again (402, no overrun).
# (g) a user keeps at most 8 leases on a node.
# (h) records written while PostgreSQL is read-only wait in the spool, not in rejected.spool; a
#     lease return it refused is retried.
# (i) a stop while a token lookup waits: the late answer goes to nobody (no use after free).
# Uses RB_TEST_PGHOST when set, else starts a private cluster under /tmp (tools/lib/pg.sh).
set -u
GW_BIN=$1 MOCK_BIN=$2 SRC=$3
if [[ -z ${RB_TEST_PGHOST:-} ]]; then
    . "$SRC/tools/lib/pg.sh"
    rb_pg_start /tmp/rigbox-cgwtest-pg >/dev/null 2>&1 || { echo "cannot start PostgreSQL"; echo "0 passed, 1 failed"; exit 1; }
    export RB_TEST_PGHOST=$(rb_pg_host /tmp/rigbox-cgwtest-pg)
fi
. "$SRC/tests/integration/lib.sh"
rb_db_create
. "$SRC/tests/integration/credits_gw_lib.sh"
cg_start_mock

PA=$(rb_free_port) PB=$(rb_free_port)
cg_gateway gw-a "$PA"
PID_A=$CG_PID
kill -0 "$PID_A" || { fail "gateway gw-a runs"; tail -30 "$RB_TMP/gw-a.log"; rb_finish; exit 1; }
cg_gateway gw-b "$PB"
PID_B=$CG_PID
kill -0 "$PID_B" || { fail "gateway gw-b runs"; tail -30 "$RB_TMP/gw-b.log"; rb_finish; exit 1; }
TOK1=$(cg_user 1)
TOK2=$(cg_user 2)
TOK3=$(cg_user 3)

# ---- (a) no overspend ---------------------------------------------------------------------------
# t-chat: 100 micro per input token, 200 per output token. Each request: max_tokens 1000, usage
# reported 10 in / 1000 out = 201000 micro; hold = input estimate + 1000 x 200 >= that.
GRANT=3000000
cg_grant u-cguser01 $GRANT g-a-1
BODY='{"model":"t-chat","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"count to ten"}]}'
mkdir -p "$RB_TMP/a"
stream_req() { # stream_req I: request I goes to gateway b when I is odd, else to gateway a
    local port=$PA
    (($1 % 2)) && port=$PB
    curl -sS -N -o "$RB_TMP/a/$1.out" -D "$RB_TMP/a/$1.hdr" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" \
        -H "Authorization: Bearer $TOK1" -H 'content-type: application/json' \
        -H 'X-Mock-Behavior: slow=60,chunks=8,usage=prompt:10,completion:1000' -d "$BODY" >"$RB_TMP/a/$1.code" 2>/dev/null
}
# One request through each gateway first, so each holds a lease before the burst: otherwise the
# gateway whose lease thread reaches PostgreSQL first may rightly lease the whole balance, and
# "both gateways drew on one balance" would depend on timing.
stream_req 1
stream_req 2
for i in $(seq 3 60); do stream_req "$i" & done
wait_curls() { local p; for p in $(jobs -p); do [[ " ${RB_PIDS[*]} " == *" $p "* ]] || wait "$p"; done; }
wait_curls
served=0 refused=0 other=0 served_a=0 served_b=0
: >"$RB_TMP/a/served.ids"
for i in $(seq 1 60); do
    code=$(cat "$RB_TMP/a/$i.code")
    rid=$(grep -i '^x-rigbox-request-id:' "$RB_TMP/a/$i.hdr" | tr -d '\r' | cut -d' ' -f2)
    if [[ $code == 200 ]] && grep -q '^data: \[DONE\]' "$RB_TMP/a/$i.out"; then
        served=$((served + 1))
        if ((i % 2)); then served_b=$((served_b + 1)); else served_a=$((served_a + 1)); fi
        echo "$rid" >>"$RB_TMP/a/served.ids"
    elif [[ $code == 402 ]] && [[ $(jq -r .error.code "$RB_TMP/a/$i.out") == insufficient_credits ]]; then
        refused=$((refused + 1))
    else
        other=$((other + 1))
        echo "request $i: $code $(head -c 300 "$RB_TMP/a/$i.out")"
    fi
done
echo "# no overspend: served=$served refused=$refused other=$other"
check "a: every request served or refused with 402 ($served + $refused = 60)" test "$other" = 0
check "a: some requests served, some refused (the test bites)" test "$served" -ge 5 -a "$refused" -ge 5
check "a: both gateways served ($served_a + $served_b)" test "$served_a" -ge 1 -a "$served_b" -ge 1
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser01'" 60
check "a: one usage row per request (60)" test "$(rb_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser01'")" = 60
check "a: every served request billed once, in full" cg_served_billed_once "$RB_TMP/a/served.ids"
check "a: refused requests: rejected rows with 402, not billed" test "$(rb_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser01' AND status = 'rejected' AND http_status = 402 AND NOT billed AND error_code = 'insufficient_credits'")" = "$refused"
# no overspend: the account's no-overdraft CHECK keeps posted debits within the credits whatever
# happens, so what shows an overspend is a cost posted past them (overrun_micro)
check "a: posted = served x 201000, no overrun, the grant untouched" test "$(rb_sql "SELECT debits_posted || '/' || overrun_micro || '/' || credits_posted FROM credit_accounts WHERE user_id = 'u-cguser01'")" = "$((served * 201000))/0/$GRANT"
check "a: leases taken by both gateways" test "$(rb_sql "SELECT count(DISTINCT node_id) FROM credit_leases WHERE user_id = 'u-cguser01'")" = 2
check "a: ledger identity holds under load" cg_identity_ok u-cguser01
check "a: nodes registered (kind gateway)" test "$(rb_sql "SELECT count(*) FROM nodes WHERE kind = 'gateway' AND id IN ('gw-a', 'gw-b')")" = 2

# ---- (c) 402 bodies, BYOK, grants ---------------------------------------------------------------
post() { # post PORT PATH TOKEN BODY [curl args…]
    local port=$1 path=$2 tok=$3 body=$4
    shift 4
    curl -sS -o "$RB_TMP/out" -D "$RB_TMP/hdr" -w '%{http_code}' "http://127.0.0.1:$port$path" \
        -H "Authorization: Bearer $tok" -H "x-api-key: $tok" -H 'anthropic-version: 2023-06-01' \
        -H 'content-type: application/json' -d "$body" "$@"
}
rid() { grep -i '^x-rigbox-request-id:' "$RB_TMP/hdr" | tr -d '\r' | cut -d' ' -f2; }
mock_count() { curl -sS "$CG_MOCK/mock/requests" | jq '.requests | length'; }
CHAT='{"model":"t-chat","messages":[{"role":"user","content":"hi"}]}'
MSG='{"model":"t-claude","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}'
N0=$(mock_count)
st=$(post $PA /v1/chat/completions $TOK2 "$CHAT")
check "c: no credit, OpenAI route: 402 insufficient_quota/insufficient_credits" test "$st:$(jq -r '.error.type + "/" + .error.code' "$RB_TMP/out")" = "402:insufficient_quota/insufficient_credits"
R=$(rid)
st=$(post $PA /v1/messages $TOK2 "$MSG")
check "c: no credit, Anthropic route: 402 billing_error" test "$st:$(jq -r '.type + "/" + .error.type' "$RB_TMP/out")" = "402:error/billing_error"
check "c: nothing sent upstream for refused calls" test "$(mock_count)" = "$N0"
st=$(post $PA /v1/messages/count_tokens $TOK2 '{"model":"t-claude","messages":[{"role":"user","content":"hi"}]}')
check "c: no credit: count_tokens (never billed) is served, nothing held" test "$st" = 200
cg_wait_sql "SELECT count(*) FROM usage_events WHERE request_id = '$R'" 1
check "c: refused call recorded (rejected, 402, not billed)" test "$(rb_sql "SELECT status || http_status || billed FROM usage_events WHERE request_id = '$R'")" = "rejected402false"
st=$(post $PA /v1/chat/completions $TOK2 "$CHAT" -H 'X-Rigbox-Provider-Key: sk-own')
check "c: BYOK call without credit: served" test "$st" = 200
R=$(rid)
cg_wait_sql "SELECT count(*) FROM usage_events WHERE request_id = '$R'" 1
check "c: BYOK: priced, not billed, no transfer" test "$(rb_sql "SELECT mode || billed || (cost_micro > 0) || (SELECT count(*) FROM credit_transfers WHERE request_id = '$R') FROM usage_events WHERE request_id = '$R'")" = "byokfalsetrue0"
cg_grant u-cguser02 1000000 g-c-1
check "c: a grant replayed is accepted" cg_grant u-cguser02 1000000 g-c-1
check "c: grant replay is idempotent (one grant)" test "$(rb_sql "SELECT credits_posted FROM credit_accounts WHERE user_id = 'u-cguser02'")" = 1000000
sleep 1.1
st=$(post $PA /v1/chat/completions $TOK2 "$CHAT")
check "c: after a grant the user is served within a second" test "$st" = 200
R=$(rid)
cg_wait_sql "SELECT count(*) FROM credit_transfers WHERE request_id = '$R'" 1
check "c: and billed its cost" test "$(rb_sql "SELECT t.amount_micro = e.cost_micro AND e.cost_micro > 0 FROM credit_transfers t JOIN usage_events e USING (request_id) WHERE request_id = '$R'")" = t
cg_grant u-cguser03 1000000 g-c-3
st=$(post $PB /v1/chat/completions $TOK3 '{"model":"t-chat","max_tokens":10000,"messages":[{"role":"user","content":"hi"}]}')
check "c: a hold above the balance (max_tokens 10000 = 2 credits > 1) is refused: 402" test "$st" = 402
st=$(post $PB /v1/chat/completions $TOK3 '{"model":"t-chat","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}')
check "c: the same user with max_tokens 1000 is served" test "$st" = 200
st=$(post $PB /v1/chat/completions $TOK3 '{"model":"t-chat","max_tokens":1000,"n":8,"messages":[{"role":"user","content":"hi"}]}')
check "c: eight choices of max_tokens 1000 are held eight times (1.6 credits > 0.8 left): 402" test "$st" = 402
# Input the body does not hold (a stored response, a web search) is held as if it filled the model's
# context window of 50000 tokens: 49000 input + 1000 output = 5.1 credits > 0.8 left. Before, such
# a call was held by its bytes and its real input booked as overrun past the balance.
N0=$(mock_count)
st=$(post $PB /v1/responses $TOK3 '{"model":"t-chat","max_output_tokens":1000,"input":"hi","previous_response_id":"resp_1"}')
check "c: a Responses call on a stored response is held at the context window: 402" test "$st:$(jq -r .error.code "$RB_TMP/out")" = 402:insufficient_credits
st=$(post $PB /v1/messages $TOK3 '{"model":"t-claude","max_tokens":1000,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}')
check "c: a Messages call with web search is held at the context window: 402" test "$st:$(jq -r .error.type "$RB_TMP/out")" = 402:billing_error
# An image by URL: a few dozen bytes that the provider bills by their pixels (one high-detail
# image to gpt-4o-mini: up to ~48k tokens). Held by its bytes, 16 such calls ran a 0.01-credit
# balance 64 times over.
st=$(post $PB /v1/chat/completions $TOK3 '{"model":"t-chat","max_tokens":1000,"messages":[{"role":"user","content":[{"type":"text","text":"what is it?"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"high"}}]}]}')
check "c: a chat call with an image is held at the context window: 402" test "$st:$(jq -r .error.code "$RB_TMP/out")" = 402:insufficient_credits
check "c: nothing sent upstream for them" test "$(mock_count)" = "$N0"
st=$(post $PB /v1/responses $TOK3 '{"model":"t-chat","max_output_tokens":1000,"input":"hi"}')
check "c: the same Responses call with its input inline is served" test "$st" = 200
cg_grant u-cguser03 10000000 g-c-3b
sleep 1.1
st=$(post $PB /v1/responses $TOK3 '{"model":"t-chat","max_output_tokens":1000,"input":"hi","previous_response_id":"resp_1"}')
check "c: once the balance covers the window (10.7 credits) the stored-response call is served" test "$st" = 200
R=$(rid)
check "c: and forwarded upstream" test "$(curl -sS "$CG_MOCK/mock/requests" | jq -r '.requests[-1].path')" = /v1/responses
cg_wait_sql "SELECT count(*) FROM credit_transfers WHERE request_id = '$R'" 1
check "c: and billed its cost, not its hold" test "$(rb_sql "SELECT e.cost_micro > 0 AND e.cost_micro < 100000 AND t.amount_micro = e.cost_micro FROM credit_transfers t JOIN usage_events e USING (request_id) WHERE request_id = '$R'")" = t

# ---- (d) backpressure: a ledger that falls behind refuses new calls ------------------------------
# Gateway c keeps at most 8 records waiting for PostgreSQL (refusing new calls from 6 on). While a
# session holds usage_events locked against inserts its writer cannot commit: the first calls are
# served, then new ones are refused with 503 ledger_backlog and Retry-After, not served without a
# record (before backpressure, all 14 were served and the records past 8 dropped).
PC=$(rb_free_port)
CG_LIMITS="writer_queue_max: 8, writer_batch_max: 4" cg_gateway gw-c "$PC"
PID_C=$CG_PID
TOK4=$(cg_user 4)
cg_grant u-cguser04 100000000 g-d-4
st=$(post $PC /v1/chat/completions $TOK4 "$CHAT")
check "d: served while the ledger keeps up" test "$st" = 200
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser04'" 1
psql -h "$RB_TEST_PGHOST" -U postgres -d "$RB_DB" -qAt \
    -c "BEGIN; LOCK TABLE usage_events IN EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT" >/dev/null 2>&1 &
LOCK_PID=$!
cg_wait_sql "SELECT count(*) FROM pg_locks WHERE relation = 'usage_events'::regclass AND mode = 'ExclusiveLock' AND granted" 1
mkdir -p "$RB_TMP/d"
: >"$RB_TMP/d/served.ids"
d_served=0 d_refused=0 d_other=0
for i in $(seq 1 14); do
    st=$(post $PC /v1/chat/completions $TOK4 "$CHAT")
    if [[ $st == 200 ]]; then
        d_served=$((d_served + 1))
        rid >>"$RB_TMP/d/served.ids"
    elif [[ $st == 503 && $(jq -r .error.code "$RB_TMP/out") == ledger_backlog ]] &&
        grep -qi '^retry-after: 1' "$RB_TMP/hdr"; then
        d_refused=$((d_refused + 1))
    else
        d_other=$((d_other + 1))
        echo "request $i: $st $(head -c 300 "$RB_TMP/out")"
    fi
done
echo "# backpressure: served=$d_served refused=$d_refused other=$d_other"
check "d: calls served, then refused with 503 ledger_backlog and Retry-After ($d_served + $d_refused = 14)" \
    test "$d_other:$((d_served >= 1 && d_refused >= 1))" = 0:1
wait "$LOCK_PID"
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser04' AND status = 'ok'" $((d_served + 1))
check "d: every call served during the backlog is billed once, in full" cg_served_billed_once "$RB_TMP/d/served.ids"
check "d: the refusals leave no usage row, and are counted in the requests metric" test \
    "$(rb_sql "SELECT count(*) FROM usage_events WHERE error_code = 'ledger_backlog'"):$(rb_metrics "http://127.0.0.1:$PC/metrics" |
        awk '/^rigbox_gateway_requests_total\{.*status="503"/ { n += $NF } END { print n + 0 }')" = "0:$d_refused"
st=$(post $PC /v1/chat/completions $TOK4 "$CHAT")
check "d: once the ledger caught up, calls are served again" test "$st" = 200
# The headroom past the refusals is a target, not a cap: 4 calls wait for the blocked ledger (the
# committed ones before them already posted), then 6 slow streams are admitted (4 < 6) and all
# end: 10 records against writer_queue_max 8. Every one was served, so every one is kept (the last
# 2 were dropped before) and billed once.
psql -h "$RB_TEST_PGHOST" -U postgres -d "$RB_DB" -qAt \
    -c "BEGIN; LOCK TABLE usage_events IN EXCLUSIVE MODE; SELECT pg_sleep(5); COMMIT" >/dev/null 2>&1 &
LOCK_PID=$!
cg_wait_sql "SELECT count(*) FROM pg_locks WHERE relation = 'usage_events'::regclass AND mode = 'ExclusiveLock' AND granted" 1
: >"$RB_TMP/d/over.ids"
for i in 1 2 3 4; do
    post $PC /v1/chat/completions $TOK4 "$CHAT" >/dev/null
    rid >>"$RB_TMP/d/over.ids"
done
for i in 1 2 3 4 5 6; do
    curl -sS -N -o /dev/null -D "$RB_TMP/d/s$i.hdr" "http://127.0.0.1:$PC/v1/chat/completions" \
        -H "Authorization: Bearer $TOK4" -H 'content-type: application/json' -H 'X-Mock-Behavior: slow=150,chunks=8' \
        -d '{"model":"t-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}' 2>/dev/null &
done
wait_curls
for i in 1 2 3 4 5 6; do grep -i '^x-rigbox-request-id:' "$RB_TMP/d/s$i.hdr" | tr -d '\r' | cut -d' ' -f2 >>"$RB_TMP/d/over.ids"; done
check "d: 10 calls served while the ledger was blocked ($(grep -h '^HTTP' "$RB_TMP"/d/s*.hdr | tr -d '\r' | cut -d' ' -f2 | paste -sd' '))" \
    test "$(grep -c . "$RB_TMP/d/over.ids"):$(grep -l '^HTTP/1.1 200' "$RB_TMP"/d/s*.hdr | wc -l)" = 10:6
wait "$LOCK_PID"
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser04'" $((d_served + 12))
check "d: past writer_queue_max, every served call still billed once" cg_served_billed_once "$RB_TMP/d/over.ids"
# Refusals are shed first: from half of writer_queue_max (4 here) on, the record of a call refused
# before it reached the provider is dropped (counted), so a flood of refusals (a user without
# credit calling in a loop) cannot fill the queue up to the refusal of every call (6 here). Before,
# the 402 records of such a user made everyone's calls 503 ledger_backlog.
TOK10=rbw_cgshedtoken00000000000000000000000000000000
rb_sql "INSERT INTO users (id, email) VALUES ('u-cgshed01', 'shed@example.com');
INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb) VALUES
  ('ws-cgshed01', 'u-cgshed01', 'shed', 'base', 512, 1, 1024);
INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES
  ('ws-cgshed01', decode('$(cg_sha "$TOK10")', 'hex'), 'rbw_cgsh');" >/dev/null
dropped() { rb_metrics "http://127.0.0.1:$PC/metrics" | awk '$1 == "rigbox_gateway_usage_dropped_total" { print $2 + 0 }'; }
DROP0=$(dropped)
psql -h "$RB_TEST_PGHOST" -U postgres -d "$RB_DB" -qAt \
    -c "BEGIN; LOCK TABLE usage_events IN EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT" >/dev/null 2>&1 &
LOCK_PID=$!
cg_wait_sql "SELECT count(*) FROM pg_locks WHERE relation = 'usage_events'::regclass AND mode = 'ExclusiveLock' AND granted" 1
codes=""
for i in $(seq 1 8); do codes+="$(post $PC /v1/chat/completions $TOK10 "$CHAT") "; done
st=$(post $PC /v1/chat/completions $TOK4 "$CHAT")
R=$(rid)
check "d: 8 calls without credit refused (${codes% }), then another user's call is served ($st)" \
    test "${codes% }:$st" = "402 402 402 402 402 402 402 402:200"
wait "$LOCK_PID"
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cgshed01'" 4
check "d: the first 4 refusals recorded, the other 4 counted as dropped" \
    test "$(rb_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cgshed01'"):$(($(dropped) - DROP0))" = 4:4
echo "$R" >"$RB_TMP/d/shed.ids"
cg_wait_sql "SELECT count(*) FROM credit_transfers WHERE request_id = '$R'" 1
check "d: and the served call billed once" cg_served_billed_once "$RB_TMP/d/shed.ids"

# ---- (e) refill ahead of need --------------------------------------------------------------------
# Below a quarter chunk of reserve, the lease thread takes the next chunk before it is needed. That
# lease must stay until calls draw on it: one taken and returned unused at once (the lease thread
# once saw it as idle for hours) was taken again at the next call, a take and a return per call.
# 120 calls of 21000 micro = 2.52 chunks: 3 to 5 leases, each drawn on but perhaps the last.
TOK5=$(cg_user 5)
cg_grant u-cguser05 10000000 g-e-5
e_other=0
for i in $(seq 1 120); do
    st=$(post $PA /v1/chat/completions $TOK5 "$CHAT" -H 'X-Mock-Behavior: usage=prompt:10,completion:100')
    [[ $st == 200 ]] || e_other=$((e_other + 1))
done
check "e: 120 calls served" test "$e_other" = 0
cg_wait_sql "SELECT count(*) FROM credit_transfers WHERE user_id = 'u-cguser05' AND kind = 'usage'" 120
check "e: 120 calls billed 21000 each" test "$(rb_sql "SELECT debits_posted FROM credit_accounts WHERE user_id = 'u-cguser05'")" = 2520000
e_leases=$(rb_sql "SELECT count(*) || ' leases, ' || count(*) FILTER (WHERE used_micro = 0) || ' unused' FROM credit_leases WHERE user_id = 'u-cguser05'")
echo "# refill: $e_leases"
check "e: a refill lease is kept until used ($e_leases; at most 5 and 1 unused)" test \
    "$(rb_sql "SELECT count(*) <= 5 AND count(*) FILTER (WHERE used_micro = 0) <= 1 FROM credit_leases WHERE user_id = 'u-cguser05'")" = t
check "e: ledger identity (u5)" cg_identity_ok u-cguser05

# ---- (f) renewal, and a lease lost while cut off ------------------------------------------------
# Gateway f (idle leases kept; lease ttl 10 s, so renewed every 3.3 s) holds a lease for each of 300
# users: every one must be renewed, not the first 256. Then one lease is swept as if gateway f had
# not reached PostgreSQL for longer than its ttl, and the rest of that user's balance is leased to
# another node: gateway f must stop carving holds from the lost lease and refuse with 402. Serving
# from it would post a cost no reserve covers (overrun: an overspend).
PF=$(rb_free_port)
cg_gateway gw-f "$PF" RIGBOX_LEASE_IDLE_MS=600000
PID_F=$CG_PID
rb_sql "INSERT INTO users (id, email) SELECT 'u-rf' || lpad(i::text, 6, '0'), 'rf' || i || '@example.com' FROM generate_series(1, 300) i;
INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb)
  SELECT 'ws-rf' || lpad(i::text, 6, '0'), 'u-rf' || lpad(i::text, 6, '0'), 'f' || i, 'base', 512, 1, 1024 FROM generate_series(1, 300) i;
INSERT INTO workspace_tokens (workspace_id, token_hash, prefix)
  SELECT 'ws-rf' || lpad(i::text, 6, '0'), sha256(convert_to('rbw_rftoken' || lpad(i::text, 36, '0'), 'UTF8')), 'rbw_rfto' FROM generate_series(1, 300) i;
SELECT count(*) FROM generate_series(1, 300) i, LATERAL rb_grant('g-f-' || i, 'u-rf' || lpad(i::text, 6, '0'), 5000000, 'paid', NULL, NULL)" >/dev/null
for i in $(seq 1 300); do printf 'rbw_rftoken%036d\n' "$i"; done |
    xargs -P 8 -I{} curl -sS -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PF/v1/chat/completions" \
        -H 'Authorization: Bearer {}' -H 'content-type: application/json' -d "$CHAT" >"$RB_TMP/f.codes"
check "f: 300 users served" test "$(grep -c '^200$' "$RB_TMP/f.codes")" = 300
check "f: a lease each" test "$(rb_sql "SELECT count(*) FROM credit_leases WHERE node_id = 'gw-f' AND closed_at IS NULL")" = 300
sleep "$(rb_sql "SELECT greatest(0, extract(epoch FROM max(created_at) + interval '10.5 s' - now())) FROM credit_leases WHERE node_id = 'gw-f'")" # past the last one's ttl
check "f: every lease renewed (none open past its expiry)" test \
    "$(rb_sql "SELECT count(*) FILTER (WHERE expires_at > now()) || '/' || count(*) FROM credit_leases WHERE node_id = 'gw-f' AND closed_at IS NULL")" = 300/300
LF=$(rb_sql "SELECT id FROM credit_leases WHERE user_id = 'u-rf000001' AND closed_at IS NULL")
rb_sql "BEGIN; UPDATE credit_leases SET expires_at = now() - interval '1 second' WHERE id = '$LF'; SELECT rb_lease_sweep(); COMMIT" >/dev/null
check "f: the lease is swept" test "$(rb_sql "SELECT closed_at IS NOT NULL FROM credit_leases WHERE id = '$LF'")" = t
check "f: the rest of the balance leased to another node" test \
    "$(rb_sql "SELECT rb_lease_take('gw-a.other.1', 'gw-a', 'u-rf000001', 100000000, 60, 1) > 0"):$(rb_sql "SELECT credits_posted - debits_posted - debits_pending FROM credit_accounts WHERE user_id = 'u-rf000001'")" = t:0
for _ in $(seq 1 50); do grep -q "lease_lost.*$LF" "$RB_TMP/gw-f.log" && break; sleep 0.1; done
check "f: gateway f finds its lease lost at the next renewal" grep -q "lease_lost.*$LF" "$RB_TMP/gw-f.log"
st=$(post $PF /v1/chat/completions rbw_rftoken$(printf %036d 1) "$CHAT")
check "f: no hold carved from the lost lease: 402" test "$st" = 402
R=$(rid)
cg_wait_sql "SELECT count(*) FROM usage_events WHERE request_id = '$R'" 1
check "f: no overrun, the ledger identity holds" test \
    "$(rb_sql "SELECT overrun_micro FROM credit_accounts WHERE user_id = 'u-rf000001'"):$(cg_identity_ok u-rf000001 && echo ok)" = 0:ok
rb_sql "SELECT rb_lease_return('gw-a.other.1')" >/dev/null

# ---- (g) leases per user -------------------------------------------------------------------------
# A user keeps at most GW_CREDITS_LEASES_MAX (8) leases on a node, idle or not: 150 calls of 81000
# micro (12.2 chunks, a refill every 9 calls or so) go through gateway f, which keeps idle leases for
# ten minutes. Past 8, the oldest drawn-down ones go back as soon as their costs are committed.
TOK7=$(cg_user 7)
cg_grant u-cguser07 20000000 g-lim-7
f_other=0
for i in $(seq 1 150); do
    st=$(post $PF /v1/chat/completions $TOK7 '{"model":"t-chat","max_tokens":400,"messages":[{"role":"user","content":"hi"}]}' \
        -H 'X-Mock-Behavior: usage=prompt:10,completion:400')
    [[ $st == 200 ]] || { f_other=$((f_other + 1)); ((f_other > 1)) || echo "call $i: $st $(head -c 300 "$RB_TMP/out")"; }
done
check "g: 150 calls of 81000 served" test "$f_other" = 0
cg_wait_sql "SELECT count(*) FROM credit_transfers WHERE user_id = 'u-cguser07' AND kind = 'usage'" 150
check "g: more than 8 leases taken, at most 8 kept open" cg_wait_sql \
    "SELECT count(*) > 8 AND count(*) FILTER (WHERE closed_at IS NULL) <= 8 FROM credit_leases WHERE user_id = 'u-cguser07'" t 30
echo "# leases of u7: $(rb_sql "SELECT count(*) || ' taken, ' || count(*) FILTER (WHERE closed_at IS NULL) || ' open' FROM credit_leases WHERE user_id = 'u-cguser07'")"
check "g: ledger identity (u7)" cg_identity_ok u-cguser07
kill -TERM "$PID_F" # its 300-odd leases go back one by one: not within the others' stop
wait "$PID_F" 2>/dev/null
check "g: gateway f returned all its leases at stop" test "$(rb_sql "SELECT count(*) FROM credit_leases WHERE node_id = 'gw-f' AND closed_at IS NULL")" = 0

# ---- (h) a database that refuses writes for a while loses nothing ------------------------------------
# New sessions are read-only (as on a standby after a failover) and every session is cut, so the
# writers reconnect read-only: their batches fail with SQLSTATE 25006. Calls within gateway a's
# lease are served meanwhile; their records must wait in the spool and be posted once PostgreSQL
# takes writes again, not be quarantined as refused rows (then never billed).
TOK6=$(cg_user 6)
cg_grant u-cguser06 10000000 g-h-6
st=$(post $PA /v1/chat/completions $TOK6 "$CHAT")
check "h: served before (a lease taken)" test "$st" = 200
TOK8=$(cg_user 8) # its lease idles out (1 s) while the database is read-only: the return fails
cg_grant u-cguser08 10000000 g-h-8
st=$(post $PA /v1/chat/completions $TOK8 "$CHAT")
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser08' AND billed" 1
cut_sessions() { rb_sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" >/dev/null; }
rb_sql "ALTER DATABASE \"$RB_DB\" SET default_transaction_read_only = on" >/dev/null
cut_sessions
: >"$RB_TMP/h.ids"
h_codes=""
for i in 1 2 3; do
    h_codes+="$(post $PA /v1/chat/completions $TOK6 "$CHAT") "
    rid >>"$RB_TMP/h.ids"
done
check "h: served while read-only ($h_codes)" test "$h_codes" = "200 200 200 "
for _ in $(seq 1 50); do grep -q 'usage_write_retry.*25006' "$RB_TMP/gw-a.log" && break; sleep 0.1; done
check "h: the writer meets the read-only database and retries" grep -q 'usage_write_retry.*25006' "$RB_TMP/gw-a.log"
for _ in $(seq 1 50); do grep -q 'lease_return_failed.*25006' "$RB_TMP/gw-a.log" && break; sleep 0.1; done
check "h: an idle lease cannot go back while read-only ($st)" grep -q 'lease_return_failed.*25006' "$RB_TMP/gw-a.log"
rb_sql "BEGIN READ WRITE; ALTER DATABASE \"$RB_DB\" RESET default_transaction_read_only; COMMIT" >/dev/null
cut_sessions
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser06'" 4
check "h: once writable, every call served meanwhile is billed once" cg_served_billed_once "$RB_TMP/h.ids"
check "h: nothing quarantined" test ! -s "$RB_TMP/spool-gw-a/rejected.spool"
check "h: the lease that could not go back is returned once writable" \
    cg_wait_sql "SELECT count(*) FROM credit_leases WHERE user_id = 'u-cguser08' AND closed_at IS NULL" 0 50
# every session was cut twice: the identity and limits threads must LISTEN again in their new
# sessions, so edits still apply within a second
rb_sql "INSERT INTO user_limits (user_id, allowed_models) VALUES ('u-cguser06', '{t-claude}')" >/dev/null
sleep 1
st=$(post $PA /v1/chat/completions $TOK6 "$CHAT")
check "h: after the cuts, a limit edit applies within a second: 403" test "$st" = 403
rb_sql "UPDATE workspace_tokens SET revoked_at = now() WHERE workspace_id = 'ws-cgwork06'; NOTIFY rigbox_identity, 'workspace:ws-cgwork06'" >/dev/null
sleep 1
st=$(post $PA /v1/chat/completions $TOK6 "$CHAT")
check "h: after the cuts, a revoked token stops within a second: 401" test "$st" = 401

# ---- (i) a stop while a lookup waits for PostgreSQL ---------------------------------------------------
# A call's token lookup waits on a lock; the gateway is told to stop, its workers give up on the
# call after their deadline (drain 3 s + 2 s) and free their reply ports; then the lookup ends.
# Its answer must go to nobody, not into a freed port (ASan: use after free, before).
PS=$(rb_free_port)
cg_gateway gw-s "$PS"
PID_S=$CG_PID
psql -h "$RB_TEST_PGHOST" -U postgres -d "$RB_DB" -qAt \
    -c "BEGIN; LOCK TABLE workspace_tokens IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT" >/dev/null 2>&1 &
LOCK_PID=$!
cg_wait_sql "SELECT count(*) FROM pg_locks WHERE relation = 'workspace_tokens'::regclass AND mode = 'AccessExclusiveLock' AND granted" 1
curl -sS -o /dev/null -m 15 "http://127.0.0.1:$PS/v1/chat/completions" -H "Authorization: Bearer $TOK2" \
    -H 'content-type: application/json' -d "$CHAT" 2>/dev/null &
CURL_PID=$!
sleep 0.5
kill -TERM "$PID_S"
wait "$PID_S" 2>/dev/null
S_RC=$?
wait "$LOCK_PID" "$CURL_PID" 2>/dev/null
check "i: the gateway stopped with the lookup under way (exit $S_RC)" test "$S_RC" = 0
check "i: its workers left the call at their deadline" grep -q "worker_stop_busy" "$RB_TMP/gw-s.log"

# ---- shutdown: leases returned, nothing pending -------------------------------------------------
kill -TERM "$PID_A" "$PID_B" "$PID_C"
wait "$PID_A" "$PID_B" "$PID_C" 2>/dev/null
check "stop: every lease closed" test "$(rb_sql "SELECT count(*) FROM credit_leases WHERE closed_at IS NULL")" = 0
rb_sql "SELECT node_id || ' ' || id || ' used ' || used_micro FROM credit_leases WHERE closed_at IS NULL" | sed 's/^/# open lease: /'
check "stop: nothing pending" test "$(rb_sql "SELECT coalesce(sum(debits_pending), 0) FROM credit_accounts")" = 0
check "stop: granted - posted - pending = remaining (u1)" test "$(rb_sql "SELECT credits_posted - debits_posted - debits_pending = $GRANT - $((served * 201000)) FROM credit_accounts WHERE user_id = 'u-cguser01'")" = t
check "stop: ledger identity (u1)" cg_identity_ok u-cguser01
check "stop: ledger identity (u2)" cg_identity_ok u-cguser02
check "stop: the spools are fully committed" bash -c "for d in '$RB_TMP'/spool-gw-*; do test \$(( \$(stat -c %s \$d/usage.spool) )) = \$(( 10#0\$(head -c 20 \$d/checkpoint) )) || exit 1; done"
# ---- (j) cut off from PostgreSQL: nothing spent past the lease's ttl ---------------------------
# Gateway j can no longer reach PostgreSQL (its sessions cut, new ones refused), so it can neither
# renew its lease nor take another. Past ttl_s (10 s here) PostgreSQL may sweep that lease and give
# its reserve to another node; a call served from it then spends credit twice. Such calls are now
# refused (503) from GW_CREDITS_VALID_MARGIN_MS before the ttl on; before, they were served.
PJ=$(rb_free_port)
cg_gateway gw-j "$PJ"
PID_J=$CG_PID
TOK9=$(cg_user 9)
cg_grant u-cguser09 100000000 g-j-9
st=$(post $PJ /v1/chat/completions $TOK9 "$CHAT")
check "j: served from its lease" test "$st" = 200
pgadm() { psql -h "$RB_TEST_PGHOST" -U postgres -d postgres -qAt -c "$1" >/dev/null; }
pgadm "ALTER DATABASE \"$RB_DB\" WITH ALLOW_CONNECTIONS false"
pgadm "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$RB_DB'"
st1=$(post $PJ /v1/chat/completions $TOK9 "$CHAT")
sleep 10
st2=$(post $PJ /v1/chat/completions $TOK9 "$CHAT")
code2=$(jq -r .error.code "$RB_TMP/out")
pgadm "ALTER DATABASE \"$RB_DB\" WITH ALLOW_CONNECTIONS true"
check "j: cut off, within the lease's ttl: served ($st1)" test "$st1" = 200
check "j: cut off past the lease's ttl: refused ($st2 $code2)" test "$st2 $code2" = "503 credits_unavailable"
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser09' AND billed" 2
check "j: the two calls served are billed once PostgreSQL is back" \
    test "$(rb_sql "SELECT count(*) FROM credit_transfers WHERE user_id = 'u-cguser09' AND kind = 'usage'")" = 2
kill -TERM "$PID_J"
wait "$PID_J" 2>/dev/null
check "j: its lease is closed at stop" test "$(rb_sql "SELECT count(*) FROM credit_leases WHERE user_id = 'u-cguser09' AND closed_at IS NULL")" = 0
check "j: ledger identity (u9)" cg_identity_ok u-cguser09
if grep -q 'runtime error\|ERROR: AddressSanitizer' "$RB_TMP"/gw-*.log; then
    fail "no sanitizer report"
    grep -B2 -A14 'runtime error\|ERROR: AddressSanitizer' "$RB_TMP"/gw-*.log | head -60
else
    ok "no sanitizer report"
fi
((RB_FAILED > 0)) && tail -n 30 "$RB_TMP"/gw-*.log
rb_finish
