#!/usr/bin/env bash
# e2e: PostgreSQL (RB_TEST_PGHOST), the mock provider, rigbox-control and rigbox-gateway, then the
# official SDKs (node --test sdk.test.mjs). usage: run.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
. "$src/tests/integration/lib.sh"
rb_db_create
if [[ ! -d $src/tests/e2e/node_modules ]]; then
    (cd "$src/tests/e2e" && npm install --no-audit --no-fund --loglevel=error) || exit 1
fi

mock_port=$(rb_free_port)
ctl_port=$(rb_free_port)
ai_port=$(rb_free_port)
apps_port=$(rb_free_port)
export RIGBOX_DATABASE_URL=$RB_DB_URL RIGBOX_CONTROL_LISTEN=127.0.0.1:$ctl_port
export RIGBOX_AI_LISTEN=127.0.0.1:$ai_port RIGBOX_APPS_LISTEN=127.0.0.1:$apps_port
export MOCK_URL=http://127.0.0.1:$mock_port
export OPERATOR_OPENAI_KEY=sk-operator-openai-e2e OPERATOR_ANTHROPIC_KEY=sk-ant-operator-e2e
export RIGBOX_OPENAI_BASE_URL=$MOCK_URL RIGBOX_OPENAI_API_KEY=$OPERATOR_OPENAI_KEY
export RIGBOX_ANTHROPIC_BASE_URL=$MOCK_URL RIGBOX_ANTHROPIC_API_KEY=$OPERATOR_ANTHROPIC_KEY
export RIGBOX_MASTER_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff

rb_spawn mock "$build/tools/mock-provider/mock-provider" --listen "127.0.0.1:$mock_port"
rb_spawn control "$build/control/rigbox-control" --config "$src/config/rigbox.yaml"
rb_wait_http "$MOCK_URL/mock/healthz" && rb_wait_http "http://127.0.0.1:$ctl_port/api/v1/healthz" ||
    { cat "$RB_TMP"/*.log; exit 1; }
rb_spawn gateway "$build/gateway/rigbox-gateway" --config "$src/config/rigbox.yaml"
rb_wait_http "http://127.0.0.1:$ai_port/healthz" || { cat "$RB_TMP"/*.log; exit 1; }

api=http://127.0.0.1:$ctl_port/api/v1
admin=$("$build/control/rigbox-control" --config "$src/config/rigbox.yaml" admin create-key --role admin 2>/dev/null)
auth=(-H "Authorization: Bearer $admin")
user=$(curl -fsS "${auth[@]}" -X POST "$api/users" -d '{"email":"e2e@example.com"}' | jq -r .user.id)
curl -fsS -o /dev/null "${auth[@]}" -X POST "$api/users/$user/credits/grants" \
    -d '{"amount_credits":100,"idempotency_key":"e2e","category":"paid"}'
ws=$(curl -fsS "${auth[@]}" -X POST "$api/workspaces" -d "{\"name\":\"e2e\",\"user_id\":\"$user\"}" | jq -r .vm.id)
export WORKSPACE_ID=$ws
export RIGBOX_WS_TOKEN
RIGBOX_WS_TOKEN=$(curl -fsS "${auth[@]}" -X POST "$api/workspaces/$ws/token" | jq -r .token)
export RIGBOX_GATEWAY_URL=http://127.0.0.1:$ai_port
export PSQL_ARGS="[\"-h\",\"$RB_TEST_PGHOST\",\"-U\",\"postgres\",\"-d\",\"$RB_DB\"]"
if [[ ! $RIGBOX_WS_TOKEN =~ ^rbw_ ]]; then
    echo "setup failed: no workspace token"
    cat "$RB_TMP"/*.log
    exit 1
fi

# A user's AI default reaches the gateway: a workspace with no AI config of its own calls with the
# default's BYOK key (PUT /users/{id}/ai-defaults; the mock shows the key that arrived).
user2=$(curl -fsS "${auth[@]}" -X POST "$api/users" -d '{"email":"e2e-defaults@example.com"}' | jq -r .user.id)
curl -fsS -o /dev/null "${auth[@]}" -X PUT "$api/users/$user2/ai-defaults" \
    -d '{"mode":"byok","provider":"openai","api_key":"sk-e2e-user-default"}'
ws2=$(curl -fsS "${auth[@]}" -X POST "$api/workspaces" -d "{\"name\":\"e2e-defaults\",\"user_id\":\"$user2\"}" | jq -r .vm.id)
tok2=$(curl -fsS "${auth[@]}" -X POST "$api/workspaces/$ws2/token" | jq -r .token)
code=$(curl -s -o /dev/null -w '%{http_code}' "$RIGBOX_GATEWAY_URL/v1/chat/completions" -H "Authorization: Bearer $tok2" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"defaults"}]}')
seen=$(curl -fsS "$MOCK_URL/mock/requests" | jq -r '[.requests[] | select(.path == "/v1/chat/completions") | .headers.authorization] | last')
if [[ $code != 200 || $seen != "Bearer sk-e2e-user-default" ]]; then
    echo "FAIL: a call from a workspace without its own AI config used the user's default key (got $code, $seen)"
    cat "$RB_TMP"/*.log
    exit 1
fi
echo "ok: a workspace without its own AI config calls with the user's default BYOK key"

cd "$src/tests/e2e" && node --test --test-reporter=spec sdk.test.mjs
rc=$?
if [[ $rc -ne 0 ]]; then
    echo "--- gateway log"; tail -n 40 "$RB_TMP/gateway.log"
fi
exit $rc
