/*
 * Integration test of common/pg.c's migration runner and of schema/0001_init.sql's constraints,
 * against a real PostgreSQL (RB_TEST_PGHOST; see pg_test_util.h). Each test uses a fresh database.
 */
#include "common/pg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "pg_test_util.h"
#include "test.h"

#define SCHEMA_DIR     RB_SOURCE_DIR "/schema"
#define ERRBUF_SIZE    1024
#define TMP_FILES_MAX  64
#define FILE_COPY_MAX  (RB_PG_MIGRATION_FILE_MAX + 2)
#define WAIT_POLLS_MAX 200 /* x 50 ms */

/* ---- small file helpers (flat temporary directories) ---------------------------------------- */

static void make_tmpdir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/rb-migrate-XXXXXX");
    if (mkdtemp(out) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
}

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((f = fopen(path, "wb")) == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void write_text(const char *dir, const char *name, const char *text)
{
    write_file(dir, name, text, strlen(text));
}

/* Reads a file into a NUL-terminated buffer; returns owned (free), sets *len. */
static char *read_all(const char *path, size_t *len)
{
    char *buf = malloc(FILE_COPY_MAX + 1);
    FILE *f = fopen(path, "rb");
    size_t n;

    if (buf == NULL || f == NULL) {
        perror(path);
        exit(1);
    }
    n = fread(buf, 1, FILE_COPY_MAX, f);
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int is_migration_name(const char *name)
{
    return fnmatch("[0-9][0-9][0-9][0-9]_*.sql", name, 0) == 0;
}

/* Copies schema/'s migrations into dir, except `skip` (may be NULL); returns how many. */
static int copy_schema(const char *dir, const char *skip)
{
    DIR *d = opendir(SCHEMA_DIR);
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        perror(SCHEMA_DIR);
        exit(1);
    }
    while ((e = readdir(d)) != NULL) {
        char path[512];
        size_t len;
        char *data;
        if (!is_migration_name(e->d_name) || (skip != NULL && strcmp(e->d_name, skip) == 0))
            continue;
        snprintf(path, sizeof(path), "%s/%s", SCHEMA_DIR, e->d_name);
        data = read_all(path, &len);
        write_file(dir, e->d_name, data, len);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

/* The highest-numbered migration name in schema/ (they sort by name). */
static void last_schema_file(char *out, size_t cap)
{
    DIR *d = opendir(SCHEMA_DIR);
    struct dirent *e;

    out[0] = '\0';
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (is_migration_name(e->d_name) && strcmp(e->d_name, out) > 0 && len < cap)
            memcpy(out, e->d_name, len + 1);
    }
    if (d != NULL)
        closedir(d);
}

static int count_schema_files(void)
{
    char tmp[64];
    int n;

    make_tmpdir(tmp, sizeof(tmp));
    n = copy_schema(tmp, NULL);
    /* remove the copies */
    DIR *d = opendir(tmp);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[512];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", tmp, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(tmp);
    return n;
}

static void remove_tmpdir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    while (d != NULL && (e = readdir(d)) != NULL && n < TMP_FILES_MAX) {
        char path[512];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
        n++;
    }
    if (d != NULL)
        closedir(d);
    if (rmdir(dir) != 0)
        fprintf(stderr, "rmdir %s: %s\n", dir, strerror(errno));
}

/* ---- migration helpers ------------------------------------------------------------------------
 */

static PGconn *connect_db(const char *db)
{
    char ci[PGT_CONNINFO_MAX], err[ERRBUF_SIZE];
    PGconn *c = NULL;

    pgt_conninfo(db, ci, sizeof(ci));
    if (rb_pg_connect(ci, 5, &c, err, sizeof(err)) != RB_OK) {
        fprintf(stderr, "rb_pg_connect: %s\n", err);
        exit(1);
    }
    return c;
}

static rb_err_t migrate(const char *db, const char *dir, int *applied, char *err, size_t cap)
{
    PGconn *c = connect_db(db);
    rb_err_t e = rb_pg_migrate(c, dir, err, cap, applied);
    PQfinish(c);
    return e;
}

static long count_rows(PGconn *c, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    return pgt_query_long(c, sql);
}

/* ---- tests -------------------------------------------------------------------------------------
 */

static void test_apply_then_idempotent(void)
{
    char db[PGT_DBNAME_MAX + 1], err[ERRBUF_SIZE] = "", sql[256], path[512], hex[65];
    unsigned char md[SHA256_DIGEST_LENGTH];
    int nfiles = count_schema_files(), applied = -1;
    size_t len;
    char *data;
    PGconn *c;

    CHECK(nfiles >= 1);
    pgt_db_create("migrate", db, sizeof(db));
    CHECK_INT_EQ(migrate(db, SCHEMA_DIR, &applied, err, sizeof(err)), RB_OK);
    CHECK_STR_EQ(err, "");
    CHECK_INT_EQ(applied, nfiles);

    c = pgt_connect(db);
    CHECK_INT_EQ(count_rows(c, "schema_migrations"), nfiles);
    CHECK_INT_EQ(pgt_query_long(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND"
                                   " tablename IN ('users','api_keys','workspaces','nodes',"
                                   "'workspace_tokens','ai_configs','apps','app_allowed_emails',"
                                   "'usage_events')"),
                 9);
    /* The recorded checksum is the SHA-256 of the file's bytes, in lowercase hex. */
    snprintf(path, sizeof(path), "%s/0001_init.sql", SCHEMA_DIR);
    data = read_all(path, &len);
    SHA256((const unsigned char *)data, len, md);
    free(data);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM schema_migrations WHERE version = 1 AND name = '0001_init.sql'"
             " AND checksum = '%s'",
             hex);
    CHECK_INT_EQ(pgt_query_long(c, sql), 1);
    PQfinish(c);

    /* Second run: nothing to do, no error. */
    applied = -1;
    CHECK_INT_EQ(migrate(db, SCHEMA_DIR, &applied, err, sizeof(err)), RB_OK);
    CHECK_INT_EQ(applied, 0);
    c = pgt_connect(db);
    CHECK_INT_EQ(count_rows(c, "schema_migrations"), nfiles);
    PQfinish(c);
    pgt_db_drop(db);
}

