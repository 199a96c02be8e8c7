/* Tests for gateway/sse.c: the WHATWG event-stream rules, chunking independence, limits, offsets.
 */
#include "gateway/sse.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

/* The parser allocates only through rb_realloc; the test is linked with -Wl,--wrap=rb_realloc
 * (tests/unit/gateway/CMakeLists.txt) so that test_buffer_reused can count the calls. */
void *__real_rb_realloc(void *p, size_t n);
void *__wrap_rb_realloc(void *p, size_t n);
static int reallocs;

void *__wrap_rb_realloc(void *p, size_t n)
{
    reallocs++;
    return __real_rb_realloc(p, n);
}

#define REC_EVENTS_MAX 64
#define REC_TEXT_MAX   4096

typedef struct {
    char name[GW_SSE_NAME_MAX + 1];
    char data[REC_TEXT_MAX];
    size_t data_len;
    uint64_t start, end;
} rec_event_t;

typedef struct {
    rec_event_t ev[REC_EVENTS_MAX];
    int n;
} rec_t;

static void on_event(void *ctx, const gw_sse_event_t *ev)
{
    rec_t *r = ctx;
    rec_event_t *e;

    CHECK(ev->data[ev->data_len] == '\0');
    CHECK(ev->start_off < ev->end_off);
    if (r->n >= REC_EVENTS_MAX || ev->data_len >= REC_TEXT_MAX)
        return;
    e = &r->ev[r->n++];
    memcpy(e->name, ev->name, ev->name_len);
    e->name[ev->name_len] = '\0';
    memcpy(e->data, ev->data, ev->data_len);
    e->data[ev->data_len] = '\0';
    e->data_len = ev->data_len;
    e->start = ev->start_off;
    e->end = ev->end_off;
}

/* Feeds s in pieces of `step` bytes (0 = all at once); returns the first error. */
static rb_err_t feed_steps(const char *s, size_t len, size_t step, size_t line_max, rec_t *r)
{
    gw_sse_parser_t p;
    rb_err_t err = RB_OK;

    memset(r, 0, sizeof(*r));
    gw_sse_parser_init(&p, line_max);
    for (size_t i = 0; i < len && err == RB_OK;) {
        size_t n = step == 0 || step > len - i ? len - i : step;
        err = gw_sse_feed(&p, s + i, n, on_event, r);
        i += n;
    }
    gw_sse_parser_dispose(&p);
    return err;
}

static rb_err_t feed_all(const char *s, rec_t *r)
{
    return feed_steps(s, strlen(s), 0, 0, r);
}

static void test_basic_event(void)
{
    rec_t r;
    CHECK_INT_EQ(feed_all("data: hello\n\n", &r), RB_OK);
    CHECK_INT_EQ(r.n, 1);
    CHECK_STR_EQ(r.ev[0].name, "");
    CHECK_STR_EQ(r.ev[0].data, "hello");
    CHECK_INT_EQ(r.ev[0].start, 0);
    CHECK_INT_EQ(r.ev[0].end, 13);
}

