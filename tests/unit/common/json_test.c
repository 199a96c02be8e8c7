/*
 * Tests for common/json.c: the strict reader (escapes, surrogates, limits, malformed input,
 * numbers, paths, iteration) and the writer (escaping, invalid UTF-8, structure), and their round
 * trip.
 */
#include "common/json.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

enum { NEST_BUF_MAX = 4096 };

static rb_json_t *parse_ok(const char *text)
{
    rb_json_t *doc = NULL;
    rb_err_t err = rb_json_parse(text, strlen(text), NULL, &doc);
    if (err != RB_OK)
        fprintf(stderr, "parse failed (%s): %s\n", rb_err_name(err), text);
    CHECK_INT_EQ(err, RB_OK);
    return doc;
}

/* Unescapes the string at path into a static buffer; returns NULL on error. */
static const char *str_at(const rb_json_t *doc, const char *path, size_t *len)
{
    static char buf[256];
    if (rb_json_str(doc, rb_json_find(doc, 0, path), buf, sizeof(buf), len) != RB_OK)
        return NULL;
    return buf;
}

static void test_escapes(void)
{
    const char *text = "[\"\\\"\", \"\\\\\", \"\\/\", \"\\b\", \"\\f\", \"\\n\", \"\\r\", \"\\t\","
                       " \"\\u0041\", \"\\u00e9\", \"\\u20AC\", \"\\ud83d\\ude00\", \"a\\u0000b\","
                       " \"\\uD834\\uDD1E\", \"plain \\\"quoted\\\" text\", \"\\uFFFF\"]";
    static const struct {
        const char *path, *want;
        size_t len;
    } cases[] = {
        {"[0]", "\"", 1},
        {"[1]", "\\", 1},
        {"[2]", "/", 1},
        {"[3]", "\b", 1},
        {"[4]", "\f", 1},
        {"[5]", "\n", 1},
        {"[6]", "\r", 1},
        {"[7]", "\t", 1},
        {"[8]", "A", 1},
        {"[9]", "\xC3\xA9", 2},
        {"[10]", "\xE2\x82\xAC", 3},
        {"[11]", "\xF0\x9F\x98\x80", 4}, /* U+1F600 from a surrogate pair */
        {"[12]", "a\0b", 3},             /* \u0000 is kept: the length tells */
        {"[13]", "\xF0\x9D\x84\x9E", 4}, /* U+1D11E, the RFC 8259 example */
        {"[14]", "plain \"quoted\" text", 19},
        {"[15]", "\xEF\xBF\xBF", 3},
    };
    rb_json_t *doc = parse_ok(text);
    if (doc == NULL)
        return;
    CHECK_INT_EQ(rb_json_count(doc, 0), sizeof(cases) / sizeof(cases[0]));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = 99;
        const char *got = str_at(doc, cases[i].path, &len);
        CHECK(got != NULL);
        CHECK_INT_EQ(len, cases[i].len);
        CHECK(got != NULL && memcmp(got, cases[i].want, cases[i].len) == 0 && got[len] == '\0');
    }
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "[11]"), "\xF0\x9F\x98\x80"));
    CHECK(!rb_json_str_eq(doc, rb_json_find(doc, 0, "[12]"), "a")); /* "a\0b" is not "a" */
    char *dup = rb_json_strdup(doc, rb_json_find(doc, 0, "[14]"));
    CHECK_STR_EQ(dup, "plain \"quoted\" text");
    free(dup);
    rb_json_free(doc);
}

static void test_surrogate_errors(void)
{
    static const char *const bad[] = {
        "\"\\ud83d\"",           /* lone high surrogate at the end */
        "\"\\ud83dx\"",          /* high surrogate followed by a plain byte */
        "\"\\ud83d\\ud83d\"",    /* high followed by high */
        "\"\\ude00\"",           /* lone low surrogate */
        "\"\\ude00\\ud83d\"",    /* pair in the wrong order */
        "\"\\ud83d\\n\"",        /* high followed by another escape */
        "\"\\ud83d\\u0041\"",    /* high followed by a non-surrogate \u */
        "\"ok \\uDBFF\\uE000\"", /* low half out of range */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char buf[64] = "junk";
        size_t len = 99;
        rb_json_t *doc = parse_ok(bad[i]); /* lexically valid: the error comes on unescape */
        if (doc == NULL)
            continue;
        CHECK_INT_EQ(rb_json_str(doc, 0, buf, sizeof(buf), &len), RB_ERR_PARSE);
        CHECK_INT_EQ(len, 0);
        CHECK_STR_EQ(buf, "");
        CHECK(rb_json_strdup(doc, 0) == NULL);
        CHECK(!rb_json_str_eq(doc, 0, "\xF0\x9F\x98\x80"));
        rb_json_free(doc);
    }
    /* the highest pair decodes to U+10FFFF */
    rb_json_t *doc = parse_ok("\"\\uDBFF\\uDFFF\"");
    char *s = rb_json_strdup(doc, 0);
    CHECK_STR_EQ(s, "\xF4\x8F\xBF\xBF");
    free(s);
    rb_json_free(doc);
}

/* Writes s (n bytes) as a JSON string, parses it back and returns 1 when the unescaped value is s.
 */
static int round_trip(const char *s, size_t n)
{
    rb_buf_t b;
    rb_jw_t w;
    rb_json_t *doc = NULL;
    char *got = malloc(n * 4 + 16);
    size_t len = 0;
    int ok = 0;

    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_arr_begin(&w);
    rb_jw_strn(&w, s, n);
    rb_jw_arr_end(&w);
    if (rb_json_parse(b.base, b.len, NULL, &doc) == RB_OK &&
        rb_json_str(doc, rb_json_index(doc, 0, 0), got, n * 4 + 16, &len) == RB_OK)
        ok = len == n && memcmp(got, s, n) == 0;
    rb_json_free(doc);
    rb_buf_free(&b);
    free(got);
    return ok;
}

