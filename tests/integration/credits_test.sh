#!/usr/bin/env bash
# Credits, ledger, AI usage and limits endpoints of rigbox-control against a fresh database:
# grants (201 / replay 200 / 409 / 400 / 403), balances after grants and after usage posted through
# the ledger SQL functions, cursor pagination of the ledger, ai-usage groupings, ai/requests
# ownership, limits GET/PUT (PATCH semantics) and the rigbox_limits NOTIFY.
# usage: credits_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
. "$src/tests/integration/lib.sh"
rb_db_create

ctl_port=$(rb_free_port)
export RIGBOX_DATABASE_URL=$RB_DB_URL RIGBOX_CONTROL_LISTEN=127.0.0.1:$ctl_port
control=$build/control/rigbox-control
api=http://127.0.0.1:$ctl_port/api/v1
out=$RB_TMP/out.json

rb_spawn control "$control" --config "$src/config/rigbox.yaml"
if ! rb_wait_http "$api/healthz"; then
    fail "control answers /healthz"
    cat "$RB_TMP/control.log"
    rb_finish
    exit 1
fi
admin=$("$control" --config "$src/config/rigbox.yaml" admin create-key --role admin 2>/dev/null)

# req METHOD PATH KEY [BODY]: sets $code, the body is in $out.
req() {
    local args=(-s -o "$out" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $3")
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' -d "$4")
    code=$(curl "${args[@]}" "$api$2")
}
# expect "description" CODE [jq filter]: passes when $code is CODE and the filter holds on $out.
expect() {
    local d=$1 want=$2 filter=${3:-true}
    if [[ $code == "$want" ]] && jq -e "$filter" "$out" >/dev/null 2>&1; then
        ok "$d"
    else
        fail "$d (got $code: $(head -c 300 "$out"))"
    fi
}

req POST /users "$admin" '{"email":"alice@example.com"}'
alice=$(jq -r .user.id "$out")
req POST /users "$admin" '{"email":"bob@example.com"}'
bob=$(jq -r .user.id "$out")
akey=$("$control" --config "$src/config/rigbox.yaml" admin create-key --role user --user alice@example.com 2>/dev/null)
bkey=$("$control" --config "$src/config/rigbox.yaml" admin create-key --role user --user bob@example.com 2>/dev/null)
check "two users and their keys" bash -c "[[ $alice == u-* && $bob == u-* && $akey == rb_* && $bkey == rb_* ]]"

# ---- grants ----
g1='{"amount_credits":"10.5","idempotency_key":"topup-1","category":"paid","note":"first"}'
req POST "/users/$alice/credits/grants" "$admin" "$g1"
expect "a grant is 201 with both amount forms" 201 \
    '.grant.amount_micro == 10500000 and .grant.amount == "10.500000" and
     .grant.idempotency_key == "topup-1" and .grant.category == "paid" and .grant.note == "first"
     and .grant.expires_at == null'
cp "$out" "$RB_TMP/grant1.json"
req POST "/users/$alice/credits/grants" "$admin" "$g1"
expect "a replay is 200" 200
check "a replay returns the original grant, byte for byte" cmp -s "$out" "$RB_TMP/grant1.json"
req POST "/users/$alice/credits/grants" "$admin" \
    '{"amount_credits":"11","idempotency_key":"topup-1","category":"paid","note":"first"}'
expect "the same key with another amount is 409" 409 '.error.code == "idempotency_conflict"'
req POST "/users/$bob/credits/grants" "$admin" "$g1"
expect "the same key for another user is 409" 409 '.error.code == "idempotency_conflict"'
req POST "/users/$alice/credits/grants" "$admin" '{"amount_credits":"1","category":"paid"}'
expect "a missing idempotency_key is 400" 400 '.error.code == "invalid_request"'
req POST "/users/$alice/credits/grants" "$admin" '{"amount_credits":"1","idempotency_key":"x","category":"gift"}'
expect "a bad category is 400" 400
req POST "/users/$alice/credits/grants" "$admin" '{"amount_credits":"1.0000001","idempotency_key":"x","category":"paid"}'
expect "finer than a micro-credit is 400" 400
req POST "/users/$alice/credits/grants" "$admin" '{"amount_credits":1,"amount_micro":1,"idempotency_key":"x","category":"paid"}'
expect "both amount forms at once is 400" 400
req POST "/users/$alice/credits/grants" "$admin" '{"amount_micro":0,"idempotency_key":"x","category":"paid"}'
expect "a zero amount is 400" 400
req POST "/users/$alice/credits/grants" "$admin" '{"amount_micro":5,"idempotency_key":"x","category":"paid","colour":1}'
expect "an unknown field is 400" 400
req POST "/users/$alice/credits/grants" "$admin" '{"amount_micro":5,"idempotency_key":"x","category":"promo","expires_at":"2001-01-01T00:00:00Z"}'
expect "an expiry in the past is 400" 400
req POST "/users/$alice/credits/grants" "$admin" '{"amount_credits":"1000000000.000001","idempotency_key":"x","category":"paid"}'
expect "a grant over 1e9 credits (CTL_GRANT_MICRO_MAX) is 400" 400 '.error.message | test("at most 1000000000 credits")'
req POST "/users/$alice/credits/grants" "$admin" '{"amount_micro":5,"idempotency_key":"x","category":"paid","note":"a\u0085b"}'
expect "a note with a C1 control character is 400 (was 500)" 400 '.error.message | test("note")'
req POST "/users/$alice/credits/grants" "$admin" '{"amount_micro":5,"idempotency_key":"x","category":"paid","note":"a\u0000b"}'
expect "a note holding \\u0000 is 400 (was: cut at it)" 400 '.error.message | test("note")'
req POST "/users/$alice/credits/grants" "$akey" '{"amount_micro":5,"idempotency_key":"self","category":"paid"}'
expect "a user key cannot grant (403)" 403 '.error.code == "forbidden"'
req POST "/users/u-zzzzzzzz/credits/grants" "$admin" '{"amount_micro":5,"idempotency_key":"ghost","category":"paid"}'
expect "a grant to an unknown user is 404" 404
req POST "/users/$alice/credits/grants" "$admin" \
    '{"amount_micro":2000000,"idempotency_key":"promo-1","category":"promo","expires_at":"2099-01-01T00:00:00Z"}'
expect "a promo grant with an expiry" 201 '.grant.expires_at == "2099-01-01T00:00:00Z" and .grant.amount == "2.000000"'
check "no failed grant left a trace" test "$(rb_sql "SELECT count(*) FROM credit_transfers")" = 2

# ---- balances ----
req GET "/users/$alice/credits" "$admin"
expect "balance after grants" 200 \
    '.total_micro == 12500000 and .used_micro == 0 and .reserved_micro == 0 and
     .remaining_micro == 12500000 and .total == "12.500000" and .remaining == "12.500000"'
req GET /users/me/credits "$akey"
expect "a user reads its own balance at /users/me" 200 '.remaining_micro == 12500000'
req GET "/users/$alice/credits" "$bkey"
expect "a user cannot read another's balance (403)" 403
req GET "/users/u-zzzzzzzz/credits" "$admin"
expect "an unknown user's balance is 404" 404

check "a lease reserves 5 credits" test \
    "$(rb_sql "SELECT rb_lease_take('lease-1', 'gw-1', '$alice', 5000000, 60)")" = 5000000
req GET /users/me/credits "$akey"
expect "the lease shows as reserved" 200 \
    '.reserved_micro == 5000000 and .remaining_micro == 7500000 and .reserved == "5.000000"'
ev() { # ev REQUEST_ID USER COST [LEASE] [EXTRA_JSON]
    printf '{"request_id":"%s","user_id":"%s","route":"/v1/chat/completions","provider":"openai","model":"gpt-4o","mode":"managed","status":"ok","cost_micro":%s,"billed":true,"usage_source":"provider","input_uncached":100,"output":20,"lease_id":%s%s}' \
        "$1" "$2" "$3" "${4:-null}" "${5:-}"
}
batch="[$(ev req-a1 "$alice" 1200000 '"lease-1"'),$(ev req-a2 "$alice" 300000 '"lease-1"')]"
rb_sql "SELECT count(*) FROM rb_usage_post('$batch')" >/dev/null
check "a replayed batch is accepted and reported as replayed" \
    test "$(rb_sql "SELECT string_agg(replayed::text, ',') FROM rb_usage_post('$batch')")" = "true,true"
req GET /users/me/credits "$akey"
expect "usage moved from reserved to used, once" 200 \
    '.used_micro == 1500000 and .reserved_micro == 3500000 and .remaining_micro == 7500000 and
     .used == "1.500000"'
check "the lease returns its unused 3.5 credits" test \
    "$(rb_sql "SELECT rb_lease_return('lease-1')")" = 3500000
req GET /users/me/credits "$akey"
expect "after the return nothing is reserved" 200 \
    '.total_micro == 12500000 and .used_micro == 1500000 and .reserved_micro == 0 and
     .remaining_micro == 11000000'

# ---- ledger pagination ----
for i in 1 2 3 4 5 6 7; do
    rb_sql "SELECT count(*) FROM rb_grant('small-$i', '$alice', $i, 'paid', NULL, NULL)" >/dev/null
done
want=$(rb_sql "SELECT id FROM credit_transfers WHERE user_id = '$alice' ORDER BY id" | sort)
total=$(rb_sql "SELECT count(*) FROM credit_transfers WHERE user_id = '$alice'")
: >"$RB_TMP/seen"
cursor="" pages=0 ordered=1
while :; do
    req GET "/users/$alice/ledger?limit=3${cursor:+&cursor=$cursor}" "$admin"
    [[ $code == 200 ]] || break
    jq -r '.items[].id' "$out" >>"$RB_TMP/seen"
    jq -e '[.items[].created_at] | . == (sort | reverse)' "$out" >/dev/null || ordered=0
    pages=$((pages + 1))
    cursor=$(jq -r '.next_cursor // empty' "$out")
    [[ -z $cursor || $pages -gt 20 ]] && break
done
check "the ledger walks every transfer exactly once ($total in $pages pages)" \
    bash -c "[[ '$(sort "$RB_TMP/seen")' == '$want' && $(wc -l <"$RB_TMP/seen") == $total && $pages == $(((total + 2) / 3)) ]]"
check "ledger pages are newest first" test "$ordered" = 1
req GET "/users/me/ledger?limit=1" "$akey"
expect "the newest entry first, with kind and both amounts" 200 \
    '.items[0].id == "small-7" and .items[0].kind == "grant" and .items[0].amount_micro == 7 and
     .items[0].amount == "0.000007" and (.next_cursor | type) == "string"'
req GET "/users/me/ledger?cursor=nonsense" "$akey"
expect "a forged cursor is 400" 400 '.error.code == "invalid_cursor"'
req GET "/users/me/ledger?limit=0" "$akey"
expect "limit=0 is 400" 400
req GET "/users/$alice/ledger" "$bkey"
expect "another user's ledger is 403" 403
req GET "/users/me/ledger" "$bkey"
expect "an empty ledger" 200 '.items == [] and .next_cursor == null'

# ---- ai-usage ----
ins() { # ins REQUEST_ID TIME WORKSPACE MODEL SUBJECT COST BILLED IN OUT
    rb_sql "INSERT INTO usage_events (request_id, user_id, workspace_id, subject, route, model, mode,
            status, input_uncached, cache_read, output, cost_micro, billed, usage_source, created_at)
            VALUES ('$1', '$bob', $3, $5, '/v1/chat/completions', '$4',
                    CASE WHEN $7 THEN 'managed' ELSE 'byok' END, 'ok', $8, 10, $9, $6, $7,
                    'provider', '$2')"
}
ins b1 2026-01-05T10:00:00Z "'ws-aaaaaaaa'" gpt-4o "'alice-bot'" 100 true 1000 50
ins b2 2026-01-05T23:59:59Z "'ws-aaaaaaaa'" claude "'bob-bot'" 200 true 2000 60
ins b3 2026-01-06T00:00:00Z "'ws-bbbbbbbb'" gpt-4o NULL 400 true 3000 70
ins b4 2026-01-07T12:00:00Z NULL gpt-4o "'alice-bot'" 800 false 4000 80
ins b5 2026-02-01T00:00:00Z "'ws-bbbbbbbb'" gpt-4o NULL 1600 true 5000 90
q="from=2026-01-01&to=2026-01-31"
req GET "/users/$bob/ai-usage?$q&group_by=day" "$admin"
expect "group_by=day sums per UTC day" 200 \
    '[.items[] | {key, requests, credits_micro, cost_micro, input_tokens, output_tokens}] ==
     [{key:"2026-01-05",requests:2,credits_micro:300,cost_micro:300,input_tokens:3020,output_tokens:110},
      {key:"2026-01-06",requests:1,credits_micro:400,cost_micro:400,input_tokens:3010,output_tokens:70},
      {key:"2026-01-07",requests:1,credits_micro:0,cost_micro:800,input_tokens:4010,output_tokens:80}]
     and .total.requests == 4 and .total.credits_micro == 700 and .total.credits == "0.000700"
     and .total.cost_micro == 1500 and .items[0].credits == "0.000300"'