typedef struct {
    const char *db;
    rb_err_t err;
    int applied;
    char errbuf[ERRBUF_SIZE];
} migrator_t;

static void *migrator_main(void *arg)
{
    migrator_t *m = arg;
    m->err = migrate(m->db, SCHEMA_DIR, &m->applied, m->errbuf, sizeof(m->errbuf));
    return NULL;
}

/*
 * Two migrators race: the test holds the advisory lock until both are queued behind it, then lets
 * them go. Each migration must be applied exactly once in total.
 */
static void test_concurrent_migrators(void)
{
    char db[PGT_DBNAME_MAX + 1], sql[128];
    migrator_t m[2];
    pthread_t th[2];
    int nfiles = count_schema_files(), polls = 0;
    PGconn *holder;

    pgt_db_create("migrate", db, sizeof(db));
    holder = pgt_connect(db);
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%lld)", (long long)RB_PG_MIGRATE_LOCK_KEY);
    CHECK_INT_EQ(pgt_exec(holder, sql), 0);
    for (int i = 0; i < 2; i++) {
        m[i] = (migrator_t){.db = db, .applied = -1};
        CHECK_INT_EQ(pthread_create(&th[i], NULL, migrator_main, &m[i]), 0);
    }
    while (pgt_query_long(holder, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON"
                                  " d.oid = l.database WHERE l.locktype = 'advisory' AND"
                                  " NOT l.granted AND d.datname = current_database()") != 2 &&
           polls++ < WAIT_POLLS_MAX) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    CHECK(polls < WAIT_POLLS_MAX); /* both migrators were waiting on the lock */
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)",
             (long long)RB_PG_MIGRATE_LOCK_KEY);
    CHECK_INT_EQ(pgt_exec(holder, sql), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);

    for (int i = 0; i < 2; i++) {
        CHECK_INT_EQ(m[i].err, RB_OK);
        if (m[i].err != RB_OK)
            fprintf(stderr, "migrator %d: %s\n", i, m[i].errbuf);
    }
    CHECK_INT_EQ(m[0].applied + m[1].applied, nfiles);
    CHECK(m[0].applied == 0 || m[1].applied == 0);
    CHECK_INT_EQ(count_rows(holder, "schema_migrations"), nfiles);
    PQfinish(holder);
    pgt_db_drop(db);
}

