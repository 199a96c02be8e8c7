#!/usr/bin/env bash
# The workspace API without booting VMs: create (template floors, env), plan limits (402 plan_limit),
# illegal transitions (409), resources and env, tokens (minted, rotated, revoked, stored as hashes),
# AI config (BYOK key write-only and encrypted), quick-deploy's answer shape, capacity.
# usage: workspaces_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
. "$src/tests/integration/lib.sh"
rb_db_create
ctl_port=$(rb_free_port)
export RIGBOX_DATABASE_URL=$RB_DB_URL RIGBOX_CONTROL_LISTEN=127.0.0.1:$ctl_port
export RIGBOX_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
cfg=$RB_TMP/rigbox.yaml
cat >"$cfg" <<YAML
models: $src/config/models.yaml
templates: $src/config/templates
vmm:
  image_dir: $RB_TMP/no-images
  state_dir: $RB_TMP/vms
YAML
control=$build/control/rigbox-control
rb_spawn control "$control" --config "$cfg"
control_pid=$RB_LAST_PID
api=http://127.0.0.1:$ctl_port/api/v1
rb_wait_http "$api/healthz" || { cat "$RB_TMP/control.log"; exit 1; }
admin=$("$control" --config "$cfg" admin create-key --role admin 2>/dev/null)
ukey=$("$control" --config "$cfg" admin create-key --role user --user bob@example.com 2>/dev/null)
A=(-H "Authorization: Bearer $admin")
U=(-H "Authorization: Bearer $ukey")
req() { # req METHOD PATH [BODY] with the user key: sets $code and $body
    code=$(curl -s -o "$RB_TMP/resp.json" -w '%{http_code}' "${U[@]}" -X "$1" "$api$2" ${3:+-d "$3"})
    body=$(cat "$RB_TMP/resp.json")
}

req POST /workspaces '{"name":"small","template_id":"base","ram_mb":64,"env_vars":{"GREETING":"hi"}}'
check "create is 201" test "$code" = 201
ws=$(jq -r .vm.id <<<"$body")
check "resources below the template floor are raised to it" \
    jq -e '.vm.ram_mb == 512 and .vm.vcpu_count == 1 and .vm.disk_size_mb == 3072 and .vm.status == "provisioned"' <<<"$body"
check "env_vars are kept" jq -e '.vm.env_vars.GREETING == "hi"' <<<"$body"
req POST /workspaces '{"name":"bad","template_id":"nope"}'
check "an unknown template is 400" test "$code" = 400
req POST /workspaces '{"name":"bad","env_vars":{"1BAD":"x"}}'
check "a bad env var name is 400" test "$code" = 400
req POST /workspaces '{"template_id":"base"}'
check "a missing name is 400" test "$code" = 400
req POST /workspaces '{"name":"big","template_id":"base","ram_mb":8192}'
check "RAM over the plan is 402 plan_limit" bash -c "[ $code = 402 ] && jq -e '.error.code == \"plan_limit\" and (.error.message | test(\"MB of RAM per workspace\"))' <<<'$body'"
req POST /workspaces '{"name":"second","template_id":"base","disk_size_mb":6000}'
check "disk over the plan's total is 402 plan_limit" bash -c "[ $code = 402 ] && jq -e '.error.code == \"plan_limit\" and (.error.message | test(\"MB of disk in all\"))' <<<'$body'"
req GET /users/me
curl -fsS -o /dev/null "${A[@]}" -X PUT "$api/users/$(jq -r .user.id <<<"$body")/limits" \
    -d '{"max_vms":1,"max_disk_total_mb":100000}'
req POST /workspaces '{"name":"third","template_id":"base"}'
check "a per-user override (max_vms 1) applies" bash -c "[ $code = 402 ] && jq -e '.error.message | test(\"1 workspaces\")' <<<'$body'"

req POST "/workspaces/$ws/stop"
check "stop of a provisioned workspace is 409" test "$code" = 409
req POST "/workspaces/$ws/retry"
check "retry of a provisioned workspace is 409" test "$code" = 409
req POST "/workspaces/$ws/cancel"
check "cancel of a provisioned workspace is 409" test "$code" = 409
req PUT "/workspaces/$ws/resources" '{"ram_mb":1024,"vcpu_count":1}'
check "resources of a provisioned workspace change" bash -c "[ $code = 200 ] && jq -e '.vm.ram_mb == 1024' <<<'$body'"
req PUT "/workspaces/$ws/resources" '{"disk_size_mb":1024}'
check "a disk cannot shrink (400)" test "$code" = 400
req POST "/workspaces/$ws/env" '{"env_vars":{"GREETING":null,"MODE":"dev"}}'
check "env merges; null removes" bash -c "[ $code = 200 ] && curl -fsS ${U[*]@Q} $api/workspaces/$ws | jq -e '.vm.env_vars == {\"MODE\":\"dev\"}' >/dev/null"

