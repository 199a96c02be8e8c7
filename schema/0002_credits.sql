-- 0002_credits: the credit ledger (accounts, append-only transfers, grants, gateway leases), per-user
-- limit overrides, and the PL/pgSQL functions that are the ONLY way the daemons move money.
--
-- Forward-only (see 0001). The runner wraps this file in one transaction.
--
-- Money is bigint micro-credits (1 credit = 1,000,000 micro). The model is TigerBeetle's, mapped
-- onto PostgreSQL (notes/ledger-and-pricing.md §1):
--
--   credit_accounts   one row per user: credits_posted, debits_posted, debits_pending (cumulative
--                     counters) with the no-overdraft CHECK debits_pending + debits_posted <=
--                     credits_posted. available = credits_posted - debits_posted - debits_pending.
--   credit_transfers  every movement, immutable, id = the client-chosen idempotency key.
--   credit_grants     the unspent part of each grant (mutable), for burn-down order and expiry.
--   credit_leases     a gateway's reservation of a chunk of a user's credit (DESIGN.md §3).
--
-- How each transfer kind moves the account counters (the ledger identity, checked by
-- tests/integration/ledger_sql_test.sh):
--
--   grant   credits_posted += amount                          (a new credit_grants row)
--   hold    debits_pending += amount                          (one per lease: id 'hold:'||lease_id)
--   usage   debits_pending -= pending_micro,                  (id 'usage:'||request_id)
--           debits_posted  += amount  (amount = the part of cost_micro actually posted)
--   void    debits_pending -= amount                          (a lease's unused part, once)
--   expire  debits_posted  += amount                          (an expired grant's unused part)
--   adjust  debits_posted  += amount                          (manual debit correction; reserved:
--                                                              no function emits it yet; credit
--                                                              corrections are grants)
--   post    reserved for per-request two-phase holds; no function emits it yet and it moves nothing.
--
-- so, per user:  credits_posted = Σ grant
--                debits_posted  = Σ usage.amount + Σ expire + Σ adjust
--                debits_pending = Σ hold - Σ usage.pending_micro - Σ void
--                Σ credit_grants.remaining_micro = credits_posted - debits_posted
-- and the API's  total = credits_posted, used = debits_posted, reserved = debits_pending,
--                remaining = total - used - reserved.
--
-- Lock order (no deadlocks between gateways, control and the sweepers): credit_accounts rows in
-- user_id order, then credit_leases rows, then credit_grants rows. Every function below follows it.
--
-- Functions (the contract; all idempotent by their id, all keep the counters and the transfers
-- consistent in the caller's transaction):
--   rb_grant(id, user, amount, category, expires, note)       add credit
--   rb_lease_take(lease_id, node, user, amount, ttl_s, min)   reserve a chunk for a gateway
--   rb_lease_renew(lease_id, ttl_s)                           push a live lease's expiry
--   rb_usage_post(events jsonb)                               a gateway's ledger batch
--   rb_lease_return(lease_id)                                 release a lease's unused part
--   rb_lease_sweep(max)                                       release expired leases (dead nodes)
--   rb_grant_expire(user)                                     remove expired grants' unused part
--   rb_credits_text(micro)                                    "12.500000" (exact)
--
-- SQLSTATEs of our own: RB001 an idempotency id reused for a different grant (API: 409
-- idempotency_conflict); RB002 UPDATE/DELETE/TRUNCATE of credit_transfers; RB003 the ledger
-- identity would break (a bug: the transaction is rolled back). Bad arguments raise 22023.

-- ---------------------------------------------------------------------------------------------
-- credit_accounts: created on the first grant. A user without a row has a zero balance.
-- overrun_micro is NOT part of the balance: it is the cumulative cost that could not be posted
-- because the balance was exhausted (estimation error beyond every reserve); it is recorded, never
-- lost, and visible to billing (GET /users/{id}/credits shows it).
CREATE TABLE credit_accounts (
    user_id         text PRIMARY KEY REFERENCES users (id) ON DELETE RESTRICT,
    credits_posted  bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_posted   bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    debits_pending  bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    overrun_micro   bigint NOT NULL DEFAULT 0 CHECK (overrun_micro >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_accounts_no_overdraft
        CHECK (debits_pending + debits_posted <= credits_posted)
);
CREATE TRIGGER credit_accounts_touch BEFORE UPDATE ON credit_accounts
    FOR EACH ROW EXECUTE FUNCTION rb_touch_updated_at();

-- credit_leases: a chunk of a user's available credit reserved by one gateway node (a `hold`
-- transfer). Request holds are carved from it in the gateway's memory; settled usage moves cost
-- from the lease's reserve to posted (used_micro).
--   used_micro     cost drawn from the reserve; never more than amount_micro (CHECK).
--   extra_micro    cost posted beyond the reserve, from the free balance (estimation error, or
--                  usage settled after the lease was closed).
--   overrun_micro  cost that could not be posted at all (balance exhausted): recorded, unpaid.
--   released_micro the unused part voided when the lease closed (return or sweep).
-- So a lease's total cost is used + extra + overrun and MAY exceed amount_micro; what the
-- reserve guarantees is only used_micro <= amount_micro, and used + released = amount once closed.
CREATE TABLE credit_leases (
    id              text PRIMARY KEY CHECK (id ~ '^[!-~]{1,128}$'),
    node_id         text NOT NULL CHECK (node_id ~ '^[!-~]{1,128}$'),
    user_id         text NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    amount_micro    bigint NOT NULL CHECK (amount_micro > 0),
    used_micro      bigint NOT NULL DEFAULT 0 CHECK (used_micro >= 0),
    extra_micro     bigint NOT NULL DEFAULT 0 CHECK (extra_micro >= 0),
    overrun_micro   bigint NOT NULL DEFAULT 0 CHECK (overrun_micro >= 0),
    released_micro  bigint NOT NULL DEFAULT 0 CHECK (released_micro >= 0),
    expires_at      timestamptz NOT NULL,
    closed_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_leases_used_in_reserve CHECK (used_micro <= amount_micro),
    CONSTRAINT credit_leases_closed_resolved
        CHECK (CASE WHEN closed_at IS NULL THEN released_micro = 0
                    ELSE used_micro + released_micro = amount_micro END)
);
CREATE INDEX credit_leases_open_expiry ON credit_leases (expires_at) WHERE closed_at IS NULL;
CREATE INDEX credit_leases_user ON credit_leases (user_id, created_at);

-- credit_transfers: append-only (trigger below). seq orders the ledger for pagination.
CREATE TABLE credit_transfers (
    id             text PRIMARY KEY CHECK (id ~ '^[!-~]{1,200}$'),
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    user_id        text NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    kind           text NOT NULL
                   CHECK (kind IN ('grant', 'usage', 'hold', 'post', 'void', 'adjust', 'expire')),
    amount_micro   bigint NOT NULL CHECK (amount_micro >= 0),
    pending_id     text REFERENCES credit_transfers (id),
    grant_id       text REFERENCES credit_transfers (id),
    category       text CHECK (category IN ('paid', 'promo')),
    expires_at     timestamptz,
    request_id     text CHECK (request_id ~ '^[!-~]{1,128}$'),
    lease_id       text REFERENCES credit_leases (id),
    cost_micro     bigint CHECK (cost_micro > 0),
    pending_micro  bigint CHECK (pending_micro >= 0),
    overrun_micro  bigint CHECK (overrun_micro >= 0),
    note           text CHECK (octet_length(note) <= 1024 AND note !~ '[[:cntrl:]]'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Only a usage may post 0 (its whole cost overran an empty balance; the row still records it).
    CONSTRAINT credit_transfers_amount_positive CHECK (kind = 'usage' OR amount_micro > 0),
    CONSTRAINT credit_transfers_grant_fields
        CHECK ((kind = 'grant') = (category IS NOT NULL) AND (kind = 'grant' OR expires_at IS NULL)),
    CONSTRAINT credit_transfers_pending_fields
        CHECK ((kind IN ('post', 'void')) = (pending_id IS NOT NULL)),
    CONSTRAINT credit_transfers_expire_fields CHECK ((kind = 'expire') = (grant_id IS NOT NULL)),
    CONSTRAINT credit_transfers_hold_fields CHECK (kind <> 'hold' OR lease_id IS NOT NULL),
    CONSTRAINT credit_transfers_usage_fields
        CHECK (CASE WHEN kind = 'usage'
                    THEN request_id IS NOT NULL AND cost_micro IS NOT NULL
                         AND pending_micro IS NOT NULL AND overrun_micro IS NOT NULL
                         AND pending_micro <= amount_micro
                         AND amount_micro + overrun_micro = cost_micro
                    ELSE request_id IS NULL AND cost_micro IS NULL AND pending_micro IS NULL
                         AND overrun_micro IS NULL END)
);
-- A hold is resolved (posted or voided) at most once.
CREATE UNIQUE INDEX credit_transfers_resolve_once ON credit_transfers (pending_id)
    WHERE kind IN ('post', 'void');
CREATE INDEX credit_transfers_user_seq ON credit_transfers (user_id, seq);

CREATE FUNCTION rb_credit_transfers_immutable() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN
        RAISE EXCEPTION 'credit_transfers is append-only (% refused)', TG_OP
            USING ERRCODE = 'RB002';
    END $$;
CREATE TRIGGER credit_transfers_append_only BEFORE UPDATE OR DELETE ON credit_transfers
    FOR EACH ROW EXECUTE FUNCTION rb_credit_transfers_immutable();
CREATE TRIGGER credit_transfers_no_truncate BEFORE TRUNCATE ON credit_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION rb_credit_transfers_immutable();

-- credit_grants: what is left of each grant. Spending burns grants down in this order: the
-- soonest-expiring first (promo credit usually expires), never-expiring last, then oldest first.
-- Expiry: rb_grant_expire() turns a past-due grant's remaining_micro into an `expire` transfer
-- (debits_posted += x), capped by what is not reserved by leases; the reserved part stays spendable
-- until its lease settles or returns, and a later run expires what is left (at most a lease TTL).
CREATE TABLE credit_grants (
    grant_id         text PRIMARY KEY REFERENCES credit_transfers (id),
    user_id          text NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    category         text NOT NULL CHECK (category IN ('paid', 'promo')),
    expires_at       timestamptz,
    amount_micro     bigint NOT NULL CHECK (amount_micro > 0),
    remaining_micro  bigint NOT NULL CHECK (remaining_micro >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_grants_remaining_in_amount CHECK (remaining_micro <= amount_micro)
);
CREATE INDEX credit_grants_burn ON credit_grants (user_id, expires_at, created_at)
    WHERE remaining_micro > 0;
CREATE INDEX credit_grants_due ON credit_grants (expires_at)
    WHERE remaining_micro > 0 AND expires_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- user_limits: per-user overrides of the plan (config). NULL = use the plan's value. AI caps use the
-- plan's convention: 0 = no cap. credits_per_day/month are whole credits, like the plan.
-- Every change NOTIFYs channel rigbox_limits with the user id as payload; gateways drop their
-- cached limits for that user (a change applies within a second).
CREATE TABLE user_limits (
    user_id             text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    max_vms             integer CHECK (max_vms BETWEEN 0 AND 1000000),
    max_ram_per_vm_mb   bigint CHECK (max_ram_per_vm_mb BETWEEN 0 AND 1048576),
    max_ram_total_mb    bigint CHECK (max_ram_total_mb BETWEEN 0 AND 1099511627776),
    max_vcpu_per_vm     integer CHECK (max_vcpu_per_vm BETWEEN 0 AND 256),
    max_running_vcpus   integer CHECK (max_running_vcpus BETWEEN 0 AND 1000000),
    max_disk_total_mb   bigint CHECK (max_disk_total_mb BETWEEN 0 AND 1099511627776),
    credits_per_day     bigint CHECK (credits_per_day BETWEEN 0 AND 9000000000000),
    credits_per_month   bigint CHECK (credits_per_month BETWEEN 0 AND 9000000000000),
    rpm                 integer CHECK (rpm BETWEEN 0 AND 1000000000),
    tpm                 bigint CHECK (tpm BETWEEN 0 AND 1000000000000),
    max_concurrent      integer CHECK (max_concurrent BETWEEN 0 AND 1000000),
    allowed_models      text[] CHECK (cardinality(allowed_models) <= 256
                                      AND array_position(allowed_models, NULL) IS NULL),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER user_limits_touch BEFORE UPDATE ON user_limits
    FOR EACH ROW EXECUTE FUNCTION rb_touch_updated_at();

CREATE FUNCTION rb_notify_limits() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('rigbox_limits', OLD.user_id);
        ELSIF TG_TABLE_NAME = 'users' THEN
            PERFORM pg_notify('rigbox_limits', NEW.id);
        ELSE
            PERFORM pg_notify('rigbox_limits', NEW.user_id);
        END IF;
        RETURN NULL;
    END $$;
CREATE TRIGGER user_limits_notify AFTER INSERT OR UPDATE OR DELETE ON user_limits
    FOR EACH ROW EXECUTE FUNCTION rb_notify_limits();
-- A plan change changes the effective limits too.
CREATE TRIGGER users_plan_notify AFTER UPDATE OF plan ON users
    FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan)
    EXECUTE FUNCTION rb_notify_limits();

-- ---------------------------------------------------------------------------------------------
-- rb_credits_text: micro-credits as an exact decimal string with six decimals ("12.500000"); the
-- API writes credits this way (never a float). Negative amounts keep their sign.
CREATE FUNCTION rb_credits_text(p_micro bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT CASE WHEN p_micro < 0 THEN '-' ELSE '' END
                 || div(abs(p_micro::numeric), 1000000)::text || '.'
                 || lpad((abs(p_micro::numeric) % 1000000)::text, 6, '0') $$;

-- Internal: burns p_amount of posted debit down the user's grants (soonest expiry first). The
-- caller holds the account lock and has already raised debits_posted by p_amount; the identity
-- Σ remaining = credits_posted - debits_posted guarantees the grants cover it.
CREATE FUNCTION rb_credit_burn(p_user text, p_amount bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_left bigint := p_amount;
    g record;
    v_take bigint;
BEGIN
    FOR g IN SELECT grant_id, remaining_micro FROM credit_grants
              WHERE user_id = p_user AND remaining_micro > 0
              ORDER BY expires_at NULLS LAST, created_at, grant_id FOR UPDATE
    LOOP
        EXIT WHEN v_left = 0;
        v_take := LEAST(v_left, g.remaining_micro);
        UPDATE credit_grants SET remaining_micro = remaining_micro - v_take
         WHERE grant_id = g.grant_id;
        v_left := v_left - v_take;
    END LOOP;
    IF v_left <> 0 THEN
        RAISE EXCEPTION 'ledger identity broken: % micro of % for user % not covered by grants',
            v_left, p_amount, p_user USING ERRCODE = 'RB003';
    END IF;
END $$;

-- rb_grant: adds p_amount micro-credits to p_user. Idempotent by p_id: a replay with the same
-- fields returns the original row with replayed = true; the same id with any different field
-- (user, amount, category, expiry, note) raises SQLSTATE RB001 (the API's 409
-- idempotency_conflict). Bad input raises 22023. NOTIFYs rigbox_credits with the user id.
CREATE FUNCTION rb_grant(p_id text, p_user text, p_amount bigint, p_category text,
                         p_expires timestamptz, p_note text)
    RETURNS TABLE (id text, user_id text, amount_micro bigint, category text,
                   expires_at timestamptz, note text, created_at timestamptz, replayed boolean)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    t credit_transfers;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 OR p_category IS NULL
       OR p_category NOT IN ('paid', 'promo') THEN
        RAISE EXCEPTION 'a grant needs a positive amount and category paid or promo'
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO t FROM credit_transfers WHERE id = p_id;
    IF NOT FOUND THEN
        IF p_expires IS NOT NULL AND p_expires <= now() THEN
            RAISE EXCEPTION 'expires_at is in the past' USING ERRCODE = '22023';
        END IF;
        INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM credit_accounts WHERE user_id = p_user FOR UPDATE;
        INSERT INTO credit_transfers (id, user_id, kind, amount_micro, category, expires_at, note)
            VALUES (p_id, p_user, 'grant', p_amount, p_category, p_expires, p_note)
            ON CONFLICT DO NOTHING RETURNING * INTO t;
        IF FOUND THEN
            UPDATE credit_accounts SET credits_posted = credits_posted + p_amount
             WHERE user_id = p_user;
            INSERT INTO credit_grants (grant_id, user_id, category, expires_at, amount_micro,
                                       remaining_micro)
                VALUES (p_id, p_user, p_category, p_expires, p_amount, p_amount);
            PERFORM pg_notify('rigbox_credits', p_user);
            RETURN QUERY SELECT t.id, t.user_id, t.amount_micro, t.category, t.expires_at, t.note,
                                t.created_at, false;
            RETURN;
        END IF;
        SELECT * INTO t FROM credit_transfers WHERE id = p_id; -- lost a race to the same id
    END IF;
    IF t.kind <> 'grant' OR t.user_id <> p_user OR t.amount_micro <> p_amount
       OR t.category <> p_category OR t.expires_at IS DISTINCT FROM p_expires
       OR t.note IS DISTINCT FROM p_note THEN
        RAISE EXCEPTION 'idempotency key % was used for a different grant', p_id
            USING ERRCODE = 'RB001';
    END IF;
    RETURN QUERY SELECT t.id, t.user_id, t.amount_micro, t.category, t.expires_at, t.note,
                        t.created_at, true;
END $$;

-- rb_grant_expire: turns the unused part of every past-due grant (of p_user, or of everyone when
-- NULL) into `expire` transfers, at most p_max grants per call. The part currently reserved by
-- leases cannot expire yet (no-overdraft): it is capped to the account's available balance and
-- the rest expires on a later call. Transfer ids are 'expire:'||grant_id||':'||remaining_before, so
-- a retry never expires twice. Returns the micro-credits expired.
CREATE FUNCTION rb_grant_expire(p_user text DEFAULT NULL, p_max integer DEFAULT 1000)
    RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    u record;
    g record;
    a credit_accounts;
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
        FOR g IN SELECT grant_id, remaining_micro FROM credit_grants
                  WHERE user_id = u.user_id AND remaining_micro > 0 AND expires_at <= now()
                  ORDER BY expires_at, grant_id FOR UPDATE
        LOOP
            v_take := LEAST(g.remaining_micro,
                            a.credits_posted - a.debits_posted - a.debits_pending);
            EXIT WHEN v_take <= 0;
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

-- rb_lease_take: reserves up to p_amount of p_user's available credit for gateway node p_node, as
-- lease p_lease_id expiring in p_ttl_s seconds. Returns the micro-credits reserved:
--   p_amount  when the balance covers it (one atomic conditional UPDATE: no lock held before it,
--             so many gateways can take from one balance without overspending);
--   less      when only available (>= p_min) is left: the last credits stay usable;
--   0         when less than p_min is available (or the user has no account); nothing is written.
-- Idempotent by p_lease_id: a replay returns the amount of the existing lease (whatever its
-- state). Two concurrent calls with the same new id: one of them fails with unique_violation.
-- Expired grants of the user are expired first, so expired promo credit is never leased.
CREATE FUNCTION rb_lease_take(p_lease_id text, p_node text, p_user text, p_amount bigint,
                              p_ttl_s integer, p_min bigint DEFAULT 1)
    RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_take bigint;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 OR p_ttl_s IS NULL OR p_ttl_s <= 0
       OR p_min IS NULL OR p_min <= 0 OR p_min > p_amount THEN
        RAISE EXCEPTION 'lease: amount, ttl and min must be positive, min <= amount'
            USING ERRCODE = '22023';
    END IF;
    SELECT amount_micro INTO v_take FROM credit_leases WHERE id = p_lease_id;
    IF FOUND THEN
        RETURN v_take;
    END IF;
    IF EXISTS (SELECT 1 FROM credit_grants WHERE user_id = p_user AND remaining_micro > 0
                                             AND expires_at <= now()) THEN
        PERFORM rb_grant_expire(p_user);
    END IF;
    -- The common case: the whole chunk fits.
    UPDATE credit_accounts SET debits_pending = debits_pending + p_amount
     WHERE user_id = p_user AND credits_posted - debits_posted - debits_pending >= p_amount;
    IF FOUND THEN
        v_take := p_amount;
    ELSE
        -- Not enough for a whole chunk: take what is left (if at least p_min) under the row lock.
        SELECT LEAST(p_amount, credits_posted - debits_posted - debits_pending) INTO v_take
          FROM credit_accounts WHERE user_id = p_user FOR UPDATE;
        IF NOT FOUND OR v_take < p_min THEN
            RETURN 0;
        END IF;
        UPDATE credit_accounts SET debits_pending = debits_pending + v_take
         WHERE user_id = p_user;
    END IF;
    INSERT INTO credit_leases (id, node_id, user_id, amount_micro, expires_at)
        VALUES (p_lease_id, p_node, p_user, v_take, now() + make_interval(secs => p_ttl_s));
    INSERT INTO credit_transfers (id, user_id, kind, amount_micro, lease_id)
        VALUES ('hold:' || p_lease_id, p_user, 'hold', v_take, p_lease_id);
    RETURN v_take;
END $$;

-- rb_lease_renew: pushes an open lease's expiry to now() + p_ttl_s. Returns false when the lease is
-- closed or unknown (it was swept: the gateway must take a new one; usage it still settles against
-- the old id is posted from the free balance, so nothing is lost).
CREATE FUNCTION rb_lease_renew(p_lease_id text, p_ttl_s integer) RETURNS boolean
    LANGUAGE sql
    AS $$
    WITH r AS (UPDATE credit_leases SET expires_at = now() + make_interval(secs => p_ttl_s)
                WHERE id = p_lease_id AND closed_at IS NULL RETURNING 1)
    SELECT count(*) > 0 FROM r
$$;

-- Internal: closes lease p_lease_id (the caller holds its account's lock), voiding the unused part.
CREATE FUNCTION rb_lease_close(p_lease_id text) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    l credit_leases;
    v_rest bigint;
BEGIN
    SELECT * INTO l FROM credit_leases WHERE id = p_lease_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF l.closed_at IS NOT NULL THEN
        RETURN l.released_micro;
    END IF;
    v_rest := l.amount_micro - l.used_micro;
    IF v_rest > 0 THEN
        INSERT INTO credit_transfers (id, user_id, kind, amount_micro, pending_id, lease_id)
            VALUES ('void:' || l.id, l.user_id, 'void', v_rest, 'hold:' || l.id, l.id);
        UPDATE credit_accounts SET debits_pending = debits_pending - v_rest
         WHERE user_id = l.user_id;
    END IF;
    UPDATE credit_leases SET closed_at = now(), released_micro = v_rest WHERE id = l.id;
    RETURN v_rest;
END $$;

-- rb_lease_return: releases the unused part of lease p_lease_id (a `void` transfer) and closes it.
-- Returns the micro-credits released; idempotent (a replay returns the same number; an unknown
-- lease returns 0: a take that reserved nothing created no lease).
CREATE FUNCTION rb_lease_return(p_lease_id text) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_user text;
BEGIN
    SELECT user_id INTO v_user FROM credit_leases WHERE id = p_lease_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM credit_accounts WHERE user_id = v_user FOR UPDATE; -- lock order: account first
    RETURN rb_lease_close(p_lease_id);
END $$;

-- rb_lease_sweep: closes up to p_max open leases whose expiry has passed (their node stopped
-- renewing: it died or lost PostgreSQL), releasing their unused part. Leases locked by someone else
-- are skipped (next run). Returns how many it closed. Call it every few seconds from a
-- housekeeping loop (any node; concurrent sweepers are safe).
CREATE FUNCTION rb_lease_sweep(p_max integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    l record;
    v_n integer := 0;
BEGIN
    FOR l IN SELECT id, user_id FROM credit_leases
              WHERE closed_at IS NULL AND expires_at < now()
              ORDER BY user_id, id LIMIT p_max
    LOOP
        PERFORM 1 FROM credit_accounts WHERE user_id = l.user_id FOR UPDATE;
        PERFORM 1 FROM credit_leases WHERE id = l.id AND closed_at IS NULL
                                       AND expires_at < now() FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            PERFORM rb_lease_close(l.id);
            v_n := v_n + 1;
        END IF;
    END LOOP;
    RETURN v_n;
END $$;

-- Internal (rb_usage_post): adds one batch's totals to a lease.
CREATE FUNCTION rb_usage_flush_lease(p_lease_id text, p_used bigint, p_extra bigint,
                                     p_overrun bigint) RETURNS void
    LANGUAGE sql
    AS $$
    UPDATE credit_leases
       SET used_micro = used_micro + p_used, extra_micro = extra_micro + p_extra,
           overrun_micro = overrun_micro + p_overrun
     WHERE id = p_lease_id
$$;

-- Internal (rb_usage_post): adds one batch's totals to an account (locked) and burns its grants.
CREATE FUNCTION rb_usage_flush_account(p_user text, p_from_pending bigint, p_posted bigint,
                                       p_overrun bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF p_posted = 0 AND p_overrun = 0 THEN
        RETURN;
    END IF;
    UPDATE credit_accounts
       SET debits_pending = debits_pending - p_from_pending,
           debits_posted = debits_posted + p_posted, overrun_micro = overrun_micro + p_overrun
     WHERE user_id = p_user;
    IF p_posted > 0 THEN
        PERFORM rb_credit_burn(p_user, p_posted);
    END IF;
END $$;

-- rb_usage_post: one ledger batch of a gateway, in the caller's transaction. p_events is a JSON
-- array of usage records: the usage_events columns (request_id, user_id, workspace_id, subject,
-- route, provider, model, upstream_model, mode, status, http_status, input_uncached, cache_read,
-- cache_write_5m, cache_write_1h, output, reasoning, requests, cost_micro, billed, usage_source,
-- ttfb_ms, duration_ms, error_code, created_at) plus "lease_id" (the lease the request's hold was
-- carved from, or null). For each record:
--   * the usage_events row is inserted, ON CONFLICT (request_id) DO NOTHING;
--   * when billed and cost_micro > 0, a `usage` transfer 'usage:'||request_id is inserted,
--     ON CONFLICT DO NOTHING (a replayed batch bills nothing twice), and the account moves:
--       pending_micro = min(cost, the lease's unused reserve)   (0 without an open lease of the user)
--       extra         = min(cost - pending_micro, available)     (estimation error, free balance)
--       amount        = pending_micro + extra                    (posted)
--       overrun_micro = cost - amount                            (unpaid; recorded, never dropped)
--     debits_pending -= pending_micro, debits_posted += amount, the lease's used/extra/overrun grow.
-- Accounts are locked in user_id order first, so concurrent batches never deadlock; each account
-- and lease row is then updated once per batch with the batch's totals. Within a batch, events are
-- settled in (user_id, lease_id, request_id) order: that order decides which event overruns when the
-- balance runs out. Duplicated request ids (in the batch or already billed) return replayed. The whole
-- batch is one unit: a record violating a constraint fails it (the writer then retries record by
-- record and quarantines the bad one). Returns one row per billed record.
CREATE FUNCTION rb_usage_post(p_events jsonb)
    RETURNS TABLE (request_id text, user_id text, posted_micro bigint, overrun_micro bigint,
                   replayed boolean)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    e record;
    a credit_accounts;
    v_user text;            -- the account being processed (events come sorted by user, lease)
    v_avail bigint;         -- its free balance, as this batch has left it
    v_acc bigint[] := '{0,0,0}';  -- its totals: from pending, posted, overrun
    v_lkey text;            -- the lease group being processed ('' = no lease)
    v_lid text;             -- that lease, when it is this user's (NULL otherwise)
    v_lleft bigint;         -- its reserve, as this batch has left it
    v_lacc bigint[] := '{0,0,0}'; -- its totals: used, extra, overrun
    v_pending bigint;
    v_extra bigint;
    v_overrun bigint;
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
    -- Lock every account of the batch, in user_id order, before touching any of them.
    PERFORM 1 FROM credit_accounts
      WHERE user_id IN (SELECT x->>'user_id' FROM jsonb_array_elements(p_events) x)
      ORDER BY user_id FOR UPDATE;
    FOR e IN SELECT x->>'request_id' AS rid, x->>'user_id' AS uid,
                    coalesce(x->>'lease_id', '') AS lkey, (x->>'cost_micro')::bigint AS cost
               FROM jsonb_array_elements(p_events) x
              WHERE (x->>'billed')::boolean AND (x->>'cost_micro')::bigint > 0
              ORDER BY 2, 3, 1
    LOOP
        IF v_user IS DISTINCT FROM e.uid THEN -- next account: flush the previous one
            IF v_lid IS NOT NULL THEN
                PERFORM rb_usage_flush_lease(v_lid, v_lacc[1], v_lacc[2], v_lacc[3]);
            END IF;
            IF v_user IS NOT NULL THEN
                PERFORM rb_usage_flush_account(v_user, v_acc[1], v_acc[2], v_acc[3]);
            END IF;
            SELECT * INTO a FROM credit_accounts WHERE user_id = e.uid;
            IF NOT FOUND THEN -- never granted anything: all overruns, recorded all the same
                INSERT INTO credit_accounts (user_id) VALUES (e.uid) RETURNING * INTO a;
            END IF;
            v_user := e.uid;
            v_avail := a.credits_posted - a.debits_posted - a.debits_pending;
            v_acc := '{0,0,0}';
            v_lkey := NULL;
            v_lid := NULL;
        END IF;
        IF v_lkey IS DISTINCT FROM e.lkey THEN -- next lease of this account
            IF v_lid IS NOT NULL THEN
                PERFORM rb_usage_flush_lease(v_lid, v_lacc[1], v_lacc[2], v_lacc[3]);
            END IF;
            -- The lease counts only if it is this user's; a closed lease has no reserve left.
            SELECT l.id, CASE WHEN l.closed_at IS NULL THEN l.amount_micro - l.used_micro ELSE 0 END
              INTO v_lid, v_lleft
              FROM credit_leases l WHERE l.id = e.lkey AND l.user_id = e.uid FOR UPDATE;
            IF NOT FOUND THEN
                v_lid := NULL;
                v_lleft := 0;
            END IF;
            v_lkey := e.lkey;
            v_lacc := '{0,0,0}';
        END IF;
        v_pending := LEAST(e.cost, v_lleft);
        v_extra := LEAST(e.cost - v_pending, v_avail);
        v_overrun := e.cost - v_pending - v_extra;
        INSERT INTO credit_transfers (id, user_id, kind, amount_micro, request_id, lease_id,
                                      cost_micro, pending_micro, overrun_micro)
            VALUES ('usage:' || e.rid, e.uid, 'usage', v_pending + v_extra, e.rid, v_lid, e.cost,
                    v_pending, v_overrun)
            ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN -- billed before (a replayed batch): nothing moves
            RETURN QUERY SELECT t.request_id, t.user_id, t.amount_micro, t.overrun_micro, true
                           FROM credit_transfers t WHERE t.id = 'usage:' || e.rid;
            CONTINUE;
        END IF;
        v_lleft := v_lleft - v_pending;
        v_avail := v_avail - v_extra;
        v_acc := ARRAY[v_acc[1] + v_pending, v_acc[2] + v_pending + v_extra, v_acc[3] + v_overrun];
        v_lacc := ARRAY[v_lacc[1] + v_pending, v_lacc[2] + v_extra, v_lacc[3] + v_overrun];
        RETURN QUERY SELECT e.rid, e.uid, v_pending + v_extra, v_overrun, false;
    END LOOP;
    IF v_lid IS NOT NULL THEN
        PERFORM rb_usage_flush_lease(v_lid, v_lacc[1], v_lacc[2], v_lacc[3]);
    END IF;
    IF v_user IS NOT NULL THEN
        PERFORM rb_usage_flush_account(v_user, v_acc[1], v_acc[2], v_acc[3]);
    END IF;
END $$;
