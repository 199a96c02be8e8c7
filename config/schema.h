/*
 * Internal to config/: the table-driven YAML schema walker behind cfg_load, and the arena that
 * owns every string and array of a cfg_t.
 *
 * A schema is a flat table of fields whose keys are dotted paths relative to one YAML mapping
 * ("limits.body_max_bytes"); cfg_schema_walk visits that mapping and its known sub-mappings with
 * an explicit stack (no recursion), rejects unknown and duplicate keys, parses each scalar
 * strictly and stores it at the field's offset in a caller struct. Keys marked CFG_T_SKIP are
 * known but left to the caller (dynamic maps such as plans or models). Every failure writes one
 * "file:line: key.path: message" into the context's error buffer. Single-threaded: a context
 * belongs to one load.
 */
#ifndef RB_CONFIG_SCHEMA_H
#define RB_CONFIG_SCHEMA_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "config/config.h"

/** The bump allocator owning a configuration's memory. */
typedef struct st_cfg_arena_t cfg_arena_t;

/** Creates an empty arena; returns owned (free with cfg_arena_destroy). */
cfg_arena_t *cfg_arena_create(void);
/** Frees the arena and everything allocated from it; NULL is a no-op. */
void cfg_arena_destroy(cfg_arena_t *arena);
/** Zeroed memory valid until the arena is destroyed (never NULL). */
void *cfg_arena_alloc(cfg_arena_t *arena, size_t size);
/** A NUL-terminated copy of s[0..len) in the arena. */
char *cfg_arena_strndup(cfg_arena_t *arena, const char *s, size_t len);
/** A copy of s in the arena. */
char *cfg_arena_strdup(cfg_arena_t *arena, const char *s);

/** Field types. */
typedef enum {
    CFG_T_INT,     /* int, range [min, max] */
    CFG_T_I64,     /* int64_t, range [min, max] */
    CFG_T_SIZE,    /* size_t, range [min, max] */
    CFG_T_BOOL,    /* bool: true|false */
    CFG_T_STR,     /* const char *, length [min, max], checked by flags */
    CFG_T_ENUM,    /* int index into names */
    CFG_T_PRICE,   /* int64_t micro-credits from a USD decimal (uses ctx->usd_per_credit) */
    CFG_T_DECIMAL, /* const char *: a positive exact decimal kept as text */
    CFG_T_STRLIST, /* const char **, count at len_off, at most max items, each checked by flags */
    CFG_T_SECTION, /* a nested mapping whose keys follow in the table as "key.sub" */
    CFG_T_SKIP,    /* a known key the caller handles */
} cfg_type_t;

/** String checks (CFG_T_STR and CFG_T_STRLIST items). */
enum {
    CFG_FL_NULLABLE = 1 << 0, /* null/~ stores NULL */
    CFG_FL_LISTEN = 1 << 1,   /* host:port */
    CFG_FL_URL = 1 << 2,      /* http:// or https:// */
    CFG_FL_NAME = 1 << 3,     /* [A-Za-z0-9._:/-], no spaces */
    CFG_FL_ENVNAME = 1 << 4,  /* [A-Za-z_][A-Za-z0-9_]* */
    CFG_FL_HOST = 1 << 5,     /* a DNS name: [a-z0-9.-] */
    CFG_FL_SLUG = 1 << 6,     /* [a-z0-9][a-z0-9_-]* */
};

/** One field of a schema. */
typedef struct st_cfg_field_t {
    const char *key; /* dotted path relative to the walked mapping */
    cfg_type_t type;
    size_t off;               /* where the value goes in the target struct */
    int64_t min, max;         /* numbers: range; strings: length; lists: max items */
    const char *const *names; /* CFG_T_ENUM: NULL-terminated */
    unsigned flags;           /* CFG_FL_* */
    size_t len_off;           /* CFG_T_STRLIST: where the size_t count goes */
} cfg_field_t;

enum { CFG_SCHEMA_FIELDS_MAX = 64 };

/** The state of one load. */
typedef struct st_cfg_ctx_t {
    const char *file;           /* the file name used in messages */
    cfg_arena_t *arena;         /* where strings go */
    const char *usd_per_credit; /* for CFG_T_PRICE */
    char *errbuf;               /* may be NULL */
    size_t errcap;
} cfg_ctx_t;

/** Parses a YAML stream of one document; RB_ERR_PARSE with "file:line:col: …" on a syntax error.
 *  On success the caller owns *doc (yaml_document_delete). */
rb_err_t cfg_doc_parse(cfg_ctx_t *ctx, const char *yaml, size_t len, yaml_document_t *doc);

/** Writes "file:line: path: <fmt>" (line from `at`, omitted when at is NULL); returns
 * RB_ERR_CONFIG. */
rb_err_t cfg_failf(cfg_ctx_t *ctx, const yaml_node_t *at, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Writes "file:line: path: expected <expected>, got <what at is>"; returns RB_ERR_CONFIG. */
rb_err_t cfg_fail_got(cfg_ctx_t *ctx, const yaml_node_t *at, const char *path,
                      const char *expected);

/** True for an empty or null (~, null) plain scalar. */
bool cfg_node_is_null(const yaml_node_t *node);

/** The scalar's text when node is a scalar without NUL bytes, else NULL. */
const char *cfg_node_str(const yaml_node_t *node);

/**
 * Checks that node is a mapping (or null = empty) of at most max entries with unique, non-empty
 * string keys; stores the entry count in *count.
 */
rb_err_t cfg_map_check(cfg_ctx_t *ctx, yaml_document_t *doc, yaml_node_t *node, const char *path,
                       size_t max, size_t *count);

/**
 * Walks the mapping `map` (null = empty) against table[0..n): stores each value into base,
 * and the 1-based line of each key found into lines[i] (0 when absent). path is the dotted
 * path of map used in messages ("" at the top).
 */
rb_err_t cfg_schema_walk(cfg_ctx_t *ctx, yaml_document_t *doc, yaml_node_t *map, const char *path,
                         const cfg_field_t *table, size_t n, void *base, int *lines);

/** Index of key in table, or -1. */
int cfg_schema_index(const cfg_field_t *table, size_t n, const char *key);

/** The 1-based line where `key` was set in a walk's lines[], or 0 when it was not. */
int cfg_schema_line(const cfg_field_t *table, size_t n, const int *lines, const char *key);

/** Writes "file:line: path: <fmt>" with an explicit line (0 = none); returns RB_ERR_CONFIG. */
rb_err_t cfg_fail_line(cfg_ctx_t *ctx, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Checks one string against CFG_FL_* flags; returns a description of what was expected, or NULL.
 */
const char *cfg_str_check(const char *s, unsigned flags);

#endif
