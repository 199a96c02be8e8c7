#include "common/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The only file that includes jsmn (STYLE.md rule 5). These macros change sizeof(jsmntok_t): keep
 * them identical wherever jsmn.h is included. */
#define JSMN_STATIC
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>

/* jsmn keeps offsets in int: longer documents are refused with RB_ERR_LIMIT. */
#define JSON_TEXT_LEN_MAX ((size_t)0x7fffffff)
/* rb_json_double copies the number to a NUL-terminated local buffer of this size. */
#define JSON_NUMBER_LEN_MAX 128
/* The validator keeps its container stack (one bit per level) on the C stack up to this depth. */
#define JSON_STACK_BITS_LOCAL 1024
/* rb_jw_t tracks one bit per level in uint64_t masks: level 0 is the top, 63 the deepest. */
#define JW_DEPTH_MAX 63
/* rb_json_find: the largest [N] index accepted in a path. */
#define JSON_PATH_INDEX_MAX 0x7fffffff

struct st_rb_json_t {
    const char *text;
    size_t len;
    int ntok;
    jsmntok_t *tok; /* ntok tokens in document order; tok[0] is the root */
    int *
        next; /* next[i]: index of the first token after i's subtree (a key's includes its value) */
};

/* ---- validation (pass 1): strict RFC 8259 grammar, depth and token count ---- */

typedef enum {
    SCAN_VALUE,          /* a value is required */
    SCAN_VALUE_OR_CLOSE, /* just after '[' */
    SCAN_KEY,            /* after ',' in an object */
    SCAN_KEY_OR_CLOSE,   /* just after '{' */
    SCAN_COLON,          /* after a key */
    SCAN_AFTER,          /* after a value: ',' or a closing bracket, or the end at depth 0 */
} scan_state_t;

/* A root member looked for while validating (rb_json_parse_member). */
typedef struct {
    const char *key;
    size_t key_len;
    enum { WANT_LOOKING, WANT_NEXT_VALUE, WANT_INSIDE, WANT_FOUND } state;
    int escaped;             /* a root member name before it was written with escapes */
    const char *start, *end; /* the value's span, once found */
    size_t tok0, tok1;       /* the token count before and after it */
} scan_want_t;

typedef struct {
    const char *p, *end;
    scan_state_t state;
    unsigned depth, depth_max;
    size_t tokens, tokens_max;
    uint8_t *stack;    /* bit d set: level d (1-based depth - 1) is an object */
    scan_want_t *want; /* NULL: nothing looked for */
} scan_t;

static int is_ws(char c)
{
    /* RFC 8259: ws = space / horizontal tab / line feed / carriage return */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* SWAR: 8 bytes of a string at a time. Nonzero when a byte of v is below n (n <= 0x80); the lowest
 * flagged byte is the first such byte (a borrow can only flag bytes above it). */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "scan_string reads 8 bytes as a word");
static uint64_t swar_below(uint64_t v, uint8_t n)
{
    return (v - 0x0101010101010101ull * n) & ~v & 0x8080808080808080ull;
}

/* Nonzero when a byte of v equals b. */
static uint64_t swar_has(uint64_t v, uint8_t b)
{
    return swar_below(v ^ (0x0101010101010101ull * b), 1);
}

/* p is at the opening quote. Returns the byte after the closing quote, or NULL. Escapes are checked
 * lexically here; surrogate pairing is checked when the string is unescaped. */
static const char *scan_string(const char *p, const char *end)
{
    RB_ASSERT(p < end && *p == '"');
    p++;
    while (p < end) {
        unsigned char c;

        if (end - p >= 8) { /* to the first quote, backslash or control in the next 8 bytes */
            uint64_t v, m;
            memcpy(&v, p, 8);
            m = swar_below(v, 0x20) | swar_has(v, '"') | swar_has(v, '\\');
            if (m == 0) {
                p += 8;
                continue;
            }
            p += __builtin_ctzll(m) / 8; /* little-endian: the lowest flagged byte comes first */
        }
        c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20) /* RFC 8259: control characters must be escaped */
            return NULL;
        if (c == '\\') {
            if (++p == end)
                return NULL;
            switch (*p) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                break;
            case 'u':
                if (end - p < 5 || hex_val(p[1]) < 0 || hex_val(p[2]) < 0 || hex_val(p[3]) < 0 ||
                    hex_val(p[4]) < 0)
                    return NULL;
                p += 4;
                break;
            default:
                return NULL;
            }
        }
        p++;
    }
    return NULL;
}

static const char *scan_digits(const char *p, const char *end)
{
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p == start ? NULL : p;
}

