/*
 * gw_proxy: the AI proxy's routes and the per-request state machine (DESIGN.md §3).
 *
 * A request goes: identity (gw_identity, cache or the identity thread) → inspect and route the body
 * (gw_adapter, cfg_model_find) → pick the key (per-call X-Rigbox-Provider-Key, stored BYOK, or the
 * operator's managed key) → rewrite → upstream (gw_upstream, libcurl in this worker's loop) →
 * admission (managed calls: a hold carved from the user's credit lease, gw_credits; 402 when the
 * balance cannot cover it, 503 when no lease can be taken in time) → stream or buffer the answer
 * back → one usage record through gw_recorder (the ledger writer), then the hold is settled to the
 * actual cost exactly once. A buffered answer is recorded as it is sent, before the client has read
 * it; a stream, when it ends.
 *
 * Streams are passed through as upstream reads arrive, with backpressure (the transfer pauses above
 * stream_high_water_bytes of unsent data and resumes below stream_low_water_bytes). OpenAI chat and
 * completions streams are held back to event boundaries so the usage chunk the gateway injected can
 * be removed (or, when the client asked for it, given cost_micro/cost_credits); every other stream
 * is forwarded byte for byte. While an upstream stream is silent, `: keep-alive` comments are sent
 * at event boundaries every keepalive_interval_ms (both SDK families ignore SSE comments), so an
 * HTTP/1 client that vanished is noticed. A client that leaves mid-answer is replaced by a bounded
 * drain (drain_timeout_ms, drain_bytes_max, drains_max per process) that reads the provider's
 * usage; otherwise the record is an estimate (usage_source=estimate).
 *
 * Threads: create/register/destroy on the main thread; worker hooks on each worker's thread; the
 * request handlers on the worker that owns the request.
 */
#ifndef RB_GATEWAY_PROXY_H
#define RB_GATEWAY_PROXY_H

#include <h2o.h>

#include "common/metrics.h"
#include "common/server.h"
#include "config/config.h"
#include "gateway/credits.h"
#include "gateway/identity.h"
#include "gateway/recorder.h"

/* Largest non-streamed upstream answer buffered (bytes); past it the call fails with 502. */
#define GW_PROXY_RESPONSE_MAX (64u << 20)
/* Longest request id ("req_" + 40 base62 characters), NUL included. */
#define GW_PROXY_REQUEST_ID_MAX 48
/* Response headers copied from the provider per answer. */
#define GW_PROXY_PASS_HEADERS_MAX 24

typedef struct st_gw_proxy_t gw_proxy_t;

/** The process-wide proxy; borrows cfg, idy, rec, credits and metrics until gw_proxy_destroy.
 *  credits NULL = metering off (no holds or leases; usage is still recorded). */
gw_proxy_t *gw_proxy_create(const cfg_t *cfg, gw_identity_t *idy, gw_recorder_t *rec,
                            gw_credits_t *credits, rb_metrics_t *metrics);
/** Frees the proxy (after the server stopped). */
void gw_proxy_destroy(gw_proxy_t *p);
/** Registers the AI routes (/v1/…) on the AI listener's hostconf. */
void gw_proxy_register(gw_proxy_t *p, h2o_hostconf_t *hc);
/** rb_server hook: the worker's upstream, identity port and timers (worker thread). */
void gw_proxy_on_worker_start(rb_worker_t *w, void *user);
/** rb_server hook: tears the worker's state down (worker thread, loop stopped). */
void gw_proxy_on_worker_stop(rb_worker_t *w, void *user);
/** rb_server hook: how long the loop may sleep (curl's next timeout). */
int32_t gw_proxy_loop_wait_ms(rb_worker_t *w, void *user);
/** rb_server hook: non-zero while the worker has calls in flight (streams, drains, lookups). */
int gw_proxy_busy(rb_worker_t *w, void *user);

#endif
