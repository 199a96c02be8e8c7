/*
 * ctl_limits: per-user limits (DESIGN.md §4). The effective value of each limit is the user's
 * override in user_limits when set, else the plan's value from the configuration (config.h
 * cfg_plan_t). AI caps keep the plan's convention: 0 = no cap; credits_per_day/month are whole
 * credits. Writes go to user_limits only; its trigger NOTIFYs channel rigbox_limits (payload: the
 * user id) so gateways drop their cached limits at once. Handlers run on an API worker thread.
 */
#ifndef RB_CONTROL_LIMITS_H
#define RB_CONTROL_LIMITS_H

#include <stdint.h>

#include "control/api.h"

#define CTL_MODEL_NAME_MAX 200 /* bytes of one allowed_models entry (usage_events.model) */

/** The effective numeric limits of one user (override, else plan). AI caps: 0 = no cap. */
typedef struct st_ctl_limits_t {
    int64_t max_vms;
    int64_t max_ram_per_vm_mb;
    int64_t max_ram_total_mb;
    int64_t max_vcpu_per_vm;
    int64_t max_running_vcpus;
    int64_t max_disk_total_mb;
    int64_t credits_per_day;   /* whole credits */
    int64_t credits_per_month; /* whole credits */
    int64_t rpm;
    int64_t tpm;
    int64_t max_concurrent;
} ctl_limits_t;

/** Reads user_id's effective limits (for plan checks on workspace create/start). RB_ERR_NOTFOUND
 *  when there is no such user; RB_ERR_DB etc. from ctl_db_query. Blocking, on db's thread. */
rb_err_t ctl_limits_effective(ctl_db_t *db, const cfg_t *cfg, const char *user_id,
                              ctl_limits_t *out);
/* The first key of the plan lock (pg_advisory_xact_lock(class, hashtext(user id))). */
#define CTL_LIMITS_LOCK_CLASS "1919508290"

/** Begins a transaction on db holding user_id's plan lock until ctl_db_end: a plan check and the
 *  write it allows (a new workspace, a start, a resize) then run one user at a time, so
 *  concurrent requests cannot pass a cap together. */
rb_err_t ctl_limits_lock(ctl_db_t *db, const char *user_id);
/** GET /users/{id|me}/limits → {user_id, plan, custom, limits{…}, overrides{…}, usage{…}}. */
void ctl_limits_get(ctl_req_t *r);
/** PUT /users/{id}/limits (admin): omitted = keep, null = clear the override, unknown field = 400;
 *  replies like GET. */
void ctl_limits_put(ctl_req_t *r);

#endif
