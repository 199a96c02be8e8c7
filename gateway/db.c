#include "gateway/db.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/pg.h"

/* Room for one integer parameter as text. */
#define GW_DB_NUM_MAX 24

struct st_gw_db_t {
    PGconn *conn;
    uint64_t session;     /* bumped at each reconnect */
    uint64_t usage_rows;  /* usage records posted on this connection */
    uint64_t replan_rows; /* re-plan when usage_rows reaches this */
    int64_t replan_ms;    /* monotonic ms of the last re-plan */
};

static const char IDENTITY_CONFIG[] =
    " LEFT JOIN LATERAL (SELECT a.mode, a.provider, a.key_ciphertext, a.key_nonce, a.key_tag,"
    "   a.key_id FROM ai_configs a"
    "   WHERE (a.scope = 'workspace' AND a.workspace_id = %s)"
    "      OR (a.scope = 'user_default' AND a.user_id = %s)"
    "   ORDER BY (a.scope = 'workspace') DESC LIMIT 1) c ON true";

rb_err_t gw_db_connect(const char *url, int timeout_s, gw_db_t **out, char *errbuf, size_t cap)
{
    PGconn *c = NULL;
    rb_err_t err;

    RB_ASSERT(url != NULL && out != NULL);
    *out = NULL;
    if ((err = rb_pg_connect(url, timeout_s, &c, errbuf, cap)) != RB_OK)
        return err;
    *out = rb_calloc(1, sizeof(**out));
    (*out)->conn = c;
    return RB_OK;
}

void gw_db_close(gw_db_t *db)
{
    if (db == NULL)
        return;
    PQfinish(db->conn);
    free(db);
}

int gw_db_ensure(gw_db_t *db)
{
    if (PQstatus(db->conn) == CONNECTION_OK)
        return 1;
    PQreset(db->conn);
    if (PQstatus(db->conn) != CONNECTION_OK)
        return 0;
    db->session++;
    return 1;
}

uint64_t gw_db_session(const gw_db_t *db)
{
    return db->session;
}

int gw_db_socket(const gw_db_t *db)
{
    return PQsocket(db->conn);
}

/* Copies a binary text/bytea column; returns its length, or -1 when NULL or too long. */
static ssize_t get_bytes(const PGresult *r, int col, void *dst, size_t cap)
{
    size_t len;

    if (PQgetisnull(r, 0, col))
        return -1;
    len = (size_t)PQgetlength(r, 0, col);
    if (len >= cap)
        return -1;
    memcpy(dst, PQgetvalue(r, 0, col), len);
    return (ssize_t)len;
}

static void get_str(const PGresult *r, int col, char *dst, size_t cap)
{
    ssize_t n = get_bytes(r, col, dst, cap);
    dst[n < 0 ? 0 : n] = '\0';
}

static rb_err_t identity_row(const PGresult *r, gw_db_identity_t *out)
{
    char mode[16];

    memset(out, 0, sizeof(*out));
    get_str(r, 0, out->user_id, sizeof(out->user_id));
    get_str(r, 1, out->workspace_id, sizeof(out->workspace_id));
    get_str(r, 2, mode, sizeof(mode));
    out->byok = strcmp(mode, "byok") == 0;
    get_str(r, 3, out->provider, sizeof(out->provider));
    if (!PQgetisnull(r, 0, 4)) {
        ssize_t n = get_bytes(r, 4, out->key_ct, sizeof(out->key_ct));
        if (n <= 0 ||
            get_bytes(r, 5, out->key_nonce, sizeof(out->key_nonce) + 1) != RB_AES_NONCE_LEN ||
            get_bytes(r, 6, out->key_tag, sizeof(out->key_tag) + 1) != RB_AES_TAG_LEN)
            return RB_ERR_PARSE;
        out->key_ct_len = (size_t)n;
        get_str(r, 7, out->key_id, sizeof(out->key_id));
        out->has_key = 1;
    }
    RB_ASSERT(out->user_id[0] != '\0');
    return RB_OK;
}