static void test_unicode_round_trip(void)
{
    char all[128];
    static const char *const samples[] = {
        "",
        "h\xC3\xA9llo w\xC3\xB6rld",                        /* 2-byte */
        "\xE2\x82\xAC 100, \xE4\xB8\xAD\xE6\x96\x87",       /* 3-byte */
        "\xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF4\x8F\xBF\xBF", /* 4-byte incl. U+10FFFF */
        "line\xE2\x80\xA8sep\xE2\x80\xA9para",              /* U+2028/2029 */
        "\"quotes\" and \\backslashes\\ and /slashes/",
        "\xEF\xBB\xBF\xEF\xBF\xBD\xED\x9F\xBF\xEE\x80\x80", /* BOM, U+FFFD, U+D7FF, U+E000 */
    };
    for (int i = 0; i < 128; i++)
        all[i] = (char)i; /* every ASCII byte including NUL and the control characters */
    CHECK(round_trip(all, sizeof(all)));
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
        CHECK(round_trip(samples[i], strlen(samples[i])));
}

/* Escapes n bytes of s with rb_json_escape and compares with want. */
static void check_escape(const char *s, size_t n, const char *want)
{
    rb_buf_t b;
    rb_buf_init(&b, 0);
    rb_json_escape(&b, s, n);
    CHECK_STR_EQ(rb_buf_cstr(&b), want);
    rb_buf_free(&b);
}

#define FFFD "\xEF\xBF\xBD"

static void test_writer_escaping(void)
{
    check_escape("a\"b\\c/d", 7, "a\\\"b\\\\c/d");
    check_escape("\n\r\t\b\f", 5, "\\n\\r\\t\\b\\f");
    check_escape("\x01\x1f\x7f", 3, "\\u0001\\u001f\x7f");
    check_escape("a\0b", 3, "a\\u0000b");
    check_escape("\xE2\x80\xA8\xE2\x80\xA9", 6, "\\u2028\\u2029");
    check_escape("\xC3\xA9\xF0\x9F\x98\x80", 6, "\xC3\xA9\xF0\x9F\x98\x80"); /* valid: as is */
    /* invalid UTF-8: one U+FFFD per maximal ill-formed subpart (Unicode §3.9) */
    check_escape("a\xC0\x80z", 4, "a" FFFD FFFD "z");         /* overlong NUL */
    check_escape("\xC1\xBF", 2, FFFD FFFD);                   /* overlong */
    check_escape("\xE0\x80\x80", 3, FFFD FFFD FFFD);          /* overlong 3-byte */
    check_escape("\xF0\x80\x80\x80", 4, FFFD FFFD FFFD FFFD); /* overlong 4-byte */
    check_escape("\xED\xA0\x80", 3, FFFD FFFD FFFD);          /* UTF-8-encoded surrogate */
    check_escape("x\xE2\x82", 3, "x" FFFD);                   /* truncated at the end */
    check_escape("\xE2\x82y", 3, FFFD "y");                   /* truncated in the middle */
    check_escape("\xF0\x9F\x98", 3, FFFD);                    /* truncated 4-byte */
    check_escape("\x80\xBF", 2, FFFD FFFD);                   /* stray continuations */
    check_escape("\xF5\x80\x80\x80", 4, FFFD FFFD FFFD FFFD); /* lead past U+10FFFF */
    check_escape("\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD); /* U+110000 */
    check_escape("\xFF", 1, FFFD);
}

/* Every byte value at every position of a short string: the escape of that byte alone, with the
 * plain bytes around it copied as they are (the runs of plain bytes are copied whole). */
static void test_writer_escaping_every_byte(void)
{
    static const char named[] = "\n\r\t\b\f", letters[] = "nrtbf";
    for (int c = 0; c < 256; c++) {
        const char *nm = c != 0 ? strchr(named, c) : NULL;
        char want_c[8];
        if (c == '"' || c == '\\')
            snprintf(want_c, sizeof(want_c), "\\%c", c);
        else if (nm != NULL)
            snprintf(want_c, sizeof(want_c), "\\%c", letters[nm - named]);
        else if (c < 0x20)
            snprintf(want_c, sizeof(want_c), "\\u%04x", c);
        else if (c < 0x80)
            snprintf(want_c, sizeof(want_c), "%c", c);
        else
            snprintf(want_c, sizeof(want_c), FFFD); /* a lone lead or continuation byte */
        for (size_t len = 1; len <= 20; len++) {
            for (size_t at = 0; at < len; at++) {
                char s[20], want[64];
                memset(s, 'a', len);
                s[at] = (char)c;
                snprintf(want, sizeof(want), "%.*s%s%.*s", (int)at, s, want_c, (int)(len - at - 1),
                         s + at + 1);
                check_escape(s, len, want);
            }
        }
    }
}

static void test_writer_structure(void)
{
    rb_buf_t b;
    rb_jw_t w;

    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "model");
    rb_jw_str(&w, "gpt-4o");
    rb_jw_key(&w, "list");
    rb_jw_arr_begin(&w);
    rb_jw_bool(&w, 1);
    rb_jw_bool(&w, 0);
    rb_jw_null(&w);
    rb_jw_int64(&w, INT64_MIN);
    rb_jw_uint64(&w, UINT64_MAX);
    rb_jw_double(&w, 0.1);
    rb_jw_double(&w, -2.5e-300);
    rb_jw_double(&w, 0.0 / 0.0);
    rb_jw_arr_begin(&w);
    rb_jw_arr_end(&w);
    rb_jw_obj_begin(&w);
    rb_jw_obj_end(&w);
    rb_jw_arr_end(&w);
    rb_jw_key(&w, "raw");
    rb_jw_raw(&w, "{\"x\":[1]}", 9);
    rb_jw_key(&w, "k\"ey");
    rb_jw_strn(&w, "a\0", 2);
    rb_jw_obj_end(&w);
    CHECK_INT_EQ(w.depth, 0);
    CHECK_STR_EQ(rb_buf_cstr(&b), "{\"model\":\"gpt-4o\",\"list\":[true,false,null,"
                                  "-9223372036854775808,18446744073709551615,0.1,-2.5e-300,null,"
                                  "[],{}],\"raw\":{\"x\":[1]},\"k\\\"ey\":\"a\\u0000\"}");
    /* the output is valid JSON and reads back */
    rb_json_t *doc = NULL;
    double d = 0;
    CHECK_INT_EQ(rb_json_parse(b.base, b.len, NULL, &doc), RB_OK);
    CHECK_INT_EQ(rb_json_double(doc, rb_json_find(doc, 0, "list[5]"), &d), 0);
    CHECK(d == 0.1);
    CHECK(rb_json_find(doc, 0, "raw.x[0]") != -1);
    CHECK(rb_json_member(doc, 0, "k\"ey") != -1);
    rb_json_free(doc);

    /* member names with escapes: compared unescaped, whatever their raw length */
    const char *esc = "{\"a\\nb\":1,\"c\\\\d\":2,\"\\u0065\":3}";
    CHECK_INT_EQ(rb_json_parse(esc, strlen(esc), NULL, &doc), RB_OK);
    CHECK_INT_EQ(rb_json_member(doc, 0, "a\nb"), 2);   /* raw 4 bytes, name 3 */
    CHECK_INT_EQ(rb_json_member(doc, 0, "a\\nb"), -1); /* same raw length, not the same name */
    CHECK_INT_EQ(rb_json_member(doc, 0, "c\\d"), 4);
    CHECK_INT_EQ(rb_json_member(doc, 0, "e"), 6);
    CHECK_INT_EQ(rb_json_member(doc, 0, "\\u0065"), -1);
    rb_json_free(doc);

    /* top-level values are written back to back; a bounded buffer flags overflow */
    rb_buf_free(&b);
    rb_buf_init(&b, 8);
    rb_jw_init(&w, &b);
    rb_jw_int64(&w, 1);
    rb_jw_int64(&w, 2);
    CHECK_STR_EQ(rb_buf_cstr(&b), "12");
    CHECK(!b.overflow);
    rb_jw_str(&w, "too long for eight");
    CHECK(b.overflow);
    rb_buf_free(&b);
}

