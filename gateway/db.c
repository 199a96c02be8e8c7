#include "gateway/db.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <string.h>

#include "common/log.h"
#include "common/pg.h"

/* Columns of usage_events the recorder writes. */
#define GW_DB_USAGE_PARAMS 25
/* Room for one integer parameter as text. */
#define GW_DB_NUM_MAX 24
/* How long one flush of a pipeline may wait for the socket (ms). */
#define GW_DB_POLL_MS 1000

struct st_gw_db_t {
    PGconn *conn;
    int usage_prepared;
};

static const char IDENTITY_CONFIG[] =
    " LEFT JOIN LATERAL (SELECT a.mode, a.provider, a.key_ciphertext, a.key_nonce, a.key_tag,"
    "   a.key_id FROM ai_configs a"
    "   WHERE (a.scope = 'workspace' AND a.workspace_id = %s)"
    "      OR (a.scope = 'user_default' AND a.user_id = %s)"
    "   ORDER BY (a.scope = 'workspace') DESC LIMIT 1) c ON true";

static const char USAGE_INSERT[] =
    "INSERT INTO usage_events (request_id, user_id, workspace_id, subject, route, provider, model,"
    " upstream_model, mode, status, http_status, input_uncached, cache_read, cache_write_5m,"
    " cache_write_1h, output, reasoning, requests, cost_micro, billed, usage_source, ttfb_ms,"
    " duration_ms, error_code, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
    " $11::int, $12::bigint, $13::bigint, $14::bigint, $15::bigint, $16::bigint, $17::bigint,"
    " $18::bigint, $19::bigint, $20::boolean, $21, $22::int, $23::int, $24,"
    " to_timestamp($25::bigint / 1000.0)) ON CONFLICT (request_id) DO NOTHING";

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

rb_err_t gw_db_migrate(gw_db_t *db, const char *dir, int *applied_out, char *errbuf, size_t cap)
{
    return rb_pg_migrate(db->conn, dir, errbuf, cap, applied_out);
}

int gw_db_ensure(gw_db_t *db)
{
    if (PQstatus(db->conn) == CONNECTION_OK)
        return 1;
    PQreset(db->conn);
    db->usage_prepared = 0;
    return PQstatus(db->conn) == CONNECTION_OK;
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
    PGnotify *n;
    int count = 0;

    if (PQstatus(db->conn) != CONNECTION_OK || !PQconsumeInput(db->conn))
        return -1;
    while ((n = PQnotifies(db->conn)) != NULL) {
        count++;
        PQfreemem(n);
    }
    return count;
}

static rb_err_t usage_prepare(gw_db_t *db, char *errbuf, size_t cap)
{
    PGresult *r;
    rb_err_t err = RB_OK;

    if (db->usage_prepared)
        return RB_OK;
    r = PQprepare(db->conn, "gw_usage_insert", USAGE_INSERT, GW_DB_USAGE_PARAMS, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rb_pg_error(db->conn, r, "prepare usage insert", errbuf, cap);
        err = RB_ERR_DB;
    } else {
        db->usage_prepared = 1;
    }
    PQclear(r);
    return err;
}

static const char *nullable(const char *s)
{
    return s[0] != '\0' ? s : NULL;
}

