/*
 * ctl_credits: the credit and AI-usage endpoints of the control API (DESIGN.md §4). Balances come
 * from credit_accounts, the ledger from credit_transfers, usage from usage_events. Money moves only
 * through the SQL functions of schema/0002_credits.sql (rb_grant, rb_grant_expire): this module
 * never writes the ledger tables itself.
 *
 * Amounts: every amount is written twice, as `<name>_micro` (an integer of micro-credits, 1 credit
 * = 1,000,000) and as `<name>` (credits as an exact decimal string with six decimals, "12.500000";
 * never a float). Handlers run on an API worker thread with its blocking connection (ctl_api.h).
 */
#ifndef RB_CONTROL_CREDITS_H
#define RB_CONTROL_CREDITS_H

#include <stddef.h>
#include <stdint.h>

#include "control/api.h"

#define CTL_CREDITS_TEXT_MAX         32   /* "-9223372036854.775808" plus room */
#define CTL_IDEMPOTENCY_KEY_MAX      128  /* bytes of a grant's idempotency_key */
#define CTL_GRANT_NOTE_MAX           1024 /* bytes of a grant's note */
#define CTL_GRANT_MICRO_MAX          INT64_C(1000000000000000) /* one grant: 1e9 credits */
#define CTL_LEDGER_PAGE_DEFAULT      50  /* ledger items per page without ?limit= */
#define CTL_LEDGER_PAGE_MAX          200 /* largest ?limit= */
#define CTL_USAGE_RANGE_DAYS_MAX     400 /* widest ai-usage from..to window */
#define CTL_USAGE_RANGE_DAYS_DEFAULT 30  /* window without ?from= */
#define CTL_TIME_PARAM_MAX           64  /* bytes of a from/to/expires_at timestamp */

/** GET /users/{id|me}/credits → {user_id, total, used, reserved, remaining, overrun, *_micro}. */
void ctl_credits_get(ctl_req_t *r);
/** POST /users/{id}/credits/grants (admin) → 201 {grant} new, 200 {grant} replay, 409 conflict. */
void ctl_credits_grant(ctl_req_t *r);
/** GET /users/{id|me}/ledger?cursor=&limit= → {items (newest first), next_cursor}. */
void ctl_credits_ledger(ctl_req_t *r);
/** GET /users/{id|me}/ai-usage?from=&to=&group_by=day|workspace|model|subject → {items, total}. */
void ctl_credits_usage(ctl_req_t *r);
/** GET /ai/requests/{request_id} → the usage record (owner or admin; 404 otherwise). */
void ctl_credits_request(ctl_req_t *r);

/** Writes micro as an exact decimal credits string ("12.500000") into out (cap >= 24). */
void ctl_credits_format(int64_t micro, char *out, size_t cap);
/** Parses a non-negative decimal credits amount ("12.5", at most 6 decimals, no exponent) of len
 *  bytes into micro-credits; returns 0, or -1 when malformed or out of int64 range. */
int ctl_credits_parse(const char *s, size_t len, int64_t *micro);
/** 1 when s looks like an RFC 3339 timestamp or a YYYY-MM-DD date; PostgreSQL checks the rest and
 *  reads one without an offset as UTC (common/pg.c sets TimeZone=UTC on every connection). */
int ctl_time_param_valid(const char *s);
/** Sends 404 user_not_found and returns -1 when user_id has no users row; 0 when it exists. */
int ctl_user_require(ctl_req_t *r, const char *user_id);

#endif
