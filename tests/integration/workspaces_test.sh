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
req POST /workspaces '{"name":"second","template_id":"base"}'
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
req POST "/workspaces/$ws/token"
check "rotation revokes the previous token" test "$(rb_sql "SELECT count(*) FROM workspace_tokens WHERE token_hash = sha256('$tok'::bytea) AND revoked_at IS NOT NULL")" = 1
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
req PUT "/workspaces/$ws/ai-config" '{"mode":"managed","api_key":"sk-x"}'
check "a key with mode managed is 400" test "$code" = 400
req PUT "/workspaces/$ws/ai-config" '{"mode":"byok","model":"no-such-model"}'
check "an unknown model is 400" test "$code" = 400

other=$("$control" --config "$cfg" admin create-key --role user --user eve@example.com 2>/dev/null)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $other" "$api/workspaces/$ws")
check "another user's workspace is 404" test "$code" = 404
code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "$api/workspaces/$ws")
check "an admin sees it" test "$code" = 200
check "capacity is public" jq -e '.total > 0 and .available == true' <(curl -fsS "$api/capacity")

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
rb_finish
