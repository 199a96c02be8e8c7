/*
 * Request parsing and reply planning. Deterministic by design: the reply text is
 * "Mock reply to: <first 40 bytes of the last user message>" cut into word chunks, one token per
 * chunk; prompt tokens are ceil(text bytes / 4) plus a small per-message overhead, where text bytes
 * are counted on the JSON-escaped strings of the request.
 */
#include "tools/mock-provider/mock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/json.h"

static const char mock_big_pattern[] = "lorem ipsum dolor sit amet consectetur adipiscing elit ";

uint64_t mock_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;

    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void mock_call_init(mock_call_t *call, mock_route_t route)
{
    RB_ASSERT(call != NULL);
    *call = (mock_call_t){.route = route, .max_tokens = -1, .dimensions = MOCK_EMBED_DIM_DEFAULT};
    mock_behavior_init(&call->bhv);
    rb_buf_init(&call->input_hashes, (size_t)MOCK_EMBED_INPUTS_MAX * sizeof(uint64_t));
}

void mock_call_free(mock_call_t *call)
{
    RB_ASSERT(call != NULL);
    rb_buf_free(&call->input_hashes);
}

static void set_error(mock_error_t *err, int status, const char *type, const char *message,
                      const char *param, const char *code)
{
    *err = (mock_error_t){status, type, message, param, code};
}

/* Bytes of the (escaped) string v, 0 for anything else. */
static size_t str_bytes(const rb_json_t *doc, int v)
{
    size_t n = 0;

    if (rb_json_type(doc, v) != RB_JSON_STRING)
        return 0;
    rb_json_raw(doc, v, &n);
    return n;
}

/* A content value (string, or array of parts with "text"): adds its bytes to *bytes and returns
 * the first text string's token, or -1. */
static int content_text(const rb_json_t *doc, int content, uint64_t *bytes)
{
    int first = -1;

    if (rb_json_type(doc, content) == RB_JSON_STRING) {
        *bytes += str_bytes(doc, content);
        return content;
    }
    size_t n = rb_json_count(doc, content);
    for (size_t i = 0; rb_json_type(doc, content) == RB_JSON_ARRAY && i < n; i++) {
        int part = rb_json_index(doc, content, i);
        int text = rb_json_member(doc, part, "text");
        if (rb_json_type(doc, text) != RB_JSON_STRING)
            continue;
        *bytes += str_bytes(doc, text);
        if (first == -1)
            first = text;
    }
    return first;
}

/* Copies the start of string v into call->excerpt, cut at a UTF-8 character boundary. */
static void set_excerpt(mock_call_t *call, const rb_json_t *doc, int v)
{
    char *s = rb_json_strdup(doc, v);
    size_t n;

    if (s == NULL)
        return;
    n = strlen(s);
    if (n > MOCK_EXCERPT_BYTES_MAX) {
        n = MOCK_EXCERPT_BYTES_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) /* s[n] continues a character */
            n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--; /* no whitespace-only last chunk */
    memcpy(call->excerpt, s, n);
    call->excerpt[n] = '\0';
    call->excerpt_len = n;
    free(s);
}

/* messages[] of chat, Anthropic and Responses input items: counts text, finds the last user text.
 */
static void scan_messages(mock_call_t *call, const rb_json_t *doc, int msgs, uint64_t *bytes)
{
    size_t n = rb_json_count(doc, msgs);
    int last_user = -1;

    for (size_t i = 0; i < n; i++) {
        int msg = rb_json_index(doc, msgs, i);
        int text = content_text(doc, rb_json_member(doc, msg, "content"), bytes);
        if (text != -1 && rb_json_str_eq(doc, rb_json_member(doc, msg, "role"), "user"))
            last_user = text;
    }
    *bytes += (uint64_t)n * MOCK_TOKENS_PER_MESSAGE * 4;
    if (last_user != -1)
        set_excerpt(call, doc, last_user);
}

