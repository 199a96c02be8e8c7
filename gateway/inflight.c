#include "gateway/inflight.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/usage.h"

/* "RBINFL" and the layout's version: a file of another layout is not read. */
#define INFLIGHT_MAGIC UINT64_C(0x52424e464c000001)
/* A held slot's state (a free one is 0). */
#define SLOT_HELD UINT64_C(0x48454c4400000001)

typedef struct st_inflight_header_t {
    uint64_t magic;
    uint64_t slot_size, slots; /* the layout this file was made with */
} inflight_header_t;

typedef struct st_inflight_slot_t {
    uint64_t state;       /* SLOT_HELD or 0; set last on begin, first on end */
    int64_t output_bytes; /* kept current by progress */
    gw_usage_t usage;     /* what the provider has said so far (progress) */
    gw_inflight_call_t call;
} inflight_slot_t;

struct st_gw_inflight_t {
    int fd;
    size_t map_len;
    inflight_header_t *hdr;
    inflight_slot_t *slots;
    pthread_mutex_t mu; /* guards the free stack */
    int free_stack[GW_INFLIGHT_SLOTS];
    size_t free_len;
};

static size_t file_len(void)
{
    return sizeof(inflight_header_t) + GW_INFLIGHT_SLOTS * sizeof(inflight_slot_t);
}