req POST "/workspaces/$ws/token"
tok=$(jq -r .token <<<"$body")
check "a token is minted once (rbw_…)" bash -c "[ $code = 201 ] && [[ '$tok' =~ ^rbw_[0-9A-Za-z]{40}$ ]]"
check "only its hash is stored" test "$(rb_sql "SELECT count(*) FROM workspace_tokens WHERE encode(token_hash,'hex') = encode(sha256('$tok'::bytea),'hex') AND revoked_at IS NULL")" = 1
# the token a boot gives the guest (schema/0009): minting through the API must not revoke it
rb_sql "INSERT INTO workspace_tokens (workspace_id, token_hash, prefix, kind) VALUES ('$ws', sha256('rbw_bootbootboot'::bytea), 'rbw_bootboot', 'boot')" >/dev/null
req POST "/workspaces/$ws/token"
check "rotation revokes the previous token" test "$(rb_sql "SELECT count(*) FROM workspace_tokens WHERE token_hash = sha256('$tok'::bytea) AND revoked_at IS NOT NULL")" = 1
check "minting leaves the running VM's token live" test "$(rb_sql "SELECT count(*) FROM workspace_tokens WHERE token_hash = sha256('rbw_bootbootboot'::bytea) AND revoked_at IS NULL")" = 1
req POST "/workspaces/$ws/token" '{"ttl_s":60}'
check "a mint with an option it does not have is 400 (not a token that never expires)" test "$code" = 400
req DELETE "/workspaces/$ws/token" '{"kind":"api"}'
check "a revoke naming a kind is 400 (it revokes every kind)" test "$code" = 400
# Mints at the same time: each sees the old token; the later insert meets the earlier one's new
# token (one live per kind) and runs again (before: 500 now and then).
codes=""
for round in 1 2 3; do
    mints=()
    for i in 1 2 3 4 5 6 7 8; do
        curl -s -o /dev/null -w '%{http_code}\n' "${U[@]}" -X POST "$api/workspaces/$ws/token" >"$RB_TMP/mint-$round-$i" &
        mints+=($!)
    done
    wait "${mints[@]}"
    codes+="$(cat "$RB_TMP"/mint-$round-* | sort | uniq -c | tr -s ' \n' ' ')"
done
check "24 mints, 8 at a time: all 201, one live token ($codes)" \
    bash -c "[ \"\$(cat $RB_TMP/mint-* | sort -u)\" = 201 ] && [ \"\$(psql -h $RB_TEST_PGHOST -U postgres -d $RB_DB -qAt -c \"SELECT count(*) FROM workspace_tokens WHERE workspace_id='$ws' AND kind = 'api' AND revoked_at IS NULL\")\" = 1 ]"
req DELETE "/workspaces/$ws/token"
check "revoke leaves no live token" bash -c "[ $code = 200 ] && [ \"\$(psql -h $RB_TEST_PGHOST -U postgres -d $RB_DB -qAt -c \"SELECT count(*) FROM workspace_tokens WHERE workspace_id='$ws' AND revoked_at IS NULL\")\" = 0 ]"

req GET "/workspaces/$ws/ai-config"
check "AI config defaults to managed" jq -e '.mode == "managed" and .status == "managed_active"' <<<"$body"
req PUT "/workspaces/$ws/ai-config" '{"mode":"byok","provider":"openai"}'
check "byok without a key is invalid_missing_key" jq -e '.status == "invalid_missing_key"' <<<"$body"
req PUT "/workspaces/$ws/ai-config" '{"mode":"byok","provider":"openai","api_key":"sk-user-secret-123"}'
check "byok with a key is active and the key is not echoed" \
    bash -c "jq -e '.status == \"byok_active\" and .has_api_key == true' <<<'$body' >/dev/null && ! grep -q sk-user-secret <<<'$body'"
check "the key is stored encrypted" test "$(rb_sql "SELECT count(*) FROM ai_configs WHERE position('sk-user-secret' in encode(key_ciphertext,'escape')) = 0 AND octet_length(key_nonce) = 12")" = 1
check "the key never reaches the log" bash -c "! grep -q sk-user-secret $RB_TMP/control.log"
# PUT merges (DESIGN.md §4: omitted = keep, null = clear)
req PUT "/workspaces/$ws/ai-config" '{"model":"gpt-4o"}'
check "a PUT of the model alone keeps the mode, provider and key" \
    jq -e '.mode == "byok" and .provider == "openai" and .model == "gpt-4o" and .status == "byok_active"' <<<"$body"