/* The model name, with an optional "+behaviour,list" suffix applied to call->bhv. */
static int parse_model(mock_call_t *call, const rb_json_t *doc, int root, mock_error_t *err)
{
    char name[MOCK_MODEL_FIELD_MAX];
    size_t n = 0;
    char *plus;

    if (rb_json_str(doc, rb_json_member(doc, root, "model"), name, sizeof(name), &n) != RB_OK ||
        n == 0) {
        if (call->route == MOCK_ROUTE_MESSAGES || call->route == MOCK_ROUTE_COUNT_TOKENS)
            set_error(err, 400, "invalid_request_error", "model: Field required", NULL, NULL);
        else
            set_error(err, 400, "invalid_request_error", "you must provide a model parameter", NULL,
                      NULL);
        return -1;
    }
    plus = memchr(name, '+', n);
    if (plus != NULL) {
        if (mock_behavior_parse(&call->bhv, plus + 1, n - (size_t)(plus - name) - 1) != RB_OK) {
            set_error(err, 400, "invalid_request_error", "mock: bad behaviour list in model",
                      "model", NULL);
            return -1;
        }
        n = (size_t)(plus - name);
    }
    if (n > MOCK_MODEL_LEN_MAX)
        n = MOCK_MODEL_LEN_MAX;
    memcpy(call->model, name, n);
    call->model[n] = '\0';
    return 0;
}

static int parse_max_tokens(mock_call_t *call, const rb_json_t *doc, int root, const char *key)
{
    int v = rb_json_member(doc, root, key);
    int64_t n;

    if (v == -1 || rb_json_type(doc, v) == RB_JSON_NULL)
        return 0;
    if (rb_json_int64(doc, v, &n) != 0 || n < 0)
        return -1;
    call->max_tokens = n;
    return 0;
}

/* The first tool of "tools" (OpenAI's {"type":"function","function":{"name"}} or Anthropic's
 * {"name"}), called unless tool_choice is "none" (OpenAI) or {"type":"none"} (Anthropic). */
static void parse_tools(mock_call_t *call, const rb_json_t *doc, int root)
{
    int first = rb_json_index(doc, rb_json_member(doc, root, "tools"), 0);
    int choice = rb_json_member(doc, root, "tool_choice");
    int name = rb_json_find(doc, first, "function.name");

    if (name == -1)
        name = rb_json_member(doc, first, "name");
    if (rb_json_str_eq(doc, choice, "none") ||
        rb_json_str_eq(doc, rb_json_member(doc, choice, "type"), "none"))
        return;
    if (rb_json_str(doc, name, call->tool, sizeof(call->tool), NULL) != RB_OK ||
        strlen(call->tool) == 0)
        call->tool[0] = '\0';
}

/* 1 when a reasoning effort (chat's reasoning_effort, Responses' reasoning.effort) asks the model
 * to reason: any string but "none". */
static int effort_reasons(const rb_json_t *doc, int v)
{
    return rb_json_type(doc, v) == RB_JSON_STRING && !rb_json_str_eq(doc, v, "none");
}

static int parse_chat(mock_call_t *call, const rb_json_t *doc, int root, mock_error_t *err)
{
    int msgs = rb_json_member(doc, root, "messages");
    uint64_t bytes = 0;

    if (rb_json_type(doc, msgs) != RB_JSON_ARRAY) {
        set_error(err, 400, "invalid_request_error", "Missing required parameter: 'messages'.",
                  "messages", "missing_required_parameter");
        return -1;
    }
    scan_messages(call, doc, msgs, &bytes);
    call->prompt_tokens = (bytes + 3) / 4 + MOCK_TOKENS_PRIMING;
    parse_tools(call, doc, root);
    call->thinking = effort_reasons(doc, rb_json_member(doc, root, "reasoning_effort"));
    if (parse_max_tokens(call, doc, root, "max_tokens") != 0 ||
        parse_max_tokens(call, doc, root, "max_completion_tokens") != 0) {
        set_error(err, 400, "invalid_request_error", "Invalid 'max_tokens': expected an integer.",
                  "max_tokens", "invalid_type");
        return -1;
    }
    return 0;
}

static int parse_completions(mock_call_t *call, const rb_json_t *doc, int root, mock_error_t *err)
{
    int prompt = rb_json_member(doc, root, "prompt");
    uint64_t bytes = 0;
    int text = content_text(doc, prompt, &bytes);

    for (size_t i = 0; rb_json_type(doc, prompt) == RB_JSON_ARRAY; i++) {
        int el = rb_json_index(doc, prompt, i);
        if (el == -1)
            break;
        bytes += str_bytes(doc, el);
        text = rb_json_type(doc, el) == RB_JSON_STRING ? el : text;
    }
    if (text != -1)
        set_excerpt(call, doc, text);
    call->prompt_tokens = bytes == 0 ? 1 : (bytes + 3) / 4;
    if (parse_max_tokens(call, doc, root, "max_tokens") != 0) {
        set_error(err, 400, "invalid_request_error", "Invalid 'max_tokens': expected an integer.",
                  "max_tokens", "invalid_type");
        return -1;
    }
    return 0;
}

