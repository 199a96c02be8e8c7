/*
 * Thin libpq helpers shared by rigbox-gateway and rigbox-control: connecting with a deadline, and
 * the schema migration runner that both daemons call at start (schema/ is their contract, DESIGN.md
 * §1).
 *
 * Migrations are forward-only files `NNNN_name.sql` (four digits, then [a-z0-9_]) in one directory;
 * other files are ignored. Versions must run 1, 2, 3… with no gap and no duplicate. Each file runs
 * with its row in `schema_migrations` in ONE transaction, so a file must not contain its own
 * BEGIN/COMMIT or statements that refuse to run in a transaction (CREATE INDEX CONCURRENTLY). The
 * recorded checksum is the SHA-256 of the file's bytes: editing an applied file is refused; write a
 * new migration instead. A session-level advisory lock (RB_PG_MIGRATE_LOCK_KEY) serialises
 * migrators, so two daemons starting together never apply a file twice.
 *
 * Blocking calls: use them at start-up or on a dedicated thread, never on an event-loop thread.
 * A PGconn belongs to one thread at a time. Error messages go to a caller-provided buffer, always
 * NUL-terminated and truncated to its capacity; they never contain the conninfo (it may hold a
 * password).
 */
#ifndef RB_COMMON_PG_H
#define RB_COMMON_PG_H

#include <stddef.h>

#include <libpq-fe.h>

#include "common/buf.h"
#include "common/err.h"

/* A LATERAL subquery giving the billed spend (micro-credits) of user u.id in the current UTC day
 * ("today") and month ("month"), from the per-day counters of schema/0003_ledger_fast.sql (at most
 * 31 rows read). Both daemons use it: `FROM users u, LATERAL " RB_PG_USAGE_SPEND_SQL " s`. */
#define RB_PG_USAGE_SPEND_SQL                                                                      \
    "(SELECT coalesce(sum(cost_micro) FILTER (WHERE day >= (now() AT TIME ZONE 'UTC')::date), 0)"  \
    " AS today, coalesce(sum(cost_micro), 0) AS month FROM usage_spend_daily WHERE user_id = u.id" \
    " AND day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date)"

/* Largest migration file read (bytes). */
#define RB_PG_MIGRATION_FILE_MAX 1048576
/* Most migration files in one directory. */
#define RB_PG_MIGRATIONS_MAX 1000
/* Longest migration file name, e.g. "0001_init.sql" (bytes, without the NUL). */
#define RB_PG_MIGRATION_NAME_MAX 96
/* Longest migration directory path (bytes, without the NUL). */
#define RB_PG_MIGRATION_DIR_MAX 3072
/* pg_advisory_lock key held while migrating ("rbmigrat" in ASCII). */
#define RB_PG_MIGRATE_LOCK_KEY 0x72626d6967726174LL
/* Longest connect deadline accepted by rb_pg_connect (seconds). */
#define RB_PG_CONNECT_TIMEOUT_MAX_S 600

/**
 * Connects, retrying until timeout_s has passed (a server that is still starting), 0 = one attempt.
 * Sessions get TimeZone=UTC unless conninfo sets `options`. On success *out is owned (PQfinish it);
 * on failure returns RB_ERR_CONFIG (conninfo does not parse; no retry), RB_ERR_DB (one attempt
 * failed) or RB_ERR_TIMEOUT (retried until the deadline) with libpq's message in errbuf.
 */
rb_err_t rb_pg_connect(const char *conninfo, int timeout_s, PGconn **out, char *errbuf, size_t cap);

/**
 * Applies the pending migrations of dir (see above) and sets *applied_out (may be NULL) to how many
 * ran. Errors: RB_ERR_CONFIG (bad directory: duplicate number, gap, too many, file too large or not
 * text), RB_ERR_CONFLICT (an applied file changed, was renamed or is missing), RB_ERR_DB (SQL
 * failed: that file's transaction is rolled back; earlier files stay applied), RB_ERR_IO. The
 * message names the file as dir/NNNN_name.sql. The advisory lock is released on every path.
 */
rb_err_t rb_pg_migrate(PGconn *c, const char *dir, char *errbuf, size_t cap, int *applied_out);

/** Connects to conninfo, applies the pending migrations of dir, logs `event=migrations applied=N`
 *  (or the failure) and disconnects: what a daemon does once at start. Returns 0 or -1. */
int rb_pg_migrate_at_start(const char *conninfo, int timeout_s, const char *dir);
/**
 * Writes "what: <primary message> (SQLSTATE xxxxx)" for a failed result (or the connection's error
 * when res is NULL) into errbuf, without libpq's trailing newline.
 */
void rb_pg_error(const PGconn *c, const PGresult *res, const char *what, char *errbuf, size_t cap);
/** Appends s[0..n) as one field of COPY's text format: backslash, tab, newline and carriage return
 *  escaped, an ill-formed UTF-8 sequence written as U+FFFD (PostgreSQL refuses it in a UTF8
 *  database). An empty field is the empty string; NULL is the caller's "\\N". */
void rb_pg_copy_text(rb_buf_t *out, const char *s, size_t n);

#endif
