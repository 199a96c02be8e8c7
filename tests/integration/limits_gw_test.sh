#!/usr/bin/env bash
# limits_gw_test.sh: the gateway's per-user and per-subject limits against a real PostgreSQL
# (issue 4 point 6, DESIGN.md §3 Limits).
#   limits_gw_test.sh GATEWAY_BIN MOCK_BIN SOURCE_DIR
# Users get their limits through user_limits overrides of the (default) free plan. The gateways run
# with RIGBOX_GATEWAY_RATE_WINDOW_S=4 (a 4 s rpm/tpm window instead of 60 s; tests only).
# Covers: allowed models (403, both dialects) and a limit edit applying within a second; rpm (429 +
# Retry-After, both dialects, then served again in the next window); tpm; concurrent streams; daily
# and monthly caps (402, both dialects; only billed usage counts; a second gateway process seeds
# them from PostgreSQL); X-Rigbox-Subject recorded in usage_events; subject budget (402, seeded by
# the second process) and rate (429 + Retry-After); malformed subject headers (400); every refusal
# recorded as a rejected usage row with its code and nothing sent upstream; subject spends
# re-read across gateways; full limit tables (RIGBOX_GATEWAY_QUOTA_TABLE_MAX=2, tests only).
# Uses RB_TEST_PGHOST when set, else starts a private cluster under /tmp (tools/lib/pg.sh).
set -u
GW_BIN=$1 MOCK_BIN=$2 SRC=$3
if [[ -z ${RB_TEST_PGHOST:-} ]]; then
    . "$SRC/tools/lib/pg.sh"
    rb_pg_start /tmp/rigbox-limgw-pg >/dev/null 2>&1 || { echo "cannot start PostgreSQL"; echo "0 passed, 1 failed"; exit 1; }
    export RB_TEST_PGHOST=$(rb_pg_host /tmp/rigbox-limgw-pg)
fi
. "$SRC/tests/integration/lib.sh"
rb_db_create
. "$SRC/tests/integration/credits_gw_lib.sh"
cg_start_mock

WIN=4
PA=$(rb_free_port) PB=$(rb_free_port)
cg_gateway gw-la "$PA" RIGBOX_GATEWAY_RATE_WINDOW_S=$WIN
PID_A=$CG_PID
kill -0 "$PID_A" || { fail "gateway gw-la runs"; tail -30 "$RB_TMP/gw-la.log"; rb_finish; exit 1; }
for n in 1 2 3 4 5 6 7; do
    eval "TOK$n=$(cg_user $n)"
    cg_grant "u-cguser0$n" 20000000 "g-l-$n"
done

post() { # post PORT PATH TOKEN BODY [curl args…]: prints the status; body in $RB_TMP/out
    local port=$1 path=$2 tok=$3 body=$4
    shift 4
    curl -sS -o "$RB_TMP/out" -D "$RB_TMP/hdr" -w '%{http_code}' "http://127.0.0.1:$port$path" \
        -H "Authorization: Bearer $tok" -H "x-api-key: $tok" -H 'anthropic-version: 2023-06-01' \
        -H 'content-type: application/json' -H 'X-Mock-Behavior: usage=prompt:10,completion:1000' \
        -d "$body" "$@"
}
hdr() { grep -i "^$1:" "$RB_TMP/hdr" | tr -d '\r' | cut -d' ' -f2; }
oai() { jq -r '.error.type + "/" + .error.code' "$RB_TMP/out"; }
ant() { jq -r '.type + "/" + .error.type' "$RB_TMP/out"; }
mock_count() { curl -sS "$CG_MOCK/mock/requests" | jq '.requests | length'; }
limits() { rb_sql "INSERT INTO user_limits (user_id) VALUES ('$1') ON CONFLICT DO NOTHING; UPDATE user_limits SET $2 WHERE user_id = '$1'" >/dev/null; }
# waits until the next rate window starts (epoch-aligned windows of $1 s), plus 50 ms
window_start() {
    local ms=$(($(date +%s%3N) % ($1 * 1000)))
    sleep "$(awk -v l=$(($1 * 1000 - ms + 50)) 'BEGIN { printf "%.3f", l / 1000 }')"
}
# row CODE USER: the number of rejected usage rows with that error code
rows() { rb_sql "SELECT count(*) FROM usage_events WHERE user_id = '$2' AND status = 'rejected' AND error_code = '$1' AND NOT billed"; }
CHAT='{"model":"t-chat","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}'
MSG='{"model":"t-claude","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}'

