/*
 * Provider adapters: see adapter.h. The request is parsed once by inspect, which records byte
 * spans; rewrite then copies the body with at most four splices, so everything the gateway does not
 * own stays byte-identical (key order, whitespace, number spelling, unknown fields).
 */
#include "gateway/adapter.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gateway/pricing.h"

/* Most splices one rewrite applies: model, cap, stream_options (+ one spare). */
#define ADAPTER_SPLICES_MAX 4

/* The root members inspect reads, also those whose duplicates would make the gateway and the
 * upstream read different requests (refused): their ids (AK_*) and names. */
#define ADAPTER_KEY_LIST(X)                                                                        \
    X(MODEL, "model")                                                                              \
    X(STREAM, "stream")                                                                            \
    X(STREAM_OPTIONS, "stream_options")                                                            \
    X(MAX_TOKENS, "max_tokens")                                                                    \
    X(MAX_COMPLETION_TOKENS, "max_completion_tokens")                                              \
    X(MAX_OUTPUT_TOKENS, "max_output_tokens")                                                      \
    X(MESSAGES, "messages")                                                                        \
    X(INPUT, "input")                                                                              \
    X(PROMPT, "prompt")                                                                            \
    X(N, "n")                                                                                      \
    X(BEST_OF, "best_of")                                                                          \
    X(BACKGROUND, "background")                                                                    \
    X(SERVICE_TIER, "service_tier")                                                                \
    X(MODELS, "models")                                                                            \
    X(TOOLS, "tools")                                                                              \
    X(WEB_SEARCH_OPTIONS, "web_search_options")                                                    \
    X(PLUGINS, "plugins")                                                                          \
    X(PREVIOUS_RESPONSE_ID, "previous_response_id")                                                \
    X(CONVERSATION, "conversation")                                                                \
    X(MCP_SERVERS, "mcp_servers")

typedef enum {
    AK_NONE = -1,
#define ADAPTER_KEY_ID(id, name) AK_##id,
    ADAPTER_KEY_LIST(ADAPTER_KEY_ID)
#undef ADAPTER_KEY_ID
        AK__COUNT
} adapter_key_t;

static const char *const adapter_key_names[AK__COUNT] = {
#define ADAPTER_KEY_NAME(id, name) name,
    ADAPTER_KEY_LIST(ADAPTER_KEY_NAME)
#undef ADAPTER_KEY_NAME
};

/* The name of key k; NULL for AK_NONE. */
static const char *adapter_key_name(adapter_key_t k)
{
    return k == AK_NONE ? NULL : adapter_key_names[k];
}

typedef struct st_adapter_route_t {
    const char *name;
    gw_dialect_t dialect;
    int can_stream;
    adapter_key_t cap;       /* where the cap is written; AK_NONE = the route has none */
    adapter_key_t cap_alt;   /* another cap field the client may use (chat's max_tokens) */
    adapter_key_t required;  /* the content field that must be present */
    rb_json_type_t req_type; /* its type (RB_JSON_ABSENT = string or array) */
    int cap_required;        /* Anthropic: max_tokens is mandatory */
} adapter_route_t;

static const adapter_route_t adapter_routes[GW_ROUTE__COUNT] = {
    [GW_ROUTE_CHAT] = {"chat", GW_DIALECT_OPENAI, 1, AK_MAX_COMPLETION_TOKENS, AK_MAX_TOKENS,
                       AK_MESSAGES, RB_JSON_ARRAY, 0},
    [GW_ROUTE_COMPLETIONS] = {"completions", GW_DIALECT_OPENAI, 1, AK_MAX_TOKENS, AK_NONE,
                              AK_PROMPT, RB_JSON_ABSENT, 0},
    [GW_ROUTE_RESPONSES] = {"responses", GW_DIALECT_OPENAI, 1, AK_MAX_OUTPUT_TOKENS, AK_NONE,
                            AK_INPUT, RB_JSON_ABSENT, 0},
    [GW_ROUTE_EMBEDDINGS] = {"embeddings", GW_DIALECT_OPENAI, 0, AK_NONE, AK_NONE, AK_INPUT,
                             RB_JSON_ABSENT, 0},
    [GW_ROUTE_MESSAGES] = {"messages", GW_DIALECT_ANTHROPIC, 1, AK_MAX_TOKENS, AK_NONE, AK_MESSAGES,
                           RB_JSON_ARRAY, 1},
    [GW_ROUTE_COUNT_TOKENS] = {"count_tokens", GW_DIALECT_ANTHROPIC, 0, AK_NONE, AK_NONE,
                               AK_MESSAGES, RB_JSON_ARRAY, 0},
};

/* The root members of a request, found in one pass: each key's value (-1 when absent; a
 * duplicate is refused before any is read). */
typedef struct st_adapter_root_t {
    const rb_json_t *doc;
    int v[AK__COUNT];
} adapter_root_t;