req PUT "/workspaces/$ws/ai-config" '{"provider":"anthropic"}'
check "a provider that does not serve the model is 400 model_provider_mismatch" \
    bash -c "[ $code = 400 ] && jq -e '.error.code == \"model_provider_mismatch\"' <<<'$body' >/dev/null"
req PUT "/workspaces/$ws/ai-config" '{"api_key":"sk-a\r\nX-Evil: 1"}'
check "a key with control characters is 400 (it goes into a header)" test "$code" = 400
req PUT "/workspaces/$ws/ai-config" '{"api_key":"sk bad"}'
check "a key with a space is 400" test "$code" = 400
req GET "/workspaces/$ws/ai-config"
check "the refused PUTs changed nothing" jq -e '.provider == "openai" and .model == "gpt-4o" and .has_api_key' <<<"$body"
req PUT "/workspaces/$ws/ai-config" '{"api_key":null}'
check "api_key null clears the key, the rest stays" \
    jq -e '.mode == "byok" and .provider == "openai" and .model == "gpt-4o" and .has_api_key == false and .status == "invalid_missing_key"' <<<"$body"
req PUT "/workspaces/$ws/ai-config" '{"model":null,"api_key":"sk-user-secret-456"}'
check "a key alone is for the stored provider; model null clears the model" \
    jq -e '.provider == "openai" and .model == null and .status == "byok_active"' <<<"$body"
req PUT "/workspaces/$ws/ai-config" '{"provider":null,"api_key":"sk-x"}'
check "a key with no provider is 400" test "$code" = 400
req PUT "/workspaces/$ws/ai-config" '{"mode":"managed","api_key":"sk-x"}'
check "a key with mode managed is 400" test "$code" = 400
req PUT "/workspaces/$ws/ai-config" '{"mode":"managed"}'
req PUT "/workspaces/$ws/ai-config" '{"mode":"byok"}'
check "switching to managed dropped the key" jq -e '.provider == "openai" and .has_api_key == false' <<<"$body"
req PUT "/workspaces/$ws/ai-config" '{"mode":"byok","model":"no-such-model"}'
check "an unknown model is 400" test "$code" = 400

other=$("$control" --config "$cfg" admin create-key --role user --user eve@example.com 2>/dev/null)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $other" "$api/workspaces/$ws")
check "another user's workspace is 404" test "$code" = 404
code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$api/workspaces/$ws")
check "an admin sees it" test "$code" = 200

# Lists: an admin lists any user's (?user_id=; it used to get its own), in pages that follow
pager=$(curl -fsS "${A[@]}" -X POST "$api/users" -d '{"email":"pager@example.com","plan":"pro"}' | jq -r .user.id)
for n in p1 p2 p3; do
    curl -fsS -o /dev/null "${A[@]}" -X POST "$api/workspaces" -d "{\"name\":\"$n\",\"user_id\":\"$pager\"}"
done
p1=$(curl -fsS "${A[@]}" "$api/workspaces?user_id=$pager&limit=2")
p2=$(curl -fsS "${A[@]}" "$api/workspaces?user_id=$pager&limit=2&cursor=$(jq -r .next_cursor <<<"$p1")")
check "an admin pages through another user's workspaces" \
    jq -en --argjson a "$p1" --argjson b "$p2" '[$a.items[].name] == ["p1","p2"] and ($a.next_cursor | type) == "string"
        and [$b.items[].name] == ["p3"] and $b.next_cursor == null'
check "a whole page ends the list" jq -e '(.items | length) == 3 and .next_cursor == null' \
    <(curl -fsS "${A[@]}" "$api/workspaces?user_id=$pager&limit=3")
check "keys list by user too" jq -e '.items == [] and .next_cursor == null' \
    <(curl -fsS "${A[@]}" "$api/api-keys?user_id=$pager")
codes="$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$api/workspaces?cursor=garbage")"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$api/workspaces?limit=0")"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" "$api/workspaces?user_id=$pager")"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" "$api/api-keys?user_id=$pager")"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$api/workspaces?user_id=u-nobody00")"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$api/workspaces?limit=201")"
check "a bad cursor or limit is 400; a user key may not list another user's; no such user is 404 ($codes)" \
    test "$codes" = "400 400 403 403 404 400"

# A user's AI defaults (DESIGN §4): what a workspace without its own AI config uses
pws=($(curl -fsS "${A[@]}" "$api/workspaces?user_id=$pager" | jq -r '.items[].id'))
check "without defaults: managed (source default)" jq -e '.mode == "managed" and .source == "default"' \
    <(curl -fsS "${A[@]}" "$api/users/$pager/ai-defaults")
