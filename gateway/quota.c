#include "gateway/quota.h"

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/db.h"

/* Hash buckets of each table (a power of two). */
#define GW_QUOTA_BUCKETS 4096
/* Room for a database error message. */
#define GW_QUOTA_ERR_MAX 512
/* Longest subject key: user, a separator, subject, NUL. */
#define GW_QUOTA_KEY_MAX (GW_DB_ID_MAX + 1 + GW_LIMITS_SUBJECT_MAX + 1)
/* The separator of a subject key (never in a user id or an accepted subject). */
#define GW_QUOTA_KEY_SEP '\x1f'

struct st_gw_quota_user_t {
    gw_quota_user_t *next; /* hash chain */
    char id[GW_DB_ID_MAX];
    int have;          /* limits loaded at least once */
    int stale;         /* a notification arrived since the last load */
    int loading;       /* the quota thread holds a pointer to it (no eviction) */
    int refreshing;    /* a background refresh is queued */
    uint64_t version;  /* bumped by every notification */
    int64_t loaded_ms; /* last load */
    const cfg_plan_t *plan;
    int64_t day_cap, month_cap, rpm, tpm, concurrent; /* effective; 0 = no limit */
    char *models;                                     /* override list ('\n'-joined), owned */
    int has_models;                                   /* the override applies */
    int64_t day, day_micro, month, month_micro;
    int64_t rpm_start_ms, rpm_used, tpm_start_ms, tpm_used;
    int64_t inflight, last_use_ms;
};

struct st_gw_quota_subject_t {
    gw_quota_subject_t *next;
    char key[GW_QUOTA_KEY_MAX];
    int loading;
    int64_t period_s, period_start_s, spent_micro; /* the budget's current period */
    int seeded;                                    /* spent_micro includes the stored spend */
    int64_t seeded_ms;                             /* when the stored spend was last read */
    int refreshing;                                /* a background refresh is queued */
    int64_t rate_window_s, rate_start_ms, rate_used;
    int64_t inflight, last_use_ms;
};

struct st_gw_quota_job_t {
    h2o_multithread_message_t super; /* first: h2o's queue links it */
    gw_quota_job_t *qnext;
    gw_quota_port_t *port; /* NULL = a background refresh (no answer) */
    gw_quota_t *q;
    char user[GW_DB_ID_MAX];
    char model[CFG_NAME_LEN_MAX + 1];
    char subject[GW_LIMITS_SUBJECT_MAX + 1];
    int64_t tokens;
    int has_budget, has_rate;
    gw_limits_budget_t budget;
    gw_limits_rate_t rate;
    int queued;    /* in the thread's queue (mutex) */
    int detached;  /* its port is gone: answered to nobody (mutex) */
    int cancelled; /* on the port's worker thread only */
    gw_quota_cb cb;
    void *ctx;
    gw_quota_answer_t ans;
};

struct st_gw_quota_port_t {
    h2o_multithread_receiver_t recv;
    h2o_multithread_queue_t *queue;
    gw_quota_t *q;
};