typedef enum {
    MISUSE_VALUE_WITHOUT_KEY,
    MISUSE_KEY_IN_ARRAY,
    MISUSE_KEY_TWICE,
    MISUSE_END_AT_TOP,
    MISUSE_WRONG_END,
    MISUSE_END_AFTER_KEY,
    MISUSE_TOO_DEEP,
    MISUSE_NONE, /* the control: the same calls used correctly must not abort */
    MISUSE__COUNT,
} misuse_t;

static void misuse(misuse_t m)
{
    rb_buf_t b;
    rb_jw_t w;

    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    switch (m) {
    case MISUSE_VALUE_WITHOUT_KEY:
        rb_jw_int64(&w, 1);
        break;
    case MISUSE_KEY_IN_ARRAY:
        rb_jw_key(&w, "a");
        rb_jw_arr_begin(&w);
        rb_jw_key(&w, "b");
        break;
    case MISUSE_KEY_TWICE:
        rb_jw_key(&w, "a");
        rb_jw_key(&w, "b");
        break;
    case MISUSE_END_AT_TOP:
        rb_jw_obj_end(&w);
        rb_jw_obj_end(&w);
        break;
    case MISUSE_WRONG_END:
        rb_jw_arr_end(&w);
        break;
    case MISUSE_END_AFTER_KEY:
        rb_jw_key(&w, "a");
        rb_jw_obj_end(&w);
        break;
    case MISUSE_TOO_DEEP:
        rb_jw_key(&w, "a");
        for (int i = 0; i < 63; i++) /* depth 64 */
            rb_jw_arr_begin(&w);
        break;
    case MISUSE_NONE:
        rb_jw_key(&w, "a");
        for (int i = 0; i < 62; i++) /* depth 63 is the deepest allowed */
            rb_jw_arr_begin(&w);
        for (int i = 0; i < 62; i++)
            rb_jw_arr_end(&w);
        rb_jw_obj_end(&w);
        break;
    case MISUSE__COUNT:
        break;
    }
    rb_buf_free(&b);
}

/* Writer misuse is a programmer error: each case must abort (in a child process). */
static void test_writer_misuse(void)
{
    for (int m = 0; m < MISUSE__COUNT; m++) {
        int status = 0;
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            freopen("/dev/null", "w", stderr); /* the expected assertion messages */
            misuse((misuse_t)m);
            _exit(0);
        }
        CHECK(waitpid(pid, &status, 0) == pid);
        if (m == MISUSE_NONE)
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        else
            CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    }
}

