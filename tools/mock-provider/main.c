/*
 * mock-provider: an h2o server that imitates the OpenAI and Anthropic HTTP APIs for tests and
 * benchmarks. N worker threads, each with its own event loop and SO_REUSEPORT listener; the only
 * shared state is the immutable h2o configuration and the request recorder (mutex inside).
 *
 * Scripted behaviour (one syntax, two carriers; the model suffix is applied after the header):
 *   header  X-Mock-Behavior: slow=50,error-mid
 *   model   "gpt-4o-mini+slow=50,error-mid"   (the reply echoes the model without the suffix)
 * Items: see usage() below. X-Mock-Fixed-Time: 1 (or the item fixed-time) makes `created` fixed
 * and ids a pure function of the request body, for golden transcripts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>
#include <h2o/socket/evloop.h>

#include "common/json.h"
#include "tools/mock-provider/mock.h"

#if H2O_USE_LIBUV
#error "build against libh2o-evloop with -DH2O_USE_LIBUV=0"
#endif

#define MOCK_THREADS_DEFAULT 2
#define MOCK_THREADS_MAX     64
#define MOCK_RECORD_DEFAULT  1000
#define MOCK_RECORD_MAX      1000000
#define MOCK_ENTITY_MAX      (16u << 20) /* request body limit (h2o answers 413 past it) */
#define MOCK_TIMEOUTS_MAX    32          /* distinct delay durations per worker */
#define MOCK_SCRATCH_KEEP    (1u << 20)  /* scratch buffers above this are freed after use */

typedef struct st_mock_server_t {
    h2o_globalconf_t config;
    mock_recorder_t recorder;
    struct sockaddr_in addr;
    unsigned n_threads;
    int fds[MOCK_THREADS_MAX];
} mock_server_t;

/* Per-thread state; touched only by its own thread. */
typedef struct st_mock_worker_t {
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    mock_server_t *srv;
    pthread_t thread;
    unsigned index;
    int fd;
    uint64_t counter;                          /* requests seen, mixed into ids */
    mock_out_t out;                            /* scratch: the answer being rendered */
    rb_buf_t rec;                              /* scratch: the recorder entry */
    h2o_timeout_t timeouts[MOCK_TIMEOUTS_MAX]; /* one per distinct delay */
    size_t n_timeouts;
} mock_worker_t;

typedef struct st_mock_handler_t {
    h2o_handler_t super;
    mock_server_t *srv;
} mock_handler_t;

/* A response being sent: all bytes are in req->pool; events go out one by one under slow=. */
typedef struct st_mock_stream_t {
    h2o_generator_t super;
    h2o_req_t *req;
    mock_worker_t *worker;
    h2o_timeout_entry_t timer;
    const char *body;
    const size_t *ends; /* end offset of each event */
    size_t n_ev, next_ev;
    uint32_t slow_ms;
    uint32_t trailing_ms; /* trailing= */
    int reset;
    int stopped;
} mock_stream_t;

static void trailing_start(mock_worker_t *w, h2o_req_t *req, uint32_t ms);