/* RFC 8259: number = [ minus ] int [ frac ] [ exp ]; int = zero / ( digit1-9 *DIGIT ) */
static const char *scan_number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p == end)
        return NULL;
    if (*p == '0')
        p++;
    else if ((p = scan_digits(p, end)) == NULL)
        return NULL;
    if (p < end && *p == '.') {
        if ((p = scan_digits(p + 1, end)) == NULL)
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if ((p = scan_digits(p, end)) == NULL)
            return NULL;
    }
    return p;
}

static const char *scan_literal(const char *p, const char *end)
{
    static const char *const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(end - p) >= n && memcmp(p, words[i], n) == 0)
            return p + n;
    }
    return NULL;
}

/* Counts one token against the limit. */
static rb_err_t scan_count(scan_t *s)
{
    if (++s->tokens > s->tokens_max)
        return RB_ERR_LIMIT;
    return RB_OK;
}

static rb_err_t scan_open(scan_t *s, int is_obj)
{
    if (s->depth >= s->depth_max)
        return RB_ERR_LIMIT;
    if (is_obj)
        s->stack[s->depth / 8] |= (uint8_t)(1u << (s->depth % 8));
    else
        s->stack[s->depth / 8] &= (uint8_t) ~(1u << (s->depth % 8));
    s->depth++;
    s->p++;
    s->state = is_obj ? SCAN_KEY_OR_CLOSE : SCAN_VALUE_OR_CLOSE;
    return scan_count(s);
}

static int scan_top_is_obj(const scan_t *s)
{
    RB_ASSERT(s->depth > 0);
    return (s->stack[(s->depth - 1) / 8] >> ((s->depth - 1) % 8)) & 1;
}

static rb_err_t scan_close(scan_t *s, int is_obj)
{
    if (s->depth == 0 || scan_top_is_obj(s) != is_obj)
        return RB_ERR_PARSE;
    s->depth--;
    s->p++;
    s->state = SCAN_AFTER;
    if (s->want != NULL && s->want->state == WANT_INSIDE && s->depth == 1) {
        s->want->end = s->p;
        s->want->tok1 = s->tokens;
        s->want->state = WANT_FOUND;
    }
    return RB_OK;
}

/* A value where one is expected: a container opens, a scalar is consumed whole. */
static rb_err_t scan_value(scan_t *s)
{
    const char *q;
    char c = *s->p;

    if (s->want != NULL && s->want->state == WANT_NEXT_VALUE) {
        s->want->start = s->p;
        s->want->tok0 = s->tokens;
        s->want->state = WANT_INSIDE;
    }
    if (c == '{' || c == '[')
        return scan_open(s, c == '{');
    if (c == '"')
        q = scan_string(s->p, s->end);
    else if (c == '-' || (c >= '0' && c <= '9'))
        q = scan_number(s->p, s->end);
    else
        q = scan_literal(s->p, s->end);
    if (q == NULL)
        return RB_ERR_PARSE;
    s->p = q;
    s->state = SCAN_AFTER;
    if (s->want != NULL && s->want->state == WANT_INSIDE && s->depth == 1) {
        s->want->end = q;
        s->want->tok1 = s->tokens + 1; /* this scalar included */
        s->want->state = WANT_FOUND;
    }
    return scan_count(s);
}

/* A member name of the root object (the string [k, q)) against the one looked for. */
static void scan_want_key(scan_want_t *w, const char *k, const char *q)
{
    size_t n = (size_t)(q - k) - 2;

    if (w->state != WANT_LOOKING)
        return;
    if (memchr(k + 1, '\\', n) != NULL)
        w->escaped = 1;
    else if (n == w->key_len && memcmp(k + 1, w->key, n) == 0)
        w->state = WANT_NEXT_VALUE;
}

/* Consumes one significant character (and what it starts) according to the state. */
static rb_err_t scan_step(scan_t *s)
{
    char c = *s->p;

    switch (s->state) {
    case SCAN_VALUE_OR_CLOSE:
        if (c == ']')
            return scan_close(s, 0);
        return scan_value(s);
    case SCAN_VALUE:
        return scan_value(s);
    case SCAN_KEY_OR_CLOSE:
        if (c == '}')
            return scan_close(s, 1);
        /* fallthrough */
    case SCAN_KEY: {
        const char *k = s->p;
        if (c != '"' || (s->p = scan_string(s->p, s->end)) == NULL)
            return RB_ERR_PARSE;
        if (s->want != NULL && s->depth == 1)
            scan_want_key(s->want, k, s->p);
        s->state = SCAN_COLON;
        return scan_count(s);
    }
    case SCAN_COLON:
        if (c != ':')
            return RB_ERR_PARSE;
        s->p++;
        s->state = SCAN_VALUE;
        return RB_OK;
    case SCAN_AFTER:
        if (s->depth == 0) /* trailing garbage or a second root value */
            return RB_ERR_PARSE;
        if (c == ',') {
            s->p++;
            s->state = scan_top_is_obj(s) ? SCAN_KEY : SCAN_VALUE;
            return RB_OK;
        }
        if (c == '}' || c == ']')
            return scan_close(s, c == '}');
        return RB_ERR_PARSE;
    }
    RB_UNREACHABLE();
}

