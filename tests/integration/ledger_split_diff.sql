-- The usage batch of schema/0007 (rb_usage_apply_staged, with its path for covered batches) against
-- schema/0006's, which ledger_sql_test.sh installs as rb_usage_apply_staged_0006: random ledgers and
-- random batches, each applied by both in a subtransaction that is then rolled back, and compared by
-- what they leave: the usage transfers (in insertion order), every account, lease and grant, and the
-- request ids returned. Run by ledger_sql_test.sh; prints a line "counts|iterations|mismatches|whole|split": how
-- many batches differ, how many came out whole (every billed cost all from its lease or all from the balance: the
-- covered path's kind) and how many split or overran (the running split's), so the test can
-- require both kinds; then the first mismatch, if any.
SELECT rb_usage_stage_open();
CREATE TEMPORARY TABLE diff_result (i integer, same boolean, outcome text, a text, b text);

CREATE FUNCTION pg_temp.diff_snapshot(p_new text[]) RETURNS text
    LANGUAGE sql
    AS $$
    SELECT concat_ws(E'\n',
        (SELECT string_agg(concat_ws(',', id, user_id, amount_micro, request_id, lease_id,
                                     cost_micro, pending_micro, overrun_micro), ';' ORDER BY seq)
           FROM credit_transfers WHERE kind = 'usage' AND user_id LIKE 'u-diff%'),
        (SELECT string_agg(concat_ws(',', user_id, credits_posted, debits_posted, debits_pending,
                                     overrun_micro), ';' ORDER BY user_id)
           FROM credit_accounts WHERE user_id LIKE 'u-diff%'),
        (SELECT string_agg(concat_ws(',', id, amount_micro, used_micro, extra_micro, overrun_micro),
                           ';' ORDER BY id)
           FROM credit_leases WHERE user_id LIKE 'u-diff%'),
        (SELECT string_agg(concat_ws(',', grant_id, remaining_micro), ';' ORDER BY grant_id)
           FROM credit_grants WHERE user_id LIKE 'u-diff%'),
        array_to_string(p_new, ','))
$$;

-- A random ledger (seeded, so both runs of an iteration build the same one): grants, leases (some
-- returned, some partly used by an earlier batch), then a staged batch drawing on them.
CREATE FUNCTION pg_temp.diff_setup(p_i integer) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_users text[] := ARRAY['u-diff0001', 'u-diff0002', 'u-diff0003', 'u-diff0004'];
    v_leases text[] := '{}';
    v_pre jsonb := '[]';
    v_user text;
    v_lease text;
    v_n integer;
    v_cost bigint;
    v_billed boolean;
    v_rid text;
    v_rids text[] := '{}';
