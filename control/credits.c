#include "control/credits.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"

/* RFC 3339 UTC, seconds precision, as every API timestamp. */
#define TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
/* The same with microseconds: exact, for passing a resolved time back as a parameter. */
#define TS_US(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

enum {
    MICRO_PER_CREDIT = 1000000,
    MICRO_DECIMALS = 6,
    CURSOR_MAX = 24,      /* "t1" + 16 hex digits */
    LIMIT_PARAM_MAX = 8,  /* bytes of ?limit= */
    GROUP_BY_MAX = 16,    /* bytes of ?group_by= */
    TRANSFER_ID_MAX = 200 /* credit_transfers.id */
};

void ctl_credits_format(int64_t micro, char *out, size_t cap)
{
    uint64_t mag = micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;

    RB_ASSERT(out != NULL && cap >= 24);
    snprintf(out, cap, "%s%" PRIu64 ".%06" PRIu64, micro < 0 ? "-" : "", mag / MICRO_PER_CREDIT,
             mag % MICRO_PER_CREDIT);
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int ctl_credits_parse(const char *s, size_t len, int64_t *micro)
{
    int64_t whole = 0, frac = 0, total;
    size_t i = 0, decimals = 0;

    RB_ASSERT(s != NULL && micro != NULL);
    for (; i < len && is_digit(s[i]); i++)
        if (__builtin_mul_overflow(whole, 10, &whole) ||
            __builtin_add_overflow(whole, s[i] - '0', &whole))
            return -1;
    if (i == 0)
        return -1;
    if (i < len) {
        if (s[i++] != '.')
            return -1;
        for (; i < len && is_digit(s[i]); i++, decimals++) {
            if (decimals == MICRO_DECIMALS)
                return -1; /* finer than a micro-credit */
            frac = frac * 10 + (s[i] - '0');
        }
        if (decimals == 0 || i != len)
            return -1;
    }
    for (; decimals < MICRO_DECIMALS; decimals++)
        frac *= 10;
    if (__builtin_mul_overflow(whole, (int64_t)MICRO_PER_CREDIT, &total) ||
        __builtin_add_overflow(total, frac, &total))
        return -1;
    RB_ASSERT(total >= 0);
    *micro = total;
    return 0;
}

int ctl_time_param_valid(const char *s)
{
    static const char shape[] = "dddd-dd-dd";
    size_t len = strlen(s);

    if (len < 10 || len > CTL_TIME_PARAM_MAX)
        return 0;
    for (size_t i = 0; i < 10; i++)
        if (shape[i] == 'd' ? !is_digit(s[i]) : s[i] != shape[i])
            return 0;
    if (len == 10)
        return 1;
    /* No words PostgreSQL would also accept ("now", "epoch", "infinity"): only time characters. */
    return (s[10] == 'T' || s[10] == 't' || s[10] == ' ') &&
           strspn(s + 11, "0123456789:.+-Zz") == len - 11;
}

int ctl_user_require(ctl_req_t *r, const char *user_id)
{
    const char *params[1] = {user_id};
    PGresult *res = NULL;
    rb_err_t err = ctl_db_query(r->db, "SELECT 1 FROM users WHERE id = $1", 1, params, &res);
    int found;

    if (err != RB_OK) {
        ctl_error_db(r, err);
        return -1;
    }
    found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
        return -1;
    }
    return 0;
}

/* Writes "<name>": "12.500000" and "<name>_micro": 12500000. */
static void write_amount(rb_jw_t *w, const char *name, int64_t micro)
{
    char text[CTL_CREDITS_TEXT_MAX], key[64];

    ctl_credits_format(micro, text, sizeof(text));
    rb_jw_key(w, name);
    rb_jw_str(w, text);
    snprintf(key, sizeof(key), "%s_micro", name);
    rb_jw_key(w, key);
    rb_jw_int64(w, micro);
}

static void reply_buf(ctl_req_t *r, int status, rb_buf_t *b)
{
    if (b->overflow)
        ctl_error(r, 500, "internal", "reply too large", NULL);
    else
        ctl_reply(r, status, b);
    rb_buf_free(b);
}

