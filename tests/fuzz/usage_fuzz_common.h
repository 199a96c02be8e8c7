/*
 * Shared body of the usage fuzz targets: the input goes through gw_usage_from_body, through the
 * observer as one event under each interesting name, and through the SSE parser + observer as a
 * stream. Whatever the bytes, nothing crashes, every bucket stays within [0, GW_USAGE_TOKENS_MAX],
 * and pricing the result (at a real model's prices and at prices that overflow) agrees with a
 * reference computed another way: the same cost, or RB_ERR_LIMIT exactly when it exceeds int64.
 */
#ifndef RB_TESTS_FUZZ_USAGE_FUZZ_COMMON_H
#define RB_TESTS_FUZZ_USAGE_FUZZ_COMMON_H

#include <stdint.h>
#include <string.h>

#include "gateway/pricing.h"
#include "gateway/sse.h"
#include "gateway/usage.h"

/* The cost of u at p by another route than gw_pricing_cost's: whole micro-credits per token and the
 * per-million rest apart, so that only the rest is rounded up. -1 when it does not fit in int64. */
static int fuzz_cost_reference(const gw_price_t *p, const gw_usage_t *u, int64_t *out)
{
    const int64_t tokens[5] = {u->input_uncached, u->cache_read, u->cache_write_5m,
                               u->cache_write_1h, u->output};
    const int64_t prices[5] = {p->input, p->cached_input != 0 ? p->cached_input : p->input,
                               p->cache_write_5m != 0 ? p->cache_write_5m : p->input,
                               p->cache_write_1h != 0 ? p->cache_write_1h : p->input, p->output};
    unsigned __int128 whole = 0, rest = 0, total;

    for (int i = 0; i < 5; i++) { /* tokens <= GW_USAGE_TOKENS_MAX: no term nears 2^128 */
        whole += (unsigned __int128)tokens[i] * (uint64_t)(prices[i] / 1000000);
        rest += (unsigned __int128)tokens[i] * (uint64_t)(prices[i] % 1000000);
    }
    total = whole + (rest + 999999) / 1000000 +
            (unsigned __int128)u->requests * (uint64_t)p->per_request;
    if (total > (unsigned __int128)INT64_MAX)
        return -1;
    *out = (int64_t)total;
    return 0;
}

static void fuzz_check_usage(const gw_usage_t *u)
{
    static const gw_price_t prices[] = {
        {300000000, 30000000, 375000000, 600000000, 1500000000, 1000000}, /* a real model's */
        {INT64_MAX / 1000, 0, 1, INT64_MAX / 3, 999999,
         INT64_MAX / 7}, /* past int64 from 1e9 tokens */
    };

    RB_ASSERT(u->input_uncached >= 0 && u->cache_read >= 0 && u->cache_write_5m >= 0);
    RB_ASSERT(u->cache_write_1h >= 0 && u->output >= 0 && u->reasoning >= 0 && u->requests >= 0);
    RB_ASSERT(u->input_uncached <= GW_USAGE_TOKENS_MAX && u->cache_read <= GW_USAGE_TOKENS_MAX &&
              u->cache_write_5m <= GW_USAGE_TOKENS_MAX &&
              u->cache_write_1h <= GW_USAGE_TOKENS_MAX && u->output <= GW_USAGE_TOKENS_MAX &&
              u->requests <= GW_USAGE_TOKENS_MAX);
    for (size_t i = 0; i < sizeof(prices) / sizeof(prices[0]); i++) {
        int64_t cost = -1, want = -1;
        int ref = fuzz_cost_reference(&prices[i], u, &want);
        rb_err_t err = gw_pricing_cost(&prices[i], u, &cost);

        /* the same cost, or RB_ERR_LIMIT exactly when it does not fit (cost untouched then) */
        RB_ASSERT(err == RB_OK ? ref == 0 && cost == want
                               : err == RB_ERR_LIMIT && ref == -1 && cost == -1);
    }
}

static void fuzz_on_event(void *ctx, const gw_sse_event_t *ev)
{
    gw_usage_observe(ctx, ev->name, ev->name_len, ev->data, ev->data_len);
}

static void fuzz_usage_route(gw_route_t route, const char *const *names, size_t n_names,
                             const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    gw_usage_observer_t obs;
    gw_sse_parser_t p;
    gw_usage_t u;

    (void)gw_usage_from_body(route, s, size, NULL, &u);
    fuzz_check_usage(&u);
    gw_usage_observer_init(&obs, route, NULL);
    for (size_t i = 0; i < n_names; i++)
        gw_usage_observe(&obs, names[i], strlen(names[i]), s, size);
    fuzz_check_usage(&obs.usage);
    RB_ASSERT(obs.output_bytes >= 0 && obs.output_bytes <= (int64_t)size * (int64_t)n_names);
    gw_usage_observer_init(&obs, route, NULL);
    gw_sse_parser_init(&p, 65536);
    (void)gw_sse_feed(&p, s, size, fuzz_on_event, &obs);
    gw_sse_parser_dispose(&p);
    fuzz_check_usage(&obs.usage);
    RB_ASSERT(gw_usage_fill_estimate(&obs.usage, (int64_t)size, obs.output_bytes, 4) >= 0);
    fuzz_check_usage(&obs.usage);
}

#endif