struct st_gw_quota_t {
    gw_quota_conf_t conf;
    gw_db_t *db;      /* the quota thread's; NULL until connected */
    int listening;    /* LISTEN is active on db, in session */
    uint64_t session; /* gw_db_session of the LISTEN */
    pthread_t thread;
    pthread_mutex_t mu; /* guards everything below */
    gw_quota_user_t *users[GW_QUOTA_BUCKETS];
    gw_quota_subject_t *subjects[GW_QUOTA_BUCKETS];
    size_t users_len, subjects_len;
    size_t users_max, subjects_max; /* conf.table_max, else GW_QUOTA_USERS_MAX, _SUBJECTS_MAX */
    int64_t evict_next_ms;          /* a full table is not walked again before (make_room) */
    gw_quota_job_t *qhead, *qtail;
    size_t qlen;
    gw_quota_job_t *running; /* dequeued, not answered yet */
    int64_t db_retry_ms;     /* the database failed: not asked before (atomic: written unlocked) */
    int64_t last_sweep_ms;
    int stopping;
    int wake[2]; /* pipe: a job was queued, or stop */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t hash_str(const char *s)
{
    size_t h = 5381;
    for (; *s != '\0'; s++)
        h = h * 33 + (unsigned char)*s;
    return h & (GW_QUOTA_BUCKETS - 1);
}

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

/* ---- tables (mutex held) ---- */

/* The earliest time entry-level state allows an eviction: idle_ms after the last use (or after
 * now for an entry in use: its release stamps last_use_ms), a subject not before its rate window
 * ends. */
static int64_t user_free_at(const gw_quota_user_t *u, int64_t now, int64_t idle_ms,
                            const gw_quota_user_t *keep)
{
    int busy = u == keep || u->inflight > 0 || u->loading;
    return add_sat(busy ? now : u->last_use_ms, idle_ms);
}

static int64_t subject_free_at(const gw_quota_subject_t *s, int64_t now, int64_t idle_ms)
{
    int busy = s->inflight > 0 || s->loading;
    int64_t t = add_sat(busy ? now : s->last_use_ms, idle_ms);
    int64_t rate_end = add_sat(s->rate_start_ms, s->rate_window_s * 1000);
    return rate_end > t ? rate_end : t;
}

/* Frees entries with nothing in flight, idle for at least idle_ms, but user keep (the caller holds
 * it), and subjects whose rate window is still running (its count lives only here). Returns the
 * earliest time one of the entries left could be freed (INT64_MAX when none is left). */
static int64_t evict_idle(gw_quota_t *q, int64_t now, int64_t idle_ms, const gw_quota_user_t *keep)
{
    int64_t next = INT64_MAX, t;

    for (size_t b = 0; b < GW_QUOTA_BUCKETS; b++) {
        gw_quota_user_t **pu = &q->users[b];
        gw_quota_subject_t **ps = &q->subjects[b];
        while (*pu != NULL) {
            gw_quota_user_t *u = *pu;
            if ((t = user_free_at(u, now, idle_ms, keep)) <= now) {
                *pu = u->next;
                free(u->models);
                free(u);
                q->users_len--;
                continue;
            }
            next = t < next ? t : next;
            pu = &u->next;
        }
        while (*ps != NULL) {
            gw_quota_subject_t *s = *ps;
            if ((t = subject_free_at(s, now, idle_ms)) <= now) {
                *ps = s->next;
                free(s);
                q->subjects_len--;
                continue;
            }
            next = t < next ? t : next;
            ps = &s->next;
        }
    }
    return next;
}

/* Makes room in a full table: one walk of both tables, then none before the earliest time an
 * entry can go (so a full table costs one walk per freeing, not one per request). 0 = still full.
 */
static void make_room(gw_quota_t *q, int64_t now, const gw_quota_user_t *keep)
{
    if (now >= q->evict_next_ms) {
        q->evict_next_ms = evict_idle(q, now, q->conf.window_ms, keep);
        if (q->users_len >= q->users_max || q->subjects_len >= q->subjects_max)
            rb_log_warn("limits_table_full", "users=%zu subjects=%zu retry_ms=%lld", q->users_len,
                        q->subjects_len,
                        (long long)(q->evict_next_ms == INT64_MAX ? -1 : q->evict_next_ms - now));
    }
}

/* The user's entry; created when create (NULL past users_max). */
static gw_quota_user_t *user_get(gw_quota_t *q, const char *id, int create, int64_t now)
{
    size_t b = hash_str(id);
    gw_quota_user_t *u;

    for (u = q->users[b]; u != NULL; u = u->next)
        if (strcmp(u->id, id) == 0)
            return u;
    if (!create || strlen(id) >= sizeof(u->id))
        return NULL;
    if (q->users_len >= q->users_max)
        make_room(q, now, NULL);
    if (q->users_len >= q->users_max)
        return NULL;
    u = rb_calloc(1, sizeof(*u));
    snprintf(u->id, sizeof(u->id), "%s", id);
    u->last_use_ms = now;
    u->next = q->users[b];
    q->users[b] = u;
    q->users_len++;
    return u;
}

/* The job's subject key in key[GW_QUOTA_KEY_MAX]; 0 when the job carries no subject limit. */
static int subject_key(const gw_quota_job_t *j, char *key)
{
    if (j->subject[0] == '\0' || (!j->has_budget && !j->has_rate))
        return 0;
    snprintf(key, GW_QUOTA_KEY_MAX, "%s%c%s", j->user, GW_QUOTA_KEY_SEP, j->subject);
    return 1;
}

static gw_quota_subject_t *subject_find(gw_quota_t *q, const char *key)
{
    for (gw_quota_subject_t *s = q->subjects[hash_str(key)]; s != NULL; s = s->next)
        if (strcmp(s->key, key) == 0)
            return s;
    return NULL;
}

/* The job's subject entry when it carries a subject limit, created when missing; NULL otherwise,
 * *full = 1 when the table has no room. u (the job's user, held by the caller) is never evicted. */
static gw_quota_subject_t *subject_get(gw_quota_t *q, const gw_quota_job_t *j, gw_quota_user_t *u,
                                       int64_t now, int *full)
{
    char key[GW_QUOTA_KEY_MAX];
    gw_quota_subject_t *s;
    size_t b;

    *full = 0;
    if (!subject_key(j, key))
        return NULL;
    if ((s = subject_find(q, key)) != NULL)
        return s;
    if (q->subjects_len >= q->subjects_max)
        make_room(q, now, u);
    if (q->subjects_len >= q->subjects_max) {
        u->last_use_ms = now; /* it asked: not idle (make_room's bound counts on it) */
        *full = 1;
        return NULL;
    }
    s = rb_calloc(1, sizeof(*s));
    memcpy(s->key, key, sizeof(key));
    s->last_use_ms = now;
    b = hash_str(key);
    s->next = q->subjects[b];
    q->subjects[b] = s;
    q->subjects_len++;
    return s;
}

/* Moves the user's counters to the day, month and windows of now. */
static void user_roll(gw_quota_t *q, gw_quota_user_t *u, int64_t now)
{
    int64_t day = gw_limits_utc_day(now / 1000), month = gw_limits_utc_month(now / 1000);
    int64_t w = gw_limits_window_start(now, q->conf.window_ms);

    if (u->day != day) {
        u->day = day;
        u->day_micro = 0;
    }
    if (u->month != month) {
        u->month = month;
        u->month_micro = 0;
    }
    if (u->rpm_start_ms != w) {
        u->rpm_start_ms = w;
        u->rpm_used = 0;
    }
    if (u->tpm_start_ms != w) {
        u->tpm_start_ms = w;
        u->tpm_used = 0;
    }
}

/* Moves the subject's budget to the period of now (period_s > 0). */
static void subject_roll_budget(gw_quota_subject_t *s, int64_t period_s, int64_t now)
{
    int64_t start = gw_limits_window_start(now, period_s * 1000) / 1000;

    if (s->period_s != period_s || s->period_start_s != start) {
        s->period_s = period_s;
        s->period_start_s = start;
        s->spent_micro = 0;
        s->seeded = 0;
    }
}

static void subject_roll_rate(gw_quota_subject_t *s, int64_t window_s, int64_t now)
{
    int64_t start = gw_limits_window_start(now, window_s * 1000);

    if (s->rate_window_s != window_s || s->rate_start_ms != start) {
        s->rate_window_s = window_s;
        s->rate_start_ms = start;
        s->rate_used = 0;
    }
}

static int model_allowed(const gw_quota_user_t *u, const char *model)
{
    const cfg_plan_t *p = u->plan;
    size_t n = strlen(model);

    if (u->has_models) {
        for (const char *m = u->models; m != NULL && *m != '\0';) {
            const char *nl = strchr(m, '\n');
            size_t len = nl != NULL ? (size_t)(nl - m) : strlen(m);
            if (len == n && memcmp(m, model, n) == 0)
                return 1;
            m = nl != NULL ? nl + 1 : NULL;
        }
        return 0;
    }
    for (size_t i = 0; i < p->allowed_models_len; i++)
        if (strcmp(p->allowed_models[i], model) == 0)
            return 1;
    return p->allowed_models_len == 0;
}

static gw_quota_verdict_t refuse(gw_quota_answer_t *a, gw_quota_verdict_t v, int64_t limit,
                                 int64_t retry_after_s)
{
    a->limit = limit;
    a->retry_after_s = retry_after_s;
    return v;
}

/* The first limit the request hits (checks only; DESIGN.md §3 order of gateway/quota.h). */
static gw_quota_verdict_t check(gw_quota_t *q, const gw_quota_user_t *u,
                                const gw_quota_subject_t *s, const gw_quota_job_t *j, int64_t now,
                                gw_quota_answer_t *a)
{
    int64_t retry = gw_limits_retry_after_s(now, q->conf.window_ms);

    if (!model_allowed(u, j->model))
        return refuse(a, GW_QUOTA_MODEL_NOT_ALLOWED, 0, 0);
    if (gw_limits_cap_reached(u->day_micro, u->day_cap))
        return refuse(a, GW_QUOTA_DAILY, u->day_cap, 0);
    if (gw_limits_cap_reached(u->month_micro, u->month_cap))
        return refuse(a, GW_QUOTA_MONTHLY, u->month_cap, 0);
    if (s != NULL && j->has_budget && s->spent_micro >= j->budget.budget_micro)
        return refuse(a, GW_QUOTA_SUBJECT_BUDGET, j->budget.budget_micro, 0);
    if (u->concurrent > 0 && u->inflight >= u->concurrent)
        return refuse(a, GW_QUOTA_CONCURRENCY, u->concurrent, 1); /* a stream may end any time */
    if (u->rpm > 0 && u->rpm_used >= u->rpm)
        return refuse(a, GW_QUOTA_RPM, u->rpm, retry);
    if (u->tpm > 0 && u->tpm_used >= u->tpm)
        return refuse(a, GW_QUOTA_TPM, u->tpm, retry);
    if (s != NULL && j->has_rate && s->rate_used >= j->rate.count)
        return refuse(a, GW_QUOTA_SUBJECT_RATE, j->rate.count,
                      gw_limits_retry_after_s(now, j->rate.window_s * 1000));
    return GW_QUOTA_OK;
}

/* Checks the request against u (loaded) and s, and counts it when admitted. */
static void decide(gw_quota_t *q, gw_quota_user_t *u, gw_quota_subject_t *s,
                   const gw_quota_job_t *j, int64_t now, gw_quota_answer_t *a)
{
    RB_ASSERT(u->have && u->plan != NULL);
    *a = (gw_quota_answer_t){.verdict = GW_QUOTA_OK};
    user_roll(q, u, now);
    u->last_use_ms = now;
    if (s != NULL) {
        if (j->has_budget)
            subject_roll_budget(s, j->budget.period_s, now);
        if (j->has_rate)
            subject_roll_rate(s, j->rate.window_s, now);
        s->last_use_ms = now;
    }
    if ((a->verdict = check(q, u, s, j, now, a)) != GW_QUOTA_OK)
        return;
    u->inflight++;
    u->rpm_used++;
    u->tpm_used = add_sat(u->tpm_used, j->tokens);
    if (s != NULL) {
        s->inflight++;
        s->rate_used++;
    }
    a->ticket = (gw_quota_ticket_t){
        .user = u, .subject = s, .tpm_window_ms = u->tpm_start_ms, .tokens = j->tokens};
    RB_ASSERT(u->inflight > 0);
}

/* Installs loaded limits and spend into u. */
static void install(gw_quota_t *q, gw_quota_user_t *u, const gw_db_limits_t *l, int64_t now)
{
    const cfg_plan_t *p = cfg_plan_find(q->conf.cfg, l->plan);

    if (p == NULL)
        p = q->conf.cfg->default_plan;
    u->plan = p;
    u->day_cap = l->credits_per_day >= 0 ? l->credits_per_day : p->credits_per_day;
    u->month_cap = l->credits_per_month >= 0 ? l->credits_per_month : p->credits_per_month;
    u->rpm = l->rpm >= 0 ? l->rpm : p->rpm;
    u->tpm = l->tpm >= 0 ? l->tpm : p->tpm;
    u->concurrent = l->max_concurrent >= 0 ? l->max_concurrent : p->max_concurrent;
    free(u->models);
    u->models = NULL;
    /* an empty override list means all models, like an empty plan list */
    u->has_models = l->has_models && l->models[0] != '\0';
    if (u->has_models)
        u->models = rb_strdup(l->models);
    user_roll(q, u, now);
    /* other processes' spend arrives through the database; ours may not be committed yet. Only
     * a spend of this day and month: a load across midnight counts the day that ended */
    if (l->day == u->day && l->day_micro > u->day_micro)
        u->day_micro = l->day_micro;
    if (l->month == u->month && l->month_micro > u->month_micro)
        u->month_micro = l->month_micro;
    u->have = 1;
    u->loaded_ms = now;
    RB_ASSERT(u->day_cap >= 0 && u->rpm >= 0 && u->concurrent >= 0);
}

/* ---- admission (worker threads) ---- */

static void job_fill(gw_quota_job_t *j, const gw_quota_ask_t *ask)
{
    rb_copy_str(j->user, sizeof(j->user), ask->user);
    rb_copy_str(j->model, sizeof(j->model), ask->model);
    rb_copy_str(j->subject, sizeof(j->subject), ask->subject);
    j->tokens = ask->tokens > 0 ? ask->tokens : 0;
    if ((j->has_budget = ask->budget != NULL))
        j->budget = *ask->budget;
    if ((j->has_rate = ask->rate != NULL))
        j->rate = *ask->rate;
}

/* Queues j (a heap copy is made) for the quota thread (mutex held); NULL when the queue is full. */
static gw_quota_job_t *enqueue(gw_quota_t *q, const gw_quota_job_t *j)
{
    gw_quota_job_t *job;

    if (q->qlen >= GW_QUOTA_QUEUE_MAX)
        return NULL;
    job = rb_malloc(sizeof(*job));
    *job = *j;
    job->queued = 1;
    job->qnext = NULL;
    if (q->qtail != NULL)
        q->qtail->qnext = job;
    else
        q->qhead = job;
    q->qtail = job;
    q->qlen++;
    (void)!write(q->wake[1], "x", 1);
    return job;
}

/* 1 when a load must come first: limits never loaded or stale, or the subject's spend unknown
 * for its period; while the database is backing off, what is known is used. */
static int needs_load(gw_quota_t *q, gw_quota_user_t *u, gw_quota_subject_t *s,
                      const gw_quota_job_t *j, int64_t now)
{
    int db_ok = now >= __atomic_load_n(&q->db_retry_ms, __ATOMIC_RELAXED);

    if (!u->have)
        return db_ok;
    if (u->stale && db_ok)
        return 1;
    if (s != NULL && j->has_budget) {
        subject_roll_budget(s, j->budget.period_s, now);
        return !s->seeded && db_ok;
    }
    return 0;
}

int gw_quota_admit(gw_quota_port_t *port, const gw_quota_ask_t *ask, gw_quota_answer_t *ans,
                   gw_quota_cb cb, void *ctx, gw_quota_job_t **job_out)
{
    gw_quota_t *q = port->q;
    gw_quota_job_t j = {.port = port, .q = q, .cb = cb, .ctx = ctx};
    gw_quota_user_t *u;
    gw_quota_subject_t *s;
    int64_t now = now_ms();
    int full = 0, answered = 1;

    RB_ASSERT(ask->user != NULL && ask->user[0] != '\0' && ask->model != NULL);
    job_fill(&j, ask);
    *ans = (gw_quota_answer_t){.verdict = GW_QUOTA_UNAVAILABLE};
    *job_out = NULL;
    pthread_mutex_lock(&q->mu);
    u = user_get(q, j.user, 1, now);
    s = u != NULL ? subject_get(q, &j, u, now, &full) : NULL;
    if (u == NULL || full) {
        /* refused: GW_QUOTA_UNAVAILABLE (make_room logged it) */
    } else if (needs_load(q, u, s, &j, now)) {
        if ((*job_out = enqueue(q, &j)) != NULL)
            answered = 0;
    } else if (u->have) {
        decide(q, u, s, &j, now, ans);
        /* a background refresh: the spends of the other gateways */
        if ((now - u->loaded_ms >= q->conf.ttl_ms && !u->refreshing && !u->loading) ||
            (s != NULL && j.has_budget && s->seeded && now - s->seeded_ms >= q->conf.ttl_ms &&
             !s->refreshing && !s->loading)) {
            j.port = NULL;
            if (enqueue(q, &j) != NULL) {
                u->refreshing = 1;
                if (s != NULL)
                    s->refreshing = j.has_budget;
            }
        }
    }
    pthread_mutex_unlock(&q->mu);
    return answered;
}

void gw_quota_cancel(gw_quota_job_t *job)
{
    gw_quota_t *q = job->q;
    gw_quota_job_t **pp, *prev = NULL;

    pthread_mutex_lock(&q->mu);
    if (!job->queued) {
        job->cancelled = 1; /* the answer is on its way: the receiver finishes and frees it */
        pthread_mutex_unlock(&q->mu);
        return;
    }
    for (pp = &q->qhead; *pp != job; pp = &(*pp)->qnext)
        prev = *pp;
    *pp = job->qnext;
    if (q->qtail == job)
        q->qtail = prev;
    q->qlen--;
    pthread_mutex_unlock(&q->mu);
    free(job);
}

void gw_quota_finish(gw_quota_t *q, gw_quota_ticket_t *t, int64_t billed_cost_micro, int64_t tokens)
{
    gw_quota_user_t *u = t->user;
    gw_quota_subject_t *s = t->subject;
    int64_t now = now_ms();

    if (u == NULL)
        return;
    RB_ASSERT(billed_cost_micro >= 0 && tokens >= 0);
    pthread_mutex_lock(&q->mu);
    RB_ASSERT(u->inflight > 0);
    u->inflight--;
    user_roll(q, u, now);
    u->day_micro = add_sat(u->day_micro, billed_cost_micro);
    u->month_micro = add_sat(u->month_micro, billed_cost_micro);
    /* the estimate was counted at admission: correct it in its window, else count here */
    if (u->tpm_start_ms == t->tpm_window_ms)
        u->tpm_used = add_sat(u->tpm_used, tokens - t->tokens);
    else
        u->tpm_used = add_sat(u->tpm_used, tokens);
    if (u->tpm_used < 0)
        u->tpm_used = 0;
    u->last_use_ms = now;
    if (s != NULL) {
        RB_ASSERT(s->inflight > 0);
        s->inflight--;
        if (s->period_s > 0) {
            subject_roll_budget(s, s->period_s, now);
            s->spent_micro = add_sat(s->spent_micro, billed_cost_micro);
        }
        s->last_use_ms = now;
    }
    pthread_mutex_unlock(&q->mu);
    *t = (gw_quota_ticket_t){0};
}

static void on_port_messages(h2o_multithread_receiver_t *recv, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        gw_quota_job_t *job = (gw_quota_job_t *)m;
        h2o_linklist_unlink(&m->link);
        if (!job->cancelled)
            job->cb(job->ctx, &job->ans);
        else
            gw_quota_finish(job->q, &job->ans.ticket, 0, 0);
        free(job);
    }
}

