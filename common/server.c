#include "common/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/http.h"
#include "common/log.h"

#if H2O_USE_LIBUV
#error "Rigbox uses h2o's own event loop: build with -DH2O_USE_LIBUV=0"
#endif

enum { ADDR_MAX = 256, LOOP_WAIT_MAX_MS = 1000, LISTEN_BACKLOG = 1024 };

typedef struct st_listener_t {
    char addr[ADDR_MAX];
    struct sockaddr_in sa;
    h2o_hostconf_t *hostconf;
    h2o_hostconf_t *hosts[2]; /* NULL-terminated list for the accept context */
    int fds[RB_SERVER_WORKERS_MAX];
} listener_t;

struct st_rb_server_t {
    rb_server_conf_t conf;
    h2o_globalconf_t globalconf;
    listener_t listeners[RB_SERVER_LISTENERS_MAX];
    unsigned nlisteners;
    rb_worker_t *workers;
    rb_metrics_t *metrics;
    int stop_requested; /* atomic */
};

typedef struct st_builtin_handler_t {
    h2o_handler_t super;
    rb_server_t *server;
    int has_token;                     /* /metrics: a token is configured */
    uint8_t token_hash[RB_SHA256_LEN]; /* its SHA-256 (compared in constant time) */
} builtin_handler_t;

rb_server_t *rb_server_create(const rb_server_conf_t *conf)
{
    rb_server_t *s = rb_calloc(1, sizeof(*s));

    RB_ASSERT(conf->workers >= 1 && conf->workers <= RB_SERVER_WORKERS_MAX);
    s->conf = *conf;
    h2o_config_init(&s->globalconf);
    s->globalconf.max_request_entity_size = conf->max_request_body;
    s->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("rigbox"));
    s->metrics = rb_metrics_create();
    for (unsigned i = 0; i < RB_SERVER_LISTENERS_MAX; i++)
        for (unsigned w = 0; w < RB_SERVER_WORKERS_MAX; w++)
            s->listeners[i].fds[w] = -1;
    return s;
}

void rb_server_destroy(rb_server_t *s)
{
    if (s == NULL)
        return;
    for (unsigned i = 0; i < s->nlisteners; i++)
        for (unsigned w = 0; w < s->conf.workers; w++)
            if (s->listeners[i].fds[w] != -1)
                close(s->listeners[i].fds[w]);
    h2o_config_dispose(&s->globalconf);
    rb_metrics_destroy(s->metrics);
    free(s->workers);
    free(s);
}

/* Parses "host:port" (IPv4 literal or "localhost"). */
static int parse_addr(const char *addr, struct sockaddr_in *sa)
{
    char host[ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    char *end;
    unsigned long port;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || port > 65535)
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0 || host[0] == '\0')
        return inet_pton(AF_INET, host[0] == '\0' ? "0.0.0.0" : "127.0.0.1", &sa->sin_addr) == 1
                   ? 0
                   : -1;
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int bind_socket(const struct sockaddr_in *sa, int reuseport)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), on = 1;
    if (fd == -1)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 ||
        listen(fd, LISTEN_BACKLOG) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

