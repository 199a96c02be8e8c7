/*
 * Anthropic wire format: Messages (streamed and not), count_tokens, models, and the error bodies.
 * Streams follow the documented order: message_start (usage with the input and cache buckets and a
 * placeholder output_tokens of 1), content_block_start, ping, content_block_delta...,
 * content_block_stop, message_delta (stop_reason, cumulative usage), message_stop; each event is
 * "event: <type>\ndata: <json>\n\n" with data.type == type. A thinking block (thinking_delta then
 * signature_delta) precedes the text when the request enables thinking.
 */
#include "common/http.h"
#include "tools/mock-provider/mock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/json.h"

#define AN_SSE_TYPE   "text/event-stream; charset=utf-8"
#define AN_ID_LEN_MAX 48
#define AN_PING_EVENT "event: ping\ndata: {\"type\": \"ping\"}\n\n" /* sic: the API spaces it */

typedef struct st_an_ctx_t {
    const mock_call_t *call;
    const mock_plan_t *plan;
    mock_out_t *out;
    char id[AN_ID_LEN_MAX];
    uint64_t last_ping_ms; /* stream time of the last ping, for periodic pings under slow= */
} an_ctx_t;

static void jw_kv_int(rb_jw_t *w, const char *key, int64_t v)
{
    rb_jw_key(w, key);
    rb_jw_int64(w, v);
}

static void jw_kv_str(rb_jw_t *w, const char *key, const char *v)
{
    rb_jw_key(w, key);
    if (v == NULL)
        rb_jw_null(w);
    else
        rb_jw_str(w, v);
}

static void an_event_begin(an_ctx_t *c, rb_jw_t *w, const char *type)
{
    rb_buf_printf(&c->out->body, "event: %s\ndata: ", type);
    rb_jw_init(w, &c->out->body);
    rb_jw_obj_begin(w);
    jw_kv_str(w, "type", type);
}

static void an_event_end(an_ctx_t *c, rb_jw_t *w)
{
    rb_jw_obj_end(w);
    rb_buf_append(&c->out->body, "\n\n", 2);
    mock_out_event_end(c->out);
}

static void an_ping(an_ctx_t *c)
{
    rb_buf_puts(&c->out->body, AN_PING_EVENT);
    mock_out_event_end(c->out);
}

/* Under slow=, a ping whenever MOCK_PING_INTERVAL_MS of stream time passed since the last one. */
static void an_maybe_ping(an_ctx_t *c)
{
    uint64_t now_ms = (uint64_t)(c->out->ev_ends.len / sizeof(size_t)) * c->call->bhv.slow_ms;

    if (c->call->bhv.slow_ms == 0 || now_ms - c->last_ping_ms < MOCK_PING_INTERVAL_MS)
        return;
    an_ping(c);
    c->last_ping_ms = now_ms;
}

/* usage; in_delta selects the message_delta form (cumulative counts, no cache_creation split). */
static void an_usage(rb_jw_t *w, const mock_plan_t *p, int64_t output_tokens, int in_delta)
{
    rb_jw_obj_begin(w);
    jw_kv_int(w, "input_tokens", p->prompt);
    jw_kv_int(w, "cache_creation_input_tokens", p->cache_write_5m + p->cache_write_1h);
    jw_kv_int(w, "cache_read_input_tokens", p->cached);
    if (!in_delta) {
        rb_jw_key(w, "cache_creation");
        rb_jw_obj_begin(w);
        jw_kv_int(w, "ephemeral_5m_input_tokens", p->cache_write_5m);
        jw_kv_int(w, "ephemeral_1h_input_tokens", p->cache_write_1h);
        rb_jw_obj_end(w);
    }
    jw_kv_int(w, "output_tokens", output_tokens);
    if (!in_delta)
        jw_kv_str(w, "service_tier", "standard");
    rb_jw_obj_end(w);
}

static void an_signature(const an_ctx_t *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "EqQBCkgIARABGAIiQ%016llxbW9jaw==",
             (unsigned long long)(c->call->id_hash ^ 0x5bd1e995ull));
}

static void an_tool_id(const an_ctx_t *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "toolu_01%016llx", (unsigned long long)(c->call->id_hash * 13 + 5));
}

static const char *an_stop_reason(const mock_plan_t *p)
{
    return p->tool_call ? "tool_use" : p->truncated ? "max_tokens" : "end_turn";
}

