#include "gateway/credits.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/crypto.h"
#include "common/log.h"
#include "gateway/db.h"

/* Hash buckets of the user table. */
#define GW_CREDITS_BUCKETS 4096
/* Room for a database error message. */
#define GW_CREDITS_ERR_MAX 512
/* Leases handled per lease-thread pass (takes, renewals, returns). */
#define GW_CREDITS_BATCH_MAX 256

typedef struct st_credits_user_t credits_user_t;

struct st_gw_credits_lease_t {
    gw_credits_lease_t *next; /* the user's list, or the return list */
    credits_user_t *user;
    char id[GW_CREDITS_LEASE_ID_MAX];
    int64_t amount, used; /* used = open holds + settled costs, never above amount */
    int holds;            /* open holds */
    uint64_t last_seq;    /* ledger position of its last settled cost */
    uint64_t last_use_ms;
    uint64_t renewed_ms; /* taken or last renewed (or a failed renewal, to retry soon) */
    uint64_t valid_ms;   /* open in PostgreSQL until about then: the last take or renewal that
                          * succeeded, plus ttl_s (carve stops GW_CREDITS_VALID_MARGIN_MS early) */
    int lost;            /* PostgreSQL closed it (swept): nothing more is carved from it */
};

struct st_gw_credits_job_t {
    h2o_multithread_message_t super; /* first: h2o's queue links it */
    gw_credits_job_t *qnext;
    gw_credits_port_t *port;
    gw_credits_t *credits;
    credits_user_t *user;
    int64_t amount;
    uint64_t deadline_ms;
    int queued;    /* in its user's wait list (mutex) */
    int cancelled; /* on the port's worker thread only */
    gw_credits_cb cb;
    void *ctx;
    gw_credits_result_t result;
    gw_credits_hold_t hold;
};

struct st_credits_user_t {
    credits_user_t *next; /* hash chain */
    char id[GW_DB_ID_MAX];
    gw_credits_lease_t *leases;
    gw_credits_job_t *wait_head, *wait_tail;
    int taking;              /* the lease thread is taking a lease for it */
    int refill;              /* take ahead of need */
    uint64_t short_until_ms; /* holds >= short_min are refused without asking until then */
    int64_t short_min;
    uint64_t retry_at_ms; /* a take failed (database): not before then */
};

struct st_gw_credits_port_t {
    h2o_multithread_receiver_t recv;
    h2o_multithread_queue_t *queue;
    gw_credits_t *credits;
};