/* Pass 1: validates text against RFC 8259 and counts jsmn's tokens (containers, keys, strings,
 * numbers and literals) without recursion. */
static rb_err_t scan_doc(const char *text, size_t len, unsigned depth_max, size_t tokens_max,
                         scan_want_t *want, size_t *tokens_out)
{
    uint8_t local[JSON_STACK_BITS_LOCAL / 8];
    scan_t s = {.p = text,
                .end = text + len,
                .state = SCAN_VALUE,
                .depth_max = depth_max,
                .tokens_max = tokens_max,
                .stack = local,
                .want = want};
    rb_err_t err = RB_OK;

    /* depth never exceeds len, so the stack needs at most min(depth_max, len) bits */
    if (depth_max > JSON_STACK_BITS_LOCAL && len > JSON_STACK_BITS_LOCAL)
        s.stack = rb_calloc((depth_max < len ? depth_max : len) / 8 + 1, 1);
    while (err == RB_OK) {
        while (s.p < s.end && is_ws(*s.p))
            s.p++;
        if (s.p == s.end)
            break;
        err = scan_step(&s);
    }
    if (err == RB_OK && (s.state != SCAN_AFTER || s.depth != 0))
        err = RB_ERR_PARSE; /* empty, or cut short */
    if (err == RB_OK)
        *tokens_out = s.tokens;
    if (s.stack != local)
        free(s.stack);
    return err;
}

/* ---- tokens (pass 2) ---- */

/* next[i] = first index after i's subtree; children follow their parent, so a reverse pass over the
 * parent links sees each child's final value before its parent. */
static void link_subtrees(rb_json_t *doc)
{
    for (int i = 0; i < doc->ntok; i++)
        doc->next[i] = i + 1;
    for (int i = doc->ntok - 1; i > 0; i--) {
        int p = doc->tok[i].parent;
        RB_ASSERT(p >= 0 && p < i);
        if (doc->next[i] > doc->next[p])
            doc->next[p] = doc->next[i];
    }
    RB_ASSERT(doc->ntok == 0 || doc->next[0] == doc->ntok);
}

/* A scalar root (jsmn's strict mode wants a delimiter after a primitive): one token by hand. */
static void fill_scalar_root(rb_json_t *doc)
{
    size_t a = 0, b = doc->len;
    while (is_ws(doc->text[a]))
        a++;
    while (is_ws(doc->text[b - 1]))
        b--;
    doc->tok[0] = (jsmntok_t){.type = JSMN_PRIMITIVE, .start = (int)a, .end = (int)b, .parent = -1};
    if (doc->text[a] == '"') {
        doc->tok[0].type = JSMN_STRING;
        doc->tok[0].start = (int)a + 1;
        doc->tok[0].end = (int)b - 1;
    }
}

/* Fills doc->tok; returns the token count. */
static int tokenize(rb_json_t *doc)
{
    jsmn_parser p;
    size_t a = 0;

    while (is_ws(doc->text[a]))
        a++;
    if (doc->text[a] != '{' && doc->text[a] != '[') {
        fill_scalar_root(doc);
        return 1;
    }
    jsmn_init(&p);
    return jsmn_parse(&p, doc->text, doc->len, doc->tok, (unsigned)doc->ntok);
}

/* Validates text[0..len) (scan_doc with want, which may be NULL) under limits (NULL: defaults). */
static rb_err_t validate(const char *text, size_t len, const rb_json_limits_t *limits,
                         scan_want_t *want, size_t *ntok)
{
    unsigned depth_max = RB_JSON_DEPTH_MAX_DEFAULT, tokens_max = RB_JSON_TOKENS_MAX_DEFAULT;
    rb_err_t err;

    RB_ASSERT(text != NULL || len == 0);
    if (limits != NULL && limits->depth_max != 0)
        depth_max = limits->depth_max;
    if (limits != NULL && limits->tokens_max != 0)
        tokens_max = limits->tokens_max;
    if (len > JSON_TEXT_LEN_MAX)
        return RB_ERR_LIMIT;
    if ((err = scan_doc(text, len, depth_max, tokens_max, want, ntok)) != RB_OK)
        return err;
    RB_ASSERT(*ntok >= 1 && *ntok <= tokens_max && *ntok <= len);
    return RB_OK;
}