rb_err_t rb_server_listen(rb_server_t *s, const char *addr, h2o_hostconf_t **hostconf_out,
                          char *errbuf, size_t errcap)
{
    listener_t *l;
    char hostname[32];
    int probe;
    socklen_t salen;

    RB_ASSERT(s->nlisteners < RB_SERVER_LISTENERS_MAX);
    l = &s->listeners[s->nlisteners];
    if (strlen(addr) >= sizeof(l->addr) || parse_addr(addr, &l->sa) != 0) {
        snprintf(errbuf, errcap, "bad listen address \"%s\": expected host:port", addr);
        return RB_ERR_CONFIG;
    }
    /* Without SO_REUSEPORT, so that a port held by any other listener is refused. */
    if (l->sa.sin_port != 0) {
        if ((probe = bind_socket(&l->sa, 0)) == -1) {
            snprintf(errbuf, errcap, "cannot listen on %s: %s", addr, strerror(errno));
            return RB_ERR_SYS;
        }
        close(probe);
    }
    for (unsigned w = 0; w < s->conf.workers; w++) {
        if ((l->fds[w] = bind_socket(&l->sa, 1)) == -1) {
            snprintf(errbuf, errcap, "cannot listen on %s: %s", addr, strerror(errno));
            return RB_ERR_SYS;
        }
        if (w == 0) { /* port 0: every worker binds the port the first one got */
            salen = sizeof(l->sa);
            getsockname(l->fds[0], (struct sockaddr *)&l->sa, &salen);
        }
    }
    snprintf(l->addr, sizeof(l->addr), "%s", addr);
    snprintf(hostname, sizeof(hostname), "listener-%u", s->nlisteners);
    l->hostconf =
        h2o_config_register_host(&s->globalconf, h2o_iovec_init(hostname, strlen(hostname)), 65535);
    RB_ASSERT(l->hostconf != NULL);
    l->hosts[0] = l->hostconf;
    l->hosts[1] = NULL;
    s->nlisteners++;
    *hostconf_out = l->hostconf;
    return RB_OK;
}

uint16_t rb_server_port(const rb_server_t *s, unsigned listener)
{
    RB_ASSERT(listener < s->nlisteners);
    return ntohs(s->listeners[listener].sa.sin_port);
}

h2o_handler_t *rb_server_route(h2o_hostconf_t *hc, const char *path,
                               int (*on_req)(h2o_handler_t *, h2o_req_t *), size_t handler_size)
{
    h2o_pathconf_t *pc = h2o_config_register_path(hc, path, 0);
    h2o_handler_t *h;

    RB_ASSERT(handler_size >= sizeof(h2o_handler_t));
    h = h2o_create_handler(pc, handler_size);
    h->on_req = on_req;
    return h;
}

/* h2o answers a request it refuses before routing (body too large, no such path, malformed) with
 * plain text, through the host's fallback path. This filter on that path swaps the body for the
 * daemon's JSON before the headers go out. */
typedef struct st_error_filter_t {
    h2o_filter_t super;
    rb_server_error_body_fn fn;
} error_filter_t;

typedef struct st_error_ostream_t {
    h2o_ostream_t super;
    h2o_iovec_t body;
} error_ostream_t;

static void error_ostream_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
                               h2o_send_state_t state)
{
    error_ostream_t *o = (error_ostream_t *)self;
    h2o_iovec_t body = o->body;

    (void)bufs; /* h2o's plain-text body: dropped */
    (void)n;
    o->body = h2o_iovec_init(NULL, 0); /* sent once, whatever the number of calls */
    h2o_ostream_send_next(&o->super, req, &body, body.len != 0, state);
}

static void error_filter_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    error_filter_t *f = (error_filter_t *)self;

    if (req->res.status >= 400) {
        rb_buf_t out;
        error_ostream_t *o;

        rb_buf_init(&out, 0);
        f->fn(req, req->res.status, &out);
        o = (error_ostream_t *)h2o_add_ostream(req, sizeof(*o), slot);
        o->super.do_send = error_ostream_send;
        o->body = h2o_strdup(&req->pool, out.base != NULL ? out.base : "", out.len);
        rb_buf_free(&out);
        req->res.content_length = o->body.len;
        h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                       H2O_STRLIT("application/json"), 1);
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

void rb_server_error_body(h2o_hostconf_t *hc, rb_server_error_body_fn fn)
{
    error_filter_t *f = (error_filter_t *)h2o_create_filter(&hc->fallback_path, sizeof(*f));

    f->super.on_setup_ostream = error_filter_setup;
    f->fn = fn;
}

static int on_healthz(h2o_handler_t *self, h2o_req_t *req)
{
    static const char body[] = "{\"status\":\"ok\"}";
    rb_http_send(req, 200, "application/json", body, sizeof(body) - 1);
    return 0;
}

