#include "gateway/errors.h"

#include <string.h>

#include "common/http.h"
#include "common/json.h"

/* Longest error body we build (a message is short text, never user content of any size). */
#define GW_ERRORS_BODY_MAX 4096

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
