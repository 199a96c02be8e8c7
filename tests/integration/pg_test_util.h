/*
 * Helpers for C integration tests that need PostgreSQL (header-only, static functions).
 *
 * The cluster is the one tools/lib/pg.sh runs; the test finds it through RB_TEST_PGHOST, the socket
 * directory (`export RB_TEST_PGHOST=$(tools/lib/pg.sh host DIR)`), and connects as user postgres.
 * When RB_TEST_PGHOST is unset the test FAILS with a message saying how to start one: an
 * integration test that silently skips proves nothing.
 *
 * Each test works in its own fresh database, named rbt_<tag>_<pid>_<n> so parallel tests and
 * parallel runs never share one, and drops it at the end (DROP … WITH (FORCE)). Setup failures are
 * fatal (exit 1): nothing meaningful can be checked without a database. Single-threaded helpers,
 * except pgt_conninfo and pgt_connect which any thread may call.
 */
#ifndef RB_TESTS_PG_TEST_UTIL_H
#define RB_TESTS_PG_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

/* Longest database name PostgreSQL keeps (NAMEDATALEN - 1). */
#define PGT_DBNAME_MAX 63
/* Size of a conninfo buffer. */
#define PGT_CONNINFO_MAX 1024

/** The socket directory from RB_TEST_PGHOST; exits with a clear failure when unset. */
static inline const char *pgt_host(void)
{
    const char *h = getenv("RB_TEST_PGHOST");
    if (h == NULL || *h == '\0') {
        fprintf(stderr, "RB_TEST_PGHOST is not set: this integration test needs PostgreSQL.\n"
                        "  tools/lib/pg.sh start /tmp/rb-pg\n"
                        "  export RB_TEST_PGHOST=$(tools/lib/pg.sh host /tmp/rb-pg)\n");
        printf("0 passed, 1 failed\n");
        exit(1);
    }
    return h;
}

/** Writes the libpq conninfo of database db into out (values quoted, so any path works). */
static inline void pgt_conninfo(const char *db, char *out, size_t cap)
{
    const char *h = pgt_host();
    size_t n = 0;

    n += (size_t)snprintf(out, cap, "user=postgres dbname='%s' host='", db);
    for (const char *p = h; *p != '\0' && n + 3 < cap; p++) {
        if (*p == '\'' || *p == '\\')
            out[n++] = '\\';
        out[n++] = *p;
    }
    if (n + 2 > cap) {
        fprintf(stderr, "pgt_conninfo: RB_TEST_PGHOST is too long\n");
        exit(1);
    }
    out[n++] = '\'';
    out[n] = '\0';
}

/** Connects to database db; exits on failure. Returns owned (PQfinish it). */
static inline PGconn *pgt_connect(const char *db)
{
    char ci[PGT_CONNINFO_MAX];
    PGconn *c;

    pgt_conninfo(db, ci, sizeof(ci));
    c = PQconnectdb(ci);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect to %s: %s", ci, c ? PQerrorMessage(c) : "out of memory\n");
        fprintf(stderr, "is the cluster running? tools/lib/pg.sh status DIR\n");
        exit(1);
    }
    return c;
}

/** Runs sql; returns 0 when it succeeded, else prints the error and returns -1. */
static inline int pgt_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (!ok)
        fprintf(stderr, "pgt_exec: %s\n  in: %s\n", PQresultErrorMessage(r), sql);
    PQclear(r);
    return ok ? 0 : -1;
}

/** Runs a one-value query and returns it as a long (-1 on error or NULL). */
static inline long pgt_query_long(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long v = -1;

    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "pgt_query_long: %s\n  in: %s\n", PQresultErrorMessage(r), sql);
    PQclear(r);
    return v;
}

/** Creates a fresh database rbt_<tag>_<pid>_<n> and writes its name into name (tag: [a-z0-9_]). */
static inline void pgt_db_create(const char *tag, char *name, size_t cap)
{
    static int counter;
    char sql[128];
    PGconn *admin;

    if (cap < PGT_DBNAME_MAX + 1 ||
        snprintf(name, cap, "rbt_%s_%ld_%d", tag, (long)getpid(), ++counter) > PGT_DBNAME_MAX ||
        strspn(tag, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(tag)) {
        fprintf(stderr, "pgt_db_create: bad tag '%s'\n", tag);
        exit(1);
    }
    admin = pgt_connect("postgres");
    (void)pgt_exec(admin, "SET client_min_messages = warning"); /* no "does not exist" notice */
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    if (pgt_exec(admin, sql) != 0)
        exit(1);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    if (pgt_exec(admin, sql) != 0)
        exit(1);
    PQfinish(admin);
}

/** Drops database name, disconnecting any session still in it. */
static inline void pgt_db_drop(const char *name)
{
    char sql[128];
    PGconn *admin = pgt_connect("postgres");

    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    (void)pgt_exec(admin, sql);
    PQfinish(admin);
}

#endif