void ctl_credits_get(ctl_req_t *r)
{
    char uid[CTL_PARAM_LEN_MAX];
    const char *params[1] = {uid};
    PGresult *res = NULL;
    int64_t v[4];
    rb_buf_t b;
    rb_jw_t w;
    rb_err_t err;

    if (ctl_resolve_user(r, r->params[0], uid, sizeof(uid)) != 0)
        return;
    /* Expired grants leave the balance before it is shown (idempotent housekeeping). */
    if ((err = ctl_db_query(r->db, "SELECT rb_grant_expire($1)", 1, params, NULL)) != RB_OK ||
        (err =
             ctl_db_query(r->db,
                          "SELECT coalesce(a.credits_posted, 0), coalesce(a.debits_posted, 0), "
                          "coalesce(a.debits_pending, 0), coalesce(a.overrun_micro, 0) FROM "
                          "users u LEFT JOIN credit_accounts a ON a.user_id = u.id WHERE u.id = $1",
                          1, params, &res)) != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
        return;
    }
    for (int i = 0; i < 4; i++)
        v[i] = strtoll(PQgetvalue(res, 0, i), NULL, 10);
    PQclear(res);
    /* Pairs with credit_accounts_no_overdraft. */
    RB_ASSERT(v[0] >= 0 && v[1] >= 0 && v[2] >= 0 && v[1] + v[2] <= v[0]);
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "user_id", uid);
    write_amount(&w, "total", v[0]);
    write_amount(&w, "used", v[1]);
    write_amount(&w, "reserved", v[2]);
    write_amount(&w, "remaining", v[0] - v[1] - v[2]);
    write_amount(&w, "overrun", v[3]);
    rb_jw_obj_end(&w);
    reply_buf(r, 200, &b);
}

/* ---- grants ---- */

typedef struct st_grant_in_t {
    char id[TRANSFER_ID_MAX + 1]; /* "grant:" + idempotency_key */
    char amount[24];
    char category[8];
    char expires[CTL_TIME_PARAM_MAX + 1];
    char note[CTL_GRANT_NOTE_MAX + 1];
    int has_expires, has_note;
} grant_in_t;

static int bad_request(ctl_req_t *r, const char *message)
{
    ctl_error(r, 400, "invalid_request", message, NULL);
    return -1;
}

/* amount_credits (number or decimal string) or amount_micro (integer), exactly one, > 0. */
static int parse_amount(ctl_req_t *r, grant_in_t *g)
{
    int vc = rb_json_member(r->body, 0, "amount_credits");
    int vm = rb_json_member(r->body, 0, "amount_micro");
    int64_t micro = -1;
    char text[40];
    size_t len = 0;

    if ((vc >= 0) == (vm >= 0))
        return bad_request(r, "give exactly one of amount_credits and amount_micro");
    if (vm >= 0) {
        if (rb_json_int64(r->body, vm, &micro) != 0)
            micro = -1;
    } else if (rb_json_type(r->body, vc) == RB_JSON_STRING) {
        if (rb_json_str(r->body, vc, text, sizeof(text), &len) != RB_OK ||
            ctl_credits_parse(text, len, &micro) != 0)
            micro = -1;
    } else if (rb_json_type(r->body, vc) == RB_JSON_NUMBER) {
        const char *raw = rb_json_raw(r->body, vc, &len);
        if (ctl_credits_parse(raw, len, &micro) != 0)
            micro = -1;
    }
    if (micro <= 0)
        return bad_request(r, "the amount must be a positive number of credits with at most 6 "
                              "decimals (amount_credits) or a positive integer (amount_micro)");
    if (micro > CTL_GRANT_MICRO_MAX)
        return bad_request(r, "one grant is at most 1000000000 credits");
    snprintf(g->amount, sizeof(g->amount), "%" PRId64, micro);
    return 0;
}

/* An optional string member: 0 absent or null, 1 present, -1 (and a 400) when malformed. */
static int opt_str(ctl_req_t *r, const char *key, char *buf, size_t cap, const char *message)
{
    int v = rb_json_member(r->body, 0, key);

    size_t len;

    if (v < 0 || rb_json_type(r->body, v) == RB_JSON_NULL)
        return 0;
    if (rb_json_str(r->body, v, buf, cap, &len) != RB_OK || strlen(buf) != len ||
        !ctl_text_valid(buf))
        return bad_request(r, message);
    return 1;
}

