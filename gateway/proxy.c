#include "gateway/proxy.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "common/crypto.h"
#include "common/http.h"
#include "common/json.h"
#include "common/log.h"
#include "gateway/adapter.h"
#include "gateway/errors.h"
#include "gateway/pricing.h"
#include "gateway/quota.h"
#include "gateway/sse.h"
#include "gateway/upstream.h"
#include "gateway/usage.h"

/* Longest upstream URL. */
#define GW_PROXY_URL_MAX 4096
/* Longest upstream response header line kept for the client. */
#define GW_PROXY_HEADER_LINE_MAX 1024
/* Room for one request header line sent upstream ("x-api-key: <key>"). */
#define GW_PROXY_UP_HEADER_MAX (GW_IDENTITY_KEY_MAX + 64)
/* Request headers we may send upstream besides content-type and auth. */
#define GW_PROXY_UP_EXTRA_MAX 4
/* Upstream header lines at most: the key's, the content type's and the extras. */
#define GW_PROXY_UP_LINES_MAX (2 + GW_PROXY_UP_EXTRA_MAX)
/* What call_forward allocates for the url and the header lines. */
#define GW_PROXY_UP_MEM_MAX (GW_PROXY_URL_MAX + GW_PROXY_UP_LINES_MAX * GW_PROXY_UP_HEADER_MAX)
/* Longest error message built for a client. */
#define GW_PROXY_MSG_MAX 512
/* A pseudo-route for GET /v1/models (no upstream call, no usage row). */
#define GW_ROUTE_MODELS GW_ROUTE__COUNT
/* Slots of a worker's cache of request-counter handles (by route, model, status). */
#define GW_PROXY_METRIC_CACHE 64

/* One cached rigbox_gateway_requests_total series: handles live as long as the registry. */
typedef struct st_metric_slot_t {
    const cfg_model_t *model; /* NULL: no model */
    int route, status, used;
    rb_metric_t *m;
} metric_slot_t;

static const char KEEPALIVE[] = ": keep-alive\n\n";

typedef struct st_gw_proxy_worker_t {
    gw_proxy_t *proxy;
    h2o_loop_t *loop;
    gw_upstream_t *up;
    gw_identity_port_t *port;
    gw_credits_port_t *cport; /* NULL when metering is off */
    gw_quota_port_t *qport;   /* limits (gateway/quota.h) */
    h2o_timeout_t keepalive_timeout;
    h2o_timeout_t drain_timeout;
    size_t calls; /* calls alive on this worker */
    /* series handles, looked up once (the registry's lookup takes a mutex and formats labels) */
    metric_slot_t m_requests[GW_PROXY_METRIC_CACHE];
    rb_metric_t *m_up_duration[GW_ROUTE__COUNT], *m_up_ttfb[GW_ROUTE__COUNT];
} gw_proxy_worker_t;

struct st_gw_proxy_t {
    const cfg_t *cfg;
    gw_identity_t *idy;
    gw_recorder_t *rec;
    gw_credits_t *credits; /* NULL = metering off: no holds, no leases */
    gw_quota_t *quota;     /* per-user and per-subject limits, owned */
    rb_metrics_t *metrics;
    int drains;       /* atomic: drains running in the process */
    int forward_mock; /* RIGBOX_GATEWAY_FORWARD_MOCK_BEHAVIOR=1: tests script the mock provider */
    rb_metric_t *m_streams, *m_drains, *m_drains_active, *m_drains_refused, *m_bytes_in,
        *m_bytes_out, *m_inflight_full;
};

typedef struct st_route_handler_t {
    h2o_handler_t super;
    gw_proxy_t *proxy;
    int route; /* gw_route_t or GW_ROUTE_MODELS */
} route_handler_t;

typedef struct st_gw_call_t {
    h2o_generator_t super; /* first: the streaming generator */
    gw_proxy_worker_t *pw;
    const cfg_t *cfg;
    h2o_req_t *req; /* NULL once the client's request is gone */
    int route;
    gw_dialect_t dialect;
    char request_id[GW_PROXY_REQUEST_ID_MAX];
    char subject[GW_LIMITS_SUBJECT_MAX + 1];
    uint64_t start_ms;   /* wall clock: created_at, the request id */
    uint64_t start_mono; /* monotonic: ttfb and duration (a clock step cannot make them < 0) */
    int64_t ttfb_ms;
    /* identity and routing */
    gw_identity_job_t *job;
    int have_ident;
    int unrecorded; /* refused because the ledger is behind: no usage record (only the metric) */
    gw_ident_t ident;
    gw_request_info_t info;
    int inspected;
    const cfg_model_t *model;
    int byok;
    const char
        *beta; /* anthropic-beta, its lines joined (an Anthropic provider only; req's pool) */
    size_t beta_len;
    /* upstream request */
    rb_buf_t upbody;
    char *up_mem;   /* the url and header lines below; malloc'd by call_forward, and up_release */
    size_t up_used; /* wipes what was written (a line holds the provider key) before freeing */
    const char *url;
    const char *up_headers[GW_PROXY_UP_LINES_MAX];
    size_t up_headers_len;
    gw_xfer_t *xfer;
    int called;       /* the upstream was asked */
    int journal_slot; /* its slot in the recorder's inflight file until recorded; -1: none */
    /* limits (checked before admission) */
    gw_quota_job_t *qjob;     /* waiting for the user's limits */
    gw_quota_ticket_t quota;  /* counted in the limits; finished once in call_record */
    int has_budget, has_rate; /* X-Rigbox-Subject-Budget / -Rate */
    gw_limits_budget_t budget;
    gw_limits_rate_t rate;
    /* admission */
    gw_credits_job_t *cjob;   /* waiting for a lease */
    gw_credits_hold_t credit; /* carved from a lease; settled once in call_record */
    /* upstream response */
    int up_status;
    int headers_done;
    rb_buf_t resp_headers; /* kept "name: value" lines, '\n'-separated */
    int event_stream;      /* content-type text/event-stream */
    int streaming;         /* answered as a stream */
    int hold_mode;         /* chat/completions: forward only whole events */
    int strip_usage;       /* drop the injected usage chunk */
    rb_buf_t pending, sending, hold, body;
    uint64_t fwd_off; /* stream offset of hold[0] */
    gw_sse_parser_t sse;
    int sse_on;
    int sse_failed; /* the parser gave up (an event past sse_line_max_bytes): usage unreadable */
    gw_usage_observer_t obs;
    uint64_t sse_fed; /* bytes fed to the parser */
    gw_usage_t usage; /* non-streamed answers */
    int usage_done;
    /* client side */
    int started, inflight, final_sent, client_gone;
    int draining, drain_abort, overflow;
    int up_sent;   /* the provider had the whole request when its answer ended or was given up */
    int abandoned; /* the client left and the gateway gave up on the answer (up_abandon) */
    int64_t bytes_out, drained_bytes;
    h2o_timeout_entry_t ka_te, drain_te;
    rb_err_t result;
    /* record */
    int recorded;                       /* call_record ran: once, at the answer or at the end */
    int64_t billed_cost, billed_tokens; /* what call_record counted, for gw_quota_finish */
    const char *status;
    int http_status;
    const char *error_code;
    char error_code_buf[32];
} gw_call_t;

typedef struct st_anchor_t {
    gw_call_t *call;
} anchor_t;

static uint64_t clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Milliseconds since the call started, on the monotonic clock. */
static int64_t call_elapsed_ms(const gw_call_t *c)
{
    return (int64_t)(clock_ms(CLOCK_MONOTONIC) - c->start_mono);
}

static const char *route_path(int route)
{
    switch (route) {
    case GW_ROUTE_CHAT:
        return "/v1/chat/completions";
    case GW_ROUTE_COMPLETIONS:
        return "/v1/completions";
    case GW_ROUTE_RESPONSES:
        return "/v1/responses";
    case GW_ROUTE_EMBEDDINGS:
        return "/v1/embeddings";
    case GW_ROUTE_MESSAGES:
        return "/v1/messages";
    case GW_ROUTE_COUNT_TOKENS:
        return "/v1/messages/count_tokens";
    default:
        return "/v1/models";
    }
}

static gw_price_t model_price(const cfg_model_t *m)
{
    gw_price_t p = {.input = m->prices.input_micro,
                    .cached_input = m->prices.cached_input_micro,
                    .cache_write_5m = m->prices.cache_write_5m_micro,
                    .cache_write_1h = m->prices.cache_write_1h_micro,
                    .output = m->prices.output_micro,
                    .per_request = m->prices.per_request_micro};
    return p;
}

/* Sends an error in the caller's dialect and notes it for the usage row. */
static void call_fail(gw_call_t *c, int status, const char *code, const char *row_status,
                      const char *message, const char *param)
{
    RB_ASSERT(c->req != NULL && !c->final_sent);
    c->status = row_status;
    c->http_status = status;
    c->error_code = code;
    c->final_sent = 1;
    gw_errors_send(c->req, c->dialect, status, code, message, param, c->request_id);
}

/* The answer's bytes that an output estimate counts: the text that arrived (a stream's, or a
 * body's, however far it came: the provider generated it), not the envelope around it. */
static int64_t call_out_bytes(const gw_call_t *c)
{
    if (c->sse_on)
        return c->obs.output_bytes;
    return gw_usage_body_text_bytes((gw_route_t)c->route, c->body.base, c->body.len);
}

/* The input tokens the request's bytes suggest (chars_per_token bytes a token, rounded up). */
static int64_t call_input_estimate(const gw_call_t *c)
{
    int64_t cpt = c->cfg->credits.chars_per_token > 0 ? c->cfg->credits.chars_per_token : 1;
    return ((int64_t)c->info.input_bytes + cpt - 1) / cpt;
}