rb_err_t gw_db_identity_lookup(gw_db_t *db, int workspace_token, const uint8_t hash[RB_SHA256_LEN],
                               gw_db_identity_t *out, char *errbuf, size_t cap)
{
    char sql[1536], cfg[768];
    const char *values[1] = {(const char *)hash};
    int lengths[1] = {RB_SHA256_LEN}, formats[1] = {1};
    PGresult *r = NULL;
    rb_err_t err = RB_OK;

    if (workspace_token) {
        snprintf(cfg, sizeof(cfg), IDENTITY_CONFIG, "w.id", "w.user_id");
        snprintf(
            sql, sizeof(sql),
            "SELECT w.user_id, w.id, COALESCE(c.mode, 'managed'), c.provider, c.key_ciphertext,"
            " c.key_nonce, c.key_tag, c.key_id FROM workspace_tokens t"
            " JOIN workspaces w ON w.id = t.workspace_id%s"
            " WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND w.status <> 'deleting'",
            cfg);
    } else {
        snprintf(cfg, sizeof(cfg), IDENTITY_CONFIG, "NULL", "k.user_id");
        snprintf(sql, sizeof(sql),
                 "SELECT k.user_id, NULL::text, COALESCE(c.mode, 'managed'), c.provider,"
                 " c.key_ciphertext, c.key_nonce, c.key_tag, c.key_id FROM api_keys k%s"
                 " WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
                 cfg);
    }
    r = PQexecParams(db->conn, sql, 1, NULL, values, lengths, formats, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rb_pg_error(db->conn, r, "identity lookup", errbuf, cap);
        err = RB_ERR_DB;
        goto Exit;
    }
    if (PQntuples(r) == 0) {
        err = RB_ERR_NOTFOUND;
        goto Exit;
    }
    if ((err = identity_row(r, out)) != RB_OK)
        snprintf(errbuf, cap, "identity lookup: malformed ai_configs key columns");
Exit:
    PQclear(r);
    return err;
}

rb_err_t gw_db_listen(gw_db_t *db, const char *channel, char *errbuf, size_t cap)
{
    char sql[128];
    PGresult *r;
    rb_err_t err = RB_OK;

    RB_ASSERT(strspn(channel, "abcdefghijklmnopqrstuvwxyz_") == strlen(channel));
    snprintf(sql, sizeof(sql), "LISTEN %s", channel);
    r = PQexec(db->conn, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rb_pg_error(db->conn, r, "listen", errbuf, cap);
        err = RB_ERR_DB;
    }
    PQclear(r);
    return err;
}

int gw_db_notifications(gw_db_t *db)
{
    return gw_db_notifications_each(db, NULL, NULL);
}

int gw_db_notifications_each(gw_db_t *db,
                             void (*on)(void *ctx, const char *channel, const char *payload),
                             void *ctx)
{
    PGnotify *n;
    int count = 0;

    if (PQstatus(db->conn) != CONNECTION_OK || !PQconsumeInput(db->conn))
        return -1;
    while ((n = PQnotifies(db->conn)) != NULL) {
        count++;
        if (on != NULL)
            on(ctx, n->relname, n->extra != NULL ? n->extra : "");
        PQfreemem(n);
    }
    return count;
}

/* Runs one statement with text parameters; on success *out holds the result (PQclear it). */
static rb_err_t query(gw_db_t *db, const char *what, const char *sql, int n, const char *const *v,
                      PGresult **out, char *errbuf, size_t cap)
{
    PGresult *r = PQexecParams(db->conn, sql, n, NULL, v, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        rb_pg_error(db->conn, r, what, errbuf, cap);
        PQclear(r);
        *out = NULL;
        return RB_ERR_DB;
    }
    *out = r;
    return RB_OK;
}