d=$(curl -fsS "${A[@]}" -X PUT "$api/users/$pager/ai-defaults" -d '{"mode":"byok","provider":"openai","api_key":"sk-pager-default"}')
check "PUT ai-defaults stores a BYOK default" \
    jq -e '.mode == "byok" and .provider == "openai" and .has_api_key and .status == "byok_active" and .source == "user_default" and (tostring | contains("sk-pager") | not)' <<<"$d"
check "the default key is stored encrypted" test "$(rb_sql "SELECT count(*) FROM ai_configs WHERE scope = 'user_default' AND user_id = '$pager' AND position('sk-pager-default' in encode(key_ciphertext, 'escape')) = 0")" = 1
check "a workspace without its own config shows the default in effect" \
    jq -e '.mode == "byok" and .has_api_key and .source == "user_default"' <(curl -fsS "${A[@]}" "$api/workspaces/${pws[0]}/ai-config")
code=$(curl -s -o "$RB_TMP/out" -w '%{http_code}' "${A[@]}" -X PUT "$api/workspaces/${pws[0]}/ai-config" -d '{"model":"gpt-4o-mini"}')
check "a workspace on its owner's default: a PUT without mode is 400 (it would turn it to managed)" \
    bash -c "[ $code = 400 ] && jq -e '.source == \"user_default\"' <(curl -fsS ${A[*]@Q} $api/workspaces/${pws[0]}/ai-config) >/dev/null"
curl -fsS -o /dev/null "${A[@]}" -X PUT "$api/workspaces/${pws[1]}/ai-config" -d '{"mode":"managed"}'
check "a workspace's own config wins" \
    jq -e '.mode == "managed" and .source == "workspace"' <(curl -fsS "${A[@]}" "$api/workspaces/${pws[1]}/ai-config")
code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" -X PUT "$api/workspaces/${pws[1]}/ai-config" -d '{"mode":null,"model":"gpt-4o"}')
check "mode null with other fields is 400 (it clears the whole config)" test "$code" = 400
d=$(curl -fsS "${A[@]}" -X PUT "$api/workspaces/${pws[1]}/ai-config" -d '{"mode":null}')
check "mode null alone removes the workspace's own config: it follows its owner's default again" \
    jq -e '.mode == "byok" and .source == "user_default"' <<<"$d"
curl -fsS -o /dev/null "${A[@]}" -X PUT "$api/workspaces/${pws[1]}/ai-config" -d '{"mode":"managed"}'
d=$(curl -fsS "${A[@]}" -X PUT "$api/users/$pager/ai-defaults" -d '{"mode":"byok","provider":"openai","model":"gpt-4o-mini"}')
check "a new PUT without a key keeps the stored key for the same provider" jq -e '.has_api_key and .model == "gpt-4o-mini"' <<<"$d"
d=$(curl -fsS "${A[@]}" -X PUT "$api/users/$pager/ai-defaults" -d '{"default_mode":"byok","default_provider":"anthropic","default_model":"claude-haiku-4-5"}')
check "ai-defaults take and give the hosted API's default_* names too" \
    jq -e '.default_mode == "byok" and .default_provider == "anthropic" and .default_model == "claude-haiku-4-5" and .provider == "anthropic"' <<<"$d"
check "another provider without a key drops the stored one (an OpenAI key is never Anthropic's)" \
    jq -e '.has_api_key == false and .status == "invalid_missing_key"' <<<"$d"
code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" -X PUT "$api/users/$pager/ai-defaults" -d '{"mode":"byok","provider":null,"api_key":"sk-for-whom"}')
check "a key without its provider is 400" test "$code" = 400
d=$(curl -fsS "${A[@]}" -X PUT "$api/users/$pager/ai-defaults" -d '{"default_model":"claude-sonnet-4-5"}')
check "ai-defaults merge too (the hosted names)" \
    jq -e '.default_mode == "byok" and .default_provider == "anthropic" and .default_model == "claude-sonnet-4-5"' <<<"$d"
code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" -X PUT "$api/users/$pager/ai-defaults" -d '{"default_mode":"byok","model":"gpt-4o-mini"}')
check "the two namings do not mix (400)" test "$code" = 400

# A log stream on a workspace that never booted (no files) ends too once it is deleted: its row is
# asked for every 5 s; the check waits near the end of this script.
timeout 40 curl -sN "${A[@]}" "$api/workspaces/${pws[2]}/logs/stream" >"$RB_TMP/stream-nb.txt" 2>/dev/null &
nb_stream=$!
sleep 0.5
curl -fsS -o /dev/null "${A[@]}" -X DELETE "$api/workspaces/${pws[2]}"
codes="$(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" "$api/users/$pager/ai-defaults")"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$api/users/u-nobody00/ai-defaults")"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" -X PUT "$api/users/me/ai-defaults" -d '{"mode":"managed","key":"x"}')"
codes+=" $(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" -X PUT "$api/users/me/ai-defaults" -d '{"mode":"managed"}')"
check "ai-defaults: another user's is 403, no such user 404, an unknown field 400, me 200 ($codes)" \
    test "$codes" = "403 404 400 200"