/* The value of root member k (-1 when absent or AK_NONE). */
static int adapter_root_value(const adapter_root_t *root, adapter_key_t k)
{
    return k == AK_NONE ? -1 : root->v[k];
}

gw_dialect_t gw_route_dialect(gw_route_t route)
{
    RB_ASSERT(route < GW_ROUTE__COUNT);
    return adapter_routes[route].dialect;
}

const char *gw_route_name(gw_route_t route)
{
    RB_ASSERT(route < GW_ROUTE__COUNT);
    return adapter_routes[route].name;
}

__attribute__((format(printf, 5, 6))) static rb_err_t adapter_fail(gw_request_info_t *info,
                                                                   char *errmsg, size_t errcap,
                                                                   const char *param,
                                                                   const char *fmt, ...)
{
    va_list ap;

    info->err_param = param;
    if (errcap > 0) {
        va_start(ap, fmt);
        vsnprintf(errmsg, errcap, fmt, ap);
        va_end(ap);
    }
    return RB_ERR_INVAL;
}

/* How many members of object obj are named key. */
static size_t adapter_key_count(const rb_json_t *doc, int obj, const char *key)
{
    int k = -1, v = -1;
    size_t n = 0;

    while (rb_json_next(doc, obj, &k, &v))
        n += rb_json_str_eq(doc, k, key);
    return n;
}

/* The index in names[0, n) of key k (names differ: at most one matches), or n. A key written
 * without escapes is compared as its raw bytes (no unescaping per name). */
static size_t adapter_key_index(const rb_json_t *doc, int k, const char *const *names, size_t n)
{
    size_t len = 0, i;
    const char *raw = rb_json_raw(doc, k, &len);
    int plain = raw != NULL && memchr(raw, '\\', len) == NULL;

    for (i = 0; i < n; i++)
        if (plain ? strlen(names[i]) == len && memcmp(raw, names[i], len) == 0
                  : rb_json_str_eq(doc, k, names[i]))
            break;
    return i;
}

/* Fills root in one pass over the root's members; returns the first of the keys (in their order)
 * that the root holds twice, or NULL. */
static const char *adapter_root_scan(const rb_json_t *doc, adapter_root_t *root)
{
    unsigned seen[AK__COUNT] = {0};
    int k = -1, v = -1;
    size_t i;

    root->doc = doc;
    for (i = 0; i < AK__COUNT; i++)
        root->v[i] = -1;
    while (rb_json_next(doc, 0, &k, &v))
        if ((i = adapter_key_index(doc, k, adapter_key_names, AK__COUNT)) < AK__COUNT &&
            seen[i]++ == 0)
            root->v[i] = v;
    for (i = 0; i < AK__COUNT; i++) {
        if (seen[i] > 1)
            return adapter_key_names[i];
    }
    if (adapter_key_count(doc, adapter_root_value(root, AK_STREAM_OPTIONS), "include_usage") > 1)
        return "stream_options.include_usage";
    return NULL;
}

static rb_err_t adapter_model(const adapter_root_t *root, gw_request_info_t *info, char *errmsg,
                              size_t errcap)
{
    const rb_json_t *doc = root->doc;
    int v = adapter_root_value(root, AK_MODEL);
    rb_err_t err;

    if (rb_json_type(doc, v) == RB_JSON_ABSENT || rb_json_type(doc, v) == RB_JSON_NULL)
        return adapter_fail(info, errmsg, errcap, "model", "'model' is required");
    if (rb_json_type(doc, v) != RB_JSON_STRING)
        return adapter_fail(info, errmsg, errcap, "model", "'model' must be a string");
    err = rb_json_str(doc, v, info->model, sizeof(info->model), &info->model_len);
    if (err == RB_ERR_LIMIT)
        return adapter_fail(info, errmsg, errcap, "model", "'model' is longer than %d bytes",
                            GW_MODEL_NAME_MAX);
    if (err != RB_OK || info->model_len == 0 || memchr(info->model, '\0', info->model_len))
        return adapter_fail(info, errmsg, errcap, "model", "'model' is not a valid model name");
    RB_ASSERT(rb_json_span(doc, v, &info->model_start, &info->model_end) == 0);
    return RB_OK;
}

/* Reads one cap field: 0 absent/null, 1 valid (into *cap), -1 invalid. */
static int adapter_cap_value(const adapter_root_t *root, adapter_key_t field, int64_t *cap)
{
    int v = adapter_root_value(root, field);
    rb_json_type_t t = rb_json_type(root->doc, v);

    if (t == RB_JSON_ABSENT || t == RB_JSON_NULL)
        return 0;
    if (rb_json_int64(root->doc, v, cap) != 0 || *cap < 1 || *cap > GW_ADAPTER_CAP_MAX)
        return -1;
    return 1;
}

