/*
 * Provider adapters: the pure request/response transformations of the AI proxy (DESIGN.md §3).
 *
 * - gw_adapter_inspect validates a client request body for its route and extracts what admission
 * needs (model, stream, include_usage, the output cap, the input size) plus the byte spans the
 * rewrite uses.
 * - gw_adapter_rewrite produces the upstream body by splicing at those spans: `model` replaced by
 * the upstream id, the output cap written when the client set none,
 * `stream_options.include_usage=true` injected for streamed chat/completions. Every other byte is
 * kept as the client sent it.
 * - gw_adapter_is_injected_usage_chunk recognises the OpenAI usage chunk (`"choices":[]` with a
 * usage object) that the proxy drops when only the gateway asked for it.
 * - gw_adapter_add_cost splices `"cost_micro":N,"cost_credits":"x.xxxxxx"` into a response's usage.
 *
 * Decisions (documented here because callers depend on them):
 * - Chat completions get the cap as `max_completion_tokens`: OpenAI accepts it for every model,
 * while reasoning models (o-series, gpt-5) reject the deprecated `max_tokens`. Legacy completions
 * and Anthropic use `max_tokens`; Responses uses `max_output_tokens`. For the hold, a chat request
 * carrying both `max_tokens` and `max_completion_tokens` counts the larger one.
 * - When include_usage is injected, OpenAI adds `"usage":null` to every chunk. The proxy does NOT
 * strip it: the field is nullable in the ChatCompletionChunk schema of every official SDK, and
 * stripping would mean buffering and re-writing every event instead of forwarding upstream reads as
 * they arrive. Only the extra usage chunk (which breaks clients indexing choices[0]) is removed.
 * - A key the gateway reads (model, stream, stream_options, include_usage, the cap fields,
 * messages, input, prompt, the priced options, previous_response_id, conversation, mcp_servers)
 * that appears twice is refused: the gateway would read one `model` while many upstreams honour
 * the last, letting a client be billed for one model and served another.
 * - input_elsewhere names input the provider reads from somewhere other than the body, so the
 *   body's size says nothing of its cost: it is held at the model's context window. Images by URL
 *   are not counted (a few thousand tokens at most), nor a tool's output written inline.
 * - Legacy completions without `max_tokens` (or with null) keep the API's default of 16 tokens:
 *   inspect reports max_output = 16 and the caller writes it upstream, so the bound is real on
 *   servers whose own default is larger (vLLM and other compatible servers).
 * - Responses requests need `input` or a stored `prompt`; chat/messages/count_tokens need a
 * `messages` array; Anthropic messages need `max_tokens`.
 *
 * Pure (bytes in, structs out); any thread; nothing is retained between calls.
 */
#ifndef RB_GATEWAY_ADAPTER_H
#define RB_GATEWAY_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/json.h"

/* Longest public model name accepted in a request. */
#define GW_MODEL_NAME_MAX 255
/* The legacy completions API's output cap when the request sets none. */
#define GW_ADAPTER_COMPLETIONS_DEFAULT_CAP 16
/* Largest output cap a request may ask for. */
#define GW_ADAPTER_CAP_MAX 100000000
/* Largest n (and best_of) of a chat or completions request (OpenAI's own bound for n). */
#define GW_ADAPTER_CHOICES_MAX 128
/* Web searches held for an Anthropic web search tool that sets no max_uses (an assumption for the
 * hold, not a bound: more are billed as they come). */
#define GW_ADAPTER_WEB_SEARCH_USES_DEFAULT 10
/* Room for an error message written by gw_adapter_inspect. */
#define GW_ADAPTER_ERRMSG_MAX 160

/** The wire dialect a route speaks (errors are answered in it). */
typedef enum {
    GW_DIALECT_OPENAI = 0,
    GW_DIALECT_ANTHROPIC,
} gw_dialect_t;

/** The AI routes of DESIGN.md §3. */
typedef enum {
    GW_ROUTE_CHAT = 0,     /* POST /v1/chat/completions */
    GW_ROUTE_COMPLETIONS,  /* POST /v1/completions */
    GW_ROUTE_RESPONSES,    /* POST /v1/responses */
    GW_ROUTE_EMBEDDINGS,   /* POST /v1/embeddings */
    GW_ROUTE_MESSAGES,     /* POST /v1/messages */
    GW_ROUTE_COUNT_TOKENS, /* POST /v1/messages/count_tokens */
    GW_ROUTE__COUNT
} gw_route_t;