/* Builds n nested containers: "[[[...]]]" or {"a":{"a":...{}}}. */
static size_t nest(char *buf, size_t cap, unsigned n, int obj)
{
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *open = obj ? (i + 1 < n ? "{\"a\":" : "{") : "[";
        RB_ASSERT(len + 5 < cap);
        memcpy(buf + len, open, strlen(open));
        len += strlen(open);
    }
    for (unsigned i = 0; i < n; i++) {
        RB_ASSERT(len + 1 < cap);
        buf[len++] = obj ? '}' : ']';
    }
    buf[len] = '\0';
    return len;
}

static void test_depth_limit(void)
{
    static char buf[NEST_BUF_MAX];
    rb_json_limits_t lim = {.depth_max = 10};
    rb_json_t *doc = NULL;

    for (int obj = 0; obj <= 1; obj++) {
        size_t n = nest(buf, sizeof(buf), 10, obj);
        CHECK_INT_EQ(rb_json_parse(buf, n, &lim, &doc), RB_OK);
        CHECK(rb_json_find(doc, 0, obj ? "a.a.a.a.a.a.a.a.a" : "[0][0][0][0][0][0][0][0][0]") !=
              -1);
        rb_json_free(doc);
        n = nest(buf, sizeof(buf), 11, obj);
        CHECK_INT_EQ(rb_json_parse(buf, n, &lim, &doc), RB_ERR_LIMIT);
        CHECK(doc == NULL);
        /* the default is 64 */
        n = nest(buf, sizeof(buf), RB_JSON_DEPTH_MAX_DEFAULT, obj);
        CHECK_INT_EQ(rb_json_parse(buf, n, NULL, &doc), RB_OK);
        rb_json_free(doc);
        n = nest(buf, sizeof(buf), RB_JSON_DEPTH_MAX_DEFAULT + 1, obj);
        CHECK_INT_EQ(rb_json_parse(buf, n, NULL, &doc), RB_ERR_LIMIT);
    }
    /* a deep limit takes the heap path of the validator's stack */
    lim.depth_max = 1500;
    size_t n = nest(buf, sizeof(buf), 1500, 0);
    CHECK_INT_EQ(rb_json_parse(buf, n, &lim, &doc), RB_OK);
    rb_json_free(doc);
    n = nest(buf, sizeof(buf), 1501, 0);
    CHECK_INT_EQ(rb_json_parse(buf, n, &lim, &doc), RB_ERR_LIMIT);
    /* scalars do not count as depth */
    lim.depth_max = 1;
    CHECK_INT_EQ(rb_json_parse("[1,\"a\",true]", 12, &lim, &doc), RB_OK);
    rb_json_free(doc);
    CHECK_INT_EQ(rb_json_parse("[[]]", 4, &lim, &doc), RB_ERR_LIMIT);
}

static void test_token_limit(void)
{
    rb_json_limits_t lim = {.tokens_max = 4};
    rb_json_t *doc = NULL;

    /* [1,2,3] is four tokens: the array and three numbers */
    CHECK_INT_EQ(rb_json_parse("[1,2,3]", 7, &lim, &doc), RB_OK);
    CHECK_INT_EQ(rb_json_count(doc, 0), 3);
    rb_json_free(doc);
    CHECK_INT_EQ(rb_json_parse("[1,2,3,4]", 9, &lim, &doc), RB_ERR_LIMIT);
    CHECK(doc == NULL);
    /* keys count: {"a":1,"b":2} is five */
    lim.tokens_max = 5;
    CHECK_INT_EQ(rb_json_parse("{\"a\":1,\"b\":2}", 13, &lim, &doc), RB_OK);
    rb_json_free(doc);
    lim.tokens_max = 4;
    CHECK_INT_EQ(rb_json_parse("{\"a\":1,\"b\":2}", 13, &lim, &doc), RB_ERR_LIMIT);
    lim.tokens_max = 1;
    CHECK_INT_EQ(rb_json_parse("\"scalar\"", 8, &lim, &doc), RB_OK);
    rb_json_free(doc);
}

static void test_malformed(void)
{
    static const struct {
        const char *text;
        size_t len; /* 0: strlen */
    } bad[] = {
        {"", 0},           {"   ", 0},
        {"{", 0},          {"}", 0},
        {"[", 0},          {"]", 0},
        {"[1,]", 0},       {"[,1]", 0},
        {"[1 2]", 0},      {"[1,,2]", 0},
        {"{\"a\" 1}", 0},  {"{\"a\":}", 0},
        {"{\"a\":1,}", 0}, {"{,}", 0},
        {"{a:1}", 0},      {"{\"a\":1 \"b\":2}", 0},
        {"{1:2}", 0},      {"{\"a\"}", 0},
        {"[\"a\":1]", 0},  {"{\"a\":1]", 0},
        {"[1}", 0},        {"[1]]", 0},
        {"[01]", 0},       {"01", 0},
        {"-01", 0},        {"+1", 0},
        {".5", 0},         {"[.5]", 0},
        {"1.", 0},         {"[1.]", 0},
        {"1.e5", 0},       {"1e", 0},
        {"1e+", 0},        {"-", 0},
        {"[-]", 0},        {"--1", 0},
        {"0x10", 0},       {"1e5.0", 0},
        {"tru", 0},        {"[tru]", 0},
        {"truex", 0},      {"[truefalse]", 0},
        {"nul", 0},        {"True", 0},
        {"[NaN]", 0},      {"[Infinity]", 0},
        {"'a'", 0},        {"\"abc", 0},
        {"\"a\x01z\"", 0}, {"\"t\tb\"", 0},
        {"\"a\nb\"", 0},   {"\"\\x\"", 0},
        {"\"\\u12\"", 0},  {"\"\\u12G4\"", 0},
        {"[\"a\\\"]", 0},  {"\"\\\"", 0},
        {"{} {}", 0},      {"[] x", 0},
        {"1 2", 0},        {"\"a\" \"b\"", 0},
        {"[1]\0", 4},      {"[\0]", 3},
        {"\"a\0b\"", 5},   {"\xEF\xBB\xBF{}", 0},
        {"[1]\f", 0},      {"{\"a\":[1,{\"b\":2]}}", 0},
        {"[[[]]", 0},      {"{\"a\":1}}", 0},
        {"[1:2]", 0},      {"{\"a\"::1}", 0},
        {"[1,2", 0},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = bad[i].len != 0 ? bad[i].len : strlen(bad[i].text);
        rb_json_t *doc = (rb_json_t *)&doc; /* must be reset to NULL */
        rb_err_t err = rb_json_parse(bad[i].text, len, NULL, &doc);
        if (err != RB_ERR_PARSE)
            fprintf(stderr, "bad[%zu] \"%s\": %s\n", i, bad[i].text, rb_err_name(err));
        CHECK_INT_EQ(err, RB_ERR_PARSE);
        CHECK(doc == NULL);
        size_t s0, s1;           /* rb_json_parse_member validates as rb_json_parse does */
        doc = (rb_json_t *)&doc; /* and must reset it too */
        CHECK_INT_EQ(rb_json_parse_member(bad[i].text, len, NULL, "a", &doc, &s0, &s1),
                     RB_ERR_PARSE);
        CHECK(doc == NULL);
    }
    CHECK(sizeof(bad) / sizeof(bad[0]) >= 30);
}

