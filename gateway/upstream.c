#include "gateway/upstream.h"

#include <curl/curl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"

#if H2O_USE_LIBUV
#error "the gateway drives libcurl from h2o's own event loop: build with -DH2O_USE_LIBUV=0"
#endif

/* The loop's longest sleep when curl has no timer pending. */
#define GW_UPSTREAM_IDLE_WAIT_MS INT32_MAX
/* Finished easy handles kept for reuse, per loop: an init and a cleanup per request showed in
 * profiles. A pooled handle keeps the options every transfer of its loop shares (easy_new). */
#define GW_UPSTREAM_EASY_POOL_MAX 64
/* Upstream URLs kept parsed, per loop (a provider's base URL and a route each); past this many,
 * curl parses the URL of every transfer again. */
#define GW_UPSTREAM_URLS_MAX 64
/* Unsolicited bytes read off an idle connection before it is shut down. */
#define GW_UPSTREAM_DISCARD_MAX 65536

/* One curl socket. A connection's socket (opened by on_curl_open) is wrapped for the h2o loop
 * from the first time curl asks to watch it until curl closes it (on_curl_close): a connection
 * reused from curl's cache keeps its h2o socket and its epoll registration, so a request costs no
 * fcntl, epoll_ctl or allocation for it. Any other descriptor curl watches (the threaded
 * resolver's socketpair, which curl closes itself) leaves the loop at CURL_POLL_REMOVE. */
typedef struct st_curl_sock_t {
    gw_upstream_t *u;
    curl_socket_t fd;
    h2o_socket_t *sock; /* NULL until curl first asks to watch it */
    int conn;           /* opened by on_curl_open: closed by on_curl_close */
    int what;           /* CURL_POLL_* curl asked for last; 0 after CURL_POLL_REMOVE */
    int busy; /* inside curl_multi_socket_action for this fd; if curl closes it meanwhile (sock
               * becomes NULL), it is freed when busy drops to 0 */
} curl_sock_t;

struct st_gw_upstream_t {
    h2o_loop_t *loop;
    CURLM *multi;
    gw_upstream_conf_t conf;
    h2o_timeout_t zero_timeout;
    h2o_timeout_entry_t curl_te;
    uint64_t curl_deadline; /* h2o_now of curl's next timeout; 0 = none */
    h2o_timeout_t first_byte_timeout;
    h2o_timeout_t idle_timeout;
    h2o_linklist_t dirty; /* transfers whose owner must flush */
    h2o_linklist_t all;
    size_t active;
    CURL *easy_pool[GW_UPSTREAM_EASY_POOL_MAX];
    size_t easy_pooled;
    curl_sock_t **socks; /* by fd: the sockets curl has open */
    size_t socks_cap;
    struct {
        char *text;
        CURLU *parsed;
    } urls[GW_UPSTREAM_URLS_MAX];
    size_t nurls;
};

struct st_gw_xfer_t {
    gw_upstream_t *u;
    CURL *easy;
    struct curl_slist *headers;
    gw_xfer_cb_t cb;
    void *ctx;
    h2o_linklist_t dirty_link;
    h2o_linklist_t all_link;
    h2o_timeout_entry_t fb_te; /* first_byte_timeout until the status line, then idle_timeout */
    int paused;
    curl_socket_t fd; /* its connection's socket once curl watched it, else -1 */
    int got_status;   /* written inside curl, read on the loop: same thread */
    curl_off_t body_len;
    char errbuf[CURL_ERROR_SIZE];
};

static void after_action(gw_upstream_t *u);
static void cs_on_write(h2o_socket_t *sock, const char *err);