/* Tokenizes text[0..len), a JSON text of ntok tokens (validated). */
static rb_json_t *doc_build(const char *text, size_t len, size_t ntok)
{
    rb_json_t *doc = rb_malloc(sizeof(*doc) + ntok * (sizeof(jsmntok_t) + sizeof(int)));

    doc->text = text;
    doc->len = len;
    doc->ntok = (int)ntok;
    doc->tok = (jsmntok_t *)(doc + 1);
    doc->next = (int *)(doc->tok + ntok);
    if (tokenize(doc) != (int)ntok)
        RB_UNREACHABLE(); /* the validator accepted the text, so jsmn must agree on the count */
    link_subtrees(doc);
    return doc;
}

rb_err_t rb_json_parse(const char *text, size_t len, const rb_json_limits_t *limits,
                       rb_json_t **out)
{
    size_t ntok = 0;
    rb_err_t err;

    RB_ASSERT(out != NULL);
    *out = NULL;
    if ((err = validate(text, len, limits, NULL, &ntok)) != RB_OK)
        return err;
    *out = doc_build(text, len, ntok);
    return RB_OK;
}

rb_err_t rb_json_parse_member(const char *text, size_t len, const rb_json_limits_t *limits,
                              const char *key, rb_json_t **out, size_t *start, size_t *end)
{
    scan_want_t want = {.key = key, .key_len = strlen(key)};
    size_t ntok = 0;
    rb_err_t err;

    RB_ASSERT(out != NULL && start != NULL && end != NULL);
    *out = NULL;
    if ((err = validate(text, len, limits, &want, &ntok)) != RB_OK)
        return err;
    if (want.escaped)
        return RB_ERR_INVAL;
    if (want.state != WANT_FOUND)
        return RB_ERR_NOTFOUND;
    /* a member's value is a JSON text of its own, its tokens counted while it was scanned */
    *start = (size_t)(want.start - text);
    *end = (size_t)(want.end - text);
    *out = doc_build(want.start, *end - *start, want.tok1 - want.tok0);
    return RB_OK;
}

void rb_json_free(rb_json_t *doc)
{
    free(doc);
}

/* ---- navigation ---- */

static const jsmntok_t *tok_at(const rb_json_t *doc, int v)
{
    RB_ASSERT(doc != NULL);
    if (v < 0)
        return NULL;
    RB_ASSERT(v < doc->ntok);
    return &doc->tok[v];
}

size_t rb_json_tokens(const rb_json_t *doc)
{
    RB_ASSERT(doc != NULL && doc->ntok > 0);
    return (size_t)doc->ntok;
}

rb_json_type_t rb_json_type(const rb_json_t *doc, int v)
{
    const jsmntok_t *t = tok_at(doc, v);
    if (t == NULL)
        return RB_JSON_ABSENT;
    switch (t->type) {
    case JSMN_OBJECT:
        return RB_JSON_OBJECT;
    case JSMN_ARRAY:
        return RB_JSON_ARRAY;
    case JSMN_STRING:
        return RB_JSON_STRING;
    case JSMN_PRIMITIVE:
        switch (doc->text[t->start]) {
        case 't':
            return RB_JSON_TRUE;
        case 'f':
            return RB_JSON_FALSE;
        case 'n':
            return RB_JSON_NULL;
        default:
            return RB_JSON_NUMBER;
        }
    case JSMN_UNDEFINED:
        break;
    }
    RB_UNREACHABLE();
}

size_t rb_json_count(const rb_json_t *doc, int v)
{
    const jsmntok_t *t = tok_at(doc, v);
    if (t == NULL || (t->type != JSMN_OBJECT && t->type != JSMN_ARRAY))
        return 0;
    RB_ASSERT(t->size >= 0);
    return (size_t)t->size;
}

int rb_json_index(const rb_json_t *doc, int arr, size_t i)
{
    const jsmntok_t *t = tok_at(doc, arr);
    int e;

    if (t == NULL || t->type != JSMN_ARRAY || i >= (size_t)t->size)
        return -1;
    for (e = arr + 1; i > 0; i--)
        e = doc->next[e];
    RB_ASSERT(e < doc->next[arr] && doc->tok[e].parent == arr);
    return e;
}

int rb_json_elem_next(const rb_json_t *doc, int arr, int *el)
{
    const jsmntok_t *t = tok_at(doc, arr);
    int e;

    RB_ASSERT(el != NULL);
    if (t == NULL || t->type != JSMN_ARRAY)
        return 0;
    if (*el == -1) {
        e = arr + 1;
    } else {
        RB_ASSERT(*el > arr && *el < doc->ntok && doc->tok[*el].parent == arr);
        e = doc->next[*el];
    }
    if (e >= doc->next[arr])
        return 0;
    RB_ASSERT(doc->tok[e].parent == arr);
    *el = e;
    return 1;
}

