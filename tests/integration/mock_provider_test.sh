#!/usr/bin/env bash
# mock_provider_test.sh MOCK_BIN FIXTURES_DIR
#
# Starts tools/mock-provider on a free loopback port and checks its wire format:
#  - every case in FIXTURES_DIR/{openai,anthropic}/cases.tsv is replayed with curl and the body is
#    compared byte for byte with the golden <case>.sse / .json / .html (and the status code);
#  - 429 carries Retry-After and the rate-limit headers; `reset` breaks the transfer (curl exit 18
#    or 56) over HTTP/1.1 and h2c; slow= and ttfb= delay; split= cuts the body anywhere;
#    /mock/requests records the headers sent.
# MOCK_REGEN=1 rewrites the golden files instead of comparing (review the diff before committing).
# Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
set -u

BIN=${1:?usage: mock_provider_test.sh MOCK_BIN FIXTURES_DIR}
FIX=${2:?usage: mock_provider_test.sh MOCK_BIN FIXTURES_DIR}
TMP=$(mktemp -d /tmp/mock-provider-test.XXXXXX)
PASSED=0
FAILED=0
PID=

ok() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }

cleanup() {
    if [[ -n $PID ]]; then
        kill -TERM "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

finish() {
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED -eq 0 ]]
    exit $?
}

# Starts the mock on a random free port (a few tries); sets PID and BASE.
start_mock() {
    local try port
    for try in 1 2 3 4 5; do
        port=$((10000 + RANDOM % 22000)) # below the ephemeral range
        "$BIN" --listen "127.0.0.1:$port" --threads 2 >"$TMP/mock.log" 2>&1 &
        PID=$!
        for _ in $(seq 50); do
            if curl -sf "http://127.0.0.1:$port/mock/healthz" >/dev/null 2>&1; then
                BASE="http://127.0.0.1:$port"
                return 0
            fi
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
        PID=
    done
    return 1
}

# replay DIR CASE STATUS PATH HEADERS: one golden case.
replay() {
    local dir=$1 name=$2 status=$3 path=$4 headers=$5 golden got code
    local -a args=(-sS -o "$TMP/body" -w '%{http_code}' -H 'Content-Type: application/json')
    local IFS='|'
    for h in $headers; do args+=(-H "$h"); done
    unset IFS
    code=$(curl "${args[@]}" --data-binary "@$dir/$name.request.json" "$BASE$path")
    if [[ -f $dir/$name.sse ]]; then
        golden=$dir/$name.sse
    elif [[ -f $dir/$name.json ]]; then
        golden=$dir/$name.json
    elif [[ -f $dir/$name.html ]]; then
        golden=$dir/$name.html
    elif grep -q '"stream":true' "$dir/$name.request.json"; then
        golden=$dir/$name.sse
    else
        golden=$dir/$name.json
    fi
    if [[ ${MOCK_REGEN:-0} == 1 ]]; then
        cp "$TMP/body" "$golden"
        ok "$(basename "$dir")/$name: regenerated $(basename "$golden") (status $code)"
        return
    fi
    if [[ $code != "$status" ]]; then
        fail "$(basename "$dir")/$name: status $code, want $status"
    elif ! cmp -s "$golden" "$TMP/body"; then
        fail "$(basename "$dir")/$name: body differs from $(basename "$golden")"
        diff "$golden" "$TMP/body" | head -n 10
    else
        ok "$(basename "$dir")/$name"
    fi
}

