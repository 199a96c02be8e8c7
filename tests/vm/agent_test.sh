#!/usr/bin/env bash
# e2e on a real VM: an ai-agent-starter workspace whose app calls the AI gateway from inside the guest
# with its injected rbw_ token. The request must appear in usage_events under that workspace, and the
# mock provider must have seen the operator's key, never the workspace token.
# usage: agent_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
. "$src/tests/integration/lib.sh"
rb_db_create
"$src/tools/mkimage" --out "$src/var/images" >"$RB_TMP/mkimage.log" 2>&1 ||
    { cat "$RB_TMP/mkimage.log"; echo "0 passed, 1 failed"; exit 1; }

mock_port=$(rb_free_port)
ctl_port=$(rb_free_port)
ai_port=$(rb_free_port)
export RIGBOX_DATABASE_URL=$RB_DB_URL RIGBOX_CONTROL_LISTEN=127.0.0.1:$ctl_port
export RIGBOX_AI_LISTEN=127.0.0.1:$ai_port RIGBOX_APPS_LISTEN=127.0.0.1:$(rb_free_port)
operator_key=sk-operator-vm-e2e
export RIGBOX_OPENAI_BASE_URL=http://127.0.0.1:$mock_port RIGBOX_OPENAI_API_KEY=$operator_key
cfg=$RB_TMP/rigbox.yaml
cat >"$cfg" <<YAML
models: $src/config/models.yaml
templates: $src/config/templates
vmm:
  accel: ${RB_TEST_ACCEL:-tcg}
  image_dir: $src/var/images
  state_dir: $RB_TMP/vms
YAML
rb_spawn mock "$build/tools/mock-provider/mock-provider" --listen "127.0.0.1:$mock_port"
rb_spawn control "$build/control/rigbox-control" --config "$cfg"
rb_wait_http "http://127.0.0.1:$ctl_port/api/v1/healthz" || { cat "$RB_TMP"/*.log; exit 1; }
rb_spawn gateway "$build/gateway/rigbox-gateway" --config "$cfg"
rb_wait_http "http://127.0.0.1:$ai_port/healthz" || { cat "$RB_TMP"/*.log; exit 1; }

api=http://127.0.0.1:$ctl_port/api/v1
key=$("$build/control/rigbox-control" --config "$cfg" admin create-key --role admin 2>/dev/null)
H=(-H "Authorization: Bearer $key")
user=$(curl -fsS "${H[@]}" -X POST "$api/users" -d '{"email":"agent@example.com","plan":"pro"}' | jq -r .user.id)
curl -fsS -o /dev/null "${H[@]}" -X POST "$api/users/$user/credits/grants" \
    -d '{"amount_credits":100,"idempotency_key":"agent-test","category":"paid"}'
qd=$(curl -fsS "${H[@]}" -X POST "$api/quick-deploy" -d "{\"template_id\":\"ai-agent-starter\",\"user_id\":\"$user\"}")
ws=$(jq -r .workspace.id <<<"$qd")
check "quick-deploy returns the workspace and its expected apps" \
    jq -e '.workspace.status == "starting" and ([.expected_apps[].name] == ["agent"])' <<<"$qd"
check "a quick-deploy without a name is named after its template" \
    jq -e '.workspace.name == "ai-agent-starter"' <<<"$qd"
for ((i = 0; i < 120; i++)); do
    st=$(curl -fsS "${H[@]}" "$api/workspaces/$ws" | jq -r .vm.status)
    [[ $st == running || $st == failed ]] && break
    sleep 0.5
done
check "the agent workspace runs" test "$st" = running
port=$(curl -fsS "${H[@]}" "$api/workspaces/$ws" | jq -r '.vm.apps[] | select(.name=="agent") | .host_port')
answer=""
for ((i = 0; i < 40; i++)); do
    answer=$(curl -fsS -m 20 "http://127.0.0.1:$port/cgi-bin/ask?q=hello+from+the+guest" 2>/dev/null) &&
        jq -e '.choices[0].message.content' >/dev/null 2>&1 <<<"$answer" && break
    sleep 0.5
done
check "the guest's agent got a model answer through the gateway" \
    jq -e '.choices[0].message.content | test("hello from the guest")' <<<"$answer"
rid_rows=0
for ((i = 0; i < 30; i++)); do
    rid_rows=$(rb_sql "SELECT count(*) FROM usage_events WHERE workspace_id = '$ws' AND status = 'ok'")
    [[ $rid_rows -ge 1 ]] && break
    sleep 0.2
done
check "the request is in usage_events under the workspace" test "$rid_rows" -ge 1
curl -fsS "http://127.0.0.1:$mock_port/mock/requests" >"$RB_TMP/requests.json"
reqs=$(cat "$RB_TMP/requests.json")
check "the provider saw the operator's key" \
    jq -e --arg k "Bearer $operator_key" '[.requests[] | select(.path == "/v1/chat/completions") | .headers | to_entries[] | select((.key | ascii_downcase) == "authorization") | .value] | length > 0 and all(. == $k)' <<<"$reqs"
check "the provider never saw a workspace token" bash -c "! grep -q rbw_ '$RB_TMP/requests.json'"
check "the operator key never entered the VM" bash -c "! grep -q '$operator_key' '$RB_TMP/vms/$ws/config'"
curl -fsS -o /dev/null "${H[@]}" -X DELETE "$api/workspaces/$ws"
for ((i = 0; i < 60; i++)); do
    [[ -e $RB_TMP/vms/$ws ]] || break
    sleep 0.5
done
rb_finish