void gw_upstream_global_init(void)
{
    RB_ASSERT(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
}

void gw_upstream_global_cleanup(void)
{
    curl_global_cleanup();
}

/* The socket of fd, or NULL when curl does not have it open. */
static curl_sock_t *cs_find(const gw_upstream_t *u, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < u->socks_cap ? u->socks[fd] : NULL;
}

/* The slot of fd in u->socks, grown to hold it. */
static curl_sock_t **cs_slot(gw_upstream_t *u, curl_socket_t fd)
{
    RB_ASSERT(fd >= 0);
    if ((size_t)fd >= u->socks_cap) {
        size_t cap = u->socks_cap > 0 ? u->socks_cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        u->socks = rb_realloc(u->socks, cap * sizeof(*u->socks));
        memset(u->socks + u->socks_cap, 0, (cap - u->socks_cap) * sizeof(*u->socks));
        u->socks_cap = cap;
    }
    return &u->socks[fd];
}

static void cs_action(curl_sock_t *cs, int ev)
{
    gw_upstream_t *u = cs->u;
    int running = 0;

    cs->busy++;
    curl_multi_socket_action(u->multi, cs->fd, ev, &running);
    cs->busy--;
    if (cs->sock == NULL) { /* curl closed it meanwhile (on_curl_close) */
        if (cs->busy == 0)
            free(cs);
    } else if ((cs->what & CURL_POLL_OUT) && cs->sock->_cb.write == NULL) {
        /* notify_write is one-shot and curl reports only changes: re-arm while it wants OUT */
        h2o_socket_notify_write(cs->sock, cs_on_write);
    }
    after_action(u);
}

/* Whether a transfer under way (paused for a slow client, say: curl stops watching its socket
 * then, as it does an idle connection's) has fd as its connection. */
static int cs_in_use(const gw_upstream_t *u, curl_socket_t fd)
{
    for (const h2o_linklist_t *l = u->all.next; l != &u->all; l = l->next)
        if (H2O_STRUCT_FROM_MEMBER(gw_xfer_t, all_link, l)->fd == fd)
            return 1;
    return 0;
}

/* An idle connection in curl's cache became readable: the peer closed it, or sent bytes nobody
 * asked for (a second response, say). curl 7.88 reuses an HTTP/1.1 connection with unread bytes
 * and reads them as the next call's answer, which may be another user's call. So they are
 * discarded and the connection shut down: curl's check before reuse sees its end and closes it
 * (past GW_UPSTREAM_DISCARD_MAX, the send of a reuse fails, and curl retries on a new one). */
static void cs_idle_readable(curl_sock_t *cs)
{
    char sink[4096];
    ssize_t got;
    size_t total = 0;

    while (total < GW_UPSTREAM_DISCARD_MAX &&
           (got = recv(cs->fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
        total += (size_t)got;
    shutdown(cs->fd, SHUT_RDWR);
    if (total > 0)
        rb_log_warn("upstream_unsolicited_bytes", "bytes=%zu", total);
}

static void cs_on_read(h2o_socket_t *sock, const char *err)
{
    curl_sock_t *cs = sock->data;
    if (!(cs->what & CURL_POLL_IN)) {
        /* not watched by curl: stop watching too; curl asks again for a paused transfer's,
         * xfer_free for an idle one's */
        h2o_socket_read_stop(sock);
        if (cs->conn && !cs_in_use(cs->u, cs->fd))
            cs_idle_readable(cs);
        return;
    }
    cs_action(cs, err != NULL ? CURL_CSELECT_IN | CURL_CSELECT_ERR : CURL_CSELECT_IN);
}

static void cs_on_write(h2o_socket_t *sock, const char *err)
{
    curl_sock_t *cs = sock->data;
    if (!(cs->what & CURL_POLL_OUT))
        return; /* a stale one-shot notification: h2o cannot cancel notify_write */
    cs_action(cs, err != NULL ? CURL_CSELECT_OUT | CURL_CSELECT_ERR : CURL_CSELECT_OUT);
}

/* Takes cs out of the loop and of u->socks; the descriptor is closed when close_fd (curl closes
 * it), else left open (its owner closes it). cs is freed here, or by cs_action when inside it. */
static void cs_drop(gw_upstream_t *u, curl_sock_t *cs, int close_fd)
{
    u->socks[cs->fd] = NULL;
    if (cs->sock != NULL) {
        /* a pending one-shot notify_write must not fire on a freed cs */
        cs->sock->_cb.write = NULL;
        if (close_fd) {
            h2o_socket_close(cs->sock);
        } else { /* out of epoll, the descriptor left open */
            h2o_socket_export_t info;
            int exported = h2o_socket_export(cs->sock, &info);
            RB_ASSERT(exported == 0);
            h2o_buffer_dispose(&info.input);
        }
        cs->sock = NULL;
    } else if (close_fd) {
        close(cs->fd);
    }
    if (!cs->busy) /* else cs_action frees it */
        free(cs);
}

static curl_sock_t *cs_new(gw_upstream_t *u, curl_socket_t fd, int conn)
{
    curl_sock_t **slot = cs_slot(u, fd);

    if (*slot != NULL) /* a descriptor closed behind our back (not a connection's): its number is
                        * reused, so its wrapper goes */
        cs_drop(u, *slot, 0);
    *slot = rb_calloc(1, sizeof(**slot));
    (*slot)->u = u;
    (*slot)->fd = fd;
    (*slot)->conn = conn;
    return *slot;
}

/* curl opens a connection's socket. */
static curl_socket_t on_curl_open(void *userp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);

    (void)purpose;
    if (fd != CURL_SOCKET_BAD)
        cs_new(userp, fd, 1);
    return fd;
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    gw_upstream_t *u = userp;
    curl_sock_t *cs = cs_find(u, fd);
    gw_xfer_t *x = NULL;

    if (what == CURL_POLL_REMOVE) {
        /* A transfer ended or paused, or the connection went idle: a connection's socket stays in
         * the loop, still read-armed (a wake-up while idle only stops reading, cs_on_read), so
         * that reusing the connection changes nothing in epoll. Anything else leaves now: curl
         * closes it without on_curl_close, and its number comes back for the next socket. */
        if (cs != NULL && !cs->conn)
            cs_drop(u, cs, 0);
        else if (cs != NULL)
            cs->what = 0;
        return 0;
    }
    if (cs == NULL)
        cs = cs_new(u, fd, 0);
    if (cs->sock == NULL) {
        cs->sock = h2o_evloop_socket_create(u->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        cs->sock->data = cs;
    }
    cs->what = what;
    if (curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x) == CURLE_OK && x != NULL)
        x->fd = fd; /* the transfer's connection, until it ends (HTTP/1.1: one each) */
    if (what & CURL_POLL_IN)
        h2o_socket_read_start(cs->sock, cs_on_read);
    else if (h2o_socket_is_reading(cs->sock))
        h2o_socket_read_stop(cs->sock);
    if ((what & CURL_POLL_OUT) && cs->sock->_cb.write == NULL)
        h2o_socket_notify_write(cs->sock, cs_on_write);
    return 0;
}

/* curl closes a connection's socket: it leaves the loop (h2o closes the fd). */
static int on_curl_close(void *userp, curl_socket_t fd)
{
    gw_upstream_t *u = userp;
    curl_sock_t *cs = cs_find(u, fd);

    if (cs == NULL)
        return close(fd) == 0 ? 0 : 1;
    cs_drop(u, cs, 1);
    return 0;
}

/* Never calls curl: it only schedules (notes §3, "Timer"). */
static int on_curl_timer(CURLM *m, long ms, void *userp)
{
    gw_upstream_t *u = userp;

    if (ms == 0) {
        u->curl_deadline = 0;
        if (!h2o_timeout_is_linked(&u->curl_te))
            h2o_timeout_link(u->loop, &u->zero_timeout, &u->curl_te);
    } else {
        if (h2o_timeout_is_linked(&u->curl_te))
            h2o_timeout_unlink(&u->curl_te);
        u->curl_deadline = ms < 0 ? 0 : h2o_now(u->loop) + (uint64_t)ms;
    }
    return 0;
}

/* Runs inside h2o_evloop_run, so h2o sends made from here are written promptly. */
static void on_curl_timeout(h2o_timeout_entry_t *te)
{
    gw_upstream_t *u = H2O_STRUCT_FROM_MEMBER(gw_upstream_t, curl_te, te);
    int running = 0;

    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    after_action(u);
}

int32_t gw_upstream_wait_ms(gw_upstream_t *u)
{
    uint64_t now;

    if (u->curl_deadline == 0)
        return GW_UPSTREAM_IDLE_WAIT_MS;
    now = h2o_now(u->loop);
    if (now < u->curl_deadline)
        return (int32_t)(u->curl_deadline - now > INT32_MAX ? INT32_MAX : u->curl_deadline - now);
    u->curl_deadline = 0;
    if (!h2o_timeout_is_linked(&u->curl_te))
        h2o_timeout_link(u->loop, &u->zero_timeout, &u->curl_te);
    return 0;
}

size_t gw_upstream_active(const gw_upstream_t *u)
{
    return u->active;
}

/* A transfer on fd ended: if its connection stays in curl's cache, it is watched again (reading
 * stopped while the transfer was paused), so what comes on it unasked is seen (cs_on_read). */
static void xfer_conn_idle(gw_upstream_t *u, curl_socket_t fd)
{
    curl_sock_t *cs = cs_find(u, fd);

    if (cs != NULL && cs->conn && cs->sock != NULL && cs->what == 0 &&
        !h2o_socket_is_reading(cs->sock) && !cs_in_use(u, fd))
        h2o_socket_read_start(cs->sock, cs_on_read);
}

/* Detaches x from curl and the lists, then frees it. */
static void xfer_free(gw_xfer_t *x)
{
    gw_upstream_t *u = x->u;

    curl_multi_remove_handle(u->multi, x->easy);
    if (h2o_linklist_is_linked(&x->all_link))
        h2o_linklist_unlink(&x->all_link);
    xfer_conn_idle(u, x->fd);
    if (u->easy_pooled < GW_UPSTREAM_EASY_POOL_MAX) {
        /* no curl_easy_reset: the shared options stay (the connection cache lives in the multi
         * handle, not here); what pointed into this transfer is cleared */
        curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, NULL);
        u->easy_pool[u->easy_pooled++] = x->easy;
    } else {
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    if (h2o_linklist_is_linked(&x->dirty_link))
        h2o_linklist_unlink(&x->dirty_link);
    if (h2o_timeout_is_linked(&x->fb_te))
        h2o_timeout_unlink(&x->fb_te);
    RB_ASSERT(u->active > 0);
    u->active--;
    free(x);
}

static void xfer_finish(gw_xfer_t *x, rb_err_t result, const char *msg)
{
    gw_xfer_cb_t cb = x->cb;
    void *ctx = x->ctx;
    char errmsg[GW_XFER_ERRMSG_MAX];
    int sent = gw_xfer_sent(x);

    rb_copy_str(errmsg, sizeof(errmsg), msg);
    xfer_free(x); /* first: the owner may start another transfer from on_done */
    cb.on_done(ctx, result, errmsg, sent);
}

static void check_multi_info(gw_upstream_t *u)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(u->multi, &left)) != NULL) {
        gw_xfer_t *x = NULL;
        CURLcode rc;
        rb_err_t err;
        if (msg->msg != CURLMSG_DONE)
            continue;
        rc = msg->data.result; /* read before remove_handle invalidates msg */
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        RB_ASSERT(x != NULL && x->easy == msg->easy_handle);
        err = rc == CURLE_OK                   ? RB_OK
              : rc == CURLE_OPERATION_TIMEDOUT ? RB_ERR_TIMEOUT
                                               : RB_ERR_UPSTREAM;
        xfer_finish(x, err,
                    rc == CURLE_OK ? NULL : (x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc)));
    }
}

