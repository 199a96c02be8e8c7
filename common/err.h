/*
 * Errors and assertions shared by every Rigbox binary.
 *
 * Operating errors (I/O, bad input, limits) are values of one enum, rb_err_t, with RB_OK = 0;
 * functions return it and callers decide. Programmer errors are assertions: RB_ASSERT stays on in
 * every build (NDEBUG does not remove it) and aborts with the file, line and expression. Any thread
 * may call these.
 */
#ifndef RB_COMMON_ERR_H
#define RB_COMMON_ERR_H

#include <stdio.h>
#include <stdlib.h>

/* X-macro: name, message. Add new codes at the end. */
#define RB_ERR_LIST(X)                                                                             \
    X(RB_OK, "ok")                                                                                 \
    X(RB_ERR_SYS, "system call failed")                                                            \
    X(RB_ERR_NOMEM, "out of memory")                                                               \
    X(RB_ERR_INVAL, "invalid argument")                                                            \
    X(RB_ERR_PARSE, "malformed input")                                                             \
    X(RB_ERR_LIMIT, "limit exceeded")                                                              \
    X(RB_ERR_NOTFOUND, "not found")                                                                \
    X(RB_ERR_EXISTS, "already exists")                                                             \
    X(RB_ERR_CONFLICT, "conflict")                                                                 \
    X(RB_ERR_DB, "database error")                                                                 \
    X(RB_ERR_IO, "i/o error")                                                                      \
    X(RB_ERR_TIMEOUT, "timed out")                                                                 \
    X(RB_ERR_UPSTREAM, "upstream error")                                                           \
    X(RB_ERR_AUTH, "not authorized")                                                               \
    X(RB_ERR_CONFIG, "bad configuration")                                                          \
    X(RB_ERR_STATE, "illegal state")                                                               \
    X(RB_ERR_CRYPTO, "cryptographic failure")

typedef enum {
#define RB_ERR_ENUM(name, msg) name,
    RB_ERR_LIST(RB_ERR_ENUM)
#undef RB_ERR_ENUM
        RB_ERR__COUNT
} rb_err_t;

/** The static message for an error code ("unknown error" for values out of range). */
const char *rb_err_str(rb_err_t err);

/** The enum name of an error code, e.g. "RB_ERR_PARSE". */
const char *rb_err_name(rb_err_t err);

/** Prints the failed expression with its location to stderr and aborts. Never returns. */
__attribute__((noreturn)) void rb_assert_fail(const char *expr, const char *file, int line);

/* Stays on in release builds: a violated invariant is a bug and must stop the process. */
#define RB_ASSERT(expr) ((expr) ? (void)0 : rb_assert_fail(#expr, __FILE__, __LINE__))

/* Marks code that must never run. */
#define RB_UNREACHABLE() rb_assert_fail("unreachable", __FILE__, __LINE__)

/** Allocation that never returns NULL: out of memory is fatal (STYLE.md rule 10). */
void *rb_malloc(size_t n);
/** Zeroed rb_malloc. */
void *rb_calloc(size_t count, size_t size);
/** realloc that never returns NULL. */
void *rb_realloc(void *p, size_t n);
/** strdup that never returns NULL; returns owned (free with free()). */
char *rb_strdup(const char *s);
/** strndup that never returns NULL; returns owned (free with free()). */
char *rb_strndup(const char *s, size_t n);

#endif
