/*
 * gw_identity: who is calling. A bearer secret (`rbw_…` workspace token or `rb_…` user API key) is
 * hashed with SHA-256 and resolved to its user, workspace and effective AI config (mode, provider,
 * the decrypted BYOK key) through an in-memory cache shared by all workers (one mutex) in front of
 * PostgreSQL.
 *
 * Cache misses never block a loop thread: the lookup is queued to the identity thread, which owns
 * one database connection, runs the query, fills the cache and answers the worker through its
 * h2o_multithread queue (gw_identity_port_t, one per worker). The same thread LISTENs on
 * GW_DB_IDENTITY_CHANNEL ("rigbox_identity", any payload): every notification drops the whole cache
 * (and bumps an epoch so a lookup that raced with it is not cached), so a revoked token stops
 * working within GW_IDENTITY_POLL_MS plus one query. Entries also expire after
 * identity_cache_ttl_ms (unknown secrets after at most GW_IDENTITY_NEGATIVE_TTL_MS). If the LISTEN
 * connection breaks, the cache is dropped on reconnect.
 *
 * BYOK keys are stored AES-256-GCM encrypted (ai_configs.key_ciphertext/nonce/tag, no AAD) under
 * the 32-byte master key (common/crypto.h rb_master_key_load); key_id is informational (the first
 * 16 hex digits of SHA-256(master key)). Decrypted keys live only in the cache and the
 * request's state and are wiped on release; they are never logged.
 *
 * Threads: start/stop and port create/destroy on the main or owning worker thread; resolve/cancel
 * on the port's worker thread; callbacks run on that worker's loop.
 */
#ifndef RB_GATEWAY_IDENTITY_H
#define RB_GATEWAY_IDENTITY_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>

#include "common/crypto.h"
#include "common/err.h"
#include "gateway/db.h"

/* Longest bearer secret accepted. */
#define GW_IDENTITY_SECRET_MAX 256
/* Longest decrypted provider key. */
#define GW_IDENTITY_KEY_MAX 1024
/* Cached identities (past it the cache is emptied and refilled). */
#define GW_IDENTITY_CACHE_MAX 65536
/* Unknown secrets remembered, at most (and at most half the cache): past it they are not cached,
 * so a flood of made-up tokens cannot empty the cache of the known ones. */
#define GW_IDENTITY_NEGATIVE_MAX 4096
/* Queued lookups (past it a request is answered with RB_ERR_LIMIT, i.e. 503). */
#define GW_IDENTITY_QUEUE_MAX 4096
/* How often the identity thread reads notifications while idle (ms). */
#define GW_IDENTITY_POLL_MS 100
/* Longest time an unknown secret is remembered as unknown (ms). */
#define GW_IDENTITY_NEGATIVE_TTL_MS 5000

typedef struct st_gw_identity_t gw_identity_t;
typedef struct st_gw_identity_port_t gw_identity_port_t;
typedef struct st_gw_identity_job_t gw_identity_job_t;

/** A resolved caller (a value; copy freely, wipe with gw_identity_wipe). */
typedef struct st_gw_ident_t {
    char user_id[GW_DB_ID_MAX];
    char workspace_id[GW_DB_ID_MAX]; /* "" for a user API key */
    int byok;
    char provider[GW_DB_PROVIDER_MAX]; /* the AI config's provider, "" = any */
    int key_state;                     /* GW_IDENTITY_KEY_* */
    char key[GW_IDENTITY_KEY_MAX];     /* the BYOK key when key_state == GW_IDENTITY_KEY_OK */
    size_t key_len;
} gw_ident_t;

enum {
    GW_IDENTITY_KEY_NONE = 0, /* no stored key */
    GW_IDENTITY_KEY_OK,       /* key[] holds the decrypted key */
    GW_IDENTITY_KEY_BAD,      /* a key is stored but cannot be decrypted (no/other master key) */
};

/** The answer to an asynchronous lookup: RB_OK (id filled), RB_ERR_AUTH (unknown or revoked
 *  secret) or RB_ERR_DB / RB_ERR_LIMIT (cannot tell now). id is borrowed for the call. */
typedef void (*gw_identity_cb)(void *ctx, rb_err_t err, const gw_ident_t *id);

/** Settings (copied; db_url borrowed until stop). master_key NULL = no BYOK decryption. */
typedef struct st_gw_identity_conf_t {
    const char *db_url;
    int connect_timeout_s;
    int ttl_ms;
    const uint8_t *master_key; /* RB_AES_KEY_LEN bytes, copied */
    size_t cache_max;          /* 0 = GW_IDENTITY_CACHE_MAX (smaller for tests only) */
} gw_identity_conf_t;

/** Connects, LISTENs and starts the identity thread; returns owned in *out. */
rb_err_t gw_identity_start(const gw_identity_conf_t *conf, gw_identity_t **out, char *errbuf,
                           size_t cap);
/** Stops the thread (pending lookups are answered RB_ERR_DB) and frees; NULL is a no-op. */
void gw_identity_stop(gw_identity_t *idy);
/** The worker's reply port on its multithread queue; returns owned (gw_identity_port_destroy). */
gw_identity_port_t *gw_identity_port_create(gw_identity_t *idy, h2o_multithread_queue_t *queue);
/** Unregisters and frees the port (after the loop stopped). */
void gw_identity_port_destroy(gw_identity_port_t *port);
/** Resolves secret: 1 = answered now from the cache (*err_out and *out set); 0 = queued, cb runs
 *  later on the port's loop unless gw_identity_cancel(*job_out) is called first. */
int gw_identity_resolve(gw_identity_port_t *port, const char *secret, size_t len, gw_ident_t *out,
                        rb_err_t *err_out, gw_identity_cb cb, void *ctx,
                        gw_identity_job_t **job_out);
/** The requester is gone: cb of job will not run. Call at most once, before cb ran. */
void gw_identity_cancel(gw_identity_job_t *job);
/** Zeroes an identity (wipes the key). */
void gw_identity_wipe(gw_ident_t *id);

#endif
