/*
 * rb_server: the h2o bootstrap both daemons share.
 *
 * A server has one or more listeners ("127.0.0.1:9090"), each with its own routes, and N worker
 * threads. Every worker runs its own h2o event loop and context and accepts on its own SO_REUSEPORT
 * socket per listener (the kernel spreads connections). Before the workers start, the main thread
 * probes every address without SO_REUSEPORT, so a port already taken (even by another Rigbox) is a
 * clear error instead of a silent share.
 *
 * Lifecycle, all from the main thread: rb_server_create, rb_server_listen (once per listener),
 * rb_server_route (register every path before run), rb_server_run (blocks until SIGTERM or SIGINT,
 * then shuts down gracefully: listeners close, keep-alive connections end, in-flight requests
 * finish within shutdown_timeout_ms), rb_server_destroy.
 *
 * Per-worker daemon state (e.g. the gateway's curl multi handle) hangs off rb_worker_t.data, set up
 * in on_worker_start on the worker's own thread and torn down in on_worker_stop. Handlers find
 * their worker with rb_server_worker(req).
 */
#ifndef RB_COMMON_SERVER_H
#define RB_COMMON_SERVER_H

#include <h2o.h>
#include <pthread.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/metrics.h"

#define RB_SERVER_LISTENERS_MAX 4
#define RB_SERVER_WORKERS_MAX   64
/* How long a listener stops accepting when the process is out of file descriptors (EMFILE): the
 * pending connection stays in the backlog, and the loop does not spin on the readable listener. */
#define RB_SERVER_ACCEPT_PAUSE_MS 100
/* The open-file limit taken when the hard limit is unlimited (Linux's default fs.nr_open). */
#define RB_SERVER_FD_LIMIT_UNBOUNDED 1048576

typedef struct st_rb_server_t rb_server_t;

typedef struct st_rb_worker_t {
    h2o_context_t ctx; /* first: handlers get it as req->conn->ctx */
    rb_server_t *server;
    unsigned index;
    pthread_t thread;
    int stopping; /* set on the worker's thread once shutdown began */
    void *data;   /* the daemon's per-worker state */
    h2o_multithread_receiver_t wake;
    int wake_ready; /* atomic: wake is registered */
    struct {
        h2o_socket_t *sock;
        h2o_accept_ctx_t accept_ctx;
    } listeners[RB_SERVER_LISTENERS_MAX];
    h2o_timeout_t accept_pause;        /* RB_SERVER_ACCEPT_PAUSE_MS */
    h2o_timeout_entry_t accept_resume; /* linked while the listeners are paused */
} rb_worker_t;

typedef struct st_rb_server_conf_t {
    const char *name;        /* "rigbox-gateway"; used in logs */
    unsigned workers;        /* 1..RB_SERVER_WORKERS_MAX */
    size_t max_request_body; /* bytes; bigger bodies get 413 */
    unsigned shutdown_timeout_ms;
    /* TCP_USER_TIMEOUT on accepted connections: a client that takes none of the answer (or
     * acknowledges nothing) this long is cut, as nginx's send_timeout does; h2o has no write
     * timeout, so without it a client that stops reading holds its request forever. 0 = the
     * kernel's default (none). */
    unsigned client_send_timeout_ms;
    void *user; /* passed back to the hooks */
    /** Runs on the worker thread before it accepts. */
    void (*on_worker_start)(rb_worker_t *w, void *user);
    /** Runs on the worker thread after its loop ended. */
    void (*on_worker_stop)(rb_worker_t *w, void *user);
    /** The longest the loop may sleep (ms), e.g. until curl's next timeout; NULL = no limit. */
    int32_t (*loop_wait_ms)(rb_worker_t *w, void *user);
    /** Non-zero while the worker still has work that must finish before it exits (e.g. streams
     *  being drained). NULL = only HTTP connections count. */
    int (*busy)(rb_worker_t *w, void *user);
} rb_server_conf_t;

/** A server with a copy of conf; returns owned (free with rb_server_destroy). */
rb_server_t *rb_server_create(const rb_server_conf_t *conf);
/** Frees the server (after rb_server_run returned, or if it never ran). */
void rb_server_destroy(rb_server_t *s);
/** Adds a listener on "host:port" (port 0 = any free port). Probes the address now: a port in use
 *  is RB_ERR_SYS with errbuf saying so. Returns the hostconf to register routes on. */
rb_err_t rb_server_listen(rb_server_t *s, const char *addr, h2o_hostconf_t **hostconf_out,
                          char *errbuf, size_t errcap);
/** The port a listener is bound to (useful after port 0). */
uint16_t rb_server_port(const rb_server_t *s, unsigned listener);
/** Registers on_req for requests whose path starts with path; returns the handler (allocated with
 *  handler_size >= sizeof(h2o_handler_t), so callers can embed it first in a bigger struct). */
h2o_handler_t *rb_server_route(h2o_hostconf_t *hc, const char *path,
                               int (*on_req)(h2o_handler_t *, h2o_req_t *), size_t handler_size);
/** Appends to out (empty) the JSON body of an error h2o answers by itself, before any route runs:
 *  413 (a body over max_request_body), 404 (no route for the path), 400 (a malformed request). */
typedef void (*rb_server_error_body_fn)(h2o_req_t *req, int status, rb_buf_t *out);
/** Makes h2o's own error answers on hc JSON from fn (application/json, same status) instead of
 *  h2o's plain text, so every answer of a listener speaks its daemon's dialect. Before run. */
void rb_server_error_body(h2o_hostconf_t *hc, rb_server_error_body_fn fn);
/** Registers GET /healthz (200 {"status":"ok"}) and GET /metrics (Prometheus text) on hc.
 *  /metrics answers only "Authorization: Bearer <the metrics token>" (compared in constant time;
 *  401 otherwise): the token is token_value (RIGBOX_METRICS_TOKEN) if not NULL, else the content
 *  of the file token_path (rb_token_load). With none configured /metrics answers 403 (logged).
 *  Returns 0, or -1 (logged) when the token is malformed or unreadable: the daemon must not start.
 */
int rb_server_add_builtins(rb_server_t *s, h2o_hostconf_t *hc, const char *prefix,
                           const char *token_value, const char *token_path);
/** The server's metrics registry (owned by the server). */
rb_metrics_t *rb_server_metrics(rb_server_t *s);
/** Blocks SIGTERM and SIGINT in the calling thread and every thread it creates afterwards, and
 *  ignores SIGPIPE. Call it first in main, before any thread starts: a thread that does not block
 *  them would take a signal's default action (the end of the process) in the middle of a
 *  graceful shutdown. rb_server_run waits for them (sigtimedwait). */
void rb_server_block_signals(void);
/** Runs the workers; blocks until SIGTERM/SIGINT (or rb_server_stop) and the graceful shutdown end.
 *  A signal during the shutdown stays pending: the shutdown runs to its end either way. */
rb_err_t rb_server_run(rb_server_t *s);
/** Asks a running server to shut down, as SIGTERM would. Any thread. */
void rb_server_stop(rb_server_t *s);
/** The worker that owns req. */
rb_worker_t *rb_server_worker(h2o_req_t *req);

#endif
