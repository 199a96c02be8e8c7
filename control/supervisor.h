/*
 * ctl_supervisor: runs the workspaces' QEMU micro-VMs on this node (DESIGN.md §5), off the API's
 * event loops.
 *
 * The API moves a workspace's state in PostgreSQL first (provisioned → starting, running →
 * stopping, …, see control/states.h) and then submits the action here; job threads do the slow part
 * (prepare the disk, boot, wait for the guest's ready marker, power down, delete files) and record
 * the outcome (running, stopped, failed with a failure object, or the row deleted). A monitor
 * thread samples every VM every CTL_SUP_SAMPLE_MS: a QEMU that died unasked turns its workspace
 * `failed` (retryable), and CPU/RAM/disk samples go into per-workspace rings for /metrics and
 * /metrics/series.
 *
 * At creation the supervisor registers this node in `nodes` and adopts the VMs that still run from
 * a previous control process (by pid file and QMP socket): a restart of rigbox-control never kills
 * a VM. A VM that died while control was down becomes `failed` with a retryable failure.
 *
 * Each boot mints a fresh workspace token (the previous one is revoked) and hands it to the guest
 * through the read-only config channel with the gateway URL; provider keys never enter the VM.
 *
 * Threads: create/destroy from the main thread; submit and the read functions from any thread (they
 * take the supervisor's mutex briefly).
 */
#ifndef RB_CONTROL_SUPERVISOR_H
#define RB_CONTROL_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/metrics.h"
#include "config/config.h"
#include "control/states.h"

#define CTL_SUP_JOB_THREADS 2     /* VMs booting or stopping at the same time */
#define CTL_SUP_QUEUE_MAX   256   /* pending actions */
#define CTL_SUP_VMS_MAX     256   /* VMs tracked on this node */
#define CTL_SUP_SAMPLE_MS   2000  /* monitor period */
#define CTL_SUP_RING_1H     1800  /* 2 s samples: one hour */
#define CTL_SUP_RING_7D     10080 /* 1 min samples: seven days */
#define CTL_SUP_ID_MAX      32

typedef struct st_ctl_supervisor_t ctl_supervisor_t;

/** One host-side sample of a VM. */
typedef struct st_ctl_vm_sample_t {
    int64_t t; /* unix seconds */
    double cpu_percent;
    int64_t ram_used_mb, ram_total_mb, disk_used_mb, disk_total_mb;
} ctl_vm_sample_t;

/** Starts the supervisor: node registration, adoption, job and monitor threads. Returns owned
 *  (free with ctl_supervisor_destroy); errbuf says why on failure. metrics (may be NULL; borrowed
 *  for its life) gets the rigbox_control_vm_* series: boots, boot time, ends, failures, VMs
 *  running, jobs queued. */
rb_err_t ctl_supervisor_create(const cfg_t *cfg, rb_metrics_t *metrics, ctl_supervisor_t **out,
                               char *errbuf, size_t cap);
/** Stops the threads after their current job; running VMs keep running. */
void ctl_supervisor_destroy(ctl_supervisor_t *s);
/** This node's id (as stored in nodes and workspaces.node_id). */
const char *ctl_supervisor_node(const ctl_supervisor_t *s);
/** Queues an action for a workspace whose state the API already moved. RB_ERR_LIMIT when full. */
rb_err_t ctl_supervisor_submit(ctl_supervisor_t *s, const char *ws_id, ctl_ws_event_t action);
/** The latest sample of a workspace's VM; 0, or -1 when none (not running on this node). */
int ctl_supervisor_latest(ctl_supervisor_t *s, const char *ws_id, ctl_vm_sample_t *out);
/** Up to cap samples from the last range_s seconds, oldest first; returns the count. */
size_t ctl_supervisor_series(ctl_supervisor_t *s, const char *ws_id, int64_t range_s,
                             ctl_vm_sample_t *out, size_t cap);
/** The VM directory of a workspace on this node into buf (console.log lives there). */
void ctl_supervisor_vm_dir(const ctl_supervisor_t *s, const char *ws_id, char *buf, size_t cap);

#endif