static rb_err_t adapter_cap(const adapter_root_t *root, const adapter_route_t *r,
                            gw_request_info_t *info, char *errmsg, size_t errcap)
{
    const rb_json_t *doc = root->doc;
    int64_t cap = 0, alt = 0;
    int has_cap = adapter_cap_value(root, r->cap, &cap);
    int has_alt = adapter_cap_value(root, r->cap_alt, &alt);
    int v;

    if (has_cap < 0 || has_alt < 0) {
        const char *field = adapter_key_name(has_cap < 0 ? r->cap : r->cap_alt);
        return adapter_fail(info, errmsg, errcap, field, "'%s' must be an integer between 1 and %d",
                            field, GW_ADAPTER_CAP_MAX);
    }
    if (has_cap == 0 && r->cap_required)
        return adapter_fail(info, errmsg, errcap, adapter_key_name(r->cap), "'%s' is required",
                            adapter_key_name(r->cap));
    info->cap_given = has_cap || has_alt;
    info->max_output = has_cap && has_alt ? (cap > alt ? cap : alt) : has_cap ? cap : alt;
    info->cap_name = adapter_key_name(has_alt && (!has_cap || alt > cap) ? r->cap_alt : r->cap);
    if (info->max_output == 0 && info->route == GW_ROUTE_COMPLETIONS)
        info->max_output = GW_ADAPTER_COMPLETIONS_DEFAULT_CAP;
    v = adapter_root_value(root, r->cap);
    if (rb_json_type(doc, v) == RB_JSON_NULL) {
        info->cap_null = 1;
        RB_ASSERT(rb_json_span(doc, v, &info->cap_start, &info->cap_end) == 0);
    }
    return RB_OK;
}

/* Chat and completions may ask for several choices (n; completions also generate best_of and
 * bill them all): each may use the whole output cap. */
static rb_err_t adapter_choices(const adapter_root_t *root, gw_request_info_t *info, char *errmsg,
                                size_t errcap)
{
    static const adapter_key_t fields[] = {AK_N, AK_BEST_OF};

    info->choices = 1;
    if (info->route != GW_ROUTE_CHAT && info->route != GW_ROUTE_COMPLETIONS)
        return RB_OK;
    for (size_t i = 0; i < (info->route == GW_ROUTE_COMPLETIONS ? 2u : 1u); i++) {
        int v = adapter_root_value(root, fields[i]);
        rb_json_type_t t = rb_json_type(root->doc, v);
        int64_t k;
        if (t == RB_JSON_ABSENT || t == RB_JSON_NULL)
            continue;
        if (rb_json_int64(root->doc, v, &k) != 0 || k < 1 || k > GW_ADAPTER_CHOICES_MAX)
            return adapter_fail(info, errmsg, errcap, adapter_key_name(fields[i]),
                                "'%s' must be an integer between 1 and %d",
                                adapter_key_name(fields[i]), GW_ADAPTER_CHOICES_MAX);
        if (k > info->choices)
            info->choices = k;
    }
    return RB_OK;
}

/* A Responses call with "background": true answers at once without usage, and its result is
 * fetched later on a route the gateway does not serve: it could not be metered, so it is refused.
 */
static rb_err_t adapter_background(const adapter_root_t *root, gw_request_info_t *info,
                                   char *errmsg, size_t errcap)
{
    int v = adapter_root_value(root, AK_BACKGROUND), on = 0;
    rb_json_type_t t = rb_json_type(root->doc, v);

    if (info->route != GW_ROUTE_RESPONSES || t == RB_JSON_ABSENT || t == RB_JSON_NULL)
        return RB_OK;
    if (rb_json_bool(root->doc, v, &on) != 0)
        return adapter_fail(info, errmsg, errcap, "background", "'background' must be a boolean");
    if (on)
        return adapter_fail(info, errmsg, errcap, "background",
                            "background responses are not supported through this gateway (their "
                            "usage could not be metered)");
    return RB_OK;
}

/* 1 when the Responses tool t is one OpenAI bills by itself, per call, search or container
 * session: web search (any version), file search, code interpreter, image generation. Tools the
 * client runs or that cost tokens only (function, custom, local_shell, apply_patch, mcp,
 * computer use) are not. */
static int adapter_tool_billed_apart(const rb_json_t *doc, int t)
{
    static const char *const billed[] = {"web_search", "file_search", "code_interpreter",
                                         "image_generation"};
    char type[64];

    if (rb_json_str(doc, rb_json_member(doc, t, "type"), type, sizeof(type), NULL) != RB_OK)
        return 0;
    for (size_t i = 0; i < sizeof(billed) / sizeof(billed[0]); i++)
        if (strncmp(type, billed[i], strlen(billed[i])) == 0) /* web_search_preview_2025_03_11 */
            return 1;
    return 0;
}

/* Finds the first option the caller sets that makes the provider charge more than the model's
 * prices (gw_request_info_t.priced_option): OpenAI's priority or scale tier (priority costs up to
 * twice the standard price; flex costs less and passes), OpenRouter's fallback "models" (the call
 * is priced at whichever model answered) and its plugins (web results are priced per result),
 * chat's web search, a Responses tool billed apart. The caller refuses them on the operator's
 * key. */