BEGIN
    PERFORM setseed(p_i / 1000.0);
    FOREACH v_user IN ARRAY v_users LOOP
        IF random() < 0.85 THEN -- some users never had a grant
            PERFORM rb_grant('dg-' || v_user, v_user, 1 + floor(random() * 4000000)::bigint, 'paid',
                             NULL, NULL);
        END IF;
        FOR k IN 1 .. floor(random() * 3)::integer LOOP
            v_lease := 'dl-' || v_user || '-' || k;
            IF rb_lease_take(v_lease, 'gw-diff', v_user, 1 + floor(random() * 1500000)::bigint, 60) > 0
            THEN
                v_leases := v_leases || v_lease;
                IF random() < 0.15 THEN
                    PERFORM rb_lease_return(v_lease);
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    -- an earlier batch uses part of some leases
    FOR k IN 1 .. floor(random() * 4)::integer LOOP
        v_user := v_users[1 + floor(random() * 4)::integer];
        v_pre := v_pre || jsonb_build_object(
            'request_id', 'dp-' || k, 'user_id', v_user, 'route', '/v1/messages', 'model', 'm',
            'mode', 'managed', 'status', 'ok', 'billed', true, 'usage_source', 'provider',
            'output', 1, 'cost_micro', floor(random() * 900000)::bigint,
            'lease_id', CASE WHEN cardinality(v_leases) > 0
                             THEN v_leases[1 + floor(random() * cardinality(v_leases))::integer] END);
    END LOOP;
    PERFORM rb_usage_apply(v_pre);
    -- the batch
    v_n := 1 + floor(random() * 12)::integer;
    FOR k IN 1 .. v_n LOOP
        v_user := v_users[1 + floor(random() * 4)::integer];
        v_lease := CASE floor(random() * 5)::integer
                       WHEN 0 THEN NULL
                       WHEN 1 THEN 'no-such-lease'
                       ELSE CASE WHEN cardinality(v_leases) > 0 -- often the user's own, not always
                                 THEN v_leases[1 + floor(random() * cardinality(v_leases))::integer]
                            END
                   END;
        v_cost := CASE floor(random() * 4)::integer
                      WHEN 0 THEN 0
                      WHEN 1 THEN 1 + floor(random() * 2000)::bigint
                      WHEN 2 THEN 1 + floor(random() * 200000)::bigint
                      ELSE 1 + floor(random() * 1500000)::bigint
                  END;
        v_billed := random() < 0.85;
        v_rid := 'd-' || k;
        IF random() < 0.03 AND cardinality(v_rids) > 0 THEN -- the same request twice in one batch
            v_rid := v_rids[1];
        ELSIF random() < 0.03 THEN -- a request an earlier batch posted (a replay)
            v_rid := 'dp-1';
        END IF;
        v_rids := v_rids || v_rid;
        INSERT INTO pg_temp.rb_usage_stage (request_id, user_id, route, model, mode, status, billed,
                                            usage_source, output, cost_micro, lease_id)
        VALUES (v_rid, v_user, '/v1/messages', 'm', CASE WHEN v_billed THEN 'managed' ELSE 'byok' END,
                'ok', v_billed, 'provider', 1, v_cost, v_lease);
    END LOOP;
END $$;

DO $$
DECLARE
    v_a text;
    v_b text;
    v_outcome text;
BEGIN
    INSERT INTO users (id, email)
        SELECT 'u-diff000' || n, 'diff' || n || '@example.com' FROM generate_series(1, 4) n;
    FOR i IN 1 .. 400 LOOP
        BEGIN
            PERFORM pg_temp.diff_setup(i);
            v_a := pg_temp.diff_snapshot(rb_usage_apply_staged());
            SELECT CASE WHEN count(*) = 0 THEN 'none'
                        WHEN bool_and(overrun_micro = 0 AND pending_micro IN (0, cost_micro)) THEN 'whole'
                        ELSE 'split' END
              INTO v_outcome
              FROM credit_transfers
             WHERE kind = 'usage' AND user_id LIKE 'u-diff%' AND request_id LIKE 'd-%';
            RAISE EXCEPTION USING ERRCODE = 'RBX01';
        EXCEPTION WHEN SQLSTATE 'RBX01' THEN
            NULL; -- rolled back
        END;
        BEGIN
            PERFORM pg_temp.diff_setup(i);
            v_b := pg_temp.diff_snapshot(rb_usage_apply_staged_0006());
            RAISE EXCEPTION USING ERRCODE = 'RBX01';
        EXCEPTION WHEN SQLSTATE 'RBX01' THEN
            NULL;
        END;
        INSERT INTO diff_result VALUES (i, v_a IS NOT DISTINCT FROM v_b, v_outcome, v_a, v_b);
    END LOOP;
END $$;

SELECT 'counts', count(*), count(*) FILTER (WHERE NOT same), count(*) FILTER (WHERE outcome = 'whole'),
       count(*) FILTER (WHERE outcome = 'split')
  FROM diff_result;
SELECT 'iteration ' || i || E':\n' || a || E'\n  vs 0006:\n' || b
  FROM diff_result WHERE NOT same ORDER BY i LIMIT 1;