static void test_valid_edges(void)
{
    static const char *const good[] = {
        "{}",
        "[]",
        " \t\r\n[ ]\n",
        "{ }",
        "[[],{},[[]],{\"a\":{}}]",
        "0",
        "-0",
        "\"\"",
        "true",
        "false",
        " null ",
        "1e5",
        "1E-5",
        "-1.5e+10",
        "0.0",
        "[0,-0,1,-1]",
        "{\"\":\"\"}",
        "{\"a\":1,\"a\":2}",
        "\"\\u0000\"",
        "[\"\\/\"]",
        "\"\xF0\x9F\x98\x80 raw utf-8\"",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        rb_json_free(parse_ok(good[i]));

    rb_json_t *doc = parse_ok("[-0, 1e5, 1E-5, 9223372036854775807, -9223372036854775808,"
                              " 9223372036854775808, -9223372036854775809, 1.0, 1e999, 12,"
                              " 99999999999999999999999, \"7\", true, -12]");
    int64_t i64 = 42;
    double d = 0;
    int b = -1;
    CHECK_INT_EQ(rb_json_count(doc, 0), 14);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[0]", &i64), 0);
    CHECK_INT_EQ(i64, 0);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[1]", &i64), -1); /* exponent: not an integer */
    CHECK_INT_EQ(rb_json_double(doc, rb_json_index(doc, 0, 1), &d), 0);
    CHECK(d == 1e5);
    CHECK_INT_EQ(rb_json_double(doc, rb_json_index(doc, 0, 2), &d), 0);
    CHECK(d == 1e-5);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[3]", &i64), 0);
    CHECK(i64 == INT64_MAX);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[4]", &i64), 0);
    CHECK(i64 == INT64_MIN);
    i64 = 42;
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[5]", &i64), -1); /* INT64_MAX + 1 */
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[6]", &i64), -1); /* INT64_MIN - 1 */
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[7]", &i64), -1); /* 1.0 has a fraction */
    CHECK_INT_EQ(i64, 42);                                    /* untouched on failure */
    CHECK_INT_EQ(rb_json_double(doc, rb_json_index(doc, 0, 7), &d), 0);
    CHECK(d == 1.0);
    CHECK_INT_EQ(rb_json_double(doc, rb_json_index(doc, 0, 8), &d), -1); /* out of range */
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[9]", &i64), 0);
    CHECK_INT_EQ(i64, 12);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[10]", &i64), -1);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[11]", &i64), -1); /* a string is not a number */
    CHECK_INT_EQ(rb_json_double(doc, rb_json_index(doc, 0, 11), &d), -1);
    CHECK_INT_EQ(rb_json_get_bool(doc, 0, "[12]", &b), 0);
    CHECK_INT_EQ(b, 1);
    CHECK_INT_EQ(rb_json_get_bool(doc, 0, "[13]", &b), -1);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[13]", &i64), 0);
    CHECK_INT_EQ(i64, -12);
    rb_json_free(doc);
}

static void test_scalar_roots(void)
{
    rb_json_t *doc = parse_ok(" -7 ");
    int64_t i64 = 0;
    int b = -1;

    CHECK_INT_EQ(rb_json_tokens(doc), 1);
    CHECK_INT_EQ(rb_json_type(doc, 0), RB_JSON_NUMBER);
    CHECK_INT_EQ(rb_json_int64(doc, 0, &i64), 0);
    CHECK_INT_EQ(i64, -7);
    rb_json_free(doc);
    doc = parse_ok("\"root\"");
    CHECK(rb_json_str_eq(doc, 0, "root"));
    rb_json_free(doc);
    doc = parse_ok("\nfalse\t");
    CHECK_INT_EQ(rb_json_bool(doc, 0, &b), 0);
    CHECK_INT_EQ(b, 0);
    CHECK_INT_EQ(rb_json_count(doc, 0), 0);
    rb_json_free(doc);
}

