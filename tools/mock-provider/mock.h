/*
 * mock-provider internals: a stand-in for the OpenAI and Anthropic HTTP APIs used by tests and
 * benchmarks. The wire format (JSON shapes, SSE framing, event order, error bodies, status codes
 * and rate-limit headers) imitates the real APIs byte for byte where the real API is deterministic.
 *
 * The program is split into a pure core and an imperative shell:
 *   behavior.c  parses the scripted behaviour list (X-Mock-Behavior header or model suffix);
 *   call.c      parses a request body into a mock_call_t and plans the reply (text chunks, usage);
 *   openai.c    renders OpenAI bodies and SSE streams into a mock_out_t;
 *   anthropic.c renders Anthropic bodies and SSE streams into a mock_out_t;
 *   recorder.c  keeps the last N requests for GET /mock/requests (mutex-guarded, any thread);
 *   main.c      the h2o server: workers, routing, timers, sending, and the command line.
 * Everything except the recorder and main.c is pure (bytes in, bytes out; no sockets, clock or
 * globals) and single-threaded: each worker thread owns its own mock_call_t/mock_out_t.
 */
#ifndef RB_TOOLS_MOCK_H
#define RB_TOOLS_MOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define MOCK_MODEL_LEN_MAX       256    /* longest model name kept (longer names are cut) */
#define MOCK_MODEL_FIELD_MAX     1024   /* longest "model" value, behaviour suffix included */
#define MOCK_EXCERPT_BYTES_MAX   40     /* bytes of the last user message quoted in the reply */
#define MOCK_TOOL_NAME_MAX       64     /* longest tool name kept (a longer one: no tool call) */
#define MOCK_TOOL_ARGS_PIECE     6      /* bytes of a tool call's arguments per streamed delta */
#define MOCK_DELAY_MS_MAX        600000 /* slow= and ttfb= are capped at 10 minutes */
#define MOCK_CHUNKS_MAX          100000 /* chunks= limit (a stream of ~30 MB) */
#define MOCK_BIG_BYTES_MAX       (64u << 20) /* big= limit */
#define MOCK_BIG_CHUNK_BYTES     4096        /* content bytes per streamed chunk in big= mode */
#define MOCK_ERROR_MID_CHUNKS    2           /* content chunks sent before error-mid / reset */
#define MOCK_PING_INTERVAL_MS    1000        /* Anthropic: a ping per second of slow streaming */
#define MOCK_EMBED_DIM_DEFAULT   8           /* embedding length unless "dimensions" is given */
#define MOCK_EMBED_DIM_MAX       4096        /* largest "dimensions" accepted */
#define MOCK_EMBED_INPUTS_MAX    2048       /* most embedding inputs per request (the real limit) */
#define MOCK_HEADERS_MAX         24         /* extra response headers per answer */
#define MOCK_HEADER_VALUE_MAX    80         /* longest generated header value */
#define MOCK_PAD_HEADERS_MAX     64         /* pad-headers= limit */
#define MOCK_PAD_HEADER_BYTES    1000       /* bytes of each pad header's value */
#define MOCK_FIXED_TIME          1700000000 /* `created` under X-Mock-Fixed-Time: 1 */
#define MOCK_TOKENS_PER_MESSAGE  4          /* prompt token overhead per chat message */
#define MOCK_TOKENS_PRIMING      3          /* prompt token overhead per chat request */
#define MOCK_RETRY_AFTER_DEFAULT 1          /* seconds in Retry-After on 429 */
#define MOCK_SPLIT_BYTES_MAX     65536      /* split= limit */
#define MOCK_SPLIT_GAP_MS        1          /* between split= pieces unless slow= is given */

/** The API a request addresses. */
typedef enum {
    MOCK_ROUTE_CHAT = 0,     /* POST /v1/chat/completions */
    MOCK_ROUTE_COMPLETIONS,  /* POST /v1/completions */
    MOCK_ROUTE_RESPONSES,    /* POST /v1/responses */
    MOCK_ROUTE_EMBEDDINGS,   /* POST /v1/embeddings */
    MOCK_ROUTE_MESSAGES,     /* POST /v1/messages */
    MOCK_ROUTE_COUNT_TOKENS, /* POST /v1/messages/count_tokens */
} mock_route_t;

/** Usage numbers forced by `usage=...`; -1 = not forced. */
typedef struct st_mock_usage_override_t {
    int64_t prompt, cached, completion, reasoning, cache_write_5m, cache_write_1h;
} mock_usage_override_t;