static int parse_responses(mock_call_t *call, const rb_json_t *doc, int root, mock_error_t *err)
{
    int input = rb_json_member(doc, root, "input");
    uint64_t bytes = str_bytes(doc, rb_json_member(doc, root, "instructions"));

    if (rb_json_type(doc, input) == RB_JSON_STRING) {
        bytes += str_bytes(doc, input) + MOCK_TOKENS_PER_MESSAGE * 4;
        set_excerpt(call, doc, input);
    } else if (rb_json_type(doc, input) == RB_JSON_ARRAY) {
        scan_messages(call, doc, input, &bytes);
    } else {
        set_error(err, 400, "invalid_request_error", "Missing required parameter: 'input'.",
                  "input", "missing_required_parameter");
        return -1;
    }
    call->prompt_tokens = (bytes + 3) / 4 + MOCK_TOKENS_PRIMING;
    parse_tools(call, doc, root);
    call->thinking = effort_reasons(doc, rb_json_find(doc, root, "reasoning.effort"));
    call->reasoning_summary =
        call->thinking &&
        rb_json_type(doc, rb_json_find(doc, root, "reasoning.summary")) == RB_JSON_STRING;
    if (parse_max_tokens(call, doc, root, "max_output_tokens") != 0) {
        set_error(err, 400, "invalid_request_error",
                  "Invalid 'max_output_tokens': expected an integer.", "max_output_tokens",
                  "invalid_type");
        return -1;
    }
    return 0;
}

static int parse_anthropic(mock_call_t *call, const rb_json_t *doc, int root, mock_error_t *err)
{
    int msgs = rb_json_member(doc, root, "messages");
    uint64_t bytes = 0;

    if (rb_json_type(doc, msgs) != RB_JSON_ARRAY) {
        set_error(err, 400, "invalid_request_error", "messages: Field required", NULL, NULL);
        return -1;
    }
    content_text(doc, rb_json_member(doc, root, "system"), &bytes);
    scan_messages(call, doc, msgs, &bytes);
    call->prompt_tokens = (bytes + 3) / 4 + MOCK_TOKENS_PRIMING;
    call->thinking =
        rb_json_str_eq(doc, rb_json_find(doc, root, "thinking.type"), "enabled") ? 1 : 0;
    parse_tools(call, doc, root);
    if (call->route == MOCK_ROUTE_COUNT_TOKENS)
        return 0;
    if (rb_json_member(doc, root, "max_tokens") == -1) {
        set_error(err, 400, "invalid_request_error", "max_tokens: Field required", NULL, NULL);
        return -1;
    }
    if (parse_max_tokens(call, doc, root, "max_tokens") != 0) {
        set_error(err, 400, "invalid_request_error", "max_tokens: Input should be a valid integer",
                  NULL, NULL);
        return -1;
    }
    return 0;
}

/* One embedding input: a string or an array of token ids. Returns its token count, 0 if invalid. */
static uint64_t embedding_input(mock_call_t *call, const rb_json_t *doc, int v)
{
    size_t n = 0;
    const char *raw;
    uint64_t h;

    if (rb_json_type(doc, v) == RB_JSON_STRING) {
        raw = rb_json_raw(doc, v, &n);
        h = mock_hash(MOCK_FNV_INIT, raw, n);
        n = n == 0 ? 1 : (n + 3) / 4;
    } else if (rb_json_type(doc, v) == RB_JSON_ARRAY && rb_json_count(doc, v) > 0) {
        raw = rb_json_raw(doc, v, &n);
        h = mock_hash(MOCK_FNV_INIT, raw, n);
        n = rb_json_count(doc, v);
    } else {
        return 0;
    }
    if (rb_buf_append(&call->input_hashes, &h, sizeof(h)) != 0)
        return 0;
    return n;
}

