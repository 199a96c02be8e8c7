#include "control/api.h"

#include <string.h>
#include <time.h>

#include "common/crypto.h"
#include "common/http.h"
#include "common/log.h"
#include "control/credits.h"
#include "control/lifecycle.h"
#include "control/limits.h"
#include "control/templates.h"
#include "control/users.h"
#include "control/workspaces.h"

enum { AUTH_HEADER_MAX = 256, SEGMENTS_MAX = 8 };

typedef void (*ctl_handler_fn)(ctl_req_t *r);

typedef struct st_route_t {
    const char *method;
    const char *pattern; /* "/workspaces/{}/start": {} matches one segment */
    ctl_handler_fn fn;
    int public; /* no API key needed */
} route_t;

static void on_healthz(ctl_req_t *r)
{
    rb_buf_t b;
    rb_buf_init(&b, 0);
    rb_buf_puts(&b, "{\"status\":\"ok\"}");
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
}

static const route_t routes[] = {
    {"GET", "/healthz", on_healthz, 1},
    {"GET", "/templates", ctl_templates_list, 1},
    {"GET", "/templates/{}", ctl_templates_get, 1},
    {"POST", "/users", ctl_users_create, 0},
    {"GET", "/users/{}", ctl_users_get, 0},
    {"POST", "/api-keys", ctl_keys_create, 0},
    {"GET", "/api-keys", ctl_keys_list, 0},
    {"DELETE", "/api-keys/{}", ctl_keys_delete, 0},
    {"POST", "/workspaces", ctl_workspaces_create, 0},
    {"GET", "/workspaces", ctl_workspaces_list, 0},
    {"GET", "/workspaces/{}", ctl_workspaces_get, 0},
    {"DELETE", "/workspaces/{}", ctl_lifecycle_delete, 0},
    {"POST", "/workspaces/{}/start", ctl_lifecycle_start, 0},
    {"POST", "/workspaces/{}/stop", ctl_lifecycle_stop, 0},
    {"POST", "/workspaces/{}/restart", ctl_lifecycle_restart, 0},
    {"POST", "/workspaces/{}/cancel", ctl_lifecycle_cancel, 0},
    {"POST", "/workspaces/{}/retry", ctl_lifecycle_retry, 0},
    {"PUT", "/workspaces/{}/resources", ctl_lifecycle_resources, 0},
    {"POST", "/workspaces/{}/env", ctl_lifecycle_env, 0},
    {"GET", "/workspaces/{}/metrics", ctl_lifecycle_metrics, 0},
    {"GET", "/workspaces/{}/metrics/series", ctl_lifecycle_series, 0},
    {"GET", "/workspaces/{}/logs", ctl_lifecycle_logs, 0},
    {"GET", "/workspaces/{}/logs/stream", ctl_lifecycle_logs_stream, 0},
    {"POST", "/quick-deploy", ctl_lifecycle_quick_deploy, 0},
    {"GET", "/capacity", ctl_lifecycle_capacity, 1},
    {"POST", "/workspaces/{}/token", ctl_workspaces_token_mint, 0},
    {"DELETE", "/workspaces/{}/token", ctl_workspaces_token_revoke, 0},
    {"GET", "/workspaces/{}/ai-config", ctl_workspaces_ai_get, 0},
    {"PUT", "/workspaces/{}/ai-config", ctl_workspaces_ai_put, 0},
    {"GET", "/users/{}/ai-defaults", ctl_workspaces_ai_defaults_get, 0},
    {"PUT", "/users/{}/ai-defaults", ctl_workspaces_ai_defaults_put, 0},
    {"GET", "/users/{}/credits", ctl_credits_get, 0},
    {"POST", "/users/{}/credits/grants", ctl_credits_grant, 0},
    {"GET", "/users/{}/ledger", ctl_credits_ledger, 0},
    {"GET", "/users/{}/ai-usage", ctl_credits_usage, 0},
    {"GET", "/ai/requests/{}", ctl_credits_request, 0},
    {"GET", "/users/{}/limits", ctl_limits_get, 0},
    {"PUT", "/users/{}/limits", ctl_limits_put, 0},
};

