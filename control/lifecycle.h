/*
 * ctl_lifecycle: the workspace actions and observation endpoints that involve the VM supervisor:
 * start, stop, restart, cancel, retry, delete (state moves in PostgreSQL first, at once, then the
 * supervisor does the slow part), quick-deploy, resources, env, metrics, metrics series, logs and
 * the logs SSE stream, and capacity.
 */
#ifndef RB_CONTROL_LIFECYCLE_H
#define RB_CONTROL_LIFECYCLE_H

#include "control/api.h"

#define CTL_LOG_LINES_DEFAULT 200
#define CTL_LOG_READ_MAX      (1 << 20) /* bytes of console log read per request */
#define CTL_SERIES_MAX        2048      /* points in one series answer */
#define CTL_STREAM_POLL_MS    500       /* how often /logs/stream looks for new lines */
#define CTL_STREAM_CHUNK_MAX  65536     /* bytes sent per poll */

/** POST /workspaces/{id}/start|stop|restart|cancel|retry. */
void ctl_lifecycle_start(ctl_req_t *r);
void ctl_lifecycle_stop(ctl_req_t *r);
void ctl_lifecycle_restart(ctl_req_t *r);
void ctl_lifecycle_cancel(ctl_req_t *r);
void ctl_lifecycle_retry(ctl_req_t *r);
/** DELETE /workspaces/{id}: → deleting; the supervisor stops the VM, removes its files and the row.
 */
void ctl_lifecycle_delete(ctl_req_t *r);
/** POST /quick-deploy {template_id, name?, ram_mb?, vcpu_count?, disk_size_mb?, env_vars?} →
 *  {workspace, expected_apps}: creates and starts. */
void ctl_lifecycle_quick_deploy(ctl_req_t *r);
/** PUT /workspaces/{id}/resources {ram_mb?, vcpu_count?, disk_size_mb?} (stopped only). */
void ctl_lifecycle_resources(ctl_req_t *r);
/** POST /workspaces/{id}/env {env_vars} (applied at the next boot). */
void ctl_lifecycle_env(ctl_req_t *r);
/** GET /workspaces/{id}/metrics. */
void ctl_lifecycle_metrics(ctl_req_t *r);
/** GET /workspaces/{id}/metrics/series?range=1h|6h|24h|7d. */
void ctl_lifecycle_series(ctl_req_t *r);
/** GET /workspaces/{id}/logs?lines=&cursor=&app= → {lines, next_cursor}: without a cursor the
 *  newest lines (a tail); with one, the lines after it, next_cursor right after the last given
 *  (page forward, or poll for new lines). ?app= keeps one app's lines. */
void ctl_lifecycle_logs(ctl_req_t *r);
/** GET /workspaces/{id}/logs/stream: SSE, one event per new console line; when the workspace is
 *  deleted an `end` event and the end of the stream. */
void ctl_lifecycle_logs_stream(ctl_req_t *r);
/** GET /capacity (public). */
void ctl_lifecycle_capacity(ctl_req_t *r);

#endif