req GET "/users/$bob/ai-usage?$q&group_by=workspace" "$admin"
expect "group_by=workspace (null = outside any workspace)" 200 \
    '[.items[] | [.key, .requests, .credits_micro]] ==
     [[null,1,0],["ws-aaaaaaaa",2,300],["ws-bbbbbbbb",1,400]]'
req GET "/users/$bob/ai-usage?$q&group_by=model" "$admin"
expect "group_by=model" 200 '[.items[] | [.key, .requests, .cost_micro]] == [["claude",1,200],["gpt-4o",3,1300]]'
req GET "/users/$bob/ai-usage?$q&group_by=subject" "$admin"
expect "group_by=subject" 200 \
    '[.items[] | [.key, .requests, .cost_micro]] == [[null,1,400],["alice-bot",2,900],["bob-bot",1,200]]'
req GET "/users/$bob/ai-usage?from=2026-01-05T12:00:00Z&to=2026-01-06&group_by=day" "$admin"
expect "RFC 3339 from, and a date as 'to' includes that day" 200 \
    '[.items[].key] == ["2026-01-05","2026-01-06"] and .total.requests == 2 and
     .from == "2026-01-05T12:00:00Z" and .to == "2026-01-07T00:00:00Z"'
req GET "/users/me/ai-usage?group_by=day" "$bkey"
expect "the default window is the last 30 days" 200 '.items == [] and .group_by == "day"'
req GET "/users/$bob/ai-usage?$q&group_by=hour" "$admin"
expect "a bad group_by is 400" 400
req GET "/users/$bob/ai-usage?from=yesterday" "$admin"
expect "a bad from is 400" 400
req GET "/users/$bob/ai-usage?from=2026-02-30" "$admin"
expect "an impossible date is 400" 400
req GET "/users/$bob/ai-usage?from=2026-02-01&to=2026-01-01" "$admin"
expect "from after to is 400" 400
req GET "/users/$bob/ai-usage?from=2020-01-01&to=2026-01-01" "$admin"
expect "a window over 400 days is 400" 400