typedef struct st_api_handler_t {
    h2o_handler_t super;
    ctl_app_t *app;
} api_handler_t;

void ctl_reply(ctl_req_t *r, int status, const rb_buf_t *json)
{
    rb_http_send_json(r->req, status, json);
}

void ctl_list_begin(rb_jw_t *w, rb_buf_t *b)
{
    rb_buf_init(b, 0);
    rb_jw_init(w, b);
    rb_jw_obj_begin(w);
    rb_jw_key(w, "items");
    rb_jw_arr_begin(w);
}

void ctl_list_end(ctl_req_t *r, rb_jw_t *w, rb_buf_t *b, const char *next_cursor)
{
    rb_jw_arr_end(w);
    rb_jw_key(w, "next_cursor");
    if (next_cursor != NULL)
        rb_jw_str(w, next_cursor);
    else
        rb_jw_null(w);
    rb_jw_obj_end(w);
    ctl_reply(r, 200, b);
    rb_buf_free(b);
}

int ctl_reject_unknown(ctl_req_t *r, const char *const *allowed, size_t n)
{
    int k = -1, v = -1;
    char name[64], msg[128];

    while (rb_json_next(r->body, 0, &k, &v)) {
        size_t i = n, len = 0;
        if (rb_json_str(r->body, k, name, sizeof(name), &len) == RB_OK && strlen(name) == len)
            for (i = 0; i < n && strcmp(name, allowed[i]) != 0; i++)
                ;
        else
            name[0] = '\0'; /* longer than any field, or holding \u0000 */
        if (i == n) {
            snprintf(msg, sizeof(msg), "unknown field \"%s\"", name);
            ctl_error(r, 400, "invalid_request", msg, NULL);
            return -1;
        }
    }
    return 0;
}

int ctl_page_parse(ctl_req_t *r, ctl_page_t *p)
{
    char l[24], c[CTL_CURSOR_MAX + 1], msg[64];
    int got = rb_http_query(r->req, "limit", l, sizeof(l));
    const char *dot;
    int max = r->app->cfg->control.page_size_max;

    *p = (ctl_page_t){.n = r->app->cfg->control.page_size_default};
    if (got != 0) {
        if (got < 0 || l[0] == '\0' || strspn(l, "0123456789") != strlen(l) || strlen(l) > 7 ||
            (p->n = strtoll(l, NULL, 10)) < 1 || p->n > max) {
            snprintf(msg, sizeof(msg), "limit must be an integer from 1 to %d", max);
            ctl_error(r, 400, "invalid_request", msg, NULL);
            return -1;
        }
    }
    snprintf(p->limit, sizeof(p->limit), "%lld", (long long)p->n + 1);
    got = rb_http_query(r->req, "cursor", c, sizeof(c));
    if (got == 0 || (got == 1 && c[0] == '\0'))
        return 0;
    /* k1<hex µs>.<id> */
    if (got < 0 || strncmp(c, "k1", 2) != 0 || (dot = strchr(c + 2, '.')) == NULL ||
        dot - (c + 2) < 1 || dot - (c + 2) > 15 ||
        strspn(c + 2, "0123456789abcdef") != (size_t)(dot - (c + 2)) || dot[1] == '\0' ||
        strlen(dot + 1) >= sizeof(p->after_id) || !ctl_text_valid(dot + 1)) {
        ctl_error(r, 400, "invalid_cursor", "cursor must be a next_cursor from this API", NULL);
        return -1;
    }
    snprintf(p->after_us, sizeof(p->after_us), "%lld", (long long)strtoll(c + 2, NULL, 16));
    snprintf(p->after_id, sizeof(p->after_id), "%s", dot + 1);
    p->after[0] = p->after_us;
    p->after[1] = p->after_id;
    return 0;
}