static void usage(FILE *f)
{
    fputs(
        "usage: mock-provider [--listen 127.0.0.1:PORT] [--threads N] [--record N]\n"
        "\n"
        "Imitates the OpenAI and Anthropic HTTP APIs for tests and benchmarks.\n"
        "  --listen HOST:PORT  IPv4 address to listen on (default 127.0.0.1:8089)\n"
        "  --threads N         worker threads (default 2)\n"
        "  --record N          requests kept for GET /mock/requests (default 1000; 0 = off)\n"
        "\n"
        "Routes: POST /v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings,\n"
        "        /v1/messages, /v1/messages/count_tokens; GET /v1/models;\n"
        "        GET /mock/healthz, GET|DELETE /mock/requests.\n"
        "OpenAI routes need 'Authorization: Bearer <key>'; Anthropic routes need 'x-api-key' and\n"
        "'anthropic-version'. Keys starting with sk-bad / sk-ant-bad are rejected as invalid.\n"
        "A chat, Responses or Anthropic request that offers tools (tool_choice not none) gets a\n"
        "call of the first one, its arguments {\"query\": <start of the last user message>}\n"
        "streamed in small deltas. A reasoning effort (chat reasoning_effort, Responses\n"
        "reasoning.effort; not \"none\") or Anthropic thinking makes the model reason: reasoning\n"
        "tokens in the usage, a Responses reasoning item first (its summary streamed when\n"
        "reasoning.summary is set), an Anthropic thinking block.\n"
        "\n"
        "Scripted behaviour: header 'X-Mock-Behavior: a,b,...' or a model suffix 'model+a,b'.\n"
        "  slow=MS        delay between streamed events (Anthropic adds a ping every second)\n"
        "  ttfb=MS        delay before the response headers\n"
        "  error-mid      after a few chunks, the provider's mid-stream error event (streams;\n"
        "                 Responses: response.failed)\n"
        "  error-event    Responses streams: after a few chunks an `error` event, and no\n"
        "                 terminal event\n"
        "  reset          after a few chunks, close the connection without a terminal chunk\n"
        "                 (non-streamed: after half the body)\n"
        "  status=CODE    answer with the provider's error (429 adds Retry-After and rate-limit\n"
        "                 headers; retry-after=S sets its value)\n"
        "  html           with status=: the error as a CDN's HTML page (text/html), as a\n"
        "                 provider's edge answers a 502 or 504\n"
        "  no-usage       no usage anywhere in the answer\n"
        "  usage=prompt:N,cached:N,completion:N,reasoning:N,cache_write_5m:N,cache_write_1h:N\n"
        "                 force usage numbers (Anthropic: prompt = uncached input_tokens,\n"
        "                 cached = cache_read_input_tokens)\n"
        "  chunks=N       N content chunks        big=BYTES  a reply of BYTES bytes\n"
        "  fixed-time     same as header 'X-Mock-Fixed-Time: 1': fixed `created`, ids from the\n"
        "                 request body only\n"
        "  split=BYTES    send the body in pieces of BYTES, 1 ms apart (slow= sets the gap):\n"
        "                 events and UTF-8 characters cut anywhere, as TLS records and proxies\n"
        "                 deliver real streams\n"
        "Misbehaving upstreams (for the gateway's defences; no real provider does these):\n"
        "  pad-headers=N  N more x-ratelimit-pad-I headers of 1000 bytes each (N <= 64)\n"
        "  force-stream   chat and completions answer as a stream, with usage, even to\n"
        "                 \"stream\": false\n"
        "  trailing=MS    MS after a whole answer, a second HTTP response nobody\n"
        "                 asked for on the same connection\n"
        "  output-only-usage  chat: the usage states completion_tokens only (some\n"
        "                 OpenAI-compatible servers)\n",
        f);
}

/* ---- timers ---- */

/* The worker's h2o_timeout_t of `ms` (h2o 2.2 timeouts have a fixed duration each). Past
 * MOCK_TIMEOUTS_MAX distinct durations the closest existing one is used. */
static h2o_timeout_t *worker_timeout(mock_worker_t *w, uint32_t ms)
{
    size_t best = 0;

    for (size_t i = 0; i < w->n_timeouts; i++) {
        if (w->timeouts[i].timeout == ms)
            return &w->timeouts[i];
        uint64_t d =
            w->timeouts[i].timeout > ms ? w->timeouts[i].timeout - ms : ms - w->timeouts[i].timeout;
        uint64_t bd = w->timeouts[best].timeout > ms ? w->timeouts[best].timeout - ms
                                                     : ms - w->timeouts[best].timeout;
        if (d < bd)
            best = i;
    }
    if (w->n_timeouts < MOCK_TIMEOUTS_MAX) {
        h2o_timeout_init(w->ctx.loop, &w->timeouts[w->n_timeouts], ms);
        return &w->timeouts[w->n_timeouts++];
    }
    return &w->timeouts[best];
}

/* ---- sending ---- */

/* The file descriptor of an evloop socket. h2o 2.2 has no accessor, but every h2o version lays out
 * struct st_h2o_evloop_socket_t as {h2o_socket_t super; int fd; ...}; the peer address is
 * compared to make sure the layout assumption holds, else -1. */
typedef struct st_mock_evloop_socket_head_t {
    h2o_socket_t super;
    int fd;
} mock_evloop_socket_head_t;

static int socket_fd(h2o_socket_t *sock)
{
    struct sockaddr_storage ours, kernels;
    socklen_t len, klen = sizeof(kernels);
    int fd;

    if (sock == NULL)
        return -1;
    fd = ((mock_evloop_socket_head_t *)sock)->fd;
    len = h2o_socket_getpeername(sock, (struct sockaddr *)&ours);
    if (len == 0 || fd < 0 || getpeername(fd, (struct sockaddr *)&kernels, &klen) != 0 ||
        klen != len || memcmp(&ours, &kernels, len) != 0)
        return -1;
    return fd;
}