/* Maps the file at fd, made to the current layout; 0 or -1 (errno set). */
static int map_file(gw_inflight_t *f, int fresh)
{
    f->map_len = file_len();
    if (fresh && ftruncate(f->fd, 0) != 0)
        return -1;
    if (ftruncate(f->fd, (off_t)f->map_len) != 0)
        return -1;
    /* every block allocated now: a store into a hole of the shared mapping on a full disk is a
     * SIGBUS, so a full disk fails the start here, not a call later */
    if ((errno = posix_fallocate(f->fd, 0, (off_t)f->map_len)) != 0)
        return -1;
    f->hdr = mmap(NULL, f->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (f->hdr == MAP_FAILED) {
        f->hdr = NULL;
        return -1;
    }
    f->slots = (inflight_slot_t *)(f->hdr + 1);
    if (fresh)
        *f->hdr = (inflight_header_t){.magic = INFLIGHT_MAGIC,
                                      .slot_size = sizeof(inflight_slot_t),
                                      .slots = GW_INFLIGHT_SLOTS};
    return 0;
}

rb_err_t gw_inflight_open(const char *dir, gw_inflight_t **out, char *errbuf, size_t cap)
{
    gw_inflight_t *f = rb_calloc(1, sizeof(*f));
    char path[4096], aside[4096 + 16];
    inflight_header_t h = {0};
    struct stat st;
    int fresh;

    *out = NULL;
    snprintf(path, sizeof(path), "%s/inflight", dir);
    f->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f->fd == -1 || fstat(f->fd, &st) != 0) {
        snprintf(errbuf, cap, "%s: %s", path, strerror(errno));
        gw_inflight_close(f);
        return RB_ERR_SYS;
    }
    fresh = st.st_size == 0;
    if (!fresh && (pread(f->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
                   h.magic != INFLIGHT_MAGIC || h.slot_size != sizeof(inflight_slot_t) ||
                   h.slots != GW_INFLIGHT_SLOTS || (size_t)st.st_size != file_len())) {
        /* another layout: keep it for a person to look at, start a new one */
        snprintf(aside, sizeof(aside), "%s.unreadable", path);
        rb_log_error("inflight_unreadable", "path=%s bytes=%lld moved_to=%s", path,
                     (long long)st.st_size, aside);
        close(f->fd);
        if (rename(path, aside) != 0 ||
            (f->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1) {
            snprintf(errbuf, cap, "%s: %s", path, strerror(errno));
            f->fd = -1;
            gw_inflight_close(f);
            return RB_ERR_SYS;
        }
        fresh = 1;
    }
    if (map_file(f, fresh) != 0) {
        snprintf(errbuf, cap, "%s: %s", path, strerror(errno));
        gw_inflight_close(f);
        return RB_ERR_SYS;
    }
    pthread_mutex_init(&f->mu, NULL);
    for (int i = GW_INFLIGHT_SLOTS - 1; i >= 0; i--) /* slot 0 on top: the file's head is used */
        if (f->slots[i].state != SLOT_HELD)          /* held: gw_inflight_recover frees it */
            f->free_stack[f->free_len++] = i;
    *out = f;
    return RB_OK;
}

/* The record of a call left under way. */
static void interrupted_row(const inflight_slot_t *s, const char *error_code,
                            gw_db_usage_row_t *row)
{
    const gw_inflight_call_t *call = &s->call;
    gw_usage_t u = s->usage, est = gw_usage_estimate(call->input_bytes < 0 ? 0 : call->input_bytes,
                                                     s->output_bytes < 0 ? 0 : s->output_bytes,
                                                     call->chars_per_token > 0
                                                         ? call->chars_per_token
                                                         : GW_USAGE_CHARS_PER_TOKEN_DEFAULT);

    *row = call->row;
    row->status = "error";
    row->http_status = 0;
    rb_copy_str(row->error_code, sizeof(row->error_code), error_code);
    /* the input as the provider stated it (Anthropic's message_start: cache reads apart), else
     * estimated; the output so far, at least what the bytes received show (a cumulative count
     * stated mid-stream is not the final one) */
    if (!(u.reported & GW_USAGE_INPUT_ANY)) {
        u.input_uncached = est.input_uncached;
        u.cache_read = u.cache_write_5m = u.cache_write_1h = 0;
    }
    if (est.output > u.output)
        u.output = est.output;
    if (u.reasoning > u.output)
        u.reasoning = u.output;
    row->usage_source = "estimate";
    row->input_uncached = u.input_uncached;
    row->cache_read = u.cache_read;
    row->cache_write_5m = u.cache_write_5m;
    row->cache_write_1h = u.cache_write_1h;
    row->output = u.output;
    row->reasoning = u.reasoning;
    row->requests = u.requests;
    row->cost_micro = 0; /* unpriced, or past int64 (gw_pricing_cost leaves it then) */
    if (call->priced)
        (void)gw_pricing_cost(&call->price, &u, &row->cost_micro);
    row->ttfb_ms = -1;
    row->duration_ms = 0; /* when the process died is not known */
}

size_t gw_inflight_recover(gw_inflight_t *f, const char *error_code,
                           int (*emit)(void *ctx, const gw_db_usage_row_t *row), void *ctx)
{
    size_t n = 0;

    for (size_t i = 0; i < GW_INFLIGHT_SLOTS; i++) {
        inflight_slot_t *s = &f->slots[i];
        gw_db_usage_row_t *r = &s->call.row, row;

        if (s->state != SLOT_HELD)
            continue;
        /* a slot is whole once held; its strings are still bounded before they are read */
        r->request_id[sizeof(r->request_id) - 1] = '\0';
        r->user_id[sizeof(r->user_id) - 1] = '\0';
        r->workspace_id[sizeof(r->workspace_id) - 1] = '\0';
        r->subject[sizeof(r->subject) - 1] = '\0';
        r->route[sizeof(r->route) - 1] = '\0';
        r->provider[sizeof(r->provider) - 1] = '\0';
        r->model[sizeof(r->model) - 1] = '\0';
        r->upstream_model[sizeof(r->upstream_model) - 1] = '\0';
        r->lease_id[sizeof(r->lease_id) - 1] = '\0';
        if (r->request_id[0] != '\0' && r->user_id[0] != '\0') {
            interrupted_row(s, error_code, &row);
            if (emit(ctx, &row) != 0)
                continue; /* not kept: the next process tries again */
            n++;
        }
        s->state = 0;
        f->free_stack[f->free_len++] = (int)i;
    }
    return n;
}

int gw_inflight_begin(gw_inflight_t *f, const gw_inflight_call_t *call)
{
    inflight_slot_t *s;
    int slot;

    pthread_mutex_lock(&f->mu);
    slot = f->free_len > 0 ? f->free_stack[--f->free_len] : -1;
    pthread_mutex_unlock(&f->mu);
    if (slot < 0)
        return -1;
    s = &f->slots[slot];
    s->output_bytes = 0;
    memset(&s->usage, 0, sizeof(s->usage));
    s->call = *call;
    s->call.row.status = s->call.row.usage_source = NULL; /* addresses of this process: not kept */
    __atomic_store_n(&s->state, SLOT_HELD, __ATOMIC_RELEASE);
    return slot;
}

void gw_inflight_progress(gw_inflight_t *f, int slot, int64_t output_bytes, const gw_usage_t *usage)
{
    if (slot < 0)
        return;
    __atomic_store_n(&f->slots[slot].output_bytes, output_bytes, __ATOMIC_RELAXED);
    if (usage != NULL)
        f->slots[slot].usage = *usage; /* a field torn by a kill is an old or a new count */
}

void gw_inflight_end(gw_inflight_t *f, int slot)
{
    if (slot < 0)
        return;
    RB_ASSERT(slot < GW_INFLIGHT_SLOTS && f->slots[slot].state == SLOT_HELD);
    __atomic_store_n(&f->slots[slot].state, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&f->mu);
    RB_ASSERT(f->free_len < GW_INFLIGHT_SLOTS);
    f->free_stack[f->free_len++] = slot;
    pthread_mutex_unlock(&f->mu);
}

size_t gw_inflight_used(gw_inflight_t *f)
{
    size_t used;

    pthread_mutex_lock(&f->mu);
    used = GW_INFLIGHT_SLOTS - f->free_len;
    pthread_mutex_unlock(&f->mu);
    return used;
}

void gw_inflight_close(gw_inflight_t *f)
{
    if (f == NULL)
        return;
    if (f->hdr != NULL) {
        munmap(f->hdr, f->map_len);
        pthread_mutex_destroy(&f->mu);
    }
    if (f->fd != -1)
        close(f->fd);
    free(f);
}