const char *ctl_page_next(const ctl_page_t *p, PGresult *res, int id_col, char *cur)
{
    int last = (int)p->n - 1;
    if (PQntuples(res) <= p->n)
        return NULL;
    snprintf(cur, CTL_CURSOR_MAX + 1, "k1%llx.%s",
             (unsigned long long)strtoll(PQgetvalue(res, last, PQnfields(res) - 1), NULL, 10),
             PQgetvalue(res, last, id_col));
    return cur;
}

int ctl_query_user_id(ctl_req_t *r, char *user_id, size_t cap)
{
    char id[CTL_PARAM_LEN_MAX] = "me"; /* absent: left as it is */
    int got = rb_http_query(r->req, "user_id", id, sizeof(id));

    if (got < 0 || (got == 1 && id[0] == '\0')) {
        ctl_error(r, 400, "invalid_request", "user_id must be a user id", NULL);
        return -1;
    }
    if (ctl_resolve_user(r, id, user_id, cap) != 0)
        return -1;
    /* another user (an admin's list): 404 when there is none, as the ledger answers */
    return strcmp(user_id, r->auth.user_id) == 0 ? 0 : ctl_user_require(r, user_id);
}

int ctl_text_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
            return 0;
    return 1;
}

/* Appends the API's error document (DESIGN.md §4) to b. */
static void error_json(rb_buf_t *b, const char *code, const char *message, const char *details_json)
{
    rb_jw_t w;

    rb_jw_init(&w, b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "error");
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "code", code);
    rb_jw_kstr(&w, "message", message);
    rb_jw_key(&w, "details");
    if (details_json != NULL)
        rb_jw_raw(&w, details_json, strlen(details_json));
    else
        rb_jw_null(&w);
    rb_jw_obj_end(&w);
    rb_jw_kstr(&w, "message", message);
    rb_jw_obj_end(&w);
}

void ctl_error(ctl_req_t *r, int status, const char *code, const char *message,
               const char *details_json)
{
    rb_buf_t b;

    rb_buf_init(&b, 0);
    error_json(&b, code, message, details_json);
    ctl_reply(r, status, &b);
    rb_buf_free(&b);
}

/* h2o's own refusals, before any route runs, in the API's error shape. */
static void error_early(h2o_req_t *req, int status, rb_buf_t *out)
{
    (void)req;
    switch (status) {
    case 413:
        error_json(out, "request_too_large", "the request body is larger than the API accepts",
                   NULL);
        break;
    case 404:
        error_json(out, "not_found", "no such endpoint", NULL);
        break;
    case 400:
        error_json(out, "bad_request", "malformed HTTP request", NULL);
        break;
    default:
        error_json(out, "http_error", rb_http_reason(status), NULL);
        break;
    }
}

void ctl_error_db(ctl_req_t *r, rb_err_t err)
{
    if (err == RB_ERR_INVAL) { /* a value the schema's checks refused (SQLSTATE 22, 23) */
        rb_log_warn("api_db_refused", "path=%.*s sqlstate=%s", (int)r->req->path.len,
                    r->req->path.base, r->db->sqlstate);
        ctl_error(r, 400, "invalid_request", "a value in the request is out of range or malformed",
                  NULL);
        return;
    }
    rb_log_error("api_db_error", "path=%.*s err=%s sqlstate=%s", (int)r->req->path.len,
                 r->req->path.base, rb_err_name(err), r->db->sqlstate);
    if (!ctl_db_connected(r->db)) { /* unreachable, not a failed statement */
        rb_http_add_header(r->req, "retry-after", "1");
        ctl_error(r, 503, "database_unavailable", "the database is unreachable; retry shortly",
                  NULL);
        return;
    }
    ctl_error(r, 500, "internal", "internal error", NULL);
}