/* 1 when req carries "Authorization: Bearer <the metrics token>". */
static int metrics_authorized(const builtin_handler_t *h, h2o_req_t *req)
{
    static const char scheme[] = "Bearer ";
    uint8_t got[RB_SHA256_LEN];
    size_t len = 0;
    const char *v = rb_http_header(req, "authorization", &len);

    if (v == NULL || len <= sizeof(scheme) - 1 || strncasecmp(v, scheme, sizeof(scheme) - 1) != 0)
        return 0;
    rb_sha256(v + sizeof(scheme) - 1, len - (sizeof(scheme) - 1), got);
    return rb_ct_equal(got, h->token_hash, RB_SHA256_LEN);
}

/* An error of /metrics in the control API's shape (DESIGN.md §4), the message also at the top. */
#define METRICS_ERROR(code, msg)                                                                   \
    "{\"error\":{\"code\":\"" code "\",\"message\":\"" msg                                         \
    "\",\"details\":null},\"message\":\"" msg "\"}"

static int on_metrics(h2o_handler_t *self, h2o_req_t *req)
{
    static const char off[] =
        METRICS_ERROR("metrics_off", "no metrics token is configured (RIGBOX_METRICS_TOKEN or "
                                     "secrets.metrics_token_file)");
    static const char denied[] =
        METRICS_ERROR("unauthorized", "/metrics needs Authorization: Bearer <metrics token>");
    builtin_handler_t *h = (builtin_handler_t *)self;
    rb_buf_t out;

    if (!h->has_token) {
        rb_http_send(req, 403, "application/json", off, sizeof(off) - 1);
        return 0;
    }
    if (!metrics_authorized(h, req)) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer"));
        rb_http_send(req, 401, "application/json", denied, sizeof(denied) - 1);
        return 0;
    }
    rb_buf_init(&out, 0);
    rb_metrics_render(h->server->metrics, &out);
    rb_http_send(req, 200, "text/plain; version=0.0.4", out.base != NULL ? out.base : "", out.len);
    rb_buf_free(&out);
    return 0;
}

int rb_server_add_builtins(rb_server_t *s, h2o_hostconf_t *hc, const char *prefix,
                           const char *token_value, const char *token_path)
{
    char token[RB_TOKEN_LEN_MAX + 1], path[256];
    int loaded = rb_token_load(token_value, token_path, token, sizeof(token));
    builtin_handler_t *h;

    snprintf(path, sizeof(path), "%s/healthz", prefix);
    h = (builtin_handler_t *)rb_server_route(hc, path, on_healthz, sizeof(*h));
    h->server = s;
    snprintf(path, sizeof(path), "%s/metrics", prefix);
    h = (builtin_handler_t *)rb_server_route(hc, path, on_metrics, sizeof(*h));
    h->server = s;
    if (loaded == 1) {
        h->has_token = 1;
        rb_sha256(token, strlen(token), h->token_hash);
        explicit_bzero(token, sizeof(token));
    } else if (loaded == 0) {
        rb_log_warn("metrics_token_missing", "file=%s metrics=off (GET %s answers 403)",
                    token_path != NULL ? token_path : "-", path);
    } else {
        rb_log_error("metrics_token_invalid",
                     "expected=\"%d to %d printable characters, no spaces\" (%s)", RB_TOKEN_LEN_MIN,
                     RB_TOKEN_LEN_MAX, token_value != NULL ? "RIGBOX_METRICS_TOKEN" : token_path);
        return -1;
    }
    return 0;
}

rb_metrics_t *rb_server_metrics(rb_server_t *s)
{
    return s->metrics;
}

rb_worker_t *rb_server_worker(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(rb_worker_t, ctx, req->conn->ctx);
}

static void on_accept(h2o_socket_t *listener, const char *err);

/* Starts (resume = 1) or stops accepting on every listener of the worker. */
static void accept_all(rb_worker_t *w, int resume)
{
    for (unsigned i = 0; i < RB_SERVER_LISTENERS_MAX; i++) {
        if (w->listeners[i].sock == NULL)
            continue;
        if (resume)
            h2o_socket_read_start(w->listeners[i].sock, on_accept);
        else
            h2o_socket_read_stop(w->listeners[i].sock);
    }
}

