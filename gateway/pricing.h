/*
 * Money for the AI gateway: the cost of a usage record, the pre-call hold, and credits as text.
 *
 * Every amount is int64 micro-credits (1 credit = 1,000,000); prices are micro-credits per million
 * tokens, converted from USD once when the configuration is loaded. cost = ceil(Σ bucket_tokens ×
 * bucket_price / 1,000,000) + requests × per_request: the token sum is exact in unsigned 128-bit
 * arithmetic and rounded up once (never per bucket); reasoning is part of output and is not billed
 * again. No floating point.
 *
 * Price fallback (decided here): a cached_input, cache_write_5m or cache_write_1h price of 0 means
 * "not configured" and that bucket is charged at the input price, so a model whose price list
 * forgets a cache column never gives those tokens away. A genuinely free cache bucket cannot be
 * expressed; no provider has one. A zero input/output/per_request price really is free.
 *
 * Pure; any thread.
 */
#ifndef RB_GATEWAY_PRICING_H
#define RB_GATEWAY_PRICING_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "gateway/usage.h"

/* Micro-credits per credit, and tokens per price unit. */
#define GW_PRICING_MICRO_PER_CREDIT 1000000
#define GW_PRICING_TOKENS_PER_UNIT  1000000
/* Room for any int64 micro-credit amount as credits text, NUL included: "-9223372036854.775808". */
#define GW_PRICING_CREDITS_STR_MAX 24

/** A model's prices. */
typedef struct st_gw_price_t {
    int64_t input, cached_input, cache_write_5m, cache_write_1h,
        output;          /* micro-credits per million tokens */
    int64_t per_request; /* micro-credits per request (e.g. web search) */
} gw_price_t;

/** The cost of usage u at prices p into *cost_micro. RB_ERR_INVAL for a negative token count or
 *  price, RB_ERR_LIMIT when the result does not fit in int64 (*cost_micro untouched then). */
rb_err_t gw_pricing_cost(const gw_price_t *p, const gw_usage_t *u, int64_t *cost_micro);

/** The hold before a call: ceil((input_estimate_tokens × input + max_output_tokens × output) /
 * 1e6) + max_requests × per_request (server tool uses priced apart, such as web searches).
 * RB_ERR_INVAL for negative arguments, RB_ERR_LIMIT on overflow. */
rb_err_t gw_pricing_hold(const gw_price_t *p, int64_t input_estimate_tokens,
                         int64_t max_output_tokens, int64_t max_requests, int64_t *hold_micro);

/** The input tokens a hold counts: estimate (from the body's size), or, for a request that brings
 *  input its body does not hold (gw_request_info_t.input_elsewhere) on a model whose context
 *  window is stated (> 0), the most input that window leaves beside one answer's output cap
 *  (never less than estimate). */
int64_t gw_pricing_hold_input(int64_t estimate, int elsewhere, int64_t context_window, int64_t cap);

/** Writes micro as credits with six decimals ("0.000125", "-1.500000") into buf. Returns the length
 *  written (excluding the NUL), or -1 when cap is too small (buf then holds ""). */
int gw_pricing_format_credits(int64_t micro, char *buf, size_t cap);

#endif
