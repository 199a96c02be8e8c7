# tests/integration/credits_gw_lib.sh: shared set-up of the gateway credit tests (sourced after
# lib.sh and rb_db_create): models, a config, users with tokens, and helpers to start gateways and
# read the ledger. Expects GW_BIN MOCK_BIN SRC.

CG_MOCK_PORT=$(rb_free_port)
CG_MOCK=http://127.0.0.1:$CG_MOCK_PORT
CG_BODY_MAX=0

# cg_config NAME AI_PORT [extra yaml for gateway.limits]: writes $RB_TMP/NAME.yaml.
cg_config() {
    local name=$1 port=$2 limits=${3:-}
    cat >"$RB_TMP/models.yaml" <<YAML
providers:
  mockoai: {kind: openai, base_url: "$CG_MOCK"}
  mockant: {kind: anthropic, base_url: "$CG_MOCK"}
models:
  t-chat: {provider: mockoai, upstream: gpt-4o-mini, prices: {input: "1.00", output: "2.00"}, max_output_default: 100, context_window: 50000}
  t-claude: {provider: mockant, upstream: claude-sonnet-4-5, prices: {input: "1.00", output: "2.00"}, max_output_default: 100, context_window: 50000}
YAML
    mkdir -p "$RB_TMP/templates"
    cat >"$RB_TMP/$name.yaml" <<YAML
server: {workers: 2, log_level: info}
gateway:
  ai_listen: 127.0.0.1:$port
  apps_listen: 127.0.0.1:$(rb_free_port)
  limits: {keepalive_interval_ms: 300, drain_timeout_ms: 3000${limits:+, $limits}}
database: {url: "$RB_DB_URL"}
credits: {lease_chunk_credits: 1, lease_ttl_s: 10}
plans: {free: {rpm: 0, tpm: 0, max_concurrent: 0}}
models: models.yaml
templates: templates
YAML
}

# cg_gateway NAME PORT [env...]: starts a gateway (node NAME, spool $RB_TMP/spool-NAME); sets CG_PID.
cg_gateway() {
    local name=$1 port=$2
    shift 2
    cg_config "$name" "$port" "${CG_LIMITS:-}"
    env RIGBOX_NODE_ID="$name" RIGBOX_SPOOL_DIR="$RB_TMP/spool-$name" RIGBOX_LEASE_IDLE_MS=1000 \
        RIGBOX_GATEWAY_FORWARD_MOCK_BEHAVIOR=1 RIGBOX_MOCKOAI_API_KEY=sk-oai RIGBOX_MOCKANT_API_KEY=sk-ant \
        "$@" "$GW_BIN" --config "$RB_TMP/$name.yaml" --schema-dir "$SRC/schema" >>"$RB_TMP/$name.log" 2>&1 &
    CG_PID=$!
    RB_PIDS+=($CG_PID)
    rb_wait_http "http://127.0.0.1:$port/healthz" || { echo "gateway $name did not start"; tail -20 "$RB_TMP/$name.log"; }
}

cg_start_mock() { # before cg_config: a port another test grabbed meanwhile gets a second try
    local attempt
    for attempt in 1 2 3; do
        rb_spawn mock "$MOCK_BIN" --listen 127.0.0.1:$CG_MOCK_PORT
        rb_wait_http "$CG_MOCK/mock/healthz" && return 0
        echo "mock provider did not start on $CG_MOCK_PORT (attempt $attempt):" >&2
        tail -n 5 "$RB_TMP/mock.log" >&2
        kill "$RB_LAST_PID" 2>/dev/null
        CG_MOCK_PORT=$(rb_free_port)
        CG_MOCK=http://127.0.0.1:$CG_MOCK_PORT
    done
    fail "mock provider did not start"
}

cg_sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

# cg_user N: user u-cguser0N with workspace ws-cgwork0N and token rbw_cg…N; prints the token.
cg_user() {
    local n=$1 tok
    tok=$(printf 'rbw_cgtoken%036d' "$n")
    rb_sql "INSERT INTO users (id, email) VALUES ('u-cguser0$n', 'cg$n@example.com');
INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb) VALUES
  ('ws-cgwork0$n', 'u-cguser0$n', 'w$n', 'base', 512, 1, 1024);
INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES
  ('ws-cgwork0$n', decode('$(cg_sha "$tok")', 'hex'), 'rbw_cgto');" >/dev/null
    echo "$tok"
}

# cg_grant USER MICRO ID
cg_grant() { rb_sql "SELECT count(*) FROM rb_grant('$3', '$1', $2, 'paid', NULL, NULL)" >/dev/null; }

# cg_identity_ok USER: the ledger identity of one account (docs in schema/0002_credits.sql).
cg_identity_ok() {
    test "$(rb_sql "SELECT
  a.credits_posted = (SELECT coalesce(sum(amount_micro), 0) FROM credit_transfers WHERE user_id = a.user_id AND kind = 'grant')
  AND a.debits_posted = (SELECT coalesce(sum(amount_micro), 0) FROM credit_transfers WHERE user_id = a.user_id AND kind IN ('usage', 'expire', 'adjust'))
  AND a.debits_pending = (SELECT coalesce(sum(CASE kind WHEN 'hold' THEN amount_micro WHEN 'void' THEN -amount_micro ELSE -pending_micro END), 0)
                          FROM credit_transfers WHERE user_id = a.user_id AND kind IN ('hold', 'void', 'usage'))
  AND (SELECT sum(remaining_micro) FROM credit_grants WHERE user_id = a.user_id) = a.credits_posted - a.debits_posted
  AND a.debits_posted + a.debits_pending <= a.credits_posted
  FROM credit_accounts a WHERE a.user_id = '$1'")" = t
}

# cg_served_billed_once FILE_OF_REQUEST_IDS [STATUS]: every id has one usage row (billed, status ok
# or STATUS) and one usage transfer whose amount is the row's whole cost.
cg_served_billed_once() {
    local ids
    ids=$(sed "s/.*/'&'/" "$1" | paste -sd, -)
    [[ -z $ids ]] && return 1
    test "$(rb_sql "SELECT count(*) FILTER (WHERE n_rows = 1 AND n_tr = 1 AND billed AND amount = cost AND status = '${2:-ok}'),
                           count(*)
                    FROM (SELECT r.id, (SELECT count(*) FROM usage_events e WHERE e.request_id = r.id) n_rows,
                                 (SELECT count(*) FROM credit_transfers t WHERE t.request_id = r.id AND t.kind = 'usage') n_tr,
                                 (SELECT bool_and(billed) FROM usage_events e WHERE e.request_id = r.id) billed,
                                 (SELECT max(status) FROM usage_events e WHERE e.request_id = r.id) status,
                                 (SELECT max(cost_micro) FROM usage_events e WHERE e.request_id = r.id) cost,
                                 (SELECT max(amount_micro) FROM credit_transfers t WHERE t.request_id = r.id AND t.kind = 'usage') amount
                          FROM unnest(ARRAY[$ids]) AS r(id)) x")" = "$(wc -l <"$1")|$(wc -l <"$1")"
}

# cg_wait_sql SQL EXPECTED [tries]: polls until SQL prints EXPECTED (0.1 s steps).
cg_wait_sql() {
    local i
    for ((i = 0; i < ${3:-100}; i++)); do
        [[ $(rb_sql "$1") == "$2" ]] && return 0
        sleep 0.1
    done
    return 1
}