int rb_json_next(const rb_json_t *doc, int obj, int *key, int *val)
{
    const jsmntok_t *t = tok_at(doc, obj);
    int k;

    RB_ASSERT(key != NULL && val != NULL);
    if (t == NULL || t->type != JSMN_OBJECT)
        return 0;
    if (*key == -1) {
        k = obj + 1;
    } else {
        RB_ASSERT(*key > obj && *key < doc->ntok && doc->tok[*key].parent == obj);
        k = doc->next[*key];
    }
    if (k >= doc->next[obj])
        return 0;
    RB_ASSERT(doc->tok[k].type == JSMN_STRING && doc->tok[k].parent == obj && k + 1 < doc->ntok);
    *key = k;
    *val = k + 1;
    return 1;
}

const char *rb_json_raw(const rb_json_t *doc, int v, size_t *len)
{
    const jsmntok_t *t = tok_at(doc, v);
    RB_ASSERT(len != NULL);
    if (t == NULL) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)(t->end - t->start);
    return doc->text + t->start;
}

int rb_json_span(const rb_json_t *doc, int v, size_t *start, size_t *end)
{
    const jsmntok_t *t = tok_at(doc, v);
    int quote;

    RB_ASSERT(start != NULL && end != NULL);
    if (t == NULL)
        return -1;
    quote = t->type == JSMN_STRING;
    *start = (size_t)(t->start - quote);
    *end = (size_t)(t->end + quote);
    return 0;
}

/* ---- strings ---- */

/* Appends code point cp as UTF-8 to out (room for 4 bytes); returns the byte count. */
static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    RB_ASSERT(cp <= 0x10FFFF);
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads the 4 hex digits of a \u escape at p (p points after "\u"); -1 when invalid or short. */
static long hex4(const char *p, const char *end)
{
    long v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int h = hex_val(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Decodes the \u escape(s) at *pp (pointing after "\u") into out; joins surrogate pairs. */
static int unescape_u(const char **pp, const char *end, char *out, size_t *n)
{
    long hi = hex4(*pp, end), lo;

    if (hi < 0 || (hi >= 0xDC00 && hi <= 0xDFFF)) /* a low surrogate cannot come first */
        return -1;
    *pp += 4;
    if (hi < 0xD800 || hi > 0xDBFF) {
        *n = utf8_put((uint32_t)hi, out);
        return 0;
    }
    /* RFC 8259 §7: a character outside the BMP is a UTF-16 surrogate pair, "\uD834\uDD1E" */
    if (end - *pp < 6 || (*pp)[0] != '\\' || (*pp)[1] != 'u')
        return -1;
    lo = hex4(*pp + 2, end);
    if (lo < 0xDC00 || lo > 0xDFFF)
        return -1;
    *pp += 6;
    *n = utf8_put((uint32_t)(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)), out);
    return 0;
}

/* Decodes one unit of escaped string text at *pp into out (up to 4 bytes); advances *pp. */
static int unescape_next(const char **pp, const char *end, char *out, size_t *n)
{
    const char *p = *pp;

    RB_ASSERT(p < end);
    if (*p != '\\') {
        out[0] = *p;
        *n = 1;
        *pp = p + 1;
        return 0;
    }
    if (end - p < 2)
        return -1;
    *pp = p + 2;
    *n = 1;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
        out[0] = p[1];
        return 0;
    case 'b':
        out[0] = '\b';
        return 0;
    case 'f':
        out[0] = '\f';
        return 0;
    case 'n':
        out[0] = '\n';
        return 0;
    case 'r':
        out[0] = '\r';
        return 0;
    case 't':
        out[0] = '\t';
        return 0;
    case 'u':
        return unescape_u(pp, end, out, n);
    }
    return -1;
}

rb_err_t rb_json_str(const rb_json_t *doc, int v, char *buf, size_t cap, size_t *len_out)
{
    const jsmntok_t *t = tok_at(doc, v);
    const char *p, *end;
    size_t len = 0;
    rb_err_t err = RB_OK;

    RB_ASSERT(buf != NULL || cap == 0);
    if (t == NULL || t->type != JSMN_STRING) {
        err = RB_ERR_NOTFOUND;
        goto Exit;
    }
    p = doc->text + t->start;
    end = doc->text + t->end;
    while (p < end) {
        char unit[4];
        size_t n;
        if (unescape_next(&p, end, unit, &n) != 0) {
            err = RB_ERR_PARSE;
            goto Exit;
        }
        if (cap - len <= n || cap == 0) { /* keep room for the NUL */
            err = RB_ERR_LIMIT;
            goto Exit;
        }
        memcpy(buf + len, unit, n);
        len += n;
    }
    if (cap == 0) {
        err = RB_ERR_LIMIT;
        goto Exit;
    }
    buf[len] = '\0';
Exit:
    if (err != RB_OK) {
        len = 0;
        if (cap > 0)
            buf[0] = '\0';
    }
    if (len_out != NULL)
        *len_out = len;
    return err;
}