gw_quota_port_t *gw_quota_port_create(gw_quota_t *q, h2o_multithread_queue_t *queue)
{
    gw_quota_port_t *port = rb_calloc(1, sizeof(*port));
    port->q = q;
    port->queue = queue;
    h2o_multithread_register_receiver(queue, &port->recv, on_port_messages);
    return port;
}

void gw_quota_port_destroy(gw_quota_port_t *port)
{
    gw_quota_t *q;
    gw_quota_job_t **pp, *prev = NULL;

    if (port == NULL)
        return;
    q = port->q;
    /* the port's jobs still queued go; the one being run is answered to nobody */
    pthread_mutex_lock(&q->mu);
    for (pp = &q->qhead; *pp != NULL;) {
        gw_quota_job_t *job = *pp;
        if (job->port != port) {
            prev = job;
            pp = &job->qnext;
            continue;
        }
        *pp = job->qnext;
        q->qlen--;
        free(job);
    }
    q->qtail = prev;
    if (q->running != NULL && q->running->port == port)
        q->running->detached = 1;
    pthread_mutex_unlock(&q->mu);
    /* answers delivered but never run (the worker's loop has stopped) go as cancelled ones do:
     * h2o asserts the receiver is empty, and no thread sends to this port any more */
    for (h2o_linklist_t *l = port->recv._messages.next; l != &port->recv._messages; l = l->next)
        ((gw_quota_job_t *)H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, l))->cancelled =
            1;
    on_port_messages(&port->recv, &port->recv._messages);
    h2o_multithread_unregister_receiver(port->queue, &port->recv);
    free(port);
}