static int parse_grant(ctl_req_t *r, grant_in_t *g)
{
    static const char *const allowed[] = {"amount_credits", "amount_micro", "idempotency_key",
                                          "category",       "expires_at",   "note"};
    char key[CTL_IDEMPOTENCY_KEY_MAX + 2];

    if (CTL_REJECT_UNKNOWN(r, allowed) != 0 || parse_amount(r, g) != 0)
        return -1;
    if (rb_json_get_str(r->body, 0, "idempotency_key", key, sizeof(key)) != RB_OK ||
        key[0] == '\0' || strlen(key) > CTL_IDEMPOTENCY_KEY_MAX ||
        strspn(key, "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                    "abcdefghijklmnopqrstuvwxyz{|}~") != strlen(key))
        return bad_request(r, "idempotency_key is required: 1 to 128 printable ASCII characters, "
                              "no spaces");
    snprintf(g->id, sizeof(g->id), "grant:%s", key);
    if (rb_json_get_str(r->body, 0, "category", g->category, sizeof(g->category)) != RB_OK ||
        (strcmp(g->category, "paid") != 0 && strcmp(g->category, "promo") != 0))
        return bad_request(r, "category must be \"paid\" or \"promo\"");
    g->has_expires = opt_str(r, "expires_at", g->expires, sizeof(g->expires),
                             "expires_at must be an RFC 3339 timestamp");
    if (g->has_expires < 0)
        return -1;
    if (g->has_expires && !ctl_time_param_valid(g->expires))
        return bad_request(r, "expires_at must be an RFC 3339 timestamp");
    g->has_note = opt_str(r, "note", g->note, sizeof(g->note),
                          "note must be a string of at most 1024 bytes without control characters");
    return g->has_note < 0 ? -1 : 0;
}

static void reply_grant(ctl_req_t *r, int status, PGresult *res)
{
    rb_buf_t b;
    rb_jw_t w;
    const char *id = PQgetvalue(res, 0, 0);

    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "grant");
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "id", id);
    rb_jw_kstr(&w, "idempotency_key", id + strlen("grant:"));
    rb_jw_kstr(&w, "user_id", PQgetvalue(res, 0, 1));
    write_amount(&w, "amount", strtoll(PQgetvalue(res, 0, 2), NULL, 10));
    rb_jw_kstr(&w, "category", PQgetvalue(res, 0, 3));
    rb_jw_key(&w, "expires_at");
    if (PQgetisnull(res, 0, 4))
        rb_jw_null(&w);
    else
        rb_jw_str(&w, PQgetvalue(res, 0, 4));
    rb_jw_key(&w, "note");
    if (PQgetisnull(res, 0, 5))
        rb_jw_null(&w);
    else
        rb_jw_str(&w, PQgetvalue(res, 0, 5));
    rb_jw_kstr(&w, "created_at", PQgetvalue(res, 0, 6));
    rb_jw_obj_end(&w);
    rb_jw_obj_end(&w);
    reply_buf(r, status, &b);
}

void ctl_credits_grant(ctl_req_t *r)
{
    grant_in_t g = {0};
    char uid[CTL_PARAM_LEN_MAX];
    const char *params[6] = {g.id, uid, g.amount, g.category, NULL, NULL};
    PGresult *res = NULL;
    rb_err_t err;

    if (!r->auth.admin) {
        ctl_error(r, 403, "forbidden", "granting credits needs an admin key", NULL);
        return;
    }
    if (ctl_resolve_user(r, r->params[0], uid, sizeof(uid)) != 0 || parse_grant(r, &g) != 0)
        return;
    params[4] = g.has_expires ? g.expires : NULL;
    params[5] = g.has_note ? g.note : NULL;
    err = ctl_db_query(
        r->db,
        "SELECT g.id, g.user_id, g.amount_micro, g.category, " TS("g.expires_at") ", g.note, " TS(
            "g.created_at") ", g.replayed FROM rb_grant($1, $2, "
                            "$3::bigint, $4, $5::timestamptz, $6) g",
        6, params, &res);
    if (err == RB_OK) {
        reply_grant(r, PQgetvalue(res, 0, 7)[0] == 't' ? 200 : 201, res);
        PQclear(res);
    } else if (strcmp(r->db->sqlstate, "RB001") == 0) {
        ctl_error(r, 409, "idempotency_conflict",
                  "this idempotency_key was used for a different grant", NULL);
    } else if (strcmp(r->db->sqlstate, "23503") == 0) {
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
    } else if (strcmp(r->db->sqlstate, "22003") == 0) { /* numeric_value_out_of_range */
        ctl_error(r, 400, "balance_limit",
                  "the grant would take the user's credits past the largest balance kept", NULL);
    } else if (strncmp(r->db->sqlstate, "22", 2) == 0) {
        ctl_error(r, 400, "invalid_request",
                  "expires_at must be a valid RFC 3339 timestamp in the future", NULL);
    } else {
        ctl_error_db(r, err);
    }
}

