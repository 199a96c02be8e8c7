/*
 * Fuzz target for gateway/limits.c. Any bytes go through both header parsers and the duration
 * parser: none may crash, and whatever parses must be inside the documented bounds. A parsed
 * window or period then goes through the window arithmetic at a clock taken from the input: the
 * window holds the instant and Retry-After is within 1..window seconds.
 */
#include <stdint.h>
#include <string.h>

#include "gateway/limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    gw_limits_budget_t b;
    gw_limits_rate_t r;
    int64_t d, now_ms = 0;

    if (gw_limits_parse_budget(s, size, &b) == RB_OK)
        RB_ASSERT(b.budget_micro > 0 && b.budget_micro <= GW_LIMITS_CREDITS_MAX * 1000000 &&
                  b.period_s >= 1 && b.period_s <= GW_LIMITS_PERIOD_MAX_S);
    memcpy(&now_ms, data, size < sizeof(now_ms) ? size : sizeof(now_ms));
    now_ms = (int64_t)((uint64_t)now_ms >> 2); /* any non-negative instant */
    if (gw_limits_parse_rate(s, size, &r) == RB_OK) {
        int64_t start = gw_limits_window_start(now_ms, r.window_s * 1000);
        int64_t retry = gw_limits_retry_after_s(now_ms, r.window_s * 1000);
        RB_ASSERT(r.count > 0 && r.count <= GW_LIMITS_COUNT_MAX && r.window_s >= 1 &&
                  r.window_s <= GW_LIMITS_PERIOD_MAX_S);
        RB_ASSERT(start <= now_ms && now_ms - start < r.window_s * 1000);
        RB_ASSERT(retry >= 1 && retry <= r.window_s);
    }
    if (gw_limits_parse_budget(s, size, &b) == RB_OK)
        RB_ASSERT(gw_limits_cap_reached(b.budget_micro, b.budget_micro / 1000000) ==
                  (b.budget_micro >= 1000000));
    RB_ASSERT(gw_limits_utc_month(now_ms / 1000) >= 1970 * 12);
    if (gw_limits_parse_duration(s, size, &d) == RB_OK)
        RB_ASSERT(d >= 1 && d <= GW_LIMITS_PERIOD_MAX_S);
    if (gw_limits_subject_valid(s, size)) { /* what usage_events.subject accepts */
        RB_ASSERT(size >= 1 && size <= GW_LIMITS_SUBJECT_MAX);
        for (size_t i = 0; i < size; i++)
            RB_ASSERT(data[i] >= 0x20 && data[i] != 0x7F && data[i] != 0xFF && data[i] != 0xC0);
    }
    return 0;
}