check "capacity is public" jq -e '.total > 0 and .available == true' <(curl -fsS "$api/capacity")

# ---- input the API refuses, and plan caps under concurrency -------------------------------------
carol=$("$control" --config "$cfg" admin create-key --role user --user carol@example.com 2>/dev/null)
C=(-H "Authorization: Bearer $carol")
creq() { # creq METHOD PATH [BODY] with carol's key: sets $code and $body
    code=$(curl -s -o "$RB_TMP/resp.json" -w '%{http_code}' "${C[@]}" -X "$1" "$api$2" ${3:+-d "$3"})
    body=$(cat "$RB_TMP/resp.json")
}
creq GET /users/me
carol_id=$(jq -r .user.id <<<"$body")
# A request without a body reads as {}: it used to abort the whole server (an assertion).
codes=""
for route in "POST /workspaces" "POST /quick-deploy" "PUT /workspaces/$ws/ai-config" "POST /workspaces/$ws/env"; do
    set -- $route
    codes+="$(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" -X "$1" "$api$2") "
done
codes+="$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" -X POST "$api/users")"
check "requests without a body are 400 (an ai-config PUT of nothing keeps all: 200), the server lives ($codes)" \
    bash -c "[ '$codes' = '400 400 200 400 400' ] && curl -fsS -o /dev/null $api/healthz"
# A field the endpoint does not know is 400, not silently ignored (a typo like "ram" for "ram_mb")
codes=""
for rb in "POST /workspaces {\"name\":\"t\",\"ram\":4096}" "POST /quick-deploy {\"template_id\":\"base\",\"bogus\":1}" \
    "PUT /workspaces/$ws/resources {\"ram\":4096}" "POST /workspaces/$ws/env {\"env_vars\":{},\"env\":{}}" \
    "PUT /workspaces/$ws/ai-config {\"mode\":\"managed\",\"modle\":\"x\"}" "POST /api-keys {\"nmae\":\"x\"}" \
    "POST /workspaces/$ws/stop {\"force\":true}" "POST /workspaces {\"name\":\"t\",\"ram_mb\u0000x\":9}"; do
    set -- $rb
    code=$(curl -s -o "$RB_TMP/resp.json" -w '%{http_code}' "${U[@]}" -X "$1" "$api$2" -d "$3")
    jq -e '.error.message | startswith("unknown field")' "$RB_TMP/resp.json" >/dev/null || code="$code?"
    codes+="$code "
done
code=$(curl -s -o "$RB_TMP/resp.json" -w '%{http_code}' "${A[@]}" -X POST "$api/users" -d '{"email":"typo@example.com","plna":"pro"}')
codes+="$code"
check "unknown fields are 400 on every body ($codes)" test "$codes" = "400 400 400 400 400 400 400 400 400"
creq POST /api-keys
check "POST /api-keys without a body mints a key for the caller" jq -e '.key | startswith("rb_")' <<<"$body"
creq POST /api-keys '{"name":"a\nb"}'
check "a key name with a control character is 400, not 404 user_not_found" test "$code" = 400
creq POST /api-keys '{"user_id":12345}'
check "a user_id that is not a string is 400 (was: the caller)" test "$code" = 400
creq POST /workspaces '{"name":"a\u0085b"}'
check "a workspace name with a C1 control character is 400 (was 500)" \
    bash -c "[ $code = 400 ] && jq -e '.error.code == \"invalid_request\"' <<<'$body' >/dev/null"
code=$(curl -s -o "$RB_TMP/resp.json" -w '%{http_code}' "${A[@]}" -X POST "$api/users" -d '{"email":"Éve@example.com"}')
check "a non-ASCII capital in an email is lowered by the database (was 500)" \
    bash -c "[ $code = 201 ] && jq -e '.user.email == \"éve@example.com\"' $RB_TMP/resp.json >/dev/null"
code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" -X POST "$api/users" -d '{"email":"mallory@example.com\u0000x"}')
check "an email holding \\u0000 is 400 (was: cut at it)" test "$code" = 400

curl -fsS -o /dev/null "${A[@]}" -X PUT "$api/users/$carol_id/limits" \
    -d '{"max_vms":1,"max_disk_total_mb":8000,"max_running_vcpus":0}'