# ---- allowed models; an edit applies within a second ---------------------------------------------
limits u-cguser01 "allowed_models = '{t-claude}'"
sleep 1
N0=$(mock_count)
st=$(post $PA /v1/chat/completions $TOK1 "$CHAT")
check "models: t-chat not allowed: 403 permission_error/model_not_allowed" test "$st:$(oai):$(jq -r .error.param "$RB_TMP/out")" = "403:permission_error/model_not_allowed:model"
check "models: nothing sent upstream" test "$(mock_count)" = "$N0"
st=$(post $PA /v1/messages $TOK1 "$MSG")
check "models: t-claude allowed: 200" test "$st" = 200
limits u-cguser01 "allowed_models = '{t-chat}'"
sleep 1
st=$(post $PA /v1/messages $TOK1 "$MSG")
check "models: after UPDATE (1 s), t-claude refused: 403 error/permission_error" test "$st:$(ant)" = "403:error/permission_error"
st=$(post $PA /v1/chat/completions $TOK1 "$CHAT")
check "models: and t-chat served" test "$st" = 200
limits u-cguser01 "allowed_models = '{}'"
sleep 1
st=$(post $PA /v1/messages $TOK1 "$MSG")
check "models: an empty list allows every model" test "$st" = 200

# ---- rpm --------------------------------------------------------------------------------------------
limits u-cguser02 "rpm = 3"
sleep 1
window_start $WIN
codes=""
for i in 1 2 3 4; do codes+="$(post $PA /v1/chat/completions $TOK2 "$CHAT") "; done
check "rpm=3: 3 served, the 4th refused ($codes)" test "$codes" = "200 200 200 429 "
RA=$(hdr retry-after)
check "rpm: 429 rate_limit_error/rpm_limit_reached" test "$(oai)" = "rate_limit_error/rpm_limit_reached"
check "rpm: Retry-After within the window (1..$WIN: '$RA')" test "${RA:-0}" -ge 1 -a "${RA:-0}" -le $WIN
st=$(post $PA /v1/messages $TOK2 "$MSG")
check "rpm: Anthropic route: 429 error/rate_limit_error with Retry-After" test "$st:$(ant):$(hdr retry-after | grep -c .)" = "429:error/rate_limit_error:1"
sleep "$RA"
st=$(post $PA /v1/chat/completions $TOK2 "$CHAT")
check "rpm: served again after Retry-After" test "$st" = 200

# ---- tpm --------------------------------------------------------------------------------------------
limits u-cguser03 "tpm = 500"
sleep 1
window_start $WIN
st1=$(post $PA /v1/chat/completions $TOK3 "$CHAT")
st2=$(post $PA /v1/chat/completions $TOK3 "$CHAT")
check "tpm=500: a call of 1010 tokens served, the next refused ($st1 $st2)" test "$st1 $st2" = "200 429"
check "tpm: 429 tpm_limit_reached with Retry-After" test "$(oai):$(hdr retry-after | grep -c .)" = "rate_limit_error/tpm_limit_reached:1"
sleep "$(hdr retry-after)"
st=$(post $PA /v1/chat/completions $TOK3 "$CHAT")
check "tpm: served in the next window" test "$st" = 200