/* ---- the quota thread ---- */

static void mark_all_stale(gw_quota_t *q)
{
    pthread_mutex_lock(&q->mu);
    for (size_t b = 0; b < GW_QUOTA_BUCKETS; b++)
        for (gw_quota_user_t *u = q->users[b]; u != NULL; u = u->next) {
            u->stale = 1;
            u->version++;
        }
    pthread_mutex_unlock(&q->mu);
}

static void on_notify(void *ctx, const char *channel, const char *payload)
{
    gw_quota_t *q = ctx;
    gw_quota_user_t *u;

    if (strcmp(channel, GW_DB_LIMITS_CHANNEL) != 0)
        return;
    if (payload[0] == '\0') {
        mark_all_stale(q);
        return;
    }
    pthread_mutex_lock(&q->mu);
    if ((u = user_get(q, payload, 0, 0)) != NULL) {
        u->stale = 1;
        u->version++;
    }
    pthread_mutex_unlock(&q->mu);
    rb_log_debug("limits_changed", "user=%s", payload);
}

/* Connects and LISTENs when needed; 1 when the database can be asked. */
static int db_ready(gw_quota_t *q)
{
    char err[GW_QUOTA_ERR_MAX] = "";

    if (now_ms() < __atomic_load_n(&q->db_retry_ms, __ATOMIC_RELAXED))
        return 0;
    if (q->db == NULL &&
        gw_db_connect(q->conf.db_url, q->conf.connect_timeout_s, &q->db, err, sizeof(err)) != RB_OK)
        goto Fail;
    if (!gw_db_ensure(q->db)) {
        q->listening = 0;
        snprintf(err, sizeof(err), "connection lost");
        goto Fail;
    }
    if (!q->listening || gw_db_session(q->db) != q->session) { /* a reconnect loses the LISTEN */
        if (gw_db_listen(q->db, GW_DB_LIMITS_CHANNEL, err, sizeof(err)) != RB_OK)
            goto Fail;
        q->listening = 1;
        q->session = gw_db_session(q->db);
        mark_all_stale(q); /* what changed while we were not listening is unknown */
    }
    return 1;
Fail:
    __atomic_store_n(&q->db_retry_ms, now_ms() + GW_QUOTA_DB_BACKOFF_MS, __ATOMIC_RELAXED);
    rb_log_warn("limits_db_unavailable", "error=\"%s\"", err);
    return 0;
}