static void flush_dirty(gw_upstream_t *u)
{
    while (!h2o_linklist_is_empty(&u->dirty)) {
        gw_xfer_t *x = H2O_STRUCT_FROM_MEMBER(gw_xfer_t, dirty_link, u->dirty.next);
        h2o_linklist_unlink(&x->dirty_link);
        x->cb.on_flush(x->ctx);
    }
}

static void after_action(gw_upstream_t *u)
{
    check_multi_info(u);
    flush_dirty(u);
}

static void on_silence_timeout(h2o_timeout_entry_t *te)
{
    gw_xfer_t *x = H2O_STRUCT_FROM_MEMBER(gw_xfer_t, fb_te, te);

    xfer_finish(x, RB_ERR_TIMEOUT,
                x->got_status ? "the provider was silent for longer than idle_timeout"
                              : "no response from the provider before first_byte_timeout");
}

/* The provider spoke: its silence is timed from now, not while the transfer is paused (then the
 * client is the slow one). Only a list update: safe inside curl's callbacks. */
static void xfer_heard(gw_xfer_t *x)
{
    gw_upstream_t *u = x->u;

    if (h2o_timeout_is_linked(&x->fb_te))
        h2o_timeout_unlink(&x->fb_te);
    if (u->conf.idle_timeout_ms > 0 && !x->paused)
        h2o_timeout_link(u->loop, &u->idle_timeout, &x->fb_te);
}