static void test_field_rules(void)
{
    static const struct {
        const char *in, *name, *data;
        int events;
    } cases[] = {
        {"data: a\ndata: b\n\n", "", "a\nb", 1}, /* data lines joined with LF */
        {"data:x\n\n", "", "x", 1},              /* no space after the colon */
        {"data:  x\n\n", "", " x", 1},           /* only one space stripped */
        {"data\n\n", "", "", 1},                 /* field without a colon */
        {"data:\n\n", "", "", 1},                /* empty data still dispatches */
        {"data:\ndata:\n\n", "", "\n", 1},       /* two empty lines → one LF */
        {"event: ping\n\n", "", "", 0},          /* no data line → no event */
        {": comment\ndata: x\n\n", "", "x", 1},  /* comment ignored */
        {"event: message_start\ndata: {}\n\n", "message_start", "{}", 1},
        {"data: {}\nevent: late\n\n", "late", "{}", 1}, /* field order does not matter */
        {"id: 7\nretry: 100\ndata: x\n\n", "", "x", 1}, /* id/retry ignored */
        {"Data: x\n\n", "", "", 0},                     /* field names are case-sensitive */
        {"foo: bar\ndata: y\n\n", "", "y", 1},          /* unknown field ignored */
        {"data: a:b: c\n\n", "", "a:b: c", 1},          /* only the first colon splits */
        {"data: x\n", "", "", 0},                       /* incomplete event never fires */
        {"data: a\r\n\r\n", "", "a", 1},                /* CRLF */
        {"data: a\r\rdata: b\r\r", "", "a", 2},         /* CR only */
        {"data: a\n\ndata: b\r\n\r\n", "", "a", 2},     /* mixed */
        {"\xEF\xBB\xBF"
         "data: bom\n\n",
         "", "bom", 1},                                     /* leading BOM skipped */
        {"data: \xEF\xBB\xBF\n\n", "", "\xEF\xBB\xBF", 1},  /* BOM elsewhere is data */
        {"event: a\n\nevent: b\ndata: z\n\n", "b", "z", 1}, /* name reset by the blank line */
        {"\n\n\ndata: q\n\n", "", "q", 1},                  /* leading blank lines */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rec_t r;
        CHECK_INT_EQ(feed_all(cases[i].in, &r), RB_OK);
        CHECK_INT_EQ(r.n, cases[i].events);
        if (r.n > 0 && cases[i].events > 0) {
            CHECK_STR_EQ(r.ev[0].name, cases[i].name);
            CHECK_STR_EQ(r.ev[0].data, cases[i].data);
        }
        if (r.n != cases[i].events)
            fprintf(stderr, "  case %zu\n", i);
    }
}

static void test_bom_not_at_start_and_partial(void)
{
    rec_t r;
    /* a BOM prefix that turns out not to be one is line content: "\xEF\xBB" + "data" is no field */
    CHECK_INT_EQ(feed_all("\xEF\xBB"
                          "data: x\n\ndata: y\n\n",
                          &r),
                 RB_OK);
    CHECK_INT_EQ(r.n, 1);
    CHECK_STR_EQ(r.ev[0].data, "y");
    CHECK_INT_EQ(r.ev[0].start, 11);
    /* BOM then event, fed a byte at a time: offsets count the BOM bytes */
    CHECK_INT_EQ(feed_steps("\xEF\xBB\xBF"
                            "data: a\n\n",
                            12, 1, 0, &r),
                 RB_OK);
    CHECK_INT_EQ(r.n, 1);
    CHECK_STR_EQ(r.ev[0].data, "a");
    CHECK_INT_EQ(r.ev[0].start, 3);
    CHECK_INT_EQ(r.ev[0].end, 12);
}

static void test_embedded_nul(void)
{
    static const char in[] = "data: x\0y\n\n";
    rec_t r;
    CHECK_INT_EQ(feed_steps(in, sizeof(in) - 1, 0, 0, &r), RB_OK);
    CHECK_INT_EQ(r.n, 1);
    CHECK_INT_EQ(r.ev[0].data_len, 3);
    CHECK(memcmp(r.ev[0].data, "x\0y", 3) == 0);
}

static const char stream_mix[] = "\xEF\xBB\xBF: hello\r\n"
                                 "event: message_start\r\n"
                                 "data: {\"type\":\"message_start\"}\r\n"
                                 "\r\n"
                                 "data: one\rdata: two\r\r"
                                 "id: 1\n"
                                 "data: three\n"
                                 "\n"
                                 "event: ignored\n"
                                 "\n"
                                 "data:\n"
                                 "\n"
                                 ": keepalive\n\n"
                                 "event: message_stop\n"
                                 "data: {\"type\":\"message_stop\"}\r\n\r\n"
                                 "data: tail-without-blank\n";

static int rec_equal(const rec_t *a, const rec_t *b)
{
    if (a->n != b->n)
        return 0;
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->ev[i].name, b->ev[i].name) != 0 || a->ev[i].data_len != b->ev[i].data_len ||
            memcmp(a->ev[i].data, b->ev[i].data, a->ev[i].data_len) != 0 ||
            a->ev[i].start != b->ev[i].start || a->ev[i].end != b->ev[i].end)
            return 0;
    }
    return 1;
}

