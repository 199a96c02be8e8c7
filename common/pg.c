#include "common/pg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/json.h"
#include "common/log.h"

/* Longest wait for another migrator's advisory lock (seconds). */
#define PG_MIGRATE_LOCK_TIMEOUT_S 300
/* Pause between connection attempts (milliseconds). */
#define PG_CONNECT_RETRY_MS 250
/* Characters of a SHA-256 in hex, without the NUL. */
#define PG_SHA256_HEX_LEN 64
/* Longest path dir/NNNN_name.sql. */
#define PG_PATH_MAX (RB_PG_MIGRATION_DIR_MAX + 1 + RB_PG_MIGRATION_NAME_MAX + 1)

typedef struct st_pg_migration_t {
    int version;
    char name[RB_PG_MIGRATION_NAME_MAX + 1];
} pg_migration_t;

typedef struct st_pg_recorded_t {
    int version;
    char name[RB_PG_MIGRATION_NAME_MAX + 1];
    char checksum[PG_SHA256_HEX_LEN + 1];
} pg_recorded_t;

/* The migration runner's working state for one rb_pg_migrate call. */
typedef struct st_pg_migrate_t {
    PGconn *conn;
    const char *dir;
    char *errbuf;
    size_t cap;
    pg_migration_t *files; /* sorted by version */
    int nfiles;
    pg_recorded_t *rec; /* sorted by version */
    int nrec;
    int applied;
} pg_migrate_t;

/* Length of s without trailing whitespace (libpq messages end in "\n"). */
static int trimmed_len(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
        n--;
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* Turns libpq's multi-line messages ("failed: …\n\tIs the server running…") into one line. */
static void one_line(char *s)
{
    char *w = s;

    for (const char *r = s; *r != '\0'; r++) {
        char ch = (*r == '\n' || *r == '\t' || *r == '\r') ? ' ' : *r;
        if (ch == ' ' && w > s && w[-1] == ' ')
            continue;
        *w++ = ch;
    }
    *w = '\0';
}

void rb_pg_error(const PGconn *c, const PGresult *res, const char *what, char *errbuf, size_t cap)
{
    const char *msg = NULL, *state = NULL;

    RB_ASSERT(what != NULL && errbuf != NULL && cap > 0);
    if (res != NULL) {
        msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (msg == NULL || *msg == '\0')
            msg = PQresultErrorMessage(res);
    }
    if ((msg == NULL || *msg == '\0') && c != NULL)
        msg = PQerrorMessage(c);
    if (msg == NULL || *msg == '\0')
        msg = "unknown error";
    if (state != NULL)
        snprintf(errbuf, cap, "%s: %.*s (SQLSTATE %s)", what, trimmed_len(msg), msg, state);
    else
        snprintf(errbuf, cap, "%s: %.*s", what, trimmed_len(msg), msg);
    one_line(errbuf);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    RB_ASSERT(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static PGconn *connect_once(const char *conninfo, int connect_timeout_s)
{
    char timeout[16];
    /* Later values win, so anything conninfo sets overrides our defaults (libpq docs). */
    const char *const keys[] = {"connect_timeout", "options", "fallback_application_name", "dbname",
                                NULL};
    const char *const vals[] = {timeout, "-c TimeZone=UTC", "rigbox", conninfo, NULL};
    PGconn *c;

    snprintf(timeout, sizeof(timeout), "%d", connect_timeout_s);
    c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        fputs("fatal: out of memory (libpq)\n", stderr);
        abort();
    }
    return c;
}

/* 1 when libpq can parse conninfo (a key=value string or a URI); else explains in errbuf. */
static int conninfo_valid(const char *conninfo, char *errbuf, size_t cap)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);

    if (opts == NULL) {
        snprintf(errbuf, cap, "bad database url: %.*s", msg ? trimmed_len(msg) : 13,
                 msg ? msg : "out of memory");
        one_line(errbuf);
        PQfreemem(msg);
        return 0;
    }
    PQconninfoFree(opts);
    return 1;
}

