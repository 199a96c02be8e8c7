/*
 * ctl_api: the /api/v1 REST API of rigbox-control (also served under /api). This module owns
 * routing (method + path pattern → handler), authentication (Bearer rb_… API keys, looked up by
 * SHA-256), request bodies (JSON, bounded), and the reply helpers every handler uses, so that all
 * errors share one shape: {"error":{"code","message","details"},"message"}.
 *
 * Handlers run on an h2o worker thread, one request at a time per worker, and may use r->db
 * (blocking, the worker's own connection). Everything a handler allocates for the reply lives in
 * req->pool or is freed before it returns.
 */
#ifndef RB_CONTROL_API_H
#define RB_CONTROL_API_H

#include <h2o.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/server.h"
#include "config/config.h"
#include "control/db.h"

#define CTL_PATH_PARAMS_MAX 4
#define CTL_PARAM_LEN_MAX   136        /* request ids are up to 128 bytes */
#define CTL_BODY_MAX        (1u << 20) /* request body; bigger is 413 request_too_large */

struct st_ctl_supervisor_t;

/** Per-worker state of the API (rb_worker_t.data). */
typedef struct st_ctl_worker_t {
    ctl_db_t db;                /* this worker's connection */
    h2o_timeout_t poll_timeout; /* CTL_STREAM_POLL_MS: log streams look for new lines */
} ctl_worker_t;

typedef struct st_ctl_app_t {
    const cfg_t *cfg;                /* borrowed; immutable */
    struct st_ctl_supervisor_t *sup; /* the VM supervisor (NULL in tools that only read) */
    int has_master_key;
    uint8_t master_key[32]; /* encrypts BYOK keys (common/crypto.h rb_master_key_parse) */
    char master_key_id[17];
    rb_metrics_t *metrics; /* the server's (set by ctl_api_register): rigbox_control_requests */
} ctl_app_t;

typedef struct st_ctl_req_t {
    h2o_req_t *req;
    ctl_app_t *app;
    ctl_db_t *db; /* the worker's connection */
    ctl_worker_t *worker;
    char params[CTL_PATH_PARAMS_MAX][CTL_PARAM_LEN_MAX]; /* {placeholders} of the path */
    struct {
        int ok;    /* a valid API key was presented */
        int admin; /* its role is admin */
        char user_id[16];
        char key_id[48];
    } auth;
    rb_json_t *body; /* the parsed JSON object; {} when the request had no body */
} ctl_req_t;

/** Registers the API routes under /api/v1 and /api on hc. app is borrowed for the server's life. */
void ctl_api_register(rb_server_t *server, h2o_hostconf_t *hc, ctl_app_t *app);
/** Sends a JSON reply. */
void ctl_reply(ctl_req_t *r, int status, const rb_buf_t *json);
/** A list reply, {"items": [...], "next_cursor": ...}: ctl_list_begin starts it in b (then write
 * the items with w), ctl_list_end closes it with next_cursor (NULL: null), sends it with status 200
 * and frees b. */
void ctl_list_begin(rb_jw_t *w, rb_buf_t *b);
void ctl_list_end(ctl_req_t *r, rb_jw_t *w, rb_buf_t *b, const char *next_cursor);
#define CTL_CURSOR_MAX 160 /* bytes of a ?cursor= (k1<hex µs>.<id>) */

/** A keyset page over rows ordered by (created_at, id), from ?limit= and ?cursor=. */
typedef struct st_ctl_page_t {
    char after_us[24];                /* created_at (µs since the epoch) of the row before; "" */
    char after_id[CTL_PARAM_LEN_MAX]; /* ... and its id: the first page when both are "" */
    char limit[24];                   /* the limit plus one, as text: one more tells whether a page
                                         follows */
    int64_t n;                        /* the limit */
    const char *after[2];             /* after_us and after_id as query parameters: NULL, NULL on
                                         the first page */
} ctl_page_t;

/** Reads ?limit= (1..control.page_size_max, default control.page_size_default) and ?cursor= into p;
 * sends 400 (invalid_request, invalid_cursor) and returns -1 when malformed. The query then takes
 * after_us, after_id (NULL when "") and limit, and selects ctl_page_sql's key as its last column:
 * (created_at, id) > (after) ORDER BY created_at, id. */
int ctl_page_parse(ctl_req_t *r, ctl_page_t *p);
/** The next_cursor after row (NULL when res holds no more than the page), from the row's id
 *  (column id_col) and key (the last column); cur holds CTL_CURSOR_MAX + 1 bytes. */
const char *ctl_page_next(const ctl_page_t *p, PGresult *res, int id_col, char *cur);
/* SQL: the key of a row in µs, and the condition of a page given its parameters $a (after_us)
 * and $b (after_id) */
#define CTL_PAGE_KEY_SQL "(extract(epoch FROM created_at) * 1000000)::bigint"
#define CTL_PAGE_AFTER_SQL(a, b)                                                                   \
    "(" a "::bigint IS NULL OR (" CTL_PAGE_KEY_SQL ", id) > (" a "::bigint, " b "::text))"
/** Sends 400 "unknown field" and returns -1 when the body has a member not in allowed[n]: a typo
 *  must not be silently ignored (DESIGN §4). */
int ctl_reject_unknown(ctl_req_t *r, const char *const *allowed, size_t n);
#define CTL_REJECT_UNKNOWN(r, allowed)                                                             \
    ctl_reject_unknown(r, allowed, sizeof(allowed) / sizeof(allowed[0]))
/** ?user_id= of a list (absent: the caller), resolved as ctl_resolve_user does (and 404 for a user
 *  that does not exist); -1 when sent. */
int ctl_query_user_id(ctl_req_t *r, char *user_id, size_t cap);
/** The body's optional "user_id" (absent or null: the caller), resolved as ctl_resolve_user does
 * into user_id; sends 400 when it is not a string, 403 when not allowed, and returns -1. */
int ctl_opt_user_id(ctl_req_t *r, char *user_id, size_t cap);
/** 1 when s has no control character (C0, DEL, or C1 as UTF-8): what the schema's [[:cntrl:]]
 * checks refuse. */
int ctl_text_valid(const char *s);
/** Sends the standard error body; details_json is raw JSON or NULL for null. */
void ctl_error(ctl_req_t *r, int status, const char *code, const char *message,
               const char *details_json);
/** Sends 400 for a value the schema refused (RB_ERR_INVAL), 503 database_unavailable (Retry-After)
 * when the database is out of reach, else 500 for an unexpected database failure (logged; clients
 * see no SQL). */
void ctl_error_db(ctl_req_t *r, rb_err_t err);
/** Resolves a {id} path parameter that may be "me" to a user id the caller may act on; sends
 * 403/404 and returns -1 when not allowed. */
int ctl_resolve_user(ctl_req_t *r, const char *param, char *user_id, size_t cap);

#endif