# ---- ai/requests ----
req GET /ai/requests/req-a1 "$akey"
expect "the owner reads its request record" 200 \
    '.request_id == "req-a1" and .cost_micro == 1200000 and .cost_credits == "1.200000" and
     .model == "gpt-4o" and .billed == true and .ledger.posted_micro == 1200000 and
     .ledger.lease_id == "lease-1" and (.created_at | test("Z$"))'
req GET /ai/requests/b1 "$akey"
expect "another user's request is 404" 404 '.error.code == "request_not_found"'
req GET /ai/requests/b1 "$admin"
expect "an admin reads any request" 200 '.request_id == "b1" and .ledger == null'
req GET /ai/requests/nope "$admin"
expect "an unknown request is 404" 404

# ---- limits ----
req GET /users/me/limits "$akey"
expect "limits come from the plan" 200 \
    '.plan == "free" and .custom == false and .limits.max_vms == 2 and .limits.rpm == 60 and
     .limits.credits_per_month == 250 and .limits.allowed_models == [] and .overrides == {} and
     .usage.vms == 0 and .usage.credits_today_micro == 1500000 and .usage.credits_today == "1.500000"
     and .usage.credits_this_month_micro == 1500000'
req PUT "/users/$alice/limits" "$admin" '{"max_vms":5,"rpm":0,"allowed_models":["gpt-4o","haiku"]}'
expect "PUT sets overrides, an alias stored as its model's name" 200 \
    '.custom == true and .limits.max_vms == 5 and .limits.rpm == 0 and .limits.tpm == 200000 and
     .limits.allowed_models == ["gpt-4o","claude-haiku-4-5"] and .overrides == {max_vms:5,rpm:0,allowed_models:["gpt-4o","claude-haiku-4-5"]}'