static void test_types(void)
{
    rb_json_t *doc = parse_ok("{\"o\":{},\"a\":[],\"s\":\"x\",\"n\":-1.5,\"t\":true,\"f\":false,"
                              "\"z\":null}");
    static const struct {
        const char *key;
        rb_json_type_t type;
    } cases[] = {{"o", RB_JSON_OBJECT}, {"a", RB_JSON_ARRAY},       {"s", RB_JSON_STRING},
                 {"n", RB_JSON_NUMBER}, {"t", RB_JSON_TRUE},        {"f", RB_JSON_FALSE},
                 {"z", RB_JSON_NULL},   {"missing", RB_JSON_ABSENT}};
    int b = -1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_INT_EQ(rb_json_type(doc, rb_json_member(doc, 0, cases[i].key)), cases[i].type);
    CHECK_INT_EQ(rb_json_type(doc, 0), RB_JSON_OBJECT);
    CHECK_INT_EQ(rb_json_type(doc, -1), RB_JSON_ABSENT);
    CHECK_INT_EQ(rb_json_get_bool(doc, 0, "f", &b), 0);
    CHECK_INT_EQ(b, 0);
    CHECK_INT_EQ(rb_json_get_bool(doc, 0, "z", &b), -1);
    rb_json_free(doc);
}

static const char chat_chunk[] =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"Hi \\\"there\\\"\"},\"finish_reason\":null},"
    "{\"index\":1,\"delta\":{}}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
    "\"prompt_tokens_details\":{\"cached_tokens\":8}},\"a.b\":1,\"x[0]\":2,"
    "\"k\\u0065y\":\"escaped key\",\"a\":{\"b\":\"nested\"}}";

static void test_paths(void)
{
    rb_json_t *doc = parse_ok(chat_chunk);
    char buf[64];
    int64_t n = 0;

    CHECK_STR_EQ(str_at(doc, "choices[0].delta.content", NULL), "Hi \"there\"");
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "usage.prompt_tokens_details.cached_tokens", &n), 0);
    CHECK_INT_EQ(n, 8);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "choices[1].index", &n), 0);
    CHECK_INT_EQ(n, 1);
    CHECK_STR_EQ(str_at(doc, "a.b", NULL), "nested"); /* a path, not the key "a.b" */
    CHECK_INT_EQ(rb_json_type(doc, rb_json_member(doc, 0, "a.b")), RB_JSON_NUMBER);
    CHECK_INT_EQ(rb_json_type(doc, rb_json_member(doc, 0, "x[0]")), RB_JSON_NUMBER);
    CHECK_INT_EQ(rb_json_find(doc, 0, "x[0]"), -1);
    CHECK_STR_EQ(str_at(doc, "key", NULL), "escaped key"); /* keys compare unescaped */
    CHECK_INT_EQ(rb_json_find(doc, 0, ""), 0);
    int usage = rb_json_find(doc, 0, "usage");
    CHECK(usage > 0);
    CHECK_INT_EQ(rb_json_find(doc, usage, "prompt_tokens"),
                 rb_json_member(doc, usage, "prompt_tokens"));
    /* absent steps, wrong types and -1 chaining */
    static const char *const absent[] = {
        "nope",        "usage.nope",
        "choices[2]",  "choices[0].delta.nope",
        "usage[0]",    "choices.0",
        "id.x",        "choices[0]x",
        "a..b",        ".a",
        "a.",          "choices[]",
        "choices[-1]", "choices[x]",
        "choices[0",   "[0]",
        "usage.[0]",   "choices[99999999999]",
    };
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
        int v = rb_json_find(doc, 0, absent[i]);
        if (v != -1)
            fprintf(stderr, "path \"%s\" found %d\n", absent[i], v);
        CHECK_INT_EQ(v, -1);
    }
    CHECK_INT_EQ(rb_json_find(doc, -1, ""), -1);
    CHECK_INT_EQ(rb_json_find(doc, rb_json_member(doc, -1, "x"), "a.b"), -1);
    CHECK_INT_EQ(rb_json_get_int64(doc, -1, "usage", &n), -1);
    CHECK_INT_EQ(rb_json_get_str(doc, 0, "nope", buf, sizeof(buf)), RB_ERR_NOTFOUND);
    CHECK_INT_EQ(rb_json_get_str(doc, 0, "usage", buf, sizeof(buf)), RB_ERR_NOTFOUND);
    CHECK_INT_EQ(rb_json_get_str(doc, 0, "id", buf, sizeof(buf)), RB_OK);
    CHECK_STR_EQ(buf, "chatcmpl-1");
    CHECK_INT_EQ(rb_json_count(doc, -1), 0);
    rb_json_free(doc);

    /* a C string cannot hold U+0000: refused, not cut at it */
    doc = parse_ok("{\"k\":\"A@B.C\\u0000x\",\"ok\":\"a\\u0041\"}");
    CHECK_INT_EQ(rb_json_get_str(doc, 0, "k", buf, sizeof(buf)), RB_ERR_INVAL);
    CHECK_STR_EQ(buf, "");
    CHECK_INT_EQ(rb_json_get_str(doc, 0, "ok", buf, sizeof(buf)), RB_OK);
    CHECK_STR_EQ(buf, "aA");
    CHECK_INT_EQ(rb_json_index(doc, -1, 0), -1);
    rb_json_free(doc);

    doc = parse_ok("[[1,2],[3,[4,5]]]");
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[1][1][0]", &n), 0);
    CHECK_INT_EQ(n, 4);
    CHECK_INT_EQ(rb_json_get_int64(doc, 0, "[1]", &n), -1);
    rb_json_free(doc);
}

