/*
 * Fuzz target for gateway/limits.c. Any bytes go through both header parsers and the duration
 * parser: none may crash, and whatever parses must be inside the documented bounds.
 */
#include <stdint.h>

#include "gateway/limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    gw_limits_budget_t b;
    gw_limits_rate_t r;
    int64_t d;

    if (gw_limits_parse_budget(s, size, &b) == RB_OK)
        RB_ASSERT(b.budget_micro > 0 && b.budget_micro <= GW_LIMITS_CREDITS_MAX * 1000000 &&
                  b.period_s >= 1 && b.period_s <= GW_LIMITS_PERIOD_MAX_S);
    if (gw_limits_parse_rate(s, size, &r) == RB_OK)
        RB_ASSERT(r.count > 0 && r.count <= GW_LIMITS_COUNT_MAX && r.window_s >= 1 &&
                  r.window_s <= GW_LIMITS_PERIOD_MAX_S);
    if (gw_limits_parse_duration(s, size, &d) == RB_OK)
        RB_ASSERT(d >= 1 && d <= GW_LIMITS_PERIOD_MAX_S);
    return 0;
}