static void adapter_priced_option(const adapter_root_t *root, gw_request_info_t *info)
{
    const rb_json_t *doc = root->doc;
    int tier = adapter_root_value(root, AK_SERVICE_TIER),
        tools = adapter_root_value(root, AK_TOOLS);
    int plugins = adapter_root_value(root, AK_PLUGINS);
    int t = -1;

    info->priced_option = NULL;
    if (gw_route_dialect(info->route) != GW_DIALECT_OPENAI)
        return;
    if (rb_json_str_eq(doc, tier, "priority") || rb_json_str_eq(doc, tier, "scale"))
        info->priced_option = "service_tier";
    else if (rb_json_type(doc, adapter_root_value(root, AK_MODELS)) == RB_JSON_ARRAY)
        info->priced_option = "models";
    else if (rb_json_type(doc, plugins) == RB_JSON_ARRAY && rb_json_count(doc, plugins) > 0)
        info->priced_option = "plugins";
    else if (rb_json_type(doc, adapter_root_value(root, AK_WEB_SEARCH_OPTIONS)) == RB_JSON_OBJECT)
        info->priced_option = "web_search_options";
    else if (info->route == GW_ROUTE_RESPONSES && rb_json_type(doc, tools) == RB_JSON_ARRAY)
        while (rb_json_elem_next(doc, tools, &t))
            if (adapter_tool_billed_apart(doc, t)) {
                info->priced_option = "tools";
                break;
            }
}

/* 1 when the content part (or Responses input item) p brings input its bytes do not bound: a
 * file by id or URL (Responses input_file, chat's file part, an Anthropic document from a URL or
 * the Files API), a Responses item_reference, or an image in any form (chat's image_url,
 * Responses input_image, Anthropic's image): an image's tokens follow its pixels, not its bytes
 * (OpenAI bills one high-detail image to gpt-4o-mini at up to ~48k tokens, sent as a URL of a few
 * dozen bytes). Inline files are not: their text is in the body. */
static int adapter_part_elsewhere(const rb_json_t *doc, int p)
{
    int type = rb_json_member(doc, p, "type"), src;

    if (rb_json_type(doc, p) != RB_JSON_OBJECT)
        return 0;
    if (rb_json_str_eq(doc, type, "item_reference") || rb_json_str_eq(doc, type, "image_url") ||
        rb_json_str_eq(doc, type, "input_image") || rb_json_str_eq(doc, type, "image"))
        return 1;
    if (rb_json_str_eq(doc, type, "input_file"))
        return rb_json_member(doc, p, "file_id") >= 0 || rb_json_member(doc, p, "file_url") >= 0;
    if (rb_json_str_eq(doc, type, "file"))
        return rb_json_find(doc, p, "file.file_id") >= 0;
    if (rb_json_str_eq(doc, type, "document")) {
        src = rb_json_member(doc, p, "source");
        return rb_json_str_eq(doc, rb_json_member(doc, src, "type"), "url") ||
               rb_json_str_eq(doc, rb_json_member(doc, src, "type"), "file");
    }
    return 0;
}

/* How deep adapter_walk goes below the messages or input array: an item, its content parts (or a
 * Responses function_call_output's output parts), and theirs (an Anthropic tool_result's content).
 */
#define ADAPTER_WALK_DEPTH 2

/* Calls visit on each element of arr and, depth levels down, on the elements of their content and
 * output arrays; returns the first nonzero visit, else 0. */
static int adapter_walk(const rb_json_t *doc, int arr, int depth,
                        int (*visit)(const rb_json_t *doc, int obj))
{
    int e = -1, rc;

    RB_ASSERT(depth >= 0 && visit != NULL);
    while (rb_json_elem_next(doc, arr, &e)) {
        if ((rc = visit(doc, e)) != 0)
            return rc;
        if (depth > 0 &&
            ((rc = adapter_walk(doc, rb_json_member(doc, e, "content"), depth - 1, visit)) != 0 ||
             (rc = adapter_walk(doc, rb_json_member(doc, e, "output"), depth - 1, visit)) != 0))
            return rc;
    }
    return 0;
}

/* 1 when a tool t brings input the body does not hold: Anthropic's web search and fetch (their
 * results join the input), a Responses MCP tool (its tool list and results do). */
static int adapter_tool_elsewhere(const rb_json_t *doc, int t, gw_route_t route)
{
    char type[64]; /* web_search_20250305, web_fetch_20250910 */

    if (rb_json_str(doc, rb_json_member(doc, t, "type"), type, sizeof(type), NULL) != RB_OK)
        return 0;
    if (route == GW_ROUTE_MESSAGES)
        return strncmp(type, "web_search_", 11) == 0 || strncmp(type, "web_fetch_", 10) == 0;
    return route == GW_ROUTE_RESPONSES && strcmp(type, "mcp") == 0;
}