static int parse_embeddings(mock_call_t *call, const rb_json_t *doc, int root, mock_error_t *err)
{
    int input = rb_json_member(doc, root, "input");
    int first = rb_json_index(doc, input, 0);
    int64_t dims = MOCK_EMBED_DIM_DEFAULT;
    uint64_t tokens = 0, t;

    /* A string, an array of token ids, or an array of those. */
    if (rb_json_type(doc, input) == RB_JSON_STRING || rb_json_type(doc, first) == RB_JSON_NUMBER) {
        tokens = embedding_input(call, doc, input);
    } else {
        for (size_t i = 0; (t = embedding_input(call, doc, rb_json_index(doc, input, i))) > 0; i++)
            tokens += t;
        if (rb_json_count(doc, input) * sizeof(uint64_t) != call->input_hashes.len)
            tokens = 0;
    }
    if (tokens == 0) {
        set_error(err, 400, "invalid_request_error",
                  "'$.input' is invalid. Please check the API reference: "
                  "https://platform.openai.com/docs/api-reference.",
                  NULL, NULL);
        return -1;
    }
    rb_json_get_int64(doc, root, "dimensions", &dims);
    if (dims < 1 || dims > MOCK_EMBED_DIM_MAX) {
        set_error(err, 400, "invalid_request_error", "Invalid 'dimensions': out of range.",
                  "dimensions", "invalid_value");
        return -1;
    }
    call->dimensions = (uint32_t)dims;
    call->base64 = rb_json_str_eq(doc, rb_json_member(doc, root, "encoding_format"), "base64");
    call->prompt_tokens = tokens;
    return 0;
}

static int parse_route(mock_call_t *call, const rb_json_t *doc, int root, mock_error_t *err)
{
    switch (call->route) {
    case MOCK_ROUTE_CHAT:
        return parse_chat(call, doc, root, err);
    case MOCK_ROUTE_COMPLETIONS:
        return parse_completions(call, doc, root, err);
    case MOCK_ROUTE_RESPONSES:
        return parse_responses(call, doc, root, err);
    case MOCK_ROUTE_EMBEDDINGS:
        return parse_embeddings(call, doc, root, err);
    case MOCK_ROUTE_MESSAGES:
    case MOCK_ROUTE_COUNT_TOKENS:
        return parse_anthropic(call, doc, root, err);
    }
    RB_UNREACHABLE();
}

int mock_call_parse(mock_call_t *call, const char *body, size_t len, mock_error_t *err)
{
    rb_json_t *doc = NULL;
    int ret = -1, flag = 0;

    RB_ASSERT(call != NULL && err != NULL);
    call->id_hash = mock_hash(MOCK_FNV_INIT, body, len);
    if (rb_json_parse(body, len, NULL, &doc) != RB_OK || rb_json_type(doc, 0) != RB_JSON_OBJECT) {
        if (call->route == MOCK_ROUTE_MESSAGES || call->route == MOCK_ROUTE_COUNT_TOKENS)
            set_error(err, 400, "invalid_request_error",
                      "There was an error parsing the body of your request. Please verify your "
                      "JSON is correctly formatted.",
                      NULL, NULL);
        else
            set_error(err, 400, "invalid_request_error",
                      "We could not parse the JSON body of your request. (HINT: This likely means "
                      "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                      "payload, but what was sent was not valid JSON. If you have trouble figuring "
                      "out how to fix this, please contact us through our help center at "
                      "help.openai.com.)",
                      NULL, NULL);
        goto Exit;
    }
    if (parse_model(call, doc, 0, err) != 0 || parse_route(call, doc, 0, err) != 0)
        goto Exit;
    if (rb_json_get_bool(doc, 0, "stream", &flag) == 0)
        call->stream = flag;
    flag = 0;
    if (rb_json_get_bool(doc, 0, "stream_options.include_usage", &flag) == 0)
        call->include_usage = call->stream && flag;
    if (call->bhv.force_stream &&
        (call->route == MOCK_ROUTE_CHAT || call->route == MOCK_ROUTE_COMPLETIONS)) {
        call->stream = 1; /* a misbehaving upstream: an event stream nobody asked for */
        call->include_usage = 1;
    }
    if (call->route == MOCK_ROUTE_EMBEDDINGS || call->route == MOCK_ROUTE_COUNT_TOKENS)
        call->stream = 0;
    ret = 0;
Exit:
    rb_json_free(doc);
    return ret;
}

/* ---- planning ---- */

