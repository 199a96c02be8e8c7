-- 0006_ledger_plans: the ledger writer's batch (rb_usage_apply_staged, schema/0004) without work
-- that does not change its result. Counted as schema/0005 was (instructions of the writer's
-- backend, batches of 500 new events into tables of 100k; tools/bench/instructions --ledger):
-- 216.9k -> 159.6k instructions per event (-26%).
--
-- 1. Plans made once per session, not per batch. The batch statement reads v_all_new (schema/0004),
--    a parameter, so the plan cache kept making a custom plan for it on every call (a custom plan
--    folds the flag and drops one branch, so it always looked cheaper than the generic plan, and
--    planning it cost ~12k per event). The function now runs with plan_cache_mode =
--    force_generic_plan: the flag is tested once per execution, as a one-time filter. Like the
--    function's other statements, the plan is remade when the writer drops its session's plans
--    (DISCARD PLANS each time the rows it posted doubled, and every minute: gateway/db.c).
-- 2. Usage transfers go in by a plain INSERT: the ON CONFLICT (id) DO NOTHING of schema/0003 probed
--    credit_transfers_pkey for every row (~17k per event). A new batch's requests have no usage
--    transfer (schema/0004: a usage row and its transfer are written together) unless the ledger
--    was edited by hand; then the INSERT fails with unique_violation and the batch's transfers take
--    the replay path, whose NOT EXISTS leaves that request out. A batch on the replay path reads
--    credit_transfers after its usage INSERT waited for any concurrent writer of the same request,
--    so it cannot meet a conflict under READ COMMITTED; under a stricter isolation it fails as
--    before, with a serialization error from that wait.
-- 3. Running sums in bigint: sum(bigint) is numeric, which the window split converted and
--    subtracted per row. rb_sum8 adds with int8pl (an overflow is an error, as numeric's cast back
--    to bigint was).
-- 4. credit_transfers' two self-references (pending_id, grant_id; NULL on every usage transfer)
--    are checked by a row trigger whose WHEN skips rows without them; a foreign key queued a check
--    for every inserted row and fetched the row back to run it. Same rule and error (23503, the
--    constraint's name); the ON DELETE side is moot, credit_transfers being append-only.
-- 5. A usage transfer's id, 'usage:' || request_id, is printable ASCII because its request_id is
--    (credit_transfers_request_id_check, on the same row): its id check compares instead of
--    matching a regex (~3k per event); any other id is matched as before.

-- 3. A bigint sum (strict int8pl: NULLs are skipped, as sum() skips them).
CREATE AGGREGATE rb_sum8(bigint) (SFUNC = int8pl, STYPE = bigint);

-- 4. Self-references checked only where present.
ALTER TABLE credit_transfers
    DROP CONSTRAINT credit_transfers_pending_id_fkey,
    DROP CONSTRAINT credit_transfers_grant_id_fkey;

CREATE FUNCTION rb_transfer_refs_exist() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_col text;
    v_key text;
BEGIN
    FOREACH v_col IN ARRAY ARRAY['pending_id', 'grant_id'] LOOP
        v_key := CASE v_col WHEN 'pending_id' THEN NEW.pending_id ELSE NEW.grant_id END;
        CONTINUE WHEN v_key IS NULL;
        PERFORM 1 FROM credit_transfers t WHERE t.id = v_key FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'insert or update on table "credit_transfers" violates foreign key constraint "credit_transfers_%_fkey"',
                v_col
                USING ERRCODE = 'foreign_key_violation', TABLE = 'credit_transfers',
                      DETAIL = format('Key (%s)=(%s) is not present in table "credit_transfers".',
                                      v_col, v_key);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- credit_transfers is append-only (credit_transfers_append_only refuses UPDATE): inserts only.
CREATE TRIGGER credit_transfers_refs_exist AFTER INSERT ON credit_transfers
    FOR EACH ROW WHEN (NEW.pending_id IS NOT NULL OR NEW.grant_id IS NOT NULL)
    EXECUTE FUNCTION rb_transfer_refs_exist();

-- 5. The id check.
ALTER TABLE credit_transfers
    DROP CONSTRAINT credit_transfers_id_check,
    ADD CONSTRAINT credit_transfers_id_check
        CHECK (octet_length(id) BETWEEN 1 AND 200
               AND ((request_id IS NOT NULL AND id = 'usage:' || request_id)
                    OR id COLLATE "C" !~ '[^!-~]'));

-- 1-3. The batch.
CREATE OR REPLACE FUNCTION rb_usage_apply_staged()
    RETURNS text[]
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
#variable_conflict use_column
DECLARE
    v_new text[];      -- request ids whose usage transfer this call inserted
    v_burn_user text[]; -- accounts whose posted debit grew, and by how much (grant burn)
    v_burn_amount bigint[];
    v_all_new boolean := true;
BEGIN
    BEGIN
        INSERT INTO usage_events SELECT * FROM rb_usage_stage_events();
    EXCEPTION WHEN unique_violation THEN
        v_all_new := false;
        INSERT INTO usage_events SELECT * FROM rb_usage_stage_events()
            ON CONFLICT (request_id) DO NOTHING;
    END;
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
    -- The usage transfers: a plain INSERT (no ON CONFLICT probe of credit_transfers_pkey per row).
    -- A new batch's requests have no transfer yet unless the ledger was edited by hand (a usage row
    -- deleted, its transfer kept): then the INSERT fails, is rolled back, and the batch's transfers
    -- take the replay path, whose NOT EXISTS leaves such a request out.
    LOOP
        BEGIN
            WITH ev AS (
                SELECT s.request_id AS rid, s.user_id AS uid, coalesce(s.lease_id, '') AS lkey,
                       s.cost_micro AS cost
                  FROM pg_temp.rb_usage_stage s
                 WHERE s.billed AND s.cost_micro > 0),
            fresh AS ( -- the first occurrence of each request never billed before
                SELECT ev.rid, ev.uid, ev.lkey, ev.cost FROM ev WHERE v_all_new
                UNION ALL
                (SELECT DISTINCT ON (ev.rid) ev.rid, ev.uid, ev.lkey, ev.cost FROM ev
                  WHERE NOT v_all_new
                    AND NOT EXISTS (SELECT 1 FROM credit_transfers t
                                     WHERE t.id = 'usage:' || ev.rid)
                  ORDER BY ev.rid, ev.uid, ev.lkey)),
            lease_cum AS ( -- a closed lease has no reserve left
                SELECT f.rid, f.uid, f.lkey, f.cost, l.id AS lid,
                       CASE WHEN l.closed_at IS NULL THEN coalesce(l.amount_micro - l.used_micro, 0)
                            ELSE 0 END AS reserve,
                       rb_sum8(f.cost) OVER (PARTITION BY f.uid, f.lkey ORDER BY f.rid) AS cum
                  FROM fresh f LEFT JOIN credit_leases l ON l.id = f.lkey AND l.user_id = f.uid),
            split_pending AS (
                SELECT c.*, LEAST(c.cum, c.reserve) - LEAST(c.cum - c.cost, c.reserve) AS pending
                  FROM lease_cum c),
            need_cum AS (
                SELECT s.*, a.credits_posted - a.debits_posted - a.debits_pending AS avail,
                       rb_sum8(s.cost - s.pending)
                                   OVER (PARTITION BY s.uid ORDER BY s.lkey, s.rid) AS cneed
                  FROM split_pending s JOIN credit_accounts a ON a.user_id = s.uid),
            split AS (
                SELECT n.*, LEAST(n.cneed, n.avail) - LEAST(n.cneed - (n.cost - n.pending), n.avail)
                              AS extra
                  FROM need_cum n),
            ins AS (
                INSERT INTO credit_transfers (id, user_id, kind, amount_micro, request_id, lease_id,
                                              cost_micro, pending_micro, overrun_micro)
                    SELECT 'usage:' || s.rid, s.uid, 'usage', s.pending + s.extra, s.rid, s.lid,
                           s.cost, s.pending, s.cost - s.pending - s.extra
                      FROM split s ORDER BY s.uid, s.lkey, s.rid
                    RETURNING request_id, user_id, lease_id, amount_micro, pending_micro,
                              overrun_micro),
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
                   (SELECT array_agg(u.user_id ORDER BY u.user_id) FROM acct_upd u
                     WHERE u.posted > 0),
                   (SELECT array_agg(u.posted ORDER BY u.user_id) FROM acct_upd u
                     WHERE u.posted > 0)
              INTO v_new, v_burn_user, v_burn_amount;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF NOT v_all_new THEN
                RAISE;
            END IF;
            v_all_new := false;
        END;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(v_burn_user, 1), 0) LOOP
        PERFORM rb_credit_burn(v_burn_user[i], v_burn_amount[i]);
    END LOOP;
    RETURN coalesce(v_new, '{}');
END $$;