/* Counts the web searches an Anthropic call may run (gw_request_info_t.web_searches). */
static void adapter_web_searches(const adapter_root_t *root, gw_request_info_t *info)
{
    const rb_json_t *doc = root->doc;
    int t = -1;
    int64_t uses;
    char type[64];

    info->web_searches = 0;
    if (info->route != GW_ROUTE_MESSAGES)
        return;
    while (rb_json_elem_next(doc, adapter_root_value(root, AK_TOOLS), &t)) {
        if (rb_json_str(doc, rb_json_member(doc, t, "type"), type, sizeof(type), NULL) != RB_OK ||
            strncmp(type, "web_search_", 11) != 0)
            continue;
        if (rb_json_int64(doc, rb_json_member(doc, t, "max_uses"), &uses) != 0 || uses < 1 ||
            uses > GW_ADAPTER_CAP_MAX)
            uses = GW_ADAPTER_WEB_SEARCH_USES_DEFAULT; /* the provider refuses a bad one itself */
        info->web_searches += uses;
    }
}

/* Finds the first field that brings the provider input the body does not hold
 * (gw_request_info_t.input_elsewhere): a Responses previous_response_id, conversation or stored
 * prompt, files by id or URL, item references, images, tools whose results join the input, and
 * Anthropic's MCP servers. */
static void adapter_input_elsewhere(const adapter_root_t *root, const adapter_route_t *r,
                                    gw_request_info_t *info)
{
    static const adapter_key_t stored[] = {AK_PREVIOUS_RESPONSE_ID, AK_CONVERSATION, AK_PROMPT};
    const rb_json_t *doc = root->doc;
    int t = -1;
    rb_json_type_t ty;

    info->input_elsewhere = NULL;
    if (info->route == GW_ROUTE_RESPONSES)
        for (size_t i = 0; i < sizeof(stored) / sizeof(stored[0]); i++) {
            ty = rb_json_type(doc, adapter_root_value(root, stored[i]));
            if (ty != RB_JSON_ABSENT && ty != RB_JSON_NULL) {
                info->input_elsewhere = adapter_key_name(stored[i]);
                return;
            }
        }
    if ((info->route == GW_ROUTE_CHAT || info->route == GW_ROUTE_RESPONSES ||
         info->route == GW_ROUTE_MESSAGES) &&
        adapter_walk(doc, adapter_root_value(root, r->required), ADAPTER_WALK_DEPTH,
                     adapter_part_elsewhere)) {
        info->input_elsewhere = adapter_key_name(r->required);
        return;
    }
    while (rb_json_elem_next(doc, adapter_root_value(root, AK_TOOLS), &t))
        if (adapter_tool_elsewhere(doc, t, info->route)) {
            info->input_elsewhere = "tools";
            return;
        }
    if (info->route == GW_ROUTE_MESSAGES &&
        rb_json_count(doc, adapter_root_value(root, AK_MCP_SERVERS)) > 0)
        info->input_elsewhere = "mcp_servers";
}

/* 1 when obj (a tool, an item or a part) names twice a member the gateway reads in it, or its
 * source or file does: the gateway reads the first, many upstreams the last. */
static int adapter_obj_repeated(const rb_json_t *doc, int obj)
{
    enum { SOURCE = 3, FILE_ = 4 };
    static const char *const read[] = {"type", "content", "output",  "source",
                                       "file", "file_id", "file_url"};
    unsigned seen = 0;
    int k = -1, v = -1;

    while (rb_json_next(doc, obj, &k, &v)) { /* one pass: each key against the names read */
        size_t i = adapter_key_index(doc, k, read, sizeof(read) / sizeof(read[0]));
        if (i == sizeof(read) / sizeof(read[0]))
            continue;
        if ((seen & (1u << i)) != 0 || (i == SOURCE && adapter_key_count(doc, v, "type") > 1) ||
            (i == FILE_ && adapter_key_count(doc, v, "file_id") > 1))
            return 1;
        seen |= 1u << i;
    }
    return 0;
}

/* The first of tools and the content field (messages, input) holding an object that names a
 * member inspect reads twice (a tool billed apart or a file by id would pass as something else),
 * or NULL. */
static const char *adapter_repeated_member(const adapter_root_t *root, const adapter_route_t *r)
{
    const rb_json_t *doc = root->doc;

    if (adapter_walk(doc, adapter_root_value(root, AK_TOOLS), 0, adapter_obj_repeated))
        return "tools";
    if (adapter_walk(doc, adapter_root_value(root, r->required), ADAPTER_WALK_DEPTH,
                     adapter_obj_repeated))
        return adapter_key_name(r->required);
    return NULL;
}

