-- 0003_ledger_fast: the ledger writer's hot path, made cheap enough for the gateway's rate, and the
-- credit caps read from counters. Each part was measured before and after (tools/bench/proxy and
-- batches of 500 events on a durable cluster, 2 cores); rb_usage_post(jsonb) of schema/0002 keeps
-- its contract throughout.
--
-- 1. CHECKs with bounded repetitions ('^[!-~]{1,128}$') cost ~50 us per match (PostgreSQL's regex
--    engine expands {m,n} into that many NFA states) and every event evaluated five: replaced by
--    a length bound plus an unbounded class match ('[^!-~]' finds any character outside printable
--    ASCII). Same names, same meaning.
-- 2. Per-row foreign keys of the append-only ledger (usage_events.user_id, credit_transfers.user_id
--    and .lease_id: one SPI query and row lock each per event) become one check per statement: an
--    AFTER INSERT statement trigger reads the new rows once (a transition table), takes FOR KEY
--    SHARE on each distinct referenced row (the lock an RI check takes) and raises 23503 if one is
--    missing; BEFORE DELETE / UPDATE OF id triggers on users and credit_leases keep ON DELETE
--    RESTRICT. Indexes nobody reads are dropped (usage_events_workspace_time: usage is read by
--    user, and by user and subject; credit_transfers_seq_key: seq is an identity column, the ledger
--    pages through (user_id, seq)).
-- 3. The batch is set-based and arrives by COPY: the writer copies its spool lines (COPY text) into
--    rb_usage_stage, a temporary table of its session, and calls rb_usage_apply_staged(): one
--    INSERT for the usage rows, one for the usage transfers (the running split below, computed with
--    window sums), one UPDATE for the leases and one for the accounts, then the grant burn per
--    account. As one jsonb argument the batch cost 89 us of PostgreSQL time per new event (~17 us
--    only to parse it, and five more passes over it); staged, 62 us. rb_usage_apply(jsonb) and
--    rb_usage_post(jsonb) stage their argument and call the same body.
-- 4. The daily and monthly credit caps summed the month's billed usage rows on every read (the
--    gateway re-reads each active user every 60 s): over 3 s per read for a user with 1.5M requests.
--    usage_spend_daily keeps the billed spend per user and UTC day, maintained by statement triggers
--    on usage_events through INSERT, UPDATE and DELETE; a read is at most 31 rows.
--
-- Lock order within a batch: usage_spend_daily rows by (user_id, day), then accounts by user_id,
-- then leases by (user_id, id).

-- 1. Cheap CHECKs.
ALTER TABLE usage_events
    DROP CONSTRAINT usage_events_request_id_check,
    ADD CONSTRAINT usage_events_request_id_check
        CHECK (octet_length(request_id) BETWEEN 1 AND 128 AND request_id !~ '[^!-~]'),
    DROP CONSTRAINT usage_events_route_check,
    ADD CONSTRAINT usage_events_route_check
        CHECK (octet_length(route) BETWEEN 1 AND 128 AND starts_with(route, '/')
               AND route !~ '[^!-~]'),
    DROP CONSTRAINT usage_events_provider_check,
    ADD CONSTRAINT usage_events_provider_check
        CHECK (octet_length(provider) BETWEEN 1 AND 32 AND provider ~ '^[a-z0-9][a-z0-9_-]*$'),
    DROP CONSTRAINT usage_events_error_code_check,
    ADD CONSTRAINT usage_events_error_code_check
        CHECK (octet_length(error_code) BETWEEN 1 AND 64 AND error_code ~ '^[a-z][a-z0-9_]*$');

ALTER TABLE credit_transfers
    DROP CONSTRAINT credit_transfers_id_check,
    ADD CONSTRAINT credit_transfers_id_check
        CHECK (octet_length(id) BETWEEN 1 AND 200 AND id !~ '[^!-~]'),
    DROP CONSTRAINT credit_transfers_request_id_check,
    ADD CONSTRAINT credit_transfers_request_id_check
        CHECK (octet_length(request_id) BETWEEN 1 AND 128 AND request_id !~ '[^!-~]');

ALTER TABLE credit_leases
    DROP CONSTRAINT credit_leases_id_check,
    ADD CONSTRAINT credit_leases_id_check
        CHECK (octet_length(id) BETWEEN 1 AND 128 AND id !~ '[^!-~]'),
    DROP CONSTRAINT credit_leases_node_id_check,
    ADD CONSTRAINT credit_leases_node_id_check
        CHECK (octet_length(node_id) BETWEEN 1 AND 128 AND node_id !~ '[^!-~]');

