/* Tests for gateway/pricing.c: every bucket, rounding up, fallbacks, overflow, hold, formatting. */
#include "gateway/pricing.h"

#include <string.h>

#include "test.h"

/* Sonnet-like prices in micro-credits per million tokens, at 1 credit = 0.01 USD:
 * $3 / MTok = 300 credits = 300,000,000 micro. */
static const gw_price_t sonnet = {
    .input = 300000000,
    .cached_input = 30000000,
    .cache_write_5m = 375000000,
    .cache_write_1h = 600000000,
    .output = 1500000000,
    .per_request = 1000000, /* $0.01 per search = 1 credit */
};

static int64_t cost_of(const gw_price_t *p, gw_usage_t u)
{
    int64_t c = -1;
    CHECK_INT_EQ(gw_pricing_cost(p, &u, &c), RB_OK);
    return c;
}

static void test_each_bucket_alone(void)
{
    /* 1000 tokens at X micro/MTok = X/1000 micro */
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.input_uncached = 1000}), 300000);
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.cache_read = 1000}), 30000);
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.cache_write_5m = 1000}), 375000);
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.cache_write_1h = 1000}), 600000);
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.output = 1000}), 1500000);
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.requests = 3}), 3000000);
    /* reasoning is inside output: it adds nothing on its own */
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.reasoning = 1000}), 0);
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){.output = 1000, .reasoning = 800}), 1500000);
    CHECK_INT_EQ(cost_of(&sonnet, (gw_usage_t){0}), 0);
}

static void test_sum_of_buckets(void)
{
    gw_usage_t u = {.input_uncached = 12,
                    .cache_read = 2000,
                    .cache_write_5m = 500,
                    .cache_write_1h = 100,
                    .output = 345,
                    .reasoning = 100,
                    .requests = 2};
    /* 12*300 + 2000*30 + 500*375 + 100*600 + 345*1500 (micro per 1000 tokens... exact sum):
     * (3600e6 + 60000e6 + 187500e6 + 60000e6 + 517500e6) / 1e6 = 828600, + 2e6 */
    CHECK_INT_EQ(cost_of(&sonnet, u), 828600 + 2000000);
}

static void test_rounding(void)
{
    gw_price_t p = {.input = 1, .output = 1};
    /* 1 token at 1 micro/MTok is 0.000001 micro: rounds up to 1 */
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 1}), 1);
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 999999}), 1);
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 1000000}), 1); /* exact: no round up */
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 1000001}), 2);
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 2000000}), 2);
    /* rounding happens once on the sum, not per bucket: 0.5 + 0.5 micro = 1 micro */
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 500000, .output = 500000}), 1);
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 500000, .output = 500001}), 2);
    /* a price of exactly 1 credit per MTok: 1 token costs exactly 1 micro */
    p.input = 1000000;
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 1}), 1);
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 7}), 7);
    p.input = 1000001;
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 1}), 2);
    /* per-request charges are whole micro-credits, added after the rounding */
    p = (gw_price_t){.input = 1, .per_request = 5};
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 1, .requests = 2}), 11);
}

static void test_price_fallback(void)
{
    gw_price_t p = {.input = 2000000, .output = 8000000}; /* no cache prices configured */
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.cache_read = 1000000}), 2000000);
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.cache_write_5m = 1000000}), 2000000);
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.cache_write_1h = 1000000}), 2000000);
    p.cached_input = 500000;
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.cache_read = 1000000}), 500000);
    /* a free model really is free */
    p = (gw_price_t){0};
    CHECK_INT_EQ(cost_of(&p, (gw_usage_t){.input_uncached = 5, .cache_read = 5, .output = 5}), 0);
}

static void test_overflow_and_invalid(void)
{
    gw_price_t huge = {.input = INT64_MAX,
                       .cached_input = INT64_MAX,
                       .cache_write_5m = INT64_MAX,
                       .cache_write_1h = INT64_MAX,
                       .output = INT64_MAX,
                       .per_request = INT64_MAX};
    gw_usage_t u = {.input_uncached = INT64_MAX,
                    .cache_read = INT64_MAX,
                    .cache_write_5m = INT64_MAX,
                    .cache_write_1h = INT64_MAX,
                    .output = INT64_MAX};
    int64_t c = 42;

    CHECK_INT_EQ(gw_pricing_cost(&huge, &u, &c), RB_ERR_LIMIT);
    CHECK_INT_EQ(c, 42); /* untouched */
    /* the largest product that still fits after /1e6 */
    u = (gw_usage_t){.input_uncached = 1000000};
    gw_price_t p = {.input = INT64_MAX};
    CHECK_INT_EQ(gw_pricing_cost(&p, &u, &c), RB_OK);
    CHECK_INT_EQ(c, INT64_MAX);
    u.input_uncached = 1000001;
    CHECK_INT_EQ(gw_pricing_cost(&p, &u, &c), RB_ERR_LIMIT);
    /* requests × per_request overflow, and the final addition */
    p = (gw_price_t){.input = 1000000, .per_request = INT64_MAX / 2 + 1};
    u = (gw_usage_t){.requests = 2};
    CHECK_INT_EQ(gw_pricing_cost(&p, &u, &c), RB_ERR_LIMIT);
    p.per_request = INT64_MAX;
    u = (gw_usage_t){.requests = 1, .input_uncached = 1};
    CHECK_INT_EQ(gw_pricing_cost(&p, &u, &c), RB_ERR_LIMIT);
    /* negative numbers are refused */
    u = (gw_usage_t){.output = -1};
    CHECK_INT_EQ(gw_pricing_cost(&sonnet, &u, &c), RB_ERR_INVAL);
    p = sonnet;
    p.cached_input = -1;
    u = (gw_usage_t){0};
    CHECK_INT_EQ(gw_pricing_cost(&p, &u, &c), RB_ERR_INVAL);
}