static rb_err_t adapter_stream(const adapter_root_t *root, const adapter_route_t *r,
                               gw_request_info_t *info, char *errmsg, size_t errcap)
{
    const rb_json_t *doc = root->doc;
    int v = adapter_root_value(root, AK_STREAM), so, iu;
    rb_json_type_t t = rb_json_type(doc, v);

    if (!r->can_stream)
        return RB_OK;
    if (t != RB_JSON_ABSENT && t != RB_JSON_NULL && rb_json_bool(doc, v, &info->stream) != 0)
        return adapter_fail(info, errmsg, errcap, "stream", "'stream' must be a boolean");
    if (info->route != GW_ROUTE_CHAT && info->route != GW_ROUTE_COMPLETIONS)
        return RB_OK;
    so = adapter_root_value(root, AK_STREAM_OPTIONS);
    t = rb_json_type(doc, so);
    if (t == RB_JSON_ABSENT)
        return RB_OK;
    if (t != RB_JSON_NULL && t != RB_JSON_OBJECT)
        return adapter_fail(info, errmsg, errcap, "stream_options",
                            "'stream_options' must be an object");
    info->so_kind = t == RB_JSON_NULL ? 1 : 2;
    info->so_empty = rb_json_count(doc, so) == 0;
    RB_ASSERT(rb_json_span(doc, so, &info->so_start, &info->so_end) == 0);
    iu = rb_json_member(doc, so, "include_usage");
    t = rb_json_type(doc, iu);
    if (t == RB_JSON_ABSENT)
        return RB_OK;
    if (t != RB_JSON_NULL && rb_json_bool(doc, iu, &info->include_usage) != 0)
        return adapter_fail(info, errmsg, errcap, "stream_options.include_usage",
                            "'stream_options.include_usage' must be a boolean");
    info->iu_present = 1;
    RB_ASSERT(rb_json_span(doc, iu, &info->iu_start, &info->iu_end) == 0);
    return RB_OK;
}

static rb_err_t adapter_content(const adapter_root_t *root, const adapter_route_t *r,
                                gw_request_info_t *info, char *errmsg, size_t errcap)
{
    const rb_json_t *doc = root->doc;
    rb_json_type_t t = rb_json_type(doc, adapter_root_value(root, r->required));
    const char *req = adapter_key_name(r->required);

    if (t == RB_JSON_ABSENT || t == RB_JSON_NULL) {
        /* Responses may run a stored prompt template instead of inline input */
        if (info->route == GW_ROUTE_RESPONSES &&
            rb_json_type(doc, adapter_root_value(root, AK_PROMPT)) == RB_JSON_OBJECT)
            return RB_OK;
        return adapter_fail(info, errmsg, errcap, req, "'%s' is required", req);
    }
    if (r->req_type == RB_JSON_ARRAY && t != RB_JSON_ARRAY)
        return adapter_fail(info, errmsg, errcap, req, "'%s' must be an array", req);
    if (r->req_type == RB_JSON_ABSENT && t != RB_JSON_STRING && t != RB_JSON_ARRAY)
        return adapter_fail(info, errmsg, errcap, req, "'%s' must be a string or an array", req);
    return RB_OK;
}

rb_err_t gw_adapter_inspect(gw_route_t route, const char *body, size_t len,
                            const rb_json_limits_t *limits, gw_request_info_t *info, char *errmsg,
                            size_t errcap)
{
    rb_err_t err = RB_OK;
    rb_json_t *doc = NULL;
    adapter_root_t root;
    const adapter_route_t *r;
    const char *dup;
    size_t end = 0;

    RB_ASSERT(route < GW_ROUTE__COUNT && info != NULL && (body != NULL || len == 0));
    RB_ASSERT(errmsg != NULL || errcap == 0);
    r = &adapter_routes[route];
    *info = (gw_request_info_t){.route = route, .input_bytes = len};
    if (errcap > 0)
        errmsg[0] = '\0';
    if ((err = rb_json_parse(body, len, limits, &doc)) != RB_OK) {
        adapter_fail(info, errmsg, errcap, NULL,
                     err == RB_ERR_LIMIT ? "request body is nested too deeply or too large"
                                         : "request body is not valid JSON");
        goto Exit;
    }
    if (rb_json_type(doc, 0) != RB_JSON_OBJECT) {
        err = adapter_fail(info, errmsg, errcap, NULL, "request body must be a JSON object");
        goto Exit;
    }
    if ((dup = adapter_root_scan(doc, &root)) != NULL) {
        err = adapter_fail(info, errmsg, errcap, dup, "'%s' appears more than once", dup);
        goto Exit;
    }
    if ((err = adapter_model(&root, info, errmsg, errcap)) != RB_OK ||
        (err = adapter_stream(&root, r, info, errmsg, errcap)) != RB_OK ||
        (err = adapter_cap(&root, r, info, errmsg, errcap)) != RB_OK ||
        (err = adapter_choices(&root, info, errmsg, errcap)) != RB_OK ||
        (err = adapter_background(&root, info, errmsg, errcap)) != RB_OK ||
        (err = adapter_content(&root, r, info, errmsg, errcap)) != RB_OK)
        goto Exit;
    if ((dup = adapter_repeated_member(&root, r)) != NULL) {
        err =
            adapter_fail(info, errmsg, errcap, dup, "an object in '%s' names a member twice", dup);
        goto Exit;
    }
    adapter_priced_option(&root, info);
    adapter_input_elsewhere(&root, r, info);
    adapter_web_searches(&root, info);
    RB_ASSERT(rb_json_span(doc, 0, &info->root_open, &end) == 0 && body[info->root_open] == '{');
Exit:
    rb_json_free(doc);
    return err;
}