static void check_notifications(gw_quota_t *q)
{
    if (q->db == NULL || !q->listening)
        return;
    if (gw_db_notifications_each(q->db, on_notify, q) < 0) {
        q->listening = 0; /* re-LISTEN (and drop everything) once the connection is back */
        mark_all_stale(q);
    }
}

/* Runs the queries a job needs (mutex not held). RB_OK, or RB_ERR_DB (nothing learnt). */
static rb_err_t load(gw_quota_t *q, const gw_quota_job_t *j, int need_user, int64_t since_s,
                     gw_db_limits_t *l, int64_t *spent)
{
    char err[GW_QUOTA_ERR_MAX] = "";
    rb_err_t e = RB_OK;

    if (!db_ready(q))
        return RB_ERR_DB;
    if (need_user) {
        e = gw_db_limits_load(q->db, j->user, l, err, sizeof(err));
        if (e == RB_ERR_NOTFOUND) { /* a user deleted meanwhile: the default plan, no spend */
            memset(l, 0, offsetof(gw_db_limits_t, models));
            l->credits_per_day = l->credits_per_month = l->rpm = l->tpm = l->max_concurrent = -1;
            l->day_micro = l->month_micro = 0;
            l->day = l->month = -1;
            e = RB_OK;
        }
    }
    if (e == RB_OK && since_s >= 0)
        e = gw_db_subject_spent(q->db, j->user, j->subject, since_s, spent, err, sizeof(err));
    if (e != RB_OK) {
        __atomic_store_n(&q->db_retry_ms, now_ms() + GW_QUOTA_DB_BACKOFF_MS, __ATOMIC_RELAXED);
        rb_log_warn("limits_load_failed", "user=%s error=\"%s\"", j->user, err);
    }
    check_notifications(q); /* one that arrived during the query makes the answer stale */
    return e;
}

