/*
 * Normalised token usage (DESIGN.md §3) and its extraction from provider responses.
 *
 * The record has disjoint buckets, so pricing is a plain sum: input_uncached + cache_read +
 * cache_write_5m + cache_write_1h is the whole prompt, output includes reasoning (reasoning is a
 * subset, recorded for reports and never billed twice), requests counts per-call extras such as web
 * searches. `reported` has one bit per bucket the provider stated explicitly, an explicit zero
 * included, so an estimate never replaces a provider's number.
 *
 * Provider quirks handled here (notes/ai-gateways-and-wire-formats.md §3c, §4):
 * - OpenAI `prompt_tokens` includes `prompt_tokens_details.cached_tokens` (input_uncached is the
 *   difference, never below 0; cache_read never exceeds prompt_tokens); `completion_tokens`
 * includes `reasoning_tokens`. `prompt_tokens_details` may be missing or null. DeepSeek's
 *   `prompt_cache_hit_tokens` stands in for cached_tokens when the details are absent. OpenRouter's
 *   `prompt_tokens_details.cache_write_tokens` (also inside prompt_tokens) becomes cache_write_5m;
 * its `cost` and other extras are ignored.
 * - Responses API: `input_tokens` (includes cached), `input_tokens_details.cached_tokens`,
 *   `output_tokens`, `output_tokens_details.reasoning_tokens`; streamed only in the terminal
 *   `response.completed|incomplete|failed` event, at `response.usage`.
 * - Anthropic `input_tokens` excludes cache reads and writes. `cache_creation_input_tokens` splits
 * into `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`; without the split
 * all of it is 5m; any part of the total not covered by the split is counted as 5m.
 * `server_tool_use. web_search_requests` → requests. Streaming: `message_start.message.usage` sets
 * the input and cache buckets; its `output_tokens` is a placeholder kept in `output` without the
 * reported bit; `message_delta.usage` is cumulative and replaces every field it carries.
 * - count_tokens answers are not usage. Negative, fractional or absurd (> GW_USAGE_TOKENS_MAX)
 * numbers are ignored (the bucket stays unreported) and make the extractor return RB_ERR_PARSE.
 *
 * Pure; one observer per stream, used by one thread.
 */
#ifndef RB_GATEWAY_USAGE_H
#define RB_GATEWAY_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/json.h"
#include "gateway/adapter.h"

/* Largest token count believed from a provider for one bucket of one request. */
#define GW_USAGE_TOKENS_MAX 1000000000000LL
/* Default bytes per token for estimates when no usage arrives. */
#define GW_USAGE_CHARS_PER_TOKEN_DEFAULT 4

/* Bits of gw_usage_t.reported. */
#define GW_USAGE_INPUT_UNCACHED (1u << 0)
#define GW_USAGE_CACHE_READ     (1u << 1)
#define GW_USAGE_CACHE_WRITE_5M (1u << 2)
#define GW_USAGE_CACHE_WRITE_1H (1u << 3)
#define GW_USAGE_OUTPUT         (1u << 4)
#define GW_USAGE_REASONING      (1u << 5)
#define GW_USAGE_REQUESTS       (1u << 6)
#define GW_USAGE_INPUT_ANY                                                                         \
    (GW_USAGE_INPUT_UNCACHED | GW_USAGE_CACHE_READ | GW_USAGE_CACHE_WRITE_5M |                     \
     GW_USAGE_CACHE_WRITE_1H)

/** One request's usage in disjoint buckets (all >= 0). */
typedef struct st_gw_usage_t {
    int64_t input_uncached, cache_read, cache_write_5m, cache_write_1h, output, reasoning, requests;
    uint32_t reported; /* bit per field the provider stated explicitly, incl. explicit zero */
    int terminal;      /* the final usage was seen */
} gw_usage_t;

/** Watches one streamed response (events from gw_sse_feed) for usage and stream health. */
typedef struct st_gw_usage_observer_t {
    gw_route_t route;
    rb_json_limits_t limits;
    gw_usage_t usage; /* what the provider said so far */
    int done;         /* the terminal marker arrived: [DONE], message_stop, response.completed... */
    int provider_error;   /* an error event arrived mid-stream */
    int malformed;        /* an event that should carry usage did not parse */
    int64_t output_bytes; /* completion text seen (content, arguments, thinking), unescaped bytes */
    int64_t events;       /* events observed */
} gw_usage_observer_t;

/** Reads a usage object of the OpenAI chat/completions/embeddings shape at value v into *u (fields
 *  present overwrite, absent ones are untouched). RB_ERR_NOTFOUND when v is not an object,
 *  RB_ERR_PARSE when a field was malformed (the rest is still read). */
rb_err_t gw_usage_from_openai_chat(const rb_json_t *doc, int v, gw_usage_t *u);
/** Same for the Responses API usage shape (input_tokens/output_tokens + details). */
rb_err_t gw_usage_from_openai_responses(const rb_json_t *doc, int v, gw_usage_t *u);
/** Same for an Anthropic usage object; merges cumulatively (message_delta semantics). */
rb_err_t gw_usage_from_anthropic(const rb_json_t *doc, int v, gw_usage_t *u);

/** Usage of a non-streamed response body for route. Zeroes *u first; sets terminal when found.
 *  RB_OK, RB_ERR_NOTFOUND (no usage, or count_tokens), RB_ERR_PARSE, RB_ERR_LIMIT. */
rb_err_t gw_usage_from_body(gw_route_t route, const char *body, size_t len,
                            const rb_json_limits_t *limits, gw_usage_t *u);
/** The completion text of a non-streamed answer body of route, in unescaped bytes (what an output
 *  estimate is made of when no usage came): message content, tool arguments and reasoning text;
 *  not the envelope (ids, roles, usage). A byte scan: the body need not be valid JSON. */
int64_t gw_usage_body_text_bytes(gw_route_t route, const char *body, size_t len);
/** gw_usage_from_body on a document the caller already parsed (borrowed): RB_OK or
 *  RB_ERR_NOTFOUND, RB_ERR_PARSE (a usage object of the wrong shape). */
rb_err_t gw_usage_from_doc(gw_route_t route, const rb_json_t *doc, gw_usage_t *u);
/** gw_usage_from_doc given the body's usage value v of doc (doc may be the parse of that value
 *  alone, v = 0). */
rb_err_t gw_usage_from_value(gw_route_t route, const rb_json_t *doc, int v, gw_usage_t *u);

/** Starts observing a stream of route; limits may be NULL (defaults). */
void gw_usage_observer_init(gw_usage_observer_t *obs, gw_route_t route,
                            const rb_json_limits_t *limits);
/** Feeds one SSE event (name may be empty). Parses JSON only for events that can carry usage or an
 *  error; everything else is a byte scan. Borrows the arguments only during the call. */
void gw_usage_observe(gw_usage_observer_t *obs, const char *event_name, size_t name_len,
                      const char *data, size_t len);

/** A usage record estimated from sizes: ceil(bytes / chars_per_token) per side; reported = 0. */
gw_usage_t gw_usage_estimate(int64_t input_bytes, int64_t output_bytes, int chars_per_token);
/** Completes *u with estimates for what the provider did not report: the input when no input bucket
 *  was reported, the output (never lowered) when output was not reported. Returns 1 when anything
 * was estimated (the caller then records usage_source=estimate), else 0. */
int gw_usage_fill_estimate(gw_usage_t *u, int64_t input_bytes, int64_t output_bytes,
                           int chars_per_token);

#endif