racers=()
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
    curl -s -o /dev/null "${C[@]}" -X POST "$api/workspaces" -d "{\"name\":\"race$i\"}" &
    racers+=($!)
done
wait "${racers[@]}"
check "12 concurrent creates under max_vms 1 make one workspace" \
    test "$(rb_sql "SELECT count(*) FROM workspaces WHERE user_id = '$carol_id'")" = 1
cws=$(rb_sql "SELECT id FROM workspaces WHERE user_id = '$carol_id'")
creq PUT "/workspaces/$cws/resources" '{"disk_size_mb":16000000}'
check "a resize past max_disk_total_mb is 402 (was 200)" \
    bash -c "[ $code = 402 ] && [ \"\$(psql -h $RB_TEST_PGHOST -U postgres -d $RB_DB -qAt -c \"SELECT disk_size_mb FROM workspaces WHERE id = '$cws'\")\" = 3072 ]"
curl -fsS -o /dev/null "${A[@]}" -X PUT "$api/users/$carol_id/limits" -d '{"max_vms":5}'
creq POST /quick-deploy '{"name":"qd"}'
check "quick-deploy needs a template_id" bash -c "[ $code = 400 ] && jq -e '.error.message | test(\"template_id\")' <<<'$body' >/dev/null"
creq POST /quick-deploy '{"template_id":"base"}'
check "quick-deploy refused at start is 402 and leaves no workspace" \
    bash -c "[ $code = 402 ] && [ \"\$(psql -h $RB_TEST_PGHOST -U postgres -d $RB_DB -qAt -c \"SELECT count(*) FROM workspaces WHERE user_id = '$carol_id'\")\" = 1 ]"
creq POST /quick-deploy '{"image":"base"}'
check "quick-deploy takes image, template_id's old alias (refused at start here: 402, not 400)" test "$code" = 402
creq POST "/workspaces/$cws/env" '{"env_vars":{"my-var":"x"}}'
check "env: a name the guest refuses is 400 (was 200, then every boot failed)" test "$code" = 400
many=$(jq -nc '{env_vars: ([range(0; 100) | {key: "A\(.)", value: "x"}] | from_entries)}')
creq POST "/workspaces/$cws/env" "$many"
code1=$code
many=$(jq -nc '{env_vars: ([range(100; 129) | {key: "A\(.)", value: "x"}] | from_entries)}')
creq POST "/workspaces/$cws/env" "$many"
check "env: a merge past 128 variables is 400 ($code1 $code)" test "$code1 $code" = "200 400"

# Console logs paged by cursor: a line longer than one read (1 MiB) comes cut in pieces, not as a
# cursor that never moves again (the reader kept complete lines only, so it found none there).
mkdir -p "$RB_TMP/vms/$ws"
{ echo first; head -c 1572864 /dev/zero | tr '\0' x; printf '\nlast\n'; } >"$RB_TMP/vms/$ws/console.log"
cursor=0 seen=""
for ((i = 0; i < 6; i++)); do
    req GET "/workspaces/$ws/logs?cursor=$cursor&lines=500"
    seen+=$(jq -r '.lines[] | if length > 100 then "<\(length)>" else . end' <<<"$body" | paste -sd' ')" "
    [[ $(jq -r .next_cursor <<<"$body") == "$cursor" ]] && break
    cursor=$(jq -r .next_cursor <<<"$body")
done
check "logs paged past a line longer than a read: $seen" test "$seen" = "first <1048576> <524288> last  "
check "and the cursor ends at the file's end" test "$cursor" = "$(stat -c %s "$RB_TMP/vms/$ws/console.log")"
printf 'l1\nl2\nl3\nl4\nl5\n' >"$RB_TMP/vms/$ws/console.log"
req GET "/workspaces/$ws/logs?lines=3"
check "lines=3 gives the newest three, oldest first" test "$(jq -r '.lines | join(",")' <<<"$body")" = "l3,l4,l5"
# From a cursor, lines=N pages forward: the first N after it, and the cursor moves past those only
# (it used to give the newest N and jump to the end: the lines between were never seen).
printf 'l1\n[app:a] a1\nl2\n[app:a] a2\nl3\n[app:a] a3\nl4\n' >"$RB_TMP/vms/$ws/console.log"
cursor=0 pages=""
for ((i = 0; i < 6; i++)); do
    req GET "/workspaces/$ws/logs?cursor=$cursor&lines=2"
    pages+="$(jq -r '.lines | join(",")' <<<"$body")/"
    [[ $(jq -r .next_cursor <<<"$body") == "$cursor" ]] && break
    cursor=$(jq -r .next_cursor <<<"$body")
