#include "gateway/identity.h"

#include <ctype.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/* Hash buckets of the cache (a power of two). */
#define GW_IDENTITY_BUCKETS 4096
/* Room for a database error message. */
#define GW_IDENTITY_ERR_MAX 512

typedef struct st_cache_entry_t {
    struct st_cache_entry_t *next;
    uint8_t hash[RB_SHA256_LEN];
    int found;
    gw_ident_t id;
    uint64_t expires_ms;
} cache_entry_t;

struct st_gw_identity_t {
    gw_identity_conf_t conf;
    uint8_t master_key[RB_AES_KEY_LEN];
    int has_master;
    gw_db_t *db; /* the identity thread's */
    pthread_t thread;
    pthread_mutex_t mu; /* guards everything below */
    cache_entry_t *buckets[GW_IDENTITY_BUCKETS];
    size_t cache_count, negative_count; /* entries, and those of unknown secrets */
    size_t cache_max, negative_max;
    uint64_t epoch;   /* bumped at every invalidation */
    uint64_t session; /* gw_db_session of the LISTEN (identity thread only) */
    gw_identity_job_t *qhead, *qtail;
    size_t qcount;
    gw_identity_job_t *running; /* dequeued, not answered yet */
    int stopping;
    int wake[2]; /* pipe: a job was queued, or stop */
};

struct st_gw_identity_port_t {
    h2o_multithread_receiver_t recv;
    h2o_multithread_queue_t *queue;
    gw_identity_t *idy;
};