/* The message object; streamed = 1 for the message_start shell (no content yet). */
static void an_message(an_ctx_t *c, rb_jw_t *w, int streamed)
{
    const mock_plan_t *p = c->plan;
    char sig[64];

    rb_jw_obj_begin(w);
    jw_kv_str(w, "id", c->id);
    jw_kv_str(w, "type", "message");
    jw_kv_str(w, "role", "assistant");
    jw_kv_str(w, "model", c->call->model);
    rb_jw_key(w, "content");
    rb_jw_arr_begin(w);
    if (!streamed && p->thinking.n > 0) {
        an_signature(c, sig, sizeof(sig));
        rb_jw_obj_begin(w);
        jw_kv_str(w, "type", "thinking");
        rb_jw_key(w, "thinking");
        rb_jw_strn(w, p->thinking.text.base, p->thinking.text.len);
        jw_kv_str(w, "signature", sig);
        rb_jw_obj_end(w);
    }
    if (!streamed && p->tool_call) { /* its input is the arguments' JSON object, as it is */
        char id[40];
        an_tool_id(c, id, sizeof(id));
        rb_jw_obj_begin(w);
        jw_kv_str(w, "type", "tool_use");
        jw_kv_str(w, "id", id);
        jw_kv_str(w, "name", c->call->tool);
        rb_jw_key(w, "input");
        rb_jw_raw(w, p->text.text.base, p->text.text.len);
        rb_jw_obj_end(w);
    } else if (!streamed) {
        rb_jw_obj_begin(w);
        jw_kv_str(w, "type", "text");
        rb_jw_key(w, "text");
        rb_jw_strn(w, p->text.text.base, p->text.text.len);
        rb_jw_obj_end(w);
    }
    rb_jw_arr_end(w);
    jw_kv_str(w, "stop_reason", streamed ? NULL : an_stop_reason(p));
    jw_kv_str(w, "stop_sequence", NULL);
    if (!c->call->bhv.no_usage) {
        rb_jw_key(w, "usage");
        an_usage(w, p, streamed ? (p->completion < 1 ? p->completion : 1) : p->completion, 0);
    }
    rb_jw_obj_end(w);
}

/* content_block_start for a text or thinking block, or the tool_use block of a tool call. */
static void an_block_start(an_ctx_t *c, int index, int thinking)
{
    rb_jw_t w;
    char id[40];

    an_event_begin(c, &w, "content_block_start");
    jw_kv_int(&w, "index", index);
    rb_jw_key(&w, "content_block");
    rb_jw_obj_begin(&w);
    if (!thinking && c->plan->tool_call) {
        an_tool_id(c, id, sizeof(id));
        jw_kv_str(&w, "type", "tool_use");
        jw_kv_str(&w, "id", id);
        jw_kv_str(&w, "name", c->call->tool);
        rb_jw_key(&w, "input");
        rb_jw_raw(&w, "{}", 2);
    } else {
        jw_kv_str(&w, "type", thinking ? "thinking" : "text");
        jw_kv_str(&w, thinking ? "thinking" : "text", "");
        if (thinking)
            jw_kv_str(&w, "signature", "");
    }
    rb_jw_obj_end(&w);
    an_event_end(c, &w);
    if (index == 0)
        an_ping(c);
}

/* content_block_delta of kind text_delta, thinking_delta, signature_delta or input_json_delta. */
static void an_delta(an_ctx_t *c, int index, const char *kind, const char *s, size_t n)
{
    rb_jw_t w;
    char key[16];
    size_t klen = strlen(kind) - strlen("_delta");

    RB_ASSERT(klen < sizeof(key));
    memcpy(key, kind, klen); /* text_delta carries "text", thinking_delta "thinking", ... */
    key[klen] = '\0';
    if (strcmp(kind, "input_json_delta") == 0) /* ... but input_json_delta "partial_json" */
        snprintf(key, sizeof(key), "partial_json");
    an_maybe_ping(c);
    an_event_begin(c, &w, "content_block_delta");
    jw_kv_int(&w, "index", index);
    rb_jw_key(&w, "delta");
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "type", kind);
    rb_jw_key(&w, key);
    rb_jw_strn(&w, s, n);
    rb_jw_obj_end(&w);
    an_event_end(c, &w);
}

static void an_block_stop(an_ctx_t *c, int index)
{
    rb_jw_t w;

    an_event_begin(c, &w, "content_block_stop");
    jw_kv_int(&w, "index", index);
    an_event_end(c, &w);
}