struct st_gw_credits_t {
    gw_credits_conf_t conf;
    char node[GW_CREDITS_NODE_ID_MAX];
    char host[256];
    char nonce[16];
    uint64_t lease_seq;
    gw_db_t *db;
    pthread_t thread;
    pthread_mutex_t mu; /* guards the users, leases, jobs and the fields below */
    pthread_cond_t cond;
    credits_user_t *buckets[GW_CREDITS_BUCKETS];
    size_t users, waiters;
    int stopping;
    int wake;
    gw_credits_lease_t *returning; /* unlinked leases waiting for rb_lease_return */
    uint64_t last_beat_ms;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static size_t hash_str(const char *s)
{
    size_t h = 5381;
    for (; *s != '\0'; s++)
        h = h * 33 + (unsigned char)*s;
    return h % GW_CREDITS_BUCKETS;
}

/* The user's entry, created when missing (mutex held); NULL past GW_CREDITS_USERS_MAX. */
static credits_user_t *user_get(gw_credits_t *c, const char *id)
{
    size_t b = hash_str(id);
    credits_user_t *u;

    for (u = c->buckets[b]; u != NULL; u = u->next)
        if (strcmp(u->id, id) == 0)
            return u;
    if (c->users >= GW_CREDITS_USERS_MAX || strlen(id) >= sizeof(u->id))
        return NULL;
    u = rb_calloc(1, sizeof(*u));
    snprintf(u->id, sizeof(u->id), "%s", id);
    u->next = c->buckets[b];
    c->buckets[b] = u;
    c->users++;
    return u;
}

static int64_t user_reserve(const credits_user_t *u)
{
    int64_t left = 0;
    for (const gw_credits_lease_t *l = u->leases; l != NULL; l = l->next)
        if (!l->lost)
            left += l->amount - l->used;
    return left;
}

/* Carves amount from one of u's leases (mutex held); the lease or NULL. */
static gw_credits_lease_t *carve(gw_credits_t *c, credits_user_t *u, int64_t amount)
{
    gw_credits_lease_t *l;

    uint64_t now = mono_ms();

    RB_ASSERT(amount > 0);
    for (l = u->leases; l != NULL; l = l->next)
        if (!l->lost && l->amount - l->used >= amount &&
            now + GW_CREDITS_VALID_MARGIN_MS < l->valid_ms)
            break;
    if (l == NULL)
        return NULL;
    l->used += amount;
    l->holds++;
    l->last_use_ms = now;
    RB_ASSERT(l->used <= l->amount);
    /* refill ahead of need: below a quarter chunk of reserve, take the next chunk now */
    if (!u->taking && user_reserve(u) < c->conf.chunk_micro / 4) {
        u->refill = 1;
        c->wake = 1;
        pthread_cond_signal(&c->cond);
    }
    return l;
}

int gw_credits_admit(gw_credits_port_t *port, const char *user, int64_t amount_micro,
                     gw_credits_result_t *result, gw_credits_hold_t *hold, gw_credits_cb cb,
                     void *ctx, gw_credits_job_t **job_out)
{
    gw_credits_t *c = port->credits;
    credits_user_t *u;
    gw_credits_lease_t *l;
    gw_credits_job_t *job;
    int answered = 1;

    RB_ASSERT(amount_micro > 0 && user != NULL && user[0] != '\0');
    *hold = (gw_credits_hold_t){0};
    pthread_mutex_lock(&c->mu);
    if ((u = user_get(c, user)) == NULL || c->waiters >= GW_CREDITS_WAITERS_MAX) {
        *result = GW_CREDITS_UNAVAILABLE;
    } else if ((l = carve(c, u, amount_micro)) != NULL) {
        *hold = (gw_credits_hold_t){.lease = l, .amount_micro = amount_micro};
        *result = GW_CREDITS_OK;
    } else if (u->short_until_ms > mono_ms() && amount_micro >= u->short_min) {
        *result = GW_CREDITS_INSUFFICIENT;
    } else {
        job = rb_calloc(1, sizeof(*job));
        *job = (gw_credits_job_t){.port = port,
                                  .credits = c,
                                  .user = u,
                                  .amount = amount_micro,
                                  .deadline_ms = mono_ms() + (uint64_t)c->conf.wait_ms,
                                  .queued = 1,
                                  .cb = cb,
                                  .ctx = ctx};
        if (u->wait_tail != NULL)
            u->wait_tail->qnext = job;
        else
            u->wait_head = job;
        u->wait_tail = job;
        c->waiters++;
        c->wake = 1;
        pthread_cond_signal(&c->cond);
        *job_out = job;
        answered = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return answered;
}

/* Settles under the mutex. */
static void settle_locked(gw_credits_hold_t *hold, int64_t cost, uint64_t seq)
{
    gw_credits_lease_t *l = hold->lease;

    RB_ASSERT(l->holds > 0 && l->used >= hold->amount_micro && cost >= 0);
    l->holds--;
    l->used -= hold->amount_micro;
    /* an overrun beyond the reserve is posted from the free balance by rb_usage_post */
    l->used += cost < l->amount - l->used ? cost : l->amount - l->used;
    if (seq > l->last_seq)
        l->last_seq = seq;
    l->last_use_ms = mono_ms();
    hold->lease = NULL;
    hold->amount_micro = 0;
}

void gw_credits_settle(gw_credits_t *c, gw_credits_hold_t *hold, int64_t cost_micro, uint64_t seq)
{
    if (hold->lease == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    settle_locked(hold, cost_micro, seq);
    pthread_mutex_unlock(&c->mu);
}

const char *gw_credits_lease_id(const gw_credits_lease_t *lease)
{
    return lease->id;
}

/* Removes job from its user's wait list (mutex held). */
static void job_unlink(gw_credits_t *c, gw_credits_job_t *job)
{
    credits_user_t *u = job->user;
    gw_credits_job_t **pp = &u->wait_head, *prev = NULL;

    while (*pp != NULL && *pp != job) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    RB_ASSERT(*pp == job);
    *pp = job->qnext;
    if (u->wait_tail == job)
        u->wait_tail = prev;
    job->queued = 0;
    job->qnext = NULL;
    c->waiters--;
}

/* Answers job on its port (mutex held). */
static void job_answer(gw_credits_t *c, gw_credits_job_t *job, gw_credits_result_t r)
{
    job_unlink(c, job);
    job->result = r;
    h2o_multithread_send_message(&job->port->recv, &job->super);
}

void gw_credits_cancel(gw_credits_job_t *job)
{
    gw_credits_t *c = job->credits;

    pthread_mutex_lock(&c->mu);
    if (job->queued) {
        job_unlink(c, job);
        pthread_mutex_unlock(&c->mu);
        free(job);
        return;
    }
    job->cancelled = 1; /* the message is on its way: the receiver frees it */
    pthread_mutex_unlock(&c->mu);
}

static void on_port_messages(h2o_multithread_receiver_t *recv, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        gw_credits_job_t *job = (gw_credits_job_t *)m;
        h2o_linklist_unlink(&m->link);
        if (!job->cancelled)
            job->cb(job->ctx, job->result, &job->hold);
        else
            gw_credits_settle(job->credits, &job->hold, 0, 0);
        free(job);
    }
}

gw_credits_port_t *gw_credits_port_create(gw_credits_t *c, h2o_multithread_queue_t *queue)
{
    gw_credits_port_t *port = rb_calloc(1, sizeof(*port));
    port->credits = c;
    port->queue = queue;
    h2o_multithread_register_receiver(queue, &port->recv, on_port_messages);
    return port;
}

void gw_credits_port_destroy(gw_credits_port_t *port)
{
    gw_credits_t *c;

    if (port == NULL)
        return;
    c = port->credits;
    /* the port's jobs still waiting for a lease go: nobody would receive their answer */
    pthread_mutex_lock(&c->mu);
    for (size_t b = 0; b < GW_CREDITS_BUCKETS && c->waiters > 0; b++)
        for (credits_user_t *u = c->buckets[b]; u != NULL; u = u->next)
            for (gw_credits_job_t *j = u->wait_head, *next; j != NULL; j = next) {
                next = j->qnext;
                if (j->port == port) {
                    job_unlink(c, j);
                    free(j);
                }
            }
    pthread_mutex_unlock(&c->mu);
    /* answers delivered but never run (the worker's loop has stopped) go as cancelled ones do:
     * h2o asserts the receiver is empty, and no thread sends to this port any more */
    for (h2o_linklist_t *l = port->recv._messages.next; l != &port->recv._messages; l = l->next)
        ((gw_credits_job_t *)H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, l))
            ->cancelled = 1;
    on_port_messages(&port->recv, &port->recv._messages);
    h2o_multithread_unregister_receiver(port->queue, &port->recv);
    free(port);
}

/* ---- the lease thread ---- */

/* What one take should ask for (mutex held): 0 when nothing is needed. */
static int64_t take_size(gw_credits_t *c, credits_user_t *u, int64_t *min)
{
    int64_t amount = c->conf.chunk_micro, smallest = 0;

    for (gw_credits_job_t *j = u->wait_head; j != NULL; j = j->qnext) {
        if (j->amount > amount)
            amount = j->amount;
        if (smallest == 0 || j->amount < smallest)
            smallest = j->amount;
    }
    if (u->wait_head == NULL && !u->refill)
        return 0;
    *min = smallest > 0 ? smallest : 1;
    return amount;
}

/* A take answered got of amount: install the lease, serve the waiters (mutex held). */
static void take_done(gw_credits_t *c, credits_user_t *u, const char *id, int64_t amount,
                      int64_t min, int64_t got)
{
    gw_credits_job_t *j, *next;

    u->taking = 0;
    u->refill = 0;
    if (got > 0) {
        gw_credits_lease_t *l = rb_calloc(1, sizeof(*l));
        snprintf(l->id, sizeof(l->id), "%s", id);
        l->user = u;
        l->amount = got;
        l->last_use_ms = l->renewed_ms = mono_ms();
        l->valid_ms = l->renewed_ms + (uint64_t)c->conf.ttl_s * 1000;
        l->next = u->leases;
        u->leases = l;
    }
    for (j = u->wait_head; j != NULL; j = next) {
        gw_credits_lease_t *l = carve(c, u, j->amount);
        next = j->qnext;
        if (l != NULL) {
            j->hold = (gw_credits_hold_t){.lease = l, .amount_micro = j->amount};
            job_answer(c, j, GW_CREDITS_OK);
        } else if (got < amount) { /* the balance is exhausted */
            job_answer(c, j, GW_CREDITS_INSUFFICIENT);
        }
    }
    if (got < amount) { /* available was got (now all leased), or below min */
        u->short_until_ms = mono_ms() + GW_CREDITS_SHORT_MS;
        u->short_min = got > 0 ? 1 : min;
        u->refill = 0;
    }
}

/* Takes one lease for u (called with the mutex held; drops it around the query). */
static void take_one(gw_credits_t *c, credits_user_t *u)
{
    char id[GW_CREDITS_LEASE_ID_MAX], err[GW_CREDITS_ERR_MAX] = "database unreachable";
    int64_t min = 1, amount = take_size(c, u, &min), got = 0;
    rb_err_t e;

    if (amount == 0 || u->taking || u->retry_at_ms > mono_ms())
        return;
    if (u->wait_head == NULL && u->short_until_ms > mono_ms() && u->short_min <= 1) {
        u->refill = 0;
        return;
    }
    u->taking = 1;
    snprintf(id, sizeof(id), "%s.%s.%" PRIu64, c->node, c->nonce, ++c->lease_seq);
    pthread_mutex_unlock(&c->mu);
    e = gw_db_ensure(c->db) ? gw_db_lease_take(c->db, id, c->node, u->id, amount, c->conf.ttl_s,
                                               min, &got, err, sizeof(err))
                            : RB_ERR_DB;
    pthread_mutex_lock(&c->mu);
    if (e != RB_OK) {
        u->taking = 0;
        u->retry_at_ms = mono_ms() + 250;
        rb_log_warn("lease_take_failed", "user=%s error=\"%s\"", u->id, err);
        return;
    }
    rb_log_debug("lease_taken", "lease=%s user=%s amount=%" PRId64 " got=%" PRId64, id, u->id,
                 amount, got);
    take_done(c, u, id, amount, min, got);
}

/* Waiters past their deadline: answered unavailable (mutex held). */
static void expire_waiters(gw_credits_t *c, credits_user_t *u, uint64_t now)
{
    gw_credits_job_t *j, *next;
    for (j = u->wait_head; j != NULL; j = next) {
        next = j->qnext;
        if (now >= j->deadline_ms || c->stopping)
            job_answer(c, j, GW_CREDITS_UNAVAILABLE);
    }
}

/* Unlinks leases ready to go back (mutex held): no hold, costs committed, and idle, lost, past the
 * GW_CREDITS_LEASES_MAX newest kept (the list is newest first), or stopping. */
static void collect_returns(gw_credits_t *c, credits_user_t *u, uint64_t now, uint64_t committed)
{
    gw_credits_lease_t **pp = &u->leases;
    size_t kept = 0;

    while (*pp != NULL) {
        gw_credits_lease_t *l = *pp;
        /* a lease taken in this pass has last_use_ms after now: not idle */
        int idle = l->last_use_ms + (uint64_t)c->conf.idle_ms <= now || l->lost ||
                   kept >= GW_CREDITS_LEASES_MAX || c->stopping;
        if (l->holds == 0 && l->last_seq <= committed && idle) {
            *pp = l->next;
            l->next = c->returning;
            c->returning = l;
            continue;
        }
        pp = &l->next;
        kept++;
    }
}

/* One pass over the users (mutex held): takes, expired waiters, returns. */
static void pass_users(gw_credits_t *c)
{
    uint64_t now = mono_ms(), committed = gw_recorder_committed(c->conf.rec);

    for (size_t b = 0; b < GW_CREDITS_BUCKETS; b++) {
        for (credits_user_t *u = c->buckets[b]; u != NULL; u = u->next) {
            if (u->wait_head != NULL || u->refill)
                take_one(c, u);
            expire_waiters(c, u, mono_ms());
            collect_returns(c, u, now, committed);
        }
    }
}

/* Returns the collected leases (mutex held; dropped around each query). One PostgreSQL could not
 * take (connection lost, database down) stays collected, for the next pass: left open there, its
 * reserve would wait for the sweeper. */
static void do_returns(gw_credits_t *c)
{
    char err[GW_CREDITS_ERR_MAX] = "database unreachable";

    while (c->returning != NULL) {
        gw_credits_lease_t *l = c->returning;
        int64_t released = 0;
        rb_err_t e;
        c->returning = l->next;
        pthread_mutex_unlock(&c->mu);
        e = gw_db_ensure(c->db) ? gw_db_lease_return(c->db, l->id, &released, err, sizeof(err))
                                : RB_ERR_DB;
        if (e != RB_OK)
            rb_log_warn("lease_return_failed", "lease=%s error=\"%s\" (retried)", l->id, err);
        else
            rb_log_debug("lease_returned", "lease=%s released=%" PRId64, l->id, released);
        pthread_mutex_lock(&c->mu);
        if (e != RB_OK) { /* last in line; the rest waits too: PostgreSQL is likely out of reach */
            gw_credits_lease_t **pp = &c->returning;
            while (*pp != NULL)
                pp = &(*pp)->next;
            l->next = NULL;
            *pp = l;
            return;
        }
        free(l);
    }
}

/* Renews the leases due (taken or renewed ttl/3 ago), GW_CREDITS_BATCH_MAX at most per pass, in one
 * statement, and heartbeats the node when due (mutex held; dropped around I/O). A lease that
 * PostgreSQL no longer has open was swept (this node did not renew it within ttl_s, as when
 * PostgreSQL was out of reach) and its reserve released: it is marked lost, so no hold is carved
 * from it again, and goes back once its holds settled. Only this thread frees leases, so the
 * pointers stay valid while the mutex is dropped. */
static void renew_and_beat(gw_credits_t *c)
{
    gw_credits_lease_t *ls[GW_CREDITS_BATCH_MAX];
    const char *ids[GW_CREDITS_BATCH_MAX];
    int dead[GW_CREDITS_BATCH_MAX];
    char err[GW_CREDITS_ERR_MAX] = "database unreachable";
    size_t n = 0;
    uint64_t now = mono_ms(), every = (uint64_t)c->conf.ttl_s * 1000 / 3;
    int beat = c->last_beat_ms + GW_CREDITS_BEAT_MS <= now;
    rb_err_t e = RB_ERR_DB;

    for (size_t b = 0; b < GW_CREDITS_BUCKETS && n < GW_CREDITS_BATCH_MAX; b++)
        for (credits_user_t *u = c->buckets[b]; u != NULL && n < GW_CREDITS_BATCH_MAX; u = u->next)
            for (gw_credits_lease_t *l = u->leases; l != NULL && n < GW_CREDITS_BATCH_MAX;
                 l = l->next)
                if (!l->lost && l->renewed_ms + every <= now) {
                    l->renewed_ms = now;
                    ids[n] = l->id; /* ids never change */
                    ls[n++] = l;
                }
    if (n == 0 && !beat)
        return;
    if (beat)
        c->last_beat_ms = now;
    pthread_mutex_unlock(&c->mu);
    if (gw_db_ensure(c->db)) {
        if (n > 0 &&
            (e = gw_db_lease_renew(c->db, ids, n, c->conf.ttl_s, dead, err, sizeof(err))) != RB_OK)
            rb_log_warn("lease_renew_failed", "leases=%zu error=\"%s\"", n, err);
        if (beat && gw_db_node_heartbeat(c->db, c->node, c->host, 3 * GW_CREDITS_BEAT_MS / 1000,
                                         err, sizeof(err)) != RB_OK)
            rb_log_warn("node_heartbeat_failed", "node=%s error=\"%s\"", c->node, err);
    }
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        if (e != RB_OK) { /* again in a second */
            ls[i]->renewed_ms = now + 1000 > every ? now + 1000 - every : 0;
        } else if (dead[i]) {
            ls[i]->lost = 1;
            rb_log_warn("lease_lost", "lease=%s (swept: its reserve is gone)", ls[i]->id);
        } else { /* PostgreSQL's expiry moved from a moment after now */
            ls[i]->valid_ms = now + (uint64_t)c->conf.ttl_s * 1000;
        }
    }
}

