#include "gateway/recorder.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

/* Room for a database error message. */
#define GW_RECORDER_ERR_MAX 512

typedef struct st_rec_node_t {
    struct st_rec_node_t *next;
    gw_db_usage_row_t row;
} rec_node_t;

struct st_gw_recorder_t {
    gw_recorder_conf_t conf;
    gw_db_t *db;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    rec_node_t *head, *tail;
    size_t count;
    int stopping;
    gw_db_usage_row_t *batch; /* batch_max rows, owned by the thread */
    rb_metric_t *m_depth, *m_dropped, *m_written, *m_failed;
};

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int gw_recorder_submit(gw_recorder_t *r, const gw_db_usage_row_t *row)
{
    rec_node_t *n;

    RB_ASSERT(row->user_id[0] != '\0' && row->request_id[0] != '\0');
    pthread_mutex_lock(&r->mu);
    if (r->count >= (size_t)r->conf.queue_max) {
        pthread_mutex_unlock(&r->mu);
        if (r->m_dropped != NULL)
            rb_metric_add(r->m_dropped, 1);
        rb_log_warn("usage_dropped", "request_id=%s reason=writer_queue_full queue_max=%d",
                    row->request_id, r->conf.queue_max);
        return -1;
    }
    n = rb_malloc(sizeof(*n));
    n->next = NULL;
    n->row = *row;
    if (r->tail != NULL)
        r->tail->next = n;
    else
        r->head = n;
    r->tail = n;
    r->count++;
    /* wake on the first row (or nothing is written until a batch fills) and on a full batch */
    if (r->count == 1 || r->count == (size_t)r->conf.batch_max)
        pthread_cond_signal(&r->cond);
    if (r->m_depth != NULL)
        rb_metric_set(r->m_depth, (int64_t)r->count);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

size_t gw_recorder_depth(gw_recorder_t *r)
{
    size_t n;
    pthread_mutex_lock(&r->mu);
    n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Takes up to batch_max rows off the queue into r->batch (mutex held). */
static size_t take_batch(gw_recorder_t *r)
{
    size_t n = 0;
    while (r->head != NULL && n < (size_t)r->conf.batch_max) {
        rec_node_t *node = r->head;
        r->head = node->next;
        if (r->head == NULL)
            r->tail = NULL;
        r->batch[n++] = node->row;
        free(node);
        r->count--;
    }
    if (r->m_depth != NULL)
        rb_metric_set(r->m_depth, (int64_t)r->count);
    return n;
}

/* A batch the database refused as a whole: isolate the bad rows. */
static void write_one_by_one(gw_recorder_t *r, size_t n)
{
    char err[GW_RECORDER_ERR_MAX];
    for (size_t i = 0; i < n; i++) {
        if (gw_db_usage_insert(r->db, &r->batch[i], 1, err, sizeof(err)) == RB_OK) {
            if (r->m_written != NULL)
                rb_metric_add(r->m_written, 1);
            continue;
        }
        if (r->m_failed != NULL)
            rb_metric_add(r->m_failed, 1);
        rb_log_error("usage_row_refused", "request_id=%s error=\"%s\"", r->batch[i].request_id,
                     err);
    }
}

/* Writes the batch, retrying while the database is unreachable (bounded once stopping). */
static void write_batch(gw_recorder_t *r, size_t n)
{
    char err[GW_RECORDER_ERR_MAX];
    int waited_ms = 0;

    for (;;) {
        if (gw_db_ensure(r->db)) {
            if (gw_db_usage_insert(r->db, r->batch, n, err, sizeof(err)) == RB_OK) {
                if (r->m_written != NULL)
                    rb_metric_add(r->m_written, (int64_t)n);
                return;
            }
            if (gw_db_ensure(r->db)) { /* the connection is fine: the data is not */
                write_one_by_one(r, n);
                return;
            }
        }
        rb_log_warn("usage_write_retry", "rows=%zu error=\"%s\"", n, err);
        if (__atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE) && waited_ms >= GW_RECORDER_STOP_MS) {
            rb_log_error("usage_lost", "rows=%zu reason=database_unreachable_at_shutdown", n);
            return;
        }
        sleep_ms(GW_RECORDER_RETRY_MS);
        waited_ms += GW_RECORDER_RETRY_MS;
    }
}

static void *recorder_main(void *arg)
{
    gw_recorder_t *r = arg;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        size_t n;
        while (r->count == 0 && !r->stopping)
            pthread_cond_wait(&r->cond, &r->mu);
        if (r->count == 0 && r->stopping)
            break;
        if (r->count < (size_t)r->conf.batch_max && !r->stopping) {
            struct timespec ts;
            deadline_in(&ts, r->conf.flush_ms); /* let the batch fill for up to flush_ms */
            pthread_cond_timedwait(&r->cond, &r->mu, &ts);
        }
        n = take_batch(r);
        pthread_mutex_unlock(&r->mu);
        if (n > 0)
            write_batch(r, n);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

rb_err_t gw_recorder_start(const gw_recorder_conf_t *conf, gw_recorder_t **out, char *errbuf,
                           size_t cap)
{
    gw_recorder_t *r = rb_calloc(1, sizeof(*r));
    rb_err_t err;

    RB_ASSERT(conf->queue_max > 0 && conf->batch_max > 0 && conf->flush_ms >= 0);
    r->conf = *conf;
    if ((err = gw_db_connect(conf->db_url, conf->connect_timeout_s, &r->db, errbuf, cap)) !=
        RB_OK) {
        free(r);
        return err;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->batch = rb_calloc((size_t)conf->batch_max, sizeof(*r->batch));
    if (conf->metrics != NULL) {
        r->m_depth =
            rb_metrics_get(conf->metrics, RB_METRIC_GAUGE, "rigbox_gateway_writer_queue_depth",
                           "Usage rows waiting for the writer thread", "");
        r->m_dropped =
            rb_metrics_get(conf->metrics, RB_METRIC_COUNTER, "rigbox_gateway_usage_dropped_total",
                           "Usage rows dropped because the writer queue was full", "");
        r->m_written =
            rb_metrics_get(conf->metrics, RB_METRIC_COUNTER, "rigbox_gateway_usage_written_total",
                           "Usage rows written to PostgreSQL", "");
        r->m_failed =
            rb_metrics_get(conf->metrics, RB_METRIC_COUNTER, "rigbox_gateway_usage_refused_total",
                           "Usage rows PostgreSQL refused", "");
    }
    RB_ASSERT(pthread_create(&r->thread, NULL, recorder_main, r) == 0);
    *out = r;
    return RB_OK;
}

void gw_recorder_stop(gw_recorder_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    __atomic_store_n(&r->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    RB_ASSERT(r->count == 0);
    gw_db_close(r->db);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r->batch);
    free(r);
}