struct st_gw_identity_job_t {
    h2o_multithread_message_t super; /* first: h2o's queue links it */
    gw_identity_job_t *qnext;
    gw_identity_port_t *port;
    uint8_t hash[RB_SHA256_LEN];
    int workspace;
    gw_identity_cb cb;
    void *ctx;
    int cancelled; /* written and read on the port's worker thread only */
    rb_err_t err;
    gw_ident_t id;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void gw_identity_wipe(gw_ident_t *id)
{
    explicit_bzero(id, sizeof(*id));
}

static size_t bucket_of(const uint8_t hash[RB_SHA256_LEN])
{
    size_t b;
    memcpy(&b, hash, sizeof(b));
    return b & (GW_IDENTITY_BUCKETS - 1);
}

/* Empties the cache (mutex held). */
static void cache_clear(gw_identity_t *idy)
{
    for (size_t i = 0; i < GW_IDENTITY_BUCKETS; i++) {
        while (idy->buckets[i] != NULL) {
            cache_entry_t *e = idy->buckets[i];
            idy->buckets[i] = e->next;
            explicit_bzero(e, sizeof(*e));
            free(e);
        }
    }
    idy->cache_count = 0;
    idy->negative_count = 0;
    idy->epoch++;
}

/* The live entry for hash, or NULL (mutex held); expired entries are removed on the way. */
static cache_entry_t *cache_find(gw_identity_t *idy, const uint8_t hash[RB_SHA256_LEN],
                                 uint64_t now)
{
    cache_entry_t **pp = &idy->buckets[bucket_of(hash)];
    while (*pp != NULL) {
        cache_entry_t *e = *pp;
        if (e->expires_ms <= now) {
            *pp = e->next;
            idy->cache_count--;
            idy->negative_count -= !e->found;
            explicit_bzero(e, sizeof(*e));
            free(e);
            continue;
        }
        if (rb_ct_equal(e->hash, hash, RB_SHA256_LEN))
            return e;
        pp = &e->next;
    }
    return NULL;
}

static void cache_put(gw_identity_t *idy, const gw_identity_job_t *job, uint64_t now)
{
    cache_entry_t *e;
    uint64_t ttl = (uint64_t)idy->conf.ttl_ms;

    if (cache_find(idy, job->hash, now) != NULL)
        return;
    if (job->err != RB_OK && idy->negative_count >= idy->negative_max)
        return; /* unknown secrets cannot push the known ones out */
    if (idy->cache_count >= idy->cache_max)
        cache_clear(idy);
    e = rb_calloc(1, sizeof(*e));
    memcpy(e->hash, job->hash, RB_SHA256_LEN);
    e->found = job->err == RB_OK;
    e->id = job->id;
    if (!e->found && ttl > GW_IDENTITY_NEGATIVE_TTL_MS)
        ttl = GW_IDENTITY_NEGATIVE_TTL_MS;
    e->expires_ms = now + ttl;
    e->next = idy->buckets[bucket_of(job->hash)];
    idy->buckets[bucket_of(job->hash)] = e;
    idy->cache_count++;
    idy->negative_count += !e->found;
}

/* Fills job->id from a stored row, decrypting the BYOK key. */
static void ident_from_row(gw_identity_t *idy, const gw_db_identity_t *row, gw_ident_t *id)
{
    memset(id, 0, sizeof(*id));
    snprintf(id->user_id, sizeof(id->user_id), "%s", row->user_id);
    snprintf(id->workspace_id, sizeof(id->workspace_id), "%s", row->workspace_id);
    snprintf(id->provider, sizeof(id->provider), "%s", row->provider);
    id->byok = row->byok;
    if (!row->has_key)
        return;
    id->key_state = GW_IDENTITY_KEY_BAD;
    if (!idy->has_master || row->key_ct_len >= sizeof(id->key))
        return;
    if (rb_aes_gcm_open(idy->master_key, row->key_ct, row->key_ct_len, row->key_nonce, row->key_tag,
                        (uint8_t *)id->key) != RB_OK) {
        explicit_bzero(id->key, sizeof(id->key));
        return;
    }
    id->key_len = row->key_ct_len;
    id->key[id->key_len] = '\0';
    id->key_state = GW_IDENTITY_KEY_OK;
}

static void cache_drop(gw_identity_t *idy)
{
    pthread_mutex_lock(&idy->mu);
    cache_clear(idy);
    pthread_mutex_unlock(&idy->mu);
}

/* 1 when the connection is up and LISTENs. Whoever re-made it (a lookup or the notification
 * check), a new session LISTENs again and drops the cache: what changed meanwhile is unknown. */
static int db_ready(gw_identity_t *idy)
{
    char err[GW_IDENTITY_ERR_MAX];

    if (!gw_db_ensure(idy->db))
        return 0;
    if (gw_db_session(idy->db) == idy->session)
        return 1;
    if (gw_db_listen(idy->db, GW_DB_IDENTITY_CHANNEL, err, sizeof(err)) != RB_OK)
        return 0; /* tried again at the next lookup or poll */
    idy->session = gw_db_session(idy->db);
    cache_drop(idy);
    rb_log_warn("identity_reconnected", "cache=dropped");
    return 1;
}

/* Reads notifications; drops the cache on any, or when the connection had to be re-made. */
static void check_notifications(gw_identity_t *idy)
{
    int n = gw_db_notifications(idy->db);

    if (n < 0 || gw_db_session(idy->db) != idy->session) {
        db_ready(idy); /* still down: again on the next poll */
        return;
    }
    if (n == 0)
        return;
    cache_drop(idy);
    rb_log_debug("identity_invalidated", "notifications=%d", n);
}

static void run_job(gw_identity_t *idy, gw_identity_job_t *job, uint64_t epoch)
{
    char err[GW_IDENTITY_ERR_MAX];
    gw_db_identity_t *row = rb_calloc(1, sizeof(*row));
    rb_err_t rc;

    rc = db_ready(idy)
             ? gw_db_identity_lookup(idy->db, job->workspace, job->hash, row, err, sizeof(err))
             : RB_ERR_DB;
    if (rc == RB_OK) {
        ident_from_row(idy, row, &job->id);
        job->err = RB_OK;
    } else if (rc == RB_ERR_NOTFOUND) {
        job->err = RB_ERR_AUTH;
    } else {
        job->err = RB_ERR_DB;
        rb_log_warn("identity_lookup_failed", "error=\"%s\"",
                    rc == RB_ERR_DB ? err : rb_err_str(rc));
    }
    explicit_bzero(row, sizeof(*row));
    free(row);
    check_notifications(idy); /* one that arrived during the query makes the answer stale */
    if (job->err != RB_ERR_DB) {
        pthread_mutex_lock(&idy->mu);
        if (idy->epoch == epoch)
            cache_put(idy, job, now_ms());
        pthread_mutex_unlock(&idy->mu);
    }
}

static void *identity_main(void *arg)
{
    gw_identity_t *idy = arg;

    for (;;) {
        struct pollfd p[2] = {{.fd = idy->wake[0], .events = POLLIN},
                              {.fd = gw_db_socket(idy->db), .events = POLLIN}};
        char drain[64];
        int stopping;
        poll(p, p[1].fd >= 0 ? 2 : 1, GW_IDENTITY_POLL_MS);
        while (read(idy->wake[0], drain, sizeof(drain)) > 0)
            ;
        check_notifications(idy);
        for (;;) {
            gw_identity_job_t *job;
            uint64_t epoch;
            int orphan;
            pthread_mutex_lock(&idy->mu);
            stopping = idy->stopping;
            if ((job = idy->qhead) != NULL) {
                idy->qhead = job->qnext;
                if (idy->qhead == NULL)
                    idy->qtail = NULL;
                idy->qcount--;
            }
            idy->running = job;
            epoch = idy->epoch;
            pthread_mutex_unlock(&idy->mu);
            if (job == NULL)
                break;
            if (stopping)
                job->err = RB_ERR_DB;
            else
                run_job(idy, job, epoch);
            pthread_mutex_lock(&idy->mu); /* against gw_identity_port_destroy */
            idy->running = NULL;
            orphan = job->port == NULL; /* its port is gone */
            if (!orphan)                /* from here the job is the receiver's */
                h2o_multithread_send_message(&job->port->recv, &job->super);
            pthread_mutex_unlock(&idy->mu);
            if (orphan) {
                gw_identity_wipe(&job->id);
                free(job);
            }
        }
        if (stopping)
            break;
    }
    return NULL;
}

rb_err_t gw_identity_start(const gw_identity_conf_t *conf, gw_identity_t **out, char *errbuf,
                           size_t cap)
{
    gw_identity_t *idy = rb_calloc(1, sizeof(*idy));
    rb_err_t err;

    RB_ASSERT(conf->ttl_ms > 0);
    idy->conf = *conf;
    idy->conf.master_key = NULL;
    idy->cache_max = conf->cache_max > 0 ? conf->cache_max : GW_IDENTITY_CACHE_MAX;
    idy->negative_max = idy->cache_max / 2 < GW_IDENTITY_NEGATIVE_MAX ? idy->cache_max / 2
                                                                      : GW_IDENTITY_NEGATIVE_MAX;
    if (conf->master_key != NULL) {
        memcpy(idy->master_key, conf->master_key, RB_AES_KEY_LEN);
        idy->has_master = 1;
    }
    if ((err = gw_db_connect(conf->db_url, conf->connect_timeout_s, &idy->db, errbuf, cap)) !=
            RB_OK ||
        (err = gw_db_listen(idy->db, GW_DB_IDENTITY_CHANNEL, errbuf, cap)) != RB_OK) {
        gw_db_close(idy->db);
        free(idy);
        return err;
    }
    RB_ASSERT(pipe2(idy->wake, O_CLOEXEC | O_NONBLOCK) == 0);
    pthread_mutex_init(&idy->mu, NULL);
    RB_ASSERT(pthread_create(&idy->thread, NULL, identity_main, idy) == 0);
    *out = idy;
    return RB_OK;
}

void gw_identity_stop(gw_identity_t *idy)
{
    if (idy == NULL)
        return;
    pthread_mutex_lock(&idy->mu);
    idy->stopping = 1;
    pthread_mutex_unlock(&idy->mu);
    (void)!write(idy->wake[1], "x", 1);
    pthread_join(idy->thread, NULL);
    cache_clear(idy);
    gw_db_close(idy->db);
    close(idy->wake[0]);
    close(idy->wake[1]);
    pthread_mutex_destroy(&idy->mu);
    explicit_bzero(idy->master_key, sizeof(idy->master_key));
    free(idy);
}

static void on_port_messages(h2o_multithread_receiver_t *recv, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        gw_identity_job_t *job = (gw_identity_job_t *)m;
        h2o_linklist_unlink(&m->link);
        if (!job->cancelled)
            job->cb(job->ctx, job->err, &job->id);
        gw_identity_wipe(&job->id);
        free(job);
    }
}

