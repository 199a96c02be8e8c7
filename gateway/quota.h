/*
 * gw_quota: the per-user and per-subject limits the gateway checks before any spend (DESIGN.md §3
 * Limits). One process-wide table of users and one of subjects (user + X-Rigbox-Subject), each
 * bounded (GW_QUOTA_USERS_MAX, GW_QUOTA_SUBJECTS_MAX) under one mutex; entries idle for
 * GW_QUOTA_IDLE_MS with nothing in flight are evicted (and the table is swept early when full),
 * a subject not before its rate window ended (that count is kept nowhere else).
 *
 * A user's effective limits are its plan from the configuration (cfg_plan_find(users.plan), else
 * the default plan) overridden by the non-NULL columns of its user_limits row (the rule of
 * control's ctl_limits_effective). Checked in this order, first refusal wins:
 *   allowed_models (empty = all)             → 403 model_not_allowed
 *   credits_per_day / credits_per_month      → 402 daily_limit_reached / monthly_limit_reached
 *     billed cost since the start of the UTC day / month, seeded from usage_events and advanced at
 *     gw_quota_finish; 0 = no cap; a request is refused once the spend reached the cap (the one
 *     that crosses it is served: its cost is only known afterwards)
 *   X-Rigbox-Subject-Budget                  → 402 subject_over_budget
 *     billed cost of user+subject in the current period; periods are aligned to the Unix epoch
 *     (period=5h: 00:00, 05:00, … UTC), seeded from usage_events
 *   max_concurrent (requests in flight, streams included, until gw_quota_finish) → 429
 *   rpm, tpm (requests, tokens per window)   → 429 rpm_limit_reached / tpm_limit_reached
 *     fixed windows of window_ms (60 s; RIGBOX_GATEWAY_RATE_WINDOW_S shortens it for tests)
 *     aligned to the epoch. tpm counts the input estimate at admission, corrected to the actual
 *     tokens (input, cache and output) at gw_quota_finish.
 *   X-Rigbox-Subject-Rate                    → 429 subject_rate_limited
 * Every 429 carries Retry-After: the seconds until the window frees.
 * Rate, token and concurrency windows are kept by EACH GATEWAY PROCESS on its own: with N
 * gateways behind a balancer a user may get up to N × rpm. Day, month and subject spends start
 * from PostgreSQL (billed usage_events rows) and are re-read every GW_QUOTA_TTL_MS (the larger
 * of the stored and the in-memory value of the same day, month or period wins), so they converge
 * across processes.
 *
 * The quota thread owns one database connection: it loads a user's limits and spend (and a
 * subject's spend) when a request needs them — that request waits, as a job answered on its
 * worker's h2o_multithread queue; a loop thread never waits for PostgreSQL. It LISTENs on
 * GW_DB_LIMITS_CHANNEL: a notification for a user (a user_limits row or users.plan changed) marks
 * its entry stale, and the next request reloads it, so an edit applies within a second. If the
 * connection breaks every entry is marked stale. While PostgreSQL is unreachable the last loaded
 * limits keep applying; a user never loaded is answered GW_QUOTA_UNAVAILABLE (503).
 *
 * Threads: start/stop and port create/destroy on the main or owning worker thread; admit/cancel on
 * the port's worker thread; finish from any thread; callbacks run on the port's loop.
 */
#ifndef RB_GATEWAY_QUOTA_H
#define RB_GATEWAY_QUOTA_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "gateway/limits.h"

/* Users tracked (past it, idle users are evicted first; then: GW_QUOTA_UNAVAILABLE). */
#define GW_QUOTA_USERS_MAX 100000
/* Subjects tracked (user + subject). */
#define GW_QUOTA_SUBJECTS_MAX 100000
/* Lookups queued for the quota thread (past it: GW_QUOTA_UNAVAILABLE). */
#define GW_QUOTA_QUEUE_MAX 4096
/* Limits and spends are re-read (in the background) when older than this (ms). */
#define GW_QUOTA_TTL_MS 60000
/* Entries idle this long with nothing in flight are evicted (ms). */
#define GW_QUOTA_IDLE_MS 600000
/* The quota thread's poll interval while idle (ms): the NOTIFY latency. */
#define GW_QUOTA_POLL_MS 100
/* How often idle entries are swept (ms). */
#define GW_QUOTA_SWEEP_MS 5000
/* After a failed query the database is not asked again for this long (ms). */
#define GW_QUOTA_DB_BACKOFF_MS 1000
/* Reloads of one user when notifications keep racing the query. */
#define GW_QUOTA_RELOAD_MAX 3
/* Default rate window (ms). */
#define GW_QUOTA_WINDOW_MS 60000

typedef struct st_gw_quota_t gw_quota_t;
typedef struct st_gw_quota_port_t gw_quota_port_t;
typedef struct st_gw_quota_job_t gw_quota_job_t;
typedef struct st_gw_quota_user_t gw_quota_user_t;
typedef struct st_gw_quota_subject_t gw_quota_subject_t;