/* One attempt at a job (mutex held, dropped around the queries): 1 = done, 0 = try again. */
static int run_once(gw_quota_t *q, gw_quota_job_t *j, gw_db_limits_t *l, int last)
{
    int64_t now = now_ms(), since = -1, spent = 0;
    gw_quota_user_t *u = user_get(q, j->user, 1, now);
    int full = 0, need_user;
    gw_quota_subject_t *s = u != NULL ? subject_get(q, j, u, now, &full) : NULL;
    uint64_t version;
    rb_err_t e;

    if (u == NULL || full)
        return 1; /* ans stays GW_QUOTA_UNAVAILABLE */
    need_user = !u->have || u->stale || j->port == NULL;
    if (s != NULL && j->has_budget) {
        subject_roll_budget(s, j->budget.period_s, now);
        if (!s->seeded || j->port == NULL)
            since = s->period_start_s;
    }
    if (need_user || since >= 0) {
        version = u->version;
        u->loading++;
        if (s != NULL)
            s->loading++;
        pthread_mutex_unlock(&q->mu);
        e = load(q, j, need_user, since, l, &spent);
        pthread_mutex_lock(&q->mu);
        now = now_ms();
        u->loading--;
        u->last_use_ms = now; /* a load is a use (make_room's bound counts on it) */
        if (s != NULL) {
            s->loading--;
            s->last_use_ms = now;
        }
        if (e == RB_OK && need_user) {
            install(q, u, l, now);
            u->stale = u->version != version;
            if (u->stale && !last)
                return 0;
        }
        if (s != NULL && since >= 0 && s->period_start_s == since) {
            if (e == RB_OK && spent > s->spent_micro)
                s->spent_micro = spent;
            s->seeded = 1; /* on failure: what this process saw (the database backs off) */
            s->seeded_ms = now;
        }
    }
    if (j->port != NULL && u->have)
        decide(q, u, s, j, now, &j->ans);
    return 1;
}