static void test_changed_and_missing_files(void)
{
    char db[PGT_DBNAME_MAX + 1], tmp[64], err[ERRBUF_SIZE], want[256], last[256], path[512];
    int applied = -1, nfiles;
    size_t len;
    char *data;

    pgt_db_create("migrate", db, sizeof(db));
    CHECK_INT_EQ(migrate(db, SCHEMA_DIR, &applied, err, sizeof(err)), RB_OK);
    nfiles = applied;

    /* A copy of schema/ whose 0001 gained one comment line: refused, naming the file. */
    make_tmpdir(tmp, sizeof(tmp));
    CHECK_INT_EQ(copy_schema(tmp, NULL), nfiles);
    snprintf(path, sizeof(path), "%s/0001_init.sql", SCHEMA_DIR);
    data = read_all(path, &len);
    data = realloc(data, len + 32);
    memcpy(data + len, "-- edited\n", 10);
    write_file(tmp, "0001_init.sql", data, len + 10);
    free(data);
    applied = -1;
    CHECK_INT_EQ(migrate(db, tmp, &applied, err, sizeof(err)), RB_ERR_CONFLICT);
    CHECK_INT_EQ(applied, 0);
    snprintf(want, sizeof(want), "%s/0001_init.sql was changed after it was applied (checksum ",
             tmp);
    CHECK(strstr(err, want) != NULL);
    if (strstr(err, want) == NULL)
        fprintf(stderr, "  got: %s\n", err);
    remove_tmpdir(tmp);

    /* A copy without the newest applied file: refused, naming it. */
    last_schema_file(last, sizeof(last));
    make_tmpdir(tmp, sizeof(tmp));
    CHECK_INT_EQ(copy_schema(tmp, last), nfiles - 1);
    write_text(tmp, "notes.txt", "not a migration\n");
    CHECK_INT_EQ(migrate(db, tmp, &applied, err, sizeof(err)), RB_ERR_CONFLICT);
    CHECK(strstr(err, last) != NULL && strstr(err, "missing") != NULL);
    if (strstr(err, last) == NULL)
        fprintf(stderr, "  got: %s\n", err);
    remove_tmpdir(tmp);

    /* The database is still intact and usable by the real directory. */
    CHECK_INT_EQ(migrate(db, SCHEMA_DIR, &applied, err, sizeof(err)), RB_OK);
    CHECK_INT_EQ(applied, 0);
    pgt_db_drop(db);
}

/* Directory problems are found before touching the database. */
static void test_bad_directories(void)
{
    char db[PGT_DBNAME_MAX + 1], tmp[64], err[ERRBUF_SIZE];
    int applied = -1;
    char *big;

    pgt_db_create("migrate", db, sizeof(db));

    make_tmpdir(tmp, sizeof(tmp));
    write_text(tmp, "0001_a.sql", "CREATE TABLE a (x int);\n");
    write_text(tmp, "0001_b.sql", "CREATE TABLE b (x int);\n");
    CHECK_INT_EQ(migrate(db, tmp, &applied, err, sizeof(err)), RB_ERR_CONFIG);
    CHECK(strstr(err, "0001_a.sql") != NULL && strstr(err, "0001_b.sql") != NULL);
    remove_tmpdir(tmp);

    make_tmpdir(tmp, sizeof(tmp));
    write_text(tmp, "0001_a.sql", "CREATE TABLE a (x int);\n");
    write_text(tmp, "0003_c.sql", "CREATE TABLE c (x int);\n");
    CHECK_INT_EQ(migrate(db, tmp, &applied, err, sizeof(err)), RB_ERR_CONFIG);
    CHECK(strstr(err, "0002") != NULL);
    remove_tmpdir(tmp);

    make_tmpdir(tmp, sizeof(tmp));
    big = malloc(RB_PG_MIGRATION_FILE_MAX + 1);
    memset(big, ' ', RB_PG_MIGRATION_FILE_MAX + 1);
    write_file(tmp, "0001_big.sql", big, RB_PG_MIGRATION_FILE_MAX + 1);
    free(big);
    CHECK_INT_EQ(migrate(db, tmp, &applied, err, sizeof(err)), RB_ERR_CONFIG);
    CHECK(strstr(err, "0001_big.sql") != NULL);
    remove_tmpdir(tmp);

    CHECK_INT_EQ(migrate(db, "/nonexistent/rb-schema", &applied, err, sizeof(err)), RB_ERR_IO);
    CHECK(strstr(err, "/nonexistent/rb-schema") != NULL);

    /* Nothing was applied by any of the above. */
    PGconn *c = pgt_connect(db);
    CHECK_INT_EQ(
        pgt_query_long(c, "SELECT count(*) FROM pg_tables WHERE tablename IN ('a','b','c')"), 0);
    PQfinish(c);
    pgt_db_drop(db);
}

