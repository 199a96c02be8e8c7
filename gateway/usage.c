/*
 * Usage extraction: see usage.h. JSON is parsed only for the few events that can carry usage or an
 * error (a byte scan decides); text deltas are measured by scanning for their keys, so a stream of
 * a thousand deltas costs a thousand memmem calls and no allocation.
 */
#include "gateway/usage.h"

#include <stdio.h>
#include <string.h>

/* The OpenAI-family usage shapes differ only in member names. */
typedef struct st_usage_openai_names_t {
    const char *input;      /* includes cached (and written) tokens */
    const char *cached;     /* subset of input */
    const char *cached_alt; /* used when `cached` is absent (DeepSeek), or NULL */
    const char *written;    /* subset of input written to the cache (OpenRouter), or NULL */
    const char *output;     /* includes reasoning */
    const char *reasoning;  /* subset of output */
} usage_openai_names_t;

static const usage_openai_names_t usage_names_chat = {
    "prompt_tokens",           "prompt_tokens_details.cached_tokens",
    "prompt_cache_hit_tokens", "prompt_tokens_details.cache_write_tokens",
    "completion_tokens",       "completion_tokens_details.reasoning_tokens",
};

static const usage_openai_names_t usage_names_responses = {
    "input_tokens",  "input_tokens_details.cached_tokens",     NULL, NULL,
    "output_tokens", "output_tokens_details.reasoning_tokens",
};

/* Reads a token count at path: 1 when present and sane, 0 when absent/null; a malformed value
 * counts as absent and sets *bad. */
static int usage_int(const rb_json_t *doc, int v, const char *path, int64_t *out, int *bad)
{
    int64_t n;
    int j = path != NULL ? rb_json_find(doc, v, path) : -1;
    rb_json_type_t t = rb_json_type(doc, j);

    if (t == RB_JSON_ABSENT || t == RB_JSON_NULL)
        return 0;
    if (rb_json_int64(doc, j, &n) != 0 || n < 0 || n > GW_USAGE_TOKENS_MAX) {
        *bad = 1;
        return 0;
    }
    *out = n;
    return 1;
}

static rb_err_t usage_from_openai(const rb_json_t *doc, int v, const usage_openai_names_t *names,
                                  gw_usage_t *u)
{
    int64_t in = 0, cached = 0, written = 0, n = 0;
    int bad = 0, has_cached, has_written;

    if (rb_json_type(doc, v) != RB_JSON_OBJECT)
        return RB_ERR_NOTFOUND;
    if (usage_int(doc, v, names->input, &in, &bad)) {
        has_cached = usage_int(doc, v, names->cached, &cached, &bad);
        if (!has_cached)
            has_cached = usage_int(doc, v, names->cached_alt, &cached, &bad);
        has_written = usage_int(doc, v, names->written, &written, &bad);
        /* the subsets can never exceed the whole: bill at most `in` input tokens in total */
        cached = cached < in ? cached : in;
        written = written < in - cached ? written : in - cached;
        u->input_uncached = in - cached - written;
        u->reported |= GW_USAGE_INPUT_UNCACHED;
        if (has_cached) {
            u->cache_read = cached;
            u->reported |= GW_USAGE_CACHE_READ;
        }
        if (has_written) {
            u->cache_write_5m = written;
            u->reported |= GW_USAGE_CACHE_WRITE_5M;
        }
    }
    if (usage_int(doc, v, names->output, &n, &bad)) {
        u->output = n;
        u->reported |= GW_USAGE_OUTPUT;
    }
    if (usage_int(doc, v, names->reasoning, &n, &bad)) {
        u->reasoning = n;
        u->reported |= GW_USAGE_REASONING;
    }
    RB_ASSERT(u->input_uncached >= 0 && u->cache_read >= 0 && u->cache_write_5m >= 0);
    return bad ? RB_ERR_PARSE : RB_OK;
}

rb_err_t gw_usage_from_openai_chat(const rb_json_t *doc, int v, gw_usage_t *u)
{
    RB_ASSERT(doc != NULL && u != NULL);
    return usage_from_openai(doc, v, &usage_names_chat, u);
}

rb_err_t gw_usage_from_openai_responses(const rb_json_t *doc, int v, gw_usage_t *u)
{
    RB_ASSERT(doc != NULL && u != NULL);
    return usage_from_openai(doc, v, &usage_names_responses, u);
}

