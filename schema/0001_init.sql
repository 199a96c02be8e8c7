-- 0001_init: users, API keys, nodes, workspaces and their tokens, AI configs, apps, usage events.
--
-- Forward-only: once applied, this file must never change (rb_pg_migrate checks its SHA-256); put
-- changes in 0002_…, 0003_…. The runner wraps each file in one transaction: no BEGIN/COMMIT here.
--
-- The invariants live here as constraints, paired with RB_ASSERTs in C (STYLE.md rule 9): a bad row
-- is impossible, whatever the code does. Conventions:
--   * ids are text with a type prefix and 8 lowercase base36 characters (DESIGN.md §4);
--   * enums are CHECK (x IN (…)) lists, so adding a value is one ALTER in a later migration;
--   * timestamps are timestamptz; updated_at is maintained by the rb_touch_updated_at trigger;
--   * secrets are never stored: API keys and workspace tokens as SHA-256 (32 bytes), BYOK provider
--     keys as AES-256-GCM ciphertext + nonce + tag under a master key named by key_id;
--   * money and token counts are bigint, never negative.

-- A basic e-mail shape: lowercase, one '@', no spaces, at most 254 bytes (RFC 5321 path limit).
CREATE FUNCTION rb_is_email(e text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT e = lower(e) AND octet_length(e) <= 254
                 AND e ~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+$' $$;

-- Sets updated_at on every UPDATE, so no code path can forget it.
CREATE FUNCTION rb_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;

-- ---------------------------------------------------------------------------------------------
-- users: the platform builder's end users (and the operator's admins).
CREATE TABLE users (
    id          text PRIMARY KEY CHECK (id ~ '^u-[0-9a-z]{8}$'),
    email       text NOT NULL UNIQUE CHECK (rb_is_email(email)),
    plan        text NOT NULL DEFAULT 'free' CHECK (plan ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    role        text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION rb_touch_updated_at();

-- api_keys: `rb_…` bearer keys for the control API (and the gateway outside a workspace).
-- Only the SHA-256 of the secret is stored; `prefix` is its first characters, for display.
-- A key dies with its user (ON DELETE CASCADE); revocation keeps the row (revoked_at).
CREATE TABLE api_keys (
    id            text PRIMARY KEY CHECK (id ~ '^key-[0-9a-z]{8}$'),
    user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    name          text NOT NULL DEFAULT '' CHECK (octet_length(name) <= 128 AND name !~ '[[:cntrl:]]'),
    prefix        text NOT NULL CHECK (prefix ~ '^rb_[A-Za-z0-9_-]{5,13}$'),
    key_hash      bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at);

-- nodes: one row per running daemon (a control process per VM host, a gateway per process).
-- heartbeat_at is refreshed by the node; a node whose lease_expires_at has passed is presumed dead
-- (its credit leases are swept, its workspaces reconciled).
CREATE TABLE nodes (
    id                text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    hostname          text NOT NULL CHECK (octet_length(hostname) BETWEEN 1 AND 253
                                           AND hostname !~ '[[:space:][:cntrl:]]'),
    kind              text NOT NULL CHECK (kind IN ('control', 'gateway')),
    version           text NOT NULL DEFAULT '' CHECK (octet_length(version) <= 64),
    started_at        timestamptz NOT NULL DEFAULT now(),
    heartbeat_at      timestamptz NOT NULL DEFAULT now(),
    lease_expires_at  timestamptz NOT NULL,
    CHECK (lease_expires_at >= heartbeat_at)
);

-- workspaces: one micro-VM each. A workspace that runs (starting/running/stopping) is on a node.
--
-- Failure fields: the four descriptive fields (code, message, retryable, at) are set together or
-- not at all, and a `failed` workspace always has them. The converse is NOT enforced on purpose:
-- after `retry` the workspace moves on (provisioning, starting…) and still shows its last failure
-- and attempt count until control clears them; forcing NULL on every transition would make that
-- history impossible to keep and every transition a two-field update that can be forgotten.
CREATE TABLE workspaces (
    id                 text PRIMARY KEY CHECK (id ~ '^ws-[0-9a-z]{8}$'),
    user_id            text NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    name               text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 64
                                            AND name !~ '[[:cntrl:]]'),
    template_id        text CHECK (template_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    image              text NOT NULL CHECK (image ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    status             text NOT NULL DEFAULT 'provisioned'
                       CHECK (status IN ('provisioned', 'provisioning', 'starting', 'running',
                                         'stopping', 'stopped', 'failed', 'deleting')),
    ram_mb             integer NOT NULL CHECK (ram_mb BETWEEN 1 AND 1048576),
    vcpu_count         integer NOT NULL CHECK (vcpu_count BETWEEN 1 AND 256),
    disk_size_mb       integer NOT NULL CHECK (disk_size_mb BETWEEN 1 AND 16777216),
    env_vars           jsonb NOT NULL DEFAULT '{}'
                       CHECK (jsonb_typeof(env_vars) = 'object'
                              AND octet_length(env_vars::text) <= 65536),
    node_id            text REFERENCES nodes (id) ON DELETE SET NULL,
    failure_code       text CHECK (failure_code ~ '^[a-z][a-z0-9_]{0,63}$'),
    failure_message    text CHECK (octet_length(failure_message) <= 2048),
    failure_attempts   integer NOT NULL DEFAULT 0 CHECK (failure_attempts BETWEEN 0 AND 1000000),
    failure_retryable  boolean,
    failure_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- (id, user_id) is the target of the composite FKs that keep children owned by the same user.
    UNIQUE (id, user_id),
    CONSTRAINT workspaces_failure_all_or_none
        CHECK (num_nulls(failure_code, failure_message, failure_retryable, failure_at) IN (0, 4)),
    CONSTRAINT workspaces_failed_has_failure
        CHECK (status <> 'failed' OR failure_code IS NOT NULL),
    -- Deleting a node that still runs workspaces fails here (SET NULL would break this rule).
    CONSTRAINT workspaces_running_has_node
        CHECK (status NOT IN ('starting', 'running', 'stopping') OR node_id IS NOT NULL)
);
CREATE INDEX workspaces_user ON workspaces (user_id, created_at);
CREATE INDEX workspaces_node ON workspaces (node_id) WHERE node_id IS NOT NULL;
CREATE TRIGGER workspaces_touch BEFORE UPDATE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION rb_touch_updated_at();

-- workspace_tokens: `rbw_…` tokens the gateway accepts from inside a VM. Rotation = revoke the live
-- row and insert a new one in one transaction; at most one unrevoked token per workspace.
CREATE TABLE workspace_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    prefix        text NOT NULL CHECK (prefix ~ '^rbw_[A-Za-z0-9_-]{4,12}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE UNIQUE INDEX workspace_tokens_one_live ON workspace_tokens (workspace_id)
    WHERE revoked_at IS NULL;

-- ai_configs: per-workspace AI settings, and one per-user default (scope 'user_default', no
-- workspace). Lookup order: workspace row, else the user's default, else managed (DESIGN.md §3).
-- A BYOK key is AES-256-GCM: ciphertext, 12-byte nonce, 16-byte tag and the master key id are all
-- set or all NULL, and only a byok row may hold one ("switching to managed clears it").
CREATE TABLE ai_configs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id    text UNIQUE,
    scope           text NOT NULL CHECK (scope IN ('workspace', 'user_default')),
    mode            text NOT NULL DEFAULT 'managed' CHECK (mode IN ('managed', 'byok')),
    provider        text CHECK (provider ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    model           text CHECK (octet_length(model) BETWEEN 1 AND 200 AND model !~ '[[:space:][:cntrl:]]'),
    key_ciphertext  bytea CHECK (octet_length(key_ciphertext) BETWEEN 1 AND 4096),
    key_nonce       bytea CHECK (octet_length(key_nonce) = 12),
    key_tag         bytea CHECK (octet_length(key_tag) = 16),
    key_id          text CHECK (key_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- MATCH SIMPLE: a user_default row (workspace_id NULL) is not checked against workspaces.
    FOREIGN KEY (workspace_id, user_id) REFERENCES workspaces (id, user_id) ON DELETE CASCADE,
    CONSTRAINT ai_configs_scope_workspace
        CHECK ((scope = 'user_default') = (workspace_id IS NULL)),
    CONSTRAINT ai_configs_key_all_or_none
        CHECK (num_nulls(key_ciphertext, key_nonce, key_tag, key_id) IN (0, 4)),
    CONSTRAINT ai_configs_key_only_byok
        CHECK (mode = 'byok' OR key_ciphertext IS NULL)
);
CREATE UNIQUE INDEX ai_configs_one_user_default ON ai_configs (user_id)
    WHERE scope = 'user_default';
CREATE TRIGGER ai_configs_touch BEFORE UPDATE ON ai_configs
    FOR EACH ROW EXECUTE FUNCTION rb_touch_updated_at();

-- apps: a port inside a workspace published at {subdomain}.{apps_domain}. user_id must be the
-- workspace's owner (composite FK). host_port is the loopback port of the QEMU hostfwd, set by
-- the supervisor while the workspace runs.
CREATE TABLE apps (
    id            text PRIMARY KEY CHECK (id ~ '^app-[0-9a-z]{8}$'),
    workspace_id  text NOT NULL,
    user_id       text NOT NULL,
    name          text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 63 AND name !~ '[[:cntrl:]]'),
    subdomain     text NOT NULL UNIQUE
                  CHECK (subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocol      text NOT NULL DEFAULT 'http' CHECK (protocol IN ('http', 'tcp')),
    visibility    text NOT NULL DEFAULT 'private'
                  CHECK (visibility IN ('private', 'privileged', 'public')),
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'inactive', 'installing', 'error')),
    host_port     integer CHECK (host_port BETWEEN 1 AND 65535),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (workspace_id, user_id) REFERENCES workspaces (id, user_id) ON DELETE CASCADE,
    -- reconcile-apps is idempotent by name: one app of a given name per workspace.
    UNIQUE (workspace_id, name)
);
CREATE INDEX apps_user ON apps (user_id, created_at);
CREATE TRIGGER apps_touch BEFORE UPDATE ON apps
    FOR EACH ROW EXECUTE FUNCTION rb_touch_updated_at();

-- app_allowed_emails: who may open a `privileged` app besides its owner.
CREATE TABLE app_allowed_emails (
    app_id      text NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    email       text NOT NULL CHECK (rb_is_email(email)),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, email)
);

-- usage_events: one row per AI request, written by the gateway's ledger batches with
-- ON CONFLICT (request_id) DO NOTHING (request_id is the idempotency key).
--
-- workspace_id has NO foreign key, on purpose: usage is history and must survive the workspace's
-- deletion, and a batch flushed after a workspace was deleted must not fail (that would lose
-- billing rows). user_id keeps its FK with ON DELETE RESTRICT: a user with usage history cannot be
-- deleted by accident.
--
-- Token buckets are disjoint (DESIGN.md §3) except reasoning, a subset of output. BYOK is priced
-- but never debited, so billed implies managed. usage_source 'none' means no token was counted.
CREATE TABLE usage_events (
    request_id      text PRIMARY KEY CHECK (request_id ~ '^[!-~]{1,128}$'),
    user_id         text NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    workspace_id    text CHECK (workspace_id ~ '^ws-[0-9a-z]{8}$'),
    subject         text CHECK (octet_length(subject) BETWEEN 1 AND 256 AND subject !~ '[[:cntrl:]]'),
    route           text NOT NULL CHECK (route ~ '^/[!-~]{0,127}$'),
    provider        text CHECK (provider ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    model           text CHECK (octet_length(model) BETWEEN 1 AND 200 AND model !~ '[[:cntrl:]]'),
    upstream_model  text CHECK (octet_length(upstream_model) BETWEEN 1 AND 200
                                AND upstream_model !~ '[[:cntrl:]]'),
    mode            text NOT NULL CHECK (mode IN ('managed', 'byok')),
    status          text NOT NULL
                    CHECK (status IN ('ok', 'error', 'client_gone', 'upstream_error', 'rejected')),
    http_status     integer CHECK (http_status BETWEEN 100 AND 599),
    input_uncached  bigint NOT NULL DEFAULT 0 CHECK (input_uncached >= 0),
    cache_read      bigint NOT NULL DEFAULT 0 CHECK (cache_read >= 0),
    cache_write_5m  bigint NOT NULL DEFAULT 0 CHECK (cache_write_5m >= 0),
    cache_write_1h  bigint NOT NULL DEFAULT 0 CHECK (cache_write_1h >= 0),
    output          bigint NOT NULL DEFAULT 0 CHECK (output >= 0),
    reasoning       bigint NOT NULL DEFAULT 0 CHECK (reasoning >= 0),
    requests        bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    cost_micro      bigint NOT NULL CHECK (cost_micro >= 0),
    billed          boolean NOT NULL,
    usage_source    text NOT NULL DEFAULT 'none' CHECK (usage_source IN ('provider', 'estimate', 'none')),
    ttfb_ms         integer CHECK (ttfb_ms >= 0),
    duration_ms     integer NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    error_code      text CHECK (error_code ~ '^[a-z][a-z0-9_]{0,63}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_events_reasoning_in_output CHECK (reasoning <= output),
    CONSTRAINT usage_events_billed_managed CHECK (NOT billed OR mode = 'managed'),
    CONSTRAINT usage_events_ok_no_error CHECK (status <> 'ok' OR error_code IS NULL),
    CONSTRAINT usage_events_model_known CHECK (status = 'rejected' OR model IS NOT NULL),
    CONSTRAINT usage_events_ttfb_in_duration CHECK (ttfb_ms IS NULL OR ttfb_ms <= duration_ms),
    CONSTRAINT usage_events_none_is_zero
        CHECK (usage_source <> 'none'
               OR (input_uncached = 0 AND cache_read = 0 AND cache_write_5m = 0
                   AND cache_write_1h = 0 AND output = 0 AND requests = 0))
);
CREATE INDEX usage_events_user_time ON usage_events (user_id, created_at);
CREATE INDEX usage_events_workspace_time ON usage_events (workspace_id, created_at)
    WHERE workspace_id IS NOT NULL;
CREATE INDEX usage_events_subject_time ON usage_events (user_id, subject, created_at)
    WHERE subject IS NOT NULL;