static void an_thinking_block(an_ctx_t *c)
{
    const mock_pieces_t *t = &c->plan->thinking;
    const char *s;
    size_t n;
    char sig[64];

    an_block_start(c, 0, 1);
    for (size_t i = 0; i < t->n; i++) {
        mock_pieces_get(t, i, &s, &n);
        an_delta(c, 0, "thinking_delta", s, n);
    }
    an_signature(c, sig, sizeof(sig));
    an_delta(c, 0, "signature_delta", sig, strlen(sig));
    an_block_stop(c, 0);
}

/* The text block (or tool_use block); returns 1 when error-mid / reset ended the stream inside it.
 */
static int an_text_block(an_ctx_t *c, int index)
{
    const mock_pieces_t *t = &c->plan->text;
    const mock_behavior_t *b = &c->call->bhv;
    size_t at = t->n < MOCK_ERROR_MID_CHUNKS ? t->n : MOCK_ERROR_MID_CHUNKS;
    const char *s;
    size_t n;
    rb_jw_t w;

    an_block_start(c, index, 0);
    for (size_t i = 0; i <= t->n; i++) {
        if (i == at && b->error_mid) {
            an_event_begin(c, &w, "error");
            rb_jw_key(&w, "error");
            rb_jw_raw(&w, "{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}",
                      strlen("{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}"));
            an_event_end(c, &w);
            return 1;
        }
        if (i == at && b->reset) {
            c->out->reset = 1;
            return 1;
        }
        if (i == t->n)
            break;
        mock_pieces_get(t, i, &s, &n);
        an_delta(c, index, c->plan->tool_call ? "input_json_delta" : "text_delta", s, n);
    }
    an_block_stop(c, index);
    return 0;
}

static void an_stream(an_ctx_t *c)
{
    const mock_plan_t *p = c->plan;
    int index = 0;
    rb_jw_t w;

    an_event_begin(c, &w, "message_start");
    rb_jw_key(&w, "message");
    an_message(c, &w, 1);
    an_event_end(c, &w);
    if (p->thinking.n > 0) {
        an_thinking_block(c);
        index = 1;
    }
    if (an_text_block(c, index))
        return;
    an_event_begin(c, &w, "message_delta");
    rb_jw_key(&w, "delta");
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "stop_reason", an_stop_reason(p));
    jw_kv_str(&w, "stop_sequence", NULL);
    rb_jw_obj_end(&w);
    if (!c->call->bhv.no_usage) {
        rb_jw_key(&w, "usage");
        an_usage(&w, p, p->completion, 1);
    }
    an_event_end(c, &w);
    an_event_begin(c, &w, "message_stop");
    an_event_end(c, &w);
}

/* The anthropic-ratelimit-* headers Anthropic sends with every answer; the request budget
 * exhausted (with Retry-After) on a 429. */
