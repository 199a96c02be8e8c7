/*
 * gw_db: every PostgreSQL statement of the gateway (the only gateway file that includes libpq).
 *
 * A gw_db_t is one connection, used by ONE thread at a time; all calls block, so they run on the
 * gateway's own threads (the identity thread, the recorder thread) or at start-up, never on an
 * event loop thread. Errors are returned as rb_err_t with libpq's message in the caller's buffer;
 * messages never contain the conninfo or any secret.
 *
 * Credits (schema/0002_credits.sql): leases are taken, renewed and returned through rb_lease_take,
 * rb_lease_renew and rb_lease_return; settled usage is posted per batch with one COPY into the
 * session's staging table and one rb_usage_apply_staged() call (schema/0003_ledger_fast.sql:
 * rb_usage_post's work on typed rows, without its per-event result; idempotent by request_id).
 *
 * Identity (schema/0001_init.sql): a workspace token is looked up in workspace_tokens by
 * SHA-256 (revoked_at IS NULL), a user key in api_keys (revoked_at IS NULL); the AI config is the
 * workspace's ai_configs row (scope 'workspace'), else the user's (scope 'user_default'), else none
 * (managed). Cache invalidation listens on GW_DB_IDENTITY_CHANNEL.
 */
#ifndef RB_GATEWAY_DB_H
#define RB_GATEWAY_DB_H

#include <stddef.h>
#include <stdint.h>

#include "common/crypto.h"
#include "common/err.h"

/* The NOTIFY channel the control plane signals on after any change that affects a gateway's
 * identity cache: token minted/rotated/revoked, API key revoked, ai-config or ai-defaults changed,
 * workspace or user deleted. Payload: free text for logs (e.g. "workspace:ws-abcd1234"); the
 * gateway drops its whole cache on every notification, whatever the payload. */
#define GW_DB_IDENTITY_CHANNEL "rigbox_identity"
/* The NOTIFY channel of limit changes (schema/0002 rb_notify_limits: user_limits rows and
 * users.plan); payload: the user id. */
#define GW_DB_LIMITS_CHANNEL "rigbox_limits"
/* Longest allowed_models override read (newline-joined names), NUL included. */
#define GW_DB_MODELS_MAX 65536
/* Longest id kept (users, workspaces), NUL included. */
#define GW_DB_ID_MAX 64
/* Longest provider name, NUL included. */
#define GW_DB_PROVIDER_MAX 40
/* Longest stored BYOK ciphertext (the schema allows 4096). */
#define GW_DB_KEY_CT_MAX 4096
/* Longest master key id, NUL included. */
#define GW_DB_KEY_ID_MAX 72
/* Longest text field of a usage row (route, model, error code…), NUL included. */
#define GW_DB_TEXT_MAX 256

/* The ledger writer's session drops its cached plans when the records it posted doubled (from
 * this many) and at least this often (ms): see gw_db_usage_post. */
#define GW_DB_REPLAN_ROWS_MIN 1000
#define GW_DB_REPLAN_MS       60000

typedef struct st_gw_db_t gw_db_t;

/** An identity as stored: who, where, and the AI config that applies. */
typedef struct st_gw_db_identity_t {
    char user_id[GW_DB_ID_MAX];
    char workspace_id[GW_DB_ID_MAX];   /* "" for a user API key */
    int byok;                          /* the effective mode is byok */
    char provider[GW_DB_PROVIDER_MAX]; /* the config's provider, "" when none */
    int has_key;                       /* a stored BYOK key follows */
    uint8_t key_ct[GW_DB_KEY_CT_MAX];
    size_t key_ct_len;
    uint8_t key_nonce[RB_AES_NONCE_LEN];
    uint8_t key_tag[RB_AES_TAG_LEN];
    char key_id[GW_DB_KEY_ID_MAX];
} gw_db_identity_t;

/** One usage_events row; strings are NUL-terminated, "" stands for SQL NULL where nullable. */
typedef struct st_gw_db_usage_row_t {
    char request_id[GW_DB_TEXT_MAX];
    char user_id[GW_DB_ID_MAX];
    char workspace_id[GW_DB_ID_MAX];     /* nullable */
    char subject[GW_DB_TEXT_MAX];        /* nullable */
    char route[GW_DB_TEXT_MAX];          /* "/v1/chat/completions" */
    char provider[GW_DB_PROVIDER_MAX];   /* nullable */
    char model[GW_DB_TEXT_MAX];          /* nullable (rejected requests only) */
    char upstream_model[GW_DB_TEXT_MAX]; /* nullable */
    int byok;                            /* mode */
    const char *status;                  /* static: ok|error|client_gone|upstream_error|rejected */
    int http_status;                     /* 0 = NULL */
    int64_t input_uncached, cache_read, cache_write_5m, cache_write_1h, output, reasoning, requests;
    int64_t cost_micro;
    int billed;
    const char *usage_source; /* static: provider|estimate|none */
    int64_t ttfb_ms;          /* -1 = NULL */
    int64_t duration_ms;
    char error_code[GW_DB_TEXT_MAX]; /* nullable */
    int64_t created_at_ms;           /* unix ms */
    char lease_id[GW_DB_TEXT_MAX];   /* the lease the hold was carved from; "" = none */
} gw_db_usage_row_t;

