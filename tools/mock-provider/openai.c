/*
 * OpenAI wire format: Chat Completions, legacy Completions, Responses and Embeddings, streamed
 * (SSE) and not, plus the error bodies and rate-limit headers. Shapes follow the public API
 * reference: chunk `usage: null` on every chunk when stream_options.include_usage is set, one extra
 * `choices: []` chunk with the usage, then `data: [DONE]`; Responses events carry both an `event:`
 * line and a `sequence_number`, and end with exactly one terminal event (no [DONE]).
 */
#include "common/http.h"
#include "tools/mock-provider/mock.h"

#include <stdio.h>
#include <string.h>

#include "common/json.h"

#define OA_FINGERPRINT "fp_6d6f636b31"
#define OA_SSE_TYPE    "text/event-stream; charset=utf-8"
#define OA_ID_LEN_MAX  48

/* Rendering state for one answer. */
typedef struct st_oa_ctx_t {
    const mock_call_t *call;
    const mock_plan_t *plan;
    mock_out_t *out;
    char id[OA_ID_LEN_MAX];
    char item_id[OA_ID_LEN_MAX]; /* the message */
    char rs_id[OA_ID_LEN_MAX];   /* Responses: the reasoning item */
    char fc_id[OA_ID_LEN_MAX];   /* Responses: the function call item */
    char call_id[OA_ID_LEN_MAX]; /* a tool call's id (chat) or call_id (Responses) */
    int64_t seq;                 /* Responses sequence_number */
} oa_ctx_t;

static const char oa_server_error[] =
    "The server had an error while processing your request. Sorry about that!";

/* The rate-limit headers OpenAI sends with every answer; exhausted (with Retry-After) on a 429. */
static void oa_ratelimit_headers(const mock_call_t *call, mock_out_t *out, int exhausted)
{
    if (exhausted)
        mock_out_header(out, "retry-after", "%u", call->bhv.retry_after_s);
    mock_out_header(out, "x-ratelimit-limit-requests", "500");
    mock_out_header(out, "x-ratelimit-limit-tokens", "200000");
    mock_out_header(out, "x-ratelimit-remaining-requests", "%s", exhausted ? "0" : "499");
    mock_out_header(out, "x-ratelimit-remaining-tokens", "%s", exhausted ? "200000" : "199970");
    mock_out_header(out, "x-ratelimit-reset-requests", "%us",
                    exhausted ? call->bhv.retry_after_s : 1);
    mock_out_header(out, "x-ratelimit-reset-tokens", "%s", exhausted ? "0s" : "9ms");
}

static void oa_ctx_init(oa_ctx_t *c, const mock_call_t *call, const mock_plan_t *plan,
                        mock_out_t *out, const char *prefix)
{
    *c = (oa_ctx_t){.call = call, .plan = plan, .out = out};
    snprintf(c->id, sizeof(c->id), "%s%016llx", prefix, (unsigned long long)call->id_hash);
    snprintf(c->item_id, sizeof(c->item_id), "msg_%016llx",
             (unsigned long long)(call->id_hash * 31 + 7));
    snprintf(c->rs_id, sizeof(c->rs_id), "rs_%016llx",
             (unsigned long long)(call->id_hash * 31 + 11));
    snprintf(c->fc_id, sizeof(c->fc_id), "fc_%016llx",
             (unsigned long long)(call->id_hash * 31 + 13));
    snprintf(c->call_id, sizeof(c->call_id), "call_%016llx",
             (unsigned long long)(call->id_hash * 17 + 3));
    mock_out_header(out, "x-request-id", "req_%016llx", (unsigned long long)call->id_hash);
    mock_out_header(out, "openai-version", "2020-10-01");
    mock_out_header(out, "openai-processing-ms", "%u", 120 + (unsigned)(call->id_hash % 300));
    oa_ratelimit_headers(call, out, 0);
    if (call->stream) {
        out->content_type = OA_SSE_TYPE;
        out->stream = 1;
    }
}

/* SSE framing: optional "event:" line, then "data: "; sse_end closes the event. */
static void sse_begin(mock_out_t *out, const char *event)
{
    if (event != NULL)
        rb_buf_printf(&out->body, "event: %s\n", event);
    rb_buf_puts(&out->body, "data: ");
}

static void sse_end(mock_out_t *out)
{
    rb_buf_append(&out->body, "\n\n", 2);
    mock_out_event_end(out);
}

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

static void jw_kv_raw(rb_jw_t *w, const char *key, const char *json)
{
    rb_jw_key(w, key);
    rb_jw_raw(w, json, strlen(json));
}

/* Chat usage; without_input (output-only-usage) leaves out the prompt counts, as some
 * OpenAI-compatible servers do. */