/* ---- ledger ---- */

/* Cursor: "t1" + the hex seq of the last item shown; opaque to clients. 0 when absent, -1 bad. */
static int parse_cursor(ctl_req_t *r, char *seq, size_t cap)
{
    char c[CURSOR_MAX + 1];
    char *end = NULL;
    unsigned long long v;
    int got = rb_http_query(r->req, "cursor", c, sizeof(c));

    if (got == 0 || (got == 1 && c[0] == '\0'))
        return 0;
    if (got < 0 || strncmp(c, "t1", 2) != 0 || c[2] == '\0' ||
        strspn(c + 2, "0123456789abcdef") != strlen(c + 2) || strlen(c + 2) > 16)
        return -1;
    v = strtoull(c + 2, &end, 16);
    if (v == 0 || v > INT64_MAX)
        return -1;
    snprintf(seq, cap, "%llu", v);
    return 1;
}

/* ?limit=: 1..max, default dflt; -1 when malformed. */
static int64_t parse_limit(ctl_req_t *r, int64_t dflt, int64_t max)
{
    char l[LIMIT_PARAM_MAX + 1];
    int got = rb_http_query(r->req, "limit", l, sizeof(l));
    int64_t v = 0;

    if (got == 0)
        return dflt;
    if (got < 0 || l[0] == '\0' || strspn(l, "0123456789") != strlen(l))
        return -1;
    v = strtoll(l, NULL, 10);
    return v >= 1 && v <= max ? v : -1;
}

static void write_items_page(ctl_req_t *r, PGresult *res, int64_t limit)
{
    int n = PQntuples(res), shown = n > limit ? (int)limit : n;
    rb_buf_t b;
    rb_jw_t w;

    char cur[CURSOR_MAX + 1] = "";

    ctl_list_begin(&w, &b);
    for (int i = 0; i < shown; i++)
        rb_jw_raw(&w, PQgetvalue(res, i, 1), strlen(PQgetvalue(res, i, 1)));
    if (n > limit)
        snprintf(cur, sizeof(cur), "t1%llx", strtoull(PQgetvalue(res, shown - 1, 0), NULL, 10));
    ctl_list_end(r, &w, &b, n > limit ? cur : NULL);
}

void ctl_credits_ledger(ctl_req_t *r)
{
    char uid[CTL_PARAM_LEN_MAX], seq[24], lim[24];
    const char *params[3] = {uid, NULL, lim};
    PGresult *res = NULL;
    int64_t limit;
    int cur;
    rb_err_t err;

    if (ctl_resolve_user(r, r->params[0], uid, sizeof(uid)) != 0)
        return;
    if ((cur = parse_cursor(r, seq, sizeof(seq))) < 0) {
        ctl_error(r, 400, "invalid_cursor", "cursor must be a next_cursor from this API", NULL);
        return;
    }
    if ((limit = parse_limit(r, CTL_LEDGER_PAGE_DEFAULT, CTL_LEDGER_PAGE_MAX)) < 0) {
        bad_request(r, "limit must be an integer from 1 to 200");
        return;
    }
    if (ctl_user_require(r, uid) != 0)
        return;
    params[1] = cur ? seq : NULL;
    snprintf(lim, sizeof(lim), "%" PRId64, limit + 1); /* one more tells whether a page follows */
    err = ctl_db_query(
        r->db,
        "SELECT seq, json_build_object('id', id, 'kind', kind, 'amount', "
        "rb_credits_text(amount_micro), 'amount_micro', amount_micro, 'category', category, "
        "'expires_at', " TS(
            "expires_at") ", 'request_id', request_id, 'lease_id', lease_id, "
                          "'pending_id', pending_id, 'grant_id', grant_id, 'cost_micro', "
                          "cost_micro, "
                          "'pending_micro', pending_micro, 'overrun_micro', overrun_micro, 'note', "
                          "note, "
                          "'created_at', " TS(
                              "created_at") ")::text FROM credit_transfers WHERE user_id = $1 AND "
                                            "($2::bigint IS NULL OR seq < $2::bigint) ORDER BY seq "
                                            "DESC LIMIT $3::int",
        3, params, &res);
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    write_items_page(r, res, limit);
    PQclear(res);
}

/* ---- ai-usage ---- */

