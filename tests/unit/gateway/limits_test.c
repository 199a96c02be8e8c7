/* Tests for gateway/limits.c: the X-Rigbox-Subject-Budget / -Rate header parsers and the pure
 * window, calendar and cap arithmetic of the limit counters. */
#include "gateway/limits.h"

#include <string.h>

#include "test.h"

static rb_err_t budget(const char *s, gw_limits_budget_t *b)
{
    *b = (gw_limits_budget_t){-1, -1};
    return gw_limits_parse_budget(s, strlen(s), b);
}

static rb_err_t rate(const char *s, gw_limits_rate_t *r)
{
    *r = (gw_limits_rate_t){-1, -1};
    return gw_limits_parse_rate(s, strlen(s), r);
}

static void test_duration(void)
{
    static const struct {
        const char *s;
        int64_t secs;
    } ok[] = {{"30s", 30}, {"5h", 18000},         {"7d", 604800}, {"90", 90},
              {"2m", 120}, {"366d", 366 * 86400}, {"1", 1}};
    static const char *const bad[] = {"",     "0",        "0s",   "s",
                                      "-5s",  "5x",       "5 s",  "5hh",
                                      "367d", "31622401", "1.5h", "9999999999999999d"};
    int64_t v;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        v = -1;
        CHECK_INT_EQ(gw_limits_parse_duration(ok[i].s, strlen(ok[i].s), &v), RB_OK);
        CHECK_INT_EQ(v, ok[i].secs);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT_EQ(gw_limits_parse_duration(bad[i], strlen(bad[i]), &v), RB_ERR_PARSE);
}

static void test_budget_ok(void)
{
    gw_limits_budget_t b;

    CHECK_INT_EQ(budget("2.5;period=5h", &b), RB_OK);
    CHECK_INT_EQ(b.budget_micro, 2500000);
    CHECK_INT_EQ(b.period_s, 18000);
    CHECK_INT_EQ(budget(" 10 ; period = 30s ", &b), RB_OK);
    CHECK_INT_EQ(b.budget_micro, 10000000);
    CHECK_INT_EQ(b.period_s, 30);
    CHECK_INT_EQ(budget("0.000001;period=7d", &b), RB_OK); /* exact micro-credits */
    CHECK_INT_EQ(b.budget_micro, 1);
    CHECK_INT_EQ(b.period_s, 604800);
    CHECK_INT_EQ(budget("1000000000000;period=3600", &b), RB_OK);
    CHECK_INT_EQ(b.budget_micro, 1000000000000LL * 1000000);
}

static void test_budget_malformed(void)
{
    static const char *const bad[] = {"",
                                      "5",
                                      "5;",
                                      "5;period",
                                      "5;period=",
                                      ";period=5h",
                                      "0;period=5h",
                                      "-1;period=5h",
                                      "1.;period=5h",
                                      ".5;period=5h",
                                      "1.0000001;period=5h",
                                      "1e3;period=5h",
                                      "5;window=5h",
                                      "5;period=5h;x=1",
                                      "5;period=5h x",
                                      "5 5;period=5h",
                                      "1000000000001;period=5h",
                                      "1000000000000.000001;period=5h",
                                      "5,period=5h",
                                      "abc;period=5h"};
    gw_limits_budget_t b;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT_EQ(budget(bad[i], &b), RB_ERR_PARSE);
        CHECK_INT_EQ(b.budget_micro, -1); /* untouched on failure */
    }
}

static void test_rate(void)
{
    static const char *const bad[] = {"",
                                      "30",
                                      "30req",
                                      "0;window=1m",
                                      "30rq;window=1m",
                                      "30req;period=1m",
                                      "req;window=1m",
                                      "30;window=0",
                                      "1000000001;window=1s",
                                      "30;window=1m;"};
    gw_limits_rate_t r;

    CHECK_INT_EQ(rate("30req;window=60s", &r), RB_OK);
    CHECK_INT_EQ(r.count, 30);
    CHECK_INT_EQ(r.window_s, 60);
    CHECK_INT_EQ(rate("10;window=1m", &r), RB_OK);
    CHECK_INT_EQ(r.count, 10);
    CHECK_INT_EQ(r.window_s, 60);
    CHECK_INT_EQ(rate("  5req ;  window=1d", &r), RB_OK);
    CHECK_INT_EQ(r.window_s, 86400);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT_EQ(rate(bad[i], &r), RB_ERR_PARSE);
        CHECK_INT_EQ(r.count, -1);
    }
}

static void test_length_limit(void)
{
    char big[GW_LIMITS_VALUE_MAX + 16];
    gw_limits_budget_t b;

    memset(big, ' ', sizeof(big));
    memcpy(big, "5;period=5h", 11);
    CHECK_INT_EQ(gw_limits_parse_budget(big, GW_LIMITS_VALUE_MAX, &b), RB_OK);
    CHECK_INT_EQ(gw_limits_parse_budget(big, GW_LIMITS_VALUE_MAX + 1, &b), RB_ERR_PARSE);
}