char *rb_json_strdup(const rb_json_t *doc, int v)
{
    const jsmntok_t *t = tok_at(doc, v);
    char *s;
    size_t cap;

    if (t == NULL || t->type != JSMN_STRING)
        return NULL;
    /* unescaping never lengthens: each escape is at least as long as the bytes it stands for */
    cap = (size_t)(t->end - t->start) + 1;
    s = rb_malloc(cap);
    if (rb_json_str(doc, v, s, cap, NULL) != RB_OK) {
        free(s);
        return NULL;
    }
    return s;
}

/* 1 when string token t unescapes to exactly s[0..n). */
static int str_eq_n(const rb_json_t *doc, const jsmntok_t *t, const char *s, size_t n)
{
    const char *p = doc->text + t->start, *end = doc->text + t->end;
    size_t raw = (size_t)(end - p), off = 0;

    /* an escape only lengthens the raw text: most keys are told apart by their length alone */
    if (raw == n)
        return memcmp(p, s, n) == 0 && memchr(p, '\\', raw) == NULL;
    if (raw < n || memchr(p, '\\', raw) == NULL)
        return 0;
    while (p < end) {
        char unit[4];
        size_t k;
        if (unescape_next(&p, end, unit, &k) != 0 || n - off < k || memcmp(s + off, unit, k) != 0)
            return 0;
        off += k;
    }
    return off == n;
}

int rb_json_str_eq(const rb_json_t *doc, int v, const char *s)
{
    const jsmntok_t *t = tok_at(doc, v);
    RB_ASSERT(s != NULL);
    if (t == NULL || t->type != JSMN_STRING)
        return 0;
    return str_eq_n(doc, t, s, strlen(s));
}

/* ---- lookups ---- */

static int member_n(const rb_json_t *doc, int obj, const char *key, size_t n)
{
    int k = -1, v = -1;
    while (rb_json_next(doc, obj, &k, &v)) {
        if (str_eq_n(doc, &doc->tok[k], key, n))
            return v;
    }
    return -1;
}

int rb_json_member(const rb_json_t *doc, int obj, const char *key)
{
    RB_ASSERT(key != NULL);
    return member_n(doc, obj, key, strlen(key));
}

/* Parses "[N]" at *pp; returns N or -1 when malformed. */
static long path_index(const char **pp)
{
    const char *p = *pp + 1;
    long n = 0;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > JSON_PATH_INDEX_MAX)
            return -1;
    }
    if (*p != ']')
        return -1;
    *pp = p + 1;
    return n;
}

int rb_json_find(const rb_json_t *doc, int v, const char *path)
{
    const char *p = path;

    RB_ASSERT(path != NULL);
    while (*p != '\0' && v != -1) {
        if (*p == '[') {
            long i = path_index(&p);
            v = i < 0 ? -1 : rb_json_index(doc, v, (size_t)i);
        } else {
            size_t n = strcspn(p, ".[");
            if (n == 0) /* "a..b", ".a" */
                return -1;
            v = member_n(doc, v, p, n);
            p += n;
        }
        if (*p == '.') {
            p++;
            if (*p == '\0' || *p == '.' || *p == '[') /* "a." or "a.[0]" */
                return -1;
        } else if (*p != '\0' && *p != '[') {
            return -1; /* "[0]x" */
        }
    }
    return v;
}

/* ---- scalars ---- */

int rb_json_int64(const rb_json_t *doc, int v, int64_t *out)
{
    const jsmntok_t *t = tok_at(doc, v);
    const char *p, *end;
    uint64_t acc = 0, limit = (uint64_t)INT64_MAX;
    int neg = 0;

    RB_ASSERT(out != NULL);
    if (rb_json_type(doc, v) != RB_JSON_NUMBER)
        return -1;
    p = doc->text + t->start;
    end = doc->text + t->end;
    if (*p == '-') {
        neg = 1;
        limit += 1; /* |INT64_MIN| */
        p++;
    }
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') /* a fraction or an exponent */
            return -1;
        if (acc > (limit - (uint64_t)(*p - '0')) / 10)
            return -1;
        acc = acc * 10 + (uint64_t)(*p - '0');
    }
    RB_ASSERT(acc <= limit);
    if (neg)
        *out = acc == 0 ? 0 : -(int64_t)(acc - 1) - 1;
    else
        *out = (int64_t)acc;
    return 0;
}