typedef struct st_window_t {
    char from[CTL_TIME_PARAM_MAX + 1], to[CTL_TIME_PARAM_MAX + 1];         /* exact, for SQL */
    char from_out[CTL_TIME_PARAM_MAX + 1], to_out[CTL_TIME_PARAM_MAX + 1]; /* for the reply */
} window_t;

/* Resolves ?from= and ?to= (RFC 3339, or dates: `to` as a date includes that whole day; defaults
 * to now and to - 30 days) with PostgreSQL's parser; sends 400 and returns -1 when bad. */
static int resolve_window(ctl_req_t *r, window_t *win)
{
    char from[CTL_TIME_PARAM_MAX + 1], to[CTL_TIME_PARAM_MAX + 1];
    const char *params[4] = {NULL, NULL, NULL, NULL};
    char days[16], dflt[16];
    PGresult *res = NULL;
    int gf = rb_http_query(r->req, "from", from, sizeof(from));
    int gt = rb_http_query(r->req, "to", to, sizeof(to));
    rb_err_t err;
    int ok;

    if (gf < 0 || gt < 0 || (gf == 1 && !ctl_time_param_valid(from)) ||
        (gt == 1 && !ctl_time_param_valid(to)))
        return bad_request(r, "from and to must be RFC 3339 timestamps or YYYY-MM-DD dates");
    params[0] = gf == 1 ? from : NULL;
    params[1] = gt == 1 ? to : NULL;
    snprintf(days, sizeof(days), "%d", CTL_USAGE_RANGE_DAYS_MAX);
    params[2] = days;
    snprintf(dflt, sizeof(dflt), "%d", CTL_USAGE_RANGE_DAYS_DEFAULT);
    params[3] = dflt;
    err = ctl_db_query(
        r->db,
        "SELECT " TS_US("f") ", " TS_US("t") ", " TS("f") ", " TS(
            "t") ", t > f AND t - f <= "
                 "make_interval(days => $3::int) FROM (SELECT coalesce($1::timestamptz, t - "
                 "make_interval(days => $4::int)) AS f, t FROM (SELECT "
                 "CASE WHEN $2::text IS NULL THEN now() WHEN $2::text ~ "
                 "'^[0-9]{4}-[0-9]{2}-[0-9]{2}$' "
                 "THEN ($2::text::date + 1)::timestamptz ELSE $2::text::timestamptz END AS t) x) y",
        4, params, &res);
    if (err == RB_ERR_INVAL)
        return bad_request(r, "from and to must be RFC 3339 timestamps or YYYY-MM-DD dates");
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return -1;
    }
    snprintf(win->from, sizeof(win->from), "%s", PQgetvalue(res, 0, 0));
    snprintf(win->to, sizeof(win->to), "%s", PQgetvalue(res, 0, 1));
    snprintf(win->from_out, sizeof(win->from_out), "%s", PQgetvalue(res, 0, 2));
    snprintf(win->to_out, sizeof(win->to_out), "%s", PQgetvalue(res, 0, 3));
    ok = PQgetvalue(res, 0, 4)[0] == 't';
    PQclear(res);
    if (!ok)
        return bad_request(r, "from must be before to, at most 400 days apart");
    return 0;
}

/* The group key expression of each ?group_by= (a fixed list: nothing from the client reaches SQL).
 */
static const char *group_key(const char *group_by)
{
    static const struct {
        const char *name, *expr;
    } keys[] = {{"day", "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"},
                {"workspace", "workspace_id"},
                {"model", "model"},
                {"subject", "subject"}};

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(group_by, keys[i].name) == 0)
            return keys[i].expr;
    return NULL;
}

/* The sums of one bucket (agg "" on a grouped row, "sum" for the total), as json_build_object args.
 */
static void usage_fields(rb_buf_t *q, const char *agg)
{
    static const struct {
        const char *name, *col;
    } f[] = {{"requests", "n"},          {"credits_micro", "c"},   {"cost_micro", "cost"},
             {"input_tokens", "it"},     {"output_tokens", "o"},   {"input_uncached", "iu"},
             {"cache_read", "cr"},       {"cache_write_5m", "c5"}, {"cache_write_1h", "c1"},
             {"reasoning_tokens", "re"}, {"tool_requests", "tr"}};

    rb_buf_printf(q, "'credits', rb_credits_text(coalesce(%s(c), 0)::bigint)", agg);
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        rb_buf_printf(q, ", '%s', coalesce(%s(%s), 0)::bigint", f[i].name, agg, f[i].col);
}