/** Scripted behaviour for one request (see the --help text in main.c for the syntax). */
typedef struct st_mock_behavior_t {
    uint32_t slow_ms;       /* delay between streamed events */
    uint32_t ttfb_ms;       /* delay before the response headers */
    int status;             /* 0, or the error status to answer with */
    uint32_t retry_after_s; /* Retry-After on 429 */
    int error_mid;          /* mid-stream provider error after a few chunks */
    int error_event;        /* Responses: an `error` event after a few chunks, no terminal event */
    int html;               /* status=: the error as an HTML page (a proxy's or CDN's), not JSON */
    int reset;              /* abort the connection after a few chunks */
    int no_usage;           /* leave usage out entirely */
    int fixed_time;         /* fixed `created` and ids derived from the body only */
    uint32_t chunks;        /* 0 = derived from the request */
    uint64_t big_bytes;     /* 0 = off; else the reply text has this many bytes */
    uint32_t pad_headers;   /* extra x-ratelimit-pad-I headers of MOCK_PAD_HEADER_BYTES */
    int force_stream;       /* chat, completions: stream (with usage) even when not asked to */
    int output_only_usage;  /* chat: usage states completion_tokens only */
    uint32_t split_bytes;   /* 0 = off; else the body goes out in pieces of this many bytes */
    uint32_t trailing_ms;   /* 0 = off; else unsolicited bytes this long after the answer */
    mock_usage_override_t usage;
} mock_behavior_t;

/** A request, parsed. Plain data; owns `input_hashes` (free with mock_call_free). */
typedef struct st_mock_call_t {
    mock_route_t route;
    mock_behavior_t bhv;
    char model[MOCK_MODEL_LEN_MAX + 1];
    int stream;                               /* "stream": true */
    int include_usage;                        /* stream_options.include_usage */
    int64_t max_tokens;                       /* the route's output cap, -1 = none */
    int thinking;                             /* Anthropic "thinking": {"type":"enabled"},
                                               * OpenAI reasoning_effort / reasoning.effort */
    int reasoning_summary;                    /* Responses reasoning.summary: summary streamed */
    char tool[MOCK_TOOL_NAME_MAX + 1];        /* chat, Anthropic: the first tool offered ("" none)
                                               * and not refused by tool_choice: it is called */
    uint64_t prompt_tokens;                   /* computed from the request text */
    char excerpt[MOCK_EXCERPT_BYTES_MAX + 1]; /* start of the last user message */
    size_t excerpt_len;
    uint64_t id_hash;      /* ids are derived from this */
    int64_t created;       /* unix seconds in the reply */
    uint32_t dimensions;   /* embeddings */
    int base64;            /* embeddings: encoding_format "base64" */
    rb_buf_t input_hashes; /* embeddings: one uint64_t per input */
} mock_call_t;

/** A request the real API would reject: status plus the dialect-independent error fields. */
typedef struct st_mock_error_t {
    int status;
    const char *type;    /* OpenAI error.type / Anthropic error.type */
    const char *message; /* static text */
    const char *param;   /* OpenAI error.param, NULL = null */
    const char *code;    /* OpenAI error.code, NULL = null */
} mock_error_t;

/** Reply text cut into streamed chunks: chunk i is text[ends[i-1] .. ends[i]). */
typedef struct st_mock_pieces_t {
    rb_buf_t text;
    rb_buf_t ends; /* size_t per chunk */
    size_t n;
} mock_pieces_t;

/** The planned reply: what is said and what it costs. Owns its buffers (mock_plan_free). */
typedef struct st_mock_plan_t {
    mock_pieces_t text;
    mock_pieces_t thinking; /* Anthropic thinking block, Responses reasoning summary (chat:
                             * counted only); n == 0 when off */
    int tool_call;          /* text holds the JSON arguments of a call of call->tool */
    int truncated;          /* output capped by max_tokens */
    int64_t prompt, cached, completion, reasoning, cache_write_5m, cache_write_1h;
} mock_plan_t;

/** One generated response header. */
typedef struct st_mock_header_t {
    const char *name; /* static, lowercase */
    char value[MOCK_HEADER_VALUE_MAX];
} mock_header_t;

/** A rendered answer: status, headers, body, and for streams the end offset of every event. */
typedef struct st_mock_out_t {
    int status;
    const char *reason;
    const char *content_type;
    mock_header_t headers[MOCK_HEADERS_MAX];
    size_t n_headers;
    rb_buf_t body;
    rb_buf_t ev_ends; /* size_t per SSE event; empty for non-streamed bodies */
    int stream;       /* send event by event (honours slow=) */
    int reset;        /* after the last event, abort the connection instead of finishing */
    uint32_t slow_ms, ttfb_ms;
    uint32_t pad_headers; /* pad-headers= */
    uint32_t trailing_ms; /* trailing= */
} mock_out_t;

/* ---- behavior.c ---- */

