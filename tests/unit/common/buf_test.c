/*
 * Tests for common/buf.c: appends, printf, the len_max overflow flag, consume and cstr; and for
 * buf.h's inline helpers against the snprintf they replace.
 */
#include "common/buf.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "test.h"

static void test_append_grow(void)
{
    rb_buf_t b;
    char chunk[100];

    rb_buf_init(&b, 0);
    CHECK(b.base == NULL && b.len == 0); /* nothing allocated yet */
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 50; i++) /* 5000 bytes: several doublings */
        CHECK_INT_EQ(rb_buf_append(&b, chunk, sizeof(chunk)), 0);
    CHECK_INT_EQ(b.len, 5000);
    CHECK(b.cap > b.len);
    CHECK(b.base[0] == 'x' && b.base[4999] == 'x');
    CHECK_INT_EQ(rb_buf_append(&b, NULL, 0), 0);
    CHECK_INT_EQ(b.len, 5000);
    CHECK(!b.overflow);
    rb_buf_free(&b);
    CHECK(b.base == NULL && b.len == 0 && b.cap == 0);
}

static void test_puts_printf_cstr(void)
{
    rb_buf_t b;

    rb_buf_init(&b, 0);
    CHECK_STR_EQ(rb_buf_cstr(&b), ""); /* an empty buffer still gives a string */
    CHECK_INT_EQ(rb_buf_puts(&b, "model="), 0);
    CHECK_INT_EQ(rb_buf_printf(&b, "%s tokens=%d cost=%05.1f", "gpt", 42, 1.25), 0);
    CHECK_INT_EQ(b.len, strlen("model=gpt tokens=42 cost=001.2"));
    CHECK_STR_EQ(rb_buf_cstr(&b), "model=gpt tokens=42 cost=001.2");
    CHECK_INT_EQ(rb_buf_printf(&b, "%s", ""), 0);
    CHECK_INT_EQ(b.len, 30);
    rb_buf_free(&b);
}

static void test_len_max(void)
{
    rb_buf_t b;

    rb_buf_init(&b, 10);
    CHECK_INT_EQ(rb_buf_append(&b, "0123456789", 10), 0); /* exactly len_max is fine */
    CHECK(!b.overflow);
    CHECK_INT_EQ(rb_buf_append(&b, "a", 1), -1);
    CHECK(b.overflow);
    CHECK_INT_EQ(b.len, 10);                     /* the failed append was dropped whole */
    CHECK_STR_EQ(rb_buf_cstr(&b), "0123456789"); /* cstr works at the limit */
    rb_buf_free(&b);
    CHECK_INT_EQ(b.len_max, 10); /* free keeps the limit */

    rb_buf_init(&b, 8);
    CHECK_INT_EQ(rb_buf_puts(&b, "abc"), 0);
    CHECK_INT_EQ(rb_buf_printf(&b, "%d", 123456), -1);
    CHECK(b.overflow);
    CHECK_STR_EQ(rb_buf_cstr(&b), "abc");
    rb_buf_free(&b);
}

static void test_consume(void)
{
    rb_buf_t b;

    rb_buf_init(&b, 0);
    rb_buf_puts(&b, "data: one\n\ndata: two\n\n");
    rb_buf_consume(&b, strlen("data: one\n\n"));
    CHECK_STR_EQ(rb_buf_cstr(&b), "data: two\n\n");
    rb_buf_consume(&b, 0);
    CHECK_INT_EQ(b.len, 11);
    rb_buf_consume(&b, b.len);
    CHECK_INT_EQ(b.len, 0);
    CHECK_STR_EQ(rb_buf_cstr(&b), "");
    rb_buf_puts(&b, "again");
    CHECK_STR_EQ(rb_buf_cstr(&b), "again");
    rb_buf_free(&b);
}

/* rb_fmt_int64 writes what snprintf("%" PRId64) writes, at both ends of the range and around
 * every power of ten. */
static void test_fmt_int64(void)
{
    int64_t vs[64 * 3 + 4];
    size_t n = 0;
    char got[RB_INT64_STR_MAX], want[32];

    vs[n++] = 0;
    vs[n++] = INT64_MAX;
    vs[n++] = INT64_MIN;
    vs[n++] = INT64_MIN + 1;
    for (int64_t p = 1; p <= INT64_MAX / 10; p *= 10) {
        vs[n++] = p - 1;
        vs[n++] = p;
        vs[n++] = -p;
    }
    for (size_t i = 0; i < n; i++) {
        memset(got, 'x', sizeof(got));
        snprintf(want, sizeof(want), "%" PRId64, vs[i]);
        CHECK_INT_EQ(rb_fmt_int64(got, vs[i]), strlen(want));
        CHECK_STR_EQ(got, want);
    }
    CHECK_INT_EQ(rb_fmt_int64(got, INT64_MIN), RB_INT64_STR_MAX - 1); /* the longest fits */
}

/* rb_copy_str copies what snprintf("%s") copies, cut to the room there is. */
static void test_copy_str(void)
{
    char got[8], want[8];
    const char *srcs[] = {"", "a", "1234567", "12345678", "123456789abc"};

    for (size_t i = 0; i < sizeof(srcs) / sizeof(srcs[0]); i++)
        for (size_t cap = 1; cap <= sizeof(got); cap++) {
            memset(got, 'x', sizeof(got));
            snprintf(want, cap, "%s", srcs[i]);
            rb_copy_str(got, cap, srcs[i]);
            CHECK_STR_EQ(got, want);
        }
    rb_copy_str(got, sizeof(got), NULL);
    CHECK_STR_EQ(got, "");
}

TEST_MAIN(test_append_grow, test_puts_printf_cstr, test_len_max, test_consume, test_fmt_int64,
          test_copy_str)