static int anything_open(gw_credits_t *c)
{
    if (c->returning != NULL)
        return 1;
    for (size_t b = 0; b < GW_CREDITS_BUCKETS; b++)
        for (credits_user_t *u = c->buckets[b]; u != NULL; u = u->next)
            if (u->leases != NULL)
                return 1;
    return 0;
}

static void *credits_main(void *arg)
{
    gw_credits_t *c = arg;
    uint64_t stop_deadline = 0;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        struct timespec ts;
        pass_users(c);
        do_returns(c);
        renew_and_beat(c);
        if (c->stopping) {
            if (stop_deadline == 0)
                stop_deadline = mono_ms() + GW_RECORDER_STOP_MS + 1000;
            if (!anything_open(c) || mono_ms() >= stop_deadline)
                break;
        }
        if (!c->wake) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += GW_CREDITS_TICK_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&c->cond, &c->mu, &ts);
        }
        c->wake = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

rb_err_t gw_credits_start(const gw_credits_conf_t *conf, gw_credits_t **out, char *errbuf,
                          size_t cap)
{
    gw_credits_t *c = rb_calloc(1, sizeof(*c));
    rb_err_t err;

    RB_ASSERT(conf->chunk_micro > 0 && conf->ttl_s > 0 && conf->rec != NULL);
    RB_ASSERT(conf->idle_ms >= 0 && conf->wait_ms >= 0);
    c->conf = *conf;
    snprintf(c->node, sizeof(c->node), "%s", conf->node_id);
    snprintf(c->host, sizeof(c->host), "%s", conf->hostname);
    rb_random_id("", c->nonce, sizeof(c->nonce));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    if ((err = gw_db_connect(conf->db_url, conf->connect_timeout_s, &c->db, errbuf, cap)) !=
            RB_OK ||
        (err = gw_db_node_heartbeat(c->db, c->node, c->host, 3 * GW_CREDITS_BEAT_MS / 1000, errbuf,
                                    cap)) != RB_OK) {
        gw_db_close(c->db);
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return err;
    }
    c->last_beat_ms = mono_ms();
    RB_ASSERT(pthread_create(&c->thread, NULL, credits_main, c) == 0);
    rb_log_info("credits_started", "node=%s chunk_micro=%" PRId64 " ttl_s=%d", c->node,
                conf->chunk_micro, conf->ttl_s);
    *out = c;
    return RB_OK;
}

void gw_credits_stop(gw_credits_t *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    c->wake = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    for (size_t b = 0; b < GW_CREDITS_BUCKETS; b++) {
        credits_user_t *u = c->buckets[b];
        while (u != NULL) {
            credits_user_t *next = u->next;
            RB_ASSERT(u->wait_head == NULL);
            while (u->leases != NULL) { /* not returned in time: they expire after ttl_s */
                gw_credits_lease_t *l = u->leases;
                rb_log_warn("lease_left_open", "lease=%s holds=%d", l->id, l->holds);
                u->leases = l->next;
                free(l);
            }
            free(u);
            u = next;
        }
    }
    while (c->returning != NULL) { /* PostgreSQL did not take them in time: likewise */
        gw_credits_lease_t *l = c->returning;
        rb_log_warn("lease_left_open", "lease=%s holds=0", l->id);
        c->returning = l->next;
        free(l);
    }
    gw_db_close(c->db);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