int ctl_resolve_user(ctl_req_t *r, const char *param, char *user_id, size_t cap)
{
    char id[CTL_PARAM_LEN_MAX]; /* param may be user_id itself */

    if (strcmp(param, "me") == 0 || strcmp(param, r->auth.user_id) == 0) {
        snprintf(user_id, cap, "%s", r->auth.user_id);
        return 0;
    }
    if (!r->auth.admin) {
        ctl_error(r, 403, "forbidden", "only an admin key may act on another user", NULL);
        return -1;
    }
    snprintf(id, sizeof(id), "%s", param);
    snprintf(user_id, cap, "%s", id);
    return 0;
}

int ctl_opt_user_id(ctl_req_t *r, char *user_id, size_t cap)
{
    char id[CTL_PARAM_LEN_MAX] = "me";
    int v = rb_json_member(r->body, 0, "user_id");

    if (v >= 0 && rb_json_type(r->body, v) != RB_JSON_NULL &&
        (rb_json_get_str(r->body, 0, "user_id", id, sizeof(id)) != RB_OK || id[0] == '\0')) {
        ctl_error(r, 400, "invalid_request", "user_id must be a user id string", NULL);
        return -1;
    }
    return ctl_resolve_user(r, id, user_id, cap);
}

/* Matches path (after the API prefix, without query) against pattern, filling params. */
static int match(const char *pattern, const char *path, size_t len, ctl_req_t *r)
{
    const char *p = pattern, *s = path, *end = path + len;
    int nparam = 0;

    while (*p != '\0' && s < end) {
        if (p[0] == '{' && p[1] == '}') {
            const char *slash = memchr(s, '/', (size_t)(end - s));
            size_t n = (size_t)((slash != NULL ? slash : end) - s);
            if (n == 0 || n >= CTL_PARAM_LEN_MAX || nparam == CTL_PATH_PARAMS_MAX)
                return 0;
            memcpy(r->params[nparam], s, n);
            r->params[nparam++][n] = '\0';
            s += n;
            p += 2;
        } else if (*p++ != *s++) {
            return 0;
        }
    }
    if (s < end && *s == '/' && s + 1 == end) /* tolerate one trailing slash */
        s++;
    return *p == '\0' && s == end;
}

/* Authenticates "Authorization: Bearer rb_…" against api_keys by SHA-256. */
static int authenticate(ctl_req_t *r)
{
    static const char sql[] = "SELECT k.id, k.role, k.user_id FROM api_keys k WHERE k.key_hash = "
                              "decode($1, 'hex') AND k.revoked_at IS NULL";
    size_t len;
    const char *h = rb_http_header(r->req, "authorization", &len);
    uint8_t digest[RB_SHA256_LEN];
    char hex[2 * RB_SHA256_LEN + 1];
    const char *params[1] = {hex};
    PGresult *res = NULL;
    rb_err_t err;

    if (h == NULL || len < 7 || len > AUTH_HEADER_MAX || strncasecmp(h, "Bearer ", 7) != 0) {
        ctl_error(r, 401, "unauthorized", "missing Authorization: Bearer <api key>", NULL);
        return -1;
    }
    rb_sha256(h + 7, len - 7, digest);
    rb_hex(digest, sizeof(digest), hex, sizeof(hex));
    if ((err = ctl_db_query(r->db, sql, 1, params, &res)) != RB_OK) {
        ctl_error_db(r, err);
        return -1;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        ctl_error(r, 401, "unauthorized", "invalid or revoked API key", NULL);
        return -1;
    }
    r->auth.ok = 1;
    snprintf(r->auth.key_id, sizeof(r->auth.key_id), "%s", PQgetvalue(res, 0, 0));
    r->auth.admin = strcmp(PQgetvalue(res, 0, 1), "admin") == 0;
    snprintf(r->auth.user_id, sizeof(r->auth.user_id), "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    return 0;
}

static int parse_body(ctl_req_t *r)
{
    rb_err_t err;
    const rb_json_limits_t lim = {.depth_max = 16, .tokens_max = 4096};

    /* An empty body reads as the empty object: handlers never see a NULL document. */
    if (r->req->entity.base == NULL || r->req->entity.len == 0)
        err = rb_json_parse("{}", 2, &lim, &r->body);
    else
        err = rb_json_parse(r->req->entity.base, r->req->entity.len, &lim, &r->body);
    if (err != RB_OK || rb_json_type(r->body, 0) != RB_JSON_OBJECT) {
        ctl_error(r, 400, "invalid_json",
                  err == RB_ERR_LIMIT ? "request body is nested too deeply or too large"
                                      : "request body must be a JSON object",
                  NULL);
        return -1;
    }
    return 0;
}

/* Handles the request; returns the route pattern it matched (for metrics), or NULL. */
static const char *dispatch(ctl_req_t *r, const char *path, size_t len)
{
    const char *known = NULL;

    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!match(routes[i].pattern, path, len, r))
            continue;
        known = routes[i].pattern;
        if (!rb_http_method_is(r->req, routes[i].method))
            continue;
        if ((routes[i].public || authenticate(r) == 0) && parse_body(r) == 0)
            routes[i].fn(r);
        return known;
    }
    if (known != NULL)
        ctl_error(r, 405, "method_not_allowed", "method not allowed on this path", NULL);
    else
        ctl_error(r, 404, "not_found", "no such endpoint", NULL);
    return known;
}