gw_upstream_t *gw_upstream_create(h2o_loop_t *loop, const gw_upstream_conf_t *conf)
{
    gw_upstream_t *u = rb_calloc(1, sizeof(*u));

    RB_ASSERT(loop != NULL && conf != NULL);
    u->loop = loop;
    u->conf = *conf;
    u->multi = curl_multi_init();
    RB_ASSERT(u->multi != NULL);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS,
                      (long)(conf->connections_max > 0 ? conf->connections_max : 16));
    h2o_timeout_init(loop, &u->zero_timeout, 0);
    h2o_timeout_init(loop, &u->first_byte_timeout,
                     conf->first_byte_timeout_ms > 0 ? (uint64_t)conf->first_byte_timeout_ms : 1);
    h2o_timeout_init(loop, &u->idle_timeout,
                     conf->idle_timeout_ms > 0 ? (uint64_t)conf->idle_timeout_ms : 1);
    u->curl_te.cb = on_curl_timeout;
    h2o_linklist_init_anchor(&u->dirty);
    h2o_linklist_init_anchor(&u->all);
    return u;
}

void gw_upstream_destroy(gw_upstream_t *u)
{
    if (u == NULL)
        return;
    while (!h2o_linklist_is_empty(&u->all))
        xfer_free(H2O_STRUCT_FROM_MEMBER(gw_xfer_t, all_link, u->all.next));
    if (h2o_timeout_is_linked(&u->curl_te))
        h2o_timeout_unlink(&u->curl_te);
    while (u->easy_pooled > 0)
        curl_easy_cleanup(u->easy_pool[--u->easy_pooled]);
    curl_multi_cleanup(u->multi); /* closes the cached connections: on_curl_close */
    for (size_t fd = 0; fd < u->socks_cap; fd++)
        RB_ASSERT(u->socks[fd] == NULL);
    free(u->socks);
    for (size_t i = 0; i < u->nurls; i++) {
        free(u->urls[i].text);
        curl_url_cleanup(u->urls[i].parsed);
    }
    free(u);
}