/* `reset`: the upstream dies mid-stream. The connection gets a FIN at once (SO_LINGER 0 turns
 * h2o's later close into an RST), so the client sees the body end without its terminal chunk.
 * H2O_SEND_STATE_ERROR then makes h2o drop the connection (on its own it would write a
 * deliberately broken chunk, the fallback when the fd cannot be found). */
static void stream_abort(mock_stream_t *s)
{
    h2o_conn_t *conn = s->req->conn;
    int fd =
        socket_fd(conn->callbacks->get_socket != NULL ? conn->callbacks->get_socket(conn) : NULL);

    if (fd != -1) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        shutdown(fd, SHUT_RDWR);
    }
    h2o_send(s->req, NULL, 0, H2O_SEND_STATE_ERROR);
}

/* Sends the next event or split= piece (slow=) or everything left; after the last one, finishes or
 * aborts. */
static void stream_send(mock_stream_t *s)
{
    size_t start, stop;
    h2o_send_state_t state;

    RB_ASSERT(!s->stopped);
    if (s->next_ev == s->n_ev) {
        RB_ASSERT(s->reset);
        stream_abort(s);
        return;
    }
    start = s->next_ev == 0 ? 0 : s->ends[s->next_ev - 1];
    s->next_ev = s->slow_ms > 0 ? s->next_ev + 1 : s->n_ev;
    stop = s->ends[s->next_ev - 1];
    state = s->next_ev == s->n_ev && !s->reset ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS;
    if (state == H2O_SEND_STATE_FINAL && s->trailing_ms > 0)
        trailing_start(s->worker, s->req, s->trailing_ms);
    h2o_iovec_t iov = h2o_iovec_init(s->body + start, stop - start);
    h2o_send(s->req, &iov, 1, state);
}

static void on_stream_timer(h2o_timeout_entry_t *entry)
{
    mock_stream_t *s = H2O_STRUCT_FROM_MEMBER(mock_stream_t, timer, entry);

    stream_send(s);
}

/* h2o: the previous h2o_send has been written. */
static void stream_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    mock_stream_t *s = (mock_stream_t *)gen;

    RB_ASSERT(s->req == req);
    if (s->slow_ms > 0 && s->next_ev < s->n_ev)
        h2o_timeout_link(s->worker->ctx.loop, worker_timeout(s->worker, s->slow_ms), &s->timer);
    else
        stream_send(s);
}

/* h2o: the client went away. */
static void stream_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    mock_stream_t *s = (mock_stream_t *)gen;

    s->stopped = 1;
    if (h2o_timeout_is_linked(&s->timer))
        h2o_timeout_unlink(&s->timer);
}

static void stream_dispose(void *p)
{
    mock_stream_t *s = p;

    if (h2o_timeout_is_linked(&s->timer))
        h2o_timeout_unlink(&s->timer);
}

static void add_headers(h2o_req_t *req, const mock_out_t *out)
{
    char *pad = NULL;

    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, out->content_type,
                   strlen(out->content_type));
    for (size_t i = 0; i < out->n_headers; i++) {
        const mock_header_t *h = &out->headers[i];
        h2o_iovec_t v = h2o_strdup(&req->pool, h->value, strlen(h->value));
        h2o_add_header_by_str(&req->pool, &req->res.headers, h->name, strlen(h->name), 1, NULL,
                              v.base, v.len);
    }
    if (out->pad_headers > 0) {
        pad = h2o_mem_alloc_pool(&req->pool, MOCK_PAD_HEADER_BYTES);
        memset(pad, 'p', MOCK_PAD_HEADER_BYTES);
    }
    for (uint32_t i = 0; i < out->pad_headers; i++) {
        h2o_iovec_t name = h2o_strdup(&req->pool, "x-ratelimit-pad-00", 18);
        name.base[16] = (char)('0' + i / 10 % 10);
        name.base[17] = (char)('0' + i % 10);
        h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 0, NULL, pad,
                              MOCK_PAD_HEADER_BYTES);
    }
}

/* trailing=: bytes written straight to the connection's descriptor after the answer, while the
 * client holds the connection idle. Not in req->pool, which is gone by then. */
