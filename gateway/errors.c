#include "gateway/errors.h"

#include <string.h>
#include <time.h>

#include "common/crypto.h"
#include "common/http.h"
#include "common/json.h"

/* Longest error body we build (a message is short text, never user content of any size). */
#define GW_ERRORS_BODY_MAX 4096
/* A provider's error type, code or param kept (longer ones are dropped), and its message. */
#define GW_ERRORS_FIELD_MAX   128
#define GW_ERRORS_MESSAGE_MAX 1024
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

/* gw_errors_body with the error type given. */
static void errors_body_typed(rb_buf_t *out, gw_dialect_t d, const char *type, const char *code,
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
        rb_jw_str(&w, type);
        rb_jw_key(&w, "message");
        rb_jw_str(&w, message);
        rb_jw_obj_end(&w);
    } else {
        rb_jw_key(&w, "error");
        rb_jw_obj_begin(&w);
        rb_jw_key(&w, "message");
        rb_jw_str(&w, message);
        rb_jw_key(&w, "type");
        rb_jw_str(&w, type);
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

void gw_errors_body(rb_buf_t *out, gw_dialect_t d, int status, const char *code,
                    const char *message, const char *param)
{
    errors_body_typed(out, d, gw_errors_type(d, status), code, message, param);
}

static int errors_word_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '*';
}

/* Whether w[0, n) may identify a provider account: a key (fragment), an organisation or project
 * id, or a UUID (Anthropic's organisation ids). */
static int errors_account_word(const char *w, size_t n)
{
    static const char *const prefixes[] = {"sk-", "org-", "proj_", "proj-"};
    int uuid = n == 36;

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (n > strlen(prefixes[i]) && strncmp(w, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    for (size_t i = 0; uuid && i < n; i++) {
        char ch = w[i];
        uuid =
            i == 8 || i == 13 || i == 18 || i == 23
                ? ch == '-'
                : (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
    }
    return uuid;
}

/* A type or code is an identifier, never free text: anything else in it becomes '_'. */
static void errors_identifier(char *s)
{
    for (; *s != '\0'; s++)
        if (!errors_word_char(*s))
            *s = '_';
}

void gw_errors_mask_account(char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        size_t start = i;
        while (i < len && errors_word_char(s[i]))
            i++;
        if (errors_account_word(s + start, i - start))
            memset(s + start, '*', i - start);
        if (i == start)
            i++;
    }
}

int gw_errors_from_provider(gw_dialect_t d, int status, const char *body, size_t len, rb_buf_t *out)
{
    char type[GW_ERRORS_FIELD_MAX] = "", code[GW_ERRORS_FIELD_MAX] = "",
         param[GW_ERRORS_FIELD_MAX] = "", message[GW_ERRORS_MESSAGE_MAX] = "";
    char plain[64]; /* the message when the provider's says nothing usable */
    rb_json_t *doc = NULL;
    int e = -1, have_code = 0, have_param = 0;

    RB_ASSERT(out != NULL);
    snprintf(plain, sizeof(plain), "the provider answered HTTP %d", status);
    if (status < 400) { /* a redirect or such: curl follows none, and it answers nothing */
        gw_errors_body(out, d, 502, "upstream_error", plain, NULL);
        return 502;
    }
    if (status == 401 || status == 403) {
        gw_errors_body(out, d, 502, "upstream_auth_failed",
                       "the provider refused the operator's key for this model; the operator of "
                       "this gateway must renew or fix it",
                       NULL);
        return 502;
    }
    if (body != NULL && rb_json_parse(body, len, NULL, &doc) == RB_OK)
        e = rb_json_member(doc, 0, "error");
    if (e < 0 || rb_json_type(doc, e) != RB_JSON_OBJECT ||
        rb_json_get_str(doc, e, "type", type, sizeof(type)) != RB_OK || type[0] == '\0') {
        gw_errors_body(out, d, status, "upstream_error", plain, NULL);
        rb_json_free(doc);
        return status;
    }
    have_code = rb_json_get_str(doc, e, "code", code, sizeof(code)) == RB_OK;
    have_param = rb_json_get_str(doc, e, "param", param, sizeof(param)) == RB_OK;
    if (rb_json_get_str(doc, e, "message", message, sizeof(message)) != RB_OK) /* or too long */
        snprintf(message, sizeof(message), "%s", plain);
    if ((have_code && strcmp(code, "insufficient_quota") == 0) ||
        (status == 400 && strstr(message, "credit balance") != NULL)) {
        /* the operator's account is out of money: not the caller's to retry or to fix */
        gw_errors_body(out, d, 502, "upstream_quota_exhausted",
                       "the provider refused the operator's account for lack of credit; the "
                       "operator of this gateway must top it up",
                       NULL);
        rb_json_free(doc);
        return 502;
    }
    if (status == 429)
        snprintf(message, sizeof(message),
                 "the provider is limiting calls to this model; retry later");
    gw_errors_mask_account(message, strlen(message));
    gw_errors_mask_account(param, strlen(param));
    errors_identifier(type);
    errors_identifier(code);
    errors_body_typed(out, d, type, have_code && code[0] != '\0' ? code : NULL, message,
                      have_param && param[0] != '\0' ? param : NULL);
    rb_json_free(doc);
    return status;
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
