/*
 * The table-driven YAML schema walker and the configuration arena (see schema.h). libyaml's
 * document API builds the node tree; this file is the only place that reads it.
 */
#include "config/schema.h"

#include <stdio.h>
#include <string.h>

/* ---- arena ---------------------------------------------------------------------------------- */

enum { ARENA_BLOCK_BYTES = 16 << 10, ARENA_ALIGN = 16 };

typedef struct st_arena_block_t {
    struct st_arena_block_t *next;
    size_t used, cap;
    _Alignas(ARENA_ALIGN) unsigned char data[];
} arena_block_t;

struct st_cfg_arena_t {
    arena_block_t *head; /* the block being filled; big allocations go right behind it */
};

cfg_arena_t *cfg_arena_create(void)
{
    return rb_calloc(1, sizeof(cfg_arena_t));
}

void cfg_arena_destroy(cfg_arena_t *arena)
{
    arena_block_t *b, *next;

    if (arena == NULL)
        return;
    for (b = arena->head; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(arena);
}

static arena_block_t *arena_block_new(size_t cap)
{
    arena_block_t *b = rb_calloc(1, sizeof(*b) + cap);
    b->cap = cap;
    return b;
}

void *cfg_arena_alloc(cfg_arena_t *arena, size_t size)
{
    arena_block_t *b;
    void *p;

    RB_ASSERT(arena != NULL && size < ((size_t)1 << 40));
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (size == 0)
        size = ARENA_ALIGN;
    if (size > ARENA_BLOCK_BYTES / 4) {
        b = arena_block_new(size); /* its own block, kept behind the current one */
        if (arena->head == NULL) {
            arena->head = b;
        } else {
            b->next = arena->head->next;
            arena->head->next = b;
        }
        b->used = size;
        return b->data;
    }
    if (arena->head == NULL || arena->head->cap - arena->head->used < size) {
        b = arena_block_new(ARENA_BLOCK_BYTES);
        b->next = arena->head;
        arena->head = b;
    }
    b = arena->head;
    p = b->data + b->used;
    b->used += size;
    RB_ASSERT(b->used <= b->cap);
    return p; /* zeroed by rb_calloc */
}

char *cfg_arena_strndup(cfg_arena_t *arena, const char *s, size_t len)
{
    char *p = cfg_arena_alloc(arena, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *cfg_arena_strdup(cfg_arena_t *arena, const char *s)
{
    RB_ASSERT(s != NULL);
    return cfg_arena_strndup(arena, s, strlen(s));
}

/* ---- messages ------------------------------------------------------------------------------- */

enum { GOT_EXCERPT_MAX = 40, HINT_MAX = 480 };

__attribute__((format(printf, 4, 0))) static void vfail(cfg_ctx_t *ctx, int line, const char *path,
                                                        const char *fmt, va_list ap)
{
    size_t pos = 0;
    int n;

    if (ctx->errbuf == NULL || ctx->errcap == 0)
        return;
    if (line > 0)
        n = snprintf(ctx->errbuf, ctx->errcap, "%s:%d: ", ctx->file, line);
    else
        n = snprintf(ctx->errbuf, ctx->errcap, "%s: ", ctx->file);
    pos = n > 0 ? (size_t)n : 0;
    if (pos < ctx->errcap && path != NULL && path[0] != '\0') {
        n = snprintf(ctx->errbuf + pos, ctx->errcap - pos, "%s: ", path);
        pos += n > 0 ? (size_t)n : 0;
    }
    if (pos < ctx->errcap)
        vsnprintf(ctx->errbuf + pos, ctx->errcap - pos, fmt, ap);
}

rb_err_t cfg_fail_line(cfg_ctx_t *ctx, int line, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ctx, line, path, fmt, ap);
    va_end(ap);
    return RB_ERR_CONFIG;
}

rb_err_t cfg_failf(cfg_ctx_t *ctx, const yaml_node_t *at, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ctx, at != NULL ? (int)at->start_mark.line + 1 : 0, path, fmt, ap);
    va_end(ap);
    return RB_ERR_CONFIG;
}

bool cfg_node_is_null(const yaml_node_t *node)
{
    const char *v;

    if (node == NULL)
        return true;
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    v = (const char *)node->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

const char *cfg_node_str(const yaml_node_t *node)
{
    if (node == NULL || node->type != YAML_SCALAR_NODE)
        return NULL;
    if (strlen((const char *)node->data.scalar.value) != node->data.scalar.length)
        return NULL; /* an escaped NUL byte inside */
    return (const char *)node->data.scalar.value;
}

/* A short, printable description of a node for "got …". */
static void describe(const yaml_node_t *node, char *buf, size_t cap)
{
    size_t i, o = 0, len;
    const unsigned char *v;

    RB_ASSERT(cap > GOT_EXCERPT_MAX + 8);
    if (node == NULL || cfg_node_is_null(node)) {
        snprintf(buf, cap, "nothing");
        return;
    }
    if (node->type != YAML_SCALAR_NODE) {
        snprintf(buf, cap, node->type == YAML_MAPPING_NODE ? "a mapping" : "a list");
        return;
    }
    v = node->data.scalar.value;
    len = node->data.scalar.length;
    buf[o++] = '"';
    for (i = 0; i < len && i < GOT_EXCERPT_MAX; i++)
        buf[o++] = (v[i] >= 0x20 && v[i] < 0x7f) ? (char)v[i] : '?';
    if (len > GOT_EXCERPT_MAX) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
}

rb_err_t cfg_fail_got(cfg_ctx_t *ctx, const yaml_node_t *at, const char *path, const char *expected)
{
    char got[GOT_EXCERPT_MAX + 16];
    describe(at, got, sizeof(got));
    return cfg_failf(ctx, at, path, "expected %s, got %s", expected, got);
}

/* ---- documents ------------------------------------------------------------------------------ */

static rb_err_t syntax_error(cfg_ctx_t *ctx, const yaml_parser_t *p)
{
    if (ctx->errbuf != NULL && ctx->errcap > 0) {
        snprintf(ctx->errbuf, ctx->errcap, "%s:%zu:%zu: YAML syntax error: %s%s%s", ctx->file,
                 p->problem_mark.line + 1, p->problem_mark.column + 1,
                 p->problem != NULL ? p->problem : "out of memory", p->context != NULL ? " " : "",
                 p->context != NULL ? p->context : "");
    }
    return RB_ERR_PARSE;
}

rb_err_t cfg_doc_parse(cfg_ctx_t *ctx, const char *yaml, size_t len, yaml_document_t *doc)
{
    yaml_parser_t parser;
    yaml_document_t extra;
    rb_err_t err = RB_OK;
    bool loaded = false;

    RB_ASSERT(ctx != NULL && doc != NULL && (yaml != NULL || len == 0));
    if (len > CFG_FILE_BYTES_MAX)
        return cfg_failf(ctx, NULL, NULL, "file larger than %d bytes", CFG_FILE_BYTES_MAX);
    if (!yaml_parser_initialize(&parser))
        RB_UNREACHABLE(); /* libyaml fails only on malloc */
    yaml_parser_set_input_string(&parser, (const unsigned char *)(yaml != NULL ? yaml : ""), len);
    if (!yaml_parser_load(&parser, doc)) {
        err = syntax_error(ctx, &parser);
        goto Exit;
    }
    loaded = true;
    /* One document per file: a second one would be silently ignored otherwise. */
    if (!yaml_parser_load(&parser, &extra)) {
        err = syntax_error(ctx, &parser);
        goto Exit;
    }
    if (yaml_document_get_root_node(&extra) != NULL) {
        err = cfg_failf(ctx, yaml_document_get_root_node(&extra), NULL,
                        "expected one YAML document, found a second one");
    }
    yaml_document_delete(&extra);
Exit:
    if (err != RB_OK && loaded)
        yaml_document_delete(doc);
    yaml_parser_delete(&parser);
    return err;
}

rb_err_t cfg_map_check(cfg_ctx_t *ctx, yaml_document_t *doc, yaml_node_t *node, const char *path,
                       size_t max, size_t *count)
{
    yaml_node_pair_t *a, *b;
    size_t n;

    *count = 0;
    if (cfg_node_is_null(node))
        return RB_OK;
    if (node->type != YAML_MAPPING_NODE)
        return cfg_fail_got(ctx, node, path, "a mapping");
    n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    if (n > max)
        return cfg_failf(ctx, node, path, "too many entries (%zu, at most %zu)", n, max);
    for (a = node->data.mapping.pairs.start; a < node->data.mapping.pairs.top; a++) {
        yaml_node_t *key = yaml_document_get_node(doc, a->key);
        const char *k = cfg_node_str(key);
        if (k == NULL || k[0] == '\0' || strlen(k) > CFG_NAME_LEN_MAX)
            return cfg_fail_got(ctx, key, path, "a name of 1 to 128 characters as key");
        for (b = node->data.mapping.pairs.start; b < a; b++) {
            const char *k2 = cfg_node_str(yaml_document_get_node(doc, b->key));
            if (k2 != NULL && strcmp(k, k2) == 0)
                return cfg_failf(ctx, key, path, "duplicate key \"%s\"", k);
        }
    }
    *count = n;
    return RB_OK;
}

/* ---- scalars -------------------------------------------------------------------------------- */

/* Strict: -?[0-9]+, no sign '+', spaces, underscores, hex or trailing junk. */
static bool parse_int64(const char *s, int64_t *out)
{
    bool neg = s[0] == '-';
    int64_t v = 0;
    size_t i = neg ? 1 : 0;

    if (s[i] == '\0')
        return false;
    for (; s[i] != '\0'; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, neg ? -(s[i] - '0') : (s[i] - '0'), &v))
            return false;
    }
    *out = v;
    return true;
}