typedef struct st_mock_trailing_t {
    h2o_timeout_entry_t timer;
    int fd;
    struct sockaddr_storage peer; /* the connection's: by then, fd may be another's */
    socklen_t peer_len;
} mock_trailing_t;

static const char MOCK_TRAILING_RESPONSE[] =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    "content-length: 29\r\n\r\n{\"id\":\"unsolicited-response\"}";

static void on_trailing_timer(h2o_timeout_entry_t *entry)
{
    mock_trailing_t *t = H2O_STRUCT_FROM_MEMBER(mock_trailing_t, timer, entry);
    struct sockaddr_storage now;
    socklen_t len = sizeof(now);

    if (getpeername(t->fd, (struct sockaddr *)&now, &len) == 0 && len == t->peer_len &&
        memcmp(&now, &t->peer, len) == 0 &&
        write(t->fd, MOCK_TRAILING_RESPONSE, sizeof(MOCK_TRAILING_RESPONSE) - 1) < 0)
        fprintf(stderr, "mock-provider: trailing bytes not written: %s\n", strerror(errno));
    free(t);
}

static void trailing_start(mock_worker_t *w, h2o_req_t *req, uint32_t ms)
{
    h2o_conn_t *conn = req->conn;
    int fd =
        socket_fd(conn->callbacks->get_socket != NULL ? conn->callbacks->get_socket(conn) : NULL);
    mock_trailing_t *t;

    if (fd == -1)
        return;
    t = calloc(1, sizeof(*t));
    RB_ASSERT(t != NULL);
    t->fd = fd;
    t->timer.cb = on_trailing_timer;
    t->peer_len = sizeof(t->peer);
    if (getpeername(fd, (struct sockaddr *)&t->peer, &t->peer_len) != 0) {
        free(t);
        return;
    }
    h2o_timeout_link(w->ctx.loop, worker_timeout(w, ms), &t->timer);
}

/* Sends the rendered answer in w->out: inline when it is complete and undelayed, else through a
 * mock_stream_t generator. The bytes are copied into req->pool. */
static void send_out(mock_worker_t *w, h2o_req_t *req)
{
    mock_out_t *out = &w->out;
    size_t n_ev = out->ev_ends.len / sizeof(size_t);

    req->res.status = out->status;
    req->res.reason = out->reason;
    add_headers(req, out);
    if (!out->stream)
        req->res.content_length = out->body.len;
    if (out->ev_ends.len == 0 && out->ttfb_ms == 0) { /* neither a stream, split, nor reset */
        if (out->trailing_ms > 0)
            trailing_start(w, req, out->trailing_ms);
        h2o_send_inline(req, out->body.base, out->body.len);
        return;
    }
    mock_stream_t *s = h2o_mem_alloc_shared(&req->pool, sizeof(*s), stream_dispose);
    *s = (mock_stream_t){.super = {stream_proceed, stream_stop},
                         .req = req,
                         .worker = w,
                         .timer = {.cb = on_stream_timer},
                         .slow_ms = out->slow_ms,
                         .trailing_ms = out->trailing_ms,
                         .reset = out->reset};
    s->body = h2o_strdup(&req->pool, out->body.base, out->body.len).base;
    if (n_ev == 0) { /* a plain body delayed by ttfb= */
        size_t *end = h2o_mem_alloc_pool(&req->pool, sizeof(*end));
        *end = out->body.len;
        s->ends = end;
        n_ev = 1;
    } else {
        size_t *ends = h2o_mem_alloc_pool(&req->pool, out->ev_ends.len);
        memcpy(ends, out->ev_ends.base, out->ev_ends.len);
        s->ends = ends;
    }
    s->n_ev = n_ev;
    h2o_start_response(req, &s->super);
    if (out->ttfb_ms > 0)
        h2o_timeout_link(w->ctx.loop, worker_timeout(w, out->ttfb_ms), &s->timer);
    else
        stream_send(s);
}

/* ---- recording ---- */