static void pieces_init(mock_pieces_t *p)
{
    rb_buf_init(&p->text, 0);
    rb_buf_init(&p->ends, 0);
    p->n = 0;
}

static void pieces_cut(mock_pieces_t *p)
{
    size_t end = p->text.len;

    rb_buf_append(&p->ends, &end, sizeof(end));
    p->n++;
}

void mock_pieces_get(const mock_pieces_t *p, size_t i, const char **s, size_t *n)
{
    const size_t *ends = (const size_t *)(void *)p->ends.base;
    size_t start = i == 0 ? 0 : ends[i - 1];

    RB_ASSERT(i < p->n);
    RB_ASSERT(ends[i] >= start && ends[i] <= p->text.len);
    *s = p->text.base + start;
    *n = ends[i] - start;
}

/* Cuts prefix+excerpt into word chunks (a chunk starts at a space that ends a word), repeated
 * cyclically until `want` chunks when want > 0, stopping at `cap` chunks (-1 = none). */
static int pieces_words(mock_pieces_t *p, const char *prefix, const char *excerpt, uint32_t want,
                        int64_t cap)
{
    int truncated = 0;
    char base[64 + MOCK_EXCERPT_BYTES_MAX];
    size_t words[sizeof(base) + 1], nw = 0, total;
    int len = snprintf(base, sizeof(base), "%s%s", prefix, excerpt);

    RB_ASSERT(len > 0 && (size_t)len < sizeof(base));
    for (int i = 1; i < len; i++)
        if (base[i] == ' ' && base[i - 1] != ' ')
            words[nw++] = (size_t)i;
    words[nw++] = (size_t)len;
    total = want > 0 ? want : nw;
    if (cap >= 0 && (uint64_t)cap < total) {
        total = (size_t)cap;
        truncated = 1;
    }
    for (size_t k = 0; k < total; k++) {
        size_t w = k % nw, start = w == 0 ? 0 : words[w - 1];
        if (k >= nw && w == 0)
            rb_buf_append(&p->text, " ", 1);
        rb_buf_append(&p->text, base + start, words[w] - start);
        pieces_cut(p);
    }
    return truncated;
}

/* A tool call's arguments, {"query":"<excerpt>"}, in pieces of MOCK_TOOL_ARGS_PIECE bytes (cut
 * anywhere but inside a UTF-8 character, as the providers' argument deltas are). */
static void pieces_tool_args(mock_pieces_t *p, const char *excerpt)
{
    rb_buf_t args;
    size_t at = 0;

    rb_buf_init(&args, 0);
    rb_buf_puts(&args, "{\"query\":\"");
    rb_json_escape(&args, excerpt, strlen(excerpt));
    rb_buf_puts(&args, "\"}");
    while (at < args.len) {
        size_t n = args.len - at < MOCK_TOOL_ARGS_PIECE ? args.len - at : MOCK_TOOL_ARGS_PIECE;
        while (at + n < args.len && ((unsigned char)args.base[at + n] & 0xC0) == 0x80)
            n++; /* args[at + n] continues a character */
        rb_buf_append(&p->text, args.base + at, n);
        pieces_cut(p);
        at += n;
    }
    rb_buf_free(&args);
}

/* big=: `bytes` of filler text in MOCK_BIG_CHUNK_BYTES chunks. */
static void pieces_big(mock_pieces_t *p, uint64_t bytes)
{
    const size_t plen = sizeof(mock_big_pattern) - 1;

    while (p->text.len < bytes) {
        size_t room = (size_t)bytes - p->text.len, n = room < plen ? room : plen;
        rb_buf_append(&p->text, mock_big_pattern, n);
        if (p->text.len % MOCK_BIG_CHUNK_BYTES < plen || p->text.len == bytes)
            pieces_cut(p);
    }
}