static void run_job(gw_quota_t *q, gw_quota_job_t *j)
{
    gw_db_limits_t *l = rb_malloc(sizeof(*l));
    char key[GW_QUOTA_KEY_MAX];
    gw_quota_user_t *u;
    gw_quota_subject_t *s;

    int background = j->port == NULL, orphan;

    j->ans = (gw_quota_answer_t){.verdict = GW_QUOTA_UNAVAILABLE};
    pthread_mutex_lock(&q->mu);
    q->running = j;
    for (int i = 0; i < GW_QUOTA_RELOAD_MAX && !run_once(q, j, l, i == GW_QUOTA_RELOAD_MAX - 1);
         i++)
        ;
    if (j->port == NULL && (u = user_get(q, j->user, 0, 0)) != NULL)
        u->refreshing = 0;
    if (j->port == NULL && subject_key(j, key) && (s = subject_find(q, key)) != NULL)
        s->refreshing = 0;
    q->running = NULL;
    orphan = !background && j->detached;
    if (!background && !orphan) /* under the mutex, against gw_quota_port_destroy */
        h2o_multithread_send_message(&j->port->recv, &j->super); /* now the receiver's */
    pthread_mutex_unlock(&q->mu);
    free(l);
    if (orphan) /* admitted for nobody: the ticket goes back */
        gw_quota_finish(q, &j->ans.ticket, 0, 0);
    if (background || orphan)
        free(j);
}