rb_err_t rb_pg_connect(const char *conninfo, int timeout_s, PGconn **out, char *errbuf, size_t cap)
{
    const int64_t deadline_ms = now_ms() + (int64_t)timeout_s * 1000;
    PGconn *c = NULL;
    int attempts = 0;

    RB_ASSERT(conninfo != NULL && out != NULL && errbuf != NULL && cap > 0);
    RB_ASSERT(timeout_s >= 0 && timeout_s <= RB_PG_CONNECT_TIMEOUT_MAX_S);
    *out = NULL;
    errbuf[0] = '\0';
    if (!conninfo_valid(conninfo, errbuf, cap))
        return RB_ERR_CONFIG; /* retrying cannot fix a typo */
    for (;;) {
        int64_t left_ms = deadline_ms - now_ms();
        /* libpq treats connect_timeout below 2 as 2; 0 would mean "wait forever". */
        int attempt_s = left_ms > 2000 ? (int)(left_ms / 1000) : 2;
        c = connect_once(conninfo, attempt_s);
        attempts++;
        if (PQstatus(c) == CONNECTION_OK)
            break;
        rb_pg_error(c, NULL, "connect", errbuf, cap);
        PQfinish(c);
        c = NULL;
        if (now_ms() + PG_CONNECT_RETRY_MS >= deadline_ms)
            return attempts > 1 ? RB_ERR_TIMEOUT : RB_ERR_DB;
        struct timespec pause = {0, PG_CONNECT_RETRY_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
    RB_ASSERT(c != NULL && PQstatus(c) == CONNECTION_OK);
    *out = c;
    return RB_OK;
}

/* 1 when name is NNNN_[a-z0-9_]+.sql; sets *version. */
static int parse_migration_name(const char *name, int *version)
{
    size_t len = strlen(name), i;

    if (len > RB_PG_MIGRATION_NAME_MAX || len < 4 + 1 + 1 + 4)
        return 0;
    if (strcmp(name + len - 4, ".sql") != 0 || name[4] != '_')
        return 0;
    for (i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
    }
    for (i = 5; i < len - 4; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    *version =
        (name[0] - '0') * 1000 + (name[1] - '0') * 100 + (name[2] - '0') * 10 + name[3] - '0';
    return 1;
}

static int cmp_migration(const void *a, const void *b)
{
    const pg_migration_t *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/* Versions must be 1..n: no duplicate, no gap (forward-only numbering). */
static rb_err_t check_sequence(pg_migrate_t *m)
{
    for (int i = 0; i < m->nfiles; i++) {
        const pg_migration_t *f = &m->files[i];
        if (i > 0 && f->version == m->files[i - 1].version) {
            snprintf(m->errbuf, m->cap, "%s: two migrations numbered %04d: %s and %s", m->dir,
                     f->version, m->files[i - 1].name, f->name);
            return RB_ERR_CONFIG;
        }
        if (f->version != i + 1) {
            snprintf(m->errbuf, m->cap, "%s: migration %04d is missing (next file is %s)", m->dir,
                     i + 1, f->name);
            return RB_ERR_CONFIG;
        }
    }
    return RB_OK;
}

static rb_err_t list_migrations(pg_migrate_t *m)
{
    rb_err_t err = RB_OK;
    DIR *d = NULL;
    struct dirent *e;
    size_t len;
    int version;

    if ((d = opendir(m->dir)) == NULL) {
        snprintf(m->errbuf, m->cap, "cannot open migrations directory \"%s\": %s", m->dir,
                 strerror(errno));
        err = RB_ERR_IO;
        goto Exit;
    }
    m->files = rb_calloc(RB_PG_MIGRATIONS_MAX, sizeof(*m->files));
    while ((e = readdir(d)) != NULL) {
        if (!parse_migration_name(e->d_name, &version))
            continue;
        if (m->nfiles == RB_PG_MIGRATIONS_MAX) {
            snprintf(m->errbuf, m->cap, "%s: more than %d migrations", m->dir,
                     RB_PG_MIGRATIONS_MAX);
            err = RB_ERR_CONFIG;
            goto Exit;
        }
        len = strlen(e->d_name);
        RB_ASSERT(len < sizeof(m->files[0].name)); /* parse_migration_name bounds it */
        m->files[m->nfiles].version = version;
        memcpy(m->files[m->nfiles].name, e->d_name, len + 1);
        m->nfiles++;
    }
    qsort(m->files, (size_t)m->nfiles, sizeof(*m->files), cmp_migration);
    err = check_sequence(m);
Exit:
    if (d != NULL)
        closedir(d);
    return err;
}

/* Reads a whole migration file (a NUL-free text of at most RB_PG_MIGRATION_FILE_MAX bytes). */
static rb_err_t read_migration(pg_migrate_t *m, const char *path, char **out, size_t *len_out)
{
    rb_err_t err = RB_OK;
    char *buf = NULL;
    size_t len = 0;
    struct stat st;
    int fd = -1;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &st) != 0) {
        snprintf(m->errbuf, m->cap, "%s: %s", path, strerror(errno));
        err = RB_ERR_IO;
        goto Exit;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > RB_PG_MIGRATION_FILE_MAX) {
        snprintf(m->errbuf, m->cap, "%s: not a regular file of at most %d bytes", path,
                 RB_PG_MIGRATION_FILE_MAX);
        err = RB_ERR_CONFIG;
        goto Exit;
    }
    buf = rb_malloc(RB_PG_MIGRATION_FILE_MAX + 1);
    for (;;) {
        ssize_t n = read(fd, buf + len, RB_PG_MIGRATION_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(m->errbuf, m->cap, "%s: %s", path, strerror(errno));
            err = RB_ERR_IO;
            goto Exit;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > RB_PG_MIGRATION_FILE_MAX) {
            snprintf(m->errbuf, m->cap, "%s: larger than %d bytes", path, RB_PG_MIGRATION_FILE_MAX);
            err = RB_ERR_CONFIG;
            goto Exit;
        }
    }
    if (memchr(buf, '\0', len) != NULL) {
        snprintf(m->errbuf, m->cap, "%s: contains a NUL byte (not SQL text)", path);
        err = RB_ERR_CONFIG;
        goto Exit;
    }
    buf[len] = '\0';
    *out = buf;
    *len_out = len;
    buf = NULL;
Exit:
    if (fd != -1)
        close(fd);
    free(buf);
    return err;
}

static void sha256_hex(const char *data, size_t len, char out[PG_SHA256_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    RB_ASSERT(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1);
    RB_ASSERT(mdlen * 2 == PG_SHA256_HEX_LEN);
    for (unsigned i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xf];
    }
    out[PG_SHA256_HEX_LEN] = '\0';
}

/* Runs one statement that returns no rows or a single row; 0 on success. */
static rb_err_t exec_simple(pg_migrate_t *m, const char *sql, const char *what)
{
    PGresult *res = PQexec(m->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    rb_err_t err = RB_OK;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rb_pg_error(m->conn, res, what, m->errbuf, m->cap);
        err = RB_ERR_DB;
    }
    PQclear(res);
    return err;
}

/*
 * Takes the session-level advisory lock, bounded by lock_timeout inside a transaction: the lock
 * outlives the COMMIT (session-level), the timeout does not (SET LOCAL).
 */
static rb_err_t take_lock(pg_migrate_t *m)
{
    char sql[256];
    rb_err_t err;

    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL lock_timeout = '%ds'; SELECT pg_advisory_lock(%lld); COMMIT",
             PG_MIGRATE_LOCK_TIMEOUT_S, (long long)RB_PG_MIGRATE_LOCK_KEY);
    err = exec_simple(m, sql, "waiting for the migration lock");
    if (err != RB_OK && PQtransactionStatus(m->conn) != PQTRANS_IDLE)
        PQclear(PQexec(m->conn, "ROLLBACK"));
    return err;
}

static void release_lock(pg_migrate_t *m)
{
    char sql[128], ignored[256];
    PGresult *res;

    if (PQtransactionStatus(m->conn) != PQTRANS_IDLE) {
        res = PQexec(m->conn, "ROLLBACK");
        PQclear(res);
    }
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)",
             (long long)RB_PG_MIGRATE_LOCK_KEY);
    res = PQexec(m->conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* The connection is gone: the server released the lock with the session. */
        rb_pg_error(m->conn, res, "unlock", ignored, sizeof(ignored));
        rb_log_warn("migrate_unlock_failed", "error=\"%s\"", ignored);
    }
    PQclear(res);
}