/* rigbox_control_requests_total{method,route,status} and
 * rigbox_control_request_duration_seconds{route}: route is the pattern matched
 * ("/workspaces/{}/start") or "unmatched", method one of the five the API uses or "other", so no
 * label value comes from the client. */
static void request_metrics(ctl_req_t *r, const char *route, int64_t us)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    const char *method = "other";
    char labels[192];

    if (r->app->metrics == NULL)
        return;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (rb_http_method_is(r->req, methods[i]))
            method = methods[i];
    if (route == NULL)
        route = "unmatched";
    snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s\",status=\"%d\"", method, route,
             r->req->res.status);
    rb_metric_add(rb_metrics_get(r->app->metrics, RB_METRIC_COUNTER,
                                 "rigbox_control_requests_total",
                                 "API requests by method, route and HTTP status", labels),
                  1);
    snprintf(labels, sizeof(labels), "route=\"%s\"", route);
    rb_metric_observe_us(rb_metrics_get(r->app->metrics, RB_METRIC_HISTOGRAM,
                                        "rigbox_control_request_duration_seconds",
                                        "API request handling time (a stream: until "
                                        "its first bytes)",
                                        labels),
                         us);
}

static int on_api(h2o_handler_t *self, h2o_req_t *req)
{
    api_handler_t *h = (api_handler_t *)self;
    rb_worker_t *w = rb_server_worker(req);
    h2o_iovec_t path = rb_http_path(req);
    size_t prefix = req->pathconf->path.len;
    ctl_worker_t *cw = w->data;
    ctl_req_t r = {.req = req, .app = h->app, .db = &cw->db, .worker = cw};
    struct timespec t0, t1;
    const char *route;

    RB_ASSERT(path.len >= prefix);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    route = dispatch(&r, path.base + prefix, path.len - prefix);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    request_metrics(&r, route,
                    (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
    rb_json_free(r.body);
    return 0;
}

void ctl_api_register(rb_server_t *server, h2o_hostconf_t *hc, ctl_app_t *app)
{
    /* /api/v1 first: h2o picks the first registered prefix that matches. */
    api_handler_t *h = (api_handler_t *)rb_server_route(hc, "/api/v1", on_api, sizeof(*h));

    app->metrics = rb_server_metrics(server);
    h->app = app;
    h = (api_handler_t *)rb_server_route(hc, "/api", on_api, sizeof(*h));
    h->app = app;
    rb_server_error_body(hc, error_early);
}