# ---- concurrent requests (streams count while in flight) ---------------------------------------------
limits u-cguser04 "max_concurrent = 2"
sleep 1
SBODY='{"model":"t-chat","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}'
for i in 1 2; do
    curl -sS -N -o "$RB_TMP/conc$i.out" -w '%{http_code}' "http://127.0.0.1:$PA/v1/chat/completions" \
        -H "Authorization: Bearer $TOK4" -H 'content-type: application/json' \
        -H 'X-Mock-Behavior: slow=200,chunks=10,usage=prompt:10,completion:1000' -d "$SBODY" >"$RB_TMP/conc$i.code" &
done
sleep 0.7
st=$(post $PA /v1/chat/completions $TOK4 "$CHAT")
check "concurrency=2: a 3rd call during 2 streams: 429 concurrency_limit_reached" test "$st:$(oai)" = "429:rate_limit_error/concurrency_limit_reached"
check "concurrency: Retry-After present" test "$(hdr retry-after)" -ge 1
wait_curls() { local p; for p in $(jobs -p); do [[ " ${RB_PIDS[*]} " == *" $p "* ]] || wait "$p"; done; }
wait_curls
check "concurrency: both streams served" test "$(cat "$RB_TMP/conc1.code") $(cat "$RB_TMP/conc2.code")" = "200 200"
st=$(post $PA /v1/chat/completions $TOK4 "$CHAT")
check "concurrency: served once the streams ended" test "$st" = 200

# ---- daily cap (only billed usage counts) -------------------------------------------------------------
# each call: 10 in x 100 + 1000 out x 200 = 201000 micro-credits
limits u-cguser05 "credits_per_day = 1"
sleep 1
codes=""
for i in 1 2 3 4 5 6; do codes+="$(post $PA /v1/chat/completions $TOK5 "$CHAT" -H 'X-Rigbox-Provider-Key: sk-own') "; done
check "daily: 6 BYOK calls (1.2 credits, not billed) all served ($codes)" test "$codes" = "200 200 200 200 200 200 "
codes=""
for i in 1 2 3 4 5 6; do codes+="$(post $PA /v1/chat/completions $TOK5 "$CHAT") "; done
check "daily=1: 5 managed calls served (1.005 credits), the 6th refused ($codes)" test "$codes" = "200 200 200 200 200 402 "
check "daily: 402 insufficient_quota/daily_limit_reached" test "$(oai)" = "insufficient_quota/daily_limit_reached"
st=$(post $PA /v1/messages $TOK5 "$MSG")
check "daily: Anthropic route: 402 error/billing_error" test "$st:$(ant)" = "402:error/billing_error"
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser05' AND billed" 5
cg_gateway gw-lb "$PB" RIGBOX_GATEWAY_RATE_WINDOW_S=$WIN
PID_B=$CG_PID
st=$(post $PB /v1/chat/completions $TOK5 "$CHAT")
check "daily: a second gateway seeds the day's spend from PostgreSQL: 402" test "$st:$(oai)" = "402:insufficient_quota/daily_limit_reached"
limits u-cguser05 "credits_per_day = 100"
sleep 1
st=$(post $PA /v1/chat/completions $TOK5 "$CHAT")
check "daily: raising the cap applies within a second" test "$st" = 200

# ---- monthly cap --------------------------------------------------------------------------------------
limits u-cguser06 "credits_per_month = 1"
sleep 1
codes=""
for i in 1 2 3 4 5 6; do codes+="$(post $PA /v1/chat/completions $TOK6 "$CHAT") "; done
check "monthly=1: 5 calls served, the 6th refused ($codes)" test "$codes" = "200 200 200 200 200 402 "
check "monthly: 402 monthly_limit_reached" test "$(oai)" = "insufficient_quota/monthly_limit_reached"
st=$(post $PA /v1/messages $TOK6 "$MSG")
check "monthly: Anthropic route: 402 error/billing_error" test "$st:$(ant)" = "402:error/billing_error"