/* Non-matching names are ignored; a failing file rolls back alone, and names its line. */
static void test_failure_rolls_back(void)
{
    char db[PGT_DBNAME_MAX + 1], tmp[64], err[ERRBUF_SIZE], sql[128];
    int applied = -1;
    PGconn *c;

    pgt_db_create("migrate", db, sizeof(db));
    make_tmpdir(tmp, sizeof(tmp));
    write_text(tmp, "0001_first.sql", "CREATE TABLE t1 (x int);\n");
    write_text(tmp, "0002_second.sql", "CREATE TABLE t2 (x int);\nSELECT no_such_function();\n");
    write_text(tmp, "README.md", "SELECT this is not sql;\n");
    write_text(tmp, "0003-dash.sql.bak", "SELECT nor this;\n");
    CHECK_INT_EQ(migrate(db, tmp, &applied, err, sizeof(err)), RB_ERR_DB);
    CHECK_INT_EQ(applied, 1);
    CHECK(strstr(err, "/0002_second.sql") != NULL && strstr(err, "no_such_function") != NULL);
    CHECK(strstr(err, "at line 2") != NULL);
    if (strstr(err, "at line 2") == NULL)
        fprintf(stderr, "  got: %s\n", err);

    c = pgt_connect(db);
    CHECK_INT_EQ(count_rows(c, "schema_migrations"), 1);
    CHECK_INT_EQ(pgt_query_long(c, "SELECT count(*) FROM pg_tables WHERE tablename = 't1'"), 1);
    CHECK_INT_EQ(pgt_query_long(c, "SELECT count(*) FROM pg_tables WHERE tablename = 't2'"), 0);
    /* The lock was released despite the error: another session can take it at once. */
    snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%lld)::int",
             (long long)RB_PG_MIGRATE_LOCK_KEY);
    CHECK_INT_EQ(pgt_query_long(c, sql), 1);
    PQfinish(c);

    /* Fixing the unapplied file is allowed. */
    write_text(tmp, "0002_second.sql", "CREATE TABLE t2 (x int);\n");
    CHECK_INT_EQ(migrate(db, tmp, &applied, err, sizeof(err)), RB_OK);
    CHECK_INT_EQ(applied, 1);
    remove_tmpdir(tmp);
    pgt_db_drop(db);
}

/* ---- schema constraints ---------------------------------------------------------------------- */

#define UE_COLS                                                                                    \
    "INSERT INTO usage_events (request_id, user_id, workspace_id, route, provider, model, mode,"   \
    " status, http_status, input_uncached, output, reasoning, cost_micro, billed, usage_source,"   \
    " ttfb_ms, duration_ms) VALUES "
#define WS_COLS                                                                                    \
    "INSERT INTO workspaces (id, user_id, name, image, ram_mb, vcpu_count, disk_size_mb, status,"  \
    " node_id, env_vars, failure_code, failure_message, failure_retryable, failure_at) VALUES "
#define AI_COLS                                                                                    \
    "INSERT INTO ai_configs (user_id, workspace_id, scope, mode, provider, model, key_ciphertext," \
    " key_nonce, key_tag, key_id) VALUES "
#define APP_COLS                                                                                   \
    "INSERT INTO apps (id, workspace_id, user_id, name, subdomain, port, protocol, visibility,"    \
    " status, host_port) VALUES "
#define NONCE "decode('000102030405060708090a0b', 'hex')"
#define TAG   "decode('000102030405060708090a0b0c0d0e0f', 'hex')"