/** A user's plan, its user_limits overrides and its billed spend today and this month (UTC). */
typedef struct st_gw_db_limits_t {
    char plan[GW_DB_TEXT_MAX];
    /* override of credits_per_day, credits_per_month, rpm, tpm, max_concurrent; -1 = NULL */
    int64_t credits_per_day, credits_per_month, rpm, tpm, max_concurrent;
    int has_models;                 /* allowed_models is not NULL */
    char models[GW_DB_MODELS_MAX];  /* its names joined by '\n' */
    int64_t day_micro, month_micro; /* billed cost since the start of the UTC day / month */
    int64_t day, month; /* which: days since 1970-01-01, months since year 0 (gw_limits_utc_*) */
} gw_db_limits_t;

/** Connects (retrying for up to timeout_s); returns owned in *out (free with gw_db_close). */
rb_err_t gw_db_connect(const char *url, int timeout_s, gw_db_t **out, char *errbuf, size_t cap);
/** Closes and frees; NULL is a no-op. */
void gw_db_close(gw_db_t *db);
/** 1 when the connection is usable; otherwise tries one reset and reports the result. */
int gw_db_ensure(gw_db_t *db);
/** Changes each time gw_db_ensure re-made the connection: a new session, without the LISTENs,
 *  temporary tables and settings of the last one. */
uint64_t gw_db_session(const gw_db_t *db);
/** Looks up a secret's identity by SHA-256: workspace_token selects workspace_tokens, else
 *  api_keys. RB_OK, RB_ERR_NOTFOUND (unknown or revoked) or RB_ERR_DB. */
rb_err_t gw_db_identity_lookup(gw_db_t *db, int workspace_token, const uint8_t hash[RB_SHA256_LEN],
                               gw_db_identity_t *out, char *errbuf, size_t cap);
/** LISTEN on channel (an identifier: [a-z_]+). */
rb_err_t gw_db_listen(gw_db_t *db, const char *channel, char *errbuf, size_t cap);
/** Reads what arrived on the socket without blocking; returns the number of notifications
 *  consumed (>= 0), or -1 when the connection is broken. */
int gw_db_notifications(gw_db_t *db);
/** Like gw_db_notifications, calling on(ctx, channel, payload) for each (strings borrowed for the
 *  call). */
int gw_db_notifications_each(gw_db_t *db,
                             void (*on)(void *ctx, const char *channel, const char *payload),
                             void *ctx);
/** A user's limits and spend (*out filled). RB_OK, RB_ERR_NOTFOUND (no such user) or RB_ERR_DB. */
rb_err_t gw_db_limits_load(gw_db_t *db, const char *user, gw_db_limits_t *out, char *errbuf,
                           size_t cap);
/** Billed cost of user+subject since since_unix_s in *spent. RB_OK or RB_ERR_DB. */
rb_err_t gw_db_subject_spent(gw_db_t *db, const char *user, const char *subject,
                             int64_t since_unix_s, int64_t *spent, char *errbuf, size_t cap);
/** The connection's socket, for poll(2); -1 when closed. */
int gw_db_socket(const gw_db_t *db);
/** Posts one ledger batch: rows[0, len) are n whole lines of COPY text, each a row of
 *  pg_temp.rb_usage_stage (gw_recorder_row_copy), copied in and applied with
 *  rb_usage_apply_staged() in one transaction. RB_OK; else nothing was committed: RB_ERR_INVAL
 *  when PostgreSQL refused the rows themselves (a data or integrity error), RB_ERR_DB otherwise
 *  (connection lost, read-only or full database, timeout: worth a retry). */
rb_err_t gw_db_usage_post(gw_db_t *db, const char *rows, size_t len, size_t n, char *errbuf,
                          size_t cap);
/** rb_lease_take: reserves up to amount (at least min) of user's credit as lease_id for node;
 *  *got = what was reserved (0 = not enough credit). RB_OK or RB_ERR_DB. */
rb_err_t gw_db_lease_take(gw_db_t *db, const char *lease_id, const char *node, const char *user,
                          int64_t amount, int ttl_s, int64_t min, int64_t *got, char *errbuf,
                          size_t cap);
/** rb_lease_renew on ids[0, n) in one statement: dead[i] = 1 when lease ids[i] was closed
 *  (swept), else 0. Lease ids are printable ASCII without spaces (credit_leases.id's CHECK).
 *  RB_OK or RB_ERR_DB. */
rb_err_t gw_db_lease_renew(gw_db_t *db, const char *const *ids, size_t n, int ttl_s, int *dead,
                           char *errbuf, size_t cap);
/** rb_lease_return: *released = the unused part voided. RB_OK or RB_ERR_DB. */
rb_err_t gw_db_lease_return(gw_db_t *db, const char *lease_id, int64_t *released, char *errbuf,
                            size_t cap);
/** Registers or refreshes node id (kind gateway) in `nodes`, alive for ttl_s more seconds. */
rb_err_t gw_db_node_heartbeat(gw_db_t *db, const char *id, const char *hostname, int ttl_s,
                              char *errbuf, size_t cap);

#endif