static void test_windows(void)
{
    /* epoch-aligned: 60 s windows start at whole minutes */
    CHECK_INT_EQ(gw_limits_window_start(0, 60000), 0);
    CHECK_INT_EQ(gw_limits_window_start(59999, 60000), 0);
    CHECK_INT_EQ(gw_limits_window_start(60000, 60000), 60000);
    CHECK_INT_EQ(gw_limits_window_start(1700000012345LL, 60000), 1699999980000LL);
    /* Retry-After: whole seconds until the window ends, never 0 */
    CHECK_INT_EQ(gw_limits_retry_after_s(0, 60000), 60);
    CHECK_INT_EQ(gw_limits_retry_after_s(1, 60000), 60);
    CHECK_INT_EQ(gw_limits_retry_after_s(59001, 60000), 1);
    CHECK_INT_EQ(gw_limits_retry_after_s(59999, 60000), 1);
    CHECK_INT_EQ(gw_limits_retry_after_s(60000, 60000), 60);
    CHECK_INT_EQ(gw_limits_retry_after_s(1500, 2000), 1);
    CHECK_INT_EQ(gw_limits_retry_after_s(1000, 3000), 2);
}

static void test_calendar(void)
{
    CHECK_INT_EQ(gw_limits_utc_day(0), 0);
    CHECK_INT_EQ(gw_limits_utc_day(86399), 0);
    CHECK_INT_EQ(gw_limits_utc_day(86400), 1);
    CHECK_INT_EQ(gw_limits_utc_month(0), 1970 * 12);
    /* 2024-02-29T23:59:59Z (leap day) and 2024-03-01T00:00:00Z */
    CHECK_INT_EQ(gw_limits_utc_month(1709251199), 2024 * 12 + 1);
    CHECK_INT_EQ(gw_limits_utc_month(1709251200), 2024 * 12 + 2);
    /* 2023-12-31T23:59:59Z and 2024-01-01T00:00:00Z */
    CHECK_INT_EQ(gw_limits_utc_month(1704067199), 2023 * 12 + 11);
    CHECK_INT_EQ(gw_limits_utc_month(1704067200), 2024 * 12);
    /* 2100-03-01T00:00:00Z (2100 is not a leap year) */
    CHECK_INT_EQ(gw_limits_utc_month(4107542400LL), 2100 * 12 + 2);
    CHECK_INT_EQ(gw_limits_utc_month(4107542399LL), 2100 * 12 + 1);
}

static void test_caps(void)
{
    CHECK_INT_EQ(gw_limits_cap_reached(INT64_MAX, 0), 0); /* 0 = no cap */
    CHECK_INT_EQ(gw_limits_cap_reached(0, 1), 0);
    CHECK_INT_EQ(gw_limits_cap_reached(999999, 1), 0);
    CHECK_INT_EQ(gw_limits_cap_reached(1000000, 1), 1);
    CHECK_INT_EQ(gw_limits_cap_reached(5000001, 5), 1);
    CHECK_INT_EQ(gw_limits_cap_reached(INT64_MAX, 9000000000000LL), 1);
    CHECK_INT_EQ(gw_limits_cap_reached(INT64_MAX, INT64_MAX / 10), 0); /* overflowing cap */
}

static void test_subject(void)
{
    char longest[GW_LIMITS_SUBJECT_MAX + 1];
#define OK(lit)  CHECK_INT_EQ(gw_limits_subject_valid(lit, sizeof(lit) - 1), 1)
#define BAD(lit) CHECK_INT_EQ(gw_limits_subject_valid(lit, sizeof(lit) - 1), 0)
    OK("alice");
    OK("end user 7 <a@b.c> ~!");
    OK("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"); /* é, 日本, an emoji */
    OK("\xc2\xa0");                                              /* U+00A0: printable */
    BAD("");
    BAD("tab\there");
    BAD("nl\n");
    BAD("del\x7f");
    BAD("c1 \xc2\x85");       /* U+0085 NEL */
    BAD("c1 \xc2\x9f");       /* U+009F */
    BAD("bad \xff");          /* never UTF-8 */
    BAD("cut \xe6\x97");      /* a truncated sequence */
    BAD("overlong \xc0\xaf"); /* '/' overlong */
    BAD("surrogate \xed\xa0\x80");
    CHECK_INT_EQ(gw_limits_subject_valid(NULL, 0), 0);
#undef OK
#undef BAD
    memset(longest, 'x', sizeof(longest));
    CHECK_INT_EQ(gw_limits_subject_valid(longest, GW_LIMITS_SUBJECT_MAX), 1);
    CHECK_INT_EQ(gw_limits_subject_valid(longest, GW_LIMITS_SUBJECT_MAX + 1), 0);
}

TEST_MAIN(test_subject, test_duration, test_budget_ok, test_budget_malformed, test_rate,
          test_length_limit, test_windows, test_calendar, test_caps)