/* Writes the request headers as one JSON object; repeated names are joined with ", ". */
static void headers_json(rb_jw_t *jw, h2o_req_t *req)
{
    const h2o_headers_t *hs = &req->headers;

    rb_jw_obj_begin(jw);
    if (req->authority.len > 0) { /* h2o keeps Host (or :authority) out of req->headers */
        rb_jw_key(jw, "host");
        rb_jw_strn(jw, req->authority.base, req->authority.len);
    }
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_iovec_t *name = hs->entries[i].name;
        size_t j = 0;
        while (j < i && !h2o_memis(hs->entries[j].name->base, hs->entries[j].name->len, name->base,
                                   name->len))
            j++;
        if (j < i)
            continue; /* printed with its first occurrence */
        rb_jw_key(jw, h2o_strdup(&req->pool, name->base, name->len).base);
        h2o_iovec_t v = hs->entries[i].value;
        for (j = i + 1; j < hs->size; j++) {
            if (!h2o_memis(hs->entries[j].name->base, hs->entries[j].name->len, name->base,
                           name->len))
                continue;
            h2o_iovec_t more = hs->entries[j].value;
            v = h2o_concat(&req->pool, v, h2o_iovec_init(H2O_STRLIT(", ")), more);
        }
        rb_jw_strn(jw, v.base, v.len);
    }
    rb_jw_obj_end(jw);
}

static void record_request(mock_worker_t *w, h2o_req_t *req, const char *model)
{
    rb_buf_t *b = &w->rec;
    rb_jw_t jw;

    if (w->srv->recorder.cap == 0)
        return;
    b->len = 0;
    rb_jw_init(&jw, b);
    rb_jw_obj_begin(&jw);
    rb_jw_key(&jw, "method");
    rb_jw_strn(&jw, req->method.base, req->method.len);
    rb_jw_key(&jw, "path");
    rb_jw_strn(&jw, req->path.base, req->path.len);
    rb_jw_key(&jw, "headers");
    headers_json(&jw, req);
    rb_jw_key(&jw, "body_bytes");
    rb_jw_uint64(&jw, req->entity.base != NULL ? req->entity.len : 0);
    rb_jw_key(&jw, "model");
    if (model != NULL && model[0] != '\0')
        rb_jw_str(&jw, model);
    else
        rb_jw_null(&jw);
    rb_jw_obj_end(&jw);
    RB_ASSERT(b->len >= 2 && b->base[0] == '{');
    mock_recorder_add(&w->srv->recorder, b->base + 1, b->len - 2); /* members without braces */
}

/* ---- API requests ---- */

static h2o_iovec_t find_header(h2o_req_t *req, const char *name, size_t len)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, len, -1);

    return i < 0 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

static int has_prefix(h2o_iovec_t v, const char *prefix)
{
    size_t n = strlen(prefix);

    return v.len >= n && memcmp(v.base, prefix, n) == 0;
}

/* Authentication as the real APIs check it; returns 0, or -1 with *err set. */
static int check_auth(h2o_req_t *req, int anthropic, mock_error_t *err)
{
    if (anthropic) {
        h2o_iovec_t key = find_header(req, H2O_STRLIT("x-api-key"));
        if (key.base == NULL || key.len == 0) {
            *err = (mock_error_t){401, "authentication_error", "x-api-key header is required", NULL,
                                  NULL};
            return -1;
        }
        if (has_prefix(key, "sk-ant-bad")) {
            *err = (mock_error_t){401, "authentication_error", "invalid x-api-key", NULL, NULL};
            return -1;
        }
        if (find_header(req, H2O_STRLIT("anthropic-version")).base == NULL) {
            *err = (mock_error_t){400, "invalid_request_error",
                                  "anthropic-version: header is required", NULL, NULL};
            return -1;
        }
        return 0;
    }
    h2o_iovec_t auth = find_header(req, H2O_STRLIT("authorization"));
    if (!has_prefix(auth, "Bearer ") || auth.len == strlen("Bearer ")) {
        *err = (mock_error_t){
            401, "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
            "field (with blank username) if you're accessing the API from your browser and are "
            "prompted for a username and password. You can obtain an API key from "
            "https://platform.openai.com/account/api-keys.",
            NULL, NULL};
        return -1;
    }
    if (has_prefix(h2o_iovec_init(auth.base + 7, auth.len - 7), "sk-bad")) {
        /* OpenAI quotes the key: its first 8 and last 4 characters, stars between */
        static __thread char msg[MOCK_MODEL_LEN_MAX];
        h2o_iovec_t key = h2o_iovec_init(auth.base + 7, auth.len - 7);
        size_t stars = key.len > 12 ? key.len - 12 : 0;
        snprintf(msg, sizeof(msg),
                 "Incorrect API key provided: %.*s%.*s%.*s. You can find your API key at "
                 "https://platform.openai.com/account/api-keys.",
                 (int)(key.len < 8 ? key.len : 8), key.base, (int)(stars > 64 ? 64 : stars),
                 "****************************************************************",
                 key.len > 12 ? 4 : 0, key.base + key.len - (key.len > 12 ? 4 : 0));
        *err = (mock_error_t){401, "invalid_request_error", msg, NULL, "invalid_api_key"};
        return -1;
    }
    return 0;
}