-- 2. Statement-level key checks, and two fewer indexes.
ALTER TABLE usage_events DROP CONSTRAINT usage_events_user_id_fkey;
ALTER TABLE credit_transfers
    DROP CONSTRAINT credit_transfers_user_id_fkey,
    DROP CONSTRAINT credit_transfers_lease_id_fkey,
    DROP CONSTRAINT credit_transfers_seq_key;
DROP INDEX usage_events_workspace_time;

-- The users the new rows name exist (and stay, until this transaction ends); else 23503.
CREATE FUNCTION rb_ledger_users_exist() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_missing text;
BEGIN
    -- Lock first, then look: a key deleted meanwhile is then seen as missing.
    PERFORM 1 FROM users u WHERE u.id IN (SELECT user_id FROM rb_new_rows)
      ORDER BY u.id FOR KEY SHARE;
    SELECT n.user_id INTO v_missing
      FROM (SELECT DISTINCT user_id FROM rb_new_rows) n
     WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = n.user_id)
     LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%_user_id_fkey"',
            TG_TABLE_NAME, TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME,
                  DETAIL = format('Key (user_id)=(%s) is not present in table "users".', v_missing);
    END IF;
    RETURN NULL;
END $$;

-- The leases the new transfers name exist (and stay); else 23503.
CREATE FUNCTION rb_ledger_leases_exist() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_missing text;
BEGIN
    -- Lock first, then look: a key deleted meanwhile is then seen as missing.
    PERFORM 1 FROM credit_leases l
      WHERE l.id IN (SELECT lease_id FROM rb_new_rows WHERE lease_id IS NOT NULL)
      ORDER BY l.id FOR KEY SHARE;
    SELECT n.lease_id INTO v_missing
      FROM (SELECT DISTINCT lease_id FROM rb_new_rows WHERE lease_id IS NOT NULL) n
     WHERE NOT EXISTS (SELECT 1 FROM credit_leases l WHERE l.id = n.lease_id)
     LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert on table "credit_transfers" violates foreign key constraint "credit_transfers_lease_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'credit_transfers',
                  DETAIL = format('Key (lease_id)=(%s) is not present in table "credit_leases".',
                                  v_missing);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_events_user_exists_ins AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS rb_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_ledger_users_exist();
CREATE TRIGGER usage_events_user_exists_upd AFTER UPDATE ON usage_events
    REFERENCING NEW TABLE AS rb_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_ledger_users_exist();
-- credit_transfers is append-only (credit_transfers_append_only refuses UPDATE): inserts only.
CREATE TRIGGER credit_transfers_user_exists AFTER INSERT ON credit_transfers
    REFERENCING NEW TABLE AS rb_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_ledger_users_exist();
CREATE TRIGGER credit_transfers_lease_exists AFTER INSERT ON credit_transfers
    REFERENCING NEW TABLE AS rb_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_ledger_leases_exist();

-- ON DELETE RESTRICT of the dropped keys: a user or lease the ledger names cannot go (or change id).
CREATE FUNCTION rb_ledger_user_restrict() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM usage_events WHERE user_id = OLD.id)
       OR EXISTS (SELECT 1 FROM credit_transfers WHERE user_id = OLD.id) THEN
        RAISE EXCEPTION 'update or delete on table "users" violates foreign key constraint "usage_events_user_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'users',
                  DETAIL = format('Key (id)=(%s) is still referenced from the ledger.', OLD.id);
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE FUNCTION rb_ledger_lease_restrict() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM credit_transfers WHERE lease_id = OLD.id) THEN
        RAISE EXCEPTION 'update or delete on table "credit_leases" violates foreign key constraint "credit_transfers_lease_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'credit_leases',
                  DETAIL = format('Key (id)=(%s) is still referenced from credit_transfers.', OLD.id);
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER users_ledger_restrict BEFORE DELETE OR UPDATE OF id ON users
    FOR EACH ROW EXECUTE FUNCTION rb_ledger_user_restrict();
CREATE TRIGGER credit_leases_ledger_restrict BEFORE DELETE OR UPDATE OF id ON credit_leases
    FOR EACH ROW EXECUTE FUNCTION rb_ledger_lease_restrict();