/* Valid rows every bad row below is a variation of; all must succeed. */
static const char *const good_rows[] = {
    "INSERT INTO users (id, email) VALUES ('u-aaaaaaaa', 'alice@example.com'),"
    " ('u-bbbbbbbb', 'bob+tag@example.com'), ('u-cccccccc', 'carol@localhost')",
    "INSERT INTO nodes (id, hostname, kind, lease_expires_at) VALUES"
    " ('node-1', 'host1', 'control', now() + interval '30 seconds')",
    "INSERT INTO api_keys (id, user_id, role, prefix, key_hash) VALUES"
    " ('key-aaaaaaaa', 'u-aaaaaaaa', 'admin', 'rb_abcdefgh', sha256('secret-1'))",
    WS_COLS "('ws-aaaaaaaa', 'u-aaaaaaaa', 'dev box', 'base', 512, 1, 3072, 'running', 'node-1',"
            " '{\"A\": \"1\"}', NULL, NULL, NULL, NULL)",
    WS_COLS "('ws-bbbbbbbb', 'u-bbbbbbbb', 'b', 'dev', 1024, 2, 4096, 'failed', NULL, '{}',"
            " 'boot_timeout', 'guest did not boot', true, now())",
    /* after retry: provisioning while still showing the last failure */
    WS_COLS "('ws-cccccccc', 'u-bbbbbbbb', 'c', 'dev', 1024, 2, 4096, 'provisioning', NULL, '{}',"
            " 'boot_timeout', 'guest did not boot', true, now())",
    "INSERT INTO workspace_tokens (workspace_id, token_hash, prefix, revoked_at) VALUES"
    " ('ws-aaaaaaaa', sha256('tok-0'), 'rbw_old00000', now())",
    "INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES"
    " ('ws-aaaaaaaa', sha256('tok-1'), 'rbw_abcdefgh')",
    AI_COLS "('u-aaaaaaaa', NULL, 'user_default', 'managed', 'openai', 'gpt-4o-mini', NULL, NULL,"
            " NULL, NULL)",
    AI_COLS "('u-aaaaaaaa', 'ws-aaaaaaaa', 'workspace', 'byok', 'anthropic', 'claude-sonnet-4',"
            " '\\x0102'::bytea, " NONCE ", " TAG ", 'mk-1')",
    /* byok without a key yet: status invalid_missing_key, allowed */
    AI_COLS
    "('u-bbbbbbbb', 'ws-bbbbbbbb', 'workspace', 'byok', NULL, NULL, NULL, NULL, NULL, NULL)",
    APP_COLS "('app-aaaaaaaa', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'web', 'web-alice', 3000, 'http',"
             " 'privileged', 'active', 40001)",
    APP_COLS "('app-bbbbbbbb', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'db', 'a', 65535, 'tcp', 'public',"
             " 'installing', NULL)",
    "INSERT INTO app_allowed_emails (app_id, email) VALUES ('app-aaaaaaaa', 'dave@example.com')",
    UE_COLS
    "('req-1', 'u-aaaaaaaa', 'ws-aaaaaaaa', '/v1/chat/completions', 'openai', 'gpt-4o-mini',"
    " 'managed', 'ok', 200, 10, 20, 20, 1234, true, 'provider', 50, 400)",
    /* byok: priced, not billed; a workspace id with no row (history outlives workspaces) */
    UE_COLS "('req-2', 'u-aaaaaaaa', 'ws-zzzzzzzz', '/v1/messages', 'anthropic', 'claude',"
            " 'byok', 'client_gone', NULL, 10, 0, 0, 99, false, 'estimate', NULL, 10)",
    /* rejected before the model was known: no usage */
    UE_COLS "('req-3', 'u-bbbbbbbb', NULL, '/v1/chat/completions', NULL, NULL, 'managed',"
            " 'rejected', 400, 0, 0, 0, 0, false, 'none', NULL, 0)",
};

typedef struct {
    const char *what;
    const char *sqlstate; /* 23514 check, 23505 unique, 23503 foreign key, 23502 not null */
    const char *sql;
} bad_row_t;