static gw_quota_job_t *dequeue(gw_quota_t *q, int *stopping)
{
    gw_quota_job_t *j;

    pthread_mutex_lock(&q->mu);
    *stopping = q->stopping;
    if ((j = *stopping ? NULL : q->qhead) != NULL) {
        q->qhead = j->qnext;
        if (q->qhead == NULL)
            q->qtail = NULL;
        q->qlen--;
        j->queued = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return j;
}

static void *quota_main(void *arg)
{
    gw_quota_t *q = arg;
    int stopping = 0;

    while (!stopping) {
        struct pollfd p[2] = {{.fd = q->wake[0], .events = POLLIN},
                              {.fd = q->db != NULL ? gw_db_socket(q->db) : -1, .events = POLLIN}};
        char drain[64];
        gw_quota_job_t *j;
        int64_t now;
        poll(p, p[1].fd >= 0 ? 2 : 1, GW_QUOTA_POLL_MS);
        while (read(q->wake[0], drain, sizeof(drain)) > 0)
            ;
        if (!q->listening)
            db_ready(q);
        check_notifications(q);
        while ((j = dequeue(q, &stopping)) != NULL)
            run_job(q, j);
        if ((now = now_ms()) - q->last_sweep_ms >= GW_QUOTA_SWEEP_MS) {
            pthread_mutex_lock(&q->mu);
            q->last_sweep_ms = now;
            evict_idle(q, now, GW_QUOTA_IDLE_MS, NULL);
            pthread_mutex_unlock(&q->mu);
        }
    }
    return NULL;
}

gw_quota_t *gw_quota_start(const gw_quota_conf_t *conf)
{
    gw_quota_t *q = rb_calloc(1, sizeof(*q));

    RB_ASSERT(conf->cfg != NULL && conf->db_url != NULL && conf->window_ms >= 0);
    q->conf = *conf;
    if (q->conf.window_ms == 0)
        q->conf.window_ms = GW_QUOTA_WINDOW_MS;
    if (q->conf.ttl_ms <= 0)
        q->conf.ttl_ms = GW_QUOTA_TTL_MS;
    q->users_max = q->conf.table_max > 0 ? q->conf.table_max : GW_QUOTA_USERS_MAX;
    q->subjects_max = q->conf.table_max > 0 ? q->conf.table_max : GW_QUOTA_SUBJECTS_MAX;
    if (q->conf.connect_timeout_s <= 0)
        q->conf.connect_timeout_s = 1;
    q->last_sweep_ms = now_ms();
    RB_ASSERT(pipe2(q->wake, O_CLOEXEC | O_NONBLOCK) == 0);
    pthread_mutex_init(&q->mu, NULL);
    RB_ASSERT(pthread_create(&q->thread, NULL, quota_main, q) == 0);
    rb_log_info("limits_started", "window_ms=%" PRId64 " users_max=%zu subjects_max=%zu",
                q->conf.window_ms, q->users_max, q->subjects_max);
    return q;
}

void gw_quota_stop(gw_quota_t *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_mutex_unlock(&q->mu);
    (void)!write(q->wake[1], "x", 1);
    pthread_join(q->thread, NULL);
    while (q->qhead != NULL) { /* their requests are gone with the server */
        gw_quota_job_t *j = q->qhead;
        q->qhead = j->qnext;
        free(j);
    }
    for (size_t b = 0; b < GW_QUOTA_BUCKETS; b++) {
        while (q->users[b] != NULL) {
            gw_quota_user_t *u = q->users[b];
            q->users[b] = u->next;
            free(u->models);
            free(u);
        }
        while (q->subjects[b] != NULL) {
            gw_quota_subject_t *s = q->subjects[b];
            q->subjects[b] = s->next;
            free(s);
        }
    }
    gw_db_close(q->db);
    close(q->wake[0]);
    close(q->wake[1]);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

int gw_quota_describe(const gw_quota_answer_t *a, const char **code, char *msg, size_t cap)
{
    int64_t n = a->limit;

    switch (a->verdict) {
    case GW_QUOTA_MODEL_NOT_ALLOWED:
        *code = "model_not_allowed";
        snprintf(msg, cap, "this model is not among the models your plan or limits allow");
        return 403;
    case GW_QUOTA_DAILY:
        *code = "daily_limit_reached";
        snprintf(msg, cap, "daily credit limit reached (%" PRId64 " credits per UTC day)", n);
        return 402;
    case GW_QUOTA_MONTHLY:
        *code = "monthly_limit_reached";
        snprintf(msg, cap, "monthly credit limit reached (%" PRId64 " credits per UTC month)", n);
        return 402;
    case GW_QUOTA_SUBJECT_BUDGET:
        *code = "subject_over_budget";
        snprintf(msg, cap, "the subject's budget is spent (%" PRId64 " micro-credits per period)",
                 n);
        return 402;
    case GW_QUOTA_CONCURRENCY:
        *code = "concurrency_limit_reached";
        snprintf(msg, cap, "too many requests in flight (at most %" PRId64 ")", n);
        return 429;
    case GW_QUOTA_RPM:
        *code = "rpm_limit_reached";
        snprintf(msg, cap, "request rate limit reached (%" PRId64 " requests per minute)", n);
        return 429;
    case GW_QUOTA_TPM:
        *code = "tpm_limit_reached";
        snprintf(msg, cap, "token rate limit reached (%" PRId64 " tokens per minute)", n);
        return 429;
    case GW_QUOTA_SUBJECT_RATE:
        *code = "subject_rate_limited";
        snprintf(msg, cap, "the subject's request rate limit is reached (%" PRId64 " requests)", n);
        return 429;
    default:
        *code = "limits_unavailable";
        snprintf(msg, cap, "the gateway cannot check limits right now; retry shortly");
        return 503;
    }
}