done
check "logs page forward from a cursor, two lines at a time ($pages)" \
    test "$pages" = "l1,[app:a] a1/l2,[app:a] a2/l3,[app:a] a3/l4//"
req GET "/workspaces/$ws/logs?cursor=0&lines=2&app=a"
c1=$(jq -r .next_cursor <<<"$body") p1=$(jq -r '.lines | join(",")' <<<"$body")
req GET "/workspaces/$ws/logs?cursor=$c1&lines=2&app=a"
check "and with an app filter ($p1 / $(jq -r '.lines | join(",")' <<<"$body"))" \
    test "$p1/$(jq -r '.lines | join(",")' <<<"$body")" = "[app:a] a1,[app:a] a2/[app:a] a3"
codes=""
for q in "lines=5000000000000000000000000000000000000" "cursor=99999999999999999999" "lines=-1" "cursor=1x" "lines=%2B5" "cursor=%205"; do
    req GET "/workspaces/$ws/logs?$q"
    codes+="$code "
done
check "logs: a count or cursor past any range or not all digits is 400, not ignored or clamped ($codes)" test "$codes" = "400 400 400 400 400 400 "
# A \r inside a line (a progress bar) ends an SSE line too: it is sent as another data line of the
# same event, never as the start of a bare line the client would read as a field.
printf 'step 10%%\rstep 50%%\rdone\nnext\n' >"$RB_TMP/vms/$ws/console.log"
timeout 2 curl -sN "${U[@]}" "$api/workspaces/$ws/logs/stream" >"$RB_TMP/stream.txt" 2>/dev/null
check "logs stream: a line broken by \\r comes as data lines of one event" \
    bash -c "tr '\r' '\n' <'$RB_TMP/stream.txt' | grep -v '^\$' | grep -v '^:' | grep -vq '^data: ' && exit 1; grep -c '^data: ' '$RB_TMP/stream.txt' | grep -qx 4"
# The stream ends, with an `end` event, once the workspace's files are gone (a delete); it used to
# send keep-alives until the client gave up.
timeout 10 curl -sN "${U[@]}" "$api/workspaces/$ws/logs/stream" >"$RB_TMP/stream.txt" 2>/dev/null &
spid=$!
sleep 1
rm -rf "$RB_TMP/vms/$ws"
wait "$spid"
check "logs stream: ends with an end event when the workspace's files go (rc $?)" \
    grep -q '^event: end' "$RB_TMP/stream.txt"

# Starting without images fails the boot, with a retryable failure naming the fix.
req POST "/workspaces/$ws/start"
check "start answers 200 at once" test "$code" = 200
for ((i = 0; i < 40; i++)); do
    req GET "/workspaces/$ws"
    [[ $(jq -r .vm.status <<<"$body") == failed ]] && break
    sleep 0.25
done
req GET "/workspaces/$ws"
check "a boot without images fails with image_missing, retryable" \
    jq -e '.vm.status == "failed" and .failure.code == "image_missing" and .failure.retryable' <<<"$body"