static void jw_chat_usage(rb_jw_t *w, const mock_plan_t *p, int without_input)
{
    rb_jw_obj_begin(w);
    if (without_input) {
        jw_kv_int(w, "completion_tokens", p->completion);
        rb_jw_obj_end(w);
        return;
    }
    jw_kv_int(w, "prompt_tokens", p->prompt);
    jw_kv_int(w, "completion_tokens", p->completion);
    jw_kv_int(w, "total_tokens", p->prompt + p->completion);
    rb_jw_key(w, "prompt_tokens_details");
    rb_jw_obj_begin(w);
    jw_kv_int(w, "cached_tokens", p->cached);
    jw_kv_int(w, "audio_tokens", 0);
    rb_jw_obj_end(w);
    rb_jw_key(w, "completion_tokens_details");
    rb_jw_obj_begin(w);
    jw_kv_int(w, "reasoning_tokens", p->reasoning);
    jw_kv_int(w, "audio_tokens", 0);
    jw_kv_int(w, "accepted_prediction_tokens", 0);
    jw_kv_int(w, "rejected_prediction_tokens", 0);
    rb_jw_obj_end(w);
    rb_jw_obj_end(w);
}

/* The members every chat / completions object starts with. */
static void jw_head(oa_ctx_t *c, rb_jw_t *w, const char *object)
{
    rb_jw_obj_begin(w);
    jw_kv_str(w, "id", c->id);
    jw_kv_str(w, "object", object);
    jw_kv_int(w, "created", c->call->created);
    jw_kv_str(w, "model", c->call->model);
    if (c->call->route == MOCK_ROUTE_CHAT)
        jw_kv_str(w, "service_tier", "default");
    jw_kv_str(w, "system_fingerprint", OA_FINGERPRINT);
}

static const char *oa_finish(const mock_plan_t *p)
{
    return p->tool_call ? "tool_calls" : p->truncated ? "length" : "stop";
}

/* tool_calls: [{index?, id, type, function: {name, arguments}}] of a call of c->call->tool, with
 * args as its arguments; a streamed delta after the first (index 0 only: id, type and name come
 * once, in the first). */
static void jw_tool_calls(oa_ctx_t *c, rb_jw_t *w, int streamed, int first, const char *args,
                          size_t n)
{
    rb_jw_key(w, "tool_calls");
    rb_jw_arr_begin(w);
    rb_jw_obj_begin(w);
    if (streamed)
        jw_kv_int(w, "index", 0);
    if (first) {
        jw_kv_str(w, "id", c->call_id);
        jw_kv_str(w, "type", "function");
    }
    rb_jw_key(w, "function");
    rb_jw_obj_begin(w);
    if (first)
        jw_kv_str(w, "name", c->call->tool);
    rb_jw_key(w, "arguments");
    rb_jw_strn(w, args, n);
    rb_jw_obj_end(w);
    rb_jw_obj_end(w);
    rb_jw_arr_end(w);
}

static int oa_usage_wanted(const mock_call_t *call)
{
    return call->include_usage && !call->bhv.no_usage;
}

/* One chat.completion.chunk; kind: 0 role, 1 content text, 2 finish, 3 usage. */
static void chat_chunk(oa_ctx_t *c, int kind, const char *text, size_t n)
{
    rb_jw_t w;

    sse_begin(c->out, NULL);
    rb_jw_init(&w, &c->out->body);
    jw_head(c, &w, "chat.completion.chunk");
    rb_jw_key(&w, "choices");
    rb_jw_arr_begin(&w);
    if (kind != 3) {
        rb_jw_obj_begin(&w);
        jw_kv_int(&w, "index", 0);
        rb_jw_key(&w, "delta");
        rb_jw_obj_begin(&w);
        if (kind == 0 && c->plan->tool_call) {
            jw_kv_str(&w, "role", "assistant");
            jw_kv_str(&w, "content", NULL);
            jw_tool_calls(c, &w, 1, 1, "", 0);
            jw_kv_str(&w, "refusal", NULL);
        } else if (kind == 0) {
            jw_kv_str(&w, "role", "assistant");
            jw_kv_str(&w, "content", "");
            jw_kv_str(&w, "refusal", NULL);
        } else if (kind == 1 && c->plan->tool_call) {
            jw_tool_calls(c, &w, 1, 0, text, n);
        } else if (kind == 1) {
            rb_jw_key(&w, "content");
            rb_jw_strn(&w, text, n);
        }
        rb_jw_obj_end(&w);
        jw_kv_str(&w, "logprobs", NULL);
        jw_kv_str(&w, "finish_reason", kind == 2 ? oa_finish(c->plan) : NULL);
        rb_jw_obj_end(&w);
    }
    rb_jw_arr_end(&w);
    if (kind == 3) {
        rb_jw_key(&w, "usage");
        jw_chat_usage(&w, c->plan, c->call->bhv.output_only_usage);
    } else if (oa_usage_wanted(c->call)) {
        jw_kv_str(&w, "usage", NULL);
    }
    rb_jw_obj_end(&w);
    sse_end(c->out);
}