static const char pg_table_sql[] =
    "BEGIN; SET LOCAL client_min_messages = warning;"
    " CREATE TABLE IF NOT EXISTS schema_migrations ("
    "  version int PRIMARY KEY CHECK (version BETWEEN 1 AND 9999),"
    "  name text NOT NULL CHECK (name ~ '^[0-9]{4}_[a-z0-9_]+[.]sql$'),"
    "  checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),"
    "  applied_at timestamptz NOT NULL DEFAULT now()); COMMIT";

/* Reads schema_migrations (creating it first) into m->rec; versions must be 1..n. */
static rb_err_t load_recorded(pg_migrate_t *m)
{
    rb_err_t err = RB_OK;
    PGresult *res = NULL;
    int n;

    if ((err = exec_simple(m, pg_table_sql, "creating schema_migrations")) != RB_OK)
        goto Exit;
    res = PQexec(m->conn, "SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rb_pg_error(m->conn, res, "reading schema_migrations", m->errbuf, m->cap);
        err = RB_ERR_DB;
        goto Exit;
    }
    n = PQntuples(res);
    if (n > RB_PG_MIGRATIONS_MAX) {
        snprintf(m->errbuf, m->cap, "schema_migrations has %d rows (limit %d)", n,
                 RB_PG_MIGRATIONS_MAX);
        err = RB_ERR_CONFLICT;
        goto Exit;
    }
    m->rec = rb_calloc((size_t)n + 1, sizeof(*m->rec));
    for (int i = 0; i < n; i++) {
        pg_recorded_t *r = &m->rec[i];
        r->version = (int)strtol(PQgetvalue(res, i, 0), NULL, 10);
        snprintf(r->name, sizeof(r->name), "%s", PQgetvalue(res, i, 1));
        snprintf(r->checksum, sizeof(r->checksum), "%s", PQgetvalue(res, i, 2));
        if (r->version != i + 1) {
            snprintf(m->errbuf, m->cap, "schema_migrations skips version %04d (has %s)", i + 1,
                     r->name);
            err = RB_ERR_CONFLICT;
            goto Exit;
        }
    }
    m->nrec = n;
Exit:
    PQclear(res);
    return err;
}