# ---- subjects -------------------------------------------------------------------------------------------
st=$(post $PA /v1/chat/completions $TOK7 "$CHAT" -H 'X-Rigbox-Subject: alice')
R=$(hdr x-rigbox-request-id)
cg_wait_sql "SELECT count(*) FROM usage_events WHERE request_id = '$R'" 1
check "subject: attributed in usage_events.subject" test "$st:$(rb_sql "SELECT subject FROM usage_events WHERE request_id = '$R'")" = "200:alice"
B=(-H 'X-Rigbox-Subject: bob' -H 'X-Rigbox-Subject-Budget: 0.3;period=1h')
codes=""
for i in 1 2 3; do codes+="$(post $PA /v1/chat/completions $TOK7 "$CHAT" "${B[@]}") "; done
check "subject budget 0.3 credit: 2 calls (0.402) served, the 3rd refused ($codes)" test "$codes" = "200 200 402 "
check "subject budget: 402 subject_over_budget" test "$(oai)" = "insufficient_quota/subject_over_budget"
st=$(post $PA /v1/messages $TOK7 "$MSG" "${B[@]}")
check "subject budget: Anthropic route: 402 error/billing_error" test "$st:$(ant)" = "402:error/billing_error"
st=$(post $PA /v1/chat/completions $TOK7 "$CHAT" -H 'X-Rigbox-Subject: carol' -H 'X-Rigbox-Subject-Budget: 0.3;period=1h')
check "subject budget: another subject of the same user is served" test "$st" = 200
cg_wait_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser07' AND subject = 'bob' AND billed" 2
st=$(post $PB /v1/chat/completions $TOK7 "$CHAT" "${B[@]}")
check "subject budget: a second gateway seeds the subject's spend: 402" test "$st:$(oai)" = "402:insufficient_quota/subject_over_budget"
window_start 3
R3=(-H 'X-Rigbox-Subject: dave' -H 'X-Rigbox-Subject-Rate: 2req;window=3s')
codes=""
for i in 1 2 3; do codes+="$(post $PA /v1/chat/completions $TOK7 "$CHAT" "${R3[@]}") "; done
check "subject rate 2req/3s: 2 served, the 3rd refused ($codes)" test "$codes" = "200 200 429 "
RA=$(hdr retry-after)
check "subject rate: 429 subject_rate_limited, Retry-After 1..3 ('$RA')" test "$(oai)" = "rate_limit_error/subject_rate_limited" -a "${RA:-0}" -ge 1 -a "${RA:-0}" -le 3
st=$(post $PA /v1/messages $TOK7 "$MSG" "${R3[@]}")
check "subject rate: Anthropic route: 429 error/rate_limit_error" test "$st:$(ant)" = "429:error/rate_limit_error"
sleep "$RA"
st=$(post $PA /v1/chat/completions $TOK7 "$CHAT" "${R3[@]}")
check "subject rate: served again after Retry-After" test "$st" = 200

# ---- malformed subject headers ----------------------------------------------------------------------------
N0=$(mock_count)
st=$(post $PA /v1/chat/completions $TOK7 "$CHAT" -H 'X-Rigbox-Subject: erin' -H 'X-Rigbox-Subject-Budget: lots;period=1h')
check "malformed budget: 400 invalid_request_error/subject_limit_malformed" test "$st:$(oai)" = "400:invalid_request_error/subject_limit_malformed"
st=$(post $PA /v1/chat/completions $TOK7 "$CHAT" -H 'X-Rigbox-Subject: erin' -H 'X-Rigbox-Subject-Rate: 5;window=5x')
check "malformed rate: 400 subject_limit_malformed" test "$st:$(oai)" = "400:invalid_request_error/subject_limit_malformed"
st=$(post $PA /v1/messages $TOK7 "$MSG" -H 'X-Rigbox-Subject-Budget: 1;period=1h')
check "a budget without X-Rigbox-Subject, Anthropic route: 400 error/invalid_request_error" test "$st:$(ant)" = "400:error/invalid_request_error"
check "malformed: nothing sent upstream" test "$(mock_count)" = "$N0"