static size_t on_curl_header(char *b, size_t size, size_t n, void *ud)
{
    gw_xfer_t *x = ud;
    size_t len = size * n;

    if (len >= 5 && memcmp(b, "HTTP/", 5) == 0)
        x->got_status = 1;
    if (x->got_status)
        xfer_heard(x);
    x->cb.on_header(x->ctx, b, len);
    return len;
}

static size_t on_curl_write(char *b, size_t size, size_t n, void *ud)
{
    gw_xfer_t *x = ud;
    size_t len = size * n;

    x->paused = x->cb.on_body(x->ctx, b, len) != 0;
    xfer_heard(x);
    if (x->paused)
        return CURL_WRITEFUNC_PAUSE;
    if (!h2o_linklist_is_linked(&x->dirty_link))
        h2o_linklist_insert(&x->u->dirty, &x->dirty_link);
    return len;
}

/* url parsed once per loop, with the flags curl itself parses a URL with; NULL when it does not
 * parse or the table is full (then curl parses it, and reports what is wrong with it). */
static CURLU *parsed_url(gw_upstream_t *u, const char *url)
{
    CURLU *p;

    for (size_t i = 0; i < u->nurls; i++) {
        if (strcmp(u->urls[i].text, url) == 0)
            return u->urls[i].parsed;
    }
    if (u->nurls == GW_UPSTREAM_URLS_MAX || (p = curl_url()) == NULL)
        return NULL;
    if (curl_url_set(p, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) !=
        CURLUE_OK) {
        curl_url_cleanup(p);
        return NULL;
    }
    u->urls[u->nurls].text = rb_strdup(url);
    u->urls[u->nurls++].parsed = p;
    return p;
}