static void an_ratelimit_headers(const mock_call_t *call, mock_out_t *out, int exhausted)
{
    time_t reset = (time_t)call->created + (time_t)(exhausted ? call->bhv.retry_after_s : 1);
    struct tm tm;
    char when[32];

    gmtime_r(&reset, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (exhausted)
        mock_out_header(out, "retry-after", "%u", call->bhv.retry_after_s);
    mock_out_header(out, "anthropic-ratelimit-requests-limit", "50");
    mock_out_header(out, "anthropic-ratelimit-requests-remaining", "%s", exhausted ? "0" : "49");
    mock_out_header(out, "anthropic-ratelimit-requests-reset", "%s", when);
    mock_out_header(out, "anthropic-ratelimit-tokens-limit", "80000");
    mock_out_header(out, "anthropic-ratelimit-tokens-remaining", "80000");
    mock_out_header(out, "anthropic-ratelimit-tokens-reset", "%s", when);
    mock_out_header(out, "anthropic-ratelimit-input-tokens-limit", "40000");
    mock_out_header(out, "anthropic-ratelimit-input-tokens-remaining", "40000");
    mock_out_header(out, "anthropic-ratelimit-input-tokens-reset", "%s", when);
    mock_out_header(out, "anthropic-ratelimit-output-tokens-limit", "16000");
    mock_out_header(out, "anthropic-ratelimit-output-tokens-remaining", "16000");
    mock_out_header(out, "anthropic-ratelimit-output-tokens-reset", "%s", when);
}

void mock_anthropic_render(const mock_call_t *call, const mock_plan_t *plan, mock_out_t *out)
{
    an_ctx_t c = {.call = call, .plan = plan, .out = out};
    rb_jw_t w;

    RB_ASSERT(call != NULL && plan != NULL && out != NULL);
    mock_out_header(out, "request-id", "req_011C%016llx", (unsigned long long)call->id_hash);
    an_ratelimit_headers(call, out, 0);
    if (call->route == MOCK_ROUTE_COUNT_TOKENS) {
        rb_jw_init(&w, &out->body);
        rb_jw_obj_begin(&w);
        jw_kv_int(&w, "input_tokens", plan->prompt);
        rb_jw_obj_end(&w);
        return;
    }
    RB_ASSERT(call->route == MOCK_ROUTE_MESSAGES);
    snprintf(c.id, sizeof(c.id), "msg_01%016llx", (unsigned long long)call->id_hash);
    if (!call->stream) {
        rb_jw_init(&w, &out->body);
        an_message(&c, &w, 0);
        return;
    }
    out->content_type = AN_SSE_TYPE;
    out->stream = 1;
    mock_out_header(out, "cache-control", "no-cache");
    an_stream(&c);
    RB_ASSERT(out->ev_ends.len > 0);
}

void mock_anthropic_error(const mock_error_t *err, uint64_t request_id_hash, mock_out_t *out)
{
    char rid[AN_ID_LEN_MAX];
    rb_jw_t w;

    RB_ASSERT(err != NULL && err->status >= 400 && err->message != NULL);
    snprintf(rid, sizeof(rid), "req_011C%016llx", (unsigned long long)request_id_hash);
    out->status = err->status;
    out->reason = rb_http_reason(err->status);
    mock_out_header(out, "request-id", "%s", rid);
    rb_jw_init(&w, &out->body);
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "type", "error");
    rb_jw_key(&w, "error");
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "type", err->type);
    jw_kv_str(&w, "message", err->message);
    rb_jw_obj_end(&w);
    jw_kv_str(&w, "request_id", rid);
    rb_jw_obj_end(&w);
}

void mock_anthropic_status(const mock_call_t *call, mock_out_t *out)
{
    mock_error_t err = {call->bhv.status, "api_error", "Internal server error", NULL, NULL};

    switch (call->bhv.status) {
    case 400:
        err = (mock_error_t){400, "invalid_request_error", "mock: scripted status 400", NULL, NULL};
        break;
    case 401:
        err = (mock_error_t){401, "authentication_error", "invalid x-api-key", NULL, NULL};
        break;
    case 402:
        err = (mock_error_t){402, "billing_error", "mock: scripted billing error", NULL, NULL};
        break;
    case 403:
        err = (mock_error_t){403, "permission_error", "mock: scripted status 403", NULL, NULL};
        break;
    case 404:
        err = (mock_error_t){404, "not_found_error", "model: not found", NULL, NULL};
        break;
    case 413:
        err = (mock_error_t){413, "request_too_large",
                             "Request exceeds the maximum allowed number "
                             "of bytes.",
                             NULL, NULL};
        break;
    case 429:
        err.type = "rate_limit_error";
        err.message = "This request would exceed the rate limit for your organization of 50 "
                      "requests per minute. For details, refer to: "
                      "https://docs.claude.com/en/api/rate-limits. You can see the response "
                      "headers for current usage. Please reduce the prompt length or the maximum "
                      "tokens requested, or try again later.";
        an_ratelimit_headers(call, out, 1);
        break;
    case 529:
        err.type = "overloaded_error";
        err.message = "Overloaded";
        break;
    default:
        break;
    }
    mock_anthropic_error(&err, call->id_hash, out);
}

void mock_anthropic_models(mock_out_t *out)
{
    static const char body[] =
        "{\"data\":["
        "{\"type\":\"model\",\"id\":\"claude-sonnet-4-20250514\",\"display_name\":\"Claude Sonnet "
        "4\",\"created_at\":\"2025-05-22T00:00:00Z\"},"
        "{\"type\":\"model\",\"id\":\"claude-3-5-haiku-20241022\",\"display_name\":\"Claude Haiku "
        "3.5\",\"created_at\":\"2024-10-22T00:00:00Z\"}],"
        "\"has_more\":false,\"first_id\":\"claude-sonnet-4-20250514\","
        "\"last_id\":\"claude-3-5-haiku-20241022\"}";

    rb_buf_append(&out->body, body, sizeof(body) - 1);
}