/* Chat / completions mid-stream failure: `data: {"error":{...}}` and the stream ends. */
static void oa_error_event(mock_out_t *out)
{
    rb_jw_t w;

    sse_begin(out, NULL);
    rb_jw_init(&w, &out->body);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "error");
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "message", oa_server_error);
    jw_kv_str(&w, "type", "server_error");
    jw_kv_str(&w, "param", NULL);
    jw_kv_str(&w, "code", NULL);
    rb_jw_obj_end(&w);
    rb_jw_obj_end(&w);
    sse_end(out);
}

/* Handles error-mid / reset at chunk i; returns 1 when the stream ends here. */
static int oa_maybe_break(oa_ctx_t *c, size_t i, size_t n)
{
    const mock_behavior_t *b = &c->call->bhv;
    size_t at = n < MOCK_ERROR_MID_CHUNKS ? n : MOCK_ERROR_MID_CHUNKS;

    if (i != at || (!b->error_mid && !b->reset))
        return 0;
    if (b->error_mid)
        oa_error_event(c->out);
    else
        c->out->reset = 1;
    return 1;
}

static void chat_stream(oa_ctx_t *c)
{
    const mock_pieces_t *t = &c->plan->text;
    const char *s;
    size_t n;

    chat_chunk(c, 0, NULL, 0);
    for (size_t i = 0;; i++) {
        if (oa_maybe_break(c, i, t->n))
            return;
        if (i == t->n)
            break;
        mock_pieces_get(t, i, &s, &n);
        chat_chunk(c, 1, s, n);
    }
    chat_chunk(c, 2, NULL, 0);
    if (oa_usage_wanted(c->call))
        chat_chunk(c, 3, NULL, 0);
    sse_begin(c->out, NULL);
    rb_buf_puts(&c->out->body, "[DONE]");
    sse_end(c->out);
}

static void chat_plain(oa_ctx_t *c)
{
    rb_jw_t w;

    rb_jw_init(&w, &c->out->body);
    jw_head(c, &w, "chat.completion");
    /* the real API puts system_fingerprint last; members are unordered in JSON */
    rb_jw_key(&w, "choices");
    rb_jw_arr_begin(&w);
    rb_jw_obj_begin(&w);
    jw_kv_int(&w, "index", 0);
    rb_jw_key(&w, "message");
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "role", "assistant");
    if (c->plan->tool_call) {
        jw_kv_str(&w, "content", NULL);
        jw_tool_calls(c, &w, 0, 1, c->plan->text.text.base, c->plan->text.text.len);
    } else {
        rb_jw_key(&w, "content");
        rb_jw_strn(&w, c->plan->text.text.base, c->plan->text.text.len);
    }
    jw_kv_str(&w, "refusal", NULL);
    jw_kv_raw(&w, "annotations", "[]");
    rb_jw_obj_end(&w);
    jw_kv_str(&w, "logprobs", NULL);
    jw_kv_str(&w, "finish_reason", oa_finish(c->plan));
    rb_jw_obj_end(&w);
    rb_jw_arr_end(&w);
    if (!c->call->bhv.no_usage) {
        rb_jw_key(&w, "usage");
        jw_chat_usage(&w, c->plan, c->call->bhv.output_only_usage);
    }
    rb_jw_obj_end(&w);
}

static void jw_basic_usage(rb_jw_t *w, const mock_plan_t *p)
{
    rb_jw_obj_begin(w);
    jw_kv_int(w, "prompt_tokens", p->prompt);
    jw_kv_int(w, "completion_tokens", p->completion);
    jw_kv_int(w, "total_tokens", p->prompt + p->completion);
    rb_jw_obj_end(w);
}

/* One text_completion object; kind: 0 whole answer, 1 streamed text, 2 finish chunk, 3 usage. */
static void completion_obj(oa_ctx_t *c, int kind, const char *text, size_t n)
{
    rb_jw_t w;

    rb_jw_init(&w, &c->out->body);
    jw_head(c, &w, "text_completion");
    rb_jw_key(&w, "choices");
    rb_jw_arr_begin(&w);
    if (kind != 3) {
        rb_jw_obj_begin(&w);
        rb_jw_key(&w, "text");
        rb_jw_strn(&w, text, n);
        jw_kv_int(&w, "index", 0);
        jw_kv_str(&w, "logprobs", NULL);
        jw_kv_str(&w, "finish_reason", kind == 1 ? NULL : oa_finish(c->plan));
        rb_jw_obj_end(&w);
    }
    rb_jw_arr_end(&w);
    if (kind == 3 || (kind == 0 && !c->call->bhv.no_usage)) {
        rb_jw_key(&w, "usage");
        jw_basic_usage(&w, c->plan);
    } else if (kind != 0 && oa_usage_wanted(c->call)) {
        jw_kv_str(&w, "usage", NULL);
    }
    rb_jw_obj_end(&w);
}

