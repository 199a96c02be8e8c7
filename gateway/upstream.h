/*
 * gw_upstream: HTTP calls to providers with libcurl's multi interface, driven by a worker's h2o
 * event loop (notes/h2o-libcurl-libpq.md §3-4). This is the only file of the gateway that includes
 * curl.h.
 *
 * One gw_upstream_t per worker thread, created and used only on that thread: curl's sockets are
 * wrapped as h2o sockets with DONT_READ (curl reads them itself) and detached with
 * h2o_socket_export (curl owns the fds); curl's timers go through a 0 ms h2o timeout so every curl
 * call happens inside h2o_evloop_run. A connection cache per worker (upstream_connections_max)
 * gives keep-alive reuse.
 *
 * A transfer (gw_xfer_t) reports to its owner through callbacks with two different contracts:
 * - on_header and on_body run INSIDE curl: they must never call h2o, curl or gw_xfer_*; they only
 *   copy bytes. on_body may refuse the bytes (return 1): curl pauses the transfer and offers the
 * same bytes again after gw_xfer_resume.
 * - on_flush and on_done run on the loop after curl returned: they may send to h2o. on_flush means
 *   "new bytes were accepted since the last flush"; on_done is the last call (the transfer is freed
 *   right after it returns).
 * The owner may cancel at any time from a loop callback (never from on_header/on_body); after
 * gw_xfer_cancel no callback runs. Nothing here logs or copies header values, so keys stay private.
 */
#ifndef RB_GATEWAY_UPSTREAM_H
#define RB_GATEWAY_UPSTREAM_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Most request headers passed to gw_xfer_start. */
#define GW_XFER_HEADERS_MAX 16
/* Room for curl's error text. */
#define GW_XFER_ERRMSG_MAX 256

typedef struct st_gw_upstream_t gw_upstream_t;
typedef struct st_gw_xfer_t gw_xfer_t;

/** Per-worker settings (copied). */
typedef struct st_gw_upstream_conf_t {
    int connect_timeout_ms;
    int total_timeout_ms;      /* whole transfer; 0 = none */
    int first_byte_timeout_ms; /* until the response's status line; 0 = none */
    int idle_timeout_ms;       /* after it, the longest the provider may stay silent (not counted
                                * while the transfer is paused for a slow client); 0 = none */
    int connections_max;       /* connection cache size */
} gw_upstream_conf_t;

/** The owner's callbacks; see the header comment for which may call h2o. */
typedef struct st_gw_xfer_cb_t {
    /** One response header line as received ("HTTP/1.1 200 OK\r\n", "name: value\r\n", "\r\n"). */
    void (*on_header)(void *ctx, const char *line, size_t len);
    /** Body bytes; return 0 when taken, 1 to pause (the bytes are offered again after resume). */
    int (*on_body)(void *ctx, const char *bytes, size_t len);
    /** Bytes were taken since the last call; runs on the loop. */
    void (*on_flush)(void *ctx);
    /** The end: RB_OK, RB_ERR_TIMEOUT (a deadline passed) or RB_ERR_UPSTREAM (connect failed,
     * reset, protocol error) with curl's message; sent: the provider had the whole request. Runs
     * on the loop, last call for this transfer. */
    void (*on_done)(void *ctx, rb_err_t result, const char *errmsg, int sent);
} gw_xfer_cb_t;

/** What to send: a POST when body != NULL, else a GET. */
typedef struct st_gw_xfer_req_t {
    const char *url;                          /* borrowed during the call (curl copies it) */
    const char *headers[GW_XFER_HEADERS_MAX]; /* "Name: value", copied */
    size_t headers_len;
    const char *body; /* borrowed until on_done or gw_xfer_cancel */
    size_t body_len;
} gw_xfer_req_t;

/** Creates the worker's upstream on loop; returns owned (free with gw_upstream_destroy on the
 *  same thread after the loop stopped). Call curl_global_init first (gw_upstream_global_init). */
gw_upstream_t *gw_upstream_create(h2o_loop_t *loop, const gw_upstream_conf_t *conf);
/** Cancels every transfer still running (no callbacks) and frees u. */
void gw_upstream_destroy(gw_upstream_t *u);
/** Process-wide libcurl init; call once from main before any thread starts. */
void gw_upstream_global_init(void);
/** Process-wide libcurl cleanup after every worker stopped. */
void gw_upstream_global_cleanup(void);
/** How long the loop may sleep before curl needs a timeout call (ms); for rb_server's
 *  loop_wait_ms. Links the 0 ms timer when curl's deadline has passed. */
int32_t gw_upstream_wait_ms(gw_upstream_t *u);
/** Transfers running on this worker. */
size_t gw_upstream_active(const gw_upstream_t *u);

/** Starts a transfer; returns it (owned by u until on_done or gw_xfer_cancel). */
gw_xfer_t *gw_xfer_start(gw_upstream_t *u, const gw_xfer_req_t *req, const gw_xfer_cb_t *cb,
                         void *ctx);
/** Resumes a transfer paused by on_body; on_body may run again before this returns. */
void gw_xfer_resume(gw_xfer_t *x);
/** 1 while the transfer is paused. */
int gw_xfer_paused(const gw_xfer_t *x);
/** 1 when the whole request (head and body) has gone out: the provider may be answering it. */
int gw_xfer_sent(const gw_xfer_t *x);
/** Stops the transfer now; no callback runs afterwards; x is freed. */
void gw_xfer_cancel(gw_xfer_t *x);

#endif