# ---- subject spends converge across gateways ------------------------------------------------------------
# A gateway re-reads a subject's spend every re-read interval (the rate window here), not only once:
# B counts its own call (0.201 of a 0.5 budget), A then spends 0.402 more. After the interval B's
# next call starts a re-read (that call is decided on what B knew), and the one after is refused.
Z=(-H 'X-Rigbox-Subject: zed' -H 'X-Rigbox-Subject-Budget: 0.5;period=1h')
zb1=$(post $PB /v1/chat/completions $TOK7 "$CHAT" "${Z[@]}")
cg_wait_sql "SELECT count(*) FROM usage_events WHERE subject = 'zed' AND billed" 1
za=""
for i in 1 2 3; do za+="$(post $PA /v1/chat/completions $TOK7 "$CHAT" "${Z[@]}") "; done
cg_wait_sql "SELECT count(*) FROM usage_events WHERE subject = 'zed' AND billed" 3
sleep $((WIN + 1))
zb2=$(post $PB /v1/chat/completions $TOK7 "$CHAT" "${Z[@]}")
sleep 1
zb3=$(post $PB /v1/chat/completions $TOK7 "$CHAT" "${Z[@]}")
check "subject budget: A serves 2 and refuses the 3rd ($za)" test "$za" = "200 200 402 "
check "subject budget: B re-reads the spend of A, and refuses ($zb1 $zb2 $zb3)" test "$zb1 $zb2 $zb3:$(oai)" = "200 200 402:insufficient_quota/subject_over_budget"

# ---- full limit tables ------------------------------------------------------------------------------------
# Gateway c tracks 2 users and 2 subjects. When a new subject finds the table full, idle entries
# go (idle: a rate window, 4 s, without calls), but not the caller's own user, which it still
# holds (freeing it was a use after free), and not a subject whose rate window still runs (that
# count exists nowhere else: evicting it let "1req;window=1h" serve a second call).
PC=$(rb_free_port)
cg_gateway gw-lc "$PC" RIGBOX_GATEWAY_RATE_WINDOW_S=$WIN RIGBOX_GATEWAY_QUOTA_TABLE_MAX=2
PID_C=$CG_PID
TOK8=$(cg_user 8)
TOK9=$(cg_user 9)
cg_grant u-cguser08 20000000 g-l-8
cg_grant u-cguser09 20000000 g-l-9
subj() { echo "-H X-Rigbox-Subject:$1 -H X-Rigbox-Subject-Rate:$2"; }
t1=$(post $PC /v1/chat/completions $TOK8 "$CHAT" $(subj s1 '5req;window=1s'))
t2=$(post $PC /v1/chat/completions $TOK9 "$CHAT" $(subj s2 '5req;window=1s'))
sleep $((WIN + 1))
t3=$(post $PC /v1/chat/completions $TOK8 "$CHAT" $(subj s3 '1req;window=1h'))
check "tables: a new subject of an idle user, table full: served ($t1 $t2 $t3)" test "$t1 $t2 $t3" = "200 200 200"
t4=$(post $PC /v1/chat/completions $TOK8 "$CHAT" $(subj s3 '1req;window=1h'))
t5=$(post $PC /v1/chat/completions $TOK9 "$CHAT" $(subj s4 '5req;window=1s'))
sleep $((WIN + 1))
t6=$(post $PC /v1/chat/completions $TOK9 "$CHAT" $(subj s5 '5req;window=1s'))
t7=$(post $PC /v1/chat/completions $TOK8 "$CHAT" $(subj s3 '1req;window=1h'))
check "tables: a subject's running 1 h window survives a full table ($t4 $t5 $t6 $t7)" test "$t4 $t5 $t6 $t7" = "429 200 200 429"
# A third user finds the users table full of entries used within the window: refused. The table
# is walked at most once for all these refusals (each walk that leaves it full logs one line), not
# once per request: a walk per request under the global mutex was a slowdown any user could
# cause by filling the table.
TOK0=$(cg_user 0)
walks0=$(grep -c 'limits_table_full' "$RB_TMP/gw-lc.log")
full=""
for _ in 1 2 3 4 5 6 7 8; do full+="$(post $PC /v1/chat/completions $TOK0 "$CHAT") "; done
walks=$(($(grep -c 'limits_table_full' "$RB_TMP/gw-lc.log") - walks0))
check "tables: a new user on a full table is refused ($full)" test "$full" = "503 503 503 503 503 503 503 503 "
check "tables: a full table is walked at most once for 8 refusals ($walks)" test "$walks" -le 1
kill -TERM "$PID_C"
wait "$PID_C" 2>/dev/null

