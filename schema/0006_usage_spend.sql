-- 0006_usage_spend: a user's billed spend per UTC day, kept as a counter instead of summed from
-- usage_events on every read.
--
-- The daily and monthly credit caps (gateway/quota.c seeding and re-reading every 60 s per active
-- user and gateway; GET /users/{id}/limits) summed cost_micro over all of the user's billed rows of
-- the month: O(rows). Measured in tools/bench/proxy, where one user makes ~1.5M requests, one such
-- read took over 3 s of PostgreSQL time, every minute, on each gateway. Now they read at most 31
-- rows of usage_spend_daily.
--
-- Statement-level triggers on usage_events keep usage_spend_daily equal to
--   SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, sum(cost_micro)
--     FROM usage_events WHERE billed GROUP BY 1, 2
-- through every INSERT (the ledger writer's batches: one upsert per user and day per batch),
-- UPDATE and DELETE. Rows are upserted in (user_id, day) order, before rb_usage_apply_staged locks
-- any account, so concurrent batches take these locks in one order.

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