/* X-Mock-Behavior and X-Mock-Fixed-Time; returns 0, or -1 with *err set. */
static int read_behavior_headers(h2o_req_t *req, mock_call_t *call, mock_error_t *err)
{
    h2o_iovec_t v = find_header(req, H2O_STRLIT("x-mock-behavior"));

    if (v.base != NULL && mock_behavior_parse(&call->bhv, v.base, v.len) != RB_OK) {
        *err = (mock_error_t){400, "invalid_request_error", "mock: bad X-Mock-Behavior header",
                              NULL, NULL};
        return -1;
    }
    v = find_header(req, H2O_STRLIT("x-mock-fixed-time"));
    if (h2o_memis(v.base, v.len, H2O_STRLIT("1")))
        call->bhv.fixed_time = 1;
    return 0;
}

/* Renders the answer for a call that parsed: a scripted error or the normal reply. */
static void render_call(mock_worker_t *w, mock_call_t *call)
{
    int anthropic = call->route == MOCK_ROUTE_MESSAGES || call->route == MOCK_ROUTE_COUNT_TOKENS;
    mock_plan_t plan;

    if (call->bhv.fixed_time) {
        call->created = MOCK_FIXED_TIME;
    } else {
        call->created = (int64_t)time(NULL);
        call->id_hash = mock_hash(call->id_hash, &w->counter, sizeof(w->counter)) + w->index;
    }
    if (call->bhv.status != 0) {
        if (anthropic)
            mock_anthropic_status(call, &w->out);
        else
            mock_openai_status(call, &w->out);
        if (call->bhv.html)
            mock_out_html_error(&w->out);
        return;
    }
    mock_plan_build(call, &plan);
    if (anthropic)
        mock_anthropic_render(call, &plan, &w->out);
    else
        mock_openai_render(call, &plan, &w->out);
    w->out.slow_ms = w->out.stream ? call->bhv.slow_ms : 0;
    if (call->bhv.reset && !w->out.stream) { /* half the body, then the connection dies */
        size_t half = w->out.body.len / 2;
        rb_buf_append(&w->out.ev_ends, &half, sizeof(half));
        w->out.reset = 1;
    }
    if (call->bhv.split_bytes > 0) {
        mock_out_split(&w->out, call->bhv.split_bytes);
        w->out.slow_ms = call->bhv.slow_ms > 0 ? call->bhv.slow_ms : MOCK_SPLIT_GAP_MS;
    }
    mock_plan_free(&plan);
}

static void on_api(mock_worker_t *w, h2o_req_t *req, mock_route_t route)
{
    int anthropic = route == MOCK_ROUTE_MESSAGES || route == MOCK_ROUTE_COUNT_TOKENS;
    const char *body = req->entity.base != NULL ? req->entity.base : "";
    mock_call_t call;
    mock_error_t err;

    mock_call_init(&call, route);
    call.id_hash = mock_hash(MOCK_FNV_INIT, body, req->entity.base != NULL ? req->entity.len : 0);
    if (check_auth(req, anthropic, &err) != 0 || read_behavior_headers(req, &call, &err) != 0 ||
        mock_call_parse(&call, body, req->entity.base != NULL ? req->entity.len : 0, &err) != 0) {
        if (anthropic)
            mock_anthropic_error(&err, call.id_hash, &w->out);
        else
            mock_openai_error(&err, &w->out);
    } else {
        render_call(w, &call);
    }
    w->out.ttfb_ms = call.bhv.ttfb_ms;
    w->out.pad_headers = call.bhv.pad_headers;
    w->out.trailing_ms = call.bhv.trailing_ms;
    record_request(w, req, call.model);
    mock_call_free(&call);
}

/* ---- routing ---- */