req DELETE "/workspaces/$ws"
check "delete answers 202 deleting" bash -c "[ $code = 202 ] && jq -e '.vm.status == \"deleting\"' <<<'$body' >/dev/null"
for ((i = 0; i < 40; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" "$api/workspaces/$ws") == 404 ]] && break
    sleep 0.25
done
check "then it is gone (404)" test "$(curl -s -o /dev/null -w '%{http_code}' "${U[@]}" "$api/workspaces/$ws")" = 404
# More workspaces get jobs than the supervisor tracks VMs (CTL_SUP_VMS_MAX 256): the entries of
# workspaces without a VM make room. Before, every job past the 256th workspace was dropped
# (too_many_vms) and its row stayed `starting` for good.
curl -fsS -o /dev/null "${A[@]}" -X PUT "$api/users/$carol_id/limits" \
    -d '{"max_vms":1000,"max_running_vcpus":1000000,"max_ram_total_mb":100000000}'
# (found by their names: a random id may start with ws-t too, and such a workspace of the test's
# own went with these)
rb_sql "INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb)
  SELECT 'ws-t' || lpad(i::text, 7, '0'), '$carol_id', 'many' || i, 'base', 512, 1, 1024
  FROM generate_series(1, 260) i" >/dev/null
for ((i = 1; i <= 260; i++)); do
    id=$(printf 'ws-t%07d' "$i")
    for ((try = 0; try < 50; try++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "${C[@]}" -X POST "$api/workspaces/$id/start") == 503 ]] || break
        sleep 0.1 # the supervisor's queue is full: it drains as the boots fail
    done
done
for ((i = 0; i < 100; i++)); do
    [[ $(rb_sql "SELECT count(*) FROM workspaces WHERE name LIKE 'many%' AND user_id = '$carol_id' AND status <> 'failed'") == 0 ]] && break
    sleep 0.2
done
check "260 workspaces' starts all end (failed: no image), none left starting" \
    test "$(rb_sql "SELECT count(*) FROM workspaces WHERE name LIKE 'many%' AND user_id = '$carol_id' AND status = 'failed'")" = 260
rb_sql "DELETE FROM workspaces WHERE name LIKE 'many%' AND user_id = '$carol_id'" >/dev/null

wait "$nb_stream"
nb_rc=$?
check "logs stream of a deleted workspace that never booted ends with an end event (rc $nb_rc)" \
    bash -c "[ $nb_rc = 0 ] && grep -q '^event: end' '$RB_TMP/stream-nb.txt'"

# The database out of reach: the API answers 503 database_unavailable (Retry-After) at once instead
# of holding its workers in a connect-and-retry loop (~10 s a request, /healthz stuck behind it),
# /capacity does not make up "used": 0, and the API serves again once the database is back.
psql -h "$RB_TEST_PGHOST" -U postgres -d postgres -qAt -c "ALTER DATABASE $RB_DB ALLOW_CONNECTIONS false" \
    -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$RB_DB'" >/dev/null
# -m 3: a liveness bound, not a timing (before, a worker sat 5-10 s in a connect loop per request)
code=$(curl -s -m 3 -D "$RB_TMP/down.hdr" -o "$RB_TMP/down.json" -w '%{http_code}' "${U[@]}" "$api/users/me")
check "database down: 503 database_unavailable with Retry-After" \
    bash -c "[ $code = 503 ] && jq -e '.error.code == \"database_unavailable\"' $RB_TMP/down.json >/dev/null && grep -qi '^retry-after: 1' $RB_TMP/down.hdr"
check "database down: /capacity is 503, not a made-up count" test "$(curl -s -m 30 -o /dev/null -w '%{http_code}' "$api/capacity")" = 503
check "database down: /healthz answers" test "$(curl -s -m 30 -o /dev/null -w '%{http_code}' "$api/healthz")" = 200
psql -h "$RB_TEST_PGHOST" -U postgres -d postgres -qAt -c "ALTER DATABASE $RB_DB ALLOW_CONNECTIONS true" >/dev/null
sleep 1.2 # each worker tries to connect again once CTL_DB_DOWN_HOLD_MS (1 s) has passed
codes=""
for i in 1 2 3 4 5 6; do # on whichever worker each lands
    codes+="$(curl -s -m 30 -o /dev/null -w '%{http_code}' "${U[@]}" "$api/users/me") "
done
check "database back: served again ($codes)" test "$codes" = "200 200 200 200 200 200 "

# A delete the previous control process accepted but did not finish (its job queue is in memory)
# is done again at start: the row does not stay `deleting` forever, nor its files.
rb_sql "UPDATE workspaces SET status = 'deleting' WHERE id = '$cws'" >/dev/null
# A workspace being deleted takes no more changes (409), and a delete sent again is accepted (202),
# not refused as an illegal transition (a client retrying after a timeout).
codes=""
for route in "POST /workspaces/$cws/token" "POST /workspaces/$cws/env" "PUT /workspaces/$cws/ai-config" "PUT /workspaces/$cws/resources" "DELETE /workspaces/$cws"; do
    set -- $route
    codes+="$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" -X "$1" "$api$2" -d '{}') "
done
check "deleting: token, env, ai-config, resources 409; delete again 202 ($codes)" test "$codes" = "409 409 409 409 202 "
check "deleting: no token was minted for it" test "$(rb_sql "SELECT count(*) FROM workspace_tokens WHERE workspace_id = '$cws' AND revoked_at IS NULL")" = 0
mkdir -p "$RB_TMP/vms/$cws" && echo leftover >"$RB_TMP/vms/$cws/disk.qcow2"
kill -TERM "$control_pid"
wait "$control_pid" 2>/dev/null
rb_spawn control2 "$control" --config "$cfg"
rb_wait_http "$api/healthz" || cat "$RB_TMP/control2.log"
for ((i = 0; i < 40; i++)); do
    [[ $(rb_sql "SELECT count(*) FROM workspaces WHERE id = '$cws'") == 0 ]] && break
    sleep 0.25
done
check "a delete cut short by a restart is finished at start (row and files gone)" \
    bash -c "[ \"\$(psql -h $RB_TEST_PGHOST -U postgres -d $RB_DB -qAt -c \"SELECT count(*) FROM workspaces WHERE id = '$cws'\")\" = 0 ] && [ ! -e $RB_TMP/vms/$cws ]"
rb_finish