static void test_chunking_independent(void)
{
    rec_t whole, piece;
    size_t len = sizeof(stream_mix) - 1;

    CHECK_INT_EQ(feed_steps(stream_mix, len, 0, 0, &whole), RB_OK);
    CHECK_INT_EQ(whole.n, 5);
    CHECK_STR_EQ(whole.ev[0].name, "message_start");
    CHECK_STR_EQ(whole.ev[1].data, "one\ntwo");
    CHECK_STR_EQ(whole.ev[2].data, "three");
    CHECK_STR_EQ(whole.ev[3].data, "");
    CHECK_STR_EQ(whole.ev[4].name, "message_stop");
    for (size_t step = 1; step <= len; step++) {
        CHECK_INT_EQ(feed_steps(stream_mix, len, step, 0, &piece), RB_OK);
        CHECK(rec_equal(&whole, &piece));
    }
    /* random splits */
    srand(12345);
    for (int round = 0; round < 200; round++) {
        gw_sse_parser_t p;
        memset(&piece, 0, sizeof(piece));
        gw_sse_parser_init(&p, 0);
        for (size_t i = 0; i < len;) {
            size_t n = 1 + (size_t)rand() % 9;
            n = n > len - i ? len - i : n;
            CHECK_INT_EQ(gw_sse_feed(&p, stream_mix + i, n, on_event, &piece), RB_OK);
            i += n;
        }
        gw_sse_parser_dispose(&p);
        CHECK(rec_equal(&whole, &piece));
    }
}

static void test_crlf_split_across_feeds(void)
{
    gw_sse_parser_t p;
    rec_t r = {0};

    gw_sse_parser_init(&p, 0);
    CHECK_INT_EQ(gw_sse_feed(&p, "data: a\r", 8, on_event, &r), RB_OK);
    CHECK_INT_EQ(gw_sse_feed(&p, "\n\r", 2, on_event, &r), RB_OK);
    CHECK_INT_EQ(r.n, 1); /* dispatched at the blank line's CR */
    CHECK_INT_EQ(r.ev[0].end, 10);
    CHECK_INT_EQ(gw_sse_pending_start(&p), 10);
    CHECK_INT_EQ(gw_sse_feed(&p, "\n", 1, on_event, &r), RB_OK);
    CHECK_INT_EQ(gw_sse_pending_start(&p), 11); /* the skipped LF belongs to no event */
    CHECK_INT_EQ(gw_sse_feed(&p, "data: b\r\n\r\n", 11, on_event, &r), RB_OK);
    CHECK_INT_EQ(r.n, 2);
    CHECK_STR_EQ(r.ev[1].data, "b");
    CHECK_INT_EQ(r.ev[1].start, 11);
    CHECK_INT_EQ(r.ev[1].end, 21);
    gw_sse_parser_dispose(&p);
}

