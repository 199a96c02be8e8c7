/*
 * Fuzz target for common/json.c. Parses the input with small limits, walks every token through
 * every getter, and round-trips each string through the writer and the parser: the writer's output
 * must parse, read back equal when the string was valid UTF-8, and be a fixed point otherwise
 * (writing the read-back value again gives the same bytes). rb_json_parse_member must agree with a
 * whole parse. Must never crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FUZZ_STR_MAX = 1 << 16 };

/* 1 when s[0..n) is well-formed UTF-8 (Unicode Table 3-7). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            need = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 4;
        else
            return 0;
        lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        if (n - i < need || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < need; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        }
        i += need;
    }
    return 1;
}

/* Writes s as a JSON string and reads it back into *back (owned); returns its length. */
static size_t write_read(const char *s, size_t n, rb_buf_t *json, char **back)
{
    rb_jw_t w;
    rb_json_t *doc = NULL;
    size_t len = 0, cap;

    json->len = 0;
    rb_jw_init(&w, json);
    rb_jw_strn(&w, s, n);
    if (rb_json_parse(json->base, json->len, NULL, &doc) != RB_OK)
        abort(); /* the writer produced invalid JSON */
    if (rb_json_type(doc, 0) != RB_JSON_STRING)
        abort();
    cap = json->len; /* raw length + 1 always suffices */
    *back = malloc(cap);
    if (*back == NULL || rb_json_str(doc, 0, *back, cap, &len) != RB_OK)
        abort(); /* the writer never emits lone surrogates */
    rb_json_free(doc);
    return len;
}

static void round_trip(const char *s, size_t n)
{
    rb_buf_t a, b;
    char *back = NULL, *back2 = NULL;
    size_t len, len2;

    rb_buf_init(&a, 0);
    rb_buf_init(&b, 0);
    len = write_read(s, n, &a, &back);
    if (utf8_valid((const unsigned char *)s, n) && (len != n || memcmp(back, s, n) != 0))
        abort(); /* valid UTF-8 must survive unchanged */
    /* sanitized output is a fixed point: writing it again gives the same JSON */
    len2 = write_read(back, len, &b, &back2);
    if (a.len != b.len || memcmp(a.base, b.base, a.len) != 0 || len2 != len ||
        memcmp(back, back2, len) != 0)
        abort();
    free(back);
    free(back2);
    rb_buf_free(&a);
    rb_buf_free(&b);
}

/* Every getter on token v: none may crash, and their answers must agree with the type. */
static void probe(const rb_json_t *doc, int v, char *buf)
{
    rb_json_type_t type = rb_json_type(doc, v);
    int64_t i64;
    double d;
    int b, k = -1, val = -1;
    size_t len, start, end, members = 0;

    if (rb_json_span(doc, v, &start, &end) != 0 || start >= end ||
        rb_json_raw(doc, v, &len) == NULL)
        abort();
    if (rb_json_int64(doc, v, &i64) == 0 && type != RB_JSON_NUMBER)
        abort();
    if (rb_json_double(doc, v, &d) == 0 && type != RB_JSON_NUMBER)
        abort();
    if (rb_json_bool(doc, v, &b) == 0 && b != (type == RB_JSON_TRUE))
        abort();
    while (rb_json_next(doc, v, &k, &val)) {
        if (rb_json_type(doc, k) != RB_JSON_STRING)
            abort();
        members++;
    }
    if (type == RB_JSON_OBJECT && members != rb_json_count(doc, v))
        abort();
    if (type == RB_JSON_ARRAY && rb_json_count(doc, v) > 0 &&
        rb_json_index(doc, v, rb_json_count(doc, v) - 1) == -1)
        abort();
    rb_err_t err = rb_json_str(doc, v, buf, FUZZ_STR_MAX, &len);
    if ((err == RB_ERR_NOTFOUND) != (type != RB_JSON_STRING))
        abort();
    if (err == RB_OK) {
        char *dup = rb_json_strdup(doc, v);
        if (dup == NULL || memcmp(dup, buf, len + 1) != 0)
            abort();
        free(dup);
        round_trip(buf, len);
    }
}

/* rb_json_parse_member agrees with a parse: the same error, and for each of a few names the span
 * and the tokens of rb_json_member(doc, 0, name) (or no member, or a refusal when a root name is
 * escaped). */
static void parse_member_agrees(const char *text, size_t size, const rb_json_limits_t *lim,
                                rb_err_t parsed, const rb_json_t *doc)
{
    static const char *const names[] = {"a", "usage", ""};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t s0 = 0, s1 = 0, w0 = 0, w1 = 0;
        rb_json_t *m = NULL, *again = NULL;
        rb_err_t err = rb_json_parse_member(text, size, lim, names[i], &m, &s0, &s1);
        int v, bad;
        if (parsed != RB_OK) {
            if (err != parsed || m != NULL)
                abort();
            continue;
        }
        if (err == RB_ERR_INVAL) /* an escaped root name: only a parse can tell */
            continue;
        v = rb_json_type(doc, 0) == RB_JSON_OBJECT ? rb_json_member(doc, 0, names[i]) : -1;
        if (v < 0) {
            bad = err != RB_ERR_NOTFOUND || m != NULL;
        } else {
            bad = err != RB_OK || rb_json_span(doc, v, &w0, &w1) != 0 || s0 != w0 || s1 != w1 ||
                  rb_json_parse(text + s0, s1 - s0, NULL, &again) != RB_OK ||
                  rb_json_tokens(m) != rb_json_tokens(again) ||
                  rb_json_type(m, 0) != rb_json_type(doc, v);
        }
        rb_json_free(again);
        rb_json_free(m);
        if (bad)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rb_json_limits_t lim = {.depth_max = 32, .tokens_max = 4096};
    rb_json_t *doc = NULL;
    char *buf;
    size_t ntok = 0;

    rb_err_t err;

    /* raw bytes are also a string to sanitize */
    round_trip((const char *)data, size);
    err = rb_json_parse((const char *)data, size, &lim, &doc);
    parse_member_agrees((const char *)data, size, &lim, err, doc);
    if (err != RB_OK)
        return 0;
    buf = malloc(FUZZ_STR_MAX);
    if (buf == NULL)
        abort();
    ntok = rb_json_tokens(doc);
    if (ntok == 0 || ntok > lim.tokens_max)
        abort();
    for (size_t v = 0; v < ntok; v++)
        probe(doc, (int)v, buf);
    /* the paths a gateway uses, on arbitrary shapes */
    rb_json_find(doc, 0, "choices[0].delta.content");
    rb_json_find(doc, 0, "usage.prompt_tokens_details.cached_tokens");
    rb_json_find(doc, 0, "[0][1].a");
    free(buf);
    rb_json_free(doc);
    return 0;
}