static const struct {
    const char *path;
    mock_route_t route;
} mock_routes[] = {
    {"/v1/chat/completions", MOCK_ROUTE_CHAT},
    {"/v1/completions", MOCK_ROUTE_COMPLETIONS},
    {"/v1/responses", MOCK_ROUTE_RESPONSES},
    {"/v1/embeddings", MOCK_ROUTE_EMBEDDINGS},
    {"/v1/messages", MOCK_ROUTE_MESSAGES},
    {"/v1/messages/count_tokens", MOCK_ROUTE_COUNT_TOKENS},
};

static int is_method(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

/* GET|DELETE /mock/requests, GET /mock/healthz. */
static void on_admin(mock_worker_t *w, h2o_req_t *req)
{
    h2o_iovec_t path = req->path_normalized;
    mock_out_t *out = &w->out;

    if (h2o_memis(path.base, path.len, H2O_STRLIT("/mock/healthz"))) {
        rb_buf_puts(&out->body, "{\"status\":\"ok\"}");
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/mock/requests")) &&
               is_method(req, "GET")) {
        mock_recorder_dump(&w->srv->recorder, &out->body);
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/mock/requests")) &&
               is_method(req, "DELETE")) {
        mock_recorder_clear(&w->srv->recorder);
        rb_buf_puts(&out->body, "{\"cleared\":true}");
    } else {
        out->status = 404;
        out->reason = "Not Found";
        rb_buf_puts(&out->body, "{\"error\":\"no such mock endpoint\"}");
    }
}

/* GET /v1/models, and everything that matches no route, in the caller's dialect. */
static void on_other(mock_worker_t *w, h2o_req_t *req, int route_index)
{
    int anthropic = find_header(req, H2O_STRLIT("anthropic-version")).base != NULL ||
                    find_header(req, H2O_STRLIT("x-api-key")).base != NULL;
    h2o_iovec_t path = req->path_normalized;
    char msg[256];
    mock_error_t err = {404, anthropic ? "not_found_error" : "invalid_request_error", msg, NULL,
                        NULL};

    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/models")) && is_method(req, "GET")) {
        if (check_auth(req, anthropic, &err) == 0) {
            if (anthropic)
                mock_anthropic_models(&w->out);
            else
                mock_openai_models(&w->out);
            return;
        }
    } else if (route_index >= 0) {
        err.status = 405;
        snprintf(msg, sizeof(msg), "Invalid method for URL (%.*s %.*s)", (int)req->method.len,
                 req->method.base, (int)path.len, path.base);
        err.type = "invalid_request_error";
    } else {
        snprintf(msg, sizeof(msg), anthropic ? "Not Found" : "Invalid URL (%.*s %.*s)",
                 (int)req->method.len, req->method.base, (int)path.len, path.base);
    }
    if (anthropic)
        mock_anthropic_error(&err, 0, &w->out);
    else
        mock_openai_error(&err, &w->out);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    mock_worker_t *w = H2O_STRUCT_FROM_MEMBER(mock_worker_t, ctx, req->conn->ctx);
    h2o_iovec_t path = req->path_normalized;
    int route_index = -1;

    w->counter++;
    mock_out_reset(&w->out);
    for (size_t i = 0; i < sizeof(mock_routes) / sizeof(mock_routes[0]); i++)
        if (h2o_memis(path.base, path.len, mock_routes[i].path, strlen(mock_routes[i].path)))
            route_index = (int)i;
    if (path.len >= 6 && memcmp(path.base, "/mock/", 6) == 0) {
        on_admin(w, req);
    } else if (route_index >= 0 && is_method(req, "POST")) {
        on_api(w, req, mock_routes[route_index].route);
    } else {
        on_other(w, req, route_index);
        record_request(w, req, NULL);
    }
    send_out(w, req);
    if (w->out.body.cap > MOCK_SCRATCH_KEEP)
        rb_buf_free(&w->out.body);
    if (w->out.ev_ends.cap > MOCK_SCRATCH_KEEP)
        rb_buf_free(&w->out.ev_ends);
    return 0;
}

/* ---- workers and listeners ---- */

static void on_accept(h2o_socket_t *listener, const char *err)
{
    mock_worker_t *w = listener->data;
    h2o_socket_t *sock;

    if (err != NULL)
        return;
    if ((sock = h2o_evloop_socket_accept(listener)) != NULL)
        h2o_accept(&w->accept_ctx, sock);
}