static void completions_render(oa_ctx_t *c)
{
    const mock_pieces_t *t = &c->plan->text;
    const char *s;
    size_t n;

    if (!c->call->stream) {
        completion_obj(c, 0, t->text.base, t->text.len);
        return;
    }
    for (size_t i = 0;; i++) {
        if (oa_maybe_break(c, i, t->n))
            return;
        if (i == t->n)
            break;
        mock_pieces_get(t, i, &s, &n);
        sse_begin(c->out, NULL);
        completion_obj(c, 1, s, n);
        sse_end(c->out);
    }
    sse_begin(c->out, NULL);
    completion_obj(c, 2, "", 0);
    sse_end(c->out);
    if (oa_usage_wanted(c->call)) {
        sse_begin(c->out, NULL);
        completion_obj(c, 3, NULL, 0);
        sse_end(c->out);
    }
    sse_begin(c->out, NULL);
    rb_buf_puts(&c->out->body, "[DONE]");
    sse_end(c->out);
}

/* ---- Responses ---- */

static void resp_usage(rb_jw_t *w, const mock_plan_t *p)
{
    rb_jw_obj_begin(w);
    jw_kv_int(w, "input_tokens", p->prompt);
    rb_jw_key(w, "input_tokens_details");
    rb_jw_obj_begin(w);
    jw_kv_int(w, "cached_tokens", p->cached);
    rb_jw_obj_end(w);
    jw_kv_int(w, "output_tokens", p->completion);
    rb_jw_key(w, "output_tokens_details");
    rb_jw_obj_begin(w);
    jw_kv_int(w, "reasoning_tokens", p->reasoning);
    rb_jw_obj_end(w);
    jw_kv_int(w, "total_tokens", p->prompt + p->completion);
    rb_jw_obj_end(w);
}

static void resp_part(oa_ctx_t *c, rb_jw_t *w, int with_text)
{
    rb_jw_obj_begin(w);
    jw_kv_str(w, "type", "output_text");
    jw_kv_raw(w, "annotations", "[]");
    jw_kv_raw(w, "logprobs", "[]");
    rb_jw_key(w, "text");
    if (with_text)
        rb_jw_strn(w, c->plan->text.text.base, c->plan->text.text.len);
    else
        rb_jw_str(w, "");
    rb_jw_obj_end(w);
}

/* A reasoning summary part: {"type":"summary_text","text":...}, empty until done. */
static void resp_summary_part(oa_ctx_t *c, rb_jw_t *w, int with_text)
{
    rb_jw_obj_begin(w);
    jw_kv_str(w, "type", "summary_text");
    rb_jw_key(w, "text");
    rb_jw_strn(w, with_text ? c->plan->thinking.text.base : "",
               with_text ? c->plan->thinking.text.len : 0);
    rb_jw_obj_end(w);
}

/* The items of a Responses output, in order: a reasoning item when the model reasons, then the
 * message, or the function call when a tool is called. */
enum { RESP_REASONING, RESP_MESSAGE, RESP_FUNCTION_CALL };

static int resp_has_reasoning(const oa_ctx_t *c)
{
    return c->plan->thinking.n > 0;
}

/* The output_index of the message or function call. */
static int resp_main_index(const oa_ctx_t *c)
{
    return resp_has_reasoning(c) ? 1 : 0;
}