/* ---- rewrite ---- */

typedef struct st_adapter_splice_t {
    size_t start, end; /* bytes of the body replaced (start == end: an insertion) */
    const char *text;
    size_t text_len;
} adapter_splice_t;

static void adapter_splice_add(adapter_splice_t *s, size_t *n, size_t start, size_t end,
                               const char *text, size_t text_len)
{
    RB_ASSERT(*n < ADAPTER_SPLICES_MAX && start <= end);
    s[*n] = (adapter_splice_t){start, end, text, text_len};
    (*n)++;
}

/* Copies body to out with the splices applied in offset order. */
static rb_err_t adapter_splice_apply(const char *body, size_t len, adapter_splice_t *s, size_t n,
                                     rb_buf_t *out)
{
    size_t pos = 0;

    for (size_t i = 1; i < n; i++) { /* insertion sort: n <= 4, stable */
        adapter_splice_t x = s[i];
        size_t j = i;
        for (; j > 0 && s[j - 1].start > x.start; j--)
            s[j] = s[j - 1];
        s[j] = x;
    }
    for (size_t i = 0; i < n; i++) {
        RB_ASSERT(s[i].start >= pos && s[i].end <= len);
        if (rb_buf_append(out, body + pos, s[i].start - pos) != 0 ||
            rb_buf_append(out, s[i].text, s[i].text_len) != 0)
            return RB_ERR_LIMIT;
        pos = s[i].end;
    }
    return rb_buf_append(out, body + pos, len - pos) != 0 ? RB_ERR_LIMIT : RB_OK;
}

/* Builds the members inserted right after the root '{' (each followed by a comma: the root always
 * has `model`), or the in-place replacement of a null cap into cap_text. */
static void adapter_root_members(const gw_request_info_t *info, int64_t cap_to_write, int inject,
                                 rb_buf_t *lead, char *cap_text, size_t cap_cap, size_t *cap_len)
{
    const char *field = adapter_key_name(adapter_routes[info->route].cap);

    *cap_len = 0;
    if (cap_to_write > 0 && !info->cap_given && field != NULL) {
        if (info->cap_null) { /* replace the null in place: a second key would be a duplicate */
            int k = snprintf(cap_text, cap_cap, "%lld", (long long)cap_to_write);
            RB_ASSERT(k > 0 && (size_t)k < cap_cap);
            *cap_len = (size_t)k;
        } else {
            rb_buf_printf(lead, "\"%s\":%lld,", field, (long long)cap_to_write);
        }
    }
    if (inject && info->so_kind == 0)
        rb_buf_puts(lead, "\"stream_options\":{\"include_usage\":true},");
}

rb_err_t gw_adapter_rewrite(const char *body, size_t len, const gw_request_info_t *info,
                            const char *upstream_model, int64_t cap_to_write,
                            int force_include_usage, rb_buf_t *out)
{
    static const char iu_member[] = "\"include_usage\":true,";
    static const char iu_object[] = "{\"include_usage\":true}";
    adapter_splice_t s[ADAPTER_SPLICES_MAX];
    char cap_text[32];
    rb_buf_t model, lead;
    size_t n = 0, cap_len = 0;
    int inject;
    rb_err_t err;

    RB_ASSERT(body != NULL && info != NULL && upstream_model != NULL && out != NULL);
    RB_ASSERT(info->model_end <= len && info->root_open < len && body[info->root_open] == '{');
    RB_ASSERT(cap_to_write >= 0);
    inject = force_include_usage && info->stream && !info->include_usage &&
             (info->route == GW_ROUTE_CHAT || info->route == GW_ROUTE_COMPLETIONS);
    rb_buf_init(&model, 0);
    rb_buf_init(&lead, 0);
    rb_buf_puts(&model, "\"");
    rb_json_escape(&model, upstream_model, strlen(upstream_model));
    rb_buf_puts(&model, "\"");
    adapter_splice_add(s, &n, info->model_start, info->model_end, model.base, model.len);
    adapter_root_members(info, cap_to_write, inject, &lead, cap_text, sizeof(cap_text), &cap_len);
    if (cap_len > 0)
        adapter_splice_add(s, &n, info->cap_start, info->cap_end, cap_text, cap_len);
    if (lead.len > 0)
        adapter_splice_add(s, &n, info->root_open + 1, info->root_open + 1, lead.base, lead.len);
    if (inject && info->so_kind == 1)
        adapter_splice_add(s, &n, info->so_start, info->so_end, iu_object, sizeof(iu_object) - 1);
    if (inject && info->so_kind == 2 && info->iu_present)
        adapter_splice_add(s, &n, info->iu_start, info->iu_end, "true", 4);
    if (inject && info->so_kind == 2 && !info->iu_present) /* no trailing comma in an empty {} */
        adapter_splice_add(s, &n, info->so_start + 1, info->so_start + 1, iu_member,
                           sizeof(iu_member) - 1 - (size_t)info->so_empty);
    err = adapter_splice_apply(body, len, s, n, out);
    rb_buf_free(&model);
    rb_buf_free(&lead);
    return err;
}

