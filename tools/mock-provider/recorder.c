/*
 * The request recorder: a ring of the last `cap` requests as JSON objects. Owned by main(); every
 * worker thread adds to it, so one mutex guards it. Entries are built before the lock is taken and
 * freed after it is released, so the critical sections are a few pointer moves.
 */
#include "tools/mock-provider/mock.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void mock_recorder_init(mock_recorder_t *r, size_t cap)
{
    RB_ASSERT(r != NULL);
    *r = (mock_recorder_t){.cap = cap};
    RB_ASSERT(pthread_mutex_init(&r->mu, NULL) == 0);
    if (cap > 0)
        r->slots = rb_calloc(cap, sizeof(*r->slots));
}

void mock_recorder_destroy(mock_recorder_t *r)
{
    RB_ASSERT(r != NULL);
    mock_recorder_clear(r);
    free(r->slots);
    pthread_mutex_destroy(&r->mu);
}

void mock_recorder_add(mock_recorder_t *r, const char *members, size_t len)
{
    char head[40];
    char *entry, *old;
    int hlen;

    RB_ASSERT(r != NULL && members != NULL);
    if (r->cap == 0)
        return;
    /* "seq" is filled in under the lock; reserve room for it first */
    entry = rb_malloc(sizeof(head) + len + 2);
    pthread_mutex_lock(&r->mu);
    hlen = snprintf(head, sizeof(head), "{\"seq\":%" PRIu64 ",", ++r->seq);
    old = r->slots[r->next];
    r->slots[r->next] = entry;
    r->next = (r->next + 1) % r->cap;
    if (r->count < r->cap)
        r->count++;
    memcpy(entry, head, (size_t)hlen); /* entry is not visible to readers until the unlock */
    memcpy(entry + hlen, members, len);
    memcpy(entry + hlen + len, "}", 2);
    pthread_mutex_unlock(&r->mu);
    free(old);
}

void mock_recorder_dump(mock_recorder_t *r, rb_buf_t *out)
{
    size_t first;

    RB_ASSERT(r != NULL && out != NULL);
    rb_buf_puts(out, "{\"requests\":[");
    pthread_mutex_lock(&r->mu);
    first = (r->next + r->cap - r->count) % (r->cap == 0 ? 1 : r->cap);
    for (size_t i = 0; i < r->count; i++) {
        if (i > 0)
            rb_buf_append(out, ",", 1);
        rb_buf_puts(out, r->slots[(first + i) % r->cap]);
    }
    pthread_mutex_unlock(&r->mu);
    rb_buf_puts(out, "]}");
}

void mock_recorder_clear(mock_recorder_t *r)
{
    RB_ASSERT(r != NULL);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->cap; i++) {
        free(r->slots[i]);
        r->slots[i] = NULL;
    }
    r->next = 0;
    r->count = 0;
    pthread_mutex_unlock(&r->mu);
}