gw_identity_port_t *gw_identity_port_create(gw_identity_t *idy, h2o_multithread_queue_t *queue)
{
    gw_identity_port_t *port = rb_calloc(1, sizeof(*port));
    port->idy = idy;
    port->queue = queue;
    h2o_multithread_register_receiver(queue, &port->recv, on_port_messages);
    return port;
}

void gw_identity_port_destroy(gw_identity_port_t *port)
{
    gw_identity_t *idy;
    gw_identity_job_t **pp, *prev = NULL;

    if (port == NULL)
        return;
    idy = port->idy;
    /* the port's jobs still queued go; the one being run is answered to nobody */
    pthread_mutex_lock(&idy->mu);
    for (pp = &idy->qhead; *pp != NULL;) {
        gw_identity_job_t *job = *pp;
        if (job->port != port) {
            prev = job;
            pp = &job->qnext;
            continue;
        }
        *pp = job->qnext;
        idy->qcount--;
        free(job);
    }
    idy->qtail = prev;
    if (idy->running != NULL && idy->running->port == port)
        idy->running->port = NULL;
    pthread_mutex_unlock(&idy->mu);
    /* answers delivered but never run (the worker's loop has stopped) go as cancelled ones do:
     * h2o asserts the receiver is empty, and no thread sends to this port any more */
    for (h2o_linklist_t *l = port->recv._messages.next; l != &port->recv._messages; l = l->next)
        ((gw_identity_job_t *)H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, l))
            ->cancelled = 1;
    on_port_messages(&port->recv, &port->recv._messages);
    h2o_multithread_unregister_receiver(port->queue, &port->recv);
    free(port);
}

