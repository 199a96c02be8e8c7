/*
 * SSE parser: see sse.h. The buffer layout is [joined data][one spare byte][current line]; the
 * spare byte becomes the "\n" joiner when the next data line arrives, or the NUL terminator at
 * dispatch. A data line's value is moved left onto the end of the data, so each byte is copied at
 * most twice.
 */
#include "gateway/sse.h"

#include <string.h>

static const unsigned char sse_bom[3] = {0xEF, 0xBB, 0xBF};

void gw_sse_parser_init(gw_sse_parser_t *p, size_t line_max)
{
    RB_ASSERT(p != NULL);
    *p = (gw_sse_parser_t){.line_max = line_max != 0 ? line_max : GW_SSE_LINE_MAX_DEFAULT};
    RB_ASSERT(p->line_max < SIZE_MAX / 4);
}

void gw_sse_parser_dispose(gw_sse_parser_t *p)
{
    RB_ASSERT(p != NULL);
    free(p->buf);
    p->buf = NULL;
    p->cap = 0;
}

uint64_t gw_sse_pending_start(const gw_sse_parser_t *p)
{
    RB_ASSERT(p->block_start <= p->off);
    return p->block_start;
}

/* Appends n bytes to the current line, growing the buffer within line_max. */
static rb_err_t sse_line_append(gw_sse_parser_t *p, const char *bytes, size_t n)
{
    size_t need;

    if (n == 0)
        return RB_OK;
    if (p->data_len + p->line_len + n > p->line_max) {
        p->failed = 1;
        return RB_ERR_LIMIT;
    }
    need = p->data_len + p->line_len + n + 2; /* spare byte + NUL room */
    if (need > p->cap) {
        size_t cap = p->cap != 0 ? p->cap : GW_SSE_BUF_INITIAL;
        while (cap < need)
            cap *= 2;
        if (cap > p->line_max + 2)
            cap = p->line_max + 2;
        RB_ASSERT(cap >= need);
        p->buf = rb_realloc(p->buf, cap);
        p->cap = cap;
    }
    memcpy(p->buf + p->data_len + 1 + p->line_len, bytes, n);
    p->line_len += n;
    p->block_open = 1;
    return RB_OK;
}

static void sse_dispatch(gw_sse_parser_t *p, gw_sse_on_event_cb cb, void *ctx)
{
    if (p->has_data) {
        gw_sse_event_t ev;
        RB_ASSERT(p->buf != NULL); /* a "data" line was buffered */
        p->buf[p->data_len] = '\0';
        ev.data = p->buf;
        ev.data_len = p->data_len;
        ev.name = p->name;
        ev.name_len = p->name_len;
        ev.start_off = p->block_start;
        ev.end_off = p->off;
        RB_ASSERT(ev.start_off < ev.end_off);
        cb(ctx, &ev);
    }
    /* SSE: at a blank line the data and event type buffers are reset, dispatched or not */
    p->data_len = 0;
    p->has_data = 0;
    p->name_len = 0;
    p->block_open = 0;
    p->block_start = p->off;
}

/* One complete non-blank line (without its terminator) sits after the data. */
static rb_err_t sse_process_field(gw_sse_parser_t *p)
{
    char *line = p->buf + p->data_len + 1;
    const char *colon, *value;
    size_t field_len, value_len;

    RB_ASSERT(p->line_len > 0);
    if (line[0] == ':') /* SSE: a line starting with ':' is a comment */
        return RB_OK;
    colon = memchr(line, ':', p->line_len);
    field_len = colon != NULL ? (size_t)(colon - line) : p->line_len;
    value = colon != NULL ? colon + 1 : line + p->line_len;
    value_len = p->line_len - (size_t)(value - line);
    if (value_len > 0 && value[0] == ' ') { /* SSE: one leading space of the value is dropped */
        value++;
        value_len--;
    }
    if (field_len == 5 && memcmp(line, "event", 5) == 0) {
        if (value_len > GW_SSE_NAME_MAX) {
            p->failed = 1;
            return RB_ERR_LIMIT;
        }
        memcpy(p->name, value, value_len);
        p->name_len = value_len;
    } else if (field_len == 4 && memcmp(line, "data", 4) == 0) {
        /* SSE: append the value, then a LF; the final LF is removed at dispatch */
        if (p->has_data)
            p->buf[p->data_len++] = '\n';
        memmove(p->buf + p->data_len, value, value_len);
        p->data_len += value_len;
        p->has_data = 1;
    }
    /* "id" and "retry" are valid fields the gateway has no use for; unknown fields are ignored. */
    return RB_OK;
}

static rb_err_t sse_end_line(gw_sse_parser_t *p, gw_sse_on_event_cb cb, void *ctx)
{
    rb_err_t err = RB_OK;

    if (p->line_len == 0) {
        sse_dispatch(p, cb, ctx);
        return RB_OK;
    }
    err = sse_process_field(p);
    p->line_len = 0;
    return err;
}

/* A UTF-8 BOM at the very start of the stream is not part of the first line. Consumes bytes while
 * the decision is open; on a mismatch the held BOM prefix becomes line content. */
static rb_err_t sse_skip_bom(gw_sse_parser_t *p, const char *bytes, size_t len, size_t *i)
{
    while (p->bom_seen < 3 && *i < len) {
        if ((unsigned char)bytes[*i] != sse_bom[p->bom_seen]) {
            unsigned held = p->bom_seen;
            p->bom_seen = 4;
            return sse_line_append(p, (const char *)sse_bom, held);
        }
        p->bom_seen++;
        p->off++;
        (*i)++;
    }
    if (p->bom_seen == 3) {
        p->bom_seen = 4;
        p->block_start = p->off;
    }
    return RB_OK;
}

rb_err_t gw_sse_feed(gw_sse_parser_t *p, const char *bytes, size_t len, gw_sse_on_event_cb cb,
                     void *ctx)
{
    rb_err_t err = RB_OK;
    size_t i = 0;

    RB_ASSERT(p != NULL && cb != NULL && (bytes != NULL || len == 0));
    if (p->failed)
        return RB_ERR_LIMIT;
    if (p->bom_seen < 4 && (err = sse_skip_bom(p, bytes, len, &i)) != RB_OK)
        return err;
    while (i < len) {
        size_t j = i;
        if (p->pending_cr) {
            p->pending_cr = 0;
            if (bytes[i] == '\n') { /* SSE: CRLF is one line terminator */
                i++;
                p->off++;
                if (!p->block_open)
                    p->block_start = p->off;
                continue;
            }
        }
        while (j < len && bytes[j] != '\n' && bytes[j] != '\r')
            j++;
        if ((err = sse_line_append(p, bytes + i, j - i)) != RB_OK)
            return err;
        p->off += j - i;
        if (j == len)
            break;
        p->pending_cr = bytes[j] == '\r';
        p->off++;
        i = j + 1;
        if ((err = sse_end_line(p, cb, ctx)) != RB_OK)
            return err;
    }
    RB_ASSERT(p->block_start <= p->off);
    return RB_OK;
}
