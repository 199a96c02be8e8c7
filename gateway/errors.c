#include "gateway/errors.h"

#include <string.h>
#include <time.h>

#include "common/crypto.h"
#include "common/http.h"
#include "common/json.h"

/* Longest error body we build (a message is short text, never user content of any size). */
#define GW_ERRORS_BODY_MAX 4096
/* Room for a request id made for an early refusal (GW_PROXY_REQUEST_ID_MAX). */
#define GW_ERRORS_REQUEST_ID_MAX 48

const char *gw_errors_type(gw_dialect_t d, int status)
{
    if (d == GW_DIALECT_ANTHROPIC) {
        switch (status) {
        case 400:
            return "invalid_request_error";
        case 401:
            return "authentication_error";
        case 402:
            return "billing_error";
        case 403:
            return "permission_error";
        case 404:
            return "not_found_error";
        case 413:
            return "request_too_large";
        case 429:
            return "rate_limit_error";
        case 504:
            return "timeout_error";
        case 529:
            return "overloaded_error";
        default:
            return status >= 500 ? "api_error" : "invalid_request_error";
        }
    }
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "insufficient_quota";
    case 403:
        return "permission_error";
    case 404:
        return "invalid_request_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

void gw_errors_body(rb_buf_t *out, gw_dialect_t d, int status, const char *code,
                    const char *message, const char *param)
{
    rb_jw_t w;

    RB_ASSERT(out != NULL && message != NULL);
    rb_jw_init(&w, out);
    rb_jw_obj_begin(&w);
    if (d == GW_DIALECT_ANTHROPIC) {
        rb_jw_key(&w, "type");
        rb_jw_str(&w, "error");
        rb_jw_key(&w, "error");
        rb_jw_obj_begin(&w);
        rb_jw_key(&w, "type");
        rb_jw_str(&w, gw_errors_type(d, status));
        rb_jw_key(&w, "message");
        rb_jw_str(&w, message);
        rb_jw_obj_end(&w);
    } else {
        rb_jw_key(&w, "error");
        rb_jw_obj_begin(&w);
        rb_jw_key(&w, "message");
        rb_jw_str(&w, message);
        rb_jw_key(&w, "type");
        rb_jw_str(&w, gw_errors_type(d, status));
        rb_jw_key(&w, "param");
        if (param != NULL)
            rb_jw_str(&w, param);
        else
            rb_jw_null(&w);
        rb_jw_key(&w, "code");
        if (code != NULL)
            rb_jw_str(&w, code);
        else
            rb_jw_null(&w);
        rb_jw_obj_end(&w);
    }
    rb_jw_obj_end(&w);
    RB_ASSERT(w.depth == 0);
}

void gw_errors_early(h2o_req_t *req, int status, rb_buf_t *out)
{
    static const char anthropic[] = "/v1/messages";
    h2o_iovec_t path = req->input.path, method = req->input.method;
    gw_dialect_t d = path.len >= sizeof(anthropic) - 1 &&
                             memcmp(path.base, anthropic, sizeof(anthropic) - 1) == 0
                         ? GW_DIALECT_ANTHROPIC
                         : GW_DIALECT_OPENAI;
    char url[256];
    const char *code = "http_error", *msg = rb_http_reason(status);

    switch (status) {
    case 413:
        code = "request_too_large";
        msg = "the request body is larger than this gateway accepts";
        break;
    case 404: /* OpenAI's own words for an unknown path */
        code = "not_found";
        snprintf(url, sizeof(url), "Invalid URL (%.*s %.*s)",
                 (int)(method.len > 16 ? 16 : method.len), method.base,
                 (int)(path.len > 160 ? 160 : path.len), path.base);
        msg = url;
        break;
    case 400:
        code = "invalid_request";
        msg = "malformed HTTP request";
        break;
    }
    gw_errors_body(out, d, status, code, msg, NULL);
    {
        /* every answer carries one; no usage row is written for these */
        char id[GW_ERRORS_REQUEST_ID_MAX];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rb_sortable_id("req_", (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, id,
                       sizeof(id));
        rb_http_add_header(req, "x-rigbox-request-id", id);
    }
}

void gw_errors_early_send(h2o_req_t *req, int status)
{
    rb_buf_t body;

    rb_buf_init(&body, GW_ERRORS_BODY_MAX);
    gw_errors_early(req, status, &body);
    rb_http_send_json(req, status, &body);
    rb_buf_free(&body);
}

void gw_errors_send(h2o_req_t *req, gw_dialect_t d, int status, const char *code,
                    const char *message, const char *param, const char *request_id)
{
    rb_buf_t body;

    RB_ASSERT(req != NULL && status >= 400);
    rb_buf_init(&body, GW_ERRORS_BODY_MAX);
    gw_errors_body(&body, d, status, code, message, param);
    if (request_id != NULL)
        rb_http_add_header(req, "x-rigbox-request-id", request_id);
    rb_http_send_json(req, status, &body);
    rb_buf_free(&body);
}