/** Verdicts, in check order. */
typedef enum {
    GW_QUOTA_OK = 0,
    GW_QUOTA_MODEL_NOT_ALLOWED, /* 403 model_not_allowed */
    GW_QUOTA_DAILY,             /* 402 daily_limit_reached */
    GW_QUOTA_MONTHLY,           /* 402 monthly_limit_reached */
    GW_QUOTA_SUBJECT_BUDGET,    /* 402 subject_over_budget */
    GW_QUOTA_CONCURRENCY,       /* 429 concurrency_limit_reached */
    GW_QUOTA_RPM,               /* 429 rpm_limit_reached */
    GW_QUOTA_TPM,               /* 429 tpm_limit_reached */
    GW_QUOTA_SUBJECT_RATE,      /* 429 subject_rate_limited */
    GW_QUOTA_UNAVAILABLE,       /* 503 limits_unavailable: limits unknown, database unreachable */
} gw_quota_verdict_t;

/** What a request asks for (borrowed for the call; copied when queued). */
typedef struct st_gw_quota_ask_t {
    const char *user;
    const char *model;                /* the public model name */
    const char *subject;              /* "" or NULL = none */
    int64_t tokens;                   /* input estimate (tokens) */
    const gw_limits_budget_t *budget; /* NULL = no subject budget */
    const gw_limits_rate_t *rate;     /* NULL = no subject rate */
} gw_quota_ask_t;

/** An admitted request's place in the counters (a value owned by the request until
 *  gw_quota_finish; user NULL = nothing to finish). */
typedef struct st_gw_quota_ticket_t {
    gw_quota_user_t *user;
    gw_quota_subject_t *subject;
    int64_t tpm_window_ms; /* the token window the estimate was counted in */
    int64_t tokens;        /* the estimate counted */
} gw_quota_ticket_t;

/** An answer: the verdict, the limit that refused (its unit depends on the verdict), the
 *  Retry-After of a 429, and the ticket of an admitted request. */
typedef struct st_gw_quota_answer_t {
    gw_quota_verdict_t verdict;
    int64_t limit;
    int64_t retry_after_s;
    gw_quota_ticket_t ticket;
} gw_quota_answer_t;

/** The answer to a queued admission (ans borrowed for the call; the ticket is the caller's). */
typedef void (*gw_quota_cb)(void *ctx, const gw_quota_answer_t *ans);

/** Settings (copied; cfg and db_url borrowed until gw_quota_stop). */
typedef struct st_gw_quota_conf_t {
    const cfg_t *cfg;
    const char *db_url;
    int connect_timeout_s;
    int64_t window_ms; /* rpm / tpm window; 0 = GW_QUOTA_WINDOW_MS */
    int64_t ttl_ms;    /* re-read interval; 0 = GW_QUOTA_TTL_MS */
    size_t table_max;  /* users and subjects tracked, each; 0 = GW_QUOTA_USERS_MAX, _SUBJECTS_MAX */
} gw_quota_conf_t;

/** Starts the quota thread (it connects and LISTENs itself, retrying); returns owned. */
gw_quota_t *gw_quota_start(const gw_quota_conf_t *conf);
/** Stops the thread (queued admissions are answered GW_QUOTA_UNAVAILABLE) and frees; every ticket
 *  must be finished before. NULL is a no-op. */
void gw_quota_stop(gw_quota_t *q);
/** The worker's reply port on its multithread queue; returns owned (gw_quota_port_destroy). */
gw_quota_port_t *gw_quota_port_create(gw_quota_t *q, h2o_multithread_queue_t *queue);
/** Unregisters and frees the port (after the loop stopped). */
void gw_quota_port_destroy(gw_quota_port_t *port);
/** Checks and counts a request: 1 = answered now (*ans set); 0 = queued (limits being loaded), cb
 *  runs later on the port's loop unless gw_quota_cancel(*job_out) is called first. */
int gw_quota_admit(gw_quota_port_t *port, const gw_quota_ask_t *ask, gw_quota_answer_t *ans,
                   gw_quota_cb cb, void *ctx, gw_quota_job_t **job_out);
/** The requester is gone: cb of job will not run (a ticket it got is finished). At most once,
 *  before cb ran, on the port's worker thread. */
void gw_quota_cancel(gw_quota_job_t *job);
/** The request is over: leaves the concurrency count, adds billed_cost_micro (>= 0) to the day,
 *  month and subject spends and corrects the token window to tokens (>= 0). Exactly once per
 *  admitted ticket; ticket->user is NULL afterwards (a NULL ticket is a no-op). */
void gw_quota_finish(gw_quota_t *q, gw_quota_ticket_t *ticket, int64_t billed_cost_micro,
                     int64_t tokens);
/** The HTTP status, code and a message (into msg) for a refusal. */
int gw_quota_describe(const gw_quota_answer_t *ans, const char **code, char *msg, size_t cap);

#endif