/* A new easy handle with the options every transfer of loop u shares; xfer_setopts sets the rest
 * on each transfer (a pooled handle keeps these). */
static CURL *easy_new(gw_upstream_t *u)
{
    const gw_upstream_conf_t *c = &u->conf;
    CURL *e = curl_easy_init();

    RB_ASSERT(e != NULL);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_write);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_curl_header);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_curl_open);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* never *_proxy or no_proxy from the environment (and no getenv per transfer) */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    if (c->total_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->total_timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* HTTP/1.1, the version the tests run: one transfer per connection, which the idle
     * connection checks (cs_on_read) and the pause backpressure rely on (libcurl would pick
     * HTTP/2 over TLS, sharing one connection and its flow-control window among transfers) */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    return e;
}

/* The options that differ from one transfer to the next, all of them, each time. */
static void xfer_setopts(gw_xfer_t *x, const gw_xfer_req_t *req)
{
    CURLU *url = parsed_url(x->u, req->url);

    /* the text too: curl reports it (effective URL, errors) and then does not rebuild it */
    curl_easy_setopt(x->easy, CURLOPT_URL, req->url);
    /* curl copies a parsed url per transfer instead of parsing the text; NULL: parse the text */
    curl_easy_setopt(x->easy, CURLOPT_CURLU, url);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
    x->body_len = req->body != NULL ? (curl_off_t)req->body_len : 0;
    if (req->body != NULL) {
        curl_easy_setopt(x->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, req->body); /* not copied: borrowed */
    } else {
        curl_easy_setopt(x->easy, CURLOPT_HTTPGET, 1L);
    }
}

gw_xfer_t *gw_xfer_start(gw_upstream_t *u, const gw_xfer_req_t *req, const gw_xfer_cb_t *cb,
                         void *ctx)
{
    gw_xfer_t *x = rb_calloc(1, sizeof(*x));

    RB_ASSERT(req->url != NULL && req->headers_len <= GW_XFER_HEADERS_MAX);
    RB_ASSERT(cb->on_header && cb->on_body && cb->on_flush && cb->on_done);
    x->u = u;
    x->cb = *cb;
    x->ctx = ctx;
    x->fb_te.cb = on_silence_timeout;
    x->easy = u->easy_pooled > 0 ? u->easy_pool[--u->easy_pooled] : easy_new(u);
    x->fd = CURL_SOCKET_BAD;
    for (size_t i = 0; i < req->headers_len; i++) {
        x->headers = curl_slist_append(x->headers, req->headers[i]);
        RB_ASSERT(x->headers != NULL);
    }
    x->headers = curl_slist_append(x->headers, "Expect:"); /* no 100-continue round trip */
    RB_ASSERT(x->headers != NULL);
    xfer_setopts(x, req);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
    h2o_linklist_insert(&u->all, &x->all_link);
    u->active++;
    if (u->conf.first_byte_timeout_ms > 0)
        h2o_timeout_link(u->loop, &u->first_byte_timeout, &x->fb_te);
    RB_ASSERT(curl_multi_add_handle(u->multi, x->easy) == CURLM_OK); /* fires timer(0) */
    return x;
}

void gw_xfer_resume(gw_xfer_t *x)
{
    RB_ASSERT(x->paused);
    x->paused = 0;
    xfer_heard(x);
    curl_easy_pause(x->easy, CURLPAUSE_CONT); /* may call on_body (and pause again) */
}

int gw_xfer_paused(const gw_xfer_t *x)
{
    return x->paused;
}

int gw_xfer_sent(const gw_xfer_t *x)
{
    curl_off_t up = 0;
    long head = 0;

    curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &head);
    curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    return head > 0 && up >= x->body_len;
}

void gw_xfer_cancel(gw_xfer_t *x)
{
    RB_ASSERT(x != NULL && x->u != NULL);
    xfer_free(x);
}