static void test_offsets_allow_stripping(void)
{
    static const char in[] = "data: {\"a\":1}\n\n"
                             ": c\n"
                             "data: {\"choices\":[],\"usage\":{}}\n\n"
                             "data: [DONE]\n\n";
    char out[sizeof(in)];
    size_t n = 0;
    rec_t r, again;

    CHECK_INT_EQ(feed_all(in, &r), RB_OK);
    CHECK_INT_EQ(r.n, 3);
    CHECK_INT_EQ(r.ev[1].start, 15); /* the comment line belongs to the event's block */
    CHECK(memcmp(in + r.ev[1].start, ": c\n", 4) == 0);
    memcpy(out, in, r.ev[1].start);
    n = r.ev[1].start;
    memcpy(out + n, in + r.ev[1].end, sizeof(in) - 1 - r.ev[1].end);
    n += sizeof(in) - 1 - r.ev[1].end;
    out[n] = '\0';
    CHECK_STR_EQ(out, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    CHECK_INT_EQ(feed_all(out, &again), RB_OK);
    CHECK_INT_EQ(again.n, 2);
    CHECK_STR_EQ(again.ev[1].data, "[DONE]");
}

static void test_pending_start(void)
{
    gw_sse_parser_t p;
    rec_t r = {0};

    gw_sse_parser_init(&p, 0);
    CHECK_INT_EQ(gw_sse_feed(&p, "data: a\n\ndata: par", 18, on_event, &r), RB_OK);
    CHECK_INT_EQ(r.n, 1);
    CHECK_INT_EQ(gw_sse_pending_start(&p), 9);
    CHECK_INT_EQ(gw_sse_feed(&p, "tial\n\n", 6, on_event, &r), RB_OK);
    CHECK_INT_EQ(r.n, 2);
    CHECK_STR_EQ(r.ev[1].data, "partial");
    CHECK_INT_EQ(gw_sse_pending_start(&p), 24);
    gw_sse_parser_dispose(&p);
}

static void test_limits(void)
{
    char big[200];
    gw_sse_parser_t p;
    rec_t r = {0};

    /* one line longer than line_max */
    memset(big, 'x', sizeof(big));
    memcpy(big, "data: ", 6);
    gw_sse_parser_init(&p, 100);
    CHECK_INT_EQ(gw_sse_feed(&p, "data: ok\n\n", 10, on_event, &r), RB_OK);
    CHECK_INT_EQ(gw_sse_feed(&p, big, sizeof(big), on_event, &r), RB_ERR_LIMIT);
    CHECK_INT_EQ(gw_sse_feed(&p, "\n\ndata: later\n\n", 15, on_event, &r), RB_ERR_LIMIT);
    CHECK_INT_EQ(r.n, 1); /* nothing after the failure */
    CHECK(p.cap <= 102);
    gw_sse_parser_dispose(&p);

    /* accumulated data of one event past line_max, each line short */
    gw_sse_parser_init(&p, 100);
    memset(&r, 0, sizeof(r));
    for (int i = 0; i < 8; i++) /* 11 bytes of data each; the 9th line would pass 100 */
        CHECK_INT_EQ(gw_sse_feed(&p, "data: 0123456789\n", 17, on_event, &r), RB_OK);
    CHECK_INT_EQ(gw_sse_feed(&p, "data: 0123456789\n", 17, on_event, &r), RB_ERR_LIMIT);
    CHECK_INT_EQ(r.n, 0);
    gw_sse_parser_dispose(&p);

    /* exactly line_max bytes of data is fine */
    CHECK_INT_EQ(feed_steps("data: 0123456789\n\n", 18, 0, 16, &r), RB_OK);
    CHECK_INT_EQ(r.n, 1);
    CHECK_INT_EQ(feed_steps("data: 0123456789\n\n", 18, 0, 15, &r), RB_ERR_LIMIT);

    /* an event name longer than GW_SSE_NAME_MAX */
    {
        char line[GW_SSE_NAME_MAX + 16];
        memcpy(line, "event: ", 7);
        memset(line + 7, 'n', GW_SSE_NAME_MAX + 1);
        line[7 + GW_SSE_NAME_MAX + 1] = '\n';
        CHECK_INT_EQ(feed_steps(line, GW_SSE_NAME_MAX + 9, 0, 0, &r), RB_ERR_LIMIT);
        CHECK_INT_EQ(feed_steps(line, GW_SSE_NAME_MAX + 8, 0, 0, &r), RB_OK); /* not ended yet */
    }
}

static void test_buffer_reused(void)
{
    gw_sse_parser_t p;
    rec_t r = {0};
    size_t cap_after_first;
    int reallocs_after_first, reallocs_before = reallocs;

    gw_sse_parser_init(&p, 0);
    CHECK_INT_EQ(gw_sse_feed(&p, "data: first\n\n", 13, on_event, &r), RB_OK);
    cap_after_first = p.cap;
    reallocs_after_first = reallocs;
    CHECK(cap_after_first == GW_SSE_BUF_INITIAL);
    CHECK_INT_EQ(reallocs_after_first - reallocs_before, 1); /* the counter sees the parser */
    for (int i = 0; i < 1000; i++) {
        r.n = 0;
        CHECK_INT_EQ(gw_sse_feed(&p, "event: e\ndata: {\"x\":1}\n\n", 24, on_event, &r), RB_OK);
        CHECK_INT_EQ(r.n, 1);
    }
    CHECK_INT_EQ(p.cap, cap_after_first);         /* no growth */
    CHECK_INT_EQ(reallocs, reallocs_after_first); /* no allocation per event */
    gw_sse_parser_dispose(&p);
}

TEST_MAIN(test_basic_event, test_field_rules, test_bom_not_at_start_and_partial, test_embedded_nul,
          test_chunking_independent, test_crlf_split_across_feeds, test_offsets_allow_stripping,
          test_pending_start, test_limits, test_buffer_reused)
