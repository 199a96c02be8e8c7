#include "common/metrics.h"

#include <pthread.h>
#include <string.h>

#include "common/err.h"

enum { NAME_MAX_LEN = 128, LABELS_MAX_LEN = 512 };

/* Upper bounds of the histogram buckets, in microseconds; the last bucket is +Inf. */
static const int64_t bucket_bounds_us[RB_METRICS_BUCKETS - 1] = {
    1000,   2500,    5000,    10000,   25000,    50000,    100000,  250000,
    500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};

struct st_rb_metric_t {
    rb_metric_kind_t kind;
    char name[NAME_MAX_LEN];
    char labels[LABELS_MAX_LEN];
    const char *help; /* static string from the caller */
    int64_t value;    /* counter/gauge value; histogram: count */
    int64_t sum_us;
    int64_t buckets[RB_METRICS_BUCKETS];
};

struct st_rb_metrics_t {
    pthread_mutex_t lock;
    rb_metric_t *series[RB_METRICS_SERIES_MAX];
    unsigned count;
    rb_metric_t overflow;
};

rb_metrics_t *rb_metrics_create(void)
{
    rb_metrics_t *m = rb_calloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    m->overflow.kind = RB_METRIC_COUNTER;
    snprintf(m->overflow.name, sizeof(m->overflow.name), "rigbox_metrics_overflow_total");
    m->overflow.help = "Updates to series dropped because the registry was full";
    return m;
}

void rb_metrics_destroy(rb_metrics_t *m)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->count; i++)
        free(m->series[i]);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

rb_metric_t *rb_metrics_get(rb_metrics_t *m, rb_metric_kind_t kind, const char *name,
                            const char *help, const char *labels)
{
    rb_metric_t *s = NULL;

    RB_ASSERT(m != NULL && name != NULL && labels != NULL);
    RB_ASSERT(strlen(name) < NAME_MAX_LEN);
    pthread_mutex_lock(&m->lock);
    for (unsigned i = 0; i < m->count; i++) {
        if (strcmp(m->series[i]->name, name) == 0 && strcmp(m->series[i]->labels, labels) == 0) {
            s = m->series[i];
            goto Exit;
        }
    }
    if (m->count == RB_METRICS_SERIES_MAX || strlen(labels) >= LABELS_MAX_LEN) {
        s = &m->overflow;
        goto Exit;
    }
    s = rb_calloc(1, sizeof(*s));
    s->kind = kind;
    s->help = help;
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->labels, sizeof(s->labels), "%s", labels);
    m->series[m->count++] = s;
Exit:
    pthread_mutex_unlock(&m->lock);
    RB_ASSERT(s->kind == kind || s == &m->overflow);
    return s;
}

void rb_metric_add(rb_metric_t *s, int64_t v)
{
    RB_ASSERT(s->kind != RB_METRIC_HISTOGRAM);
    __atomic_fetch_add(&s->value, v, __ATOMIC_RELAXED);
}

void rb_metric_set(rb_metric_t *s, int64_t v)
{
    RB_ASSERT(s->kind == RB_METRIC_GAUGE);
    __atomic_store_n(&s->value, v, __ATOMIC_RELAXED);
}

void rb_metric_observe_us(rb_metric_t *s, int64_t us)
{
    unsigned b = 0;
    RB_ASSERT(s->kind == RB_METRIC_HISTOGRAM);
    while (b < RB_METRICS_BUCKETS - 1 && us > bucket_bounds_us[b])
        b++;
    __atomic_fetch_add(&s->buckets[b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->sum_us, us, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->value, 1, __ATOMIC_RELAXED);
}

int64_t rb_metric_value(const rb_metric_t *s)
{
    return __atomic_load_n(&s->value, __ATOMIC_RELAXED);
}

static const char *kind_name(rb_metric_kind_t k)
{
    return k == RB_METRIC_COUNTER ? "counter" : k == RB_METRIC_GAUGE ? "gauge" : "histogram";
}

/* name{labels,extra} with the comma only when both are present. */
static void put_series(rb_buf_t *out, const char *name, const char *suffix, const char *labels,
                       const char *extra)
{
    int has_l = labels[0] != '\0', has_e = extra[0] != '\0';
    rb_buf_printf(out, "%s%s", name, suffix);
    if (has_l || has_e)
        rb_buf_printf(out, "{%s%s%s}", labels, has_l && has_e ? "," : "", extra);
}

static void render_histogram(rb_buf_t *out, const rb_metric_t *s)
{
    int64_t cumulative = 0;
    char le[48];
    for (unsigned b = 0; b < RB_METRICS_BUCKETS; b++) {
        cumulative += __atomic_load_n(&s->buckets[b], __ATOMIC_RELAXED);
        if (b < RB_METRICS_BUCKETS - 1)
            snprintf(le, sizeof(le), "le=\"%g\"", (double)bucket_bounds_us[b] / 1e6);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        put_series(out, s->name, "_bucket", s->labels, le);
        rb_buf_printf(out, " %lld\n", (long long)cumulative);
    }
    put_series(out, s->name, "_sum", s->labels, "");
    rb_buf_printf(out, " %.6f\n", (double)__atomic_load_n(&s->sum_us, __ATOMIC_RELAXED) / 1e6);
    put_series(out, s->name, "_count", s->labels, "");
    rb_buf_printf(out, " %lld\n", (long long)rb_metric_value(s));
}

static void render_one(rb_buf_t *out, const rb_metric_t *s, int with_header)
{
    if (with_header)
        rb_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", s->name, s->help != NULL ? s->help : "",
                      s->name, kind_name(s->kind));
    if (s->kind == RB_METRIC_HISTOGRAM) {
        render_histogram(out, s);
    } else {
        put_series(out, s->name, "", s->labels, "");
        rb_buf_printf(out, " %lld\n", (long long)rb_metric_value(s));
    }
}

void rb_metrics_render(rb_metrics_t *m, rb_buf_t *out)
{
    pthread_mutex_lock(&m->lock);
    /* Group the series of one family under one HELP/TYPE header, in first-seen order. */
    for (unsigned i = 0; i < m->count; i++) {
        int seen = 0;
        for (unsigned j = 0; j < i && !seen; j++)
            seen = strcmp(m->series[j]->name, m->series[i]->name) == 0;
        if (seen)
            continue;
        for (unsigned j = i; j < m->count; j++) {
            if (strcmp(m->series[j]->name, m->series[i]->name) == 0)
                render_one(out, m->series[j], j == i);
        }
    }
    render_one(out, &m->overflow, 1);
    pthread_mutex_unlock(&m->lock);
}
