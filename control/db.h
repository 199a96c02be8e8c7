/*
 * ctl_db: the control daemon's only libpq user. One ctl_db_t is one PostgreSQL connection owned by
 * one thread (each API worker has its own); it connects lazily and reconnects once when the server
 * went away. Queries are parameterised (text parameters) and blocking: the control plane is not a
 * hot path, and each worker serves one request at a time on its own connection.
 */
#ifndef RB_CONTROL_DB_H
#define RB_CONTROL_DB_H

#include <libpq-fe.h>
#include <stdint.h>

#include "common/err.h"

#define CTL_DB_PARAMS_MAX 16
/* After a failed connect, how long a request-path connection answers "unreachable" without trying
 * again (ms): a database out of reach costs each request one failed attempt at most per period. */
#define CTL_DB_DOWN_HOLD_MS 1000

typedef struct st_ctl_db_t {
    PGconn *conn;         /* NULL until first use */
    const char *conninfo; /* borrowed from the configuration */
    int timeout_s;
    char sqlstate[6];  /* SQLSTATE of the last failed query, "" otherwise */
    char errmsg[256];  /* the server's message of the last failure (for logs, not clients) */
    int in_tx;         /* between ctl_db_begin and ctl_db_end: no statement is retried */
    int fail_fast;     /* the request path: see ctl_db_init_request */
    int64_t failed_ms; /* monotonic time of the last failed connect; 0 = none */
} ctl_db_t;

/** Prepares db for lazy connection; borrows conninfo. A connect is retried for up to timeout_s. */
void ctl_db_init(ctl_db_t *db, const char *conninfo, int timeout_s);
/** ctl_db_init for an API worker, which never waits for a database that is out of reach: one
 *  connect attempt (libpq's connect_timeout bounds it), and after a failed one none for
 *  CTL_DB_DOWN_HOLD_MS (its queries fail at once; the API answers 503). */
void ctl_db_init_request(ctl_db_t *db, const char *conninfo);
/** 1 when db holds a working connection (after a failure: whether the database was reached). */
int ctl_db_connected(const ctl_db_t *db);
/** Closes the connection. */
void ctl_db_close(ctl_db_t *db);
/** Runs sql with n text parameters (NULL = SQL NULL). On success *out (may be NULL to discard) is
 * an owned result (free with PQclear). Errors: RB_ERR_CONFLICT (unique violation), RB_ERR_INVAL
 *  (check/not-null/foreign-key/data violations), RB_ERR_DB (anything else); db->sqlstate tells. */
rb_err_t ctl_db_query(ctl_db_t *db, const char *sql, int n, const char *const *params,
                      PGresult **out);
/** Runs sql as ctl_db_query and returns how many rows it returned (a write: with RETURNING, how
 *  many it changed); -1 on an error. */
int ctl_db_rows(ctl_db_t *db, const char *sql, int n, const char *const *params);
/** Runs a statement without parameters or results (NOTIFY …). */
rb_err_t ctl_db_exec(ctl_db_t *db, const char *sql);
/** Starts a transaction. Until ctl_db_end, a lost connection fails the statement instead of
 * running it again on a new connection (outside the transaction). */
rb_err_t ctl_db_begin(ctl_db_t *db);
/** Ends the transaction: COMMIT when commit, else ROLLBACK. Returns the COMMIT's outcome. */
rb_err_t ctl_db_end(ctl_db_t *db, int commit);

#endif
