#include "control/db.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/pg.h"

void ctl_db_init(ctl_db_t *db, const char *conninfo, int timeout_s)
{
    *db = (ctl_db_t){.conninfo = conninfo, .timeout_s = timeout_s};
}

void ctl_db_init_request(ctl_db_t *db, const char *conninfo)
{
    ctl_db_init(db, conninfo, 0);
    db->fail_fast = 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ctl_db_close(ctl_db_t *db)
{
    if (db->conn != NULL)
        PQfinish(db->conn);
    db->conn = NULL;
}

int ctl_db_connected(const ctl_db_t *db)
{
    return db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK;
}

static rb_err_t ensure_connected(ctl_db_t *db)
{
    char err[256];
    if (ctl_db_connected(db))
        return RB_OK;
    ctl_db_close(db);
    if (db->fail_fast && db->failed_ms != 0 && mono_ms() - db->failed_ms < CTL_DB_DOWN_HOLD_MS)
        return RB_ERR_DB; /* failed a moment ago: not again (nor its log line) */
    if (rb_pg_connect(db->conninfo, db->timeout_s, &db->conn, err, sizeof(err)) != RB_OK) {
        rb_log_error("db_connect_failed", "error=\"%s\"", err);
        db->conn = NULL;
        db->failed_ms = mono_ms();
        return RB_ERR_DB;
    }
    db->failed_ms = 0;
    return RB_OK;
}

static rb_err_t classify(ctl_db_t *db, PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", state != NULL ? state : "");
    snprintf(db->errmsg, sizeof(db->errmsg), "%s", PQresultErrorMessage(res));
    if (state == NULL)
        return RB_ERR_DB;
    if (strcmp(state, "23505") == 0 || strcmp(state, "RB001") == 0) /* RB001: idempotency */
        return RB_ERR_CONFLICT;
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0)
        return RB_ERR_INVAL;
    return RB_ERR_DB;
}

rb_err_t ctl_db_query(ctl_db_t *db, const char *sql, int n, const char *const *params,
                      PGresult **out)
{
    PGresult *res = NULL;
    rb_err_t err = RB_OK;

    RB_ASSERT(n >= 0 && n <= CTL_DB_PARAMS_MAX);
    db->sqlstate[0] = '\0';
    for (int attempt = 0; attempt < (db->in_tx ? 1 : 2); attempt++) {
        if (db->in_tx && (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK)) {
            err = RB_ERR_DB; /* the transaction is gone with its connection */
            break;
        }
        if ((err = ensure_connected(db)) != RB_OK)
            continue;
        res = PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
        if (PQstatus(db->conn) != CONNECTION_OK) { /* the server went away: retry once */
            PQclear(res);
            res = NULL;
            err = RB_ERR_DB;
            continue;
        }
        break;
    }
    if (res == NULL)
        goto Exit;
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
        err = classify(db, res);
        if (err == RB_ERR_DB)
            rb_log_error("db_query_failed", "sqlstate=%s error=\"%.*s\"", db->sqlstate,
                         (int)strcspn(db->errmsg, "\n"), db->errmsg);
        PQclear(res);
        res = NULL;
        goto Exit;
    }
    err = RB_OK;
Exit:
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return err;
}

int ctl_db_rows(ctl_db_t *db, const char *sql, int n, const char *const *params)
{
    PGresult *res = NULL;
    int rows = ctl_db_query(db, sql, n, params, &res) == RB_OK ? PQntuples(res) : -1;

    PQclear(res);
    return rows;
}

rb_err_t ctl_db_exec(ctl_db_t *db, const char *sql)
{
    return ctl_db_query(db, sql, 0, NULL, NULL);
}

rb_err_t ctl_db_begin(ctl_db_t *db)
{
    rb_err_t err;

    RB_ASSERT(!db->in_tx);
    if ((err = ctl_db_exec(db, "BEGIN")) == RB_OK)
        db->in_tx = 1;
    return err;
}

rb_err_t ctl_db_end(ctl_db_t *db, int commit)
{
    /* after a failed statement, COMMIT would roll back and say nothing */
    int failed = db->conn != NULL && PQtransactionStatus(db->conn) == PQTRANS_INERROR;
    rb_err_t err;

    RB_ASSERT(db->in_tx);
    err = ctl_db_exec(db, commit && !failed ? "COMMIT" : "ROLLBACK");
    db->in_tx = 0;
    return commit && failed ? RB_ERR_DB : err;
}
