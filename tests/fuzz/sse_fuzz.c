/*
 * Fuzz target for gateway/sse.c. The first byte picks line_max; the rest is the stream. The events
 * (names, data, offsets) and the final error of a one-shot feed must equal those of a feed split at
 * pseudo-random points derived from the input, and every event must lie inside the stream.
 */
#include <stdint.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    rb_buf_t log;
    uint64_t total;
    size_t line_max;
} fuzz_ctx_t;

static void on_event(void *ctx, const gw_sse_event_t *ev)
{
    fuzz_ctx_t *c = ctx;

    RB_ASSERT(ev->start_off < ev->end_off && ev->end_off <= c->total);
    RB_ASSERT(ev->data_len <= c->line_max && ev->name_len <= GW_SSE_NAME_MAX);
    RB_ASSERT(ev->data[ev->data_len] == '\0');
    rb_buf_append(&c->log, &ev->start_off, sizeof(ev->start_off));
    rb_buf_append(&c->log, &ev->end_off, sizeof(ev->end_off));
    rb_buf_append(&c->log, &ev->name_len, sizeof(ev->name_len));
    rb_buf_append(&c->log, ev->name, ev->name_len);
    rb_buf_append(&c->log, &ev->data_len, sizeof(ev->data_len));
    rb_buf_append(&c->log, ev->data, ev->data_len);
}

static rb_err_t run(const char *s, size_t len, size_t line_max, uint32_t seed, fuzz_ctx_t *c)
{
    gw_sse_parser_t p;
    rb_err_t err = RB_OK;

    c->total = len;
    c->line_max = line_max;
    gw_sse_parser_init(&p, line_max);
    for (size_t i = 0; i < len && err == RB_OK;) {
        size_t n = len - i;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 16) % 17;
            n = n > len - i ? len - i : n;
        }
        err = gw_sse_feed(&p, s + i, n, on_event, c);
        i += n;
    }
    RB_ASSERT(gw_sse_pending_start(&p) <= len);
    gw_sse_parser_dispose(&p);
    return err;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_ctx_t whole, split;
    size_t line_max;
    uint32_t seed = 1;
    rb_err_t e1, e2;

    if (size == 0)
        return 0;
    line_max = data[0] < 128 ? 1 + data[0] : 4096;
    for (size_t i = 0; i < size; i++)
        seed = seed * 31u + data[i];
    rb_buf_init(&whole.log, 0);
    rb_buf_init(&split.log, 0);
    e1 = run((const char *)data + 1, size - 1, line_max, 0, &whole);
    e2 = run((const char *)data + 1, size - 1, line_max, seed | 1u, &split);
    RB_ASSERT(e1 == e2);
    RB_ASSERT(whole.log.len == split.log.len);
    RB_ASSERT(whole.log.len == 0 || memcmp(whole.log.base, split.log.base, whole.log.len) == 0);
    rb_buf_free(&whole.log);
    rb_buf_free(&split.log);
    return 0;
}