static void *worker_main(void *arg)
{
    mock_worker_t *w = arg;
    h2o_socket_t *ls;

    h2o_context_init(&w->ctx, h2o_evloop_create(), &w->srv->config);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = w->srv->config.hosts;
    ls = h2o_evloop_socket_create(w->ctx.loop, w->fd, H2O_SOCKET_FLAG_DONT_READ);
    ls->data = w;
    h2o_socket_read_start(ls, on_accept);
    for (;;)
        h2o_evloop_run(w->ctx.loop, INT32_MAX);
    return NULL;
}

/* A listening socket on addr; reuseport lets every worker have its own. -1 on failure. */
static int open_listener(const struct sockaddr_in *addr, int reuseport)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), on = 1;

    if (fd == -1)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        bind(fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0 || listen(fd, SOMAXCONN) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* A decimal in [min, max]; -1 on anything else. */
static int parse_count(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end = NULL;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_listen(const char *s, struct sockaddr_in *addr)
{
    const char *colon = strrchr(s, ':');
    char host[64];
    unsigned long port;

    if (colon == NULL || (size_t)(colon - s) >= sizeof(host) ||
        parse_count(colon + 1, 1, 65535, &port) != 0)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    return inet_pton(AF_INET, host, &addr->sin_addr) == 1 ? 0 : -1;
}

/* Command line into srv; returns 0, 1 (--help printed) or -1 (usage error printed). */
static int parse_args(int argc, char **argv, mock_server_t *srv, unsigned long *record)
{
    unsigned long n;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (val == NULL)
            goto Usage;
        i++;
        if (strcmp(opt, "--listen") == 0 && parse_listen(val, &srv->addr) == 0)
            continue;
        if (strcmp(opt, "--threads") == 0 && parse_count(val, 1, MOCK_THREADS_MAX, &n) == 0) {
            srv->n_threads = (unsigned)n;
            continue;
        }
        if (strcmp(opt, "--record") == 0 && parse_count(val, 0, MOCK_RECORD_MAX, record) == 0)
            continue;
    Usage:
        fprintf(stderr, "mock-provider: bad argument '%s'\n", opt);
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Opens one listener per thread. A first bind without SO_REUSEPORT makes sure no other process
 * holds the port (SO_REUSEPORT would otherwise silently share it with another mock). */
static int open_listeners(mock_server_t *srv)
{
    int probe = open_listener(&srv->addr, 0);

    if (probe == -1)
        return -1;
    close(probe);
    for (unsigned i = 0; i < srv->n_threads; i++) {
        if ((srv->fds[i] = open_listener(&srv->addr, 1)) == -1)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static mock_server_t srv; /* lives for the whole process; workers point into it */
    static mock_worker_t workers[MOCK_THREADS_MAX];
    unsigned long record = MOCK_RECORD_DEFAULT;
    char ip[INET_ADDRSTRLEN];
    int rc;

    srv.n_threads = MOCK_THREADS_DEFAULT;
    parse_listen("127.0.0.1:8089", &srv.addr);
    if ((rc = parse_args(argc, argv, &srv, &record)) != 0)
        return rc > 0 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN);
    if (open_listeners(&srv) != 0) {
        fprintf(stderr, "mock-provider: cannot listen: %s\n", strerror(errno));
        return 1;
    }
    mock_recorder_init(&srv.recorder, record);
    h2o_config_init(&srv.config);
    srv.config.max_request_entity_size = MOCK_ENTITY_MAX;
    srv.config.server_name = h2o_iovec_init(H2O_STRLIT("mock-provider"));
    h2o_hostconf_t *host =
        h2o_config_register_host(&srv.config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/", 0);
    mock_handler_t *h = (mock_handler_t *)h2o_create_handler(pc, sizeof(*h));
    h->super.on_req = on_req;
    h->srv = &srv;
    for (unsigned i = 0; i < srv.n_threads; i++) {
        workers[i] = (mock_worker_t){.srv = &srv, .index = i, .fd = srv.fds[i]};
        RB_ASSERT(pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) == 0);
    }
    inet_ntop(AF_INET, &srv.addr.sin_addr, ip, sizeof(ip));
    fprintf(stderr, "mock-provider: listening on %s:%u (%u threads)\n", ip,
            (unsigned)ntohs(srv.addr.sin_port), srv.n_threads);
    for (unsigned i = 0; i < srv.n_threads; i++)
        pthread_join(workers[i].thread, NULL);
    return 0;
}