/* Anthropic cache writes: the split wins; the part of the total it does not cover is 5m; a total
 * without a split keeps an earlier 1h figure (a restating message_delta) and puts the rest in 5m.
 */
static void usage_anthropic_writes(const rb_json_t *doc, int v, gw_usage_t *u, int *bad)
{
    int64_t total = 0, w5 = 0, w1 = 0;
    int has_total = usage_int(doc, v, "cache_creation_input_tokens", &total, bad);
    int has_5m = usage_int(doc, v, "cache_creation.ephemeral_5m_input_tokens", &w5, bad);
    int has_1h = usage_int(doc, v, "cache_creation.ephemeral_1h_input_tokens", &w1, bad);

    if (has_5m || has_1h) {
        if (has_total && total > w5 + w1)
            w5 += total - (w5 + w1);
        u->cache_write_5m = w5;
        u->cache_write_1h = w1;
        u->reported |= GW_USAGE_CACHE_WRITE_5M | GW_USAGE_CACHE_WRITE_1H;
    } else if (has_total) {
        w1 = (u->reported & GW_USAGE_CACHE_WRITE_1H) && u->cache_write_1h <= total
                 ? u->cache_write_1h
                 : 0;
        u->cache_write_1h = w1;
        u->cache_write_5m = total - w1;
        u->reported |= GW_USAGE_CACHE_WRITE_5M;
    }
    RB_ASSERT(u->cache_write_5m >= 0 && u->cache_write_1h >= 0);
}

rb_err_t gw_usage_from_anthropic(const rb_json_t *doc, int v, gw_usage_t *u)
{
    int64_t n = 0;
    int bad = 0;

    RB_ASSERT(doc != NULL && u != NULL);
    if (rb_json_type(doc, v) != RB_JSON_OBJECT)
        return RB_ERR_NOTFOUND;
    if (usage_int(doc, v, "input_tokens", &n, &bad)) {
        u->input_uncached = n;
        u->reported |= GW_USAGE_INPUT_UNCACHED;
    }
    if (usage_int(doc, v, "cache_read_input_tokens", &n, &bad)) {
        u->cache_read = n;
        u->reported |= GW_USAGE_CACHE_READ;
    }
    usage_anthropic_writes(doc, v, u, &bad);
    if (usage_int(doc, v, "output_tokens", &n, &bad)) {
        u->output = n;
        u->reported |= GW_USAGE_OUTPUT;
    }
    if (usage_int(doc, v, "server_tool_use.web_search_requests", &n, &bad)) {
        u->requests = n;
        u->reported |= GW_USAGE_REQUESTS;
    }
    return bad ? RB_ERR_PARSE : RB_OK;
}

/* Extracts the usage object v with the route's reader. */
static rb_err_t usage_read(gw_route_t route, const rb_json_t *doc, int v, gw_usage_t *u)
{
    switch (route) {
    case GW_ROUTE_CHAT:
    case GW_ROUTE_COMPLETIONS:
    case GW_ROUTE_EMBEDDINGS:
        return gw_usage_from_openai_chat(doc, v, u);
    case GW_ROUTE_RESPONSES:
        return gw_usage_from_openai_responses(doc, v, u);
    case GW_ROUTE_MESSAGES:
        return gw_usage_from_anthropic(doc, v, u);
    case GW_ROUTE_COUNT_TOKENS: /* {"input_tokens":N} is a count, not usage */
    default:
        return RB_ERR_NOTFOUND;
    }
}

rb_err_t gw_usage_from_value(gw_route_t route, const rb_json_t *doc, int v, gw_usage_t *u)
{
    rb_err_t err;

    RB_ASSERT(u != NULL && doc != NULL);
    *u = (gw_usage_t){0};
    if (route == GW_ROUTE_COUNT_TOKENS)
        return RB_ERR_NOTFOUND;
    err = usage_read(route, doc, v, u);
    if (err == RB_OK || err == RB_ERR_PARSE)
        u->terminal = 1;
    return err;
}

rb_err_t gw_usage_from_doc(gw_route_t route, const rb_json_t *doc, gw_usage_t *u)
{
    RB_ASSERT(doc != NULL);
    return gw_usage_from_value(route, doc, rb_json_member(doc, 0, "usage"), u);
}

