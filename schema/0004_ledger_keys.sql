-- 0004_ledger_keys: the per-event cost of the append-only ledger tables, cut to what is needed.
--
-- Measured (20 batches of 500 billed events on one lease, jsonb already parsed, quiet 2-core box):
-- rb_usage_post cost ~62 us of PostgreSQL time per event after 0003; ~49 us with 1. and 2. below,
-- ~44 us through rb_usage_apply (3.). Of the rest, the usage_events insert is ~13 us (jsonb to
-- record ~6, CHECKs ~4, heap and indexes), the usage transfer ~10 us, the split ~12 us; parsing
-- the batch's text into jsonb adds ~9 us per event on the writer's call. Before: every event
-- inserted a usage_events row and a credit_transfers row, each fired one RI trigger per foreign
-- key (usage_events.user_id, credit_transfers.user_id, .lease_id: three SPI queries and three row
-- locks per event) and each went into three btree indexes.
--
-- 1. Foreign keys of the append-only tables become per-statement checks. The row-level FKs
--    usage_events.user_id -> users, credit_transfers.user_id -> users and
--    credit_transfers.lease_id -> credit_leases are replaced by
--    - an AFTER INSERT (and, for usage_events, AFTER UPDATE) statement trigger that reads the
--      statement's new rows once (a transition table), takes FOR KEY SHARE on each distinct
--      referenced row (exactly the lock an RI check takes, so a concurrent DELETE of the user or
--      lease waits for us, and then sees our rows) and raises 23503 foreign_key_violation if one
--      is missing: one query per batch instead of one per row;
--    - BEFORE DELETE / BEFORE UPDATE OF id row triggers on users and credit_leases that raise
--      23503 while a ledger row still refers to the key (ON DELETE RESTRICT, unchanged meaning).
--    rb_usage_post also already locks every credit_accounts row of the batch (credit_accounts
--    keeps its own FK to users), so a billed event's user is guaranteed by two mechanisms; the
--    lease id it writes comes from a join with credit_leases, so it always exists.
--    credit_accounts, credit_leases and credit_grants keep their row-level FKs (one row per user
--    or per lease, not per event).
-- 2. Indexes nobody reads are dropped.
--    - usage_events_workspace_time: no query filters usage by workspace (control/credits.c groups
--      a user's usage by workspace under usage_events_user_time; control/limits.c, gateway/db.c and
--      gateway/quota.c read by user, and by user and subject). Kept: the primary key (request_id:
--      idempotency, GET /ai/requests/{id}), usage_events_user_time (usage, spend windows) and the
--      partial usage_events_subject_time (subject budgets; only rows with a subject pay for it).
--    - credit_transfers_seq_key (UNIQUE (seq)): seq is GENERATED ALWAYS AS IDENTITY, so unique by
--      construction (no statement of ours uses OVERRIDING SYSTEM VALUE); the ledger is paginated by
--      (user_id, seq) through credit_transfers_user_seq, which stays, as do the primary key
--      (idempotency of every transfer) and the partial credit_transfers_resolve_once (holds only).
-- Net per billed event: 3 fewer RI queries and row locks, 2 fewer index insertions (4 instead of 6
-- for an event from a workspace token).
-- 3. rb_usage_post's result (one row per billed event, joined back to credit_transfers) cost ~10%
--    of the call and the gateway only counted it. The work moves, unchanged (schema/0003's
--    set-based body), into rb_usage_apply(p_events jsonb) RETURNS text[]: the request ids whose
--    usage transfer this call inserted (a replayed or duplicated event is not in it). The gateway's
--    writer calls rb_usage_apply; rb_usage_post keeps its contract (schema/0002) on top of it.

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

-- rb_usage_apply: schema/0003's rb_usage_post body up to the grant burn; returns v_new.
CREATE FUNCTION rb_usage_apply(p_events jsonb)
    RETURNS text[]
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    v_new text[];      -- request ids whose usage transfer this call inserted
    v_burn_user text[]; -- accounts whose posted debit grew, and by how much (grant burn)
    v_burn_amount bigint[];
BEGIN
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'rb_usage_post wants a JSON array' USING ERRCODE = '22023';
    END IF;
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
          FROM jsonb_populate_recordset(NULL::usage_events, p_events) r
        ON CONFLICT (request_id) DO NOTHING;
    -- Lock every account of the batch, in user_id order, before touching any of them; then create
    -- (in the same order) the accounts of billed users who never had a grant, and lock those too
    -- (a concurrent batch may have created one first).
    PERFORM 1 FROM credit_accounts
      WHERE user_id IN (SELECT x->>'user_id' FROM jsonb_array_elements(p_events) x)
      ORDER BY user_id FOR UPDATE;
    INSERT INTO credit_accounts (user_id)
        SELECT DISTINCT x->>'user_id' FROM jsonb_array_elements(p_events) x
         WHERE (x->>'billed')::boolean AND (x->>'cost_micro')::bigint > 0
         ORDER BY 1
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM credit_accounts
      WHERE user_id IN (SELECT x->>'user_id' FROM jsonb_array_elements(p_events) x
                         WHERE (x->>'billed')::boolean AND (x->>'cost_micro')::bigint > 0)
      ORDER BY user_id FOR UPDATE;
    -- The leases the batch draws on (only a lease of the event's own user counts), in order.
    PERFORM 1 FROM credit_leases l
      WHERE (l.id, l.user_id) IN (SELECT x->>'lease_id', x->>'user_id'
                                    FROM jsonb_array_elements(p_events) x
                                   WHERE (x->>'billed')::boolean
                                     AND (x->>'cost_micro')::bigint > 0)
      ORDER BY l.user_id, l.id FOR UPDATE;
    WITH ev AS (
        SELECT x->>'request_id' AS rid, x->>'user_id' AS uid,
               coalesce(x->>'lease_id', '') AS lkey, (x->>'cost_micro')::bigint AS cost
          FROM jsonb_array_elements(p_events) x
         WHERE (x->>'billed')::boolean AND (x->>'cost_micro')::bigint > 0),
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