/* An output item; done = 0 while in progress (no content, summary or arguments yet). */
static void resp_item(oa_ctx_t *c, rb_jw_t *w, int kind, int done)
{
    const mock_pieces_t *args = &c->plan->text;

    rb_jw_obj_begin(w);
    switch (kind) {
    case RESP_REASONING: /* the summary is only sent when the request asks for one */
        jw_kv_str(w, "id", c->rs_id);
        jw_kv_str(w, "type", "reasoning");
        rb_jw_key(w, "summary");
        rb_jw_arr_begin(w);
        if (done && c->call->reasoning_summary)
            resp_summary_part(c, w, 1);
        rb_jw_arr_end(w);
        break;
    case RESP_FUNCTION_CALL:
        jw_kv_str(w, "id", c->fc_id);
        jw_kv_str(w, "type", "function_call");
        jw_kv_str(w, "status", done ? "completed" : "in_progress");
        rb_jw_key(w, "arguments");
        rb_jw_strn(w, done ? args->text.base : "", done ? args->text.len : 0);
        jw_kv_str(w, "call_id", c->call_id);
        jw_kv_str(w, "name", c->call->tool);
        break;
    default:
        jw_kv_str(w, "id", c->item_id);
        jw_kv_str(w, "type", "message");
        jw_kv_str(w, "status",
                  !done                ? "in_progress"
                  : c->plan->truncated ? "incomplete"
                                       : "completed");
        rb_jw_key(w, "content");
        rb_jw_arr_begin(w);
        if (done)
            resp_part(c, w, 1);
        rb_jw_arr_end(w);
        jw_kv_str(w, "role", "assistant");
        break;
    }
    rb_jw_obj_end(w);
}

static int resp_main_kind(const oa_ctx_t *c)
{
    return c->plan->tool_call ? RESP_FUNCTION_CALL : RESP_MESSAGE;
}

/* The response object; status is in_progress, completed, incomplete or failed. */
static void resp_object(oa_ctx_t *c, rb_jw_t *w, const char *status)
{
    int final = strcmp(status, "in_progress") != 0, failed = strcmp(status, "failed") == 0;

    rb_jw_obj_begin(w);
    jw_kv_str(w, "id", c->id);
    jw_kv_str(w, "object", "response");
    jw_kv_int(w, "created_at", c->call->created);
    jw_kv_str(w, "status", status);
    jw_kv_raw(w, "background", "false");
    jw_kv_raw(w, "error",
              failed ? "{\"code\":\"server_error\",\"message\":\"The server had an "
                       "error while processing your request. Sorry about that!\"}"
                     : "null");
    jw_kv_raw(w, "incomplete_details",
              c->plan->truncated && final && !failed ? "{\"reason\":\"max_output_tokens\"}"
                                                     : "null");
    jw_kv_str(w, "instructions", NULL);
    rb_jw_key(w, "max_output_tokens");
    if (c->call->max_tokens >= 0)
        rb_jw_int64(w, c->call->max_tokens);
    else
        rb_jw_null(w);
    jw_kv_str(w, "model", c->call->model);
    rb_jw_key(w, "output");
    rb_jw_arr_begin(w);
    if (final && !failed) {
        if (resp_has_reasoning(c))
            resp_item(c, w, RESP_REASONING, 1);
        resp_item(c, w, resp_main_kind(c), 1);
    }
    rb_jw_arr_end(w);
    jw_kv_raw(w, "parallel_tool_calls", "true");
    jw_kv_str(w, "previous_response_id", NULL);
    jw_kv_raw(w, "reasoning", "{\"effort\":null,\"summary\":null}");
    jw_kv_str(w, "service_tier", "default");
    jw_kv_raw(w, "store", "true");
    jw_kv_raw(w, "temperature", "1.0");
    jw_kv_raw(w, "text", "{\"format\":{\"type\":\"text\"}}");
    jw_kv_str(w, "tool_choice", "auto");
    jw_kv_raw(w, "tools", "[]");
    jw_kv_raw(w, "top_p", "1.0");
    jw_kv_str(w, "truncation", "disabled");
    rb_jw_key(w, "usage");
    if (final && !failed && !c->call->bhv.no_usage)
        resp_usage(w, c->plan);
    else
        rb_jw_null(w);
    jw_kv_str(w, "user", NULL);
    jw_kv_raw(w, "metadata", "{}");
    rb_jw_obj_end(w);
}

static void resp_event_begin(oa_ctx_t *c, rb_jw_t *w, const char *type)
{
    sse_begin(c->out, type);
    rb_jw_init(w, &c->out->body);
    rb_jw_obj_begin(w);
    jw_kv_str(w, "type", type);
    jw_kv_int(w, "sequence_number", c->seq++);
}

static void resp_event_end(oa_ctx_t *c, rb_jw_t *w)
{
    rb_jw_obj_end(w);
    sse_end(c->out);
}

/* response.output_item.added / .done about the item of kind at output_index index. */
static void resp_item_event(oa_ctx_t *c, const char *type, int kind, int index, int done)
{
    rb_jw_t w;

    resp_event_begin(c, &w, type);
    jw_kv_int(&w, "output_index", index);
    rb_jw_key(&w, "item");
    resp_item(c, &w, kind, done);
    resp_event_end(c, &w);
}