/* One answer's output cap: the client's (legacy completions: the API's default of 16), else the
 * model's default one, which the rewrite writes upstream. */
static int64_t call_cap(const gw_call_t *c)
{
    return c->info.max_output > 0 ? c->info.max_output : c->model->max_output_default;
}

/* The most output tokens the call may bring: its cap for each choice. */
static int64_t call_max_output(const gw_call_t *c)
{
    return call_cap(c) * c->info.choices;
}

/* An output the provider did not state is billed at the call's cap (what its hold covered), not
 * at the little its bytes show, when those bytes cannot tell: a stream that could not be read to
 * its usage (an event past sse_line_max_bytes); a reasoning model's call its client left (its
 * reasoning tokens, often many times the visible text, are never streamed: a caller who leaves
 * while it reasons would get them free); and a call that asked for no stream whose client left
 * before its answer was whole, given up (its output comes whole at the end, generated and charged
 * all the same). A provider's own failure is not billed so. */
static void call_output_unseen(gw_call_t *c, gw_usage_t *u)
{
    if (!c->sse_failed &&
        !(c->client_gone && (c->model->reasoning || (c->abandoned && !c->info.stream))))
        return;
    if (!(u->reported & GW_USAGE_OUTPUT) && u->output < call_max_output(c))
        u->output = call_max_output(c);
}

/* Usage and its source for the row: the provider's numbers, completed by estimates if needed. */
static const char *call_usage(gw_call_t *c, gw_usage_t *u)
{
    int estimated;

    memset(u, 0, sizeof(*u));
    if (!c->called || c->route == GW_ROUTE_COUNT_TOKENS)
        return "none";
    if (c->up_status == 0 && c->up_sent && (c->client_gone || c->result == RB_ERR_TIMEOUT)) {
        /* no answer: the client left and the transfer was given up (no drain left, or the
         * drain's bound passed), or the provider did not answer in time. It had the whole
         * request, so it is estimated (DESIGN.md §3), not free */
        gw_usage_fill_estimate(u, (int64_t)c->info.input_bytes, 0, c->cfg->credits.chars_per_token);
        call_output_unseen(c, u);
        return "estimate";
    }
    if (c->up_status / 100 != 2)
        return "none";
    if (!c->sse_on && !c->usage_done) {
        c->usage_done = 1;
        gw_usage_from_body((gw_route_t)c->route, c->body.base, c->body.len, NULL, &c->usage);
    }
    *u = c->sse_on ? c->obs.usage : c->usage;
    /* a final usage that states the input; one that states only the output (some compatible
     * servers) has its input estimated below, not free */
    if (u->terminal && (u->reported & GW_USAGE_INPUT_ANY))
        return "provider";
    estimated = gw_usage_fill_estimate(u, (int64_t)c->info.input_bytes, call_out_bytes(c),
                                       c->cfg->credits.chars_per_token);
    call_output_unseen(c, u); /* only ever raises an output fill_estimate counted as estimated */
    return estimated ? "estimate" : "provider";
}

/* What a call's record says of the call itself: who, where, which model, billed or not, when. */
static void call_row_identity(const gw_call_t *c, gw_db_usage_row_t *row)
{
    rb_copy_str(row->request_id, sizeof(row->request_id), c->request_id);
    rb_copy_str(row->user_id, sizeof(row->user_id), c->ident.user_id);
    rb_copy_str(row->workspace_id, sizeof(row->workspace_id), c->ident.workspace_id);
    rb_copy_str(row->subject, sizeof(row->subject), c->subject);
    rb_copy_str(row->route, sizeof(row->route), route_path(c->route));
    if (c->model != NULL) {
        rb_copy_str(row->provider, sizeof(row->provider), c->model->provider->name);
        rb_copy_str(row->model, sizeof(row->model), c->model->name);
        rb_copy_str(row->upstream_model, sizeof(row->upstream_model), c->model->upstream);
    }
    row->byok = c->byok;
    row->billed = !c->byok && c->model != NULL && c->model->priced && c->called;
    row->created_at_ms = (int64_t)c->start_ms;
    if (c->credit.lease != NULL)
        rb_copy_str(row->lease_id, sizeof(row->lease_id), gw_credits_lease_id(c->credit.lease));
}

static void call_record(gw_call_t *c)
{
    gw_db_usage_row_t row_s = {0}, *row = &row_s; /* on the stack: no allocation per request */
    gw_usage_t u;
    uint64_t seq = 0;
    int kept;

    if (c->recorded)
        return;
    c->recorded = 1;
    if (!c->have_ident || c->route == GW_ROUTE_MODELS || c->unrecorded)
        return;
    call_row_identity(c, row);
    row->status = c->status != NULL ? c->status : (c->client_gone ? "client_gone" : "error");
    row->http_status = c->http_status;
    row->usage_source = call_usage(c, &u);
    row->input_uncached = u.input_uncached;
    row->cache_read = u.cache_read;
    row->cache_write_5m = u.cache_write_5m;
    row->cache_write_1h = u.cache_write_1h;
    row->output = u.output;
    row->reasoning = u.reasoning > u.output ? u.output : u.reasoning;
    row->requests = u.requests;
    if (c->model != NULL && c->model->priced) {
        gw_price_t p = model_price(c->model);
        if (gw_pricing_cost(&p, &u, &row->cost_micro) != RB_OK) {
            /* past int64 (absurd provider numbers): bill what was held, never nothing */
            row->cost_micro = c->credit.lease != NULL ? c->credit.amount_micro : 0;
            rb_log_warn("cost_overflow", "request=%s model=%s billed_micro=%lld", c->request_id,
                        c->model->name, (long long)row->cost_micro);
        }
    }
    row->ttfb_ms = c->ttfb_ms;
    row->duration_ms = call_elapsed_ms(c);
    if (row->ttfb_ms > row->duration_ms)
        row->ttfb_ms = row->duration_ms;
    if (strcmp(row->status, "ok") != 0)
        rb_copy_str(row->error_code, sizeof(row->error_code),
                    c->error_code != NULL ? c->error_code : "client_gone");
    kept = gw_recorder_submit(c->pw->proxy->rec, row, c->called, &seq) == 0;
    /* settle exactly once: the cost leaves the lease, the rest of the hold comes back */
    if (c->credit.lease != NULL)
        gw_credits_settle(c->pw->proxy->credits, &c->credit, row->billed ? row->cost_micro : 0,
                          seq);
    /* the record is in the spool; else (a failed write) the journal keeps the call for the next
     * start */
    if (kept)
        gw_inflight_end(gw_recorder_inflight(c->pw->proxy->rec), c->journal_slot);
    c->journal_slot = -1;
    c->billed_cost = row->billed ? row->cost_micro : 0;
    c->billed_tokens =
        u.input_uncached + u.cache_read + u.cache_write_5m + u.cache_write_1h + u.output;
}

/* The requests_total series of (route, model, status), from the worker's cache. */
static rb_metric_t *requests_metric(gw_call_t *c)
{
    gw_proxy_worker_t *pw = c->pw;
    uintptr_t h = (uintptr_t)c->model / sizeof(void *) * 31u + (uintptr_t)c->route * 7u +
                  (uintptr_t)c->http_status;
    metric_slot_t *slot = &pw->m_requests[h % GW_PROXY_METRIC_CACHE];
    char labels[512];

    if (slot->used && slot->model == c->model && slot->route == c->route &&
        slot->status == c->http_status)
        return slot->m;
    snprintf(labels, sizeof(labels), "route=\"%s\",model=\"%s\",status=\"%d\"",
             c->route == GW_ROUTE_MODELS ? "models" : gw_route_name((gw_route_t)c->route),
             c->model != NULL ? c->model->name : "", c->http_status);
    *slot =
        (metric_slot_t){.model = c->model, .route = c->route, .status = c->http_status, .used = 1};
    slot->m = rb_metrics_get(pw->proxy->metrics, RB_METRIC_COUNTER, "rigbox_gateway_requests_total",
                             "AI requests by route, model and HTTP status", labels);
    return slot->m;
}

/* The upstream histograms of route, looked up once per worker. */
static void upstream_metrics(gw_call_t *c, rb_metric_t **duration, rb_metric_t **ttfb)
{
    gw_proxy_worker_t *pw = c->pw;
    char labels[128];

    RB_ASSERT(c->route >= 0 && c->route < GW_ROUTE__COUNT);
    if (pw->m_up_duration[c->route] == NULL) {
        snprintf(labels, sizeof(labels), "route=\"%s\"", gw_route_name((gw_route_t)c->route));
        pw->m_up_duration[c->route] = rb_metrics_get(pw->proxy->metrics, RB_METRIC_HISTOGRAM,
                                                     "rigbox_gateway_upstream_duration",
                                                     "Upstream call duration (seconds)", labels);
        pw->m_up_ttfb[c->route] =
            rb_metrics_get(pw->proxy->metrics, RB_METRIC_HISTOGRAM, "rigbox_gateway_upstream_ttfb",
                           "Time to the provider's response headers (seconds)", labels);
    }
    *duration = pw->m_up_duration[c->route];
    *ttfb = pw->m_up_ttfb[c->route];
}

static void call_metrics(gw_call_t *c)
{
    gw_proxy_t *p = c->pw->proxy;
    rb_metric_t *duration, *ttfb;

    rb_metric_add(requests_metric(c), 1);
    rb_metric_add(p->m_bytes_out, c->bytes_out);
    if (c->called && c->route != GW_ROUTE_MODELS) {
        upstream_metrics(c, &duration, &ttfb);
        rb_metric_observe_us(duration, call_elapsed_ms(c) * 1000);
        if (c->ttfb_ms >= 0)
            rb_metric_observe_us(ttfb, c->ttfb_ms * 1000);
    }
}

