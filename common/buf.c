#include "common/buf.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"

void rb_buf_init(rb_buf_t *b, size_t len_max)
{
    *b = (rb_buf_t){.len_max = len_max};
}

void rb_buf_free(rb_buf_t *b)
{
    free(b->base);
    *b = (rb_buf_t){.len_max = b->len_max};
}

/* Ensures room for n more bytes plus a NUL. */
static int reserve(rb_buf_t *b, size_t n)
{
    size_t need;
    if (__builtin_add_overflow(b->len, n, &need) || (b->len_max != 0 && need > b->len_max)) {
        b->overflow = 1;
        return -1;
    }
    if (need + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 256 : b->cap;
        while (cap < need + 1)
            cap *= 2;
        b->base = rb_realloc(b->base, cap);
        b->cap = cap;
    }
    return 0;
}

int rb_buf_append(rb_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (reserve(b, n) != 0)
        return -1;
    memcpy(b->base + b->len, p, n);
    b->len += n;
    return 0;
}

int rb_buf_puts(rb_buf_t *b, const char *s)
{
    return rb_buf_append(b, s, strlen(s));
}

int rb_buf_printf(rb_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    RB_ASSERT(n >= 0);
    if (reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *rb_buf_cstr(rb_buf_t *b)
{
    if (b->base == NULL || b->len + 1 > b->cap) {
        size_t saved = b->len_max;
        b->len_max = 0;
        reserve(b, 0);
        b->len_max = saved;
    }
    b->base[b->len] = '\0';
    return b->base;
}

void rb_buf_consume(rb_buf_t *b, size_t n)
{
    RB_ASSERT(n <= b->len);
    memmove(b->base, b->base + n, b->len - n);
    b->len -= n;
}