/* A text column of row 0 ("" when NULL; cut at cap). */
static void copy_col(const PGresult *r, int col, char *dst, size_t cap)
{
    snprintf(dst, cap, "%s", PQgetisnull(r, 0, col) ? "" : PQgetvalue(r, 0, col));
}

/* The first column of the first row as an int64 (0 when NULL or absent). */
static int64_t first_int64(const PGresult *r)
{
    if (PQntuples(r) < 1 || PQgetisnull(r, 0, 0))
        return 0;
    return strtoll(PQgetvalue(r, 0, 0), NULL, 10);
}

/* Ends the failed transaction of the connection, if it still has one. */
static void rollback(gw_db_t *db)
{
    if (PQstatus(db->conn) == CONNECTION_OK && PQtransactionStatus(db->conn) != PQTRANS_IDLE)
        PQclear(PQexec(db->conn, "ROLLBACK"));
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* PL/pgSQL keeps the plans of rb_usage_apply_staged for the session's life, made for the table
 * sizes of their first run, and only an ANALYZE replaces them. Planned on empty tables, they scan
 * what later needs an index probe: measured, a batch of 500 grew from 23 ms to 60 ms as
 * credit_transfers grew by 100k rows, against 16 ms for the same work freshly planned. So the
 * session's plans are dropped each time the rows it posted doubled (>= GW_DB_REPLAN_ROWS_MIN) and
 * at least every GW_DB_REPLAN_MS; re-planning costs ~1 ms. */
static void replan_if_grown(gw_db_t *db, size_t n)
{
    int64_t now = mono_ms();

    db->usage_rows += n;
    if (db->usage_rows < db->replan_rows && now - db->replan_ms < GW_DB_REPLAN_MS)
        return;
    PQclear(PQexec(db->conn, "DISCARD PLANS")); /* a failure only costs speed */
    db->replan_rows =
        db->usage_rows * 2 > GW_DB_REPLAN_ROWS_MIN ? db->usage_rows * 2 : GW_DB_REPLAN_ROWS_MIN;
    db->replan_ms = now;
}

/* 1 when r failed on the data itself: a data exception or an integrity violation (SQLSTATE class
 * 22 or 23); not for a lost connection, a read-only or full database, a timeout, ... */
static int data_error(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return state != NULL && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

rb_err_t gw_db_usage_post(gw_db_t *db, const char *rows, size_t len, size_t n, char *errbuf,
                          size_t cap)
{
    PGresult *r;
    int ok, data = 0;

    RB_ASSERT(rows != NULL && len > 0 && len <= INT_MAX && rows[len - 1] == '\n');
    /* the staging table is per session: rb_usage_stage_open makes it after a reconnect */
    r = PQexec(db->conn,
               "BEGIN; SELECT rb_usage_stage_open(); COPY pg_temp.rb_usage_stage FROM STDIN");
    ok = PQresultStatus(r) == PGRES_COPY_IN;
    if (!ok)
        rb_pg_error(db->conn, r, "usage copy", errbuf, cap);
    PQclear(r);
    if (ok && (PQputCopyData(db->conn, rows, (int)len) != 1 || PQputCopyEnd(db->conn, NULL) != 1)) {
        rb_pg_error(db->conn, NULL, "usage copy", errbuf, cap);
        ok = 0;
    }
    if (ok) {
        r = PQgetResult(db->conn); /* COPY's own result: a malformed row fails here */
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) {
            rb_pg_error(db->conn, r, "usage copy", errbuf, cap);
            data = data_error(r);
        }
        PQclear(r);
        while ((r = PQgetResult(db->conn)) != NULL)
            PQclear(r);
    }
    if (ok) {
        r = PQexec(db->conn, "SELECT cardinality(rb_usage_apply_staged())");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok) {
            rb_pg_error(db->conn, r, "usage post", errbuf, cap);
            data = data_error(r);
        }
        PQclear(r);
    }
    if (ok) {
        r = PQexec(db->conn, "COMMIT");
        ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
        if (!ok)
            rb_pg_error(db->conn, r, "usage commit", errbuf, cap);
        PQclear(r);
    }
    if (!ok) {
        rollback(db);
        return data ? RB_ERR_INVAL : RB_ERR_DB;
    }
    replan_if_grown(db, n);
    return RB_OK;
}

