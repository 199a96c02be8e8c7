/*
 * Shared body of the usage fuzz targets: the input goes through gw_usage_from_body, through the
 * observer as one event under each interesting name, and through the SSE parser + observer as a
 * stream. Whatever the bytes, nothing crashes, every bucket stays >= 0, and pricing the result
 * either succeeds or reports RB_ERR_LIMIT.
 */
#ifndef RB_TESTS_FUZZ_USAGE_FUZZ_COMMON_H
#define RB_TESTS_FUZZ_USAGE_FUZZ_COMMON_H

#include <stdint.h>
#include <string.h>

#include "gateway/pricing.h"
#include "gateway/sse.h"
#include "gateway/usage.h"

static void fuzz_check_usage(const gw_usage_t *u)
{
    static const gw_price_t price = {300000000, 30000000,   375000000,
                                     600000000, 1500000000, 1000000};
    int64_t cost = 0;
    rb_err_t err;

    RB_ASSERT(u->input_uncached >= 0 && u->cache_read >= 0 && u->cache_write_5m >= 0);
    RB_ASSERT(u->cache_write_1h >= 0 && u->output >= 0 && u->reasoning >= 0 && u->requests >= 0);
    RB_ASSERT(u->input_uncached <= GW_USAGE_TOKENS_MAX && u->output <= GW_USAGE_TOKENS_MAX);
    err = gw_pricing_cost(&price, u, &cost);
    RB_ASSERT(err == RB_OK || err == RB_ERR_LIMIT);
    RB_ASSERT(err != RB_OK || cost >= 0);
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
