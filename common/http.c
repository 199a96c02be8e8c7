#include "common/http.h"

#include <ctype.h>
#include <string.h>

#include "common/err.h"

const char *rb_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 529:
        return "Site Overloaded";
    default:
        return "Status";
    }
}

void rb_http_send(h2o_req_t *req, int status, const char *content_type, const char *body,
                  size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t iov = h2o_strdup(&req->pool, body, len);

    req->res.status = status;
    req->res.reason = rb_http_reason(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
    h2o_start_response(req, &generator);
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        iov.len = 0; /* the headers of the answer a GET would have had, never its body */
    h2o_send(req, &iov, 1, H2O_SEND_STATE_FINAL);
}

void rb_http_send_json(h2o_req_t *req, int status, const rb_buf_t *body)
{
    rb_http_send(req, status, "application/json", body->base != NULL ? body->base : "", body->len);
}

void rb_http_add_header(h2o_req_t *req, const char *name, const char *value)
{
    h2o_iovec_t v = h2o_strdup(&req->pool, value, strlen(value));
    h2o_iovec_t n = h2o_strdup(&req->pool, name, strlen(name));
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 0, NULL, v.base, v.len);
}

const char *rb_http_header(h2o_req_t *req, const char *name, size_t *len_out)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i == -1)
        return NULL;
    if (len_out != NULL)
        *len_out = req->headers.entries[i].value.len;
    return req->headers.entries[i].value.base;
}

const char *rb_http_header_list(h2o_req_t *req, const char *name, size_t *len_out)
{
    size_t nlen = strlen(name), total = 0, n = 0;
    ssize_t first = h2o_find_header_by_str(&req->headers, name, nlen, -1), i = first;
    char *joined;

    for (; i != -1; i = h2o_find_header_by_str(&req->headers, name, nlen, i), n++)
        total += req->headers.entries[i].value.len + 2;
    if (n <= 1)
        return rb_http_header(req, name, len_out);
    joined = h2o_mem_alloc_pool(&req->pool, total);
    total = 0;
    for (i = first; i != -1; i = h2o_find_header_by_str(&req->headers, name, nlen, i)) {
        if (total > 0) {
            memcpy(joined + total, ", ", 2);
            total += 2;
        }
        memcpy(joined + total, req->headers.entries[i].value.base,
               req->headers.entries[i].value.len);
        total += req->headers.entries[i].value.len;
    }
    if (len_out != NULL)
        *len_out = total;
    return joined;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* URL-decodes src[0..n) into buf (a query value when plus_space: '+' is a space); returns the
 * length or -1. */
static ssize_t url_decode(const char *src, size_t n, char *buf, size_t cap, int plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)src[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval(src[i + 1])) < 0 || (lo = hexval(src[i + 2])) < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -1;
        buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return (ssize_t)o;
}

int rb_http_query(h2o_req_t *req, const char *name, char *buf, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p, *end;

    RB_ASSERT(cap > 0);
    if (req->query_at == SIZE_MAX)
        return 0;
    p = req->path.base + req->query_at + 1;
    end = req->path.base + req->path.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pend = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pend - p));
        const char *kend = eq != NULL ? eq : pend;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            const char *v = eq != NULL ? eq + 1 : pend;
            return url_decode(v, (size_t)(pend - v), buf, cap, 1) < 0 ? -1 : 1;
        }
        p = pend + 1;
    }
    return 0;
}

ssize_t rb_http_path_decode(const char *src, size_t n, char *buf, size_t cap)
{
    RB_ASSERT(cap > 0);
    return url_decode(src, n, buf, cap, 0);
}

int rb_http_method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

h2o_iovec_t rb_http_path(h2o_req_t *req)
{
    size_t len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    return h2o_iovec_init(req->path.base, len);
}