rb_err_t gw_db_lease_take(gw_db_t *db, const char *lease_id, const char *node, const char *user,
                          int64_t amount, int ttl_s, int64_t min, int64_t *got, char *errbuf,
                          size_t cap)
{
    char a[GW_DB_NUM_MAX], t[GW_DB_NUM_MAX], m[GW_DB_NUM_MAX];
    const char *v[6] = {lease_id, node, user, a, t, m};
    PGresult *r = NULL;
    rb_err_t err;

    RB_ASSERT(amount > 0 && min > 0 && min <= amount && ttl_s > 0);
    snprintf(a, sizeof(a), "%" PRId64, amount);
    snprintf(t, sizeof(t), "%d", ttl_s);
    snprintf(m, sizeof(m), "%" PRId64, min);
    err =
        query(db, "lease take", "SELECT rb_lease_take($1, $2, $3, $4::bigint, $5::int, $6::bigint)",
              6, v, &r, errbuf, cap);
    if (err == RB_OK)
        *got = first_int64(r);
    PQclear(r);
    RB_ASSERT(err != RB_OK || (*got >= 0 && *got <= amount));
    return err;
}

rb_err_t gw_db_lease_renew(gw_db_t *db, const char *const *ids, size_t n, int ttl_s, int *dead,
                           char *errbuf, size_t cap)
{
    char t[GW_DB_NUM_MAX];
    const char *v[2] = {NULL, t};
    PGresult *r = NULL;
    rb_buf_t list;
    rb_err_t err;

    rb_buf_init(&list, 0);
    for (size_t i = 0; i < n; i++) {
        RB_ASSERT(ids[i][0] != '\0' && strchr(ids[i], ' ') == NULL);
        if (i > 0)
            rb_buf_puts(&list, " ");
        rb_buf_puts(&list, ids[i]);
        dead[i] = 0;
    }
    v[0] = rb_buf_cstr(&list);
    snprintf(t, sizeof(t), "%d", ttl_s);
    /* the positions (from 1) of the leases no longer open, renewed in the order usage batches
     * lock leases (user, id; schema/0007): in any other order a renewal and this node's batch
     * could each hold a lease the other waits for (a deadlock). OFFSET 0 keeps the renewing
     * filter above the sort (PostgreSQL pushes it down into the unnest otherwise). */
    err = query(db, "lease renew",
                "SELECT s.i FROM (SELECT t.id, t.i FROM unnest(string_to_array($1, ' ')) WITH "
                "ORDINALITY AS t(id, i) LEFT JOIN credit_leases l ON l.id = t.id ORDER BY "
                "l.user_id, t.id OFFSET 0) s WHERE NOT rb_lease_renew(s.id, $2::int)",
                2, v, &r, errbuf, cap);
    for (int row = 0; err == RB_OK && row < PQntuples(r); row++) {
        long long i = strtoll(PQgetvalue(r, row, 0), NULL, 10);
        RB_ASSERT(i >= 1 && (size_t)i <= n);
        dead[i - 1] = 1;
    }
    PQclear(r);
    rb_buf_free(&list);
    return err;
}

rb_err_t gw_db_lease_return(gw_db_t *db, const char *lease_id, int64_t *released, char *errbuf,
                            size_t cap)
{
    const char *v[1] = {lease_id};
    PGresult *r = NULL;
    rb_err_t err;

    err = query(db, "lease return", "SELECT rb_lease_return($1)", 1, v, &r, errbuf, cap);
    if (err == RB_OK)
        *released = first_int64(r);
    PQclear(r);
    return err;
}