static bool all_chars(const char *s, const char *extra, bool upper, bool lower, bool digit)
{
    for (; *s != '\0'; s++) {
        char c = *s;
        bool ok = (upper && c >= 'A' && c <= 'Z') || (lower && c >= 'a' && c <= 'z') ||
                  (digit && c >= '0' && c <= '9') || (c != '\0' && strchr(extra, c) != NULL);
        if (!ok)
            return false;
    }
    return true;
}

static bool listen_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    int64_t port;

    if (colon == NULL || colon == s || !parse_int64(colon + 1, &port) || colon[1] == '-')
        return false;
    if (s[0] == '[' && colon[-1] != ']')
        return false;
    return port >= 1 && port <= 65535 && all_chars(s, "[]:.-_", true, true, true);
}

const char *cfg_str_check(const char *s, unsigned flags)
{
    for (const char *p = s; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
            return "text without control characters";
    }
    if ((flags & CFG_FL_LISTEN) && !listen_ok(s))
        return "host:port (like 127.0.0.1:9090)";
    if ((flags & CFG_FL_URL) && !((strncmp(s, "http://", 7) == 0 && s[7] != '\0') ||
                                  (strncmp(s, "https://", 8) == 0 && s[8] != '\0')))
        return "an http:// or https:// URL";
    if ((flags & CFG_FL_URL) && strpbrk(s, " \n\t") != NULL)
        return "a URL without spaces";
    if ((flags & CFG_FL_NAME) && !all_chars(s, "._:/@+-", true, true, true))
        return "a name of letters, digits and ._:/@+-";
    if ((flags & CFG_FL_ENVNAME) &&
        (!all_chars(s, "_", true, true, true) || (s[0] >= '0' && s[0] <= '9')))
        return "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)";
    if ((flags & CFG_FL_HOST) && (!all_chars(s, ".-", false, true, true) || s[0] == '.' ||
                                  s[0] == '-' || s[strlen(s) - 1] == '.'))
        return "a lowercase DNS name (like localhost or apps.example.com)";
    if ((flags & CFG_FL_SLUG) &&
        (!all_chars(s, "_-", false, true, true) || s[0] == '-' || s[0] == '_'))
        return "a lowercase name of letters, digits, - and _ (like my-app)";
    return NULL;
}

