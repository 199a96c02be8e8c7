-- 0008_grant_expire_reserved: a past-due grant keeps the part that open leases will burn from it.
--
-- schema/0002's rb_grant_expire capped what expires by the account's available balance. Holds are
-- burned soonest expiry first (rb_credit_burn), so the reserve of an open lease draws on the
-- past-due grants before any other: capping by the whole available balance let a promo grant
-- expire in full while a lease still held credit on it, and the lease's usage was then burned
-- from the paid grant (a promo of 100 and a paid grant of 100, a lease of 10: all 100 of the promo
-- expired, and the paid grant paid the 10). Now the account's reserved part (debits_pending) is
-- set against the past-due grants in burn order, and only the rest of each expires; the part kept
-- expires on a later call, once the leases are settled or returned. Same transfer ids, return
-- value and locks as 0002.

CREATE OR REPLACE FUNCTION rb_grant_expire(p_user text DEFAULT NULL, p_max integer DEFAULT 1000)
    RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    u record;
    g record;
    a credit_accounts;
    v_reserved bigint;
    v_keep bigint;
    v_take bigint;
    v_total bigint := 0;
BEGIN
    FOR u IN SELECT DISTINCT user_id FROM
                (SELECT user_id FROM credit_grants
                  WHERE remaining_micro > 0 AND expires_at <= now()
                    AND (p_user IS NULL OR user_id = p_user)
                  ORDER BY expires_at LIMIT p_max) d
              ORDER BY user_id
    LOOP
        SELECT * INTO a FROM credit_accounts WHERE user_id = u.user_id FOR UPDATE;
        v_reserved := greatest(a.debits_pending, 0);
        -- rb_credit_burn's order: the past-due grants come before every other one
        FOR g IN SELECT grant_id, remaining_micro FROM credit_grants
                  WHERE user_id = u.user_id AND remaining_micro > 0 AND expires_at <= now()
                  ORDER BY expires_at, created_at, grant_id FOR UPDATE
        LOOP
            v_keep := LEAST(g.remaining_micro, v_reserved);
            v_reserved := v_reserved - v_keep;
            v_take := LEAST(g.remaining_micro - v_keep,
                            a.credits_posted - a.debits_posted - a.debits_pending);
            CONTINUE WHEN v_take <= 0;
            INSERT INTO credit_transfers (id, user_id, kind, amount_micro, grant_id)
                VALUES ('expire:' || g.grant_id || ':' || g.remaining_micro, u.user_id, 'expire',
                        v_take, g.grant_id);
            UPDATE credit_grants SET remaining_micro = remaining_micro - v_take
             WHERE grant_id = g.grant_id;
            UPDATE credit_accounts SET debits_posted = debits_posted + v_take
             WHERE user_id = u.user_id RETURNING * INTO a;
            v_total := v_total + v_take;
        END LOOP;
    END LOOP;
    RETURN v_total;
END $$;
