#!/usr/bin/env bash
# rigbox-gateway when streams go wrong: a provider error after the 200 is forwarded as the provider's own
# event; a connection reset mid-stream breaks the client's transfer and is billed as an estimate; a
# stream with no usage is estimated; a client that leaves a stream longer than the drain bound gets its
# upstream cancelled and an estimate recorded; an oversized body is refused with 413.
# usage: gateway_stream_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
. "$src/tests/integration/lib.sh"
rb_db_create
mock_port=$(rb_free_port)
ai_port=$(rb_free_port)
GW=http://127.0.0.1:$ai_port
cat >"$RB_TMP/models.yaml" <<YAML
providers:
  mockoai: {kind: openai, base_url: "http://127.0.0.1:$mock_port"}
  mockant: {kind: anthropic, base_url: "http://127.0.0.1:$mock_port"}
models:
  t-chat: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
  t-claude: {provider: mockant, upstream: claude-sonnet-4-5, prices: {input: "3.00", output: "15.00"}, max_output_default: 200, max_output: 5000}
  t-host: {provider: mockhost, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100}
YAML
# mockhost: the mock by a host name, as real providers are (api.openai.com): curl's threaded
# resolver then runs, which the loopback addresses above never do.
sed -i "s|^  mockant:.*|&\n  mockhost: {kind: openai, base_url: \"http://rigbox-mock.test:$mock_port\"}|" "$RB_TMP/models.yaml"
mkdir -p "$RB_TMP/templates"
cat >"$RB_TMP/rigbox.yaml" <<YAML
gateway:
  ai_listen: 127.0.0.1:$ai_port
  apps_listen: 127.0.0.1:$(rb_free_port)
  limits: {body_max_bytes: 4096, sse_line_max_bytes: 2048, drain_bytes_max: 2000, drain_timeout_ms: 3000, keepalive_interval_ms: 500, client_send_timeout_ms: 2000}
database: {url: "$RB_DB_URL"}
models: models.yaml
templates: templates
YAML
rb_spawn mock "$build/tools/mock-provider/mock-provider" --listen "127.0.0.1:$mock_port"
rb_wait_http "http://127.0.0.1:$mock_port/mock/healthz"
RIGBOX_SPOOL_DIR=$RB_TMP/spool RIGBOX_GATEWAY_FORWARD_MOCK_BEHAVIOR=1 RIGBOX_GATEWAY_IDENTITY_CACHE_MAX=8 RIGBOX_MOCKOAI_API_KEY=sk-oai \
    RIGBOX_MOCKANT_API_KEY=sk-ant rb_spawn gateway "$build/gateway/rigbox-gateway" --config "$RB_TMP/rigbox.yaml"
gw_pid=$RB_LAST_PID
rb_wait_http "$GW/healthz" || { cat "$RB_TMP/gateway.log"; exit 1; }

tok=rbw_streamtest0000000000000000000000000000000
rb_sql "INSERT INTO users (id, email) VALUES ('u-ssssssss', 's@example.com');
INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb)
  VALUES ('ws-ssssssss', 'u-ssssssss', 's', 'base', 512, 1, 1024);
INSERT INTO workspace_tokens (workspace_id, token_hash, prefix)
  VALUES ('ws-ssssssss', sha256('$tok'::bytea), 'rbw_stre');
INSERT INTO user_limits (user_id, rpm, tpm) VALUES ('u-ssssssss', 0, 0); -- no caps: big streams below
SELECT count(*) FROM rb_grant('g-stream', 'u-ssssssss', 1000000000, 'paid', NULL, NULL);" >/dev/null