/* ---- fields --------------------------------------------------------------------------------- */

static rb_err_t apply_number(cfg_ctx_t *ctx, const cfg_field_t *f, yaml_node_t *val,
                             const char *path, unsigned char *dst)
{
    const char *s = cfg_node_str(val);
    char expected[96];
    int64_t v;

    snprintf(expected, sizeof(expected), "an integer from %lld to %lld", (long long)f->min,
             (long long)f->max);
    if (s == NULL || val->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || !parse_int64(s, &v) ||
        v < f->min || v > f->max)
        return cfg_fail_got(ctx, val, path, expected);
    switch (f->type) {
    case CFG_T_INT:
        RB_ASSERT(f->min >= INT32_MIN && f->max <= INT32_MAX);
        *(int *)(void *)dst = (int)v;
        break;
    case CFG_T_I64:
        *(int64_t *)(void *)dst = v;
        break;
    case CFG_T_SIZE:
        RB_ASSERT(f->min >= 0);
        *(size_t *)(void *)dst = (size_t)v;
        break;
    default:
        RB_UNREACHABLE();
    }
    return RB_OK;
}

static rb_err_t apply_bool(cfg_ctx_t *ctx, yaml_node_t *val, const char *path, unsigned char *dst)
{
    const char *s = cfg_node_str(val);

    if (s == NULL || val->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
        (strcmp(s, "true") != 0 && strcmp(s, "false") != 0))
        return cfg_fail_got(ctx, val, path, "true or false");
    *(bool *)(void *)dst = strcmp(s, "true") == 0;
    return RB_OK;
}