void mock_plan_build(const mock_call_t *call, mock_plan_t *plan)
{
    const mock_usage_override_t *o = &call->bhv.usage;
    int64_t cap = call->max_tokens, thinking_tokens = 0, text_tokens;

    RB_ASSERT(call != NULL && plan != NULL);
    *plan = (mock_plan_t){0};
    pieces_init(&plan->text);
    pieces_init(&plan->thinking);
    if (call->thinking) {
        pieces_words(&plan->thinking, "Mock thinking about: ", call->excerpt, 0, -1);
        thinking_tokens = (int64_t)plan->thinking.n;
        cap = cap < 0 ? cap : (cap > thinking_tokens ? cap - thinking_tokens : 0);
    }
    if (call->tool[0] != '\0' && call->bhv.big_bytes == 0) {
        pieces_tool_args(&plan->text, call->excerpt);
        plan->tool_call = 1;
        text_tokens = (int64_t)(plan->text.text.len + 3) / 4;
    } else if (call->bhv.big_bytes > 0) {
        uint64_t bytes = call->bhv.big_bytes;
        if (cap >= 0 && (uint64_t)cap * 4 < bytes) {
            bytes = (uint64_t)cap * 4;
            plan->truncated = 1;
        }
        pieces_big(&plan->text, bytes);
        text_tokens = (int64_t)((bytes + 3) / 4);
    } else {
        plan->truncated =
            pieces_words(&plan->text, "Mock reply to: ", call->excerpt, call->bhv.chunks, cap);
        text_tokens = (int64_t)plan->text.n;
    }
    plan->prompt = o->prompt >= 0 ? o->prompt : (int64_t)call->prompt_tokens;
    plan->cached = o->cached >= 0 ? o->cached : 0;
    plan->reasoning = o->reasoning >= 0 ? o->reasoning : thinking_tokens;
    plan->completion = o->completion >= 0
                           ? o->completion
                           : text_tokens + thinking_tokens + (o->reasoning > 0 ? o->reasoning : 0);
    plan->cache_write_5m = o->cache_write_5m >= 0 ? o->cache_write_5m : 0;
    plan->cache_write_1h = o->cache_write_1h >= 0 ? o->cache_write_1h : 0;
}

void mock_plan_free(mock_plan_t *plan)
{
    RB_ASSERT(plan != NULL);
    rb_buf_free(&plan->text.text);
    rb_buf_free(&plan->text.ends);
    rb_buf_free(&plan->thinking.text);
    rb_buf_free(&plan->thinking.ends);
}

/* ---- output helpers ---- */

void mock_out_html_error(mock_out_t *out)
{
    char page[512];
    int n =
        snprintf(page, sizeof(page),
                 "<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d "
                 "%s</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
                 out->status, out->reason, out->status, out->reason);

    RB_ASSERT(out->status >= 400 && n > 0 && (size_t)n < sizeof(page));
    out->content_type = "text/html";
    out->body.len = 0;
    rb_buf_append(&out->body, page, (size_t)n);
}

void mock_out_reset(mock_out_t *out)
{
    RB_ASSERT(out != NULL);
    out->status = 200;
    out->reason = "OK";
    out->content_type = "application/json";
    out->n_headers = 0;
    out->body.len = 0;
    out->body.overflow = 0;
    out->ev_ends.len = 0;
    out->stream = 0;
    out->reset = 0;
    out->slow_ms = 0;
    out->ttfb_ms = 0;
    out->pad_headers = 0;
    out->trailing_ms = 0;
}

void mock_out_free(mock_out_t *out)
{
    RB_ASSERT(out != NULL);
    rb_buf_free(&out->body);
    rb_buf_free(&out->ev_ends);
}

void mock_out_header(mock_out_t *out, const char *name, const char *fmt, ...)
{
    va_list ap;

    RB_ASSERT(out->n_headers < MOCK_HEADERS_MAX);
    mock_header_t *h = &out->headers[out->n_headers++];
    h->name = name;
    va_start(ap, fmt);
    vsnprintf(h->value, sizeof(h->value), fmt, ap);
    va_end(ap);
}

void mock_out_event_end(mock_out_t *out)
{
    size_t end = out->body.len;

    RB_ASSERT(out->ev_ends.len % sizeof(size_t) == 0);
    rb_buf_append(&out->ev_ends, &end, sizeof(end));
}

void mock_out_split(mock_out_t *out, uint32_t n)
{
    size_t n_ev = out->ev_ends.len / sizeof(size_t), end = out->body.len;

    RB_ASSERT(n > 0);
    if (n_ev > 0)
        memcpy(&end, out->ev_ends.base + (n_ev - 1) * sizeof(size_t), sizeof(end));
    out->ev_ends.len = 0;
    for (size_t at = 0; at < end;) {
        at = end - at > n ? at + n : end;
        rb_buf_append(&out->ev_ends, &at, sizeof(at));
    }
}