/* Wipes and frees the upstream url and header lines (sent, refused, or the call ended). */
static void up_release(gw_call_t *c)
{
    if (c->up_mem == NULL)
        return;
    explicit_bzero(c->up_mem, c->up_used);
    free(c->up_mem);
    c->up_mem = NULL;
    c->up_used = 0;
    c->up_headers_len = 0;
    c->url = NULL;
}

/* Frees the call once nothing refers to it: request gone, transfer ended, lookup answered. */
static void call_maybe_free(gw_call_t *c)
{
    gw_proxy_t *p = c->pw->proxy;

    if (c->req != NULL || c->xfer != NULL || c->job != NULL || c->cjob != NULL || c->qjob != NULL)
        return;
    if (c->draining) {
        __atomic_sub_fetch(&p->drains, 1, __ATOMIC_ACQ_REL);
        rb_metric_add(p->m_drains_active, -1);
    }
    if (c->streaming && c->started)
        rb_metric_add(p->m_streams, -1);
    if (h2o_timeout_is_linked(&c->drain_te))
        h2o_timeout_unlink(&c->drain_te);
    if (h2o_timeout_is_linked(&c->ka_te))
        h2o_timeout_unlink(&c->ka_te);
    call_record(c);
    if (c->journal_slot != -1) { /* forwarded, never recorded: a bug; the slot is not left held */
        rb_log_error("call_unrecorded", "request_id=%s", c->request_id);
        gw_inflight_end(gw_recorder_inflight(c->pw->proxy->rec), c->journal_slot);
    }
    /* the call leaves the limits' concurrency count only now: a buffered answer recorded before it
     * was sent still holds its memory until the client has read it */
    gw_quota_finish(c->pw->proxy->quota, &c->quota, c->billed_cost, c->billed_tokens);
    call_metrics(c);
    gw_identity_wipe(&c->ident);
    up_release(c);
    rb_buf_free(&c->upbody);
    rb_buf_free(&c->resp_headers);
    rb_buf_free(&c->pending);
    rb_buf_free(&c->sending);
    rb_buf_free(&c->hold);
    rb_buf_free(&c->body);
    gw_sse_parser_dispose(&c->sse);
    RB_ASSERT(c->pw->calls > 0);
    c->pw->calls--;
    free(c);
}

/* The client is gone and the provider's answer is given up; whether the provider had the whole
 * request decides what is billed (call_usage). */
static void up_abandon(gw_call_t *c)
{
    c->up_sent = gw_xfer_sent(c->xfer);
    c->abandoned = 1;
    gw_xfer_cancel(c->xfer);
    c->xfer = NULL;
}

static void on_drain_timeout(h2o_timeout_entry_t *te)
{
    gw_call_t *c = H2O_STRUCT_FROM_MEMBER(gw_call_t, drain_te, te);

    if (c->xfer != NULL)
        up_abandon(c);
    c->error_code = "client_gone";
    call_maybe_free(c);
}

/* The client left while the provider is still answering: drain for usage, or cancel. */
static void call_start_drain(gw_call_t *c)
{
    gw_proxy_t *p = c->pw->proxy;
    const cfg_gateway_limits_t *lim = &c->cfg->gateway.limits;
    int usage_known = c->streaming ? c->obs.usage.terminal : 0;

    if (!usage_known && __atomic_add_fetch(&p->drains, 1, __ATOMIC_ACQ_REL) <= lim->drains_max) {
        c->draining = 1;
        rb_metric_add(p->m_drains, 1);
        rb_metric_add(p->m_drains_active, 1);
        h2o_timeout_link(c->pw->loop, &c->pw->drain_timeout, &c->drain_te);
        c->pending.len = 0;
        c->hold.len = 0;
        if (gw_xfer_paused(c->xfer))
            gw_xfer_resume(c->xfer);
        return;
    }
    if (!usage_known) {
        __atomic_sub_fetch(&p->drains, 1, __ATOMIC_ACQ_REL);
        rb_metric_add(p->m_drains_refused, 1);
    }
    up_abandon(c);
}

static void on_anchor_dispose(void *obj)
{
    gw_call_t *c = ((anchor_t *)obj)->call;

    c->req = NULL;
    if (h2o_timeout_is_linked(&c->ka_te))
        h2o_timeout_unlink(&c->ka_te);
    if (c->job != NULL) {
        gw_identity_cancel(c->job);
        c->job = NULL;
    }
    if (c->cjob != NULL) {
        gw_credits_cancel(c->cjob);
        c->cjob = NULL;
    }
    if (c->qjob != NULL) {
        gw_quota_cancel(c->qjob);
        c->qjob = NULL;
    }
    if (c->xfer != NULL) {
        c->client_gone = 1;
        if (c->status == NULL)
            c->status = "client_gone";
        call_start_drain(c);
    }
    call_maybe_free(c);
}

/* ---- upstream callbacks (on_header/on_body run inside curl: no h2o calls there) ---- */

/* The provider's response headers the caller gets. Its rate-limit headers only on the caller's own
 * key: on the operator's they tell the account's tier and, in "remaining", what every other user
 * of the gateway is doing. */
static int header_kept(const char *name, size_t len, int byok)
{
    static const char *const exact[] = {"content-type", "retry-after",    "request-id",
                                        "x-request-id", "x-should-retry", "openai-processing-ms"};
    static const char *const prefix[] = {"x-ratelimit-", "anthropic-ratelimit-"};

    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (len == strlen(exact[i]) && strncasecmp(name, exact[i], len) == 0)
            return 1;
    for (size_t i = 0; byok && i < sizeof(prefix) / sizeof(prefix[0]); i++)
        if (len > strlen(prefix[i]) && strncasecmp(name, prefix[i], strlen(prefix[i])) == 0)
            return 1;
    return 0;
}

static void on_up_header(void *ctx, const char *line, size_t len)
{
    gw_call_t *c = ctx;
    const char *colon;

    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        const char *sp = memchr(line, ' ', len);
        c->up_status = sp != NULL ? (int)strtol(sp + 1, NULL, 10) : 0;
        c->resp_headers.len = 0;
        c->event_stream = 0;
        return;
    }
    if (len == 0) {
        if (c->up_status >= 200 && !c->headers_done) {
            c->headers_done = 1;
            c->ttfb_ms = call_elapsed_ms(c);
        }
        return;
    }
    if ((colon = memchr(line, ':', len)) == NULL || len >= GW_PROXY_HEADER_LINE_MAX ||
        !header_kept(line, (size_t)(colon - line), c->byok))
        return;
    if ((size_t)(colon - line) == 12 && strncasecmp(line, "content-type", 12) == 0) {
        const char *v = colon + 1;
        while (v < line + len && *v == ' ')
            v++;
        c->event_stream =
            (size_t)(line + len - v) >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    }
    /* a whole line or none: add_pass_headers reads "name: value\n" entries */
    if (c->resp_headers.len + len + 1 > c->resp_headers.len_max)
        return;
    rb_buf_append(&c->resp_headers, line, len);
    rb_buf_append(&c->resp_headers, "\n", 1);
}

/* Decides, once the headers are in, how the answer travels. */
static void call_decide(gw_call_t *c)
{
    const cfg_gateway_limits_t *lim = &c->cfg->gateway.limits;

    if (c->sse_on || c->streaming || !c->headers_done || c->up_status / 100 != 2 ||
        !c->event_stream)
        return;
    gw_sse_parser_init(&c->sse, lim->sse_line_max_bytes);
    gw_usage_observer_init(&c->obs, (gw_route_t)c->route, NULL);
    c->sse_on = 1;
    c->streaming = c->info.stream;
    /* only a stream is held back (an event-stream answer to a call that asked for none is not) */
    c->hold_mode = c->streaming && (c->route == GW_ROUTE_CHAT || c->route == GW_ROUTE_COMPLETIONS);
}

static void on_sse_event(void *ctx, const gw_sse_event_t *ev)
{
    gw_call_t *c = ctx;
    size_t pre;

    gw_usage_observe(&c->obs, ev->name, ev->name_len, ev->data, ev->data_len);
    if (!c->hold_mode || c->req == NULL ||
        !gw_adapter_is_injected_usage_chunk(ev->data, ev->data_len))
        return;
    RB_ASSERT(ev->start_off >= c->fwd_off && ev->end_off - c->fwd_off <= c->hold.len);
    pre = (size_t)(ev->start_off - c->fwd_off);
    rb_buf_append(&c->pending, c->hold.base, pre);
    if (!c->strip_usage) { /* the client asked for usage: give it the cost too */
        int64_t cost = 0;
        size_t mark = c->pending.len;
        if (c->model->priced) {
            gw_price_t p = model_price(c->model);
            gw_pricing_cost(&p, &c->obs.usage, &cost);
        }
        rb_buf_puts(&c->pending, "data: ");
        if (gw_adapter_add_cost(ev->data, ev->data_len, cost, &c->pending) == RB_OK) {
            rb_buf_puts(&c->pending, "\n\n");
        } else {
            c->pending.len = mark;
            rb_buf_append(&c->pending, c->hold.base + pre, (size_t)(ev->end_off - ev->start_off));
        }
    }
    rb_buf_consume(&c->hold, (size_t)(ev->end_off - c->fwd_off));
    c->fwd_off = ev->end_off;
}

static int sse_feed(gw_call_t *c, const char *bytes, size_t len)
{
    c->sse_fed += len;
    if (gw_sse_feed(&c->sse, bytes, len, on_sse_event, c) == RB_OK)
        return 0;
    c->sse_failed = 1;
    return -1;
}