static rb_err_t apply_enum(cfg_ctx_t *ctx, const cfg_field_t *f, yaml_node_t *val, const char *path,
                           unsigned char *dst)
{
    const char *s = cfg_node_str(val);
    char expected[256];
    size_t pos = 0;

    for (int i = 0; s != NULL && f->names[i] != NULL; i++) {
        if (strcmp(s, f->names[i]) == 0) {
            *(int *)(void *)dst = i;
            return RB_OK;
        }
    }
    expected[0] = '\0';
    for (int i = 0; f->names[i] != NULL && pos < sizeof(expected); i++) {
        int n =
            snprintf(expected + pos, sizeof(expected) - pos, "%s%s",
                     i == 0 ? "one of " : (f->names[i + 1] == NULL ? " or " : ", "), f->names[i]);
        pos += n > 0 ? (size_t)n : 0;
    }
    return cfg_fail_got(ctx, val, path, expected);
}

/* Checks one string value; returns its text or NULL after writing the error. */
static const char *string_value(cfg_ctx_t *ctx, const cfg_field_t *f, yaml_node_t *val,
                                const char *path, int64_t min, int64_t max, rb_err_t *err)
{
    const char *s = cfg_node_str(val), *bad;
    char expected[128];
    size_t len;

    if (s == NULL ||
        (val->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && cfg_node_is_null(val) && min > 0)) {
        snprintf(expected, sizeof(expected), "a string of %lld to %lld characters", (long long)min,
                 (long long)max);
        *err = cfg_fail_got(ctx, val, path, expected);
        return NULL;
    }
    len = strlen(s);
    if ((int64_t)len < min || (int64_t)len > max) {
        snprintf(expected, sizeof(expected), "a string of %lld to %lld characters", (long long)min,
                 (long long)max);
        *err = cfg_fail_got(ctx, val, path, expected);
        return NULL;
    }
    if (len > 0 && (bad = cfg_str_check(s, f->flags)) != NULL) {
        *err = cfg_fail_got(ctx, val, path, bad);
        return NULL;
    }
    return s;
}

static rb_err_t apply_str(cfg_ctx_t *ctx, const cfg_field_t *f, yaml_node_t *val, const char *path,
                          unsigned char *dst)
{
    rb_err_t err = RB_OK;
    const char *s;

    if ((f->flags & CFG_FL_NULLABLE) && cfg_node_is_null(val)) {
        *(const char **)(void *)dst = NULL;
        return RB_OK;
    }
    s = string_value(ctx, f, val, path, f->min, f->max > 0 ? f->max : CFG_STRING_LEN_MAX, &err);
    if (s == NULL)
        return err;
    *(const char **)(void *)dst = cfg_arena_strdup(ctx->arena, s);
    return RB_OK;
}

