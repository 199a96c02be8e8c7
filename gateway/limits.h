/*
 * gw_limits: parsers of the per-subject limit headers a request may carry (DESIGN.md §3 Limits).
 *
 *   X-Rigbox-Subject-Budget: <credits>;period=<duration>   e.g. "2.5;period=5h"
 *   X-Rigbox-Subject-Rate:   <n>|<n>req;window=<duration>  e.g. "30req;window=60s", "10;window=1m"
 *
 * <credits> is a decimal with at most 6 fraction digits (micro-credits are exact), > 0 and at most
 * GW_LIMITS_CREDITS_MAX. <duration> is an integer followed by s, m, h or d, or bare seconds, from 1
 * s to GW_LIMITS_PERIOD_MAX_S. Optional whitespace is allowed around ';' and '='; anything else (a
 * missing parameter, an unknown parameter, a unit we do not know, trailing bytes) is malformed,
 * which the proxy answers 400 subject_limit_malformed.
 *
 * Also the pure arithmetic of the limit counters (gateway/quota.c keeps the state): fixed windows
 * aligned to the Unix epoch (so every gateway process agrees on where a window starts), the
 * Retry-After of a window, UTC day and month numbers, and whole-credit caps.
 *
 * Pure; any thread.
 */
#ifndef RB_GATEWAY_LIMITS_H
#define RB_GATEWAY_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Longest period or window: 366 days (s). */
#define GW_LIMITS_PERIOD_MAX_S (366 * 86400)
/* Largest budget (credits); keeps micro-credits far from int64 overflow. */
#define GW_LIMITS_CREDITS_MAX 1000000000000LL
/* Largest request count of a rate. */
#define GW_LIMITS_COUNT_MAX 1000000000LL
/* Longest header value parsed (bytes). */
#define GW_LIMITS_VALUE_MAX 128
/* Longest X-Rigbox-Subject (bytes), as usage_events.subject allows. */
#define GW_LIMITS_SUBJECT_MAX 256

/** A subject budget: at most budget_micro of cost per period_s. */
typedef struct st_gw_limits_budget_t {
    int64_t budget_micro;
    int64_t period_s;
} gw_limits_budget_t;

/** A subject rate: at most count requests per window_s. */
typedef struct st_gw_limits_rate_t {
    int64_t count;
    int64_t window_s;
} gw_limits_rate_t;

/** Parses an X-Rigbox-Subject-Budget value (s, len: borrowed). RB_OK or RB_ERR_PARSE (*out
 *  untouched). */
rb_err_t gw_limits_parse_budget(const char *s, size_t len, gw_limits_budget_t *out);
/** Parses an X-Rigbox-Subject-Rate value. RB_OK or RB_ERR_PARSE (*out untouched). */
rb_err_t gw_limits_parse_rate(const char *s, size_t len, gw_limits_rate_t *out);
/** Parses a duration ("30s", "5h", "7d", "90"): RB_OK with seconds in *out, or RB_ERR_PARSE. */
rb_err_t gw_limits_parse_duration(const char *s, size_t len, int64_t *out);

/** 1 when s[0..len) is a usable X-Rigbox-Subject: 1 to GW_LIMITS_SUBJECT_MAX bytes of well-formed
 *  UTF-8 without control characters (C0, DEL, C1), which is what usage_events.subject accepts;
 *  else 0 (the subject is then not attributed). */
int gw_limits_subject_valid(const char *s, size_t len);

/** Start (ms) of the window of len_ms (> 0) that contains now_ms (windows aligned to the epoch). */
int64_t gw_limits_window_start(int64_t now_ms, int64_t len_ms);
/** Whole seconds (>= 1) until the window of len_ms that contains now_ms ends (a Retry-After). */
int64_t gw_limits_retry_after_s(int64_t now_ms, int64_t len_ms);
/** The UTC day of Unix time now_s (>= 0): days since 1970-01-01. */
int64_t gw_limits_utc_day(int64_t now_s);
/** The UTC month of Unix time now_s (>= 0): year * 12 + month - 1. */
int64_t gw_limits_utc_month(int64_t now_s);
/** 1 when spent_micro has reached a cap of cap_credits whole credits; cap 0 = no cap (0). */
int gw_limits_cap_reached(int64_t spent_micro, int64_t cap_credits);

#endif
