#!/usr/bin/env bash
# gateway_test.sh: rigbox-gateway end to end against the mock provider and a real PostgreSQL.
#   gateway_test.sh GATEWAY_BIN MOCK_BIN SEAL_BIN SOURCE_DIR
# Uses RB_TEST_PGHOST when set, else starts a private cluster under /tmp (tools/lib/pg.sh).
set -u
GW_BIN=$1 MOCK_BIN=$2 SEAL_BIN=$3 SRC=$4
if [[ -z ${RB_TEST_PGHOST:-} ]]; then
    . "$SRC/tools/lib/pg.sh"
    rb_pg_start /tmp/rigbox-gwtest-pg >/dev/null 2>&1 || { echo "cannot start PostgreSQL"; echo "0 passed, 1 failed"; exit 1; }
    export RB_TEST_PGHOST=$(rb_pg_host /tmp/rigbox-gwtest-pg)
fi
. "$SRC/tests/integration/lib.sh"
rb_db_create

MOCK_PORT=$(rb_free_port) AI_PORT=$(rb_free_port) APPS_PORT=$(rb_free_port) DEAD_PORT=$(rb_free_port)
MASTER=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
GW=http://127.0.0.1:$AI_PORT
MOCK=http://127.0.0.1:$MOCK_PORT
mkdir -p "$RB_TMP/templates"
printf '%s\n' "$MASTER" >"$RB_TMP/master.key"
cat >"$RB_TMP/models.yaml" <<YAML
providers:
  mockoai: {kind: openai, base_url: "$MOCK"}
  mockant: {kind: anthropic, base_url: "$MOCK", anthropic_version: "2023-01-01", betas: [beta-a, beta-b]}
  deadoai: {kind: openai, base_url: "http://127.0.0.1:$DEAD_PORT"}
  badoai: {kind: openai, base_url: "$MOCK"}