static rb_err_t apply_list(cfg_ctx_t *ctx, yaml_document_t *doc, const cfg_field_t *f,
                           yaml_node_t *val, const char *path, unsigned char *base)
{
    rb_err_t err = RB_OK;
    const char **items;
    size_t n, i = 0;

    if (cfg_node_is_null(val)) {
        *(const char *const **)(void *)(base + f->off) = NULL;
        *(size_t *)(void *)(base + f->len_off) = 0;
        return RB_OK;
    }
    if (val->type != YAML_SEQUENCE_NODE)
        return cfg_fail_got(ctx, val, path, "a list of names");
    n = (size_t)(val->data.sequence.items.top - val->data.sequence.items.start);
    if ((int64_t)n > f->max)
        return cfg_failf(ctx, val, path, "too many items (%zu, at most %lld)", n,
                         (long long)f->max);
    items = cfg_arena_alloc(ctx->arena, (n + 1) * sizeof(*items));
    for (yaml_node_item_t *it = val->data.sequence.items.start; it < val->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        const char *s = string_value(ctx, f, item, path, 1, CFG_NAME_LEN_MAX, &err);
        if (s == NULL)
            return err;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(items[j], s) == 0)
                return cfg_failf(ctx, item, path, "duplicate item \"%s\"", s);
        }
        items[i] = cfg_arena_strdup(ctx->arena, s);
    }
    *(const char *const **)(void *)(base + f->off) = items;
    *(size_t *)(void *)(base + f->len_off) = n;
    return RB_OK;
}

static rb_err_t apply_price(cfg_ctx_t *ctx, const cfg_field_t *f, yaml_node_t *val,
                            const char *path, unsigned char *dst)
{
    const char *s = cfg_node_str(val);
    int64_t micro = 0;
    rb_err_t err;

    if (s == NULL || cfg_node_is_null(val))
        return cfg_fail_got(ctx, val, path, "a price in USD as a decimal like 2.50");
    if (f->type == CFG_T_DECIMAL) {
        /* The unit itself: 1 USD must convert, so it is a positive, sane decimal. */
        err = cfg_decimal_to_micro("1", s, &micro);
        if (err != RB_OK || micro <= 0)
            return cfg_fail_got(ctx, val, path, "a positive decimal of USD like 0.01");
        *(const char **)(void *)dst = cfg_arena_strdup(ctx->arena, s);
        return RB_OK;
    }
    RB_ASSERT(ctx->usd_per_credit != NULL);
    err = cfg_decimal_to_micro(s, ctx->usd_per_credit, &micro);
    if (err == RB_ERR_LIMIT)
        return cfg_fail_got(ctx, val, path,
                            "a price in USD with at most 18 decimals that fits in int64 "
                            "micro-credits");
    if (err != RB_OK)
        return cfg_fail_got(ctx, val, path, "a price in USD as a decimal like 2.50");
    *(int64_t *)(void *)dst = micro;
    return RB_OK;
}

static rb_err_t apply_field(cfg_ctx_t *ctx, yaml_document_t *doc, const cfg_field_t *f,
                            yaml_node_t *val, const char *path, unsigned char *base)
{
    unsigned char *dst = base + f->off;

    switch (f->type) {
    case CFG_T_INT:
    case CFG_T_I64:
    case CFG_T_SIZE:
        return apply_number(ctx, f, val, path, dst);
    case CFG_T_BOOL:
        return apply_bool(ctx, val, path, dst);
    case CFG_T_STR:
        return apply_str(ctx, f, val, path, dst);
    case CFG_T_ENUM:
        return apply_enum(ctx, f, val, path, dst);
    case CFG_T_PRICE:
    case CFG_T_DECIMAL:
        return apply_price(ctx, f, val, path, dst);
    case CFG_T_STRLIST:
        return apply_list(ctx, doc, f, val, path, base);
    case CFG_T_SECTION:
    case CFG_T_SKIP:
        break;
    }
    RB_UNREACHABLE();
    return RB_ERR_STATE;
}

/* ---- the walker ----------------------------------------------------------------------------- */

int cfg_schema_index(const cfg_field_t *table, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].key, key) == 0)
            return (int)i;
    }
    return -1;
}

int cfg_schema_line(const cfg_field_t *table, size_t n, const int *lines, const char *key)
{
    int i = cfg_schema_index(table, n, key);
    RB_ASSERT(i >= 0); /* a typo in our own code */
    return lines[i];
}