/* response.content_part.added / .done about the message's text part. */
static void resp_part_event(oa_ctx_t *c, const char *type, int done)
{
    rb_jw_t w;

    resp_event_begin(c, &w, type);
    jw_kv_str(&w, "item_id", c->item_id);
    jw_kv_int(&w, "output_index", resp_main_index(c));
    jw_kv_int(&w, "content_index", 0);
    rb_jw_key(&w, "part");
    resp_part(c, &w, done);
    resp_event_end(c, &w);
}

/* response.output_text.delta (text != NULL) or response.output_text.done. */
static void resp_text_event(oa_ctx_t *c, const char *text, size_t n)
{
    rb_jw_t w;

    resp_event_begin(c, &w,
                     text != NULL ? "response.output_text.delta" : "response.output_text.done");
    jw_kv_str(&w, "item_id", c->item_id);
    jw_kv_int(&w, "output_index", resp_main_index(c));
    jw_kv_int(&w, "content_index", 0);
    if (text != NULL) {
        rb_jw_key(&w, "delta");
        rb_jw_strn(&w, text, n);
    } else {
        rb_jw_key(&w, "text");
        rb_jw_strn(&w, c->plan->text.text.base, c->plan->text.text.len);
    }
    jw_kv_raw(&w, "logprobs", "[]");
    resp_event_end(c, &w);
}

static void resp_lifecycle_event(oa_ctx_t *c, const char *type, const char *status)
{
    rb_jw_t w;

    resp_event_begin(c, &w, type);
    rb_jw_key(&w, "response");
    resp_object(c, &w, status);
    resp_event_end(c, &w);
}

/* response.reasoning_summary_text.delta (text != NULL) or .done, of summary part 0. */
static void resp_summary_text_event(oa_ctx_t *c, const char *text, size_t n)
{
    const mock_pieces_t *t = &c->plan->thinking;
    rb_jw_t w;

    resp_event_begin(c, &w,
                     text != NULL ? "response.reasoning_summary_text.delta"
                                  : "response.reasoning_summary_text.done");
    jw_kv_str(&w, "item_id", c->rs_id);
    jw_kv_int(&w, "output_index", 0);
    jw_kv_int(&w, "summary_index", 0);
    rb_jw_key(&w, text != NULL ? "delta" : "text");
    rb_jw_strn(&w, text != NULL ? text : t->text.base, text != NULL ? n : t->text.len);
    resp_event_end(c, &w);
}

/* response.reasoning_summary_part.added / .done. */
static void resp_summary_part_event(oa_ctx_t *c, const char *type, int done)
{
    rb_jw_t w;

    resp_event_begin(c, &w, type);
    jw_kv_str(&w, "item_id", c->rs_id);
    jw_kv_int(&w, "output_index", 0);
    jw_kv_int(&w, "summary_index", 0);
    rb_jw_key(&w, "part");
    resp_summary_part(c, &w, done);
    resp_event_end(c, &w);
}

/* response.function_call_arguments.delta (args != NULL) or .done. */
static void resp_args_event(oa_ctx_t *c, const char *args, size_t n)
{
    const mock_pieces_t *t = &c->plan->text;
    rb_jw_t w;

    resp_event_begin(c, &w,
                     args != NULL ? "response.function_call_arguments.delta"
                                  : "response.function_call_arguments.done");
    jw_kv_str(&w, "item_id", c->fc_id);
    jw_kv_int(&w, "output_index", resp_main_index(c));
    rb_jw_key(&w, args != NULL ? "delta" : "arguments");
    rb_jw_strn(&w, args != NULL ? args : t->text.base, args != NULL ? n : t->text.len);
    resp_event_end(c, &w);
}

/* The stream's `error` event (the real API sends one, and no terminal event, when a response
 * fails in some ways; error-event). */
static void resp_error_event(oa_ctx_t *c)
{
    rb_jw_t w;

    resp_event_begin(c, &w, "error");
    jw_kv_str(&w, "code", "server_error");
    jw_kv_str(&w, "message", oa_server_error);
    jw_kv_str(&w, "param", NULL);
    resp_event_end(c, &w);
}

/* The reasoning item's events: added, the summary (when asked for) in pieces, done. */
static void resp_reasoning_events(oa_ctx_t *c)
{
    const mock_pieces_t *t = &c->plan->thinking;
    const char *s;
    size_t n;

    resp_item_event(c, "response.output_item.added", RESP_REASONING, 0, 0);
    if (c->call->reasoning_summary) {
        resp_summary_part_event(c, "response.reasoning_summary_part.added", 0);
        for (size_t i = 0; i < t->n; i++) {
            mock_pieces_get(t, i, &s, &n);
            resp_summary_text_event(c, s, n);
        }
        resp_summary_text_event(c, NULL, 0);
        resp_summary_part_event(c, "response.reasoning_summary_part.done", 1);
    }
    resp_item_event(c, "response.output_item.done", RESP_REASONING, 0, 1);
}