static void test_hold(void)
{
    int64_t h = -1;
    /* 2000 input tokens estimated, 4096 max output at Sonnet prices */
    CHECK_INT_EQ(gw_pricing_hold(&sonnet, 2000, 4096, 0, &h), RB_OK);
    CHECK_INT_EQ(h, 2000LL * 300 + 4096LL * 1500);
    gw_price_t p = {.input = 1, .output = 1};
    CHECK_INT_EQ(gw_pricing_hold(&p, 1, 0, 0, &h), RB_OK);
    CHECK_INT_EQ(h, 1); /* rounded up */
    CHECK_INT_EQ(gw_pricing_hold(&p, 0, 0, 0, &h), RB_OK);
    CHECK_INT_EQ(h, 0);
    CHECK_INT_EQ(gw_pricing_hold(&p, 600000, 400000, 0, &h), RB_OK);
    CHECK_INT_EQ(h, 1); /* exact: not rounded up */
    CHECK_INT_EQ(gw_pricing_hold(&p, -1, 0, 0, &h), RB_ERR_INVAL);
    p.output = INT64_MAX;
    CHECK_INT_EQ(gw_pricing_hold(&p, 0, INT64_MAX, 0, &h), RB_ERR_LIMIT);
    /* a hold never undercuts the cost of the same tokens */
    gw_usage_t u = {.input_uncached = 2000, .output = 4096};
    int64_t c = 0;
    CHECK_INT_EQ(gw_pricing_hold(&sonnet, 2000, 4096, 0, &h), RB_OK);
    CHECK_INT_EQ(gw_pricing_cost(&sonnet, &u, &c), RB_OK);
    CHECK_INT_EQ(h, c);
    /* and with the requests priced apart (web searches) it may run */
    p = sonnet;
    p.per_request = 1000000; /* 1 credit a search */
    u.requests = 5;
    CHECK_INT_EQ(gw_pricing_hold(&p, 2000, 4096, 5, &h), RB_OK);
    CHECK_INT_EQ(gw_pricing_cost(&p, &u, &c), RB_OK);
    CHECK_INT_EQ(h, c);
    CHECK_INT_EQ(gw_pricing_hold(&p, 0, 0, -1, &h), RB_ERR_INVAL);
    CHECK_INT_EQ(gw_pricing_hold(&p, 0, 0, INT64_MAX, &h), RB_ERR_LIMIT);
}

static void test_format(void)
{
    static const struct {
        int64_t micro;
        const char *text;
    } cases[] = {
        {0, "0.000000"},
        {125, "0.000125"},
        {1, "0.000001"},
        {1000000, "1.000000"},
        {1500000, "1.500000"},
        {123456789, "123.456789"},
        {-1500000, "-1.500000"},
        {-1, "-0.000001"},
        {INT64_MAX, "9223372036854.775807"},
        {INT64_MIN, "-9223372036854.775808"},
    };
    char buf[GW_PRICING_CREDITS_STR_MAX];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = gw_pricing_format_credits(cases[i].micro, buf, sizeof(buf));
        CHECK_STR_EQ(buf, cases[i].text);
        CHECK_INT_EQ(n, strlen(cases[i].text));
    }
    /* too small a buffer: -1 and an empty string */
    CHECK_INT_EQ(gw_pricing_format_credits(125, buf, 8), -1);
    CHECK_STR_EQ(buf, "");
    CHECK_INT_EQ(gw_pricing_format_credits(125, buf, 9), 8);
    CHECK_STR_EQ(buf, "0.000125");
}

/* Input stored elsewhere is held as the context window's room beside the output cap. */
static void test_hold_input(void)
{
    CHECK_INT_EQ(gw_pricing_hold_input(25, 0, 400000, 1000), 25);         /* all in the body */
    CHECK_INT_EQ(gw_pricing_hold_input(25, 1, 400000, 1000), 399000);     /* the window's room */
    CHECK_INT_EQ(gw_pricing_hold_input(25, 1, 0, 1000), 25);              /* window not stated */
    CHECK_INT_EQ(gw_pricing_hold_input(500000, 1, 400000, 1000), 500000); /* never less */
    CHECK_INT_EQ(gw_pricing_hold_input(25, 1, 4000, 4000), 25);           /* the cap fills it */
    CHECK_INT_EQ(gw_pricing_hold_input(25, 1, 4000, 9000), 25);
}

TEST_MAIN(test_each_bucket_alone, test_sum_of_buckets, test_rounding, test_price_fallback,
          test_overflow_and_invalid, test_hold, test_hold_input, test_format)
