/*
 * Pricing: see pricing.h. Products of two int64 values fit in 126 bits; the sum of five of them is
 * checked with __builtin_add_overflow on unsigned __int128.
 */
#include "gateway/pricing.h"

#include <string.h>

typedef unsigned __int128 pricing_u128_t;

/* acc += tokens × price; 0 on success, -1 on a negative operand or overflow. */
static int pricing_acc(pricing_u128_t *acc, int64_t tokens, int64_t price)
{
    if (tokens < 0 || price < 0)
        return -1;
    return __builtin_add_overflow(*acc, (pricing_u128_t)tokens * (pricing_u128_t)price, acc) ? -1
                                                                                             : 0;
}

/* ceil(sum / 1e6) as int64; 0 on success, -1 when it does not fit. */
static int pricing_round_up(pricing_u128_t sum, int64_t *out)
{
    pricing_u128_t q = sum / GW_PRICING_TOKENS_PER_UNIT;

    if (sum % GW_PRICING_TOKENS_PER_UNIT != 0)
        q++;
    if (q > (pricing_u128_t)INT64_MAX)
        return -1;
    *out = (int64_t)q;
    return 0;
}

static int64_t pricing_or_input(int64_t price, int64_t input)
{
    return price != 0 ? price : input;
}

static int pricing_valid(const gw_price_t *p)
{
    return p->input >= 0 && p->cached_input >= 0 && p->cache_write_5m >= 0 &&
           p->cache_write_1h >= 0 && p->output >= 0 && p->per_request >= 0;
}

rb_err_t gw_pricing_cost(const gw_price_t *p, const gw_usage_t *u, int64_t *cost_micro)
{
    pricing_u128_t sum = 0;
    int64_t tokens_micro = 0, requests_micro = 0, total = 0;

    RB_ASSERT(p != NULL && u != NULL && cost_micro != NULL);
    if (!pricing_valid(p) || u->input_uncached < 0 || u->cache_read < 0 || u->cache_write_5m < 0 ||
        u->cache_write_1h < 0 || u->output < 0 || u->requests < 0)
        return RB_ERR_INVAL;
    if (pricing_acc(&sum, u->input_uncached, p->input) != 0 ||
        pricing_acc(&sum, u->cache_read, pricing_or_input(p->cached_input, p->input)) != 0 ||
        pricing_acc(&sum, u->cache_write_5m, pricing_or_input(p->cache_write_5m, p->input)) != 0 ||
        pricing_acc(&sum, u->cache_write_1h, pricing_or_input(p->cache_write_1h, p->input)) != 0 ||
        pricing_acc(&sum, u->output, p->output) != 0) /* reasoning is inside output */
        return RB_ERR_LIMIT;
    if (pricing_round_up(sum, &tokens_micro) != 0 ||
        __builtin_mul_overflow(u->requests, p->per_request, &requests_micro) ||
        __builtin_add_overflow(tokens_micro, requests_micro, &total))
        return RB_ERR_LIMIT;
    RB_ASSERT(total >= 0);
    *cost_micro = total;
    return RB_OK;
}

rb_err_t gw_pricing_hold(const gw_price_t *p, int64_t input_estimate_tokens,
                         int64_t max_output_tokens, int64_t max_requests, int64_t *hold_micro)
{
    pricing_u128_t sum = 0;
    int64_t hold = 0, requests_micro = 0;

    RB_ASSERT(p != NULL && hold_micro != NULL);
    if (!pricing_valid(p) || input_estimate_tokens < 0 || max_output_tokens < 0 || max_requests < 0)
        return RB_ERR_INVAL;
    if (pricing_acc(&sum, input_estimate_tokens, p->input) != 0 ||
        pricing_acc(&sum, max_output_tokens, p->output) != 0 || pricing_round_up(sum, &hold) != 0 ||
        __builtin_mul_overflow(max_requests, p->per_request, &requests_micro) ||
        __builtin_add_overflow(hold, requests_micro, &hold))
        return RB_ERR_LIMIT;
    RB_ASSERT(hold >= 0);
    *hold_micro = hold;
    return RB_OK;
}

int64_t gw_pricing_hold_input(int64_t estimate, int elsewhere, int64_t context_window, int64_t cap)
{
    if (!elsewhere || context_window <= 0 || cap >= context_window)
        return estimate;
    return context_window - cap > estimate ? context_window - cap : estimate;
}

int gw_pricing_format_credits(int64_t micro, char *buf, size_t cap)
{
    /* the magnitude as unsigned, so INT64_MIN has one too */
    uint64_t mag = micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;
    uint64_t whole = mag / GW_PRICING_MICRO_PER_CREDIT, frac = mag % GW_PRICING_MICRO_PER_CREDIT;
    char tmp[GW_PRICING_CREDITS_STR_MAX];
    size_t n = sizeof(tmp);

    RB_ASSERT(buf != NULL || cap == 0);
    tmp[--n] = '\0';
    for (int k = 0; k < 6; k++, frac /= 10)
        tmp[--n] = (char)('0' + frac % 10);
    tmp[--n] = '.';
    do {
        tmp[--n] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole != 0);
    if (micro < 0)
        tmp[--n] = '-';
    RB_ASSERT(n < sizeof(tmp));
    if (sizeof(tmp) - n > cap) {
        if (cap > 0)
            buf[0] = '\0';
        return -1;
    }
    memcpy(buf, tmp + n, sizeof(tmp) - n);
    return (int)(sizeof(tmp) - n - 1);
}