req PUT "/users/$alice/limits" "$admin" '{"max_vms":null}'
expect "null clears one override, omitted ones stay" 200 \
    '.limits.max_vms == 2 and .limits.rpm == 0 and .limits.allowed_models == ["gpt-4o","claude-haiku-4-5"]'
req PUT "/users/$alice/limits" "$admin" '{"allowed_models":null,"rpm":null}'
expect "clearing every override" 200 '.custom == false and .overrides == {} and .limits.rpm == 60'
req PUT "/users/$alice/limits" "$admin" '{"max_vms":3,"max_cpus":1}'
expect "an unknown field is 400" 400 '.message | test("max_cpus")'
req PUT "/users/$alice/limits" "$admin" '{"max_vms":-1}'
expect "a negative limit is 400" 400
req PUT "/users/$alice/limits" "$admin" '{"allowed_models":[1]}'
expect "a non-string model is 400" 400
req PUT "/users/$alice/limits" "$admin" '{"allowed_models":["claude"]}'
expect "a model not configured is 400 (it allowed nothing: every call was 403)" 400 '.message | test("configured model")'
req PUT "/users/$alice/limits" "$admin" '{"max_vms":"3"}'
expect "a string number is 400" 400
check "refused PUTs changed nothing" test "$(rb_sql "SELECT coalesce(max_vms, -1) FROM user_limits WHERE user_id = '$alice'")" = -1
req PUT /users/me/limits "$akey" '{"max_vms":9}'
expect "a user key cannot change limits (403)" 403
req PUT "/users/u-zzzzzzzz/limits" "$admin" '{"max_vms":9}'
expect "limits of an unknown user are 404" 404
req GET "/users/$alice/limits" "$bkey"
expect "another user's limits are 403" 403

# NOTIFY rigbox_limits, <user id> reaches a listener when limits change.
{ echo "LISTEN rigbox_limits;"; sleep 2; echo "SELECT 1;"; } |
    psql -h "$RB_TEST_PGHOST" -U postgres -d "$RB_DB" -qAt >"$RB_TMP/listen.txt" 2>&1 &
listener=$!
sleep 0.7
req PUT "/users/$bob/limits" "$admin" '{"tpm":1234}'
wait "$listener"
check "a limits change NOTIFYs rigbox_limits with the user id" \
    grep -q "notification \"rigbox_limits\" with payload \"$bob\"" "$RB_TMP/listen.txt"

# A balance near the int64 bound: the next grant is refused as such, not as a bad expires_at.
req POST /users "$admin" '{"email":"carl@example.com"}'
carl=$(jq -r .user.id "$out")
rb_sql "SELECT count(*) FROM rb_grant('huge-1', '$carl', 9223372036854000000, 'paid', NULL, NULL)" >/dev/null
req POST "/users/$carl/credits/grants" "$admin" '{"amount_credits":"1000","idempotency_key":"huge-2","category":"paid"}'
expect "a grant past the largest balance is 400 balance_limit" 400 '.error.code == "balance_limit"'

rb_finish