static void on_accept_resume(h2o_timeout_entry_t *te)
{
    accept_all(H2O_STRUCT_FROM_MEMBER(rb_worker_t, accept_resume, te), 1);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_accept_ctx_t *actx = listener->data;
    rb_worker_t *w = H2O_STRUCT_FROM_MEMBER(rb_worker_t, ctx, actx->ctx);
    h2o_socket_t *sock;

    if (err != NULL)
        return;
    if ((sock = h2o_evloop_socket_accept(listener)) != NULL) {
        unsigned ms = w->server->conf.client_send_timeout_ms;
        if (ms > 0 && setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_USER_TIMEOUT, &ms,
                                 sizeof(ms)) != 0)
            rb_log_warn("tcp_user_timeout_failed", "errno=%d", errno);
        h2o_accept(actx, sock);
    } else if ((errno == EMFILE || errno == ENFILE) && !h2o_timeout_is_linked(&w->accept_resume)) {
        /* Out of descriptors: the connections wait in the backlog while calls end and free some;
         * accepting again at once would spin on the readable listeners. */
        accept_all(w, 0);
        h2o_timeout_link(w->ctx.loop, &w->accept_pause, &w->accept_resume);
        rb_log_warn("accept_paused", "worker=%u errno=%d pause_ms=%d (out of file descriptors)",
                    w->index, errno, RB_SERVER_ACCEPT_PAUSE_MS);
    }
}

static void on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    /* Messages are never sent with a payload: waking the loop is the point. */
}

static void begin_shutdown(rb_worker_t *w)
{
    rb_server_t *s = w->server;
    w->stopping = 1;
    if (h2o_timeout_is_linked(&w->accept_resume))
        h2o_timeout_unlink(&w->accept_resume);
    for (unsigned i = 0; i < s->nlisteners; i++) {
        if (w->listeners[i].sock != NULL) {
            h2o_socket_read_stop(w->listeners[i].sock);
            h2o_socket_close(w->listeners[i].sock); /* closes our fd */
            w->listeners[i].sock = NULL;
            s->listeners[i].fds[w->index] = -1;
        }
    }
    h2o_context_request_shutdown(&w->ctx);
}

static int worker_idle(rb_worker_t *w)
{
    rb_server_t *s = w->server;
    if (!h2o_linklist_is_empty(&w->ctx.http1._conns) ||
        !h2o_linklist_is_empty(&w->ctx.http2._conns))
        return 0;
    return s->conf.busy == NULL || !s->conf.busy(w, s->conf.user);
}

static void *worker_main(void *arg)
{
    rb_worker_t *w = arg;
    rb_server_t *s = w->server;
    uint64_t deadline = 0;

    h2o_context_init(&w->ctx, h2o_evloop_create(), &s->globalconf);
    h2o_multithread_register_receiver(w->ctx.queue, &w->wake, on_wake);
    __atomic_store_n(&w->wake_ready, 1, __ATOMIC_RELEASE);
    if (s->conf.on_worker_start != NULL)
        s->conf.on_worker_start(w, s->conf.user);
    for (unsigned i = 0; i < s->nlisteners; i++) {
        h2o_accept_ctx_t *actx = &w->listeners[i].accept_ctx;
        actx->ctx = &w->ctx;
        actx->hosts = s->listeners[i].hosts;
        w->listeners[i].sock = h2o_evloop_socket_create(w->ctx.loop, s->listeners[i].fds[w->index],
                                                        H2O_SOCKET_FLAG_DONT_READ);
        w->listeners[i].sock->data = actx;
        h2o_socket_read_start(w->listeners[i].sock, on_accept);
    }
    h2o_timeout_init(w->ctx.loop, &w->accept_pause, RB_SERVER_ACCEPT_PAUSE_MS);
    w->accept_resume.cb = on_accept_resume;
    for (;;) {
        int32_t wait = LOOP_WAIT_MAX_MS;
        if (s->conf.loop_wait_ms != NULL) {
            int32_t want = s->conf.loop_wait_ms(w, s->conf.user);
            if (want < wait)
                wait = want;
        }
        if (h2o_evloop_run(w->ctx.loop, wait) != 0 && errno != EINTR)
            rb_log_warn("evloop_error", "worker=%u errno=%d", w->index, errno);
        if (!w->stopping && __atomic_load_n(&s->stop_requested, __ATOMIC_ACQUIRE)) {
            begin_shutdown(w);
            deadline = h2o_now(w->ctx.loop) + s->conf.shutdown_timeout_ms;
        }
        if (w->stopping && (worker_idle(w) || h2o_now(w->ctx.loop) >= deadline))
            break;
    }
    if (s->conf.on_worker_stop != NULL)
        s->conf.on_worker_stop(w, s->conf.user);
    return NULL; /* the receiver stays registered: the main thread may still wake it */
}