static const bad_row_t bad_rows[] = {
    {"user id uppercase", "23514", "INSERT INTO users (id, email) VALUES ('u-AAAAAAAA', 'x@y.z')"},
    {"user id short", "23514", "INSERT INTO users (id, email) VALUES ('u-abc', 'x@y.z')"},
    {"user id prefix", "23514", "INSERT INTO users (id, email) VALUES ('ws-abcdefgh', 'x@y.z')"},
    {"email uppercase", "23514",
     "INSERT INTO users (id, email) VALUES ('u-dddddddd', 'Dave@Example.com')"},
    {"email no at", "23514", "INSERT INTO users (id, email) VALUES ('u-dddddddd', 'dave')"},
    {"email space", "23514", "INSERT INTO users (id, email) VALUES ('u-dddddddd', 'd ave@x.y')"},
    {"email duplicate", "23505",
     "INSERT INTO users (id, email) VALUES ('u-dddddddd', 'alice@example.com')"},
    {"email null", "23502", "INSERT INTO users (id, email) VALUES ('u-dddddddd', NULL)"},
    {"user role", "23514",
     "INSERT INTO users (id, email, role) VALUES ('u-dddddddd', 'd@x.y', 'root')"},
    {"api key hash 31 bytes", "23514",
     "INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES ('key-bbbbbbbb', 'u-aaaaaaaa',"
     " 'rb_abcdefgh', substring(sha256('k') from 2))"},
    {"api key hash duplicate", "23505",
     "INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES ('key-bbbbbbbb', 'u-aaaaaaaa',"
     " 'rb_abcdefgh', sha256('secret-1'))"},
    {"api key unknown user", "23503",
     "INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES ('key-bbbbbbbb', 'u-zzzzzzzz',"
     " 'rb_abcdefgh', sha256('k'))"},
    {"api key role", "23514",
     "INSERT INTO api_keys (id, user_id, role, prefix, key_hash) VALUES ('key-bbbbbbbb',"
     " 'u-aaaaaaaa', 'owner', 'rb_abcdefgh', sha256('k'))"},
    {"api key prefix", "23514",
     "INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES ('key-bbbbbbbb', 'u-aaaaaaaa',"
     " 'sk-abcdefgh', sha256('k'))"},
    {"workspace id", "23514",
     WS_COLS "('ws-ABCDEFGH', 'u-aaaaaaaa', 'x', 'base', 512, 1, 3072, 'stopped', NULL, '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace status", "23514",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 512, 1, 3072, 'paused', NULL, '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace ram 0", "23514",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 0, 1, 3072, 'stopped', NULL, '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace vcpu negative", "23514",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 512, -1, 3072, 'stopped', NULL, '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace env array", "23514",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 512, 1, 3072, 'stopped', NULL, '[]',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace failed without failure", "23514",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 512, 1, 3072, 'failed', NULL, '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace failure half set", "23514",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 512, 1, 3072, 'failed', NULL, '{}',"
             " 'boot_timeout', NULL, true, now())"},
    {"workspace running without node", "23514",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 512, 1, 3072, 'running', NULL, '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace unknown node", "23503",
     WS_COLS "('ws-dddddddd', 'u-aaaaaaaa', 'x', 'base', 512, 1, 3072, 'running', 'node-9', '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"workspace unknown user", "23503",
     WS_COLS "('ws-dddddddd', 'u-zzzzzzzz', 'x', 'base', 512, 1, 3072, 'stopped', NULL, '{}',"
             " NULL, NULL, NULL, NULL)"},
    {"second live token", "23505",
     "INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES"
     " ('ws-aaaaaaaa', sha256('tok-2'), 'rbw_abcdefgh')"},
    {"token hash length", "23514",
     "INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES"
     " ('ws-bbbbbbbb', '\\x00'::bytea, 'rbw_abcdefgh')"},
    {"token hash duplicate", "23505",
     "INSERT INTO workspace_tokens (workspace_id, token_hash, prefix) VALUES"
     " ('ws-bbbbbbbb', sha256('tok-1'), 'rbw_abcdefgh')"},
    {"second user default", "23505",
     AI_COLS "('u-aaaaaaaa', NULL, 'user_default', 'byok', NULL, NULL, NULL, NULL, NULL, NULL)"},
    {"user default with workspace", "23514",
     AI_COLS "('u-bbbbbbbb', 'ws-cccccccc', 'user_default', 'managed', NULL, NULL, NULL, NULL,"
             " NULL, NULL)"},
    {"workspace scope without workspace", "23514",
     AI_COLS "('u-bbbbbbbb', NULL, 'workspace', 'managed', NULL, NULL, NULL, NULL, NULL, NULL)"},
    {"ai key half set", "23514",
     AI_COLS "('u-bbbbbbbb', 'ws-cccccccc', 'workspace', 'byok', NULL, NULL, '\\x01'::bytea, NULL,"
             " NULL, NULL)"},
    {"ai key without key_id", "23514",
     AI_COLS "('u-bbbbbbbb', 'ws-cccccccc', 'workspace', 'byok', NULL, NULL, '\\x01'::bytea, " NONCE
             ", " TAG ", NULL)"},
    {"ai nonce 8 bytes", "23514",
     AI_COLS "('u-bbbbbbbb', 'ws-cccccccc', 'workspace', 'byok', NULL, NULL, '\\x01'::bytea,"
             " '\\x0001020304050607'::bytea, " TAG ", 'mk-1')"},
    {"ai managed with key", "23514",
     AI_COLS
     "('u-bbbbbbbb', 'ws-cccccccc', 'workspace', 'managed', NULL, NULL, '\\x01'::bytea, " NONCE
     ", " TAG ", 'mk-1')"},
    {"ai mode", "23514",
     AI_COLS
     "('u-bbbbbbbb', 'ws-cccccccc', 'workspace', 'free', NULL, NULL, NULL, NULL, NULL, NULL)"},
    {"ai workspace of another user", "23503",
     AI_COLS "('u-aaaaaaaa', 'ws-cccccccc', 'workspace', 'managed', NULL, NULL, NULL, NULL, NULL,"
             " NULL)"},
    {"ai second config for workspace", "23505",
     AI_COLS "('u-aaaaaaaa', 'ws-aaaaaaaa', 'workspace', 'managed', NULL, NULL, NULL, NULL, NULL,"
             " NULL)"},
    {"app port 70000", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'x1', 70000, 'http', 'private',"
              " 'active', NULL)"},
    {"app port 0", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'x1', 0, 'http', 'private',"
              " 'active', NULL)"},
    {"app host port 70000", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'x1', 80, 'http', 'private',"
              " 'active', 70000)"},
    {"app subdomain uppercase", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'Web_App', 80, 'http',"
              " 'private', 'active', NULL)"},
    {"app subdomain leading dash", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', '-web', 80, 'http', 'private',"
              " 'active', NULL)"},
    {"app subdomain 64 chars", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', repeat('a', 64), 80, 'http',"
              " 'private', 'active', NULL)"},
    {"app subdomain duplicate", "23505",
     APP_COLS "('app-cccccccc', 'ws-bbbbbbbb', 'u-bbbbbbbb', 'x', 'web-alice', 80, 'http',"
              " 'private', 'active', NULL)"},
    {"app name duplicate in workspace", "23505",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'web', 'web2', 80, 'http',"
              " 'private', 'active', NULL)"},
    {"app owner mismatch", "23503",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-bbbbbbbb', 'x', 'x1', 80, 'http', 'private',"
              " 'active', NULL)"},
    {"app visibility", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'x1', 80, 'http', 'secret',"
              " 'active', NULL)"},
    {"app protocol", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'x1', 80, 'udp', 'private',"
              " 'active', NULL)"},
    {"app status", "23514",
     APP_COLS "('app-cccccccc', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'x1', 80, 'http', 'private',"
              " 'running', NULL)"},
    {"app id", "23514",
     APP_COLS "('app-1', 'ws-aaaaaaaa', 'u-aaaaaaaa', 'x', 'x1', 80, 'http', 'private',"
              " 'active', NULL)"},
    {"allowed email uppercase", "23514",
     "INSERT INTO app_allowed_emails (app_id, email) VALUES ('app-aaaaaaaa', 'Eve@example.com')"},
    {"allowed email duplicate", "23505",
     "INSERT INTO app_allowed_emails (app_id, email) VALUES ('app-aaaaaaaa', 'dave@example.com')"},
    {"usage reasoning > output", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 10, 20, 21, 5, true, 'provider', 1, 2)"},
    {"usage negative tokens", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " -1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage negative cost", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 1, 20, 0, -5, true, 'provider', 1, 2)"},
    {"usage duplicate request id", "23505",
     UE_COLS "('req-1', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage status", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'timeout',"
             " 504, 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage byok billed", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'byok', 'ok', 200,"
             " 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage ok with error code", "23514",
     "INSERT INTO usage_events (request_id, user_id, route, model, mode, status, cost_micro,"
     " billed, error_code) VALUES ('req-9', 'u-aaaaaaaa', '/v1/responses', 'o3', 'managed', 'ok',"
     " 0, false, 'upstream_timeout')"},
    {"usage request id with space", "23514",
     UE_COLS "('req 9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage request id 129 chars", "23514",
     UE_COLS "(repeat('r', 129), 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed',"
             " 'ok', 200, 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage source none with tokens", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 1, 20, 0, 5, true, 'none', 1, 2)"},
    {"usage unknown user", "23503",
     UE_COLS "('req-9', 'u-zzzzzzzz', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage http status 42", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 42,"
             " 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage ttfb > duration", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 1, 20, 0, 5, true, 'provider', 30, 2)"},
    {"usage ok without model", "23514",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', NULL, 'managed', 'ok', 200,"
             " 1, 20, 0, 5, true, 'provider', 1, 2)"},
    {"usage billed null", "23502",
     UE_COLS "('req-9', 'u-aaaaaaaa', NULL, '/v1/responses', 'openai', 'o3', 'managed', 'ok', 200,"
             " 1, 20, 0, 5, NULL, 'provider', 1, 2)"},
    {"node kind", "23514",
     "INSERT INTO nodes (id, hostname, kind, lease_expires_at) VALUES ('node-2', 'h', 'worker',"
     " now() + interval '1 minute')"},
    {"node lease before heartbeat", "23514",
     "INSERT INTO nodes (id, hostname, kind, lease_expires_at) VALUES ('node-2', 'h', 'gateway',"
     " now() - interval '1 minute')"},
};

