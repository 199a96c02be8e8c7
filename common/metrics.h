/*
 * A Prometheus metrics registry: counters, gauges and histograms with label sets, rendered in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * The registry is owned by the daemon (create at start, destroy at exit) and shared by all worker
 * threads. Looking up or creating a series takes a mutex (do it once per request, or cache the
 * handle); updating a series is a relaxed atomic add and never blocks. A series handle is valid
 * until rb_metrics_destroy. Series per registry are bounded (RB_METRICS_SERIES_MAX): past it,
 * lookups return a shared overflow series so a flood of label values cannot exhaust memory.
 */
#ifndef RB_COMMON_METRICS_H
#define RB_COMMON_METRICS_H

#include <stdint.h>

#include "common/buf.h"

#define RB_METRICS_SERIES_MAX 4096
#define RB_METRICS_BUCKETS    16

typedef struct st_rb_metrics_t rb_metrics_t;
typedef struct st_rb_metric_t rb_metric_t;

typedef enum { RB_METRIC_COUNTER, RB_METRIC_GAUGE, RB_METRIC_HISTOGRAM } rb_metric_kind_t;

/** A new, empty registry; returns owned (free with rb_metrics_destroy). */
rb_metrics_t *rb_metrics_create(void);
/** Frees the registry and every series handle it gave out. */
void rb_metrics_destroy(rb_metrics_t *m);
/** The series name{labels} (labels like `route="chat",status="200"`, or "" for none), created on
 *  first use with the help text and kind. The name must be a valid Prometheus metric name. */
rb_metric_t *rb_metrics_get(rb_metrics_t *m, rb_metric_kind_t kind, const char *name,
                            const char *help, const char *labels);
/** Adds v to a counter or gauge (counters only grow: v >= 0). */
void rb_metric_add(rb_metric_t *s, int64_t v);
/** Sets a gauge. */
void rb_metric_set(rb_metric_t *s, int64_t v);
/** Records one observation, in microseconds, in a histogram (buckets from 1 ms to 60 s). */
void rb_metric_observe_us(rb_metric_t *s, int64_t us);
/** Current value of a counter or gauge (histograms: the observation count). */
int64_t rb_metric_value(const rb_metric_t *s);
/** Appends the whole registry in Prometheus text format. */
void rb_metrics_render(rb_metrics_t *m, rb_buf_t *out);

#endif
