/* Tests for gateway/limits.c: the X-Rigbox-Subject-Budget / -Rate header parsers. */
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

TEST_MAIN(test_duration, test_budget_ok, test_budget_malformed, test_rate, test_length_limit)