static void responses_stream(oa_ctx_t *c)
{
    const mock_pieces_t *t = &c->plan->text;
    const mock_behavior_t *b = &c->call->bhv;
    int kind = resp_main_kind(c), index = resp_main_index(c);
    size_t at = t->n < MOCK_ERROR_MID_CHUNKS ? t->n : MOCK_ERROR_MID_CHUNKS;
    const char *s;
    size_t n;

    resp_lifecycle_event(c, "response.created", "in_progress");
    resp_lifecycle_event(c, "response.in_progress", "in_progress");
    if (resp_has_reasoning(c))
        resp_reasoning_events(c);
    resp_item_event(c, "response.output_item.added", kind, index, 0);
    if (kind == RESP_MESSAGE)
        resp_part_event(c, "response.content_part.added", 0);
    for (size_t i = 0;; i++) {
        if (i == at && b->error_event) {
            resp_error_event(c);
            return;
        }
        if (i == at && b->error_mid) {
            resp_lifecycle_event(c, "response.failed", "failed");
            return;
        }
        if (oa_maybe_break(c, i, t->n))
            return;
        if (i == t->n)
            break;
        mock_pieces_get(t, i, &s, &n);
        if (kind == RESP_MESSAGE)
            resp_text_event(c, s, n);
        else
            resp_args_event(c, s, n);
    }
    if (kind == RESP_MESSAGE) {
        resp_text_event(c, NULL, 0);
        resp_part_event(c, "response.content_part.done", 1);
    } else {
        resp_args_event(c, NULL, 0);
    }
    resp_item_event(c, "response.output_item.done", kind, index, 1);
    if (c->plan->truncated)
        resp_lifecycle_event(c, "response.incomplete", "incomplete");
    else
        resp_lifecycle_event(c, "response.completed", "completed");
}

static void responses_render(oa_ctx_t *c)
{
    rb_jw_t w;

    if (c->call->stream) {
        responses_stream(c);
        return;
    }
    rb_jw_init(&w, &c->out->body);
    resp_object(c, &w, c->plan->truncated ? "incomplete" : "completed");
}

/* ---- Embeddings ---- */

/* Component j of the vector for an input with hash h, in millionths, within [-1e6, 1e6]. */
static int32_t embed_value(uint64_t h, uint32_t j)
{
    uint64_t x = mock_hash(h, &j, sizeof(j));

    return (int32_t)(x % 2000001u) - 1000000;
}

static void base64_append(rb_buf_t *out, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        size_t rem = n - i;
        if (rem > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (rem > 2)
            v |= p[i + 2];
        char q[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63], rem > 1 ? tab[(v >> 6) & 63] : '=',
                     rem > 2 ? tab[v & 63] : '='};
        rb_buf_append(out, q, sizeof(q));
    }
}

static void embedding_vector(rb_jw_t *w, const mock_call_t *call, uint64_t h)
{
    char num[24];

    if (call->base64) { /* little-endian float32 array, base64 (what the SDKs ask for) */
        unsigned char bytes[MOCK_EMBED_DIM_MAX * 4];
        for (uint32_t j = 0; j < call->dimensions; j++) {
            float f = (float)embed_value(h, j) / 1e6f;
            memcpy(bytes + j * 4, &f, 4); /* x86/arm little-endian hosts */
        }
        rb_buf_t b64;
        rb_buf_init(&b64, 0);
        base64_append(&b64, bytes, (size_t)call->dimensions * 4);
        rb_jw_strn(w, b64.base, b64.len);
        rb_buf_free(&b64);
        return;
    }
    rb_jw_arr_begin(w);
    for (uint32_t j = 0; j < call->dimensions; j++) {
        int32_t v = embed_value(h, j);
        int len = snprintf(num, sizeof(num), "%s%d.%06d", v < 0 ? "-" : "",
                           (v < 0 ? -v : v) / 1000000, (v < 0 ? -v : v) % 1000000);
        rb_jw_raw(w, num, (size_t)len);
    }
    rb_jw_arr_end(w);
}