# stream ROUTE BEHAVIOR BODY [curl args]: the client's bytes to $RB_TMP/out, headers to $RB_TMP/hdr;
# sets $rc (curl's exit code) and $rid.
stream() {
    local route=$1 bhv=$2 body=$3
    shift 3
    curl -sS -N -o "$RB_TMP/out" -D "$RB_TMP/hdr" "$GW$route" -H "Authorization: Bearer $tok" \
        -H "x-api-key: $tok" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
        -H "X-Mock-Behavior: $bhv" -d "$body" "$@" 2>/dev/null
    rc=$?
    rid=$(grep -i '^x-rigbox-request-id:' "$RB_TMP/hdr" | cut -d' ' -f2 | tr -d '\r')
}
row() { # row COLUMNS: the usage row of $rid (waits for the writer)
    local out
    for ((i = 0; i < 50; i++)); do
        out=$(rb_sql "SELECT $1 FROM usage_events WHERE request_id = '$rid'")
        [[ -n $out ]] && { echo "$out"; return; }
        sleep 0.1
    done
}
CHAT='{"model":"t-chat","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}'
MSG='{"model":"t-claude","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"tell me a story"}]}'
NOSTREAM='{"model":"t-chat","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'

# The provider's bytes cut anywhere (mid-line, mid-event, mid-character: TLS records and proxies do):
# the client gets the same bytes, and the same usage is recorded, as from an uncut stream. For chat,
# the injected usage chunk is still found and removed (or kept, with its cost, when asked for).
UTF='héllo wörld 日本語 🎉 done'
OA_TOOLS='"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}]'
AN_TOOLS='"tools":[{"name":"lookup","input_schema":{"type":"object"}}]'
RESP_REASON_TOOLS='"reasoning":{"effort":"low","summary":"auto"},"tools":[{"type":"function","name":"lookup","parameters":{"type":"object"}}]'
for c in "/v1/chat/completions|{\"model\":\"t-chat\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}" \
    "/v1/chat/completions|{\"model\":\"t-chat\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}" \
    "/v1/responses|{\"model\":\"t-chat\",\"stream\":true,\"input\":\"$UTF\"}" \
    "/v1/responses|{\"model\":\"t-chat\",\"stream\":true,$RESP_REASON_TOOLS,\"input\":\"$UTF\"}" \
    "/v1/messages|{\"model\":\"t-claude\",\"max_tokens\":100,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}" \
    "/v1/chat/completions|{\"model\":\"t-chat\",\"stream\":true,$OA_TOOLS,\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}" \
    "/v1/messages|{\"model\":\"t-claude\",\"max_tokens\":100,\"stream\":true,$AN_TOOLS,\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}" \
    "/v1/chat/completions|{\"model\":\"t-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}"; do
    route=${c%%|*}
    body=${c#*|}
    stream "$route" fixed-time "$body"
    cp "$RB_TMP/out" "$RB_TMP/whole"
    whole=$(row "input_uncached, cache_read, output, cost_micro, usage_source")
    for n in 3 64; do
        stream "$route" "fixed-time,split=$n" "$body"
        check "$route cut every $n bytes upstream: the client's bytes are those of the uncut answer" \
            bash -c "[ $rc = 0 ] && cmp -s $RB_TMP/whole $RB_TMP/out && grep -q '日' $RB_TMP/out"
        check "$route cut every $n bytes upstream: the same usage is recorded ($whole)" \
            test "$(row "input_uncached, cache_read, output, cost_micro, usage_source")" = "$whole"
    done
    check "$route: the usage came from the provider ($whole)" bash -c "[[ '$whole' == *'|provider' ]]"
done
check "chat: the injected usage chunk is removed from a cut stream too" bash -c "! grep -q '\"choices\":\[\]' $RB_TMP/out"
stream /v1/chat/completions split=5 "{\"model\":\"t-chat\",\"stream\":true,$OA_TOOLS,\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}"
check "a streamed tool call reaches the client: its name, argument deltas and finish_reason" \
    bash -c "grep -q '\"name\":\"lookup\"' $RB_TMP/out && [ \$(grep -c '\"arguments\":' $RB_TMP/out) -gt 2 ] && grep -q '\"finish_reason\":\"tool_calls\"' $RB_TMP/out"
stream /v1/responses split=5 "{\"model\":\"t-chat\",\"stream\":true,$RESP_REASON_TOOLS,\"input\":\"$UTF\"}"
check "a Responses stream that reasons and calls a tool reaches the client: summary and argument deltas, both items" \
    bash -c "grep -q 'response.reasoning_summary_text.delta' $RB_TMP/out && [ \$(grep -c '^event: response.function_call_arguments.delta' $RB_TMP/out) -gt 2 ] && grep -q '\"type\":\"function_call\",\"status\":\"completed\"' $RB_TMP/out && grep -q '^event: response.completed' $RB_TMP/out"
check "its reasoning tokens are recorded, inside its output" \
    test "$(row "reasoning > 0, reasoning < output, usage_source")" = "t|t|provider"
# A Responses stream that fails with an `error` event and no terminal event: the client gets the
# event, the row says the provider failed, and the usage is estimated (the provider never said it).
stream /v1/responses error-event "{\"model\":\"t-chat\",\"stream\":true,\"input\":\"$UTF\"}"
check "a Responses stream ending in an error event: the event reaches the client" \
    bash -c "[ $rc = 0 ] && tail -n 3 $RB_TMP/out | grep -q '^event: error' && ! grep -q response.completed $RB_TMP/out"
check "a Responses stream ending in an error event: upstream_error, usage estimated" \
    test "$(row "status, error_code, usage_source, input_uncached > 0")" = "upstream_error|provider_error|estimate|t"
stream /v1/messages split=5 "{\"model\":\"t-claude\",\"max_tokens\":100,\"stream\":true,$AN_TOOLS,\"messages\":[{\"role\":\"user\",\"content\":\"$UTF\"}]}"
check "a streamed tool_use block reaches the client: input_json_delta, stop_reason tool_use" \
    bash -c "grep -q '\"type\":\"tool_use\"' $RB_TMP/out && grep -q 'input_json_delta' $RB_TMP/out && grep -q '\"stop_reason\":\"tool_use\"' $RB_TMP/out"

# A provider silent mid-event past keepalive_interval_ms (500 ms here): the keep-alive comment
# waits for the end of the event (a comment inside an event would corrupt it for the client).
body='{"model":"t-chat","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}'
stream /v1/chat/completions fixed-time "$body"
cp "$RB_TMP/out" "$RB_TMP/whole"
first=$(awk 'BEGIN { RS = "\n\n" } { print length($0) + 2; exit }' "$RB_TMP/whole") # pieces end at its end, then mid-event
stream /v1/chat/completions "fixed-time,split=$first,slow=1100" "$body"
ka=$(grep -c '^: keep-alive' "$RB_TMP/out")
check "a provider silent mid-event: keep-alive comments only between events ($ka)" \
    bash -c "[ $rc = 0 ] && [ $ka -ge 1 ] && cmp -s $RB_TMP/whole <(awk '/^: keep-alive\$/ { skip = 1; next } skip && \$0 == \"\" { skip = 0; next } { skip = 0; print }' $RB_TMP/out)"

# A stream with an event the gateway cannot read (past sse_line_max_bytes, 2048 here; a provider
# that echoes a large request in its events): the client still gets all of it, and the usage,
# which it cannot read, is billed at the call's output cap (what its hold was for), not at the
# little output seen before that event (0 here).
stream /v1/chat/completions big=6000,chunks=1 '{"model":"t-chat","stream":true,"max_tokens":20000,"messages":[{"role":"user","content":"hi"}]}'
check "an event past sse_line_max_bytes: the client gets the whole stream" \
    bash -c "[ $rc = 0 ] && grep -q '^data: \[DONE\]' $RB_TMP/out && [ \$(wc -c <$RB_TMP/out) -gt 6000 ]"
check "and its output is billed at the call's cap ($(row "output, usage_source"))" test "$(row "output, usage_source")" = "20000|estimate"

stream /v1/chat/completions error-mid "$CHAT"
check "OpenAI error after the 200: the provider's error event reaches the client" \
    grep -q '^data: {"error":' "$RB_TMP/out"
check "OpenAI error after the 200: one usage row, not ok" bash -c "[[ -n '$(row status)' && '$(row status)' != ok ]]"
stream /v1/messages error-mid "$MSG"
check "Anthropic error after the 200: event: error reaches the client" grep -q '^event: error' "$RB_TMP/out"
check "Anthropic error after the 200: one usage row, not ok" bash -c "[[ -n '$(row status)' && '$(row status)' != ok ]]"

stream /v1/chat/completions reset "$CHAT"
check "reset mid-stream: the client's transfer breaks" bash -c "[[ $rc -ne 0 ]]"
check "reset mid-stream: no [DONE] reached the client" bash -c "! grep -q '\[DONE\]' $RB_TMP/out"
check "reset mid-stream: recorded with an estimate" test "$(row usage_source)" = estimate
check "reset mid-stream: the estimate is billed (cost > 0)" bash -c "[[ $(row cost_micro) -gt 0 ]]"

stream /v1/chat/completions no-usage "$CHAT"
check "a stream without usage completes" grep -q '\[DONE\]' "$RB_TMP/out"
check "a stream without usage is billed as an estimate" test "$(row usage_source)" = estimate

# A client that leaves a long slow stream: the gateway drains at most drain_bytes_max, then cancels.
LONG='{"model":"t-chat","stream":true,"max_tokens":100000,"messages":[{"role":"user","content":"a long story"}]}'
stream /v1/chat/completions "big=400000,slow=20" "$LONG" --max-time 1
check "client gone: its transfer was cut" bash -c "[[ $rc -ne 0 ]]"
sleep 4
check "client gone past the drain bound: recorded as client_gone with an estimate" \
    test "$(row "status || ' ' || usage_source")" = "client_gone estimate"
check "the gateway is still healthy" rb_wait_http "$GW/healthz" 10

# A client that leaves before the provider's first byte, which comes after the drain bound: the
# transfer is given up, and the provider, which had the whole request, is billed as an estimate:
# the input from its bytes, and the output at the call's cap (100), what its hold covered. A
# non-streamed answer shows nothing of its output before it ends, and the provider generates it
# all the same (it was billed 0 output: a client that left early got the generation free).
# HTTP/2, whose reset the gateway sees at once (an HTTP/1 client that vanishes is noticed when the
# answer is written).
before=$(rb_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-ssssssss'")
stream /v1/chat/completions ttfb=6000 '{"model":"t-chat","messages":[{"role":"user","content":"a question"}]}' \
    --http2-prior-knowledge --max-time 1
for ((i = 0; i < 60; i++)); do
    [[ $(rb_sql "SELECT count(*) FROM usage_events WHERE user_id = 'u-ssssssss'") -gt $before ]] && break
    sleep 0.1
done
gone=$(rb_sql "SELECT status || ' ' || usage_source || ' ' || (input_uncached > 0) || ' ' || output || ' ' || (cost_micro > 0)
               FROM usage_events WHERE user_id = 'u-ssssssss' ORDER BY created_at DESC LIMIT 1")
check "gone before the first byte, given up: billed an estimate, its output at the cap ($gone)" test "$gone" = "client_gone estimate true 100 true"

big=$(head -c 6000 /dev/zero | tr '\0' a)
code=$(curl -s -o "$RB_TMP/413.json" -D "$RB_TMP/413.hdr" -w '%{http_code}' "$GW/v1/chat/completions" -H "Authorization: Bearer $tok" \
    -H 'content-type: application/json' -d "{\"model\":\"t-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"$big\"}]}")
check "a body over body_max_bytes is 413" test "$code" = 413
check "413 in OpenAI's error shape, as JSON, with a request id" bash -c "jq -e '.error.code == \"request_too_large\" and .error.type == \"invalid_request_error\" and (.error.message | length > 0)' $RB_TMP/413.json >/dev/null && grep -qi '^content-type: application/json' $RB_TMP/413.hdr && grep -qi '^x-rigbox-request-id: req_' $RB_TMP/413.hdr"
longkey=$(head -c 1200 /dev/zero | tr '\0' k)
code=$(curl -s -o "$RB_TMP/400.json" -w '%{http_code}' "$GW/v1/chat/completions" -H "Authorization: Bearer $tok" \
    -H "X-Rigbox-Provider-Key: sk-$longkey" -H 'content-type: application/json' -d "$NOSTREAM")
check "a per-call key past its bound is 400 invalid_request (was 413 request_too_large)" \
    bash -c "[ $code = 400 ] && jq -e '.error.code == \"invalid_request\"' $RB_TMP/400.json >/dev/null"
# The identity cache (8 entries here) holds at most half its size of unknown secrets: 12 made-up
# tokens used to fill it, and emptying a full cache dropped the known token too. With
# workspace_tokens locked, the known token is still answered from the cache.
for i in $(seq 10 21); do
    curl -s -o /dev/null "$GW/v1/chat/completions" -H "Authorization: Bearer rbw_madeup0000000000000000000000000000000000$i" -d "$NOSTREAM"
done
{ echo "BEGIN; LOCK TABLE workspace_tokens IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;"; } |
    psql -h "$RB_TEST_PGHOST" -U postgres -d "$RB_DB" -qAt >/dev/null 2>&1 &
locker=$!
sleep 0.5
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$GW/v1/chat/completions" -H "Authorization: Bearer $tok" \
    -H 'content-type: application/json' -d "$NOSTREAM")
wait "$locker"
check "made-up tokens do not push a known one out of the identity cache ($code)" test "$code" = 200

# Paths that are no route: a longer path under a route's prefix was h2o's plain-text 404.
for p in /v1/chat/completions/extra /v1/nope /v1/messages/x; do
    code=$(curl -s -o "$RB_TMP/404.json" -D "$RB_TMP/404.hdr" -w '%{http_code}' "$GW$p" -H "Authorization: Bearer $tok" -d '{}')
    if [[ $p == /v1/messages/* ]]; then f='.type == "error" and .error.type == "not_found_error"'; else f='.error.code == "not_found"'; fi
    check "$p: 404 in the route's dialect, as JSON, with a request id" \
        bash -c "[ $code = 404 ] && jq -e '$f' $RB_TMP/404.json >/dev/null && grep -qi '^x-rigbox-request-id: req_' $RB_TMP/404.hdr"
done
code=$(curl -s -o "$RB_TMP/413a.json" -w '%{http_code}' "$GW/v1/messages" -H "x-api-key: $tok" \
    -H 'content-type: application/json' -d "{\"model\":\"t-claude\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"$big\"}]}")
check "413 on /v1/messages in Anthropic's error shape" bash -c "[ $code = 413 ] && jq -e '.type == \"error\" and .error.type == \"request_too_large\"' $RB_TMP/413a.json >/dev/null"

# A provider that writes a second response nobody asked for on a connection the gateway keeps idle:
# curl would reuse that connection and take those bytes for the next call's answer (possibly
# another user's call). The calls after it, a second apart on one client connection (so to the
# same gateway worker and its pooled upstream connection), get their own answers.
H=(-H "Authorization: Bearer $tok" -H 'content-type: application/json' -d "$NOSTREAM")
curl -sS --rate 1/s -o "$RB_TMP/t0" "${H[@]}" -H 'X-Mock-Behavior: trailing=50' "$GW/v1/chat/completions" \
    --next -sS -o "$RB_TMP/t1" "${H[@]}" "$GW/v1/chat/completions" --next -sS -o "$RB_TMP/t2" "${H[@]}" "$GW/v1/chat/completions" \
    --next -sS -o "$RB_TMP/t3" "${H[@]}" "$GW/v1/chat/completions"
answers=$(for f in t0 t1 t2 t3; do jq -r '.id[0:9]' "$RB_TMP/$f" 2>/dev/null || echo bad; done | tr '\n' ' ')
check "unsolicited bytes on an idle upstream connection never answer a later call ($answers)" \
    test "$answers" = "chatcmpl- chatcmpl- chatcmpl- chatcmpl- "
check "and the gateway logs them (their count, not their bytes)" grep -q 'upstream_unsolicited_bytes.*bytes=' "$RB_TMP/gateway.log"
# The same after a stream its slow client kept pausing (the gateway stops reading a paused
# transfer's connection; the connection must be watched again once the transfer is over).
BIGS='{"model":"t-chat","stream":true,"max_tokens":1000000,"messages":[{"role":"user","content":"x"}]}'
curl -sS --rate 1/s -o "$RB_TMP/s0" --limit-rate 2M -H "Authorization: Bearer $tok" -H 'content-type: application/json' \
    -H 'X-Rigbox-Provider-Key: sk-own' -H 'X-Mock-Behavior: big=3000000,trailing=50' -d "$BIGS" "$GW/v1/chat/completions" \
    --next -sS -o "$RB_TMP/t1" "${H[@]}" "$GW/v1/chat/completions" --next -sS -o "$RB_TMP/t2" "${H[@]}" "$GW/v1/chat/completions"
answers=$(for f in t1 t2; do jq -r '.id[0:9]' "$RB_TMP/$f" 2>/dev/null || echo bad; done | tr '\n' ' ')
check "unsolicited bytes after a paused stream never answer a later call ($answers)" \
    bash -c "grep -q '^data: \[DONE\]' $RB_TMP/s0 && [ '$answers' = 'chatcmpl- chatcmpl- ' ]"

# A client that stops reading, but keeps its connection: past client_send_timeout_ms (2 s here)
# with none of the answer taken, the connection is cut and the call ends (recorded, its hold and
# slot freed) while the client still holds its socket. h2o alone never times out a write.
python3 - "$ai_port" "$tok" "$BIGS" <<'PY' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
body = sys.argv[3].encode()
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + sys.argv[2].encode() +
          b"\r\nContent-Type: application/json\r\nX-Rigbox-Subject: stalled-reader\r\n"
          b"X-Rigbox-Provider-Key: sk-own\r\nX-Mock-Behavior: big=8000000\r\nContent-Length: " +
          str(len(body)).encode() + b"\r\n\r\n" + body)
time.sleep(30)  # reads nothing, closes nothing
PY
stalled=$!
stalled_row() { rb_sql "SELECT status, usage_source FROM usage_events WHERE subject = 'stalled-reader'"; }
for _ in $(seq 150); do [[ -n $(stalled_row) ]] && break; sleep 0.1; done
check "a client that reads nothing of an 8 MB stream: cut after client_send_timeout_ms, recorded while it still holds its socket ($(stalled_row))" \
    bash -c "kill -0 $stalled && [ '$(stalled_row)' = 'client_gone|estimate' ]"
kill "$stalled" 2>/dev/null
wait "$stalled" 2>/dev/null

# Upstreams that misbehave must not take the gateway down.
# (on the caller's own key: x-ratelimit-* headers reach the caller only then)
stream /v1/chat/completions pad-headers=30 "$NOSTREAM" -H 'X-Rigbox-Provider-Key: sk-own'
check "30 provider headers of 1 KB (past what is kept): answered, headers kept whole" \
    bash -c "[ $rc = 0 ] && grep -q '^HTTP/1.1 200' $RB_TMP/hdr && ! grep -qi '^x-ratelimit-pad-29' $RB_TMP/hdr && grep -qi '^x-ratelimit-pad-00: ppp' $RB_TMP/hdr"
stream /v1/chat/completions force-stream "$NOSTREAM"
check "an event stream (with a usage chunk) answering \"stream\": false: answered" \
    bash -c "[ $rc = 0 ] && grep -q '^HTTP/1.1 200' $RB_TMP/hdr"
check "and recorded with the usage of the stream" test "$(row usage_source)" = provider
check "the gateway is still up" rb_wait_http "$GW/healthz" 5

# The model's max_output is a hard cap: past it, 400 in the caller's dialect, nothing sent upstream.
stream /v1/messages "" '{"model":"t-claude","max_tokens":5001,"messages":[{"role":"user","content":"hi"}]}'
check "max_tokens past the model's max_output is 400 (was forwarded, and held for)" \
    bash -c "grep -q '^HTTP/1.1 400' $RB_TMP/hdr && jq -e '.type == \"error\" and (.error.message | test(\"at most 5000\"))' $RB_TMP/out >/dev/null"
stream /v1/messages "" '{"model":"t-claude","max_tokens":5000,"messages":[{"role":"user","content":"hi"}]}'
check "max_tokens at max_output is served" grep -q '^HTTP/1.1 200' "$RB_TMP/hdr"

# A provider by host name (the second gateway sees rigbox-mock.test in its own /etc/hosts, in a
# mount namespace). curl closes the resolver's socketpair itself, and its descriptor number comes
# back for the connection: kept in the loop, the stale entry hid the connection from epoll, and
# every call waited for a curl timer (here the 20 s connect timeout; with the shipped settings a
# stream could hang until its 600 s total).
printf '127.0.0.1 rigbox-mock.test\n' >"$RB_TMP/hosts"
ai2=$(rb_free_port)
sed -e "s|ai_listen: 127.0.0.1:$ai_port|ai_listen: 127.0.0.1:$ai2|" -e "s|apps_listen: .*|apps_listen: 127.0.0.1:$(rb_free_port)|" \
    -e "s|limits: {|limits: {upstream_connect_timeout_ms: 20000, |" "$RB_TMP/rigbox.yaml" >"$RB_TMP/rigbox-host.yaml"
RIGBOX_SPOOL_DIR=$RB_TMP/spool-host RIGBOX_MOCKOAI_API_KEY=sk-oai RIGBOX_MOCKANT_API_KEY=sk-ant RIGBOX_MOCKHOST_API_KEY=sk-host \
    rb_spawn gateway-host unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$RB_TMP/hosts" \
    "$build/gateway/rigbox-gateway" --config "$RB_TMP/rigbox-host.yaml"
host_pid=$RB_LAST_PID
rb_wait_http "http://127.0.0.1:$ai2/healthz" || cat "$RB_TMP/gateway-host.log"
HOSTCHAT='{"model":"t-host","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
hc=""
for i in 1 2 3; do
    hc+="$(curl -s -o /dev/null -w '%{http_code}' --max-time 8 "http://127.0.0.1:$ai2/v1/chat/completions" \
        -H "Authorization: Bearer $tok" -H 'content-type: application/json' -d "$HOSTCHAT") "
done
curl -sS -N -o "$RB_TMP/host-stream" --max-time 8 "http://127.0.0.1:$ai2/v1/chat/completions" -H "Authorization: Bearer $tok" \
    -H 'content-type: application/json' -d '{"model":"t-host","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
check "a provider by host name answers without waiting for a curl timer ($hc)" test "$hc" = "200 200 200 "
check "and streams to the end" grep -q '\[DONE\]' "$RB_TMP/host-stream"

# A second SIGTERM during the graceful shutdown (a call still waits for its provider) must not end
# the process before the shutdown ran: the lease thread and the recorder did not block the signal,
# so it took its default action there (exit by signal, leases left open).
kill -TERM "$host_pid"
wait "$host_pid" 2>/dev/null
curl -s -o /dev/null --max-time 10 "$GW/v1/chat/completions" -H "Authorization: Bearer $tok" \
    -H 'content-type: application/json' -H 'X-Mock-Behavior: ttfb=2000' -d "$NOSTREAM" &
slow=$!
sleep 0.5
kill -TERM "$gw_pid"
sleep 0.3
kill -TERM "$gw_pid"
wait "$gw_pid" 2>/dev/null
gw_rc=$?
wait "$slow" 2>/dev/null
check "two SIGTERMs: the gateway ends its shutdown (exit $gw_rc) and returns its leases" \
    bash -c "[ $gw_rc = 0 ] && [ \"\$(psql -h $RB_TEST_PGHOST -U postgres -d $RB_DB -qAt -c 'SELECT count(*) FROM credit_leases WHERE closed_at IS NULL')\" = 0 ]"

rb_finish