/** What gw_adapter_inspect learnt about a request; the spans index the inspected body. */
typedef struct st_gw_request_info_t {
    gw_route_t route;
    char model[GW_MODEL_NAME_MAX + 1]; /* unescaped, NUL-terminated */
    size_t model_len;
    int stream;            /* "stream": true */
    int include_usage;     /* the client itself set stream_options.include_usage=true */
    int64_t max_output;    /* the client's output cap; 0 = none given (legacy completions: 16) */
    int cap_given;         /* the client set a cap (not absent, not null) */
    const char *cap_name;  /* the field max_output came from (static; the route's own when none) */
    int64_t choices;       /* answers generated (n, best_of): each may reach the cap; 1 default */
    size_t input_bytes;    /* request size used for the input-token estimate */
    const char *err_param; /* on a validation error: the offending field (static), or NULL */
    const char *priced_option; /* a field that raises the provider's price (service_tier
                                * priority/scale, models, plugins, web_search_options, a
                                * Responses tool billed apart), static; NULL when none */
    int64_t web_searches; /* Anthropic web searches the call may run, each priced per_request: its
                           * web search tools' max_uses (GW_ADAPTER_WEB_SEARCH_USES_DEFAULT for one
                           * without) */
    const char *input_elsewhere; /* a field that brings input the body does not hold (a stored
                                  * response, conversation or prompt, a file by id or URL, web
                                  * search or fetch, MCP servers), static; NULL when none */
    /* private: splice points for gw_adapter_rewrite */
    size_t root_open; /* offset of the root '{' (the root always has a member: model) */
    size_t model_start, model_end; /* the model string, quotes included */
    int cap_null;                  /* the route's cap field is present with value null */
    size_t cap_start, cap_end;
    int so_kind; /* stream_options: 0 absent, 1 null, 2 object */
    int so_empty;
    size_t so_start, so_end;
    int iu_present; /* stream_options.include_usage present (any value) */
    size_t iu_start, iu_end;
} gw_request_info_t;

/** The dialect of a route. */
gw_dialect_t gw_route_dialect(gw_route_t route);
/** A short name for logs and metrics ("chat", "messages", ...). */
const char *gw_route_name(gw_route_t route);

/** Validates body for route and fills *info. limits may be NULL. RB_OK; RB_ERR_PARSE (not JSON),
 *  RB_ERR_INVAL (a field is missing or wrong) or RB_ERR_LIMIT (too deep/large) with a message for a
 * 400 written to errmsg (NUL-terminated, truncated to errcap) and info->err_param set when one
 * field is at fault. Borrows body only during the call. */
rb_err_t gw_adapter_inspect(gw_route_t route, const char *body, size_t len,
                            const rb_json_limits_t *limits, gw_request_info_t *info, char *errmsg,
                            size_t errcap);

/** Appends the upstream body to out: body (the one inspected into info) with the model replaced by
 *  upstream_model, cap_to_write written in the route's cap field when the client gave none (in
 * place of a null; 0 = write nothing), and include_usage injected when force_include_usage is set
 * on a streamed chat/completions request. RB_ERR_LIMIT when out's len_max would be passed. */
rb_err_t gw_adapter_rewrite(const char *body, size_t len, const gw_request_info_t *info,
                            const char *upstream_model, int64_t cap_to_write,
                            int force_include_usage, rb_buf_t *out);

/** 1 when the chunk data is an OpenAI usage chunk (`"choices":[]` and a usage object), else 0. */
int gw_adapter_is_injected_usage_chunk(const char *data, size_t len);

/** Appends to out a copy of the JSON document with `"cost_micro":N,"cost_credits":"x.xxxxxx"` added
 * at the end of its `usage` object (top level, or `response.usage` for Responses events).
 * RB_ERR_NOTFOUND (nothing appended) when there is no usage object, RB_ERR_PARSE when it is not
 * JSON, RB_ERR_LIMIT when out is full. */
rb_err_t gw_adapter_add_cost(const char *json, size_t len, int64_t cost_micro, rb_buf_t *out);
/** gw_adapter_add_cost with json already parsed into doc (borrowed; doc must be the parse of
 *  exactly json[0, len)): same results, RB_ERR_PARSE excepted. */
rb_err_t gw_adapter_add_cost_doc(const rb_json_t *doc, const char *json, size_t len,
                                 int64_t cost_micro, rb_buf_t *out);
/** The splice itself, for a usage object whose closing brace is json[usage_end - 1] (usage_empty:
 *  it has no members): RB_OK, or RB_ERR_LIMIT when out is full. */
rb_err_t gw_adapter_add_cost_at(const char *json, size_t len, size_t usage_end, int usage_empty,
                                int64_t cost_micro, rb_buf_t *out);

#endif