/* 1 = workspace token, 0 = user key, -1 = not one of ours. */
static int secret_kind(const char *s, size_t len)
{
    if (len > 4 && memcmp(s, "rbw_", 4) == 0)
        return 1;
    if (len > 3 && memcmp(s, "rb_", 3) == 0)
        return 0;
    return -1;
}

int gw_identity_resolve(gw_identity_port_t *port, const char *secret, size_t len, gw_ident_t *out,
                        rb_err_t *err_out, gw_identity_cb cb, void *ctx,
                        gw_identity_job_t **job_out)
{
    gw_identity_t *idy = port->idy;
    uint8_t hash[RB_SHA256_LEN];
    int kind = len <= GW_IDENTITY_SECRET_MAX ? secret_kind(secret, len) : -1;
    gw_identity_job_t *job;
    cache_entry_t *e;

    *job_out = NULL;
    if (kind < 0) {
        *err_out = RB_ERR_AUTH;
        return 1;
    }
    rb_sha256(secret, len, hash);
    pthread_mutex_lock(&idy->mu);
    if ((e = cache_find(idy, hash, now_ms())) != NULL) {
        *err_out = e->found ? RB_OK : RB_ERR_AUTH;
        if (e->found)
            *out = e->id;
        pthread_mutex_unlock(&idy->mu);
        return 1;
    }
    if (idy->qcount >= GW_IDENTITY_QUEUE_MAX) {
        pthread_mutex_unlock(&idy->mu);
        *err_out = RB_ERR_LIMIT;
        return 1;
    }
    job = rb_calloc(1, sizeof(*job));
    job->port = port;
    memcpy(job->hash, hash, sizeof(hash));
    job->workspace = kind;
    job->cb = cb;
    job->ctx = ctx;
    if (idy->qtail != NULL)
        idy->qtail->qnext = job;
    else
        idy->qhead = job;
    idy->qtail = job;
    idy->qcount++;
    pthread_mutex_unlock(&idy->mu);
    (void)!write(idy->wake[1], "x", 1);
    *job_out = job;
    return 0;
}

void gw_identity_cancel(gw_identity_job_t *job)
{
    RB_ASSERT(job != NULL && !job->cancelled);
    job->cancelled = 1;
}