rb_err_t gw_db_node_heartbeat(gw_db_t *db, const char *id, const char *hostname, int ttl_s,
                              char *errbuf, size_t cap)
{
    char t[GW_DB_NUM_MAX];
    const char *v[4] = {id, hostname, RB_VERSION, t};
    PGresult *r = NULL;
    rb_err_t err;

    snprintf(t, sizeof(t), "%d", ttl_s);
    err = query(db, "node heartbeat",
                "INSERT INTO nodes (id, hostname, kind, version, lease_expires_at) VALUES ($1, $2,"
                " 'gateway', $3, now() + make_interval(secs => $4::int)) ON CONFLICT (id) DO"
                " UPDATE SET heartbeat_at = now(), lease_expires_at = EXCLUDED.lease_expires_at",
                4, v, &r, errbuf, cap);
    PQclear(r);
    return err;
}

/* The overrides in column order; the spend windows are UTC (like control/limits.c). */
static const char LIMITS_SQL[] =
    "SELECT u.plan, l.credits_per_day, l.credits_per_month, l.rpm, l.tpm, l.max_concurrent,"
    " l.allowed_models IS NOT NULL, array_to_string(l.allowed_models, E'\\n'),"
    " s.today, s.month, (now() AT TIME ZONE 'UTC')::date - DATE '1970-01-01',"
    " (extract(year FROM now() AT TIME ZONE 'UTC') * 12"
    " + extract(month FROM now() AT TIME ZONE 'UTC') - 1)::bigint"
    " FROM users u LEFT JOIN user_limits l ON l.user_id = u.id,"
    " LATERAL " RB_PG_USAGE_SPEND_SQL " s WHERE u.id = $1";

static int64_t opt_int64(const PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? -1 : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

rb_err_t gw_db_limits_load(gw_db_t *db, const char *user, gw_db_limits_t *out, char *errbuf,
                           size_t cap)
{
    const char *v[1] = {user};
    PGresult *r = NULL;
    rb_err_t err;

    RB_ASSERT(user != NULL && out != NULL);
    if ((err = query(db, "limits load", LIMITS_SQL, 1, v, &r, errbuf, cap)) != RB_OK)
        return err;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return RB_ERR_NOTFOUND;
    }
    memset(out, 0, offsetof(gw_db_limits_t, models));
    copy_col(r, 0, out->plan, sizeof(out->plan));
    out->credits_per_day = opt_int64(r, 1);
    out->credits_per_month = opt_int64(r, 2);
    out->rpm = opt_int64(r, 3);
    out->tpm = opt_int64(r, 4);
    out->max_concurrent = opt_int64(r, 5);
    out->has_models = PQgetvalue(r, 0, 6)[0] == 't';
    copy_col(r, 7, out->models, sizeof(out->models));
    out->day_micro = opt_int64(r, 8);
    out->month_micro = opt_int64(r, 9);
    out->day = opt_int64(r, 10);
    out->month = opt_int64(r, 11);
    PQclear(r);
    RB_ASSERT(out->day_micro >= 0 && out->month_micro >= 0);
    return RB_OK;
}

rb_err_t gw_db_subject_spent(gw_db_t *db, const char *user, const char *subject,
                             int64_t since_unix_s, int64_t *spent, char *errbuf, size_t cap)
{
    char t[GW_DB_NUM_MAX];
    const char *v[3] = {user, subject, t};
    PGresult *r = NULL;
    rb_err_t err;

    snprintf(t, sizeof(t), "%" PRId64, since_unix_s);
    err = query(db, "subject spend",
                "SELECT coalesce(sum(cost_micro), 0) FROM usage_events WHERE user_id = $1 AND"
                " subject = $2 AND billed AND created_at >= to_timestamp($3::bigint)",
                3, v, &r, errbuf, cap);
    if (err == RB_OK)
        *spent = first_int64(r);
    PQclear(r);
    return err;
}