rb_err_t gw_usage_from_body(gw_route_t route, const char *body, size_t len,
                            const rb_json_limits_t *limits, gw_usage_t *u)
{
    rb_err_t err = RB_OK;
    rb_json_t *doc = NULL;

    RB_ASSERT(u != NULL && (body != NULL || len == 0));
    *u = (gw_usage_t){0};
    if (route == GW_ROUTE_COUNT_TOKENS) {
        err = RB_ERR_NOTFOUND;
        goto Exit;
    }
    if ((err = rb_json_parse(body, len, limits, &doc)) != RB_OK)
        goto Exit;
    err = gw_usage_from_doc(route, doc, u);
Exit:
    rb_json_free(doc);
    return err;
}

/* ---- streaming ---- */

void gw_usage_observer_init(gw_usage_observer_t *obs, gw_route_t route,
                            const rb_json_limits_t *limits)
{
    RB_ASSERT(obs != NULL && route < GW_ROUTE__COUNT);
    *obs = (gw_usage_observer_t){.route = route};
    if (limits != NULL)
        obs->limits = *limits;
}

static int usage_name_is(const char *name, size_t name_len, const char *want)
{
    size_t n = strlen(want);
    return name_len == n && memcmp(name, want, n) == 0;
}

static int usage_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Offset of the first non-space byte at or after i (len when none). */
static size_t usage_skip_ws(const char *data, size_t len, size_t i)
{
    while (i < len && usage_is_ws(data[i]))
        i++;
    return i;
}

/* 1 when some `"key":` in data is followed by `open` (e.g. '{' or '"'). The key's quotes are real
 * JSON quotes: inside a string they would be escaped, so the pattern cannot match string content.
 */
static int usage_key_followed_by(const char *data, size_t len, const char *key, char open)
{
    size_t klen = strlen(key), i = 0;
    const char *hit;

    while (i < len && (hit = memmem(data + i, len - i, key, klen)) != NULL) {
        i = usage_skip_ws(data, len, (size_t)(hit - data) + klen);
        if (i < len && data[i] == open)
            return 1;
    }
    return 0;
}

static int usage_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* Unescaped byte length of the JSON string whose opening quote is at data[i]; *end is set past the
 * closing quote (len when unterminated). \uXXXX counts as its UTF-8 length. */
static int64_t usage_string_bytes(const char *data, size_t len, size_t i, size_t *end)
{
    int64_t n = 0;

    RB_ASSERT(i < len && data[i] == '"');
    for (i++; i < len && data[i] != '"'; i++, n++) {
        unsigned cp = 0;
        size_t k = 0;
        if (data[i] != '\\' || i + 1 >= len)
            continue;
        if (data[i + 1] != 'u') { /* \n, \", \\ ...: one byte */
            i++;
            continue;
        }
        /* skip only the hex digits really there, so a quote after a short \u still ends the
         * string: every scan then agrees on where strings end and counts never overlap */
        for (; k < 4 && i + 2 + k < len && usage_hex(data[i + 2 + k]) >= 0; k++)
            cp = cp * 16 + (unsigned)usage_hex(data[i + 2 + k]);
        n += cp < 0x80 ? 0 : cp < 0x800 ? 1 : 2;
        i += 1 + k;
    }
    *end = i < len ? i + 1 : len;
    return n;
}

/* Sum of the unescaped lengths of every string value of `"key":` in data. */
static int64_t usage_text_bytes(const char *data, size_t len, const char *key)
{
    size_t klen = strlen(key), i = 0;
    const char *hit;
    int64_t n = 0;

    while (i < len && (hit = memmem(data + i, len - i, key, klen)) != NULL) {
        i = usage_skip_ws(data, len, (size_t)(hit - data) + klen);
        if (i < len && data[i] == '"')
            n += usage_string_bytes(data, len, i, &i);
    }
    return n;
}