static void test_iteration(void)
{
    rb_json_t *doc = parse_ok("{\"a\":[1,{\"x\":[]}],\"b\":{\"c\":{}},\"\":null,\"d\":\"s\"}");
    static const char *const keys[] = {"a", "b", "", "d"};
    static const rb_json_type_t types[] = {RB_JSON_ARRAY, RB_JSON_OBJECT, RB_JSON_NULL,
                                           RB_JSON_STRING};
    int k = -1, v = -1, i = 0;

    CHECK_INT_EQ(rb_json_count(doc, 0), 4);
    while (rb_json_next(doc, 0, &k, &v)) {
        CHECK(i < 4);
        if (i >= 4)
            break;
        CHECK(rb_json_str_eq(doc, k, keys[i]));
        CHECK_INT_EQ(rb_json_type(doc, v), types[i]);
        CHECK_INT_EQ(rb_json_member(doc, 0, keys[i]), v);
        i++;
    }
    CHECK_INT_EQ(i, 4);
    int a = rb_json_member(doc, 0, "a");
    CHECK_INT_EQ(rb_json_count(doc, a), 2);
    CHECK_INT_EQ(rb_json_type(doc, rb_json_index(doc, a, 1)), RB_JSON_OBJECT);
    CHECK_INT_EQ(rb_json_index(doc, a, 2), -1);
    CHECK_INT_EQ(rb_json_index(doc, 0, 0), -1); /* not an array */
    k = -1;
    CHECK_INT_EQ(rb_json_next(doc, a, &k, &v), 0); /* not an object */
    k = -1;
    CHECK_INT_EQ(rb_json_next(doc, -1, &k, &v), 0);
    k = -1;
    CHECK_INT_EQ(rb_json_next(doc, rb_json_find(doc, 0, "b.c"), &k, &v), 0); /* empty */
    CHECK_INT_EQ(rb_json_count(doc, rb_json_member(doc, 0, "d")), 0);
    /* arrays: each element once, in order, nested values skipped whole */
    int e = -1, n = 0;
    while (rb_json_elem_next(doc, a, &e)) {
        CHECK_INT_EQ(e, rb_json_index(doc, a, (size_t)n));
        n++;
    }
    CHECK_INT_EQ(n, 2);
    e = -1;
    CHECK_INT_EQ(rb_json_elem_next(doc, 0, &e), 0); /* not an array */
    e = -1;
    CHECK_INT_EQ(rb_json_elem_next(doc, rb_json_find(doc, 0, "a[1].x"), &e), 0); /* empty */
    rb_json_free(doc);
}

static void test_str_buffers(void)
{
    rb_json_t *doc = parse_ok("[\"hello\", \"\\u00e9\", 5, \"a\\u0000b\"]");
    char buf[8];
    size_t len = 99;

    CHECK_INT_EQ(rb_json_str(doc, rb_json_index(doc, 0, 0), buf, 6, &len), RB_OK); /* exact fit */
    CHECK_STR_EQ(buf, "hello");
    CHECK_INT_EQ(len, 5);
    CHECK_INT_EQ(rb_json_str(doc, rb_json_index(doc, 0, 0), buf, 5, &len), RB_ERR_LIMIT);
    CHECK_INT_EQ(len, 0);
    CHECK_STR_EQ(buf, "");
    CHECK_INT_EQ(rb_json_str(doc, rb_json_index(doc, 0, 0), NULL, 0, &len), RB_ERR_LIMIT);
    CHECK_INT_EQ(rb_json_str(doc, rb_json_index(doc, 0, 1), buf, 2, &len), RB_ERR_LIMIT);
    CHECK_INT_EQ(rb_json_str(doc, rb_json_index(doc, 0, 1), buf, 3, &len), RB_OK);
    CHECK_STR_EQ(buf, "\xC3\xA9");
    CHECK_INT_EQ(rb_json_str(doc, rb_json_index(doc, 0, 2), buf, sizeof(buf), &len),
                 RB_ERR_NOTFOUND);
    CHECK_INT_EQ(rb_json_str(doc, -1, buf, sizeof(buf), &len), RB_ERR_NOTFOUND);
    CHECK_INT_EQ(rb_json_str(doc, 0, buf, sizeof(buf), &len), RB_ERR_NOTFOUND);
    CHECK(rb_json_strdup(doc, 0) == NULL);
    CHECK(rb_json_strdup(doc, -1) == NULL);
    CHECK_INT_EQ(rb_json_str(doc, rb_json_index(doc, 0, 3), buf, sizeof(buf), &len), RB_OK);
    CHECK_INT_EQ(len, 3);
    CHECK(memcmp(buf, "a\0b", 4) == 0);
    rb_json_free(doc);
}

static void test_raw_span(void)
{
    const char *text = " {\"s\":\"a\\nb\",\"o\":{\"x\":[1, 2]},\"n\":-3.5} ";
    rb_json_t *doc = parse_ok(text);
    size_t len = 0, start = 0, end = 0;
    const char *raw;

    raw = rb_json_raw(doc, rb_json_member(doc, 0, "s"), &len);
    CHECK(raw != NULL && len == 4 && memcmp(raw, "a\\nb", 4) == 0);
    raw = rb_json_raw(doc, rb_json_member(doc, 0, "o"), &len);
    CHECK(raw != NULL && len == 12 && memcmp(raw, "{\"x\":[1, 2]}", 12) == 0);
    raw = rb_json_raw(doc, rb_json_member(doc, 0, "n"), &len);
    CHECK(raw != NULL && len == 4 && memcmp(raw, "-3.5", 4) == 0);
    CHECK(rb_json_raw(doc, -1, &len) == NULL);
    CHECK_INT_EQ(rb_json_span(doc, 0, &start, &end), 0);
    CHECK_INT_EQ(start, 1);
    CHECK_INT_EQ(end, strlen(text) - 1);
    CHECK_INT_EQ(rb_json_span(doc, rb_json_member(doc, 0, "s"), &start, &end), 0);
    CHECK(end - start == 6 && memcmp(text + start, "\"a\\nb\"", 6) == 0);
    CHECK_INT_EQ(rb_json_span(doc, -1, &start, &end), -1);
    rb_json_free(doc);
}

