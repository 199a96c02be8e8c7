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

#endif