int rb_json_double(const rb_json_t *doc, int v, double *out)
{
    const jsmntok_t *t = tok_at(doc, v);
    char num[JSON_NUMBER_LEN_MAX];
    size_t n;
    double d;

    RB_ASSERT(out != NULL);
    if (rb_json_type(doc, v) != RB_JSON_NUMBER)
        return -1;
    n = (size_t)(t->end - t->start);
    if (n >= sizeof(num))
        return -1;
    memcpy(num, doc->text + t->start, n);
    num[n] = '\0';
    d = strtod(num, NULL);
    if (!isfinite(d)) /* "1e999" */
        return -1;
    *out = d;
    return 0;
}

int rb_json_bool(const rb_json_t *doc, int v, int *out)
{
    rb_json_type_t type = rb_json_type(doc, v);
    RB_ASSERT(out != NULL);
    if (type != RB_JSON_TRUE && type != RB_JSON_FALSE)
        return -1;
    *out = type == RB_JSON_TRUE;
    return 0;
}

int rb_json_get_int64(const rb_json_t *doc, int v, const char *path, int64_t *out)
{
    return rb_json_int64(doc, rb_json_find(doc, v, path), out);
}

int rb_json_get_bool(const rb_json_t *doc, int v, const char *path, int *out)
{
    return rb_json_bool(doc, rb_json_find(doc, v, path), out);
}

rb_err_t rb_json_get_str(const rb_json_t *doc, int v, const char *path, char *buf, size_t cap)
{
    size_t len;
    rb_err_t err = rb_json_str(doc, rb_json_find(doc, v, path), buf, cap, &len);

    if (err == RB_OK && strlen(buf) != len) { /* "\u0000": the C string would be cut short */
        buf[0] = '\0';
        return RB_ERR_INVAL;
    }
    return err;
}

/* ---- writer ---- */

size_t rb_utf8_seq(const unsigned char *s, size_t n, size_t *bad_len)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need, i;

    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4;
    else
        need = 0; /* 80..C1 (continuation, overlong lead) and F5..FF never start a character */
    if (c == 0xE0)
        lo = 0xA0; /* overlong */
    else if (c == 0xED)
        hi = 0x9F; /* UTF-16 surrogates */
    else if (c == 0xF0)
        lo = 0x90; /* overlong */
    else if (c == 0xF4)
        hi = 0x8F; /* past U+10FFFF */
    for (i = 1; i < need && i < n; i++) {
        unsigned char b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF))
            break;
    }
    if (need != 0 && i == need)
        return need;
    *bad_len = i;
    return 0;
}

/* The escape for ASCII byte c, or NULL when it goes out as is. */
static const char *ascii_escape(unsigned char c, char tmp[8])
{
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    }
    if (c >= 0x20)
        return NULL;
    snprintf(tmp, 8, "\\u%04x", c);
    return tmp;
}

static const char *json_seq_escape(const unsigned char *p, size_t k, char tmp[8])
{
    if (k == 1)
        return ascii_escape(*p, tmp);
    if (k == 3 && p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9))
        return p[2] == 0xA8 ? "\\u2028" : "\\u2029"; /* valid JSON, but end lines in JavaScript */
    return NULL;
}

void rb_json_escape(rb_buf_t *out, const char *s, size_t n)
{
    rb_utf8_escape(out, s, n, json_seq_escape);
}

void rb_jw_init(rb_jw_t *w, rb_buf_t *out)
{
    RB_ASSERT(w != NULL && out != NULL);
    *w = (rb_jw_t){.out = out, .first = 1};
}

static int jw_in_obj(const rb_jw_t *w)
{
    return w->depth > 0 && ((w->in_obj >> w->depth) & 1);
}

/* Before any value: the comma, and the object/key discipline. */
static void jw_value_prefix(rb_jw_t *w)
{
    uint64_t bit = (uint64_t)1 << w->depth;

    if (jw_in_obj(w)) {
        RB_ASSERT(w->after_key); /* a value inside an object needs rb_jw_key first */
        w->after_key = 0;
    } else {
        RB_ASSERT(!w->after_key);
        if (w->depth > 0 && !(w->first & bit))
            rb_buf_append(w->out, ",", 1);
    }
    w->first &= ~bit;
}

