#include "gateway/recorder.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pg.h"
#include "gateway/inflight.h"

/* Room for a database error message. */
#define GW_RECORDER_ERR_MAX 512
/* Width of the checkpoint file's number. */
#define GW_RECORDER_CKPT_LEN 20

struct st_gw_recorder_t {
    gw_recorder_conf_t conf;
    gw_db_t *db;
    pthread_t thread;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cond;
    int fd, ckpt_fd, dir_fd;
    uint64_t size;     /* spool bytes */
    uint64_t read_off; /* committed up to here (the checkpoint) */
    uint64_t base;     /* bytes removed by rotations: seq = base + offset */
    uint64_t committed_seq;
    size_t pending;           /* records past the checkpoint (written atomically, under mu) */
    size_t admit_max;         /* pending from which gw_recorder_backlogged says 1 */
    size_t shed_max;          /* pending from which a refused call's record is dropped */
    uint64_t drop_logged_ms;  /* when a dropped record was last logged (mutex) */
    uint64_t drops_unlogged;  /* records dropped since, not logged one by one (mutex) */
    uint64_t write_failed_ms; /* CLOCK_MONOTONIC ms of the last failed spool write; 0: none since
                                 the spool was last emptied (atomic) */
    int stopping;
    rb_buf_t chunk; /* the writer thread's */
    char rejected_path[GW_RECORDER_PATH_MAX + 32];
    rb_metric_t *m_depth, *m_dropped, *m_written, *m_failed;
    gw_inflight_t *inflight; /* the calls under way (<spool_dir>/inflight) */
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

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Appends a string literal (only a literal: "" lit "" refuses anything else at compile time). */
#define PUT_LIT(out, lit) rb_buf_append((out), "" lit "", sizeof(lit) - 1)

/* A COPY text field: \N for NULL and "", else the escaped text; then the separator sep. */
static void put_str(rb_buf_t *out, const char *v, char sep)
{
    if (v == NULL || v[0] == '\0')
        PUT_LIT(out, "\\N");
    else
        rb_pg_copy_text(out, v, strlen(v));
    rb_buf_append(out, &sep, 1);
}

/* A decimal integer, then the separator sep. */
static void put_int(rb_buf_t *out, int64_t v, char sep)
{
    char num[RB_INT64_STR_MAX + 1];
    size_t n = rb_fmt_int64(num, v);

    num[n] = sep;
    rb_buf_append(out, num, n + 1);
}

/* n decimal digits of v at p (zero-padded). */
static void put_digits(char *p, int v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (ISO 8601, UTC) into ts; the per-record hot path, so no strftime. */
static void format_ts(const struct tm *tm, int ms, char *ts, size_t cap)
{
    int year = tm->tm_year + 1900;

    RB_ASSERT(cap >= 25);
    ms = ms < 0 || ms > 999 ? 0 : ms; /* a pre-1970 clock: whole seconds */
    if (year < 0 || year > 9999)
        year = 0; /* cannot come from a sane clock; keeps the layout fixed */
    memcpy(ts, "0000-00-00T00:00:00.000Z", 25);
    put_digits(ts, year, 4);
    put_digits(ts + 5, tm->tm_mon + 1, 2);
    put_digits(ts + 8, tm->tm_mday, 2);
    put_digits(ts + 11, tm->tm_hour, 2);
    put_digits(ts + 14, tm->tm_min, 2);
    put_digits(ts + 17, tm->tm_sec, 2);
    put_digits(ts + 20, ms, 3);
}

/* A positive integer, or \N when the value is absent (v <= absent). */
static void put_opt_int(rb_buf_t *out, int64_t v, int64_t absent, char sep)
{
    if (v > absent)
        put_int(out, v, sep);
    else
        put_str(out, NULL, sep);
}

/* One record as one line of COPY text: the columns of pg_temp.rb_usage_stage
 * (schema/0003_ledger_fast.sql), in order. The per-request hot path: no printf, no generic escaping
 * of constant text. */
void gw_recorder_row_copy(const gw_db_usage_row_t *row, rb_buf_t *out)
{
    char ts[40];
    time_t secs = (time_t)(row->created_at_ms / 1000);
    struct tm tm;

    RB_ASSERT(row->request_id[0] != '\0' && row->user_id[0] != '\0');
    gmtime_r(&secs, &tm);
    format_ts(&tm, (int)(row->created_at_ms % 1000), ts, sizeof(ts));
    put_str(out, row->request_id, '\t');
    put_str(out, row->user_id, '\t');
    put_str(out, row->workspace_id, '\t');
    put_str(out, row->subject, '\t');
    put_str(out, row->route, '\t');
    put_str(out, row->provider, '\t');
    put_str(out, row->model, '\t');
    put_str(out, row->upstream_model, '\t');
    put_str(out, row->byok ? "byok" : "managed", '\t');
    put_str(out, row->status, '\t');
    put_opt_int(out, row->http_status, 0, '\t');
    put_int(out, row->input_uncached, '\t');
    put_int(out, row->cache_read, '\t');
    put_int(out, row->cache_write_5m, '\t');
    put_int(out, row->cache_write_1h, '\t');
    put_int(out, row->output, '\t');
    put_int(out, row->reasoning, '\t');
    put_int(out, row->requests, '\t');
    put_int(out, row->cost_micro, '\t');
    put_str(out, row->billed ? "t" : "f", '\t');
    put_str(out, row->usage_source, '\t');
    put_opt_int(out, row->ttfb_ms, -1, '\t');
    put_int(out, row->duration_ms, '\t');
    put_str(out, row->error_code, '\t');
    put_str(out, ts, '\t');
    put_str(out, row->lease_id, '\n');
}

static void metrics_depth(gw_recorder_t *r)
{
    if (r->m_depth != NULL)
        rb_metric_set(r->m_depth, (int64_t)r->pending);
}

/* Writes the checkpoint (mutex held). */
static void checkpoint_write(gw_recorder_t *r)
{
    char num[GW_RECORDER_CKPT_LEN + 2];

    snprintf(num, sizeof(num), "%0*" PRIu64 "\n", GW_RECORDER_CKPT_LEN, r->read_off);
    if (pwrite(r->ckpt_fd, num, GW_RECORDER_CKPT_LEN + 1, 0) != GW_RECORDER_CKPT_LEN + 1)
        rb_log_error("spool_checkpoint_failed", "errno=%d", errno);
}

/* Empties the spool, every record of which is committed (mutex held): the next record starts it
 * again at offset 0. 0, or -1 (nothing changed). */
static int spool_rotate(gw_recorder_t *r)
{
    RB_ASSERT(r->read_off == r->size);
    if (ftruncate(r->fd, 0) != 0)
        return -1;
    r->base += r->size;
    r->size = 0;
    r->read_off = 0;
    checkpoint_write(r);
    /* a machine crash must not pair the emptied spool with the old, larger checkpoint: once the
     * spool grew past it again, the replay would skip records */
    if (fdatasync(r->ckpt_fd) != 0)
        rb_log_error("spool_checkpoint_failed", "errno=%d", errno);
    __atomic_store_n(&r->write_failed_ms, 0, __ATOMIC_RELAXED);
    return 0;
}

/* Appends a whole line to the spool (mutex held); 0, or -1 with none of it left in the file. */
static int spool_append(gw_recorder_t *r, const rb_buf_t *line)
{
    ssize_t n = write(r->fd, line->base, line->len);

    if (n == (ssize_t)line->len)
        return 0;
    if (n > 0 && ftruncate(r->fd, (off_t)r->size) != 0) /* never leave half a line */
        rb_log_error("spool_truncate_failed", "errno=%d", errno);
    return -1;
}

int gw_recorder_submit(gw_recorder_t *r, const gw_db_usage_row_t *row, int called,
                       uint64_t *seq_out)
{
    const char *why = NULL;
    uint64_t now, unlogged = 0;
    int log_drop = 0;
    rb_buf_t line;

    RB_ASSERT(row->user_id[0] != '\0' && row->request_id[0] != '\0');
    /* formatted before taking the mutex: the loop threads only serialize on the write itself */
    rb_buf_init(&line, GW_RECORDER_LINE_MAX);
    gw_recorder_row_copy(row, &line);
    pthread_mutex_lock(&r->mu);
    if (line.overflow)
        why = "record_too_long";
    else if (!called && r->pending >= r->shed_max)
        why = "backlog"; /* a refusal: shed first, so a flood of them cannot refuse everyone */
    else if (spool_append(r, &line) != 0 && (r->size == 0 || r->read_off != r->size ||
                                             spool_rotate(r) != 0 || spool_append(r, &line) != 0)) {
        /* the disk is full (or failing). A spool whose records are all committed was emptied and
         * the line tried again; else new calls are refused for GW_RECORDER_RETRY_MS (see
         * gw_recorder_backlogged), and the spool is emptied at the next commit that reaches its
         * end, whatever its size */
        why = "spool_write_failed";
        __atomic_store_n(&r->write_failed_ms, mono_ms(), __ATOMIC_RELAXED);
    }
    if (why == NULL) {
        r->size += line.len;
        __atomic_add_fetch(&r->pending, 1, __ATOMIC_RELAXED);
        if (seq_out != NULL)
            *seq_out = r->base + r->size;
        /* wake on the first record (or nothing is written until a batch fills) and a full batch */
        if (r->pending == 1 || r->pending == (size_t)r->conf.batch_max)
            pthread_cond_signal(&r->cond);
        metrics_depth(r);
    } else if ((now = mono_ms()) - r->drop_logged_ms >= GW_RECORDER_DROP_LOG_MS) {
        log_drop = 1; /* one line a second at most, counting the ones it stands for */
        unlogged = r->drops_unlogged;
        r->drops_unlogged = 0;
        r->drop_logged_ms = now;
    } else {
        r->drops_unlogged++;
    }
    pthread_mutex_unlock(&r->mu);
    rb_buf_free(&line);
    if (why == NULL)
        return 0;
    if (r->m_dropped != NULL)
        rb_metric_add(r->m_dropped, 1);
    if (log_drop)
        rb_log_error("usage_dropped",
                     "request_id=%s reason=%s queue_max=%d dropped_since_last_line=%" PRIu64,
                     row->request_id, why, r->conf.queue_max, unlogged);
    return -1;
}

uint64_t gw_recorder_committed(gw_recorder_t *r)
{
    return __atomic_load_n(&r->committed_seq, __ATOMIC_ACQUIRE);
}

int gw_recorder_backlogged(gw_recorder_t *r)
{
    uint64_t failed = __atomic_load_n(&r->write_failed_ms, __ATOMIC_RELAXED);

    if (failed != 0 && mono_ms() - failed < GW_RECORDER_RETRY_MS)
        return 1;
    return __atomic_load_n(&r->pending, __ATOMIC_RELAXED) >= r->admit_max;
}

/* The batch [read_off, end) of n records is in PostgreSQL: move the checkpoint (mutex held). */
static void batch_committed(gw_recorder_t *r, uint64_t end, size_t n)
{
    RB_ASSERT(end > r->read_off && end <= r->size && n <= r->pending);
    r->read_off = end;
    __atomic_sub_fetch(&r->pending, n, __ATOMIC_RELAXED);
    if (r->read_off != r->size ||
        (r->size < GW_RECORDER_ROTATE_BYTES &&
         __atomic_load_n(&r->write_failed_ms, __ATOMIC_RELAXED) == 0) ||
        spool_rotate(r) != 0)
        checkpoint_write(r);
    __atomic_store_n(&r->committed_seq, r->base + r->read_off, __ATOMIC_RELEASE);
    metrics_depth(r);
}

/* Reads records from off into r->chunk (at most batch_max, whole lines only); returns how many,
 * with the end offset in *end. */
static size_t batch_read(gw_recorder_t *r, uint64_t off, uint64_t size, uint64_t *end)
{
    size_t want = (size_t)r->conf.batch_max * GW_RECORDER_LINE_MAX, n = 0, pos = 0;
    ssize_t got;

    if (want > size - off)
        want = (size_t)(size - off);
    r->chunk.len = 0;
    while (r->chunk.len < want) {
        char tmp[65536];
        size_t step = want - r->chunk.len < sizeof(tmp) ? want - r->chunk.len : sizeof(tmp);
        if ((got = pread(r->fd, tmp, step, (off_t)(off + r->chunk.len))) <= 0)
            break;
        rb_buf_append(&r->chunk, tmp, (size_t)got);
    }
    while (n < (size_t)r->conf.batch_max && pos < r->chunk.len) {
        const char *nl = memchr(r->chunk.base + pos, '\n', r->chunk.len - pos);
        if (nl == NULL)
            break;
        pos = (size_t)(nl - r->chunk.base) + 1;
        n++;
    }
    *end = off + pos;
    return n;
}

/* After a failed post: logs, and waits GW_RECORDER_RETRY_MS; -1 when stopping gave up (after
 * GW_RECORDER_STOP_MS in all, counted in *waited_ms): the records stay in the spool. */
static int retry_wait(gw_recorder_t *r, size_t n, const char *err, int *waited_ms)
{
    rb_log_warn("usage_write_retry", "records=%zu error=\"%s\"", n, err);
    if (__atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE) && *waited_ms >= GW_RECORDER_STOP_MS) {
        rb_log_error("usage_deferred",
                     "records=%zu reason=database_unreachable_at_shutdown "
                     "(kept in the spool, posted at the next start)",
                     n);
        return -1;
    }
    sleep_ms(GW_RECORDER_RETRY_MS);
    *waited_ms += GW_RECORDER_RETRY_MS;
    return 0;
}

/* A batch with a record PostgreSQL refused (RB_ERR_INVAL): posts record by record and quarantines
 * the refused ones; a record that fails otherwise is retried. 0, or -1 when stopping gave up (the
 * batch stays in the spool; what was posted is skipped at replay: idempotent by request id). */
static int post_one_by_one(gw_recorder_t *r, size_t len)
{
    char err[GW_RECORDER_ERR_MAX] = "database unreachable";
    size_t pos = 0;
    int waited_ms = 0;

    while (pos < len) {
        const char *line = r->chunk.base + pos, *nl = memchr(line, '\n', len - pos);
        size_t ll = (size_t)(nl - line) + 1;
        rb_err_t e = gw_db_ensure(r->db) ? gw_db_usage_post(r->db, line, ll, 1, err, sizeof(err))
                                         : RB_ERR_DB;
        if (e == RB_OK) {
            if (r->m_written != NULL)
                rb_metric_add(r->m_written, 1);
        } else if (e == RB_ERR_INVAL) {
            const char *tab = memchr(line, '\t', ll); /* the request id is the first field */
            int fd = open(r->rejected_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
            if (fd == -1 || write(fd, line, ll) != (ssize_t)ll)
                rb_log_error("usage_quarantine_failed", "errno=%d", errno);
            if (fd != -1)
                close(fd);
            if (r->m_failed != NULL)
                rb_metric_add(r->m_failed, 1);
            rb_log_error("usage_row_refused", "request_id=%.*s error=\"%s\" (record kept in %s)",
                         (int)(tab != NULL ? tab - line : 0), line, err, r->rejected_path);
        } else {
            if (retry_wait(r, 1, err, &waited_ms) != 0)
                return -1;
            continue;
        }
        pos += ll;
    }
    return 0;
}

/* Posts the batch in r->chunk[0, len), retrying while PostgreSQL cannot take it (unreachable,
 * read-only, full, ...); returns 0 when it is in PostgreSQL (or its refused records quarantined),
 * -1 when stopping gave up (it stays in the spool). */
static int post_batch(gw_recorder_t *r, size_t len, size_t n)
{
    char err[GW_RECORDER_ERR_MAX] = "database unreachable";
    int waited_ms = 0;

    for (;;) {
        rb_err_t e = gw_db_ensure(r->db)
                         ? gw_db_usage_post(r->db, r->chunk.base, len, n, err, sizeof(err))
                         : RB_ERR_DB;
        if (e == RB_OK) {
            if (r->m_written != NULL)
                rb_metric_add(r->m_written, (int64_t)n);
            return 0;
        }
        if (e == RB_ERR_INVAL) /* the data, not the database */
            return post_one_by_one(r, len);
        if (retry_wait(r, n, err, &waited_ms) != 0)
            return -1;
    }
}

static void *recorder_main(void *arg)
{
    gw_recorder_t *r = arg;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        uint64_t off, size, end;
        size_t n;
        while (r->pending == 0 && !r->stopping)
            pthread_cond_wait(&r->cond, &r->mu);
        if (r->pending == 0 && r->stopping)
            break;
        if (r->pending < (size_t)r->conf.batch_max && !r->stopping) {
            struct timespec ts;
            deadline_in(&ts, r->conf.flush_ms); /* let the batch fill for up to flush_ms */
            pthread_cond_timedwait(&r->cond, &r->mu, &ts);
        }
        off = r->read_off;
        size = r->size;
        pthread_mutex_unlock(&r->mu);
        n = batch_read(r, off, size, &end);
        RB_ASSERT(n > 0 && end > off);
        if (fdatasync(r->fd) != 0) /* group fsync: the records are durable before they count */
            rb_log_error("spool_fsync_failed", "errno=%d", errno);
        if (post_batch(r, (size_t)(end - off), n) != 0) {
            pthread_mutex_lock(&r->mu);
            break;
        }
        pthread_mutex_lock(&r->mu);
        batch_committed(r, end, n);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Reads the checkpoint; a missing or unreadable one means 0 (replaying is harmless). */
static uint64_t checkpoint_read(int fd, uint64_t size)
{
    char num[GW_RECORDER_CKPT_LEN + 2] = "";
    uint64_t v;

    if (pread(fd, num, GW_RECORDER_CKPT_LEN + 1, 0) <= 0)
        return 0;
    v = strtoull(num, NULL, 10);
    return v <= size ? v : 0; /* past the end: a rotation was cut short, the spool is new */
}

/* Counts the records in [off, size) and drops a torn last line. */
static void spool_scan(gw_recorder_t *r)
{
    char tmp[65536];
    uint64_t pos = r->read_off, last_nl = r->read_off;
    ssize_t got;

    while ((got = pread(r->fd, tmp, sizeof(tmp), (off_t)pos)) > 0) {
        for (ssize_t i = 0; i < got; i++) {
            if (tmp[i] == '\n') {
                __atomic_add_fetch(&r->pending, 1, __ATOMIC_RELAXED);
                last_nl = pos + (uint64_t)i + 1;
            }
        }
        pos += (uint64_t)got;
    }
    if (last_nl != r->size) {
        rb_log_warn("spool_torn_line", "bytes=%" PRIu64, r->size - last_nl);
        if (ftruncate(r->fd, (off_t)last_nl) == 0)
            r->size = last_nl;
    }
}

/* mkdir -p (0700 for what it creates); 0 or -1 (errno set). */
static int mkdir_p(const char *dir)
{
    char path[GW_RECORDER_PATH_MAX];

    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(path, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static rb_err_t spool_open(gw_recorder_t *r, char *errbuf, size_t cap)
{
    const char *dir = r->conf.spool_dir;
    char path[GW_RECORDER_PATH_MAX + 32];
    struct stat st;

    if (strlen(dir) >= GW_RECORDER_PATH_MAX) {
        snprintf(errbuf, cap, "spool directory path too long");
        return RB_ERR_INVAL;
    }
    if (mkdir_p(dir) != 0 || (r->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
        snprintf(errbuf, cap, "spool directory %s: %s", dir, strerror(errno));
        return RB_ERR_SYS;
    }
    if (flock(r->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(errbuf, cap, "spool directory %s is used by another gateway process", dir);
        return RB_ERR_SYS;
    }
    snprintf(path, sizeof(path), "%s/usage.spool", dir);
    r->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    snprintf(path, sizeof(path), "%s/checkpoint", dir);
    r->ckpt_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    snprintf(r->rejected_path, sizeof(r->rejected_path), "%s/rejected.spool", dir);
    if (r->fd == -1 || r->ckpt_fd == -1 || fstat(r->fd, &st) != 0) {
        snprintf(errbuf, cap, "spool %s: %s", dir, strerror(errno));
        return RB_ERR_SYS;
    }
    r->size = (uint64_t)st.st_size;
    r->read_off = checkpoint_read(r->ckpt_fd, r->size);
    spool_scan(r);
    r->committed_seq = r->read_off;
    if (r->pending > 0)
        rb_log_info("spool_replay", "dir=%s records=%zu bytes=%" PRIu64, dir, r->pending,
                    r->size - r->read_off);
    return RB_OK;
}

static void recorder_free(gw_recorder_t *r)
{
    gw_db_close(r->db);
    gw_inflight_close(r->inflight);
    if (r->fd != -1)
        close(r->fd);
    if (r->ckpt_fd != -1)
        close(r->ckpt_fd);
    if (r->dir_fd != -1)
        close(r->dir_fd); /* releases the flock */
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    rb_buf_free(&r->chunk);
    free(r);
}

static void metrics_init(gw_recorder_t *r, rb_metrics_t *m)
{
    r->m_depth = rb_metrics_get(m, RB_METRIC_GAUGE, "rigbox_gateway_writer_queue_depth",
                                "Usage records in the spool not yet in PostgreSQL", "");
    r->m_dropped = rb_metrics_get(m, RB_METRIC_COUNTER, "rigbox_gateway_usage_dropped_total",
                                  "Usage records dropped (spool full or unwritable)", "");
    r->m_written = rb_metrics_get(m, RB_METRIC_COUNTER, "rigbox_gateway_usage_written_total",
                                  "Usage records posted to PostgreSQL", "");
    r->m_failed = rb_metrics_get(m, RB_METRIC_COUNTER, "rigbox_gateway_usage_refused_total",
                                 "Usage records PostgreSQL refused (quarantined)", "");
}

/* An interrupted call of the previous process, into the spool like any record, whatever the
 * backlog (queue_max holds back new calls; this one was served); -1 keeps its inflight slot. */
static int recover_emit(void *ctx, const gw_db_usage_row_t *row)
{
    return gw_recorder_submit(ctx, row, 1, NULL); /* it reached the provider */
}

/* The calls the previous process left under way become records, ahead of the replay. */
static rb_err_t inflight_recover(gw_recorder_t *r, char *errbuf, size_t cap)
{
    rb_err_t err = gw_inflight_open(r->conf.spool_dir, &r->inflight, errbuf, cap);
    size_t n;

    if (err != RB_OK)
        return err;
    n = gw_inflight_recover(r->inflight, GW_INFLIGHT_ERROR_CODE, recover_emit, r);
    if (n > 0) {
        if (fdatasync(r->fd) != 0)
            rb_log_error("spool_fsync_failed", "errno=%d", errno);
        rb_log_warn("inflight_recovered",
                    "records=%zu (calls under way when the previous process stopped: "
                    "error_code=" GW_INFLIGHT_ERROR_CODE ", usage estimated)",
                    n);
    }
    return RB_OK;
}

void gw_recorder_record_unfinished(gw_recorder_t *r)
{
    size_t n = gw_inflight_recover(r->inflight, GW_INFLIGHT_STOPPED_CODE, recover_emit, r);

    if (n > 0 && fdatasync(r->fd) != 0) /* their slots are free: the records must last */
        rb_log_error("spool_fsync_failed", "errno=%d", errno);
    if (n > 0)
        rb_log_warn("unfinished_recorded",
                    "records=%zu (calls under way when the gateway stopped: "
                    "error_code=" GW_INFLIGHT_STOPPED_CODE ", usage estimated)",
                    n);
}

gw_inflight_t *gw_recorder_inflight(gw_recorder_t *r)
{
    return r->inflight;
}

rb_err_t gw_recorder_start(const gw_recorder_conf_t *conf, gw_recorder_t **out, char *errbuf,
                           size_t cap)
{
    gw_recorder_t *r = rb_calloc(1, sizeof(*r));
    rb_err_t err;

    RB_ASSERT(conf->queue_max > 0 && conf->batch_max > 0 && conf->flush_ms >= 0);
    RB_ASSERT(conf->spool_dir != NULL);
    r->conf = *conf;
    r->admit_max = (size_t)conf->queue_max * GW_RECORDER_ADMIT_PCT / 100;
    r->shed_max = (size_t)conf->queue_max * GW_RECORDER_SHED_PCT / 100;
    if (r->shed_max == 0)
        r->shed_max = 1;
    r->fd = r->ckpt_fd = r->dir_fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    rb_buf_init(&r->chunk, 0);
    if ((err = spool_open(r, errbuf, cap)) != RB_OK ||
        (err = inflight_recover(r, errbuf, cap)) != RB_OK ||
        (err = gw_db_connect(conf->db_url, conf->connect_timeout_s, &r->db, errbuf, cap)) !=
            RB_OK) {
        recorder_free(r);
        return err;
    }
    if (conf->metrics != NULL)
        metrics_init(r, conf->metrics);
    metrics_depth(r);
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
    if (fdatasync(r->fd) != 0)
        rb_log_error("spool_fsync_failed", "errno=%d", errno);
    recorder_free(r);
}
