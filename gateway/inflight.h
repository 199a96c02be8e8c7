/*
 * gw_inflight: the calls under way, kept where the next process finds them (DESIGN.md §3: every
 * request, success or failure, has one usage record; nothing is lost).
 *
 * A usage record is written when a call ends. A gateway killed while calls are under way (SIGKILL,
 * a crash, the OOM killer) used to leave no record of them, although the provider had been asked
 * and may have answered in part. So each call the gateway forwards upstream takes a slot of
 * <spool_dir>/inflight before it is sent: its record as it would be if the process died now, the
 * bytes sent, the prices. While the answer arrives, the slot's output byte count is kept current.
 * Once the call's own record is in the spool, the slot is freed. A slot still held at the next
 * start becomes the record of an interrupted call: status error, error_code gateway_restarted,
 * the input as the provider stated it mid-stream (Anthropic's message_start, cache reads apart) or
 * else estimated from the bytes sent, the output estimated from the bytes received or as stated if
 * more (usage_source estimate: the numbers are partial), priced at the prices
 * the call was forwarded with, billed as the call would have been (from the lease its hold came
 * from). The recorder appends these records to the spool before it replays the spool. If the call's
 * own record reached the spool just before the process died, both are in the spool; the first (the
 * call's own) wins: usage rows and transfers are idempotent by request id.
 *
 * The file is mapped shared: taking, updating and freeing a slot are plain stores, no system call.
 * They survive the process (the kernel keeps the pages), not a machine crash (as the spool's
 * unsynced tail). A slot is filled before it is marked held, and marked free before it is reused,
 * so the next process sees a held slot whole. One process owns the file (the spool directory's
 * flock).
 *
 * Threads: begin/progress/end from any thread; open/recover/close from one thread, before and
 * after.
 */
#ifndef RB_GATEWAY_INFLIGHT_H
#define RB_GATEWAY_INFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "gateway/db.h"
#include "gateway/pricing.h"
#include "gateway/usage.h"

/* Calls journaled at once per process; one past it is served without a slot (and counted). */
#define GW_INFLIGHT_SLOTS 4096
/* The error_code of the record of a call the previous process left under way (a crash, a kill). */
#define GW_INFLIGHT_ERROR_CODE "gateway_restarted"
/* The error_code of the record of a call still under way when this process stopped (SIGTERM). */
#define GW_INFLIGHT_STOPPED_CODE "gateway_stopped"

typedef struct st_gw_inflight_t gw_inflight_t;

/** A call as it is forwarded. */
typedef struct st_gw_inflight_call_t {
    gw_db_usage_row_t row; /* identity, route, model, mode, billed, lease, created_at; the rest is
                              set at recovery (status, error_code, usage, cost; the pointers are
                              not kept) */
    gw_price_t price;      /* per million tokens, as the call was priced when forwarded */
    int priced;            /* 0: the record's cost is 0 */
    int chars_per_token;   /* for the estimate */
    int64_t input_bytes;   /* the request body sent */
} gw_inflight_call_t;

/** Opens (creating or resizing it to GW_INFLIGHT_SLOTS slots) <dir>/inflight, which the caller has
 *  locked. A file of another layout (another version) is renamed inflight.unreadable and logged,
 *  and a new one made. Owned in *out (gw_inflight_close). */
rb_err_t gw_inflight_open(const char *dir, gw_inflight_t **out, char *errbuf, size_t cap);
/** Calls emit once for each held slot, with the interrupted call's record (its error_code is
 *  error_code, its usage estimated), and frees the slot when emit returns 0 (the record is kept
 *  elsewhere); one emit refused (-1) stays held, for the next process. Returns the number of
 *  records kept. Only while no call begins or ends: at open (the slots a previous process left), or
 *  once every loop thread stopped (the calls this process leaves). */
size_t gw_inflight_recover(gw_inflight_t *f, const char *error_code,
                           int (*emit)(void *ctx, const gw_db_usage_row_t *row), void *ctx);
/** Takes a slot for call; returns its index, or -1 when all GW_INFLIGHT_SLOTS are taken. */
int gw_inflight_begin(gw_inflight_t *f, const gw_inflight_call_t *call);
/** The answer so far: its bytes (the output estimate if the process dies) and what the provider has
 *  said of the usage (NULL: nothing yet). slot -1: no-op. */
void gw_inflight_progress(gw_inflight_t *f, int slot, int64_t output_bytes,
                          const gw_usage_t *usage);
/** Frees the slot: the call's own record is in the spool. slot -1: no-op. */
void gw_inflight_end(gw_inflight_t *f, int slot);
/** Slots taken now. */
size_t gw_inflight_used(gw_inflight_t *f);
/** Unmaps and closes; slots still held stay in the file. NULL is a no-op. */
void gw_inflight_close(gw_inflight_t *f);

#endif
