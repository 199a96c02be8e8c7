/*
 * gw_recorder: the usage_events writer. Loop threads hand over finished request records; one
 * dedicated thread writes them to PostgreSQL in batches (at most writer_batch_max rows, or whatever
 * arrived within writer_flush_ms of the first), one pipeline and one implicit transaction per
 * batch, ON CONFLICT (request_id) DO NOTHING (notes/h2o-libcurl-libpq.md §5).
 *
 * gw_recorder_submit never blocks on the database: it copies the row into a bounded queue
 * (writer_queue_max) under a mutex; past the bound the row is dropped, counted
 * (rigbox_gateway_usage_dropped_total) and warned about. When PostgreSQL is down the batch is
 * retried every second while the queue absorbs new rows. A row the database refuses (a CHECK
 * constraint) is isolated by retrying the batch row by row and is logged and dropped, so it never
 * blocks the rest. gw_recorder_stop flushes the queue (bounded by GW_RECORDER_STOP_MS) before it
 * returns.
 *
 * Threads: submit/depth from any thread; create/stop from the main thread.
 */
#ifndef RB_GATEWAY_RECORDER_H
#define RB_GATEWAY_RECORDER_H

#include <stddef.h>

#include "common/err.h"
#include "common/metrics.h"
#include "gateway/db.h"

/* How long stop may keep retrying a database that does not answer (ms). */
#define GW_RECORDER_STOP_MS 10000
/* Pause between attempts while the database is unreachable (ms). */
#define GW_RECORDER_RETRY_MS 1000

typedef struct st_gw_recorder_t gw_recorder_t;

/** Settings (copied; db_url borrowed until stop). */
typedef struct st_gw_recorder_conf_t {
    const char *db_url;
    int connect_timeout_s;
    int queue_max;
    int batch_max;
    int flush_ms;
    rb_metrics_t *metrics; /* borrowed; may be NULL */
} gw_recorder_conf_t;

/** Connects and starts the writer thread; returns owned in *out (stop with gw_recorder_stop). */
rb_err_t gw_recorder_start(const gw_recorder_conf_t *conf, gw_recorder_t **out, char *errbuf,
                           size_t cap);
/** Queues a copy of row; returns 0, or -1 when the queue is full (row dropped and counted). */
int gw_recorder_submit(gw_recorder_t *r, const gw_db_usage_row_t *row);
/** Rows waiting to be written. */
size_t gw_recorder_depth(gw_recorder_t *r);
/** Writes what is queued, stops the thread and frees r; NULL is a no-op. */
void gw_recorder_stop(gw_recorder_t *r);

#endif