/* "unknown key (expected one of: a, b, c)": the keys valid beside the unknown one. */
static rb_err_t unknown_key(cfg_ctx_t *ctx, const yaml_node_t *key, const char *path,
                            const cfg_field_t *table, size_t n, const char *parent)
{
    char hint[HINT_MAX];
    size_t plen = strlen(parent), pos = 0;

    hint[0] = '\0';
    for (size_t i = 0; i < n && pos + 1 < sizeof(hint); i++) {
        const char *k = table[i].key;
        int w;
        if (plen > 0 && (strncmp(k, parent, plen) != 0 || k[plen] != '.'))
            continue;
        k += plen > 0 ? plen + 1 : 0;
        if (strchr(k, '.') != NULL)
            continue;
        w = snprintf(hint + pos, sizeof(hint) - pos, "%s%s", pos > 0 ? ", " : "", k);
        pos += w > 0 ? (size_t)w : 0;
    }
    return cfg_failf(ctx, key, path, "unknown key (expected one of: %s)", hint);
}

typedef struct st_walk_frame_t {
    yaml_node_t *map;
    yaml_node_pair_t *next; /* the next pair to visit */
    size_t path_len;        /* path[0..path_len) is this mapping's own path */
} walk_frame_t;

/* Appends ".key" (or "key" at the top) to path at len; returns the new length or 0 on error. */
static size_t path_push(cfg_ctx_t *ctx, yaml_node_t *key, char *path, size_t len, rb_err_t *err)
{
    const char *k = cfg_node_str(key);
    int n;

    if (k == NULL || k[0] == '\0') {
        path[len] = '\0';
        *err = cfg_fail_got(ctx, key, path, "a string key");
        return 0;
    }
    n = snprintf(path + len, CFG_KEY_PATH_MAX - len, "%s%s", len > 0 ? "." : "", k);
    if (n < 0 || len + (size_t)n >= CFG_KEY_PATH_MAX) {
        path[len] = '\0';
        *err = cfg_failf(ctx, key, path, "key path too long");
        return 0;
    }
    return len + (size_t)n;
}

rb_err_t cfg_schema_walk(cfg_ctx_t *ctx, yaml_document_t *doc, yaml_node_t *map, const char *path0,
                         const cfg_field_t *table, size_t n, void *base, int *lines)
{
    walk_frame_t stack[CFG_NESTING_MAX];
    char path[CFG_KEY_PATH_MAX];
    size_t base_len = strlen(path0), rel = base_len > 0 ? base_len + 1 : 0;
    int depth = 0;
    rb_err_t err = RB_OK;

    RB_ASSERT(n <= CFG_SCHEMA_FIELDS_MAX && base_len < CFG_KEY_PATH_MAX);
    memset(lines, 0, n * sizeof(*lines));
    memcpy(path, path0, base_len + 1);
    if (cfg_node_is_null(map))
        return RB_OK;
    if (map->type != YAML_MAPPING_NODE)
        return cfg_fail_got(ctx, map, path, "a mapping");
    stack[depth++] = (walk_frame_t){map, map->data.mapping.pairs.start, base_len};
    while (depth > 0) {
        walk_frame_t *f = &stack[depth - 1];
        yaml_node_t *key, *val;
        size_t len;
        int i;
        if (f->next == f->map->data.mapping.pairs.top) {
            depth--;
            continue;
        }
        key = yaml_document_get_node(doc, f->next->key);
        val = yaml_document_get_node(doc, f->next->value);
        f->next++;
        if ((len = path_push(ctx, key, path, f->path_len, &err)) == 0)
            return err;
        if ((i = cfg_schema_index(table, n, path + rel)) < 0) {
            char parent[CFG_KEY_PATH_MAX];
            snprintf(parent, sizeof(parent), "%.*s",
                     (int)(f->path_len > rel ? f->path_len - rel : 0), path + rel);
            return unknown_key(ctx, key, path, table, n, parent);
        }
        if (lines[i] != 0)
            return cfg_failf(ctx, key, path, "duplicate key (first set on line %d)", lines[i]);
        lines[i] = (int)key->start_mark.line + 1;
        if (table[i].type == CFG_T_SKIP ||
            (table[i].type == CFG_T_SECTION && cfg_node_is_null(val)))
            continue;
        if (table[i].type != CFG_T_SECTION) {
            if ((err = apply_field(ctx, doc, &table[i], val, path, base)) != RB_OK)
                return err;
            continue;
        }
        if (val->type != YAML_MAPPING_NODE)
            return cfg_fail_got(ctx, val, path, "a mapping");
        RB_ASSERT(depth < CFG_NESTING_MAX); /* tables are at most a few levels deep */
        stack[depth++] = (walk_frame_t){val, val->data.mapping.pairs.start, len};
    }
    return RB_OK;
}
