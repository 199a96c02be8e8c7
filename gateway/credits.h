/*
 * gw_credits: admission for managed calls through per-user credit leases (DESIGN.md §3 "Credit
 * leases"). A lease is a chunk of a user's available credit reserved in PostgreSQL for this
 * gateway node (rb_lease_take: one atomic conditional UPDATE, so many gateways share one balance
 * without overspending). Request holds are carved from the user's leases in memory under one
 * mutex: admission costs microseconds and never waits for PostgreSQL while a lease covers it.
 *
 * The lease thread owns one database connection and does everything that talks to PostgreSQL:
 *   - takes a lease when a hold does not fit (the request waits, as a job answered on its worker's
 *     h2o_multithread queue) and ahead of need, when the user's unused reserve drops below a
 *     quarter of a chunk; amount = max(chunk, largest waiting hold), min = the smallest waiting
 *     hold. A take that returns less than asked means the balance is exhausted: waiting holds that
 *     still do not fit are answered GW_CREDITS_INSUFFICIENT (402), and for GW_CREDITS_SHORT_MS
 * holds that cannot fit are refused without asking PostgreSQL again (a grant helps after that
 * delay);
 *   - renews each live lease ttl/3 after it was taken or last renewed (rb_lease_renew, up to
 *     GW_CREDITS_BATCH_MAX per statement); a lease found swept (not renewed within ttl_s, as when
 *     PostgreSQL was out of reach) is marked lost: no hold is carved from it again, and what its
 *     open holds settle is posted from the free balance by rb_usage_post;
 *   - returns a lease (rb_lease_return) once it has no open hold, every cost carved from it is
 *     committed by the ledger writer (gw_recorder_committed), and it was idle for idle_ms; and all
 *     of them at stop;
 *   - registers the node in `nodes` (kind gateway) and heartbeats it every GW_CREDITS_BEAT_MS.
 * While PostgreSQL is down, holds keep being carved from existing leases; a request that needs a
 * new lease waits up to wait_ms and is then answered GW_CREDITS_UNAVAILABLE (503).
 *
 * Lease ids are "<node>.<random>.<n>" (unique per process); the node id is stable across restarts
 * of one gateway (its spool lives under it), leases of a dead process expire after ttl_s and
 * control's sweeper (rb_lease_sweep) releases them.
 *
 * Threads: start/stop and port create/destroy on the main or owning worker thread; admit/cancel on
 * the port's worker thread; settle from any thread; callbacks run on the port's loop.
 */
#ifndef RB_GATEWAY_CREDITS_H
#define RB_GATEWAY_CREDITS_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "gateway/recorder.h"

/* Longest lease id, NUL included. */
#define GW_CREDITS_LEASE_ID_MAX 128
/* Longest node id (nodes.id allows 64 characters), NUL included. */
#define GW_CREDITS_NODE_ID_MAX 65
/* Leases one user keeps on this node: past it, the oldest with no open hold go back once their
 * costs are committed, without waiting idle_ms (one with open holds stays until they settle). */
#define GW_CREDITS_LEASES_MAX 8
/* Users tracked (past it, idle users are forgotten first; new users wait). */
#define GW_CREDITS_USERS_MAX 100000
/* Requests waiting for a lease in the whole process (past it: GW_CREDITS_UNAVAILABLE). */
#define GW_CREDITS_WAITERS_MAX 4096
/* How long a user found short of credit is refused without asking PostgreSQL (ms). */
#define GW_CREDITS_SHORT_MS 1000
/* The lease thread's tick (ms). */
#define GW_CREDITS_TICK_MS 50
/* Node heartbeat interval (ms); the node row lives 3 beats. */
#define GW_CREDITS_BEAT_MS 5000
/* A lease is carved from only until this long before PostgreSQL may sweep it (ttl_s after it was
 * taken or last renewed): cut off from PostgreSQL, the gateway stops spending a reserve that
 * another node may already have been given (ms). */
#define GW_CREDITS_VALID_MARGIN_MS 2000

typedef struct st_gw_credits_t gw_credits_t;
typedef struct st_gw_credits_port_t gw_credits_port_t;
typedef struct st_gw_credits_job_t gw_credits_job_t;
typedef struct st_gw_credits_lease_t gw_credits_lease_t;

/** A carved hold (a value owned by the request until gw_credits_settle). */
typedef struct st_gw_credits_hold_t {
    gw_credits_lease_t *lease; /* NULL = no hold */
    int64_t amount_micro;
} gw_credits_hold_t;

/** Admission answers. */
typedef enum {
    GW_CREDITS_OK = 0,       /* hold carved */
    GW_CREDITS_INSUFFICIENT, /* the user's balance cannot cover the hold: 402 */
    GW_CREDITS_UNAVAILABLE,  /* no lease could be taken in time (PostgreSQL down): 503 */
} gw_credits_result_t;

/** The answer to a queued admission; hold is valid when result is GW_CREDITS_OK. */
typedef void (*gw_credits_cb)(void *ctx, gw_credits_result_t result, const gw_credits_hold_t *hold);

/** Settings (copied; strings copied). */
typedef struct st_gw_credits_conf_t {
    const char *db_url;
    int connect_timeout_s;
    const char *node_id;  /* [A-Za-z0-9][A-Za-z0-9._:-]{0,63} */
    const char *hostname; /* for the nodes row */
    int64_t chunk_micro;  /* lease size */
    int ttl_s;            /* lease ttl */
    int idle_ms;          /* an unused lease is returned after this long */
    int wait_ms;          /* longest wait for a new lease */
    gw_recorder_t *rec;   /* borrowed: committed() gates returns; must outlive gw_credits_stop */
} gw_credits_conf_t;

/** Connects, registers the node and starts the lease thread; returns owned in *out. */
rb_err_t gw_credits_start(const gw_credits_conf_t *conf, gw_credits_t **out, char *errbuf,
                          size_t cap);
/** Waits (bounded) until every settled cost is committed, returns every lease, stops the thread
 *  and frees; queued admissions are answered GW_CREDITS_UNAVAILABLE. NULL is a no-op. */
void gw_credits_stop(gw_credits_t *c);
/** The worker's reply port on its multithread queue; returns owned (gw_credits_port_destroy). */
gw_credits_port_t *gw_credits_port_create(gw_credits_t *c, h2o_multithread_queue_t *queue);
/** Unregisters and frees the port (after the loop stopped). */
void gw_credits_port_destroy(gw_credits_port_t *port);
/** Carves a hold of amount_micro (> 0) for user: 1 = answered now (*result and *hold set); 0 =
 *  queued, cb runs later on the port's loop unless gw_credits_cancel(*job_out) is called first. */
int gw_credits_admit(gw_credits_port_t *port, const char *user, int64_t amount_micro,
                     gw_credits_result_t *result, gw_credits_hold_t *hold, gw_credits_cb cb,
                     void *ctx, gw_credits_job_t **job_out);
/** The requester is gone: cb of job will not run (a hold it got is released). Call at most once,
 *  before cb ran, on the port's worker thread. */
void gw_credits_cancel(gw_credits_job_t *job);
/** Settles hold: cost_micro (>= 0) drawn from its lease, the rest released; seq is the ledger
 *  writer's position of the record that carries the cost (0 = nothing recorded). Exactly once per
 *  hold; hold->lease is NULL afterwards. */
void gw_credits_settle(gw_credits_t *c, gw_credits_hold_t *hold, int64_t cost_micro, uint64_t seq);
/** The lease's id (valid while a hold on it is open). */
const char *gw_credits_lease_id(const gw_credits_lease_t *lease);

#endif