static rb_err_t query_usage(ctl_req_t *r, const char *uid, const window_t *win, const char *key,
                            PGresult **res)
{
    const char *params[3] = {uid, win->from, win->to};
    rb_buf_t q;
    rb_err_t err;

    rb_buf_init(&q, 0);
    rb_buf_puts(&q, "SELECT coalesce(json_agg(json_build_object('key', k, ");
    usage_fields(&q, "");
    rb_buf_puts(&q, ") ORDER BY k NULLS FIRST), '[]')::text, json_build_object(");
    usage_fields(&q, "sum");
    rb_buf_printf(&q,
                  ")::text FROM (SELECT %s AS k, count(*) AS n, sum(cost_micro) FILTER (WHERE "
                  "billed) AS c, sum(cost_micro) AS cost, sum(input_uncached + cache_read + "
                  "cache_write_5m + cache_write_1h) AS it, sum(output) AS o, sum(input_uncached) "
                  "AS iu, sum(cache_read) AS cr, sum(cache_write_5m) AS c5, sum(cache_write_1h) "
                  "AS c1, sum(reasoning) AS re, sum(requests) AS tr FROM usage_events WHERE "
                  "user_id = $1 AND created_at >= $2::timestamptz AND created_at < "
                  "$3::timestamptz GROUP BY 1) s",
                  key);
    err = ctl_db_query(r->db, rb_buf_cstr(&q), 3, params, res);
    rb_buf_free(&q);
    return err;
}

void ctl_credits_usage(ctl_req_t *r)
{
    char uid[CTL_PARAM_LEN_MAX], group_by[GROUP_BY_MAX + 1] = "day";
    const char *key;
    window_t win;
    PGresult *res = NULL;
    rb_buf_t b;
    rb_jw_t w;
    rb_err_t err;

    if (ctl_resolve_user(r, r->params[0], uid, sizeof(uid)) != 0)
        return;
    if (rb_http_query(r->req, "group_by", group_by, sizeof(group_by)) < 0 ||
        (key = group_key(group_by)) == NULL) {
        bad_request(r, "group_by must be day, workspace, model or subject");
        return;
    }
    if (resolve_window(r, &win) != 0 || ctl_user_require(r, uid) != 0)
        return;
    if ((err = query_usage(r, uid, &win, key, &res)) != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "user_id", uid);
    rb_jw_kstr(&w, "group_by", group_by);
    rb_jw_kstr(&w, "from", win.from_out);
    rb_jw_kstr(&w, "to", win.to_out);
    rb_jw_key(&w, "items");
    rb_jw_raw(&w, PQgetvalue(res, 0, 0), strlen(PQgetvalue(res, 0, 0)));
    rb_jw_key(&w, "total");
    rb_jw_raw(&w, PQgetvalue(res, 0, 1), strlen(PQgetvalue(res, 0, 1)));
    rb_jw_obj_end(&w);
    PQclear(res);
    reply_buf(r, 200, &b);
}

void ctl_credits_request(ctl_req_t *r)
{
    const char *params[3] = {r->params[0], r->auth.user_id, r->auth.admin ? "t" : "f"};
    PGresult *res = NULL;
    rb_buf_t b;
    rb_err_t err;

    err = ctl_db_query(
        r->db,
        "SELECT ((to_jsonb(u) - 'created_at') || jsonb_build_object('created_at', " TS(
            "u.created_at") ", 'cost_credits', rb_credits_text(u.cost_micro), 'ledger', (SELECT "
                            "jsonb_build_object('transfer_id', t.id, 'posted', "
                            "rb_credits_text(t.amount_micro), "
                            "'posted_micro', t.amount_micro, 'overrun_micro', t.overrun_micro, "
                            "'lease_id', t.lease_id) "
                            "FROM credit_transfers t WHERE t.id = 'usage:' || "
                            "u.request_id)))::text FROM usage_events "
                            "u WHERE u.request_id = $1 AND (u.user_id = $2 OR $3::boolean)",
        3, params, &res);
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    if (PQntuples(res) == 0) { /* someone else's request is indistinguishable from none */
        PQclear(res);
        ctl_error(r, 404, "request_not_found", "no such AI request", NULL);
        return;
    }
    rb_buf_init(&b, 0);
    rb_buf_puts(&b, PQgetvalue(res, 0, 0));
    PQclear(res);
    reply_buf(r, 200, &b);
}
