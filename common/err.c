#include "common/err.h"

#include <string.h>

static const char *const err_msgs[] = {
#define RB_ERR_MSG(name, msg) msg,
    RB_ERR_LIST(RB_ERR_MSG)
#undef RB_ERR_MSG
};

static const char *const err_names[] = {
#define RB_ERR_NAME(name, msg) #name,
    RB_ERR_LIST(RB_ERR_NAME)
#undef RB_ERR_NAME
};

const char *rb_err_str(rb_err_t err)
{
    if ((unsigned)err >= RB_ERR__COUNT)
        return "unknown error";
    return err_msgs[err];
}

const char *rb_err_name(rb_err_t err)
{
    if ((unsigned)err >= RB_ERR__COUNT)
        return "RB_ERR_UNKNOWN";
    return err_names[err];
}

void rb_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "assertion failed: %s at %s:%d\n", expr, file, line);
    fflush(stderr);
    abort();
}

static void *check_alloc(void *p)
{
    if (p == NULL) {
        fputs("fatal: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *rb_malloc(size_t n)
{
    return check_alloc(malloc(n == 0 ? 1 : n));
}

void *rb_calloc(size_t count, size_t size)
{
    return check_alloc(calloc(count == 0 ? 1 : count, size == 0 ? 1 : size));
}

void *rb_realloc(void *p, size_t n)
{
    return check_alloc(realloc(p, n == 0 ? 1 : n));
}

char *rb_strdup(const char *s)
{
    RB_ASSERT(s != NULL);
    return check_alloc(strdup(s));
}

char *rb_strndup(const char *s, size_t n)
{
    RB_ASSERT(s != NULL);
    return check_alloc(strndup(s, n));
}
