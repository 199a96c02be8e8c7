/*
 * gw_recorder: the ledger writer (DESIGN.md §3 "Ledger writer"). Every finished request, served or
 * refused, becomes one usage record; the record goes first to a local append-only spool file and
 * then, in batches, into PostgreSQL: one COPY of the batch's lines into the session's staging table
 * and one rb_usage_apply_staged() call, in one transaction (usage_events rows ON CONFLICT
 * (request_id) DO NOTHING, usage transfers, account and lease counters; idempotent by request_id,
 * schema/0002_credits.sql, 0003_ledger_fast.sql).
 *
 * Spool (directory conf->spool_dir, created if missing, locked with flock so one process owns it):
 *   usage.spool   one line of COPY text per record, exactly a row of pg_temp.rb_usage_stage (the
 *                 usage_events columns plus lease_id), so a batch is sent as it lies in the file;
 *                 appended with write(2) under a mutex by gw_recorder_submit, so a record
 *                 survives the process being killed the moment submit returns (fsync'd in
 *                 groups by the writer thread before each batch is posted, for a machine crash);
 *   checkpoint    the spool offset up to which every record is committed in PostgreSQL, written
 *                 after each commit. When the whole spool is committed and larger than
 *                 GW_RECORDER_ROTATE_BYTES, it is truncated and the checkpoint reset to 0;
 *   inflight      the calls under way (gateway/inflight.h): the ones a killed process left become
 *                 records (error_code gateway_restarted, usage estimated) appended to usage.spool
 *                 at the next start, before the replay;
 *   rejected.spool records PostgreSQL refused (a CHECK constraint): a refused batch is retried
 *                 record by record and the bad record is moved here and logged, never retried.
 * At start the writer thread posts whatever lies past the checkpoint (a crash or an outage left it
 * there): a record committed before a crash but after its checkpoint is posted again, which the
 * database ignores (idempotent), so nothing is lost and nothing is billed twice.
 *
 * While PostgreSQL is down the batch is retried every GW_RECORDER_RETRY_MS and the spool keeps
 * absorbing records: from GW_RECORDER_SHED_PCT percent of conf->queue_max uncommitted records on,
 * the record of a call refused before it reached the provider is dropped (counted in
 * rigbox_gateway_usage_dropped_total, and logged at most once every GW_RECORDER_DROP_LOG_MS), so
 * refusals alone (a user without credit calling in a loop) never reach the refusal of every call
 * below; the record of a call that reached the provider is always kept (the disk bounds it, and
 * admission stops long before). gw_recorder_stop keeps trying for
 * GW_RECORDER_STOP_MS; what it could not post stays in the spool for the next start.
 * Backpressure: from GW_RECORDER_ADMIT_PCT percent of queue_max on, gw_recorder_backlogged says so
 * and the proxy refuses new calls (503, Retry-After) instead of serving calls it could not record;
 * the rest of the queue holds the calls already under way. Those refusals are the one kind of
 * call without a usage record (recording them would feed the backlog they answer; they are counted
 * in the requests metric). A ledger slower than the traffic (PostgreSQL down, or just outpaced)
 * then costs refusals, never served calls without a record.
 * A spool write that fails (the disk is full) drops that record (logged and counted; the call's
 * inflight slot stays held, so the next start records it as interrupted) and refuses new calls the
 * same way for GW_RECORDER_RETRY_MS after each failure; the spool is then emptied as soon as all
 * of it is committed, whatever its size (else only past GW_RECORDER_ROTATE_BYTES).
 *
 * Progress is exposed as a sequence: submit returns the record's end position, committed() the
 * position up to which everything is in PostgreSQL (the credit leases use it: a lease is returned
 * only after every cost carved from it has been posted).
 *
 * Threads: submit/committed/backlogged from any thread; start/stop from the main thread.
 */
#ifndef RB_GATEWAY_RECORDER_H
#define RB_GATEWAY_RECORDER_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/metrics.h"
#include "gateway/db.h"
#include "gateway/inflight.h"

/* How long stop may keep retrying a database that does not answer (ms). */
#define GW_RECORDER_STOP_MS 5000
/* Pause between attempts while the database is unreachable (ms). */
#define GW_RECORDER_RETRY_MS 500
/* The share of queue_max from which new calls are refused (the rest is headroom). */
#define GW_RECORDER_ADMIT_PCT 75
/* The share of queue_max from which the records of refused calls are dropped (below ADMIT_PCT). */
#define GW_RECORDER_SHED_PCT 50
/* At most one usage_dropped log line this often (ms); it counts the drops it stands for. */
#define GW_RECORDER_DROP_LOG_MS 1000
/* Longest spool line (one JSON record, newline included). */
#define GW_RECORDER_LINE_MAX 8192
/* A fully committed spool larger than this is truncated. */
#define GW_RECORDER_ROTATE_BYTES (64u << 20)
/* Longest spool directory path. */
#define GW_RECORDER_PATH_MAX 1024

typedef struct st_gw_recorder_t gw_recorder_t;

/** Settings (copied; strings borrowed until stop). */
typedef struct st_gw_recorder_conf_t {
    const char *db_url;
    int connect_timeout_s;
    int queue_max; /* uncommitted records kept in the spool */
    int batch_max; /* records per batch (one COPY, one transaction) */
    int flush_ms;  /* how long a batch may wait to fill */
    const char *spool_dir;
    rb_metrics_t *metrics; /* borrowed; may be NULL */
} gw_recorder_conf_t;

/** Opens and locks the spool, connects and starts the writer thread (which first posts what the
 *  spool holds past its checkpoint); returns owned in *out (stop with gw_recorder_stop). */
rb_err_t gw_recorder_start(const gw_recorder_conf_t *conf, gw_recorder_t **out, char *errbuf,
                           size_t cap);
/** Appends row to the spool; returns 0 and the record's end position in *seq_out (may be NULL), or
 *  -1 when the record was dropped (counted and logged): unwritable, or past queue_max for a call
 *  that did not reach the provider (called = 0). */
int gw_recorder_submit(gw_recorder_t *r, const gw_db_usage_row_t *row, int called,
                       uint64_t *seq_out);
/** The spool directory's inflight file (gateway/inflight.h), recovered: a call takes a slot before
 *  it is forwarded and frees it once its record is submitted. */
gw_inflight_t *gw_recorder_inflight(gw_recorder_t *r);
/** The position up to which every submitted record is committed in PostgreSQL. */
uint64_t gw_recorder_committed(gw_recorder_t *r);
/** Records the calls still under way once the loop threads stopped (their slots in the inflight
 *  journal: error_code gateway_stopped, usage estimated), so a stop leaves none for the next start
 *  to find; the writer posts them before gw_recorder_stop returns. */
void gw_recorder_record_unfinished(gw_recorder_t *r);
/** 1 when GW_RECORDER_ADMIT_PCT percent of queue_max or more records wait: refuse new calls. Lock
 *  free. */
int gw_recorder_backlogged(gw_recorder_t *r);
/** Appends row as one line of COPY text (newline included) to out: a row of rb_usage_stage. */
void gw_recorder_row_copy(const gw_db_usage_row_t *row, rb_buf_t *out);
/** Posts what it can (bounded by GW_RECORDER_STOP_MS), stops the thread and frees r; NULL is a
 *  no-op. */
void gw_recorder_stop(gw_recorder_t *r);

#endif