static void jw_begin(rb_jw_t *w, int is_obj)
{
    uint64_t bit;

    jw_value_prefix(w);
    RB_ASSERT(w->depth < JW_DEPTH_MAX);
    w->depth++;
    bit = (uint64_t)1 << w->depth;
    w->first |= bit;
    if (is_obj)
        w->in_obj |= bit;
    else
        w->in_obj &= ~bit;
    rb_buf_append(w->out, is_obj ? "{" : "[", 1);
}

static void jw_end(rb_jw_t *w, int is_obj)
{
    RB_ASSERT(w->depth > 0 && jw_in_obj(w) == is_obj && !w->after_key);
    w->depth--;
    rb_buf_append(w->out, is_obj ? "}" : "]", 1);
}

void rb_jw_obj_begin(rb_jw_t *w)
{
    jw_begin(w, 1);
}

void rb_jw_obj_end(rb_jw_t *w)
{
    jw_end(w, 1);
}

void rb_jw_arr_begin(rb_jw_t *w)
{
    jw_begin(w, 0);
}

void rb_jw_arr_end(rb_jw_t *w)
{
    jw_end(w, 0);
}

void rb_jw_key(rb_jw_t *w, const char *key)
{
    uint64_t bit = (uint64_t)1 << w->depth;

    RB_ASSERT(key != NULL && jw_in_obj(w) && !w->after_key);
    if (!(w->first & bit))
        rb_buf_append(w->out, ",", 1);
    w->first &= ~bit;
    rb_buf_append(w->out, "\"", 1);
    rb_json_escape(w->out, key, strlen(key));
    rb_buf_append(w->out, "\":", 2);
    w->after_key = 1;
}

void rb_jw_str(rb_jw_t *w, const char *s)
{
    RB_ASSERT(s != NULL);
    rb_jw_strn(w, s, strlen(s));
}

void rb_jw_strn(rb_jw_t *w, const char *s, size_t n)
{
    jw_value_prefix(w);
    rb_buf_append(w->out, "\"", 1);
    rb_json_escape(w->out, s, n);
    rb_buf_append(w->out, "\"", 1);
}

/* Room for the decimal digits of a 64-bit number, sign included. */
#define JW_NUM_MAX 24

/* Writes v's decimal digits, '-' first when neg, ending at end; returns where they start. The usage
 * spool writes ten numbers a request: printf's two passes per number showed in profiles. */
static char *jw_digits(uint64_t v, int neg, char *end)
{
    char *p = end;

    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (neg)
        *--p = '-';
    return p;
}

void rb_jw_int64(rb_jw_t *w, int64_t v)
{
    char num[JW_NUM_MAX], *p;
    /* the magnitude in unsigned arithmetic: -INT64_MIN does not fit in int64_t */
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    jw_value_prefix(w);
    p = jw_digits(mag, v < 0, num + sizeof(num));
    rb_buf_append(w->out, p, (size_t)(num + sizeof(num) - p));
}

void rb_jw_uint64(rb_jw_t *w, uint64_t v)
{
    char num[JW_NUM_MAX], *p;

    jw_value_prefix(w);
    p = jw_digits(v, 0, num + sizeof(num));
    rb_buf_append(w->out, p, (size_t)(num + sizeof(num) - p));
}

void rb_jw_double(rb_jw_t *w, double v)
{
    char num[40];

    jw_value_prefix(w);
    if (!isfinite(v)) {
        rb_buf_append(w->out, "null", 4);
        return;
    }
    /* the shortest of %.15g/%.17g that reads back as the same double ("0.1", not 0.1000…01) */
    snprintf(num, sizeof(num), "%.15g", v);
    if (strtod(num, NULL) != v)
        snprintf(num, sizeof(num), "%.17g", v);
    rb_buf_puts(w->out, num);
}

void rb_jw_bool(rb_jw_t *w, int v)
{
    jw_value_prefix(w);
    rb_buf_puts(w->out, v ? "true" : "false");
}

void rb_jw_null(rb_jw_t *w)
{
    jw_value_prefix(w);
    rb_buf_append(w->out, "null", 4);
}

void rb_jw_raw(rb_jw_t *w, const char *json, size_t n)
{
    RB_ASSERT(json != NULL || n == 0);
    jw_value_prefix(w);
    rb_buf_append(w->out, json, n);
}

void rb_jw_kstr(rb_jw_t *w, const char *key, const char *s)
{
    rb_jw_key(w, key);
    rb_jw_str(w, s);
}

void rb_jw_kint64(rb_jw_t *w, const char *key, int64_t v)
{
    rb_jw_key(w, key);
    rb_jw_int64(w, v);
}

void rb_jw_kbool(rb_jw_t *w, const char *key, int v)
{
    rb_jw_key(w, key);
    rb_jw_bool(w, v);
}