/** Resets b to the defaults (no scripted behaviour). */
void mock_behavior_init(mock_behavior_t *b);
/** Applies a comma list such as "slow=50,error-mid,usage=prompt:10,cached:5" to b (borrows s).
 *  Returns RB_OK, or RB_ERR_PARSE for an unknown item or a bad number. */
rb_err_t mock_behavior_parse(mock_behavior_t *b, const char *s, size_t len);

/* ---- call.c ---- */

/** Parses a request body for route into call (which must be initialised with mock_call_init and
 *  have bhv filled from the header). The model's "+behaviour" suffix is applied to call->bhv.
 *  Returns 0, or -1 with *err set to the error the real API would give. */
int mock_call_parse(mock_call_t *call, const char *body, size_t len, mock_error_t *err);
/** Zeroes call for route. */
void mock_call_init(mock_call_t *call, mock_route_t route);
/** Frees what call owns. */
void mock_call_free(mock_call_t *call);
/** Builds the reply plan for a parsed call; free with mock_plan_free. */
void mock_plan_build(const mock_call_t *call, mock_plan_t *plan);
/** Frees what plan owns. */
void mock_plan_free(mock_plan_t *plan);
/** Chunk i of p: sets *s and *n (valid while p is). */
void mock_pieces_get(const mock_pieces_t *p, size_t i, const char **s, size_t *n);
/** 64-bit FNV-1a of n bytes, continuing from h (start with MOCK_FNV_INIT). */
uint64_t mock_hash(uint64_t h, const void *p, size_t n);
#define MOCK_FNV_INIT 0xcbf29ce484222325ull

/* ---- output helpers (call.c) ---- */

/** Empties out (keeps its buffers' memory) for the next answer. */
void mock_out_reset(mock_out_t *out);
/** Frees out's buffers. */
void mock_out_free(mock_out_t *out);
/** Adds a response header (value formatted, cut at MOCK_HEADER_VALUE_MAX). */
void mock_out_header(mock_out_t *out, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Replaces out's error body (status set) by a CDN's HTML error page, as text/html. */
void mock_out_html_error(mock_out_t *out);
/** Marks the end of one SSE event at the current body length. */
void mock_out_event_end(mock_out_t *out);
/** Re-cuts what out sends (up to its last event end, else the whole body) into pieces of n > 0
 *  bytes, the last one shorter: events and characters split wherever the cut falls. */
void mock_out_split(mock_out_t *out, uint32_t n);

/* ---- openai.c ---- */

/** Renders the answer to an OpenAI call (chat, completions, responses, embeddings). */
void mock_openai_render(const mock_call_t *call, const mock_plan_t *plan, mock_out_t *out);
/** Renders an OpenAI error answer. */
void mock_openai_error(const mock_error_t *err, mock_out_t *out);
/** Renders the OpenAI error for a scripted status= behaviour. */
void mock_openai_status(const mock_call_t *call, mock_out_t *out);
/** Renders GET /v1/models (OpenAI shape). */
void mock_openai_models(mock_out_t *out);

/* ---- anthropic.c ---- */

/** Renders the answer to an Anthropic call (messages, count_tokens). */
void mock_anthropic_render(const mock_call_t *call, const mock_plan_t *plan, mock_out_t *out);
/** Renders an Anthropic error answer; request_id_hash makes the request_id. */
void mock_anthropic_error(const mock_error_t *err, uint64_t request_id_hash, mock_out_t *out);
/** Renders the Anthropic error for a scripted status= behaviour. */
void mock_anthropic_status(const mock_call_t *call, mock_out_t *out);
/** Renders GET /v1/models (Anthropic shape, chosen when anthropic-version is sent). */
void mock_anthropic_models(mock_out_t *out);

/* ---- recorder.c ---- */

/** A bounded ring of recorded requests, shared by all workers (mutex inside). */
typedef struct st_mock_recorder_t {
    pthread_mutex_t mu;
    char **slots; /* owned JSON objects, NULL when empty */
    size_t cap, next, count;
    uint64_t seq;
} mock_recorder_t;

/** Creates a ring of cap entries (0 disables recording). */
void mock_recorder_init(mock_recorder_t *r, size_t cap);
/** Frees every entry. */
void mock_recorder_destroy(mock_recorder_t *r);
/** Stores one entry {"seq":N,<members>}; borrows members (JSON object members, no braces). */
void mock_recorder_add(mock_recorder_t *r, const char *members, size_t len);
/** Appends {"requests":[...]} (oldest first) to out. */
void mock_recorder_dump(mock_recorder_t *r, rb_buf_t *out);
/** Forgets every entry. */
void mock_recorder_clear(mock_recorder_t *r);

#endif
