-- 0003_usage_post_fast: the ledger writer's hot path, made cheap enough for the gateway's rate.
--
-- Measured (tools/bench/proxy, 2 cores): rb_usage_post cost ~150-250 us of PostgreSQL CPU per
-- event, so at ~15k requests/s the database alone wanted more than two cores. Two causes:
--
-- 1. CHECK constraints with bounded repetitions ('^[!-~]{1,128}$'): PostgreSQL's regex engine
--    expands {m,n} into that many NFA states, and one match of '^[!-~]{1,200}$' costs ~50 us.
--    Every event evaluated five of them (usage_events.request_id, .route, .provider and
--    credit_transfers.id, .request_id). They are replaced by equivalent checks: a length bound
--    plus an unbounded class match ('[^!-~]' finds any character outside printable ASCII; a
--    string of printable ASCII has as many bytes as characters). Same names, same meaning.
-- 2. rb_usage_post ran one INSERT, one RETURN QUERY and array bookkeeping per event in PL/pgSQL.
--    It is now set-based: one INSERT ... SELECT for the usage rows, one for the usage transfers
--    (the running split of each cost into lease reserve / free balance / overrun computed with
--    window sums), one UPDATE for the leases and one for the accounts, then the grant burn per
--    account. Semantics are unchanged (schema/0002_credits.sql): idempotent by request_id (a
--    replayed or duplicated event moves nothing and is returned with replayed = true), every
--    account of the batch locked in user_id order before anything moves, a lease's reserve used
--    first, then the free balance, the rest recorded as overrun.

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

-- rb_usage_post: see schema/0002_credits.sql for the contract; this is the set-based version.
-- The billed events (billed and cost_micro > 0) are split in the order (user_id, lease_id,
-- request_id): within one lease, cost i takes min(cost_i, reserve left after the costs before it)
-- from the reserve, i.e. pending_i = min(cum_i, reserve) - min(cum_i - cost_i, reserve); what
-- remains takes the same running form against the account's free balance (across its leases), and
-- the rest is overrun. Exactly what the event-by-event loop of 0002 computed.
CREATE OR REPLACE FUNCTION rb_usage_post(p_events jsonb)
    RETURNS TABLE (request_id text, user_id text, posted_micro bigint, overrun_micro bigint,
                   replayed boolean)
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