/*
 * Runs sql in a transaction that is always rolled back (a wrongly accepted row cannot disturb the
 * next case), expecting failure with sqlstate; returns 1 when it failed that way.
 */
static int fails_with(PGconn *c, const char *what, const char *sqlstate, const char *sql)
{
    PGresult *r;
    const char *got;
    int ok;

    if (pgt_exec(c, "BEGIN") != 0)
        return 0;
    r = PQexec(c, sql);
    got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    ok = PQresultStatus(r) == PGRES_FATAL_ERROR && got != NULL && strcmp(got, sqlstate) == 0;
    if (!ok)
        fprintf(stderr, "  bad row \"%s\": expected SQLSTATE %s, got %s %s\n", what, sqlstate,
                got ? got : PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
    PQclear(r);
    (void)pgt_exec(c, "ROLLBACK");
    return ok;
}

static void test_constraints(void)
{
    char db[PGT_DBNAME_MAX + 1], err[ERRBUF_SIZE];
    int applied = -1;
    PGconn *c;

    pgt_db_create("schema", db, sizeof(db));
    CHECK_INT_EQ(migrate(db, SCHEMA_DIR, &applied, err, sizeof(err)), RB_OK);
    c = pgt_connect(db);
    for (size_t i = 0; i < sizeof(good_rows) / sizeof(good_rows[0]); i++)
        CHECK_INT_EQ(pgt_exec(c, good_rows[i]), 0);
    for (size_t i = 0; i < sizeof(bad_rows) / sizeof(bad_rows[0]); i++)
        CHECK(fails_with(c, bad_rows[i].what, bad_rows[i].sqlstate, bad_rows[i].sql));

    /* UPDATEs are held to the same rules, and updated_at moves by trigger. */
    CHECK(fails_with(c, "update to failed without failure", "23514",
                     "UPDATE workspaces SET status = 'failed' WHERE id = 'ws-aaaaaaaa'"));
    CHECK(fails_with(c, "delete node under a running workspace", "23514",
                     "DELETE FROM nodes WHERE id = 'node-1'"));
    CHECK_INT_EQ(pgt_exec(c, "UPDATE users SET updated_at = '2000-01-01' WHERE id = 'u-cccccccc'"),
                 0);
    CHECK_INT_EQ(pgt_query_long(c, "SELECT (updated_at > '2001-01-01')::int FROM users"
                                   " WHERE id = 'u-cccccccc'"),
                 1);

    /* ON DELETE: a user with usage cannot go; a workspace takes its tokens, apps, emails and
     * config with it, while its usage history stays. */
    CHECK_INT_EQ(pgt_exec(c, "DELETE FROM workspaces WHERE id = 'ws-aaaaaaaa'"), 0);
    CHECK(fails_with(c, "delete user with usage", "23503",
                     "DELETE FROM users WHERE id = 'u-aaaaaaaa'"));
    CHECK_INT_EQ(count_rows(c, "workspace_tokens"), 0);
    CHECK_INT_EQ(count_rows(c, "apps"), 0);
    CHECK_INT_EQ(count_rows(c, "app_allowed_emails"), 0);
    CHECK_INT_EQ(pgt_query_long(c, "SELECT count(*) FROM ai_configs WHERE user_id = 'u-aaaaaaaa'"),
                 1);
    CHECK_INT_EQ(pgt_query_long(c, "SELECT count(*) FROM usage_events"
                                   " WHERE workspace_id = 'ws-aaaaaaaa'"),
                 1);
    CHECK_INT_EQ(pgt_exec(c, "DELETE FROM users WHERE id = 'u-cccccccc'"), 0);
    PQfinish(c);
    pgt_db_drop(db);
}

static void test_connect_errors(void)
{
    char err[ERRBUF_SIZE], ci[PGT_CONNINFO_MAX];
    PGconn *c = NULL;

    /* A database that does not exist: one attempt, libpq's reason in the message. */
    pgt_conninfo("rb_no_such_db", ci, sizeof(ci));
    CHECK_INT_EQ(rb_pg_connect(ci, 0, &c, err, sizeof(err)), RB_ERR_DB);
    CHECK(c == NULL);
    CHECK(strstr(err, "rb_no_such_db") != NULL);
    /* With a deadline it retries, then reports a timeout. */
    CHECK_INT_EQ(rb_pg_connect(ci, 1, &c, err, sizeof(err)), RB_ERR_TIMEOUT);
    CHECK(c == NULL);

    /* A conninfo that does not parse is refused at once, without retries. */
    CHECK_INT_EQ(rb_pg_connect("host=/tmp bogus_option=1", 5, &c, err, sizeof(err)), RB_ERR_CONFIG);
    CHECK(strstr(err, "bogus_option") != NULL);
    CHECK(c == NULL);

    /* Sessions are in UTC. */
    pgt_conninfo("postgres", ci, sizeof(ci));
    CHECK_INT_EQ(rb_pg_connect(ci, 0, &c, err, sizeof(err)), RB_OK);
    if (c != NULL) {
        PGresult *r = PQexec(c, "SHOW TimeZone");
        CHECK_STR_EQ(PQgetvalue(r, 0, 0), "UTC");
        PQclear(r);
        PQfinish(c);
    }
}

TEST_MAIN(test_apply_then_idempotent, test_concurrent_migrators, test_changed_and_missing_files,
          test_bad_directories, test_failure_rolls_back, test_constraints, test_connect_errors)
