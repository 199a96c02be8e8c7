#include "gateway/limits.h"

#include <string.h>

#include "common/json.h"

/* Digits of an integer we accept (fits int64 with room). */
#define GW_LIMITS_DIGITS_MAX 15
/* Fraction digits of a credit amount (micro-credits). */
#define GW_LIMITS_FRACTION_MAX 6

typedef struct st_cursor_t {
    const char *p, *end;
} cursor_t;

static void skip_ows(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* An unsigned integer of 1..GW_LIMITS_DIGITS_MAX digits; -1 when none. */
static int64_t take_uint(cursor_t *c)
{
    int64_t v = 0;
    int n = 0;

    while (c->p < c->end && is_digit(*c->p)) {
        if (++n > GW_LIMITS_DIGITS_MAX)
            return -1;
        v = v * 10 + (*c->p - '0');
        c->p++;
    }
    return n > 0 ? v : -1;
}

rb_err_t gw_limits_parse_duration(const char *s, size_t len, int64_t *out)
{
    cursor_t c = {s, s + len};
    int64_t v = take_uint(&c), mul = 1;

    if (v <= 0)
        return RB_ERR_PARSE;
    if (c.p < c.end) {
        switch (*c.p++) {
        case 's':
            mul = 1;
            break;
        case 'm':
            mul = 60;
            break;
        case 'h':
            mul = 3600;
            break;
        case 'd':
            mul = 86400;
            break;
        default:
            return RB_ERR_PARSE;
        }
    }
    if (c.p != c.end || v > GW_LIMITS_PERIOD_MAX_S / mul)
        return RB_ERR_PARSE;
    *out = v * mul;
    RB_ASSERT(*out >= 1 && *out <= GW_LIMITS_PERIOD_MAX_S);
    return RB_OK;
}

/* "<key>=<duration>" after the ';' (whitespace allowed around both); the rest must be empty. */
static rb_err_t take_param(cursor_t *c, const char *key, int64_t *out)
{
    size_t klen = strlen(key);
    const char *v;

    skip_ows(c);
    if (c->p >= c->end || *c->p != ';')
        return RB_ERR_PARSE;
    c->p++;
    skip_ows(c);
    if ((size_t)(c->end - c->p) < klen || memcmp(c->p, key, klen) != 0)
        return RB_ERR_PARSE;
    c->p += klen;
    skip_ows(c);
    if (c->p >= c->end || *c->p != '=')
        return RB_ERR_PARSE;
    c->p++;
    skip_ows(c);
    v = c->p;
    while (c->p < c->end && *c->p != ' ' && *c->p != '\t')
        c->p++;
    if (gw_limits_parse_duration(v, (size_t)(c->p - v), out) != RB_OK)
        return RB_ERR_PARSE;
    skip_ows(c);
    return c->p == c->end ? RB_OK : RB_ERR_PARSE;
}

/* A credit amount as micro-credits: "2", "2.5", "0.000001"; -1 when malformed. */
static int64_t take_credits(cursor_t *c)
{
    int64_t whole = take_uint(c), frac = 0;
    int digits = 0;

    if (whole < 0 || whole > GW_LIMITS_CREDITS_MAX)
        return -1;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        while (c->p < c->end && is_digit(*c->p)) {
            if (++digits > GW_LIMITS_FRACTION_MAX)
                return -1;
            frac = frac * 10 + (*c->p++ - '0');
        }
        if (digits == 0)
            return -1;
        for (int i = digits; i < GW_LIMITS_FRACTION_MAX; i++)
            frac *= 10;
    }
    if (whole == GW_LIMITS_CREDITS_MAX && frac > 0) /* at most the maximum, fraction included */
        return -1;
    return whole * 1000000 + frac;
}

rb_err_t gw_limits_parse_budget(const char *s, size_t len, gw_limits_budget_t *out)
{
    cursor_t c = {s, s + len};
    int64_t micro, period;

    RB_ASSERT(s != NULL || len == 0);
    if (len > GW_LIMITS_VALUE_MAX)
        return RB_ERR_PARSE;
    skip_ows(&c);
    if ((micro = take_credits(&c)) <= 0 || take_param(&c, "period", &period) != RB_OK)
        return RB_ERR_PARSE;
    out->budget_micro = micro;
    out->period_s = period;
    return RB_OK;
}

rb_err_t gw_limits_parse_rate(const char *s, size_t len, gw_limits_rate_t *out)
{
    cursor_t c = {s, s + len};
    int64_t n, window;

    RB_ASSERT(s != NULL || len == 0);
    if (len > GW_LIMITS_VALUE_MAX)
        return RB_ERR_PARSE;
    skip_ows(&c);
    if ((n = take_uint(&c)) <= 0 || n > GW_LIMITS_COUNT_MAX)
        return RB_ERR_PARSE;
    if (c.end - c.p >= 3 && memcmp(c.p, "req", 3) == 0)
        c.p += 3;
    if (take_param(&c, "window", &window) != RB_OK)
        return RB_ERR_PARSE;
    out->count = n;
    out->window_s = window;
    return RB_OK;
}

int64_t gw_limits_window_start(int64_t now_ms, int64_t len_ms)
{
    int64_t start;

    RB_ASSERT(len_ms > 0 && now_ms >= 0);
    start = now_ms - now_ms % len_ms;
    RB_ASSERT(start <= now_ms && now_ms - start < len_ms);
    return start;
}

int64_t gw_limits_retry_after_s(int64_t now_ms, int64_t len_ms)
{
    int64_t left = gw_limits_window_start(now_ms, len_ms) + len_ms - now_ms;

    RB_ASSERT(left > 0 && left <= len_ms);
    return (left + 999) / 1000;
}

int64_t gw_limits_utc_day(int64_t now_s)
{
    RB_ASSERT(now_s >= 0);
    return now_s / 86400;
}

/* Civil from days (H. Hinnant's algorithm): the proleptic Gregorian year and month of a day. */
int64_t gw_limits_utc_month(int64_t now_s)
{
    int64_t z = gw_limits_utc_day(now_s) + 719468;
    int64_t era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);

    RB_ASSERT(m >= 1 && m <= 12 && y >= 1970);
    return y * 12 + m - 1;
}

int gw_limits_cap_reached(int64_t spent_micro, int64_t cap_credits)
{
    int64_t cap_micro;

    RB_ASSERT(cap_credits >= 0);
    if (cap_credits == 0)
        return 0;
    if (__builtin_mul_overflow(cap_credits, (int64_t)1000000, &cap_micro))
        return 0; /* a cap beyond int64 micro-credits cannot be reached */
    return spent_micro >= cap_micro;
}

int gw_limits_subject_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;

    if (s == NULL || len == 0 || len > GW_LIMITS_SUBJECT_MAX)
        return 0;
    while (p < end) {
        size_t k, bad;
        if (*p < 0x80) {
            if (*p < 0x20 || *p == 0x7F)
                return 0;
            p++;
            continue;
        }
        if ((k = rb_utf8_seq(p, (size_t)(end - p), &bad)) == 0)
            return 0;
        if (p[0] == 0xC2 && p[1] <= 0x9F) /* U+0080..U+009F: the C1 controls */
            return 0;
        p += k;
    }
    return 1;
}