void rb_server_stop(rb_server_t *s)
{
    __atomic_store_n(&s->stop_requested, 1, __ATOMIC_RELEASE);
}

/* Waits on the main thread for SIGTERM/SIGINT or rb_server_stop. */
static void wait_for_stop(rb_server_t *s, const sigset_t *set)
{
    struct timespec tick = {0, 100 * 1000 * 1000};
    while (!__atomic_load_n(&s->stop_requested, __ATOMIC_ACQUIRE)) {
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            rb_log_info("shutdown", "server=%s signal=%s", s->conf.name,
                        sig == SIGTERM ? "SIGTERM" : "SIGINT");
            rb_server_stop(s);
        }
    }
}

static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

void rb_server_block_signals(void)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Raises the soft limit on open files to the hard one: every call holds two descriptors (the
 * client's connection and the provider's), and services often start at a soft limit of 1024. */
static void raise_fd_limit(const rb_server_t *s)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t was = rl.rlim_cur,
           want = rl.rlim_max == RLIM_INFINITY ? RB_SERVER_FD_LIMIT_UNBOUNDED : rl.rlim_max;
    if (want > was) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = was;
    }
    rb_log_info("fd_limit", "server=%s open_files=%llu", s->conf.name,
                (unsigned long long)rl.rlim_cur);
}

rb_err_t rb_server_run(rb_server_t *s)
{
    sigset_t set;

    RB_ASSERT(s->nlisteners > 0 && s->workers == NULL);
    rb_server_block_signals(); /* again, if main did not: workers inherit the mask */
    stop_signals(&set);
    raise_fd_limit(s);
    s->workers = rb_calloc(s->conf.workers, sizeof(*s->workers));
    for (unsigned i = 0; i < s->nlisteners; i++) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &s->listeners[i].sa.sin_addr, ip, sizeof(ip));
        rb_log_info("listening", "server=%s addr=%s:%u workers=%u", s->conf.name, ip,
                    rb_server_port(s, i), s->conf.workers);
    }
    for (unsigned w = 0; w < s->conf.workers; w++) {
        s->workers[w].server = s;
        s->workers[w].index = w;
        if (pthread_create(&s->workers[w].thread, NULL, worker_main, &s->workers[w]) != 0)
            RB_UNREACHABLE();
    }
    wait_for_stop(s, &set);
    for (unsigned w = 0; w < s->conf.workers; w++) {
        /* A worker that has not registered yet sees the flag within LOOP_WAIT_MAX_MS anyway. */
        if (__atomic_load_n(&s->workers[w].wake_ready, __ATOMIC_ACQUIRE))
            h2o_multithread_send_message(&s->workers[w].wake, NULL);
    }
    for (unsigned w = 0; w < s->conf.workers; w++)
        pthread_join(s->workers[w].thread, NULL);
    /* the mask stays: a second signal must not end the process while its caller still closes
     * leases and flushes the ledger */
    rb_log_info("stopped", "server=%s", s->conf.name);
    return RB_OK;
}
