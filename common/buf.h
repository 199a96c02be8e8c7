/*
 * rb_buf_t: a growable byte buffer (pointer, length, capacity). The buffer owns its bytes; free
 * with rb_buf_free. Growth past `len_max` (0 = unbounded) sets `overflow` and drops the append, so
 * callers can bound memory and report a clear error once at the end. Single-threaded: one owner at
 * a time.
 */
#ifndef RB_COMMON_BUF_H
#define RB_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct st_rb_buf_t {
    char *base;
    size_t len;
    size_t cap;
    size_t len_max; /* 0 = no limit */
    int overflow;   /* set when an append would have passed len_max */
} rb_buf_t;

/** An empty buffer with an optional size limit (0 = none); allocates nothing yet. */
void rb_buf_init(rb_buf_t *b, size_t len_max);
/** Frees the bytes and resets to empty. */
void rb_buf_free(rb_buf_t *b);
/** Appends n bytes; returns 0, or -1 (and sets overflow) when len_max would be passed. */
int rb_buf_append(rb_buf_t *b, const void *p, size_t n);
/** Appends a NUL-terminated string. */
int rb_buf_puts(rb_buf_t *b, const char *s);
/** Appends printf-formatted text. */
int rb_buf_printf(rb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Makes sure base[len] is a NUL (not counted in len) and returns base. */
char *rb_buf_cstr(rb_buf_t *b);
/** Removes the first n bytes. */
void rb_buf_consume(rb_buf_t *b, size_t n);

/** Copies the C string src (NULL = "") into dst of cap > 0 bytes, cut to cap - 1 bytes. On the
 * request path in place of snprintf(dst, cap, "%s", src), which costs several times more. */
static inline void rb_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strlen(src) : 0;
    if (n > cap - 1)
        n = cap - 1;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Room for any int64_t in decimal: "-9223372036854775808" and a NUL. */
#define RB_INT64_STR_MAX 21

/** Writes v in decimal, NUL-terminated, at dst (RB_INT64_STR_MAX bytes); returns the length. In
 * place of snprintf(dst, cap, "%" PRId64, v) on the request path. */
static inline size_t rb_fmt_int64(char *dst, int64_t v)
{
    char tmp[RB_INT64_STR_MAX], *p = tmp + sizeof(tmp);
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n;

    do {
        *--p = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag != 0);
    if (v < 0)
        *--p = '-';
    n = (size_t)(tmp + sizeof(tmp) - p);
    memcpy(dst, p, n);
    dst[n] = '\0';
    return n;
}

#endif