int64_t gw_usage_body_text_bytes(gw_route_t route, const char *body, size_t len)
{
    static const char *const keys[GW_ROUTE__COUNT][4] = {
        [GW_ROUTE_CHAT] = {"\"content\":", "\"arguments\":", "\"reasoning_content\":",
                           "\"reasoning\":"},
        [GW_ROUTE_COMPLETIONS] = {"\"text\":"},
        [GW_ROUTE_RESPONSES] = {"\"text\":", "\"arguments\":"},
        [GW_ROUTE_MESSAGES] = {"\"text\":", "\"thinking\":"},
    };
    int64_t n = 0;

    RB_ASSERT(route < GW_ROUTE__COUNT && (body != NULL || len == 0));
    for (size_t i = 0; i < 4 && keys[route][i] != NULL; i++)
        n += usage_text_bytes(body, len, keys[route][i]);
    return n;
}

/* Parses data; NULL (and sets malformed) when it is not a JSON object. */
static rb_json_t *usage_parse(gw_usage_observer_t *obs, const char *data, size_t len)
{
    rb_json_t *doc = NULL;

    if (rb_json_parse(data, len, &obs->limits, &doc) != RB_OK ||
        rb_json_type(doc, 0) != RB_JSON_OBJECT) {
        rb_json_free(doc);
        obs->malformed = 1;
        return NULL;
    }
    return doc;
}

/* Reads the usage object at path in data into the observer's record. */
static void usage_take(gw_usage_observer_t *obs, const char *data, size_t len, const char *path,
                       int terminal)
{
    rb_json_t *doc = usage_parse(obs, data, len);
    rb_err_t err;

    if (doc == NULL)
        return;
    err = usage_read(obs->route, doc, rb_json_find(doc, 0, path), &obs->usage);
    if (err == RB_ERR_PARSE)
        obs->malformed = 1;
    if (err != RB_ERR_NOTFOUND && terminal)
        obs->usage.terminal = 1;
    rb_json_free(doc);
}

/* Chat and legacy completions: `data: {chunk}` events, `data: [DONE]` at the end. */
static void usage_observe_chat(gw_usage_observer_t *obs, const char *data, size_t len)
{
    size_t i = usage_skip_ws(data, len, 0), n = len;
    rb_json_t *doc;
    int has_usage, has_error;

    while (n > i && usage_is_ws(data[n - 1]))
        n--;
    if (n - i == 6 && memcmp(data + i, "[DONE]", 6) == 0) {
        obs->done = 1;
        return;
    }
    if (obs->route == GW_ROUTE_CHAT) {
        obs->output_bytes += usage_text_bytes(data, len, "\"content\":");
        obs->output_bytes += usage_text_bytes(data, len, "\"arguments\":");
        obs->output_bytes += usage_text_bytes(data, len, "\"reasoning_content\":");
        obs->output_bytes += usage_text_bytes(data, len, "\"reasoning\":");
    } else {
        obs->output_bytes += usage_text_bytes(data, len, "\"text\":");
    }
    /* every chunk carries "usage":null once include_usage is on: only an object is worth parsing */
    has_usage = usage_key_followed_by(data, len, "\"usage\":", '{');
    has_error = usage_key_followed_by(data, len, "\"error\":", '{') ||
                usage_key_followed_by(data, len, "\"error\":", '"');
    if (!has_usage && !has_error)
        return;
    if ((doc = usage_parse(obs, data, len)) == NULL)
        return;
    if (has_usage) {
        rb_err_t err = gw_usage_from_openai_chat(doc, rb_json_member(doc, 0, "usage"), &obs->usage);
        if (err == RB_ERR_PARSE)
            obs->malformed = 1;
        if (err != RB_ERR_NOTFOUND)
            obs->usage.terminal = 1; /* each usage object states the whole request's totals */
    }
    if (has_error) {
        rb_json_type_t t = rb_json_type(doc, rb_json_member(doc, 0, "error"));
        if (t != RB_JSON_ABSENT && t != RB_JSON_NULL)
            obs->provider_error = 1;
    }
    rb_json_free(doc);
}

/* The Responses API names every event; without a name, fall back to the payload's "type". */
static int usage_responses_is(const char *name, size_t name_len, const char *data, size_t len,
                              const char *type)
{
    char pattern[64];
    int n;

    if (name_len > 0)
        return usage_name_is(name, name_len, type);
    n = snprintf(pattern, sizeof(pattern), "\"type\":\"%s\"", type);
    RB_ASSERT(n > 0 && (size_t)n < sizeof(pattern));
    return memmem(data, len, pattern, (size_t)n) != NULL;
}