/* Streaming with a client: queue bytes for it, holding back partial events in hold mode. */
static void stream_take(gw_call_t *c, const char *bytes, size_t len)
{
    uint64_t limit;

    if (!c->hold_mode) {
        rb_buf_append(&c->pending, bytes, len);
        if (c->sse_on)
            sse_feed(c, bytes, len); /* on failure the usage seen so far is kept */
        return;
    }
    rb_buf_append(&c->hold, bytes, len);
    if (sse_feed(c, bytes, len) != 0) { /* the parser gave up: forward as is from now on */
        rb_buf_append(&c->pending, c->hold.base, c->hold.len);
        c->hold.len = 0;
        c->hold_mode = 0;
        return;
    }
    limit = gw_sse_pending_start(&c->sse);
    RB_ASSERT(limit >= c->fwd_off && limit - c->fwd_off <= c->hold.len);
    rb_buf_append(&c->pending, c->hold.base, (size_t)(limit - c->fwd_off));
    rb_buf_consume(&c->hold, (size_t)(limit - c->fwd_off));
    c->fwd_off = limit;
}

static int on_up_body(void *ctx, const char *bytes, size_t len)
{
    gw_call_t *c = ctx;
    const cfg_gateway_limits_t *lim = &c->cfg->gateway.limits;

    rb_metric_add(c->pw->proxy->m_bytes_in, (int64_t)len);
    call_decide(c);
    if (c->req == NULL) { /* draining: only the usage matters */
        c->drained_bytes += (int64_t)len;
        if ((size_t)c->drained_bytes > lim->drain_bytes_max)
            c->drain_abort = 1;
        if (c->sse_on)
            sse_feed(c, bytes, len);
        else if (rb_buf_append(&c->body, bytes, len) != 0)
            c->drain_abort = 1;
    } else if (c->streaming) {
        if (c->pending.len >= lim->stream_high_water_bytes)
            return 1; /* backpressure: curl offers these bytes again after resume */
        stream_take(c, bytes, len);
    } else {
        if (c->sse_on)
            sse_feed(c, bytes, len); /* an event stream the client did not ask to stream */
        if (rb_buf_append(&c->body, bytes, len) != 0)
            c->overflow = 1;
    }
    /* a non-streamed answer counts its bytes so far (no scan per read): an estimate only a killed
     * process uses */
    gw_inflight_progress(gw_recorder_inflight(c->pw->proxy->rec), c->journal_slot,
                         c->sse_on ? c->obs.output_bytes : (int64_t)c->body.len,
                         c->sse_on ? &c->obs.usage : NULL);
    return 0;
}

/* ---- answering the client (loop only) ---- */

/* Adds the kept provider headers; returns the content-type value (pool memory) or NULL. */
static const char *add_pass_headers(gw_call_t *c)
{
    const char *p = c->resp_headers.base, *end = p + c->resp_headers.len, *ctype = NULL;
    h2o_req_t *req = c->req;

    while (p != NULL && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)),
                   *colon = memchr(p, ':', (size_t)(nl - p));
        const char *v = colon + 1;
        h2o_iovec_t name, value;
        while (v < nl && *v == ' ')
            v++;
        name = h2o_strdup(&req->pool, p, (size_t)(colon - p));
        value = h2o_strdup(&req->pool, v, (size_t)(nl - v));
        h2o_strtolower(name.base, name.len);
        if (name.len == 12 && memcmp(name.base, "content-type", 12) == 0)
            ctype = value.base;
        else
            h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 0, NULL,
                                  value.base, value.len);
        p = nl + 1;
    }
    return ctype;
}

static void stream_start(gw_call_t *c)
{
    h2o_req_t *req = c->req;
    const char *ctype = add_pass_headers(c);

    req->res.status = c->up_status;
    req->res.reason = rb_http_reason(c->up_status);
    ctype = ctype != NULL ? ctype : "text/event-stream";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype,
                   strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
    rb_http_add_header(req, "x-rigbox-request-id", c->request_id);
    h2o_start_response(req, &c->super);
    c->started = 1;
    c->http_status = c->up_status;
    rb_metric_add(c->pw->proxy->m_streams, 1);
}

static void keepalive_relink(gw_call_t *c)
{
    if (h2o_timeout_is_linked(&c->ka_te))
        h2o_timeout_unlink(&c->ka_te);
    if (c->req != NULL && !c->final_sent)
        h2o_timeout_link(c->pw->loop, &c->pw->keepalive_timeout, &c->ka_te);
}

