-- 0007_ledger_covered_batches: the usage transfers of a batch that its leases and balances cover
-- are written without the running split. Same rows, same counters, same result as schema/0006.
--
-- rb_usage_apply_staged splits each billed cost in running order (schema/0003: pending from the
-- event's lease, extra from the account's free balance, the rest overrun), with two window sums,
-- two sorts and a hash join over the whole batch. In the usual batch nothing needs splitting: every
-- lease the batch draws on has reserve left for all of that lease's costs, and the costs of the
-- events that draw on no lease (metering off; a lease closed, used up or not the user's) fit in
-- their account's free balance. Then every running minimum takes the whole cost: pending_i = cost_i
-- on a lease with reserve (cum_i <= reserve for every i), 0 on one without, extra_i = cost_i -
-- pending_i, overrun_i = 0. One statement groups the batch by (user, lease), sees whether it is
-- covered and, when it is, inserts those values directly, in the same row order, and adds the same
-- sums to its leases and accounts. Any other batch (a lease short of reserve, an account short of balance, a replay)
-- takes schema/0006's path unchanged. tests/integration/ledger_split_diff.sql runs random batches through both.

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
    v_covered boolean;
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
            -- Covered: every (user, lease) group on a lease with reserve fits in that reserve, and
            -- each user's total on no reserve fits in the account's free balance (read under the
            -- locks, before this statement's updates). Then the transfers, leases and accounts are
            -- written here; else this statement writes nothing and the running split follows.
            IF v_all_new THEN
                WITH grp AS (
                    SELECT s.user_id AS uid, coalesce(s.lease_id, '') AS lkey,
                           rb_sum8(s.cost_micro) AS total
                      FROM pg_temp.rb_usage_stage s
                     WHERE s.billed AND s.cost_micro > 0
                     GROUP BY 1, 2),
                gl AS ( -- only a lease of the event's own user counts; a closed one has no reserve
                    SELECT g.uid, g.lkey, g.total, l.id AS lid,
                           CASE WHEN l.closed_at IS NULL
                                THEN coalesce(l.amount_micro - l.used_micro, 0) ELSE 0 END AS reserve
                      FROM grp g LEFT JOIN credit_leases l ON l.id = g.lkey AND l.user_id = g.uid),
                covered AS (
                    SELECT coalesce(bool_and(p.leases_cover AND p.on_balance <= a.credits_posted
                                                                 - a.debits_posted - a.debits_pending),
                                    true) AS ok
                      FROM (SELECT gl.uid, bool_and(gl.reserve = 0 OR gl.total <= gl.reserve)
                                               AS leases_cover,
                                   coalesce(rb_sum8(gl.total) FILTER (WHERE gl.reserve = 0), 0)
                                       AS on_balance
                              FROM gl GROUP BY gl.uid) p
                      JOIN credit_accounts a ON a.user_id = p.uid),
                ins AS ( -- on a lease with reserve the whole cost is pending, else all extra
                    INSERT INTO credit_transfers (id, user_id, kind, amount_micro, request_id,
                                                  lease_id, cost_micro, pending_micro, overrun_micro)
                        SELECT 'usage:' || s.request_id, s.user_id, 'usage', s.cost_micro,
                               s.request_id, gl.lid, s.cost_micro,
                               CASE WHEN gl.reserve > 0 THEN s.cost_micro ELSE 0 END, 0
                          FROM pg_temp.rb_usage_stage s
                          JOIN gl ON gl.uid = s.user_id AND gl.lkey = coalesce(s.lease_id, '')
                         WHERE s.billed AND s.cost_micro > 0 AND (SELECT ok FROM covered)
                         ORDER BY s.user_id, gl.lkey, s.request_id
                        RETURNING request_id),
                lease_upd AS (
                    UPDATE credit_leases l
                       SET used_micro = l.used_micro
                                        + CASE WHEN gl.reserve > 0 THEN gl.total ELSE 0 END,
                           extra_micro = l.extra_micro
                                         + CASE WHEN gl.reserve > 0 THEN 0 ELSE gl.total END
                      FROM gl WHERE l.id = gl.lid AND (SELECT ok FROM covered)
                    RETURNING l.id), -- runs to completion although nothing reads it
                acct_upd AS (
                    UPDATE credit_accounts a
                       SET debits_pending = a.debits_pending - g.from_pending,
                           debits_posted = a.debits_posted + g.posted
                      FROM (SELECT gl.uid,
                                   sum(CASE WHEN gl.reserve > 0 THEN gl.total ELSE 0 END)
                                       AS from_pending,
                                   sum(gl.total) AS posted
                              FROM gl GROUP BY gl.uid) g
                     WHERE a.user_id = g.uid AND (SELECT ok FROM covered)
                    RETURNING a.user_id, g.posted)
                SELECT (SELECT ok FROM covered), (SELECT array_agg(i.request_id) FROM ins i),
                       (SELECT array_agg(u.user_id ORDER BY u.user_id) FROM acct_upd u),
                       (SELECT array_agg(u.posted ORDER BY u.user_id) FROM acct_upd u)
                  INTO v_covered, v_new, v_burn_user, v_burn_amount;
                IF v_covered THEN
                    EXIT;
                END IF;
            END IF;
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