models:
  t-badkey: {provider: badoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-chat: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", cached_input: "0.50", output: "2.00"}, max_output_default: 100}
  t-cached: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", cached_input: "0.50", output: "2.00"}, max_output_default: 100}
  t-slow: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-quiet: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-think: {provider: mockoai, upstream: o4-mini, reasoning: true, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-ttfb: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-429: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-big: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-free: {provider: mockoai, upstream: gpt-4o-mini, max_output_default: 100}
  t-dead: {provider: deadoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-embed: {provider: mockoai, upstream: text-embedding-3-small, type: embedding, prices: {input: "0.02"}, max_output_default: 1}
  t-claude: {provider: mockant, upstream: claude-sonnet-4-5, prices: {input: "3.00", cached_input: "0.30", cache_write_5m: "3.75", cache_write_1h: "6.00", output: "15.00"}, max_output_default: 200}
  t-claude-cache: {provider: mockant, upstream: claude-sonnet-4-5, prices: {input: "3.00", cached_input: "0.30", cache_write_5m: "3.75", cache_write_1h: "6.00", output: "15.00"}, max_output_default: 200}
YAML
cat >"$RB_TMP/rigbox.yaml" <<YAML
server: {workers: 2, log_level: info}
gateway:
  ai_listen: 127.0.0.1:$AI_PORT
  apps_listen: 127.0.0.1:$APPS_PORT
  limits: {upstream_first_byte_timeout_ms: 1000, upstream_idle_timeout_ms: 2000, keepalive_interval_ms: 300, drain_timeout_ms: 5000, stream_high_water_bytes: 65536, stream_low_water_bytes: 16384}
database: {url: "$RB_DB_URL"}
secrets: {master_key_file: $RB_TMP/master.key}
models: models.yaml
templates: templates
YAML

rb_spawn mock "$MOCK_BIN" --listen 127.0.0.1:$MOCK_PORT
MOCK_PID=$RB_LAST_PID
rb_wait_http "$MOCK/mock/healthz" || fail "mock provider did not start"
RIGBOX_SPOOL_DIR=$RB_TMP/spool RIGBOX_GATEWAY_FORWARD_MOCK_BEHAVIOR=1 RIGBOX_MOCKOAI_API_KEY=sk-managed-oai RIGBOX_MOCKANT_API_KEY=sk-ant-managed RIGBOX_DEADOAI_API_KEY=sk-dead \
    RIGBOX_BADOAI_API_KEY=sk-bad-operator-secret-9876 \
    rb_spawn gateway "$GW_BIN" --config "$RB_TMP/rigbox.yaml" --schema-dir "${RB_GW_SCHEMA_DIR:-$SRC/schema}"
GW_PID=$RB_LAST_PID
rb_wait_http "$GW/healthz" || { fail "gateway did not start"; cat "$RB_TMP/gateway.log"; rb_finish; exit 1; }

# ---- fixtures: users, workspaces, tokens, keys --------------------------------------------------
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
TOK=rbw_tok1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
TOK_BYOK=rbw_tok2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
TOK_REV=rbw_tok3cccccccccccccccccccccccccccccccccccccc
TOK_UNREAD=rbw_tok4dddddddddddddddddddddddddddddddddddddd
UKEY=rb_userkeydddddddddddddddddddddddddddddddddddd
read -r CT NONCE TAG KID < <("$SEAL_BIN" "$MASTER" sk-byok-stored)
rb_sql "INSERT INTO users (id, email) VALUES ('u-aaaaaaaa', 'a@example.com'), ('u-bbbbbbbb', 'b@example.com'),
  ('u-dddddddd', 'd@example.com');
INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb) VALUES
  ('ws-aaaaaaaa', 'u-aaaaaaaa', 'one', 'base', 512, 1, 1024),
  ('ws-bbbbbbbb', 'u-bbbbbbbb', 'two', 'base', 512, 1, 1024),
  ('ws-cccccccc', 'u-aaaaaaaa', 'three', 'base', 512, 1, 1024),
  ('ws-dddddddd', 'u-dddddddd', 'four', 'base', 512, 1, 1024);
INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES
  ('ws-aaaaaaaa', decode('$(sha $TOK)', 'hex'), 'rbw_tok1'),
  ('ws-bbbbbbbb', decode('$(sha $TOK_BYOK)', 'hex'), 'rbw_tok2'),
  ('ws-cccccccc', decode('$(sha $TOK_REV)', 'hex'), 'rbw_tok3'),
  ('ws-dddddddd', decode('$(sha $TOK_UNREAD)', 'hex'), 'rbw_tok4');
INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES
  ('key-aaaaaaaa', 'u-aaaaaaaa', 'rb_userk', decode('$(sha $UKEY)', 'hex'));
INSERT INTO ai_configs (user_id, workspace_id, scope, mode, provider, key_ciphertext, key_nonce, key_tag, key_id)
  VALUES ('u-bbbbbbbb', 'ws-bbbbbbbb', 'workspace', 'byok', 'mockoai', decode('$CT', 'hex'),
          decode('$NONCE', 'hex'), decode('$TAG', 'hex'), '$KID');
SELECT count(*) FROM rb_grant('g-test-a', 'u-aaaaaaaa', 1000000000, 'paid', NULL, NULL);" >/dev/null

# ---- helpers ------------------------------------------------------------------------------------
# post PATH TOKEN BODY [curl args...]: body to $RB_TMP/out, headers to $RB_TMP/hdr; prints the status.
post() {
    local path=$1 tok=$2 body=$3
    shift 3
    curl -sS -N -o "$RB_TMP/out" -D "$RB_TMP/hdr" -w '%{http_code}' "$GW$path" \
        -H "Authorization: Bearer $tok" -H 'content-type: application/json' -d "$body" "$@"
}
post_ant() {
    local path=$1 tok=$2 body=$3
    shift 3
    curl -sS -N -o "$RB_TMP/out" -D "$RB_TMP/hdr" -w '%{http_code}' "$GW$path" \
        -H "x-api-key: $tok" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
        -d "$body" "$@"
}
hdr() { grep -i "^$1:" "$RB_TMP/hdr" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
rid() { hdr x-rigbox-request-id; }
# row RID COLUMNS: the usage row (waits for the writer).
row() {
    local i out
    for ((i = 0; i < 50; i++)); do
        out=$(rb_sql "SELECT $2 FROM usage_events WHERE request_id = '$1'")
        [[ -n $out ]] && { echo "$out"; return; }
        sleep 0.1
    done
}
last_mock_headers() { curl -sS "$MOCK/mock/requests" | jq -c '.requests[-1].headers'; }
CHAT='{"model":"t-chat","messages":[{"role":"user","content":"hello there"}]}'
SCHAT='{"model":"t-chat","stream":true,"messages":[{"role":"user","content":"hello there"}]}'
MSG='{"model":"t-claude","max_tokens":50,"messages":[{"role":"user","content":"hello there"}]}'
SMSG='{"model":"t-claude","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hello there"}]}'

# ---- 1. chat, managed, not streamed -------------------------------------------------------------
st=$(post /v1/chat/completions $TOK "$CHAT")
check "chat: 200" test "$st" = 200
check "chat: X-Rigbox-Cost-Micro 2000 (10 in x 100 + 5 out x 200)" test "$(hdr x-rigbox-cost-micro)" = 2000
check "chat: X-Rigbox-Cost-Credits" test "$(hdr x-rigbox-cost-credits)" = 0.002000
check "chat: usage.cost_micro in the body" test "$(jq .usage.cost_micro "$RB_TMP/out")" = 2000
check "chat: request id header" grep -qi '^x-rigbox-request-id: req_' "$RB_TMP/hdr"
check "chat: the provider's request id, not the operator account's rate-limit headers" \
    bash -c "grep -qi '^x-request-id: req_' $RB_TMP/hdr && grep -qi '^openai-processing-ms: ' $RB_TMP/hdr && ! grep -qi '^x-ratelimit-' $RB_TMP/hdr"
R=$(rid)
check "chat: usage row" test "$(row "$R" "status, http_status, input_uncached, output, cost_micro, billed, usage_source, mode, workspace_id, route")" = "ok|200|10|5|2000|t|provider|managed|ws-aaaaaaaa|/v1/chat/completions"
H=$(last_mock_headers)
check "chat: operator key sent upstream" test "$(jq -r .authorization <<<"$H")" = "Bearer sk-managed-oai"
check "chat: the rbw_ token never reaches the provider" bash -c "! grep -q rbw_ <<<'$H'"
check "chat: model rewritten to the upstream id" test "$(curl -sS "$MOCK/mock/requests" | jq -r '.requests[-1].model')" = gpt-4o-mini

# HEAD answers with headers only (RFC 9110): a body after them was read by a keep-alive client as
# the start of its next answer.
head=$(exec 3<>"/dev/tcp/127.0.0.1/${GW##*:}" && printf 'HEAD /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 &&
    timeout 5 cat <&3 | tr -d '\r')
check "HEAD: 405 with its headers (Allow: POST) and no body" \
    bash -c "[[ \$1 == 'HTTP/1.1 405 '* && \$1 == *\$'\n'[Aa]'llow: POST'* && \$1 != *'{'* ]]" _ "$head"

# ---- 2. chat streamed: injected usage chunk stripped, or kept with cost ---------------------------
st=$(post /v1/chat/completions $TOK "$SCHAT")
check "chat stream: 200 event-stream" grep -qi '^content-type: text/event-stream' "$RB_TMP/hdr"
check "chat stream: ends with [DONE]" test "$(grep -c '^data: \[DONE\]' "$RB_TMP/out")" = 1
check "chat stream: injected usage chunk removed" bash -c "! grep -q '\"choices\":\[\]' '$RB_TMP/out'"
check "chat stream: usage recorded from the provider" test "$(row "$(rid)" "status, input_uncached, output, usage_source")" = "ok|10|5|provider"
st=$(post /v1/chat/completions $TOK '{"model":"t-chat","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}')
check "chat stream include_usage: usage chunk kept with cost_micro" bash -c "grep '\"choices\":\[\]' '$RB_TMP/out' | grep -q '\"cost_micro\":2000'"

# ---- 3. Anthropic messages -----------------------------------------------------------------------
st=$(post_ant /v1/messages $TOK "$MSG")
check "messages: 200" test "$st" = 200
check "messages: usage.cost_micro in the body" test "$(jq .usage.cost_micro "$RB_TMP/out")" = "$(hdr x-rigbox-cost-micro)"
H=$(last_mock_headers)
check "messages: x-api-key is the operator key" test "$(jq -r '.["x-api-key"]' <<<"$H")" = sk-ant-managed
st=$(post_ant /v1/messages $TOK "$MSG" -H 'anthropic-beta: beta-b, beta-a')
check "messages: anthropic-beta values the provider's betas list pass to the operator's key" \
    test "$st:$(last_mock_headers | jq -r '.["anthropic-beta"]')" = "200:beta-b, beta-a"
st=$(post_ant /v1/messages $TOK "$MSG" -H 'anthropic-beta: beta-b' -H 'anthropic-beta: beta-a')
check "messages: anthropic-beta on two lines is one list (RFC 9110), checked and sent whole" \
    test "$st:$(last_mock_headers | jq -r '.["anthropic-beta"]')" = "200:beta-b, beta-a"
st=$(post_ant /v1/messages $TOK "$MSG" -H 'anthropic-beta: beta-a' -H 'anthropic-beta: context-1m-2025-08-07')
check "messages: a value it does not list on a second line is refused too" test "$st" = 400
st=$(post_ant /v1/messages $TOK "$MSG" -H 'anthropic-beta: beta-a,context-1m-2025-08-07')
check "messages: one it does not list is 400 beta_not_allowed, nothing sent upstream" \
    bash -c "[ $st = 400 ] && jq -e '.type == \"error\" and (.error.message | contains(\"context-1m-2025-08-07\"))' $RB_TMP/out >/dev/null &&
        [ \"\$(curl -sS $MOCK/mock/requests | jq -r '.requests[-1].headers[\"anthropic-beta\"]')\" = 'beta-b, beta-a' ]"
st=$(post_ant /v1/messages $TOK "$MSG" -H 'anthropic-beta: context-1m-2025-08-07' -H 'X-Rigbox-Provider-Key: sk-ant-own')
check "messages: on the caller's own key any anthropic-beta passes" \
    test "$st:$(last_mock_headers | jq -r '.["anthropic-beta"]')" = "200:context-1m-2025-08-07"
# A final usage that states the output only (some OpenAI-compatible servers): the input is
# estimated from the request, not billed 0.
st=$(post /v1/chat/completions $TOK "$CHAT" -H 'X-Mock-Behavior: output-only-usage')
check "a usage without prompt_tokens: the input estimated, the stated output kept" \
    bash -c "[ $st = 200 ] && [ '$(row "$(rid)" "usage_source, input_uncached > 0, output > 0, cost_micro > 0")' = 'estimate|t|t|t' ]"
# Options that change what the provider charges are refused on the operator's key (they would be
# billed at the model's standard prices): OpenAI's priority tier, a Responses built-in tool.
n_mock=$(curl -sS "$MOCK/mock/requests" | jq '.requests | length')
st=$(post /v1/chat/completions $TOK '{"model":"t-chat","service_tier":"priority","messages":[{"role":"user","content":"x"}]}')
check "service_tier priority on the operator's key: 400 priced_option_not_allowed naming it, nothing sent upstream" \
    bash -c "[ $st = 400 ] && jq -e '.error.code == \"priced_option_not_allowed\" and .error.param == \"service_tier\"' $RB_TMP/out >/dev/null &&
        [ \"\$(curl -sS $MOCK/mock/requests | jq '.requests | length')\" = $n_mock ]"
check "service_tier priority: a rejected row" test "$(row "$(rid)" "status, http_status, error_code, billed")" = "rejected|400|priced_option_not_allowed|f"
st=$(post /v1/responses $TOK '{"model":"t-chat","input":"x","tools":[{"type":"web_search"}]}')
check "a Responses web_search tool on the operator's key: 400" test "$st:$(jq -r .error.param "$RB_TMP/out")" = "400:tools"
st=$(post /v1/chat/completions $TOK '{"model":"t-chat","service_tier":"priority","messages":[{"role":"user","content":"x"}]}' -H 'X-Rigbox-Provider-Key: sk-own')
check "service_tier priority on the caller's own key: sent" \
    test "$st:$(last_mock_headers | jq -r .authorization)" = "200:Bearer sk-own"
st=$(post_ant /v1/messages $TOK "$MSG")
check "messages: the provider's request-id, not the operator account's rate-limit headers" \
    bash -c "grep -qi '^request-id: req_' $RB_TMP/hdr && ! grep -qi '^anthropic-ratelimit-' $RB_TMP/hdr"
check "messages: anthropic-version forwarded" test "$(jq -r '.["anthropic-version"]' <<<"$H")" = 2023-06-01
check "messages: no Authorization upstream" test "$(jq -r .authorization <<<"$H")" = null
# an empty anthropic-version is none: the provider's configured one goes (curl sent none, and the
# provider's 400 "header is required" came back, recorded as an upstream error)
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/messages" -H "x-api-key: $TOK" -H 'anthropic-version;' \
    -H 'content-type: application/json' -d "$MSG")
check "messages: an empty anthropic-version is the provider's default ($st)" \
    test "$st:$(last_mock_headers | jq -r '.["anthropic-version"]')" = 200:2023-01-01
check "messages: row" test "$(row "$(rid)" "status, route, provider, usage_source")" = "ok|/v1/messages|mockant|provider"
st=$(post_ant /v1/messages $TOK "$SMSG")
check "messages stream: 200 with message_stop" bash -c "[[ $st == 200 ]] && grep -q '^event: message_stop' '$RB_TMP/out'"
check "messages stream: usage recorded" test "$(row "$(rid)" "status, usage_source, output > 0")" = "ok|provider|t"
st=$(post_ant /v1/messages/count_tokens $TOK '{"model":"t-claude","messages":[{"role":"user","content":"hi"}]}')
check "count_tokens: 200 input_tokens" test "$st:$(jq -r '.input_tokens > 0' "$RB_TMP/out")" = 200:true
check "count_tokens: row with no usage" test "$(row "$(rid)" "route, usage_source, cost_micro")" = "/v1/messages/count_tokens|none|0"

# ---- 4. the other OpenAI routes -------------------------------------------------------------------
st=$(post /v1/completions $TOK '{"model":"t-chat","prompt":"hello there"}')
check "completions: 200 with cost" test "$st:$(jq '.usage.cost_micro > 0' "$RB_TMP/out")" = 200:true
# Without max_tokens (or with null) a completion is held for the API's default of 16 tokens, and 16
# is written upstream so a compatible server whose default is larger stops there too (before: a
# big answer billed 10000 output tokens against a hold of 16).
for cap in '' ',"max_tokens":null'; do
    st=$(post /v1/completions $TOK "{\"model\":\"t-chat\",\"prompt\":\"hello there\"$cap}" -H 'X-Mock-Behavior: big=40000')
    out=$(row "$(rid)" "output")
    check "completions without a cap ('$cap'): 16 written upstream, output $out <= 16" bash -c "[ $st = 200 ] && [ $out -ge 1 ] && [ $out -le 16 ]"
done
st=$(post /v1/completions $TOK '{"model":"t-chat","prompt":"hello there","stream":true}')
check "completions stream: no usage chunk, [DONE]" bash -c "grep -q '\[DONE\]' '$RB_TMP/out' && ! grep -q '\"choices\":\[\]' '$RB_TMP/out'"
st=$(post /v1/chat/completions $TOK '{"model":"t-chat","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: no-usage')
check "chat without usage: 200, no usage added to the body, the row estimated" \
    test "$st:$(jq -c .usage "$RB_TMP/out"):$(row "$(rid)" "usage_source")" = "200:null:estimate"
# the estimate counts the answer's text ("Mock reply to: x", 16 bytes: 4 tokens), not its envelope
# of ids and roles (~300 bytes: 75 tokens before)
check "chat without usage: output estimated from the answer's text" test "$(row "$(rid)" "output")" = 4
st=$(post_ant /v1/messages $TOK "$MSG" -H 'X-Mock-Behavior: reset')
out=$(row "$(rid)" "status || '|' || usage_source || '|' || (input_uncached > 0) || '|' || output")
check "messages cut mid-body: 502, billed its input and the text that arrived, not the envelope ($out)" \
    bash -c "[ $st = 502 ] && [[ '$out' =~ ^upstream_error\|estimate\|true\|([0-9]+)$ ]] && [ \${BASH_REMATCH[1]} -le 7 ]"
st=$(post /v1/responses $TOK '{"model":"t-chat","input":"hello there"}')
check "responses: 200 with cost" test "$st:$(jq '.usage.cost_micro > 0' "$RB_TMP/out")" = 200:true
st=$(post /v1/responses $TOK '{"model":"t-chat","input":"hello there","stream":true}')
check "responses stream: response.completed" grep -q response.completed "$RB_TMP/out"
check "responses stream: usage recorded" test "$(row "$(rid)" "usage_source, input_uncached > 0")" = "provider|t"
st=$(post /v1/embeddings $TOK '{"model":"t-embed","input":["a","b"]}')
check "embeddings: 200 with data" test "$st:$(jq '.data | length' "$RB_TMP/out")" = 200:2
check "embeddings: row" test "$(row "$(rid)" "route, status, output")" = "/v1/embeddings|ok|0"
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models" -H "Authorization: Bearer $TOK")
check "models: list has t-chat" test "$st:$(jq -r '[.data[].id] | index("t-chat") != null' "$RB_TMP/out")" = 200:true
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models/t-chat" -H "Authorization: Bearer $TOK")
check "models: GET /v1/models/{id} (the SDKs' models.retrieve)" \
    bash -c "[ $st = 200 ] && jq -e '.id == \"t-chat\" and .object == \"model\" and .owned_by == \"mockoai\"' $RB_TMP/out >/dev/null"
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models/mockoai%2Fgpt-4o-mini" -H "Authorization: Bearer $TOK")
check "models: a provider/model slug, percent-encoded as the SDKs send it" \
    bash -c "[ $st = 200 ] && jq -e '.object == \"model\" and .owned_by == \"mockoai\"' $RB_TMP/out >/dev/null"
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models/no-such-model" -H "Authorization: Bearer $TOK")
check "models: an unknown id is 404 model_not_found" bash -c "[ $st = 404 ] && jq -e '.error.code == \"model_not_found\"' $RB_TMP/out >/dev/null"
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models" -H "x-api-key: $TOK" -H 'anthropic-version: 2023-06-01')
check "models: Anthropic's shape for an Anthropic client, its models only" \
    bash -c "[ $st = 200 ] && jq -e '.has_more == false and ([.data[].id] | index(\"t-claude\") != null and index(\"t-chat\") == null) and .data[0].type == \"model\" and .first_id == .data[0].id' $RB_TMP/out >/dev/null"
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models/t-chat" -H "x-api-key: $TOK" -H 'anthropic-version: 2023-06-01')
check "models: an OpenAI model asked for by an Anthropic client: 404 in Anthropic's shape" \
    bash -c "[ $st = 404 ] && jq -e '.type == \"error\" and .error.type == \"not_found_error\"' $RB_TMP/out >/dev/null"
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models" -H "x-api-key: rbw_bogusbogusbogus" -H 'anthropic-version: 2023-06-01')
check "models: a bad token from an Anthropic client: 401 in Anthropic's shape" \
    test "$st:$(jq -r '.type + "/" + .error.type' "$RB_TMP/out")" = "401:error/authentication_error"
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/models" -H "Authorization: Bearer $TOK  ")
check "a token with trailing whitespace is the token (RFC 9110: not part of the value)" test "$st" = 200
st=$(post /v1/chat/completions $UKEY "$CHAT")
check "user API key: 200, row without workspace" test "$st:$(row "$(rid)" "user_id, coalesce(workspace_id, '-')")" = "200:u-aaaaaaaa|-"

# ---- 5. errors in the caller's dialect ----------------------------------------------------------
st=$(curl -sS -o "$RB_TMP/out" -w '%{http_code}' "$GW/v1/chat/completions" -H 'content-type: application/json' -d "$CHAT")
check "no token: 401 OpenAI shape" test "$st:$(jq -r .error.type "$RB_TMP/out")" = "401:authentication_error"
st=$(post_ant /v1/messages rbw_nottherealtoken "$MSG")
check "bad token on messages: 401 Anthropic shape" test "$st:$(jq -r '.type + "/" + .error.type' "$RB_TMP/out")" = "401:error/authentication_error"
st=$(post /v1/chat/completions $TOK '{"model":"nope","messages":[]}')
check "unknown model: 404 model_not_found" test "$st:$(jq -r .error.code "$RB_TMP/out")" = "404:model_not_found"
check "unknown model: rejected row" test "$(row "$(rid)" "status, http_status, error_code")" = "rejected|404|model_not_found"
# A subject usage_events would refuse (ill-formed UTF-8, a C1 control) is not attributed.
st=$(post /v1/chat/completions $TOK "$CHAT" -H $'X-Rigbox-Subject: caf\xff')
check "an ill-formed UTF-8 subject: served, not attributed" test "$st:$(row "$(rid)" "coalesce(subject, '-')")" = "200:-"
st=$(post /v1/chat/completions $TOK "$CHAT" -H $'X-Rigbox-Subject: caf\xc3\xa9')
check "a UTF-8 subject is attributed" test "$st:$(row "$(rid)" "subject")" = "200:café"
# A record PostgreSQL refuses (here a CHECK this test adds): its batch is retried record by record,
# the bad record is kept in rejected.spool and logged, the rest of the batch is posted.
rb_sql "ALTER TABLE usage_events ADD CONSTRAINT test_refuse CHECK (subject IS DISTINCT FROM 'refuse-me')" >/dev/null
st=$(post /v1/chat/completions $TOK "$CHAT" -H 'X-Rigbox-Subject: refuse-me')
bad=$(rid)
st2=$(post /v1/chat/completions $TOK "$CHAT")
check "a refused record: the next one is still posted" test "$st:$st2:$(row "$(rid)" "status")" = "200:200:ok"
sleep 0.3
check "a refused record: kept in rejected.spool" grep -q "^$bad"$'\t' "$RB_TMP/spool/rejected.spool"
check "a refused record: logged by request id" grep -q "event=usage_row_refused request_id=$bad " "$RB_TMP/gateway.log"
rb_sql "ALTER TABLE usage_events DROP CONSTRAINT test_refuse" >/dev/null
st=$(post_ant /v1/messages $TOK '{"model":"nope","max_tokens":5,"messages":[]}')
check "unknown model on messages: 404 not_found_error" test "$st:$(jq -r .error.type "$RB_TMP/out")" = "404:not_found_error"
st=$(post /v1/chat/completions $TOK '{"model":"t-free","messages":[{"role":"user","content":"x"}]}')
check "managed call to an unpriced model: 400 model_not_priced" test "$st:$(jq -r .error.code "$RB_TMP/out")" = "400:model_not_priced"
st=$(post /v1/chat/completions $TOK '{"model": "t-chat", "messages": [')
check "bad JSON: 400 invalid_request_error" test "$st:$(jq -r .error.type "$RB_TMP/out")" = "400:invalid_request_error"
st=$(post /v1/chat/completions $TOK '{"messages":[]}')
check "missing model: 400" test "$st" = 400
st=$(post /v1/chat/completions $TOK '{"model":"t-429","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: status=429,retry-after=7')
check "upstream 429 passed through with Retry-After" test "$st:$(hdr retry-after)" = "429:7"
check "upstream 429: row upstream_error" test "$(row "$(rid)" "status, http_status, usage_source")" = "upstream_error|429|none"
# What the provider says of the operator's account stays in the gateway: its rate-limit headers
# (the account's tier and what every other user is doing), its organisation, its key.
check "upstream 429 on the operator's key: the provider's type and code, the gateway's words, no account headers" \
    bash -c "jq -e '.error.code == \"rate_limit_exceeded\" and .error.type == \"requests\"' $RB_TMP/out >/dev/null && ! grep -q org-mock $RB_TMP/out && ! grep -qi '^x-ratelimit-' $RB_TMP/hdr"
st=$(post /v1/chat/completions $TOK '{"model":"t-429","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: status=429' -H 'X-Rigbox-Provider-Key: sk-mine')
check "upstream 429 on the caller's own key: passed through whole" \
    bash -c "[ $st = 429 ] && grep -qi '^x-ratelimit-remaining-requests: 0' $RB_TMP/hdr && grep -q org-mock $RB_TMP/out"
st=$(post /v1/chat/completions $TOK '{"model":"t-badkey","messages":[{"role":"user","content":"x"}]}')
check "the operator's key refused by the provider: 502 upstream_auth_failed, not its 401" \
    bash -c "[ $st = 502 ] && jq -e '.error.code == \"upstream_auth_failed\"' $RB_TMP/out >/dev/null"
check "and no part of the key in the answer" bash -c "! grep -q -e 9876 -e sk-bad $RB_TMP/out"
check "and the row keeps what the provider answered" test "$(row "$(rid)" "status, http_status, error_code")" = "upstream_error|502|upstream_http_401"
st=$(post /v1/chat/completions $TOK "$CHAT" -H 'X-Rigbox-Provider-Key: sk-bad-mine-1234')
check "the caller's own key refused: the provider's 401 as it is" \
    bash -c "[ $st = 401 ] && jq -e '.error.code == \"invalid_api_key\" and (.error.message | contains(\"1234\"))' $RB_TMP/out >/dev/null"
st=$(post /v1/chat/completions $TOK '{"model":"t-429","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: status=404')
check "another provider error on the operator's key: its status, type, code and message" \
    bash -c "[ $st = 404 ] && jq -e '.error.code == \"model_not_found\" and (.error.message | startswith(\"The model \\u0060gpt-4o-mini\\u0060 does not exist\"))' $RB_TMP/out >/dev/null"
# A provider's edge (CDN, load balancer) answers with an HTML page: on the operator's key the caller
# gets the gateway's error in its own dialect, on its own key the page as it came.
st=$(post /v1/chat/completions $TOK '{"model":"t-429","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: status=502,html')
check "an HTML 502 from the provider's edge on the operator's key: 502 in OpenAI's shape" \
    bash -c "[ $st = 502 ] && jq -e '.error.code == \"upstream_error\"' $RB_TMP/out >/dev/null && ! grep -q cloudflare $RB_TMP/out"
check "an HTML 502: row upstream_error" test "$(row "$(rid)" "status, http_status, error_code")" = "upstream_error|502|upstream_http_502"
st=$(post_ant /v1/messages $TOK "$MSG" -H 'X-Mock-Behavior: status=504,html')
check "an HTML 504 on /v1/messages: 504 in Anthropic's shape, not the page" \
    bash -c "[ $st = 504 ] && jq -e '.type == \"error\" and .error.type == \"timeout_error\"' $RB_TMP/out >/dev/null && ! grep -q '<html>' $RB_TMP/out"
st=$(post /v1/chat/completions $TOK '{"model":"t-429","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: status=502,html' -H 'X-Rigbox-Provider-Key: sk-mine')
check "an HTML 502 on the caller's own key: the page as it came" \
    bash -c "[ $st = 502 ] && grep -q cloudflare $RB_TMP/out && grep -qi '^content-type: text/html' $RB_TMP/hdr"
st=$(post /v1/chat/completions $TOK '{"model":"t-dead","messages":[{"role":"user","content":"x"}]}')
check "upstream unreachable: 502" test "$st:$(jq -r .error.code "$RB_TMP/out")" = "502:upstream_unreachable"
st=$(post /v1/chat/completions $TOK '{"model":"t-ttfb","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: ttfb=3000')
check "upstream first-byte timeout: 504" test "$st:$(jq -r .error.code "$RB_TMP/out")" = "504:upstream_timeout"
check "upstream first-byte timeout: the provider had the request, its input is billed as an estimate (was 0)" \
    test "$(row "$(rid)" "status, usage_source, input_uncached > 0, cost_micro > 0")" = "upstream_error|estimate|t|t"
st=$(post /v1/messages $TOK "$CHAT")
check "OpenAI model on /v1/messages: 400" test "$st" = 400

# ---- 6. keys: stored BYOK, per-call key ----------------------------------------------------------
st=$(post /v1/chat/completions $TOK_BYOK "$CHAT")
check "stored BYOK: 200" test "$st" = 200
check "stored BYOK: the user's key reaches the provider" test "$(last_mock_headers | jq -r .authorization)" = "Bearer sk-byok-stored"
check "stored BYOK: priced, not billed" test "$(row "$(rid)" "mode, billed, cost_micro > 0")" = "byok|f|t"
st=$(post /v1/chat/completions $TOK "$CHAT" -H 'X-Rigbox-Provider-Key: sk-per-call-key')
check "per-call key: reaches the provider" test "$st:$(last_mock_headers | jq -r .authorization)" = "200:Bearer sk-per-call-key"
check "per-call key: not billed" test "$(row "$(rid)" "mode, billed")" = "byok|f"
check "per-call key: the provider's rate-limit headers (the caller's own account)" grep -qi '^x-ratelimit-remaining-requests: 499' "$RB_TMP/hdr"
check "keys never logged" bash -c "! grep -Eq 'sk-managed|sk-byok|sk-per-call|rbw_tok' '$RB_TMP/gateway.log'"
st=$(post_ant /v1/messages $TOK_BYOK "$MSG")
check "stored BYOK: another provider's model is 400 byok_key_missing, the key not sent" \
    test "$st:$(jq -r .error.type "$RB_TMP/out"):$(last_mock_headers | jq -r '."x-api-key"')" = "400:invalid_request_error:null"
rb_sql "UPDATE ai_configs SET provider = NULL WHERE workspace_id = 'ws-bbbbbbbb'; NOTIFY rigbox_identity, 'ai_config'" >/dev/null
for ((i = 0; i < 30; i++)); do # the edit applies within a second (NOTIFY)
    st=$(post /v1/chat/completions $TOK_BYOK "$CHAT")
    [[ $st == 400 ]] && break
    sleep 0.1
done
check "stored BYOK with no provider named (an old row): 400, the key sent to no provider" \
    test "$st:$(jq -r .error.code "$RB_TMP/out")" = "400:byok_key_missing"
rb_sql "UPDATE ai_configs SET provider = 'mockoai' WHERE workspace_id = 'ws-bbbbbbbb'; NOTIFY rigbox_identity, 'ai_config'" >/dev/null
for ((i = 0; i < 30; i++)); do
    [[ $(post /v1/chat/completions $TOK_BYOK "$CHAT") == 200 ]] && break
    sleep 0.1
done

# ---- 7. revocation through NOTIFY ---------------------------------------------------------------
st=$(post /v1/chat/completions $TOK_REV "$CHAT")
check "token works before revocation (and is cached)" test "$st" = 200
rb_sql "UPDATE workspace_tokens SET revoked_at = now() WHERE workspace_id = 'ws-cccccccc'; NOTIFY rigbox_identity, 'workspace:ws-cccccccc'" >/dev/null
sleep 1
st=$(post /v1/chat/completions $TOK_REV "$CHAT")
check "revoked token: 401 within a second" test "$st" = 401

# ---- 8. usage buckets ---------------------------------------------------------------------------
st=$(post /v1/chat/completions $TOK '{"model":"t-cached","messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: usage=prompt:100,cached:40,completion:30,reasoning:10')
check "OpenAI cached/reasoning buckets" test "$(row "$(rid)" "input_uncached, cache_read, output, reasoning, cost_micro")" = "60|40|30|10|14000"
st=$(post /v1/chat/completions $TOK '{"model":"t-cached","stream":true,"messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: usage=prompt:100,cached:40,completion:30,reasoning:10')
check "OpenAI cached/reasoning buckets (stream)" test "$(row "$(rid)" "input_uncached, cache_read, output, reasoning")" = "60|40|30|10"
st=$(post_ant /v1/messages $TOK '{"model":"t-claude-cache","max_tokens":50,"messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: usage=prompt:50,cached:20,cache_write_5m:10,cache_write_1h:5,completion:7')
check "Anthropic cache buckets" test "$(row "$(rid)" "input_uncached, cache_read, cache_write_5m, cache_write_1h, output")" = "50|20|10|5|7"
st=$(post_ant /v1/messages $TOK '{"model":"t-claude-cache","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: usage=prompt:50,cached:20,cache_write_5m:10,cache_write_1h:5,completion:7')
check "Anthropic cache buckets (stream)" test "$(row "$(rid)" "input_uncached, cache_read, cache_write_5m, cache_write_1h, output")" = "50|20|10|5|7"

# ---- 9. keep-alive, disconnect and drain, slow client ---------------------------------------------
st=$(post /v1/chat/completions $TOK '{"model":"t-quiet","stream":true,"messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: slow=700,chunks=4')
check "keep-alive comment while the upstream is silent" grep -q '^: keep-alive' "$RB_TMP/out"
check "a stream longer than upstream_idle_timeout_ms, never silent that long, is served whole" grep -q '^data: \[DONE\]' "$RB_TMP/out"
st=$(post /v1/chat/completions $TOK '{"model":"t-quiet","stream":true,"messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: slow=3000,chunks=2')
check "a provider silent past upstream_idle_timeout_ms mid-stream: cut, recorded as interrupted" \
    bash -c "! grep -q '\[DONE\]' $RB_TMP/out && [ '$(row "$(rid)" "status, error_code")' = 'upstream_error|stream_interrupted' ]"
# A client that reads nothing for longer than the idle timeout: the gateway pauses the provider's
# transfer (8 MB fill the socket buffers and the 64 KB high-water mark), and the silence while
# paused is not the provider's: it is served whole. Its own user (its tokens fill a token window).
TOK_PAUSED=rbw_tok5eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee
rb_sql "INSERT INTO users (id, email) VALUES ('u-eeeeeeee', 'e@example.com');
INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb) VALUES ('ws-eeeeeeee', 'u-eeeeeeee', 'five', 'base', 512, 1, 1024);
INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES ('ws-eeeeeeee', decode('$(sha $TOK_PAUSED)', 'hex'), 'rbw_tok5');
INSERT INTO user_limits (user_id, tpm) VALUES ('u-eeeeeeee', 0);" >/dev/null
exec 3<>"/dev/tcp/127.0.0.1/$AI_PORT"
PAUSED='{"model":"t-big","stream":true,"max_tokens":4000000,"messages":[{"role":"user","content":"x"}]}'
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nX-Rigbox-Provider-Key: sk-paused\r\nX-Mock-Behavior: big=8000000\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$TOK_PAUSED" ${#PAUSED} "$PAUSED" >&3
sleep 3
cat <&3 >"$RB_TMP/paused.out"
exec 3<&-
check "a client that reads nothing for longer than the idle timeout is served whole" grep -q 'data: \[DONE\]' "$RB_TMP/paused.out"
# An embeddings call of 37 inputs of 8000 token ids (296k tokens: OpenAI takes 300k per call) is
# past 262144 JSON tokens, which the gateway refused as too deeply nested or too large.
awk 'BEGIN { printf "{\"model\":\"t-embed\",\"input\":["; for (a = 0; a < 37; a++) { printf "%s[", (a ? "," : "");
    for (i = 0; i < 8000; i++) printf "%s%d", (i ? "," : ""), i % 1000; printf "]" } printf "]}" }' >"$RB_TMP/emb.json"
st=$(curl -sS -o "$RB_TMP/out" -D "$RB_TMP/hdr" -w '%{http_code}' "$GW/v1/embeddings" -H "Authorization: Bearer $TOK_PAUSED" \
    -H 'X-Rigbox-Provider-Key: sk-emb' -H 'content-type: application/json' --data-binary @"$RB_TMP/emb.json")
check "embeddings of 296k token ids: served, and their tokens recorded ($st)" \
    bash -c "[ $st = 200 ] && [ '$(row "$(rid)" "input_uncached")' = 296000 ]"
curl -sS -N -o /dev/null -D "$RB_TMP/hdr" --max-time 0.6 "$GW/v1/chat/completions" -H "Authorization: Bearer $TOK" \
    -H 'content-type: application/json' -d '{"model":"t-slow","stream":true,"messages":[{"role":"user","content":"x"}]}' \
    -H 'X-Mock-Behavior: slow=150,chunks=12' 2>/dev/null
R=$(rid)
sleep 2.5
check "client gone mid-stream: drained, provider usage recorded" test "$(row "$R" "status, usage_source, output")" = "client_gone|provider|12"
# A client that leaves a stream longer than the drain (5 s here): no usage comes, the output is
# estimated from the text seen; for a reasoning model, whose reasoning tokens are never streamed,
# at the call's cap (100 tokens), what its hold covered.
for m in t-slow t-think; do
    curl -sS -N -o /dev/null -D "$RB_TMP/hdr" --max-time 0.6 "$GW/v1/chat/completions" -H "Authorization: Bearer $TOK" \
        -H 'content-type: application/json' -d "{\"model\":\"$m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}" \
        -H 'X-Mock-Behavior: slow=1500,chunks=10' 2>/dev/null
    eval "R_${m//-/_}=$(rid)"
done
sleep 5.5
check "client gone, drain cut: the output estimated from the text seen" \
    bash -c "[[ '$(row "$R_t_slow" "status, usage_source, output < 10")' == 'client_gone|estimate|t' ]]"
check "client gone, drain cut, a reasoning model: the output billed at the call's cap" \
    test "$(row "$R_t_think" "status, usage_source, output")" = "client_gone|estimate|100"
st=$(post /v1/chat/completions $TOK '{"model":"t-think","stream":true,"messages":[{"role":"user","content":"x"}]}' -H 'X-Mock-Behavior: reset')
check "a reasoning model's stream the provider broke, its client still there: the text seen, not the cap" \
    test "$(row "$(rid)" "status, usage_source, output < 10")" = "upstream_error|estimate|t"
# 16 MB of text takes 4M output tokens: a cap that large (t-big's default of 100 would cut the mock's
# answer to 400 bytes), for the BYOK workspace (no 800-credit hold; and the 4M tokens fill its user's
# token window, not the one of the user the next sections call for)
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
RSS_MAX=$RSS0
curl -sS -N -o "$RB_TMP/big.out" --limit-rate 4M "$GW/v1/chat/completions" -H "Authorization: Bearer $TOK_BYOK" \
    -H 'content-type: application/json' \
    -d '{"model":"t-big","stream":true,"max_tokens":4000000,"messages":[{"role":"user","content":"x"}]}' \
    -H 'X-Mock-Behavior: big=16000000' &
CPID=$!
while kill -0 $CPID 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
    ((rss > RSS_MAX)) && RSS_MAX=$rss
    sleep 0.2
done
BIG_OUT=$(stat -c %s "$RB_TMP/big.out")
check "slow client: the whole stream arrived ($BIG_OUT bytes > 16 MB)" test "$BIG_OUT" -gt 16000000
# stream_high_water_bytes is 64 KB here; 12 MB leaves room for ASan's quarantine of freed buffers
# (+0.5 MB plain, +5 MB under ASan), and a gateway that held the stream would pass 16 MB
check "slow client: gateway RSS stays bounded ($RSS0 -> $RSS_MAX kB: < 12 MB more for a 16 MB stream)" \
    test $((RSS_MAX - RSS0)) -lt 12288

# ---- 9a. a buffered answer is recorded when it is sent, not once the client has read it ------------
# A 4 MB answer to a client that reads nothing yet: most of it waits in the gateway. Its record must
# already be in the ledger (a crash now would otherwise lose a call the provider served). Its own user
# (the answer's 1M tokens fill that user's token window), on a per-call key.
UNREAD='{"model":"t-big","max_tokens":1000000,"messages":[{"role":"user","content":"x"}]}'
exec 3<>"/dev/tcp/127.0.0.1/$AI_PORT"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nX-Rigbox-Provider-Key: sk-unread\r\nX-Mock-Behavior: big=4000000\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$TOK_UNREAD" ${#UNREAD} "$UNREAD" >&3
unread_rows() { rb_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-dddddddd' AND status = 'ok'"; }
for i in $(seq 1 50); do [[ $(unread_rows) == 1 ]] && break; sleep 0.1; done
check "a buffered answer is recorded before the client has read it" test "$(unread_rows)" = 1
cat <&3 >"$RB_TMP/unread.out"
exec 3<&-
UNREAD_OUT=$(stat -c %s "$RB_TMP/unread.out")
check "the unread answer then arrives whole ($UNREAD_OUT bytes)" bash -c "[[ $UNREAD_OUT -gt 4000000 ]] && tail -c 1 '$RB_TMP/unread.out' | grep -q '}'"
sleep 0.3 # the call is over once its answer is read: a second record would be spooled by now
check "the unread answer is recorded once (one spool line)" \
    test "$(grep -c $'\tu-dddddddd\t' "$RB_TMP/spool/usage.spool")" = 1

# ---- 9b. the provider restarts: its idle keep-alive connections in the gateway are closed ---------
for i in 1 2 3 4; do post /v1/chat/completions $TOK "$CHAT" >/dev/null; done # idle connections in both workers
kill $MOCK_PID
wait $MOCK_PID 2>/dev/null
cpu_ticks() { awk '{ print $14 + $15 }' /proc/$GW_PID/stat; }
T0=$(cpu_ticks)
sleep 1
T1=$(cpu_ticks)
check "provider gone: the idle gateway does not spin on its closed connections ($((T1 - T0)) ticks in 1 s)" \
    test $((T1 - T0)) -lt $(($(getconf CLK_TCK) / 4))
rb_spawn mock2 "$MOCK_BIN" --listen 127.0.0.1:$MOCK_PORT
MOCK_PID=$RB_LAST_PID
rb_wait_http "$MOCK/mock/healthz" || fail "mock provider did not restart"
codes=""
for i in 1 2 3 4; do codes+=$(post /v1/chat/completions $TOK "$CHAT"); done
check "provider restarted: every request served on a new connection ($codes)" test "$codes" = 200200200200

# ---- 10. metrics, apps listener, shutdown flush ----------------------------------------------------
rb_metrics "$GW/metrics" >"$RB_TMP/metrics"
check "metrics: requests_total by route/model/status" grep -q 'rigbox_gateway_requests_total{route="chat",model="t-chat",status="200"}' "$RB_TMP/metrics"
check "metrics: drains counted" grep -Eq '^rigbox_gateway_drains_total [1-9]' "$RB_TMP/metrics"
st=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$APPS_PORT/")
check "apps listener: 404" test "$st" = 404
N_BEFORE=$(rb_sql "SELECT count(*) FROM usage_events")
# The writer posts within writer_flush_ms (50 ms) on its own, before SIGTERM. So: a lock held for 3 s
# blocks the INSERT of one first record (it commits once the lock goes, whatever the gateway does),
# and the 5 records queued behind it can only reach PostgreSQL if the stop posts them.
# A call still under way at the stop's deadline (drain_timeout_ms + 2 s) is cut and recorded by
# this process (gateway_stopped, usage estimated): not left in the journal for a next start.
curl -sS -N -o "$RB_TMP/long.out" -D "$RB_TMP/long.hdr" "$GW/v1/chat/completions" -H "Authorization: Bearer $TOK" \
    -H 'content-type: application/json' -H 'X-Mock-Behavior: slow=500,chunks=60' \
    -d '{"model":"t-chat","stream":true,"messages":[{"role":"user","content":"a long answer"}]}' 2>/dev/null &
LONG_PID=$!
sleep 1
rb_sql "BEGIN; LOCK TABLE usage_events IN SHARE MODE; SELECT pg_sleep(3); COMMIT" >/dev/null &
LOCK_PID=$!
for i in $(seq 1 50); do
    [[ $(rb_sql "SELECT count(*) FROM pg_locks WHERE relation = 'usage_events'::regclass AND mode = 'ShareLock' AND granted") == 1 ]] && break
    sleep 0.05
done
# per-call keys: unbilled, so the credits' stop (which waits for billed records) does not wait for them
post /v1/chat/completions $TOK "$CHAT" -H 'X-Rigbox-Provider-Key: sk-per-call-key' >/dev/null
IDS="'$(rid)'"
sleep 0.3 # its batch is read and waits on the lock
for i in 1 2 3 4 5; do
    post /v1/chat/completions $TOK "$CHAT" -H 'X-Rigbox-Provider-Key: sk-per-call-key' >/dev/null
    IDS+=",'$(rid)'"
done
posted() { rb_sql "SELECT count(*) FROM usage_events WHERE request_id IN ($IDS)"; }
check "shutdown: the 6 records are not yet posted at SIGTERM ($(posted) posted; $N_BEFORE -> $(rb_sql "SELECT count(*) FROM usage_events") rows)" \
    test "$(posted)" = 0
kill -TERM $GW_PID
wait $GW_PID 2>/dev/null
wait $LOCK_PID
check "shutdown flushes the queue: every request recorded ($(posted) of 6)" test "$(posted)" = 6
wait $LONG_PID
long_rid=$(grep -i '^x-rigbox-request-id:' "$RB_TMP/long.hdr" | cut -d' ' -f2 | tr -d '\r')
check "shutdown: a stream still under way at the deadline is cut, and recorded before the gateway exits" \
    test "$(rb_sql "SELECT status, error_code, usage_source, input_uncached > 0, output > 0 FROM usage_events WHERE request_id = '$long_rid'")" = "error|gateway_stopped|estimate|t|t"
check "shutdown: it was logged as recorded at the stop" grep -q 'event=unfinished_recorded records=1 ' "$RB_TMP/gateway.log"
# common/server.c never disposes h2o's per-worker contexts (leaks inside libh2o only): a leak
# counts as ours only when one of its frames is in gateway/.
if grep -q 'runtime error\|ERROR: AddressSanitizer' "$RB_TMP/gateway.log" ||
    grep -A12 'leak of' "$RB_TMP/gateway.log" | grep -q '/gateway/'; then
    fail "no sanitizer report"
    grep -B2 -A14 'runtime error\|ERROR: AddressSanitizer\|leak of' "$RB_TMP/gateway.log" | head -80
else
    ok "no sanitizer report"
fi
rb_finish