-- 3. Staged, set-based batches.
-- How rb_usage_apply_staged splits costs (rb_usage_post's contract, schema/0002_credits.sql):
-- The billed events (billed and cost_micro > 0) are split in the order (user_id, lease_id,
-- request_id): within one lease, cost i takes min(cost_i, reserve left after the costs before it)
-- from the reserve, i.e. pending_i = min(cum_i, reserve) - min(cum_i - cost_i, reserve); what
-- remains takes the same running form against the account's free balance (across its leases), and
-- the rest is overrun. Exactly what the event-by-event loop of 0002 computed.

-- Creates this session's staging table if it does not exist yet; the writer calls it once per
-- connection, rb_usage_apply(jsonb) on every call.
CREATE FUNCTION rb_usage_stage_open() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF to_regclass('pg_temp.rb_usage_stage') IS NULL THEN
        -- the columns of a usage_events row plus the lease its cost is carved from, in the order
        -- of the writer's COPY rows; constraints are usage_events' own, checked on insert there
        CREATE TEMPORARY TABLE rb_usage_stage (
            request_id text, user_id text, workspace_id text, subject text, route text,
            provider text, model text, upstream_model text, mode text, status text,
            http_status integer, input_uncached bigint, cache_read bigint, cache_write_5m bigint,
            cache_write_1h bigint, output bigint, reasoning bigint, requests bigint,
            cost_micro bigint, billed boolean, usage_source text, ttfb_ms integer,
            duration_ms integer, error_code text, created_at timestamptz, lease_id text
        ) ON COMMIT DELETE ROWS;
    END IF;
END $$;

-- rb_usage_apply's work on the rows of pg_temp.rb_usage_stage; returns the request ids whose usage
-- transfer this call inserted (a replayed or duplicated event is not in it).
CREATE FUNCTION rb_usage_apply_staged()
    RETURNS text[]
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    v_new text[];      -- request ids whose usage transfer this call inserted
    v_burn_user text[]; -- accounts whose posted debit grew, and by how much (grant burn)
    v_burn_amount bigint[];
BEGIN
    INSERT INTO usage_events (request_id, user_id, workspace_id, subject, route, provider, model,
                              upstream_model, mode, status, http_status, input_uncached,
                              cache_read, cache_write_5m, cache_write_1h, output, reasoning,
                              requests, cost_micro, billed, usage_source, ttfb_ms, duration_ms,
                              error_code, created_at)
        SELECT r.request_id, r.user_id, r.workspace_id, r.subject, r.route, r.provider, r.model,
               r.upstream_model, r.mode, r.status, r.http_status, coalesce(r.input_uncached, 0),
               coalesce(r.cache_read, 0), coalesce(r.cache_write_5m, 0),
               coalesce(r.cache_write_1h, 0), coalesce(r.output, 0), coalesce(r.reasoning, 0),
               coalesce(r.requests, 0), r.cost_micro, r.billed, coalesce(r.usage_source, 'none'),
               r.ttfb_ms, coalesce(r.duration_ms, 0), r.error_code, coalesce(r.created_at, now())
          FROM pg_temp.rb_usage_stage r
        ON CONFLICT (request_id) DO NOTHING;
    -- Lock every account of the batch, in user_id order, before touching any of them; then create
    -- (in the same order) the accounts of billed users who never had a grant, and lock those too
    -- (a concurrent batch may have created one first).
    PERFORM 1 FROM credit_accounts
      WHERE user_id IN (SELECT s.user_id FROM pg_temp.rb_usage_stage s)
      ORDER BY user_id FOR UPDATE;
    INSERT INTO credit_accounts (user_id)
        SELECT DISTINCT s.user_id FROM pg_temp.rb_usage_stage s
         WHERE s.billed AND s.cost_micro > 0
         ORDER BY 1
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM credit_accounts
      WHERE user_id IN (SELECT s.user_id FROM pg_temp.rb_usage_stage s
                         WHERE s.billed AND s.cost_micro > 0)
      ORDER BY user_id FOR UPDATE;
    -- The leases the batch draws on (only a lease of the event's own user counts), in order.
    PERFORM 1 FROM credit_leases l
      WHERE (l.id, l.user_id) IN (SELECT s.lease_id, s.user_id FROM pg_temp.rb_usage_stage s
                                   WHERE s.billed AND s.cost_micro > 0)
      ORDER BY l.user_id, l.id FOR UPDATE;
    WITH ev AS (
        SELECT s.request_id AS rid, s.user_id AS uid, coalesce(s.lease_id, '') AS lkey,
               s.cost_micro AS cost
          FROM pg_temp.rb_usage_stage s
         WHERE s.billed AND s.cost_micro > 0),
    fresh AS ( -- the first occurrence of each request never billed before
        SELECT DISTINCT ON (ev.rid) ev.rid, ev.uid, ev.lkey, ev.cost FROM ev
         WHERE NOT EXISTS (SELECT 1 FROM credit_transfers t WHERE t.id = 'usage:' || ev.rid)
         ORDER BY ev.rid, ev.uid, ev.lkey),
    lease_cum AS ( -- a closed lease has no reserve left
        SELECT f.rid, f.uid, f.lkey, f.cost, l.id AS lid,
               CASE WHEN l.closed_at IS NULL THEN coalesce(l.amount_micro - l.used_micro, 0)
                    ELSE 0 END AS reserve,
               sum(f.cost) OVER (PARTITION BY f.uid, f.lkey ORDER BY f.rid) AS cum
          FROM fresh f LEFT JOIN credit_leases l ON l.id = f.lkey AND l.user_id = f.uid),
    split_pending AS (
        SELECT c.*, LEAST(c.cum, c.reserve) - LEAST(c.cum - c.cost, c.reserve) AS pending
          FROM lease_cum c),
    need_cum AS (
        SELECT s.*, a.credits_posted - a.debits_posted - a.debits_pending AS avail,
               sum(s.cost - s.pending) OVER (PARTITION BY s.uid ORDER BY s.lkey, s.rid) AS cneed
          FROM split_pending s JOIN credit_accounts a ON a.user_id = s.uid),
    split AS (
        SELECT n.*, LEAST(n.cneed, n.avail) - LEAST(n.cneed - (n.cost - n.pending), n.avail)
                      AS extra
          FROM need_cum n),
    ins AS (
        INSERT INTO credit_transfers (id, user_id, kind, amount_micro, request_id, lease_id,
                                      cost_micro, pending_micro, overrun_micro)
            SELECT 'usage:' || s.rid, s.uid, 'usage', s.pending + s.extra, s.rid, s.lid, s.cost,
                   s.pending, s.cost - s.pending - s.extra
              FROM split s ORDER BY s.uid, s.lkey, s.rid
            ON CONFLICT (id) DO NOTHING
            RETURNING request_id, user_id, lease_id, amount_micro, pending_micro, overrun_micro),
    lease_upd AS (
        UPDATE credit_leases l
           SET used_micro = l.used_micro + g.used, extra_micro = l.extra_micro + g.extra,
               overrun_micro = l.overrun_micro + g.overrun
          FROM (SELECT i.lease_id, sum(i.pending_micro) AS used,
                       sum(i.amount_micro - i.pending_micro) AS extra,
                       sum(i.overrun_micro) AS overrun
                  FROM ins i WHERE i.lease_id IS NOT NULL GROUP BY i.lease_id) g
         WHERE l.id = g.lease_id
        RETURNING l.id), -- runs to completion although nothing reads it
    acct_upd AS (
        UPDATE credit_accounts a
           SET debits_pending = a.debits_pending - g.from_pending,
               debits_posted = a.debits_posted + g.posted,
               overrun_micro = a.overrun_micro + g.overrun
          FROM (SELECT i.user_id, sum(i.pending_micro) AS from_pending,
                       sum(i.amount_micro) AS posted, sum(i.overrun_micro) AS overrun
                  FROM ins i GROUP BY i.user_id) g
         WHERE a.user_id = g.user_id AND (g.posted <> 0 OR g.overrun <> 0)
        RETURNING a.user_id, g.posted)
    SELECT (SELECT array_agg(i.request_id) FROM ins i),
           (SELECT array_agg(u.user_id ORDER BY u.user_id) FROM acct_upd u WHERE u.posted > 0),
           (SELECT array_agg(u.posted ORDER BY u.user_id) FROM acct_upd u WHERE u.posted > 0)
      INTO v_new, v_burn_user, v_burn_amount;
    FOR i IN 1 .. coalesce(array_length(v_burn_user, 1), 0) LOOP
        PERFORM rb_credit_burn(v_burn_user[i], v_burn_amount[i]);
    END LOOP;
    RETURN coalesce(v_new, '{}');
END $$;

-- rb_usage_apply(jsonb): stages its argument and applies it; returns what rb_usage_apply_staged
-- returns (rb_usage_post's work without its per-event result).
CREATE FUNCTION rb_usage_apply(p_events jsonb)
    RETURNS text[]
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_new text[];
BEGIN
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'rb_usage_post wants a JSON array' USING ERRCODE = '22023';
    END IF;
    PERFORM rb_usage_stage_open();
    DELETE FROM pg_temp.rb_usage_stage; -- an earlier call of this transaction
    INSERT INTO pg_temp.rb_usage_stage
        SELECT * FROM jsonb_populate_recordset(NULL::pg_temp.rb_usage_stage, p_events);
    v_new := rb_usage_apply_staged();
    DELETE FROM pg_temp.rb_usage_stage;
    RETURN v_new;
END $$;

-- rb_usage_post: rb_usage_apply, then one row per billed event (contract of schema/0002).
CREATE OR REPLACE FUNCTION rb_usage_post(p_events jsonb)
    RETURNS TABLE (request_id text, user_id text, posted_micro bigint, overrun_micro bigint,
                   replayed boolean)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    v_new text[]; -- request ids whose usage transfer this call inserted
BEGIN
    v_new := rb_usage_apply(p_events);
    -- One row per billed event, in the order the 0002 loop returned them.
    RETURN QUERY
    WITH ev AS (
        SELECT x->>'request_id' AS rid, x->>'user_id' AS uid,
               coalesce(x->>'lease_id', '') AS lkey,
               row_number() OVER (PARTITION BY x->>'request_id'
                                  ORDER BY x->>'user_id', coalesce(x->>'lease_id', '')) AS nth
          FROM jsonb_array_elements(p_events) x
         WHERE (x->>'billed')::boolean AND (x->>'cost_micro')::bigint > 0),
    fresh AS (SELECT unnest(v_new) AS rid)
    SELECT t.request_id, t.user_id, t.amount_micro, t.overrun_micro,
           NOT (ev.nth = 1 AND f.rid IS NOT NULL)
      FROM ev JOIN credit_transfers t ON t.id = 'usage:' || ev.rid
              LEFT JOIN fresh f ON f.rid = ev.rid
     ORDER BY ev.uid, ev.lkey, ev.rid, ev.nth;
END $$;

-- 4. Per-day spend counters.
CREATE TABLE usage_spend_daily (
    user_id    text   NOT NULL,
    day        date   NOT NULL,
    cost_micro bigint NOT NULL CHECK (cost_micro >= 0),
    PRIMARY KEY (user_id, day)
);

-- Adds the billed cost of the statement's new rows.
CREATE FUNCTION rb_usage_spend_add() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO usage_spend_daily AS s (user_id, day, cost_micro)
        SELECT n.user_id, (n.created_at AT TIME ZONE 'UTC')::date, sum(n.cost_micro)
          FROM rb_new_rows n WHERE n.billed AND n.cost_micro > 0
         GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (user_id, day) DO UPDATE SET cost_micro = s.cost_micro + EXCLUDED.cost_micro;
    RETURN NULL;
END $$;

-- Takes back the billed cost of the statement's old rows (UPDATE, DELETE).
CREATE FUNCTION rb_usage_spend_sub() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE usage_spend_daily s SET cost_micro = s.cost_micro - g.cost
      FROM (SELECT o.user_id, (o.created_at AT TIME ZONE 'UTC')::date AS day,
                   sum(o.cost_micro) AS cost
              FROM rb_old_rows o WHERE o.billed AND o.cost_micro > 0 GROUP BY 1, 2) g
     WHERE s.user_id = g.user_id AND s.day = g.day;
    RETURN NULL;
END $$;

-- Statement triggers fire in name order: an UPDATE takes the old cost back (1), then adds the new (2).
CREATE TRIGGER usage_events_spend_1_sub AFTER UPDATE ON usage_events
    REFERENCING OLD TABLE AS rb_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_usage_spend_sub();
CREATE TRIGGER usage_events_spend_2_add AFTER UPDATE ON usage_events
    REFERENCING NEW TABLE AS rb_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_usage_spend_add();
CREATE TRIGGER usage_events_spend_add AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS rb_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_usage_spend_add();
CREATE TRIGGER usage_events_spend_sub AFTER DELETE ON usage_events
    REFERENCING OLD TABLE AS rb_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rb_usage_spend_sub();

-- The spend of the rows already there.
INSERT INTO usage_spend_daily (user_id, day, cost_micro)
    SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, sum(cost_micro)
      FROM usage_events WHERE billed AND cost_micro > 0 GROUP BY 1, 2;
