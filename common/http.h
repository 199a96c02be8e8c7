/*
 * Small helpers for h2o request handlers: sending whole responses, reading headers and query
 * parameters. Call them only on the request's own loop thread, from inside a handler or a callback
 * of h2o_evloop_run. Bodies passed in are copied into req->pool, so callers may free theirs at
 * once.
 */
#ifndef RB_COMMON_HTTP_H
#define RB_COMMON_HTTP_H

#include <h2o.h>

#include "common/buf.h"

/** The standard reason phrase for a status code ("OK", "Not Found", …). */
const char *rb_http_reason(int status);
/** Sends a complete response with the body copied into the request's pool. */
void rb_http_send(h2o_req_t *req, int status, const char *content_type, const char *body,
                  size_t len);
/** Sends a complete application/json response (body copied). */
void rb_http_send_json(h2o_req_t *req, int status, const rb_buf_t *body);
/** Adds a response header; name and value are copied into the pool. Call before sending. */
void rb_http_add_header(h2o_req_t *req, const char *name, const char *value);
/** The first value of request header name (case-insensitive), or NULL; len_out may be NULL.
 *  The value lives in req->pool and is not NUL-terminated. */
const char *rb_http_header(h2o_req_t *req, const char *name, size_t *len_out);
/** Every value of request header name, joined with ", " as RFC 9110 reads repeated lines of a
 *  list header (one line: its value as it is; a join lives in req->pool), or NULL. */
const char *rb_http_header_list(h2o_req_t *req, const char *name, size_t *len_out);
/** Copies query parameter `name` (URL-decoded) into buf; returns 1 when present, 0 when absent,
 *  -1 when it does not fit or is malformed. */
int rb_http_query(h2o_req_t *req, const char *name, char *buf, size_t cap);
/** Percent-decodes a piece of a path (a '+' stays a '+') into buf, NUL-terminated; returns its
 *  length, or -1 when it does not fit or is malformed. */
ssize_t rb_http_path_decode(const char *src, size_t n, char *buf, size_t cap);
/** 1 when the method equals m ("GET", "POST", …). */
int rb_http_method_is(h2o_req_t *req, const char *m);
/** The request path without the query string (points into req, not NUL-terminated). */
h2o_iovec_t rb_http_path(h2o_req_t *req);

#endif
