/*
 * Scripted behaviour lists: "slow=50,ttfb=200,error-mid,usage=prompt:1200,cached:1000".
 * Items are separated by commas; `usage=` takes key:value pairs, which are themselves separated by
 * commas, so an item of the form key:value continues the usage list.
 */
#include "tools/mock-provider/mock.h"

#include <string.h>

typedef struct st_mock_span_t {
    const char *p;
    size_t n;
} mock_span_t;

void mock_behavior_init(mock_behavior_t *b)
{
    RB_ASSERT(b != NULL);
    *b = (mock_behavior_t){.retry_after_s = MOCK_RETRY_AFTER_DEFAULT,
                           .usage = {-1, -1, -1, -1, -1, -1}};
}

static int span_eq(mock_span_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static mock_span_t span_trim(mock_span_t s)
{
    while (s.n > 0 && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

/* A decimal number in [0, max]; -1 on anything else. */
static int span_u64(mock_span_t s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (s.n == 0 || s.n > 20)
        return -1;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return -1;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s.p[i] - '0', &v))
            return -1;
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* One "key:value" pair of a usage= list. */
static rb_err_t parse_usage_pair(mock_behavior_t *b, mock_span_t item)
{
    static const char *const keys[] = {"prompt",    "cached",         "completion",
                                       "reasoning", "cache_write_5m", "cache_write_1h"};
    int64_t *fields[] = {&b->usage.prompt,    &b->usage.cached,         &b->usage.completion,
                         &b->usage.reasoning, &b->usage.cache_write_5m, &b->usage.cache_write_1h};
    const char *colon = memchr(item.p, ':', item.n);
    uint64_t v;

    if (colon == NULL)
        return RB_ERR_PARSE;
    mock_span_t key = span_trim((mock_span_t){item.p, (size_t)(colon - item.p)});
    mock_span_t val = span_trim((mock_span_t){colon + 1, item.n - (size_t)(colon - item.p) - 1});
    if (span_u64(val, INT32_MAX, &v) != 0)
        return RB_ERR_PARSE;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (span_eq(key, keys[i])) {
            *fields[i] = (int64_t)v;
            return RB_OK;
        }
    }
    return RB_ERR_PARSE;
}

/* An item with a numeric value: slow=, ttfb=, status=, retry-after=, chunks=, big=, pad-headers=,
 * split=, trailing=. */
static rb_err_t parse_valued(mock_behavior_t *b, mock_span_t key, mock_span_t val)
{
    uint64_t v;

    if (span_eq(key, "usage"))
        return parse_usage_pair(b, val);
    if (span_eq(key, "status")) {
        if (span_u64(val, 599, &v) != 0 || v < 400)
            return RB_ERR_PARSE;
        b->status = (int)v;
        return RB_OK;
    }
    if (span_u64(val, UINT32_MAX, &v) != 0)
        return RB_ERR_PARSE;
    if (span_eq(key, "slow") && v <= MOCK_DELAY_MS_MAX)
        b->slow_ms = (uint32_t)v;
    else if (span_eq(key, "ttfb") && v <= MOCK_DELAY_MS_MAX)
        b->ttfb_ms = (uint32_t)v;
    else if (span_eq(key, "retry-after") && v <= 86400)
        b->retry_after_s = (uint32_t)v;
    else if (span_eq(key, "chunks") && v >= 1 && v <= MOCK_CHUNKS_MAX)
        b->chunks = (uint32_t)v;
    else if (span_eq(key, "big") && v >= 1 && v <= MOCK_BIG_BYTES_MAX)
        b->big_bytes = v;
    else if (span_eq(key, "pad-headers") && v <= MOCK_PAD_HEADERS_MAX)
        b->pad_headers = (uint32_t)v;
    else if (span_eq(key, "split") && v >= 1 && v <= MOCK_SPLIT_BYTES_MAX)
        b->split_bytes = (uint32_t)v;
    else if (span_eq(key, "trailing") && v >= 1 && v <= MOCK_DELAY_MS_MAX)
        b->trailing_ms = (uint32_t)v;
    else
        return RB_ERR_PARSE;
    return RB_OK;
}

static rb_err_t parse_item(mock_behavior_t *b, mock_span_t item)
{
    const char *eq = memchr(item.p, '=', item.n);

    if (eq != NULL) {
        mock_span_t key = span_trim((mock_span_t){item.p, (size_t)(eq - item.p)});
        mock_span_t val = span_trim((mock_span_t){eq + 1, item.n - (size_t)(eq - item.p) - 1});
        return parse_valued(b, key, val);
    }
    if (memchr(item.p, ':', item.n) != NULL) /* continues usage= */
        return parse_usage_pair(b, item);
    if (span_eq(item, "error-mid"))
        b->error_mid = 1;
    else if (span_eq(item, "error-event"))
        b->error_event = 1;
    else if (span_eq(item, "html"))
        b->html = 1;
    else if (span_eq(item, "reset"))
        b->reset = 1;
    else if (span_eq(item, "no-usage"))
        b->no_usage = 1;
    else if (span_eq(item, "fixed-time"))
        b->fixed_time = 1;
    else if (span_eq(item, "force-stream"))
        b->force_stream = 1;
    else if (span_eq(item, "output-only-usage"))
        b->output_only_usage = 1;
    else
        return RB_ERR_PARSE;
    return RB_OK;
}

rb_err_t mock_behavior_parse(mock_behavior_t *b, const char *s, size_t len)
{
    size_t start = 0;

    RB_ASSERT(b != NULL);
    RB_ASSERT(s != NULL || len == 0);
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != ',')
            continue;
        mock_span_t item = span_trim((mock_span_t){s + start, i - start});
        start = i + 1;
        if (item.n == 0)
            continue;
        rb_err_t err = parse_item(b, item);
        if (err != RB_OK)
            return err;
    }
    return RB_OK;
}