# ---- refusals recorded ------------------------------------------------------------------------------------
sleep 0.5
check "recorded: model_not_allowed rows (2)" cg_wait_sql "$(echo "SELECT count(*) FROM usage_events WHERE user_id = 'u-cguser01' AND status = 'rejected' AND error_code = 'model_not_allowed' AND http_status = 403")" 2 30
check "recorded: rpm_limit_reached rows (2)" test "$(rows rpm_limit_reached u-cguser02)" = 2
check "recorded: tpm_limit_reached (1)" test "$(rows tpm_limit_reached u-cguser03)" = 1
check "recorded: concurrency_limit_reached (1)" test "$(rows concurrency_limit_reached u-cguser04)" = 1
check "recorded: daily_limit_reached (3, both gateways)" test "$(rows daily_limit_reached u-cguser05)" = 3
check "recorded: monthly_limit_reached (2)" test "$(rows monthly_limit_reached u-cguser06)" = 2
check "recorded: subject_over_budget (3), subject bob" test "$(rb_sql "SELECT count(*) FROM usage_events WHERE error_code = 'subject_over_budget' AND subject = 'bob' AND http_status = 402")" = 3
check "recorded: subject_rate_limited (2)" test "$(rows subject_rate_limited u-cguser07)" = 2
check "recorded: subject_limit_malformed (3, 400)" test "$(rb_sql "SELECT count(*) FROM usage_events WHERE error_code = 'subject_limit_malformed' AND http_status = 400")" = 3
check "refusals: no credit debited for them" test "$(rb_sql "SELECT count(*) FROM credit_transfers t JOIN usage_events e USING (request_id) WHERE e.status = 'rejected'")" = 0

# a lease live on each gateway when it stops: an idle one goes back on its own after
# RIGBOX_LEASE_IDLE_MS (1 s), so without these calls there is nothing left for the stop to close
sa=$(post $PA /v1/chat/completions $TOK7 "$CHAT")
sb=$(post $PB /v1/chat/completions $TOK7 "$CHAT")
LIVE=$(rb_sql "SELECT count(DISTINCT node_id) FROM credit_leases WHERE closed_at IS NULL")
kill -TERM "$PID_A" "$PID_B"
check "stop: a lease live on each gateway before the stop ($sa $sb, $LIVE nodes)" test "$sa $sb $LIVE" = "200 200 2"
wait "$PID_A" "$PID_B" 2>/dev/null
check "stop: every lease closed" test "$(rb_sql "SELECT count(*) FROM credit_leases WHERE closed_at IS NULL")" = 0
if grep -q 'runtime error\|ERROR: AddressSanitizer\|LeakSanitizer' "$RB_TMP"/gw-*.log; then
    fail "no sanitizer report"
    grep -B2 -A14 'runtime error\|ERROR: AddressSanitizer\|LeakSanitizer' "$RB_TMP"/gw-*.log | head -60
else
    ok "no sanitizer report"
fi
((RB_FAILED > 0)) && tail -n 30 "$RB_TMP"/gw-*.log
rb_finish