static void usage_observe_responses(gw_usage_observer_t *obs, const char *name, size_t name_len,
                                    const char *data, size_t len)
{
    static const char *const terminal[] = {"response.completed", "response.incomplete",
                                           "response.failed"};

    if (name_len > 6 && memcmp(name + name_len - 6, ".delta", 6) == 0) {
        obs->output_bytes += usage_text_bytes(data, len, "\"delta\":");
        return;
    }
    if (usage_responses_is(name, name_len, data, len, "error")) {
        obs->provider_error = 1;
        return;
    }
    for (size_t k = 0; k < sizeof(terminal) / sizeof(terminal[0]); k++) {
        if (usage_responses_is(name, name_len, data, len, terminal[k])) {
            obs->done = 1;
            usage_take(obs, data, len, "response.usage", 1);
            return;
        }
    }
}

static void usage_observe_anthropic(gw_usage_observer_t *obs, const char *name, size_t name_len,
                                    const char *data, size_t len)
{
    if (usage_name_is(name, name_len, "content_block_delta")) {
        obs->output_bytes += usage_text_bytes(data, len, "\"text\":");
        obs->output_bytes += usage_text_bytes(data, len, "\"partial_json\":");
        obs->output_bytes += usage_text_bytes(data, len, "\"thinking\":");
    } else if (usage_name_is(name, name_len, "message_start")) {
        /* its output_tokens is a placeholder (often 1): keep the value, not the reported bit */
        uint32_t had_output = obs->usage.reported & GW_USAGE_OUTPUT;
        usage_take(obs, data, len, "message.usage", 0);
        obs->usage.reported = (obs->usage.reported & ~GW_USAGE_OUTPUT) | had_output;
    } else if (usage_name_is(name, name_len, "message_delta")) {
        usage_take(obs, data, len, "usage", 1); /* cumulative: fields replace, never add */
    } else if (usage_name_is(name, name_len, "message_stop")) {
        obs->done = 1;
    } else if (usage_name_is(name, name_len, "error")) {
        obs->provider_error = 1;
    }
}

void gw_usage_observe(gw_usage_observer_t *obs, const char *event_name, size_t name_len,
                      const char *data, size_t len)
{
    RB_ASSERT(obs != NULL && (data != NULL || len == 0) && (event_name != NULL || name_len == 0));
    obs->events++;
    switch (obs->route) {
    case GW_ROUTE_CHAT:
    case GW_ROUTE_COMPLETIONS:
        usage_observe_chat(obs, data, len);
        break;
    case GW_ROUTE_RESPONSES:
        usage_observe_responses(obs, event_name, name_len, data, len);
        break;
    case GW_ROUTE_MESSAGES:
        usage_observe_anthropic(obs, event_name, name_len, data, len);
        break;
    default: /* embeddings and count_tokens are never streamed */
        break;
    }
    RB_ASSERT(obs->output_bytes >= 0);
}

static int64_t usage_ceil_div(int64_t bytes, int chars_per_token)
{
    if (bytes <= 0)
        return 0;
    return bytes / chars_per_token + (bytes % chars_per_token != 0);
}

gw_usage_t gw_usage_estimate(int64_t input_bytes, int64_t output_bytes, int chars_per_token)
{
    gw_usage_t u = {0};

    if (chars_per_token <= 0)
        chars_per_token = GW_USAGE_CHARS_PER_TOKEN_DEFAULT;
    u.input_uncached = usage_ceil_div(input_bytes, chars_per_token);
    u.output = usage_ceil_div(output_bytes, chars_per_token);
    RB_ASSERT(u.input_uncached >= 0 && u.output >= 0);
    return u;
}

int gw_usage_fill_estimate(gw_usage_t *u, int64_t input_bytes, int64_t output_bytes,
                           int chars_per_token)
{
    gw_usage_t est = gw_usage_estimate(input_bytes, output_bytes, chars_per_token);
    int estimated = 0;

    RB_ASSERT(u != NULL);
    if (!(u->reported & GW_USAGE_INPUT_ANY)) {
        if (est.input_uncached > u->input_uncached)
            u->input_uncached = est.input_uncached;
        estimated = 1;
    }
    if (!(u->reported & GW_USAGE_OUTPUT)) {
        if (est.output > u->output)
            u->output = est.output;
        estimated = 1;
    }
    return estimated;
}