replay_all() {
    local dir name status path headers
    for dir in "$FIX/openai" "$FIX/anthropic"; do
        while IFS=$'\t' read -r name status path headers; do
            [[ -z $name || $name == \#* ]] && continue
            replay "$dir" "$name" "$status" "$path" "$headers"
        done <"$dir/cases.tsv"
    done
}

OA=(-H 'Authorization: Bearer sk-test' -H 'Content-Type: application/json')
AN=(-H 'x-api-key: sk-ant-test' -H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json')
CHAT='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"one two three four"}]}'
MSG='{"model":"claude-sonnet-4-20250514","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"one two three four"}]}'

check_rate_limit() {
    curl -sS -o /dev/null -D "$TMP/h" "${OA[@]}" -H 'X-Mock-Behavior: status=429,retry-after=7' \
        -d "$CHAT" "$BASE/v1/chat/completions"
    if grep -qi '^retry-after: 7' "$TMP/h" && grep -qi '^x-ratelimit-remaining-requests: 0' "$TMP/h"; then
        ok "openai 429 has Retry-After and x-ratelimit headers"
    else
        fail "openai 429 headers: $(tr -d '\r' <"$TMP/h" | tr '\n' ' ')"
    fi
    curl -sS -o /dev/null -D "$TMP/h" "${AN[@]}" -H 'X-Mock-Behavior: status=429' -d "$MSG" \
        "$BASE/v1/messages"
    if grep -qi '^retry-after: 1' "$TMP/h" && grep -qi '^anthropic-ratelimit-requests-remaining: 0' "$TMP/h" &&
        grep -q '^HTTP/1.1 429' "$TMP/h"; then
        ok "anthropic 429 has retry-after and anthropic-ratelimit headers"
    else
        fail "anthropic 429 headers: $(tr -d '\r' <"$TMP/h" | tr '\n' ' ')"
    fi
}

# reset: the client must see a broken transfer, never a clean end.
check_reset() {
    local proto rc
    for proto in --http1.1 --http2-prior-knowledge; do
        curl -sS "$proto" -o "$TMP/body" "${OA[@]}" -H 'X-Mock-Behavior: reset' -d "$CHAT" \
            "$BASE/v1/chat/completions" 2>/dev/null
        rc=$?
        # 18 partial file, 56 recv error; over h2c also 55 (send error) or 92 (stream not closed)
        if [[ $rc == 18 || $rc == 55 || $rc == 56 || $rc == 92 ]] && grep -q '"content":"Mock"' "$TMP/body" &&
            ! grep -q 'DONE' "$TMP/body"; then
            ok "reset breaks the transfer after the first chunks ($proto, curl exit $rc)"
        else
            fail "reset ($proto): curl exit $rc, body $(wc -c <"$TMP/body") bytes"
        fi
    done
    curl -sS -o /dev/null "${OA[@]}" -H 'X-Mock-Behavior: reset' \
        -d '{"model":"gpt-4o-mini","messages":[]}' "$BASE/v1/chat/completions" 2>/dev/null
    rc=$?
    [[ $rc == 18 ]] && ok "reset cuts a non-streamed body short (curl exit 18)" ||
        fail "non-streamed reset: curl exit $rc"
    curl -sS -o "$TMP/body" "${AN[@]}" -d "${MSG/claude-sonnet-4-20250514/claude-sonnet-4-20250514+reset}" \
        "$BASE/v1/messages" 2>/dev/null
    rc=$?
    if [[ $rc == 18 || $rc == 56 ]] && ! grep -q 'message_stop' "$TMP/body"; then
        ok "reset via model suffix on anthropic (curl exit $rc)"
    else
        fail "anthropic reset: curl exit $rc"
    fi
}

# slow= spaces events, ttfb= delays the headers, Anthropic pings during slow streams.
check_timing() {
    local t
    t=$(curl -sS -o "$TMP/body" -w '%{time_total}' "${AN[@]}" -H 'X-Mock-Behavior: slow=150,chunks=8' \
        -d "$MSG" "$BASE/v1/messages")
    if awk -v t="$t" 'BEGIN { exit !(t >= 2.0 && t < 6) }' &&
        [[ $(grep -c '^event: ping' "$TMP/body") -ge 2 ]] && grep -q 'message_stop' "$TMP/body"; then
        ok "slow=150 streams 15 events in ${t}s with a periodic ping"
    else
        fail "slow=150: ${t}s, $(grep -c '^event: ping' "$TMP/body") pings"
    fi
    # a client that hangs up mid-stream must not disturb the mock (checked at the end)
    curl -sS -m 0.3 -o /dev/null "${OA[@]}" -H 'X-Mock-Behavior: slow=100' -d "$CHAT" \
        "$BASE/v1/chat/completions" 2>/dev/null
    curl -sS -m 0.2 -o /dev/null "${AN[@]}" -H 'X-Mock-Behavior: ttfb=1000' -d "$MSG" \
        "$BASE/v1/messages" 2>/dev/null
    t=$(curl -sS -o /dev/null -w '%{time_starttransfer}' "${OA[@]}" -H 'X-Mock-Behavior: ttfb=300' \
        -d '{"model":"gpt-4o-mini","messages":[]}' "$BASE/v1/chat/completions")
    if awk -v t="$t" 'BEGIN { exit !(t >= 0.25 && t < 3) }'; then
        ok "ttfb=300 delays the first byte (${t}s)"
    else
        fail "ttfb=300: first byte after ${t}s"
    fi
}

check_misc() {
    local a b n
    a=$(curl -sS "${OA[@]}" -d '{"model":"gpt-4o-mini","messages":[]}' "$BASE/v1/chat/completions")
    b=$(curl -sS "${OA[@]}" -d '{"model":"gpt-4o-mini","messages":[]}' "$BASE/v1/chat/completions")
    if [[ ${a:0:40} != "${b:0:40}" && $a == *'"object":"chat.completion"'* ]]; then
        ok "ids differ between requests without X-Mock-Fixed-Time"
    else
        fail "ids: '${a:0:40}' vs '${b:0:40}'"
    fi
    n=$(curl -sS "${OA[@]}" -H 'X-Mock-Behavior: big=3000000' -d "$CHAT" "$BASE/v1/chat/completions" |
        grep -c '^data: ')
    if [[ $n -gt 700 ]]; then
        ok "big=3000000 streams $n events"
    else
        fail "big=3000000 streamed $n events"
    fi
    n=$(curl -sS -H 'Authorization: Bearer sk-bad-0123456789wxyz' -d "$CHAT" "$BASE/v1/chat/completions" | jq -r .error.message)
    if [[ $n == 'Incorrect API key provided: sk-bad-0*********wxyz. '* ]]; then
        ok "a bad key's 401 quotes its ends, as OpenAI's does"
    else
        fail "bad key: $n"
    fi
    n=$(curl -sS -o /dev/null -w '%{http_code}' "${OA[@]}" -H 'X-Mock-Behavior: bogus' -d "$CHAT" \
        "$BASE/v1/chat/completions")
    [[ $n == 400 ]] && ok "unknown behaviour item gives 400" || fail "unknown behaviour item gave $n"
}

# /mock/requests shows which credentials arrived.
# split=N cuts the body into N-byte pieces (events and UTF-8 characters cut anywhere), same bytes.
check_split() {
    local sizes body='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"héllo 日本語 🎉"}]}'
    curl -sS -o "$TMP/whole" "${OA[@]}" -H 'X-Mock-Behavior: fixed-time' -d "$body" "$BASE/v1/chat/completions"
    sizes=$(curl -sS --raw "${OA[@]}" -H 'X-Mock-Behavior: fixed-time,split=7' -d "$body" "$BASE/v1/chat/completions" |
        awk 'BEGIN { RS = "\r\n" } NR % 2 == 1 { print }' | sort | uniq -c | awk '{ printf "%s:%s ", $2, $1 }')
    curl -sS -o "$TMP/split" "${OA[@]}" -H 'X-Mock-Behavior: fixed-time,split=7' -d "$body" "$BASE/v1/chat/completions"
    # 7-byte HTTP chunks, one shorter last piece and the terminal 0 (the piece counts vary with the body)
    if cmp -s "$TMP/whole" "$TMP/split" && [[ $sizes =~ ^0:1\ ([1-6]:1\ )?7:[0-9]+\ $ ]] && grep -q '日本語' "$TMP/split"; then
        ok "split=7 sends the same stream in 7-byte chunks ($sizes)"
    else
        fail "split=7: chunks $sizes; $(cmp "$TMP/whole" "$TMP/split" 2>&1)"
    fi
    curl -sS -o "$TMP/whole" "${AN[@]}" -H 'X-Mock-Behavior: fixed-time' -d "${MSG/\"stream\":true/\"stream\":false}" "$BASE/v1/messages"
    curl -sS -o "$TMP/split" "${AN[@]}" -H 'X-Mock-Behavior: fixed-time,split=5' -d "${MSG/\"stream\":true/\"stream\":false}" "$BASE/v1/messages"
    if cmp -s "$TMP/whole" "$TMP/split" && jq -e '.type == "message"' "$TMP/split" >/dev/null; then
        ok "split=5 sends the same non-streamed body"
    else
        fail "split=5 non-streamed: $(head -c 200 "$TMP/split")"
    fi
}

check_recorder() {
    local dump
    curl -sS -X DELETE "$BASE/mock/requests" >/dev/null
    curl -sS -o /dev/null -H 'Authorization: Bearer sk-recorded-1' -H 'Content-Type: application/json' \
        -d '{"model":"gpt-4o-mini","messages":[]}' "$BASE/v1/chat/completions"
    curl -sS -o /dev/null -H 'x-api-key: sk-ant-recorded-2' -H 'anthropic-version: 2023-06-01' \
        -d "$MSG" "$BASE/v1/messages"
    dump=$(curl -sS "$BASE/mock/requests")
    if [[ $dump == *'"authorization":"Bearer sk-recorded-1"'* && $dump == *'"x-api-key":"sk-ant-recorded-2"'* &&
        $dump == *'"path":"/v1/messages","headers":'* && $dump == *'"model":"claude-sonnet-4-20250514"'* ]]; then
        ok "/mock/requests records method, path, headers and model"
    else
        fail "/mock/requests: $dump"
    fi
    if command -v jq >/dev/null && [[ $(jq '.requests | length' <<<"$dump") == 2 ]] &&
        [[ $(jq -r '.requests[1].headers["anthropic-version"]' <<<"$dump") == 2023-06-01 ]]; then
        ok "/mock/requests is valid JSON, oldest first, cleared by DELETE"
    else
        fail "/mock/requests JSON: $dump"
    fi
}

if [[ ! -x $BIN ]]; then
    fail "no executable at $BIN"
    finish
fi
if ! start_mock; then
    fail "mock-provider did not start: $(cat "$TMP/mock.log")"
    finish
fi
ok "mock-provider listening at $BASE"
replay_all
if [[ ${MOCK_REGEN:-0} != 1 ]]; then
    check_rate_limit
    check_reset
    check_timing
    check_misc
    check_split
    check_recorder
fi
if kill -0 "$PID" 2>/dev/null; then
    ok "mock-provider still running after the checks"
else
    fail "mock-provider died: $(tail -n 5 "$TMP/mock.log")"
fi
finish