/* Every recorded version must still have its file, under the same name. */
static rb_err_t check_recorded(pg_migrate_t *m)
{
    for (int i = 0; i < m->nrec; i++) {
        const pg_recorded_t *r = &m->rec[i];
        if (r->version > m->nfiles) {
            snprintf(m->errbuf, m->cap,
                     "%s/%s was applied (schema_migrations version %04d) but the file is missing",
                     m->dir, r->name, r->version);
            return RB_ERR_CONFLICT;
        }
        if (strcmp(r->name, m->files[r->version - 1].name) != 0) {
            snprintf(m->errbuf, m->cap, "%s/%s was applied as %s: migrations must not be renamed",
                     m->dir, m->files[r->version - 1].name, r->name);
            return RB_ERR_CONFLICT;
        }
    }
    return RB_OK;
}

/* The 1-based line of the 1-based character position pos in sql (UTF-8). */
static int line_of_position(const char *sql, long pos)
{
    int line = 1;
    long chars = 0;

    for (const unsigned char *p = (const unsigned char *)sql; *p != '\0'; p++) {
        if ((*p & 0xc0) == 0x80)
            continue; /* a UTF-8 continuation byte: same character */
        if (++chars >= pos)
            break;
        if (*p == '\n')
            line++;
    }
    return line;
}

/* Writes "path: ERROR: message (SQLSTATE x) at line N" for a failed migration statement. */
static void migration_error(pg_migrate_t *m, const char *path, const char *sql, PGresult *res)
{
    char what[PG_PATH_MAX + 32];
    const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
    size_t used;

    snprintf(what, sizeof(what), "%s", path);
    rb_pg_error(m->conn, res, what, m->errbuf, m->cap);
    if (pos != NULL) {
        used = strlen(m->errbuf);
        if (used + 1 < m->cap)
            snprintf(m->errbuf + used, m->cap - used, " at line %d",
                     line_of_position(sql, strtol(pos, NULL, 10)));
    }
}

/* Runs one file and records it, in one transaction. */
static rb_err_t apply_one(pg_migrate_t *m, const pg_migration_t *f, const char *path,
                          const char *sql, const char *checksum)
{
    rb_err_t err = RB_OK;
    PGresult *res = NULL;
    char version[16];
    const char *params[3] = {version, f->name, checksum};
    ExecStatusType st;

    snprintf(version, sizeof(version), "%d", f->version);
    if ((err = exec_simple(m, "BEGIN; SET LOCAL client_min_messages = warning", path)) != RB_OK)
        goto Exit;
    res = PQexec(m->conn, sql);
    st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        migration_error(m, path, sql, res);
        err = RB_ERR_DB;
        goto Exit;
    }
    PQclear(res);
    res = PQexecParams(
        m->conn, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", 3,
        NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rb_pg_error(m->conn, res, path, m->errbuf, m->cap);
        err = RB_ERR_DB;
        goto Exit;
    }
    err = exec_simple(m, "COMMIT", path);