/* Strings are scanned 8 bytes at a time: every byte value at every position of strings of every
 * length up to 24 is accepted or refused as the byte-by-byte rule says (refused: a control
 * character, a quote ending the string early, a backslash starting a bad escape), and an escape
 * across each position is accepted. */
static void test_string_bytes(void)
{
    char doc[64];

    for (size_t len = 1; len <= 24; len++)
        for (size_t k = 0; k < len; k++) {
            for (int b = 1; b < 256; b++) {
                rb_json_t *d = NULL;
                int ok = b >= 0x20 && b != '"' && b != '\\';
                doc[0] = '[';
                doc[1] = '"';
                memset(doc + 2, 'a', len);
                doc[2 + k] = (char)b;
                memcpy(doc + 2 + len, "\"]", 2);
                CHECK_INT_EQ(rb_json_parse(doc, len + 4, NULL, &d), ok ? RB_OK : RB_ERR_PARSE);
                rb_json_free(d);
            }
            if (k + 1 < len) {
                rb_json_t *d = NULL;
                doc[2 + k] = '\\';
                doc[3 + k] = 'n';
                CHECK_INT_EQ(rb_json_parse(doc, len + 4, NULL, &d), RB_OK);
                rb_json_free(d);
            }
        }
}

/* rb_json_parse_member finds what a parse finds: the span of rb_json_member(doc, 0, key) (the first
 * member of that name, of any type), nothing below the root or in a root array; the value's own
 * document is the parse of that span (same tokens); it refuses to guess when a root member name is
 * escaped; its limits are rb_json_parse's. */
static void test_parse_member(void)
{
    static const char *const docs[] = {
        "{\"usage\":{\"a\":1}}",
        "{\"id\":\"x\",\"usage\":{},\"z\":[1,{\"usage\":2}]}",
        " { \"usage\" : [ 1 , { } ] } ",
        "{\"usage\":null}",
        "{\"usage\":\"a\\\"}\"}",
        "{\"usage\":-1.5e3,\"usage\":{}}",
        "{\"x\":{\"usage\":1}}",
        "[{\"usage\":1}]",
        "\"usage\"",
        "{}",
        "{\"usag\":1,\"usagee\":2,\"usage\":true}",
        "{\"usage\":{\"b\":{\"c\":[[]]}},\"d\":1}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        size_t len = strlen(docs[i]), s0 = 0, s1 = 0, w0 = 0, w1 = 0;
        rb_json_t *doc = NULL, *m = NULL, *again = NULL;
        rb_err_t err = rb_json_parse_member(docs[i], len, NULL, "usage", &m, &s0, &s1);
        int v;

        CHECK_INT_EQ(rb_json_parse(docs[i], len, NULL, &doc), RB_OK);
        v = rb_json_type(doc, 0) == RB_JSON_OBJECT ? rb_json_member(doc, 0, "usage") : -1;
        if (v < 0) {
            CHECK_INT_EQ(err, RB_ERR_NOTFOUND);
            CHECK(m == NULL);
        } else {
            CHECK_INT_EQ(err, RB_OK);
            CHECK_INT_EQ(rb_json_span(doc, v, &w0, &w1), 0);
            CHECK_INT_EQ(s0, w0);
            CHECK_INT_EQ(s1, w1);
            CHECK_INT_EQ(rb_json_type(m, 0), rb_json_type(doc, v));
            CHECK_INT_EQ(rb_json_parse(docs[i] + s0, s1 - s0, NULL, &again), RB_OK);
            CHECK_INT_EQ(rb_json_tokens(m), rb_json_tokens(again));
        }
        rb_json_free(again);
        rb_json_free(m);
        rb_json_free(doc);
    }
    rb_json_t *m = NULL;
    size_t s0, s1;
#define PM(text, lim) rb_json_parse_member(text, strlen(text), lim, "usage", &m, &s0, &s1)
    /* an escaped name before the match (or without one) could be the key: the caller must parse */
    CHECK_INT_EQ(PM("{\"us\\u0061ge\":1,\"usage\":2}", NULL), RB_ERR_INVAL);
    CHECK_INT_EQ(PM("{\"a\\n\":1}", NULL), RB_ERR_INVAL);
    /* after the match an escaped name changes nothing */
    CHECK_INT_EQ(PM("{\"usage\":2,\"a\\n\":1}", NULL), RB_OK);
    CHECK(s0 == 9 && s1 == 10 && rb_json_type(m, 0) == RB_JSON_NUMBER);
    rb_json_free(m);
    /* the limits of the whole document apply */
    rb_json_limits_t lim = {.depth_max = 2, .tokens_max = 0};
    CHECK_INT_EQ(PM("{\"usage\":{\"a\":[1]}}", &lim), RB_ERR_LIMIT);
    lim = (rb_json_limits_t){.depth_max = 0, .tokens_max = 4};
    CHECK_INT_EQ(PM("{\"usage\":1,\"b\":2}", &lim), RB_ERR_LIMIT);
#undef PM
}

TEST_MAIN(test_escapes, test_surrogate_errors, test_unicode_round_trip, test_writer_escaping,
          test_writer_escaping_every_byte, test_writer_structure, test_writer_misuse,
          test_depth_limit, test_token_limit, test_malformed, test_valid_edges, test_scalar_roots,
          test_types, test_paths, test_iteration, test_str_buffers, test_raw_span,
          test_string_bytes, test_parse_member)