static void stream_flush(gw_call_t *c)
{
    h2o_iovec_t v;

    if (c->req == NULL || c->inflight || c->final_sent)
        return;
    if (!c->started)
        stream_start(c);
    if (c->xfer == NULL) { /* the provider is done: the last send, from pool memory */
        rb_buf_append(&c->pending, c->hold.base, c->hold.len); /* a trailing partial event */
        c->hold.len = 0;
        v = h2o_strdup(&c->req->pool, c->pending.base != NULL ? c->pending.base : "",
                       c->pending.len);
        c->bytes_out += (int64_t)v.len;
        c->pending.len = 0;
        c->final_sent = 1;
        h2o_send(c->req, &v, 1, c->result == RB_OK ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_ERROR);
        return;
    }
    if (c->pending.len == 0)
        return;
    {
        rb_buf_t t = c->sending;
        c->sending = c->pending;
        c->pending = t;
        c->pending.len = 0;
    }
    c->inflight = 1;
    c->bytes_out += (int64_t)c->sending.len;
    v = h2o_iovec_init(c->sending.base, c->sending.len);
    h2o_send(c->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    gw_call_t *c = (gw_call_t *)g;

    c->inflight = 0;
    c->sending.len = 0;
    if (c->xfer != NULL && gw_xfer_paused(c->xfer) &&
        c->pending.len < c->cfg->gateway.limits.stream_low_water_bytes)
        gw_xfer_resume(c->xfer); /* may append to pending right away */
    stream_flush(c);
    keepalive_relink(c);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    /* nothing: the pool anchor's dispose handles a client that left */
}

/* Upstream silent for keepalive_interval_ms: an SSE comment, only between events. */
static void on_keepalive(h2o_timeout_entry_t *te)
{
    gw_call_t *c = H2O_STRUCT_FROM_MEMBER(gw_call_t, ka_te, te);
    h2o_iovec_t v = h2o_iovec_init(KEEPALIVE, sizeof(KEEPALIVE) - 1);
    int boundary = c->hold_mode ? c->hold.len == 0 : gw_sse_pending_start(&c->sse) == c->sse_fed;

    if (c->req == NULL || !c->started || c->inflight || c->final_sent || c->pending.len > 0 ||
        !c->sse_on || !boundary) {
        keepalive_relink(c);
        return;
    }
    c->inflight = 1;
    c->bytes_out += (int64_t)v.len;
    h2o_send(c->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void respond_upstream_failure(gw_call_t *c)
{
    if (c->overflow)
        call_fail(c, 502, "upstream_response_too_large", "upstream_error",
                  "the provider's answer is larger than the gateway buffers", NULL);
    else if (!c->headers_done && c->result == RB_ERR_TIMEOUT)
        call_fail(c, 504, "upstream_timeout", "upstream_error",
                  "the provider did not answer in time", NULL);
    else if (!c->headers_done)
        call_fail(c, 502, "upstream_unreachable", "upstream_error", "could not reach the provider",
                  NULL);
    else
        call_fail(c, 502, "upstream_interrupted", "upstream_error",
                  "the provider's answer was cut short", NULL);
}

/* Reads the usage of a non-streamed body into c->usage (once) and says where its cost goes: *udoc
 * is the body's root usage object, tokenized alone (rb_json_parse_member validates the whole body),
 * its closing brace at body[*uend - 1]; *doc the whole body parsed, when it has no plain root usage
 * object. Both NULL: the body is not JSON (it goes as it is, and has no usage). */
static void body_usage(gw_call_t *c, rb_json_t **udoc, size_t *uend, rb_json_t **doc)
{
    const char *b = c->body.base;
    size_t start = 0;
    rb_err_t e;

    *udoc = *doc = NULL;
    if (c->sse_on)
        return;
    e = rb_json_parse_member(b, c->body.len, NULL, "usage", udoc, &start, uend);
    if (e == RB_OK && b[start] != '{') { /* not an object: read as any other shape */
        rb_json_free(*udoc);
        *udoc = NULL;
    }
    if (*udoc != NULL) {
        if (!c->usage_done)
            gw_usage_from_value((gw_route_t)c->route, *udoc, 0, &c->usage);
    } else if (e != RB_ERR_PARSE && e != RB_ERR_LIMIT &&
               rb_json_parse(b, c->body.len, NULL, doc) == RB_OK && !c->usage_done) {
        gw_usage_from_doc((gw_route_t)c->route, *doc, &c->usage);
    }
    c->usage_done = 1; /* not JSON: c->usage stays empty, as a parse in call_usage would leave it */
}

/* The whole answer is in c->body: pass it on, with the cost when it succeeded. */
static void respond_buffered(gw_call_t *c)
{
    h2o_req_t *req = c->req;
    int status = c->up_status;
    const char *ctype;
    rb_buf_t out;
    rb_json_t *doc = NULL, *udoc = NULL;
    int64_t cost = 0;
    char num[GW_PRICING_CREDITS_STR_MAX]; /* the cost in micro-credits or in credits */
    _Static_assert(GW_PRICING_CREDITS_STR_MAX >= RB_INT64_STR_MAX, "num holds an int64_t");

    if (c->overflow || c->result != RB_OK || !c->headers_done) {
        respond_upstream_failure(c);
        return;
    }
    ctype = add_pass_headers(c);
    rb_http_add_header(req, "x-rigbox-request-id", c->request_id);
    rb_buf_init(&out, 0);
    if (c->up_status / 100 == 2) {
        gw_usage_t u;
        size_t uend = 0;
        rb_err_t err;
        body_usage(c, &udoc, &uend, &doc);
        call_usage(c, &u);
        if (c->model->priced) {
            gw_price_t p = model_price(c->model);
            gw_pricing_cost(&p, &u, &cost);
        }
        rb_fmt_int64(num, cost);
        rb_http_add_header(req, "x-rigbox-cost-micro", num);
        gw_pricing_format_credits(cost, num, sizeof(num));
        rb_http_add_header(req, "x-rigbox-cost-credits", num);
        if (udoc != NULL)
            err = gw_adapter_add_cost_at(c->body.base, c->body.len, uend,
                                         rb_json_count(udoc, 0) == 0, cost, &out);
        else if (doc != NULL)
            err = gw_adapter_add_cost_doc(doc, c->body.base, c->body.len, cost, &out);
        else
            err = RB_ERR_NOTFOUND;
        if (err != RB_OK)
            out.len = 0;
        c->status = "ok";
    } else {
        c->status = "upstream_error";
        snprintf(c->error_code_buf, sizeof(c->error_code_buf), "upstream_http_%d", c->up_status);
        c->error_code = c->error_code_buf;
        if (!c->byok) { /* the operator's key: what the provider says of its account stays here */
            status =
                gw_errors_from_provider(c->dialect, c->up_status, c->body.base, c->body.len, &out);
            ctype = "application/json";
        }
    }
    c->http_status = status;
    c->final_sent = 1;
    c->bytes_out += (int64_t)(out.len > 0 ? out.len : c->body.len);
    /* recorded before the answer leaves, not once the client has read it: a crash while a slow
     * client reads a large answer would lose the record of a call the provider served */
    call_record(c);
    rb_http_send(req, status, ctype != NULL ? ctype : "application/json",
                 out.len > 0 ? out.base : (c->body.base != NULL ? c->body.base : ""),
                 out.len > 0 ? out.len : c->body.len);
    rb_buf_free(&out);
    rb_json_free(udoc);
    rb_json_free(doc);
}

static void on_up_flush(void *ctx)
{
    gw_call_t *c = ctx;

    if (c->req == NULL) {
        if (c->drain_abort && c->xfer != NULL) { /* drain_bytes_max: give up on the usage */
            up_abandon(c);
            call_maybe_free(c);
        }
        return;
    }
    if (c->overflow && c->xfer != NULL) {
        gw_xfer_cancel(c->xfer);
        c->xfer = NULL;
        respond_buffered(c);
        return;
    }
    if (c->streaming)
        stream_flush(c);
}

static void on_up_done(void *ctx, rb_err_t result, const char *errmsg, int sent)
{
    gw_call_t *c = ctx;

    c->xfer = NULL;
    c->result = result;
    c->up_sent = sent;
    call_decide(c);
    if (result != RB_OK)
        rb_log_warn("upstream_failed", "request_id=%s provider=%s error=\"%s\"", c->request_id,
                    c->model->provider->name, errmsg);
    if (c->req == NULL) {
        call_maybe_free(c);
        return;
    }
    if (c->streaming && c->headers_done) {
        if (c->status == NULL)
            c->status = result == RB_OK && !c->obs.provider_error ? "ok" : "upstream_error";
        if (result != RB_OK)
            c->error_code = "stream_interrupted";
        else if (c->obs.provider_error)
            c->error_code = "provider_error";
        stream_flush(c);
        return;
    }
    respond_buffered(c);
}

static const gw_xfer_cb_t XFER_CB = {.on_header = on_up_header,
                                     .on_body = on_up_body,
                                     .on_flush = on_up_flush,
                                     .on_done = on_up_done};

/* ---- the request path ---- */

static int add_up_header(gw_call_t *c, const char *name, const char *value, size_t len)
{
    size_t nlen = strlen(name), need = nlen + len + 3;
    char *line = c->up_mem + c->up_used;

    if (c->up_headers_len >= GW_PROXY_UP_LINES_MAX || need > GW_PROXY_UP_HEADER_MAX ||
        memchr(value, '\r', len) != NULL || memchr(value, '\n', len) != NULL)
        return -1;
    RB_ASSERT(c->up_used + need <= GW_PROXY_UP_MEM_MAX);
    memcpy(line, name, nlen);
    memcpy(line + nlen, ": ", 2);
    memcpy(line + nlen + 2, value, len);
    line[need - 1] = '\0';
    c->up_headers[c->up_headers_len++] = line;
    c->up_used += need;
    return 0;
}

/* The provider auth for this call; only the headers the provider needs, never the caller's token.
 */
/* A call on the operator's key names an anthropic-beta value its provider's `betas` does not
 * list (when it lists any): 400, so the operator's account runs no feature the price table does
 * not know (a longer context at a higher price, paid server tools, files kept on the account).
 * Returns 1 when refused (answered). */
static int beta_refused(gw_call_t *c)
{
    const cfg_provider_t *prov = c->model->provider;
    size_t vlen = c->beta_len, i = 0;
    const char *v = c->beta;
    char msg[GW_PROXY_HEADER_LINE_MAX];

    while (v != NULL && prov->kind == CFG_PROVIDER_ANTHROPIC && prov->betas_len > 0 && i < vlen) {
        size_t start, end, k;
        while (i < vlen && (v[i] == ' ' || v[i] == ','))
            i++;
        for (start = i; i < vlen && v[i] != ','; i++)
            ;
        for (end = i; end > start && v[end - 1] == ' '; end--)
            ;
        if (end == start)
            continue;
        for (k = 0; k < prov->betas_len; k++)
            if (strlen(prov->betas[k]) == end - start &&
                memcmp(prov->betas[k], v + start, end - start) == 0)
                break;
        if (k == prov->betas_len) {
            snprintf(
                msg, sizeof(msg),
                "anthropic-beta '%.*s' is not enabled for this gateway's key (ask its operator, "
                "or use your own key)",
                (int)(end - start > 200 ? 200 : end - start), v + start);
            call_fail(c, 400, "beta_not_allowed", "rejected", msg, NULL);
            return 1;
        }
    }
    return 0;
}

/* On the operator's key, an option that changes the provider's price (the adapter's
 * priced_option) is refused: it would be billed at the model's own prices (a priority tier at
 * standard, a fallback model at the asked one's, a built-in tool's calls at nothing). 1 when
 * refused (answered). */
static int priced_option_refused(gw_call_t *c)
{
    char msg[256];

    if (c->info.priced_option == NULL)
        return 0;
    snprintf(msg, sizeof(msg),
             "'%s' as sent changes what the provider charges, which this gateway's prices do not "
             "cover: not allowed on the gateway's key (leave it out, or use your own key)",
             c->info.priced_option);
    call_fail(c, 400, "priced_option_not_allowed", "rejected", msg, c->info.priced_option);
    return 1;
}

static int build_up_headers(gw_call_t *c, const char *key, size_t key_len)
{
    const cfg_provider_t *prov = c->model->provider;
    const char *v;
    size_t vlen;

    if (prov->kind == CFG_PROVIDER_ANTHROPIC) {
        if (add_up_header(c, "x-api-key", key, key_len) != 0)
            return -1;
        if ((v = rb_http_header(c->req, "anthropic-version", &vlen)) == NULL || vlen == 0) {
            v = prov->anthropic_version;
            vlen = strlen(v);
        }
        if (add_up_header(c, "anthropic-version", v, vlen) != 0)
            return -1;
        if (c->beta != NULL && add_up_header(c, "anthropic-beta", c->beta, c->beta_len) != 0)
            return -1;
    } else {
        char bearer[GW_PROXY_UP_HEADER_MAX];
        int added;
        if (key_len + 8 > sizeof(bearer))
            return -1;
        key_len = strnlen(key, key_len); /* as "%.*s" would */
        memcpy(bearer, "Bearer ", 7);
        memcpy(bearer + 7, key, key_len);
        added = add_up_header(c, "Authorization", bearer, 7 + key_len);
        explicit_bzero(bearer, sizeof(bearer)); /* the key's copy, whatever happened */
        if (added != 0)
            return -1;
        /* an organization or project only means something with the caller's own key */
        if (c->byok && (v = rb_http_header(c->req, "openai-organization", &vlen)) != NULL)
            add_up_header(c, "OpenAI-Organization", v, vlen);
        if (c->byok && (v = rb_http_header(c->req, "openai-project", &vlen)) != NULL)
            add_up_header(c, "OpenAI-Project", v, vlen);
    }
    if (c->pw->proxy->forward_mock &&
        (v = rb_http_header(c->req, "x-mock-behavior", &vlen)) != NULL)
        add_up_header(c, "X-Mock-Behavior", v, vlen);
    return add_up_header(c, "Content-Type", "application/json", 16);
}

/* Picks the key (per-call header, stored BYOK, managed); answers the refusal itself. */
static int choose_key(gw_call_t *c, const char **key, size_t *key_len)
{
    const cfg_provider_t *prov = c->model->provider;
    char msg[GW_PROXY_MSG_MAX];

    if ((*key = rb_http_header(c->req, "x-rigbox-provider-key", key_len)) != NULL && *key_len > 0) {
        c->byok = 1;
        return 0;
    }
    if (c->ident.byok) {
        c->byok = 1;
        /* a stored key is its provider's: never sent to another (nor when none was named) */
        if (c->ident.key_state == GW_IDENTITY_KEY_OK &&
            strcmp(c->ident.provider, prov->name) == 0) {
            *key = c->ident.key;
            *key_len = c->ident.key_len;
            return 0;
        }
        snprintf(msg, sizeof(msg), "BYOK is on but no usable %s key is stored for this %s",
                 prov->name, c->ident.workspace_id[0] ? "workspace" : "user");
        call_fail(c, 400, "byok_key_missing", "rejected", msg, NULL);
        return -1;
    }
    if (!c->model->priced) {
        snprintf(msg, sizeof(msg), "model %s has no price configured; managed calls are refused",
                 c->model->name);
        call_fail(c, 400, "model_not_priced", "rejected", msg, "model");
        return -1;
    }
    if (prov->api_key == NULL || prov->api_key[0] == '\0') {
        snprintf(msg, sizeof(msg), "provider %s has no operator key configured", prov->name);
        call_fail(c, 503, "provider_key_missing", "error", msg, NULL);
        return -1;
    }
    *key = prov->api_key;
    *key_len = strlen(prov->api_key);
    return 0;
}

/* Routes the inspected request to its model; answers refusals itself. */
static int choose_model(gw_call_t *c)
{
    char msg[GW_PROXY_MSG_MAX];
    int anthropic_route = c->dialect == GW_DIALECT_ANTHROPIC;

    if ((c->model = cfg_model_find(c->cfg, c->info.model)) == NULL) {
        snprintf(msg, sizeof(msg), "The model `%s` does not exist or you do not have access to it.",
                 c->info.model);
        call_fail(c, 404, "model_not_found", "rejected", msg, "model");
        return -1;
    }
    if (anthropic_route != (c->model->provider->kind == CFG_PROVIDER_ANTHROPIC)) {
        snprintf(msg, sizeof(msg), "model %s is served by the %s API; call %s instead",
                 c->model->name, anthropic_route ? "OpenAI" : "Anthropic Messages",
                 anthropic_route ? "/v1/chat/completions" : "/v1/messages");
        c->model = NULL;
        call_fail(c, 400, "model_route_mismatch", "rejected", msg, "model");
        return -1;
    }
    if ((c->route == GW_ROUTE_EMBEDDINGS) != (c->model->type == CFG_MODEL_EMBEDDING)) {
        snprintf(msg, sizeof(msg), "model %s is %san embedding model", c->model->name,
                 c->route == GW_ROUTE_EMBEDDINGS ? "not " : "");
        c->model = NULL;
        call_fail(c, 400, "model_wrong_type", "rejected", msg, "model");
        return -1;
    }
    if (c->model->max_output > 0 && c->info.max_output > c->model->max_output) {
        snprintf(msg, sizeof(msg),
                 "%s is too large: %lld. This model supports at most %d output tokens.",
                 c->info.cap_name, (long long)c->info.max_output, c->model->max_output);
        c->model = NULL;
        call_fail(c, 400, "invalid_request", "rejected", msg, c->info.cap_name);
        return -1;
    }
    return 0;
}

static void call_send(gw_call_t *c);
static void call_limits(gw_call_t *c);
static int call_subject_limits(gw_call_t *c);

/* Admission refused or impossible: the answer in the caller's dialect, nothing sent upstream. */
static void call_refuse(gw_call_t *c, gw_credits_result_t r)
{
    up_release(c);
    if (r == GW_CREDITS_INSUFFICIENT)
        call_fail(c, 402, "insufficient_credits", "rejected",
                  "insufficient credits for this request: add credits, or lower max_tokens", NULL);
    else
        call_fail(c, 503, "credits_unavailable", "error",
                  "the gateway cannot reserve credits right now; retry shortly", NULL);
}

static void on_admitted(void *ctx, gw_credits_result_t r, const gw_credits_hold_t *hold)
{
    gw_call_t *c = ctx;

    c->cjob = NULL;
    RB_ASSERT(c->req != NULL); /* a gone request cancels its admission */
    if (r != GW_CREDITS_OK) {
        call_refuse(c, r);
        return;
    }
    c->credit = *hold;
    call_send(c);
}

/* Holds the worst case before the call (DESIGN.md §3 Admission): the input estimate at the input
 * price plus the output cap (the client's, else the model default the rewrite wrote upstream)
 * for every choice asked for (n, best_of). Input stored elsewhere (a previous response, a file by
 * id) is held as the model's context window allows. */
static void call_admit(gw_call_t *c)
{
    gw_price_t p = model_price(c->model);
    int64_t in_tokens, hold = 0;
    gw_credits_result_t r;

    if (c->route == GW_ROUTE_COUNT_TOKENS) { /* never billed: nothing to hold */
        call_send(c);
        return;
    }
    in_tokens = gw_pricing_hold_input(call_input_estimate(c), c->info.input_elsewhere != NULL,
                                      c->model->context_window, call_cap(c));
    /* every choice may reach the cap */
    if (gw_pricing_hold(&p, in_tokens, call_max_output(c), c->info.web_searches, &hold) != RB_OK) {
        call_refuse(c, GW_CREDITS_INSUFFICIENT); /* beyond int64: no balance covers it */
        return;
    }
    if (hold == 0) { /* a free model: nothing to reserve */
        call_send(c);
        return;
    }
    if (!gw_credits_admit(c->pw->cport, c->ident.user_id, hold, &r, &c->credit, on_admitted, c,
                          &c->cjob))
        return; /* on_admitted continues */
    if (r != GW_CREDITS_OK)
        call_refuse(c, r);
    else
        call_send(c);
}

/* The subject limit headers (DESIGN.md §3 Limits); answers 400 subject_limit_malformed itself. */
static int call_subject_limits(gw_call_t *c)
{
    const char *v, *which = NULL;
    size_t len;

    if ((v = rb_http_header(c->req, "x-rigbox-subject-budget", &len)) != NULL) {
        c->has_budget = 1;
        if (gw_limits_parse_budget(v, len, &c->budget) != RB_OK)
            which = "X-Rigbox-Subject-Budget: expected <credits>;period=<duration>";
    }
    if (which == NULL && (v = rb_http_header(c->req, "x-rigbox-subject-rate", &len)) != NULL) {
        c->has_rate = 1;
        if (gw_limits_parse_rate(v, len, &c->rate) != RB_OK)
            which = "X-Rigbox-Subject-Rate: expected <n>[req];window=<duration>";
    }
    if (which == NULL && (c->has_budget || c->has_rate) && c->subject[0] == '\0')
        which = "subject limits need a valid X-Rigbox-Subject (1 to 256 printable characters)";
    if (which == NULL)
        return 0;
    call_fail(c, 400, "subject_limit_malformed", "rejected", which, NULL);
    return -1;
}

/* The limits passed: hold credits (managed calls) and go upstream. */
static void call_limited(gw_call_t *c)
{
    if (!c->byok && c->pw->cport != NULL)
        call_admit(c);
    else
        call_send(c);
}

static void call_limits_answer(gw_call_t *c, const gw_quota_answer_t *a)
{
    char msg[GW_PROXY_MSG_MAX], num[24];
    const char *code = NULL;
    int status;

    if (a->verdict == GW_QUOTA_OK) {
        c->quota = a->ticket;
        call_limited(c);
        return;
    }
    up_release(c);
    status = gw_quota_describe(a, &code, msg, sizeof(msg));
    if (a->retry_after_s > 0) {
        snprintf(num, sizeof(num), "%" PRId64, a->retry_after_s);
        rb_http_add_header(c->req, "retry-after", num);
    }
    call_fail(c, status, code, status == 503 ? "error" : "rejected", msg,
              status == 403 ? "model" : NULL);
}

static void on_quota(void *ctx, const gw_quota_answer_t *a)
{
    gw_call_t *c = ctx;

    c->qjob = NULL;
    RB_ASSERT(c->req != NULL); /* a gone request cancels its check */
    call_limits_answer(c, a);
}

/* Checks and counts the user's and the subject's limits before any spend. */
static void call_limits(gw_call_t *c)
{
    gw_proxy_worker_t *pw = c->pw;
    gw_quota_ask_t ask = {.user = c->ident.user_id,
                          .model = c->model->name,
                          .subject = c->subject,
                          .tokens = call_input_estimate(c),
                          .budget = c->has_budget ? &c->budget : NULL,
                          .rate = c->has_rate ? &c->rate : NULL};
    gw_quota_answer_t a;

    if (gw_quota_admit(pw->qport, &ask, &a, on_quota, c, &c->qjob))
        call_limits_answer(c, &a);
}

static void call_forward(gw_call_t *c)
{
    const cfg_gateway_limits_t *lim = &c->cfg->gateway.limits;
    rb_json_limits_t jl = {(unsigned)lim->json_depth_max, (unsigned)lim->json_tokens_max};
    char msg[GW_ADAPTER_ERRMSG_MAX];
    const char *key = NULL;
    char *url;
    size_t key_len = 0, base_len;
    int64_t cap;
    int force_usage;

    if (gw_recorder_backlogged(c->pw->proxy->rec)) {
        /* A call now might not be recorded. Nor is this refusal: clients that retry at once would
         * otherwise fill the ledger with refusals while billable calls wait (measured: under a
         * 90 s flood, 4.1M refusal rows written and 2M dropped, 0.5M calls served; it is counted
         * in rigbox_gateway_requests_total with status 503). */
        c->unrecorded = 1;
        rb_http_add_header(c->req, "retry-after", "1");
        call_fail(c, 503, "ledger_backlog", "rejected",
                  "usage is being recorded more slowly than calls arrive; retry shortly", NULL);
        return;
    }
    if (gw_adapter_inspect((gw_route_t)c->route, c->req->entity.base, c->req->entity.len, &jl,
                           &c->info, msg, sizeof(msg)) != RB_OK) {
        call_fail(c, 400, "invalid_request", "rejected", msg, c->info.err_param);
        return;
    }
    if (call_subject_limits(c) != 0)
        return;
    if (choose_model(c) != 0 || choose_key(c, &key, &key_len) != 0)
        return;
    cap = !c->byok && !c->info.cap_given ? call_cap(c) : 0; /* the bound the hold counts on */
    force_usage = c->info.stream && !c->info.include_usage;
    c->strip_usage = force_usage;
    rb_buf_init(&c->upbody, lim->body_max_bytes + GW_PROXY_URL_MAX);
    RB_ASSERT(c->up_mem == NULL);
    c->up_mem = rb_malloc(GW_PROXY_UP_MEM_MAX);
    if (gw_adapter_rewrite(c->req->entity.base, c->req->entity.len, &c->info, c->model->upstream,
                           cap, force_usage, &c->upbody) != RB_OK) {
        up_release(c);
        call_fail(c, 413, "request_too_large", "rejected", "the request is too large", NULL);
        return;
    }
    if (c->model->provider->kind == CFG_PROVIDER_ANTHROPIC)
        c->beta = rb_http_header_list(c->req, "anthropic-beta", &c->beta_len);
    if (!c->byok && (beta_refused(c) || priced_option_refused(c))) {
        up_release(c);
        return;
    }
    if (build_up_headers(c, key, key_len) != 0) { /* a key or a passed header past its bound */
        up_release(c);
        call_fail(c, 400, "invalid_request", "rejected",
                  "a provider key or a forwarded header (anthropic-version, anthropic-beta, "
                  "openai-organization, openai-project) is too long",
                  NULL);
        return;
    }
    url = c->up_mem + c->up_used;
    rb_copy_str(url, GW_PROXY_URL_MAX, c->model->provider->base_url);
    base_len = strlen(url);
    rb_copy_str(url + base_len, GW_PROXY_URL_MAX - base_len, route_path(c->route));
    c->url = url;
    c->up_used += strlen(url) + 1;
    call_limits(c);
}

/* The call's slot in the inflight file: its record if the process dies before the call ends. */
static void call_journal(gw_call_t *c)
{
    gw_inflight_call_t j = {0};

    RB_ASSERT(c->journal_slot == -1 && c->called && c->model != NULL);
    call_row_identity(c, &j.row);
    j.price = model_price(c->model);
    j.priced = c->model->priced;
    j.chars_per_token = c->cfg->credits.chars_per_token;
    j.input_bytes = (int64_t)c->info.input_bytes;
    c->journal_slot = gw_inflight_begin(gw_recorder_inflight(c->pw->proxy->rec), &j);
    if (c->journal_slot < 0)
        rb_metric_add(c->pw->proxy->m_inflight_full, 1);
}

/* Starts the upstream transfer (the request is admitted). */
static void call_send(gw_call_t *c)
{
    gw_xfer_req_t xr = {0};

    xr.url = c->url;
    for (size_t i = 0; i < c->up_headers_len; i++)
        xr.headers[i] = c->up_headers[i];
    xr.headers_len = c->up_headers_len;
    xr.body = c->upbody.base != NULL ? c->upbody.base : "";
    xr.body_len = c->upbody.len;
    c->called = 1;
    call_journal(c);
    c->xfer = gw_xfer_start(c->pw->up, &xr, &XFER_CB, c);
    up_release(c); /* curl copied them */
}

/* One model object: OpenAI's {id, object, created, owned_by} or Anthropic's {type, id,
 * display_name, created_at}. */
static void model_json(rb_jw_t *w, const cfg_model_t *m, int anthropic)
{
    rb_jw_obj_begin(w);
    if (anthropic) {
        rb_jw_key(w, "type");
        rb_jw_str(w, "model");
    }
    rb_jw_key(w, "id");
    rb_jw_str(w, m->name);
    if (anthropic) {
        rb_jw_key(w, "display_name");
        rb_jw_str(w, m->name);
        rb_jw_key(w, "created_at");
        rb_jw_str(w, "1970-01-01T00:00:00Z");
    } else {
        rb_jw_key(w, "object");
        rb_jw_str(w, "model");
        rb_jw_key(w, "created");
        rb_jw_int64(w, 0);
        rb_jw_key(w, "owned_by");
        rb_jw_str(w, m->provider->name);
    }
    rb_jw_obj_end(w);
}

/* GET /v1/models (c->info.model empty) or /v1/models/{id}: the configured models, in Anthropic's
 * shape (its models only, those /v1/messages takes) to a caller that sends anthropic-version, as
 * the Anthropic SDKs do; else in OpenAI's. */
static void respond_models(gw_call_t *c)
{
    int anthropic = c->dialect == GW_DIALECT_ANTHROPIC;
    const cfg_model_t *m = NULL, *first = NULL, *last = NULL;
    rb_buf_t out;
    rb_jw_t w;

    if (c->info.model[0] != '\0' && ((m = cfg_model_find(c->cfg, c->info.model)) == NULL ||
                                     (anthropic && m->provider->kind != CFG_PROVIDER_ANTHROPIC))) {
        char msg[GW_MODEL_NAME_MAX + 64];
        snprintf(msg, sizeof(msg), "The model '%s' does not exist", c->info.model);
        call_fail(c, 404, "model_not_found", "rejected", msg, "model");
        return;
    }
    rb_buf_init(&out, 0);
    rb_jw_init(&w, &out);
    if (m != NULL) {
        model_json(&w, m, anthropic);
    } else {
        rb_jw_obj_begin(&w);
        if (!anthropic) {
            rb_jw_key(&w, "object");
            rb_jw_str(&w, "list");
        }
        rb_jw_key(&w, "data");
        rb_jw_arr_begin(&w);
        for (size_t i = 0; i < c->cfg->models_len; i++) {
            const cfg_model_t *each = &c->cfg->models[i];
            if (anthropic && each->provider->kind != CFG_PROVIDER_ANTHROPIC)
                continue;
            model_json(&w, each, anthropic);
            first = first != NULL ? first : each;
            last = each;
        }
        rb_jw_arr_end(&w);
        if (anthropic) {
            rb_jw_key(&w, "has_more");
            rb_jw_bool(&w, 0);
            rb_jw_key(&w, "first_id");
            if (first != NULL)
                rb_jw_str(&w, first->name);
            else
                rb_jw_null(&w);
            rb_jw_key(&w, "last_id");
            if (last != NULL)
                rb_jw_str(&w, last->name);
            else
                rb_jw_null(&w);
        }
        rb_jw_obj_end(&w);
    }
    c->status = "ok";
    c->http_status = 200;
    c->final_sent = 1;
    rb_http_add_header(c->req, "x-rigbox-request-id", c->request_id);
    rb_http_send_json(c->req, 200, &out);
    rb_buf_free(&out);
}

/* The caller is known (or not): go on with the request. */
static void call_identified(gw_call_t *c, rb_err_t err, const gw_ident_t *id)
{
    if (err == RB_ERR_AUTH) {
        call_fail(c, 401, "invalid_api_key", "rejected", "invalid or revoked Rigbox token", NULL);
        return;
    }
    if (err != RB_OK) {
        call_fail(c, 503, "identity_unavailable", "error",
                  "the gateway cannot check tokens right now; retry shortly", NULL);
        return;
    }
    c->ident = *id;
    c->have_ident = 1;
    if (c->route == GW_ROUTE_MODELS)
        respond_models(c);
    else
        call_forward(c);
}

static void on_identity(void *ctx, rb_err_t err, const gw_ident_t *id)
{
    gw_call_t *c = ctx;

    c->job = NULL;
    RB_ASSERT(c->req != NULL); /* a gone request cancels its lookup */
    call_identified(c, err, id);
}

/* The bearer secret from Authorization: Bearer … or x-api-key: …; NULL when neither. */
static const char *find_secret(h2o_req_t *req, size_t *len)
{
    const char *v = rb_http_header(req, "authorization", len);

    if (v != NULL && *len > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
        v += 7;
        *len -= 7;
    } else {
        v = rb_http_header(req, "x-api-key", len);
    }
    /* a field value's surrounding whitespace is not part of it (RFC 9110 5.5) */
    while (v != NULL && *len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        (*len)--;
    }
    while (v != NULL && *len > 0 && (v[*len - 1] == ' ' || v[*len - 1] == '\t'))
        (*len)--;
    return v;
}

static gw_call_t *call_new(gw_proxy_worker_t *pw, h2o_req_t *req, int route)
{
    gw_call_t *c = rb_calloc(1, sizeof(*c));
    anchor_t *a = h2o_mem_alloc_shared(&req->pool, sizeof(*a), on_anchor_dispose);
    const char *subj;
    size_t subj_len;

    a->call = c;
    c->pw = pw;
    c->cfg = pw->proxy->cfg;
    c->req = req;
    c->route = route;
    /* /v1/models speaks Anthropic's dialect to a caller that sends anthropic-version (its SDKs) */
    c->dialect = route != GW_ROUTE_MODELS ? gw_route_dialect((gw_route_t)route)
                 : rb_http_header(req, "anthropic-version", NULL) != NULL ? GW_DIALECT_ANTHROPIC
                                                                          : GW_DIALECT_OPENAI;
    c->super.proceed = on_proceed;
    c->super.stop = on_stop;
    c->ka_te.cb = on_keepalive;
    c->drain_te.cb = on_drain_timeout;
    c->start_ms = clock_ms(CLOCK_REALTIME);
    c->start_mono = clock_ms(CLOCK_MONOTONIC);
    c->journal_slot = -1;
    c->ttfb_ms = -1;
    /* time-ordered: usage_events and credit_transfers are keyed by it */
    rb_sortable_id("req_", c->start_ms, c->request_id, sizeof(c->request_id));
    rb_buf_init(&c->resp_headers, GW_PROXY_PASS_HEADERS_MAX * GW_PROXY_HEADER_LINE_MAX);
    rb_buf_init(&c->body, GW_PROXY_RESPONSE_MAX);
    rb_buf_init(&c->pending, 0);
    rb_buf_init(&c->sending, 0);
    rb_buf_init(&c->hold, 0);
    if ((subj = rb_http_header(req, "x-rigbox-subject", &subj_len)) != NULL &&
        gw_limits_subject_valid(subj, subj_len))
        snprintf(c->subject, sizeof(c->subject), "%.*s", (int)subj_len, subj);
    pw->calls++;
    return c;
}

static int on_ai_request(h2o_handler_t *self, h2o_req_t *req)
{
    route_handler_t *h = (route_handler_t *)self;
    gw_proxy_worker_t *pw = rb_server_worker(req)->data;
    gw_call_t *c;
    const char *secret;
    size_t len = 0;
    gw_ident_t id;
    rb_err_t err = RB_OK;
    ssize_t n;
    h2o_iovec_t path = rb_http_path(req);

    size_t plen = strlen(route_path(h->route));
    if (!h2o_memis(path.base, path.len, route_path(h->route), plen) &&
        !(h->route == GW_ROUTE_MODELS && path.len > plen + 1 && path.base[plen] == '/' &&
          path.len - plen - 1 <= GW_MODEL_NAME_MAX)) {
        gw_errors_early_send(req, 404); /* a longer path under this prefix: no such route */
        return 0;
    }
    c = call_new(pw, req, h->route);
    /* GET /v1/models/{id}: the model's name, alias or provider/model slug, as the SDKs send it
     * (percent-encoded: "openai%2Fgpt-4o"); one that does not decode is kept raw, and matches no
     * model (a configured name holds no '%') */
    if (path.len > plen && ((n = rb_http_path_decode(path.base + plen + 1, path.len - plen - 1,
                                                     c->info.model, sizeof(c->info.model))) <= 0 ||
                            strlen(c->info.model) != (size_t)n))
        snprintf(c->info.model, sizeof(c->info.model), "%.*s", (int)(path.len - plen - 1),
                 path.base + plen + 1);
    if (!rb_http_method_is(req, h->route == GW_ROUTE_MODELS ? "GET" : "POST")) {
        rb_http_add_header(req, "allow", h->route == GW_ROUTE_MODELS ? "GET" : "POST");
        call_fail(c, 405, "method_not_allowed", "rejected", "method not allowed on this route",
                  NULL);
        return 0;
    }
    if ((secret = find_secret(req, &len)) == NULL || len == 0) {
        call_fail(c, 401, "missing_api_key", "rejected",
                  "missing token: send Authorization: Bearer rbw_… or x-api-key", NULL);
        return 0;
    }
    if (gw_identity_resolve(pw->port, secret, len, &id, &err, on_identity, c, &c->job)) {
        call_identified(c, err, &id);
        gw_identity_wipe(&id);
    }
    return 0;
}

void gw_proxy_register(gw_proxy_t *p, h2o_hostconf_t *hc)
{
    static const int routes[] = {GW_ROUTE_CHAT,       GW_ROUTE_COMPLETIONS,  GW_ROUTE_RESPONSES,
                                 GW_ROUTE_EMBEDDINGS, GW_ROUTE_COUNT_TOKENS, GW_ROUTE_MESSAGES,
                                 GW_ROUTE_MODELS};

    /* count_tokens before messages: the first registered prefix that matches wins */
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        route_handler_t *h = (route_handler_t *)rb_server_route(hc, route_path(routes[i]),
                                                                on_ai_request, sizeof(*h));
        h->proxy = p;
        h->route = routes[i];
    }
    rb_server_error_body(hc, gw_errors_early);
}

gw_proxy_t *gw_proxy_create(const cfg_t *cfg, gw_identity_t *idy, gw_recorder_t *rec,
                            gw_credits_t *credits, rb_metrics_t *metrics)
{
    gw_proxy_t *p = rb_calloc(1, sizeof(*p));

    RB_ASSERT(cfg != NULL && idy != NULL && rec != NULL && metrics != NULL);
    p->cfg = cfg;
    p->idy = idy;
    p->rec = rec;
    p->credits = credits;
    p->metrics = metrics;
    p->forward_mock = getenv("RIGBOX_GATEWAY_FORWARD_MOCK_BEHAVIOR") != NULL &&
                      strcmp(getenv("RIGBOX_GATEWAY_FORWARD_MOCK_BEHAVIOR"), "1") == 0;
    if (p->forward_mock)
        rb_log_warn("test_mode", "X-Mock-Behavior is forwarded upstream (tests only)");
    {
        /* tests only: RIGBOX_GATEWAY_RATE_WINDOW_S, a shorter rpm/tpm window than 60 s and as
         * short a re-read interval; RIGBOX_GATEWAY_QUOTA_TABLE_MAX, smaller limit tables */
        const char *w = getenv("RIGBOX_GATEWAY_RATE_WINDOW_S");
        const char *t = getenv("RIGBOX_GATEWAY_QUOTA_TABLE_MAX");
        long ws = w != NULL ? strtol(w, NULL, 10) : 0, tm = t != NULL ? strtol(t, NULL, 10) : 0;
        gw_quota_conf_t qc = {.cfg = cfg,
                              .db_url = cfg->database.url,
                              .connect_timeout_s = cfg->database.connect_timeout_s,
                              .window_ms = ws >= 1 && ws <= 3600 ? (int64_t)ws * 1000 : 0,
                              .table_max = tm >= 1 && tm <= GW_QUOTA_USERS_MAX ? (size_t)tm : 0};
        qc.ttl_ms = qc.window_ms;
        if (qc.window_ms != 0)
            rb_log_warn("test_mode", "rate window and re-reads every %ld s, not 60 s (tests only)",
                        ws);
        if (qc.table_max != 0)
            rb_log_warn("test_mode", "limit tables of %zu entries (tests only)", qc.table_max);
        p->quota = gw_quota_start(&qc);
    }
    p->m_inflight_full = rb_metrics_get(
        metrics, RB_METRIC_COUNTER, "rigbox_gateway_inflight_full_total",
        "Calls forwarded without an inflight slot (all taken): no record if the process dies", "");
    p->m_streams = rb_metrics_get(metrics, RB_METRIC_GAUGE, "rigbox_gateway_active_streams",
                                  "Streamed answers in progress", "");
    p->m_drains = rb_metrics_get(metrics, RB_METRIC_COUNTER, "rigbox_gateway_drains_total",
                                 "Upstream answers drained after the client left", "");
    p->m_drains_active = rb_metrics_get(metrics, RB_METRIC_GAUGE, "rigbox_gateway_active_drains",
                                        "Drains in progress", "");
    p->m_drains_refused =
        rb_metrics_get(metrics, RB_METRIC_COUNTER, "rigbox_gateway_drains_refused_total",
                       "Client departures not drained (drains_max reached)", "");
    p->m_bytes_in =
        rb_metrics_get(metrics, RB_METRIC_COUNTER, "rigbox_gateway_upstream_bytes_total",
                       "Response bytes received from providers", "");
    p->m_bytes_out = rb_metrics_get(metrics, RB_METRIC_COUNTER, "rigbox_gateway_client_bytes_total",
                                    "Response bytes sent to clients", "");
    return p;
}

void gw_proxy_destroy(gw_proxy_t *p)
{
    if (p == NULL) /* the gateway stopped before it made one (a failed start) */
        return;
    gw_quota_stop(p->quota);
    free(p);
}

void gw_proxy_on_worker_start(rb_worker_t *w, void *user)
{
    gw_proxy_t *p = user;
    const cfg_gateway_limits_t *lim = &p->cfg->gateway.limits;
    gw_proxy_worker_t *pw = rb_calloc(1, sizeof(*pw));
    gw_upstream_conf_t uc = {.connect_timeout_ms = lim->upstream_connect_timeout_ms,
                             .total_timeout_ms = lim->upstream_total_timeout_ms,
                             .first_byte_timeout_ms = lim->upstream_first_byte_timeout_ms,
                             .idle_timeout_ms = lim->upstream_idle_timeout_ms,
                             .connections_max = lim->upstream_connections_max};

    pw->proxy = p;
    pw->loop = w->ctx.loop;
    pw->up = gw_upstream_create(w->ctx.loop, &uc);
    pw->port = gw_identity_port_create(p->idy, w->ctx.queue);
    if (p->credits != NULL)
        pw->cport = gw_credits_port_create(p->credits, w->ctx.queue);
    pw->qport = gw_quota_port_create(p->quota, w->ctx.queue);
    h2o_timeout_init(w->ctx.loop, &pw->keepalive_timeout, (uint64_t)lim->keepalive_interval_ms);
    h2o_timeout_init(w->ctx.loop, &pw->drain_timeout, (uint64_t)lim->drain_timeout_ms);
    w->data = pw;
}

void gw_proxy_on_worker_stop(rb_worker_t *w, void *user)
{
    gw_proxy_worker_t *pw = w->data;

    if (pw->calls > 0)
        rb_log_warn("worker_stop_busy", "worker=%u calls=%zu", w->index, pw->calls);
    gw_upstream_destroy(pw->up);
    gw_identity_port_destroy(pw->port);
    gw_credits_port_destroy(pw->cport);
    gw_quota_port_destroy(pw->qport);
    w->data = NULL;
    free(pw);
}

int32_t gw_proxy_loop_wait_ms(rb_worker_t *w, void *user)
{
    gw_proxy_worker_t *pw = w->data;
    return pw != NULL ? gw_upstream_wait_ms(pw->up) : INT32_MAX;
}

int gw_proxy_busy(rb_worker_t *w, void *user)
{
    gw_proxy_worker_t *pw = w->data;
    return pw != NULL && pw->calls > 0;
}