/* ---- responses ---- */

/* 1 when some `"key":` in data is followed (after spaces) by the bytes `open`. Real keys only:
 * inside a JSON string the quotes would be escaped. */
static int adapter_key_followed_by(const char *data, size_t len, const char *key, const char *open)
{
    size_t klen = strlen(key), olen = strlen(open), i = 0;
    const char *hit;

    while (i < len && (hit = memmem(data + i, len - i, key, klen)) != NULL) {
        i = (size_t)(hit - data) + klen;
        for (size_t k = 0; k < olen; k++) {
            while (i < len &&
                   (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
                i++;
            if (i >= len || data[i] != open[k])
                break;
            i++;
            if (k + 1 == olen)
                return 1;
        }
    }
    return 0;
}

int gw_adapter_is_injected_usage_chunk(const char *data, size_t len)
{
    rb_json_t *doc = NULL;
    int yes = 0, choices;

    RB_ASSERT(data != NULL || len == 0);
    /* cheap scan first: every chunk of the stream passes through here */
    if (!adapter_key_followed_by(data, len, "\"choices\":", "[]") ||
        !adapter_key_followed_by(data, len, "\"usage\":", "{"))
        return 0;
    if (rb_json_parse(data, len, NULL, &doc) != RB_OK)
        return 0;
    choices = rb_json_member(doc, 0, "choices");
    yes = rb_json_type(doc, 0) == RB_JSON_OBJECT && rb_json_type(doc, choices) == RB_JSON_ARRAY &&
          rb_json_count(doc, choices) == 0 &&
          rb_json_type(doc, rb_json_member(doc, 0, "usage")) == RB_JSON_OBJECT;
    rb_json_free(doc);
    return yes;
}

rb_err_t gw_adapter_add_cost_at(const char *json, size_t len, size_t usage_end, int usage_empty,
                                int64_t cost_micro, rb_buf_t *out)
{
    char credits[GW_PRICING_CREDITS_STR_MAX], micro[RB_INT64_STR_MAX];
    int k = gw_pricing_format_credits(cost_micro, credits, sizeof(credits));

    RB_ASSERT(k > 0 && json != NULL && usage_end > 0 && usage_end <= len &&
              json[usage_end - 1] == '}' && out != NULL);
    /* the usage object up to its '}', then [,]"cost_micro":N,"cost_credits":"C" and the rest */
    rb_buf_append(out, json, usage_end - 1);
    if (!usage_empty)
        rb_buf_append(out, ",", 1);
    rb_buf_puts(out, "\"cost_micro\":");
    rb_buf_append(out, micro, rb_fmt_int64(micro, cost_micro));
    rb_buf_puts(out, ",\"cost_credits\":\"");
    rb_buf_append(out, credits, (size_t)k);
    rb_buf_append(out, "\"", 1);
    if (rb_buf_append(out, json + usage_end - 1, len - (usage_end - 1)) != 0 || out->overflow)
        return RB_ERR_LIMIT;
    return RB_OK;
}

rb_err_t gw_adapter_add_cost_doc(const rb_json_t *doc, const char *json, size_t len,
                                 int64_t cost_micro, rb_buf_t *out)
{
    size_t start = 0, end = 0;
    int usage;

    RB_ASSERT(doc != NULL && (json != NULL || len == 0) && out != NULL);
    usage = rb_json_member(doc, 0, "usage");
    if (rb_json_type(doc, usage) != RB_JSON_OBJECT)
        usage = rb_json_find(doc, 0, "response.usage");
    if (rb_json_type(doc, usage) != RB_JSON_OBJECT)
        return RB_ERR_NOTFOUND;
    RB_ASSERT(rb_json_span(doc, usage, &start, &end) == 0 && end <= len);
    return gw_adapter_add_cost_at(json, len, end, rb_json_count(doc, usage) == 0, cost_micro, out);
}

rb_err_t gw_adapter_add_cost(const char *json, size_t len, int64_t cost_micro, rb_buf_t *out)
{
    rb_json_t *doc = NULL;
    rb_err_t err;

    RB_ASSERT((json != NULL || len == 0) && out != NULL);
    if ((err = rb_json_parse(json, len, NULL, &doc)) != RB_OK)
        goto Exit;
    err = gw_adapter_add_cost_doc(doc, json, len, cost_micro, out);
Exit:
    rb_json_free(doc);
    return err;
}