/* Queues one row's INSERT on the pipeline (libpq copies the parameters). */
static int usage_send(gw_db_t *db, const gw_db_usage_row_t *row)
{
    char num[10][GW_DB_NUM_MAX];
    const int64_t nums[] = {row->input_uncached, row->cache_read, row->cache_write_5m,
                            row->cache_write_1h, row->output,     row->reasoning,
                            row->requests,       row->cost_micro, row->duration_ms,
                            row->created_at_ms};
    char http_status[GW_DB_NUM_MAX], ttfb[GW_DB_NUM_MAX];
    const char *v[GW_DB_USAGE_PARAMS];

    for (size_t i = 0; i < 10; i++)
        snprintf(num[i], sizeof(num[i]), "%" PRId64, nums[i]);
    snprintf(http_status, sizeof(http_status), "%d", row->http_status);
    snprintf(ttfb, sizeof(ttfb), "%" PRId64, row->ttfb_ms);
    v[0] = row->request_id;
    v[1] = row->user_id;
    v[2] = nullable(row->workspace_id);
    v[3] = nullable(row->subject);
    v[4] = row->route;
    v[5] = nullable(row->provider);
    v[6] = nullable(row->model);
    v[7] = nullable(row->upstream_model);
    v[8] = row->byok ? "byok" : "managed";
    v[9] = row->status;
    v[10] = row->http_status > 0 ? http_status : NULL;
    for (size_t i = 0; i < 8; i++)
        v[11 + i] = num[i];
    v[19] = row->billed ? "true" : "false";
    v[20] = row->usage_source;
    v[21] = row->ttfb_ms >= 0 ? ttfb : NULL;
    v[22] = num[8];
    v[23] = nullable(row->error_code);
    v[24] = num[9];
    return PQsendQueryPrepared(db->conn, "gw_usage_insert", GW_DB_USAGE_PARAMS, v, NULL, NULL, 0);
}

/* Pushes libpq's output buffer out while reading what the server answers (no deadlock). */
static int pipeline_flush(gw_db_t *db)
{
    int rc;

    while ((rc = PQflush(db->conn)) == 1) {
        struct pollfd p = {.fd = PQsocket(db->conn), .events = POLLIN | POLLOUT};
        if (poll(&p, 1, GW_DB_POLL_MS) < 0)
            return -1;
        if ((p.revents & POLLIN) && !PQconsumeInput(db->conn))
            return -1;
    }
    return rc;
}

/* Reads every result up to the sync; returns 0 when all inserts succeeded. */
static int pipeline_results(gw_db_t *db, size_t n, char *errbuf, size_t cap)
{
    int failed = 0;

    for (size_t i = 0; i < n; i++) {
        PGresult *r = PQgetResult(db->conn);
        if (r == NULL)
            return -1;
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            if (!failed && PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
                rb_pg_error(db->conn, r, "usage insert", errbuf, cap);
            failed = 1;
        }
        PQclear(r);
        if ((r = PQgetResult(db->conn)) != NULL) { /* each query ends with a NULL */
            PQclear(r);
            return -1;
        }
    }
    for (;;) { /* the sync */
        PGresult *r = PQgetResult(db->conn);
        ExecStatusType st;
        if (r == NULL)
            return -1;
        st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC)
            break;
    }
    return failed ? -1 : 0;
}

rb_err_t gw_db_usage_insert(gw_db_t *db, const gw_db_usage_row_t *rows, size_t n, char *errbuf,
                            size_t cap)
{
    rb_err_t err = RB_OK;
    int in_pipeline = 0;

    RB_ASSERT(rows != NULL && n > 0);
    snprintf(errbuf, cap, "usage insert failed");
    if ((err = usage_prepare(db, errbuf, cap)) != RB_OK)
        goto Exit;
    if (PQsetnonblocking(db->conn, 1) != 0 || !PQenterPipelineMode(db->conn)) {
        rb_pg_error(db->conn, NULL, "pipeline", errbuf, cap);
        err = RB_ERR_DB;
        goto Exit;
    }
    in_pipeline = 1;
    for (size_t i = 0; i < n; i++) {
        if (!usage_send(db, &rows[i])) {
            rb_pg_error(db->conn, NULL, "usage insert", errbuf, cap);
            err = RB_ERR_DB;
            goto Exit;
        }
    }
    if (!PQpipelineSync(db->conn) || pipeline_flush(db) != 0) {
        rb_pg_error(db->conn, NULL, "usage insert sync", errbuf, cap);
        err = RB_ERR_DB;
        goto Exit;
    }
    PQsetnonblocking(db->conn, 0);
    if (pipeline_results(db, n, errbuf, cap) != 0)
        err = RB_ERR_DB;
Exit:
    if (in_pipeline && !PQexitPipelineMode(db->conn)) {
        /* results still unread (a broken connection): start over on the next call */
        PQreset(db->conn);
        db->usage_prepared = 0;
    }
    PQsetnonblocking(db->conn, 0);
    return err;
}