Exit:
    PQclear(res);
    if (err != RB_OK && PQtransactionStatus(m->conn) != PQTRANS_IDLE)
        PQclear(PQexec(m->conn, "ROLLBACK"));
    return err;
}

/* Checks or applies the file at index i. */
static rb_err_t run_one(pg_migrate_t *m, int i)
{
    const pg_migration_t *f = &m->files[i];
    char path[PG_PATH_MAX], sum[PG_SHA256_HEX_LEN + 1];
    char *sql = NULL;
    size_t len = 0;
    rb_err_t err;

    RB_ASSERT(f->version == i + 1);
    snprintf(path, sizeof(path), "%s/%s", m->dir, f->name);
    if ((err = read_migration(m, path, &sql, &len)) != RB_OK)
        goto Exit;
    sha256_hex(sql, len, sum);
    if (i < m->nrec) {
        RB_ASSERT(m->rec[i].version == f->version);
        if (strcmp(m->rec[i].checksum, sum) != 0) {
            snprintf(m->errbuf, m->cap,
                     "%s was changed after it was applied (checksum now %s \u2260 applied %s); "
                     "write a new migration instead",
                     path, sum, m->rec[i].checksum);
            err = RB_ERR_CONFLICT;
        }
        goto Exit;
    }
    if ((err = apply_one(m, f, path, sql, sum)) != RB_OK)
        goto Exit;
    m->applied++;
    rb_log_info("migration_applied", "file=%s checksum=%s", path, sum);
Exit:
    free(sql);
    return err;
}

rb_err_t rb_pg_migrate(PGconn *c, const char *dir, char *errbuf, size_t cap, int *applied_out)
{
    pg_migrate_t m = {.conn = c, .dir = dir, .errbuf = errbuf, .cap = cap};
    rb_err_t err = RB_OK;
    int locked = 0;

    RB_ASSERT(c != NULL && dir != NULL && errbuf != NULL && cap > 0);
    errbuf[0] = '\0';
    if (strlen(dir) > RB_PG_MIGRATION_DIR_MAX) {
        snprintf(errbuf, cap, "migrations directory path longer than %d bytes",
                 RB_PG_MIGRATION_DIR_MAX);
        err = RB_ERR_CONFIG;
        goto Exit;
    }
    if ((err = list_migrations(&m)) != RB_OK)
        goto Exit;
    if ((err = take_lock(&m)) != RB_OK)
        goto Exit;
    locked = 1;
    if ((err = load_recorded(&m)) != RB_OK || (err = check_recorded(&m)) != RB_OK)
        goto Exit;
    for (int i = 0; i < m.nfiles; i++) {
        if ((err = run_one(&m, i)) != RB_OK)
            goto Exit;
    }
    RB_ASSERT(m.applied <= m.nfiles);
Exit:
    if (locked)
        release_lock(&m);
    if (applied_out != NULL)
        *applied_out = m.applied;
    free(m.files);
    free(m.rec);
    return err;
}

int rb_pg_migrate_at_start(const char *conninfo, int timeout_s, const char *dir)
{
    PGconn *conn = NULL;
    char err[1024];
    int applied = 0, rc = -1;

    if (rb_pg_connect(conninfo, timeout_s, &conn, err, sizeof(err)) != RB_OK) {
        rb_log_error("db_connect_failed", "error=\"%s\"", err);
        return -1;
    }
    if (rb_pg_migrate(conn, dir, err, sizeof(err), &applied) != RB_OK) {
        rb_log_error("migration_failed", "dir=%s error=\"%s\"", dir, err);
        goto Exit;
    }
    rb_log_info("migrations", "applied=%d dir=%s", applied, dir);
    rc = 0;
Exit:
    PQfinish(conn);
    return rc;
}

static const char *copy_seq_escape(const unsigned char *p, size_t k, char tmp[8])
{
    (void)tmp;
    if (k != 1)
        return NULL;
    switch (*p) {
    case '\\':
        return "\\\\";
    case '\t':
        return "\\t";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    }
    return NULL;
}

void rb_pg_copy_text(rb_buf_t *out, const char *s, size_t n)
{
    rb_utf8_escape(out, s, n, copy_seq_escape);
}