static void embeddings_render(oa_ctx_t *c)
{
    const uint64_t *hashes = (const uint64_t *)(void *)c->call->input_hashes.base;
    size_t n = c->call->input_hashes.len / sizeof(uint64_t);
    rb_jw_t w;

    RB_ASSERT(n > 0);
    rb_jw_init(&w, &c->out->body);
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "object", "list");
    rb_jw_key(&w, "data");
    rb_jw_arr_begin(&w);
    for (size_t i = 0; i < n; i++) {
        rb_jw_obj_begin(&w);
        jw_kv_str(&w, "object", "embedding");
        jw_kv_int(&w, "index", (int64_t)i);
        rb_jw_key(&w, "embedding");
        embedding_vector(&w, c->call, hashes[i]);
        rb_jw_obj_end(&w);
    }
    rb_jw_arr_end(&w);
    jw_kv_str(&w, "model", c->call->model);
    rb_jw_key(&w, "usage");
    rb_jw_obj_begin(&w);
    jw_kv_int(&w, "prompt_tokens", c->plan->prompt);
    jw_kv_int(&w, "total_tokens", c->plan->prompt);
    rb_jw_obj_end(&w);
    rb_jw_obj_end(&w);
}

/* ---- entry points ---- */

void mock_openai_render(const mock_call_t *call, const mock_plan_t *plan, mock_out_t *out)
{
    oa_ctx_t c;

    RB_ASSERT(call != NULL && plan != NULL && out != NULL);
    switch (call->route) {
    case MOCK_ROUTE_CHAT:
        oa_ctx_init(&c, call, plan, out, "chatcmpl-");
        if (call->stream)
            chat_stream(&c);
        else
            chat_plain(&c);
        break;
    case MOCK_ROUTE_COMPLETIONS:
        oa_ctx_init(&c, call, plan, out, "cmpl-");
        completions_render(&c);
        break;
    case MOCK_ROUTE_RESPONSES:
        oa_ctx_init(&c, call, plan, out, "resp_");
        responses_render(&c);
        break;
    case MOCK_ROUTE_EMBEDDINGS:
        oa_ctx_init(&c, call, plan, out, "emb-");
        embeddings_render(&c);
        break;
    default:
        RB_UNREACHABLE();
    }
    RB_ASSERT(!out->stream || out->ev_ends.len > 0);
}

void mock_openai_error(const mock_error_t *err, mock_out_t *out)
{
    rb_jw_t w;

    RB_ASSERT(err != NULL && err->status >= 400 && err->message != NULL);
    out->status = err->status;
    out->reason = rb_http_reason(err->status);
    rb_jw_init(&w, &out->body);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "error");
    rb_jw_obj_begin(&w);
    jw_kv_str(&w, "message", err->message);
    jw_kv_str(&w, "type", err->type);
    jw_kv_str(&w, "param", err->param);
    jw_kv_str(&w, "code", err->code);
    rb_jw_obj_end(&w);
    rb_jw_obj_end(&w);
}

void mock_openai_status(const mock_call_t *call, mock_out_t *out)
{
    char msg[512];
    mock_error_t err = {call->bhv.status, "server_error", msg, NULL, NULL};

    RB_ASSERT(call->bhv.status >= 400);
    mock_out_header(out, "x-request-id", "req_%016llx", (unsigned long long)call->id_hash);
    switch (call->bhv.status) {
    case 429:
        snprintf(msg, sizeof(msg),
                 "Rate limit reached for %s in organization org-mock on requests per min (RPM): "
                 "Limit 500, Used 500, Requested 1. Please try again in %us. Visit "
                 "https://platform.openai.com/account/rate-limits to learn more.",
                 call->model, call->bhv.retry_after_s);
        err.type = "requests";
        err.code = "rate_limit_exceeded";
        oa_ratelimit_headers(call, out, 1);
        break;
    case 500:
        snprintf(msg, sizeof(msg), "%s", oa_server_error);
        break;
    case 503:
        snprintf(msg, sizeof(msg), "The engine is currently overloaded, please try again later.");
        break;
    case 404:
        snprintf(msg, sizeof(msg), "The model `%s` does not exist or you do not have access to it.",
                 call->model);
        err.type = "invalid_request_error";
        err.code = "model_not_found";
        break;
    default:
        snprintf(msg, sizeof(msg), "mock: scripted status %d", call->bhv.status);
        err.type = call->bhv.status < 500 ? "invalid_request_error" : "server_error";
        break;
    }
    mock_openai_error(&err, out);
}

void mock_openai_models(mock_out_t *out)
{
    static const char body[] =
        "{\"object\":\"list\",\"data\":["
        "{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":1721172741,\"owned_by\":"
        "\"system\"},"
        "{\"id\":\"gpt-4o\",\"object\":\"model\",\"created\":1715367049,\"owned_by\":\"system\"},"
        "{\"id\":\"gpt-3.5-turbo-instruct\",\"object\":\"model\",\"created\":1692901427,"
        "\"owned_by\":\"system\"},"
        "{\"id\":\"text-embedding-3-small\",\"object\":\"model\",\"created\":1705948997,"
        "\"owned_by\":\"system\"}]}";

    rb_buf_append(&out->body, body, sizeof(body) - 1);
}
