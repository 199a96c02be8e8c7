/*
 * ctl_workspaces: workspace rows and their lifecycle state (DESIGN.md §4), the workspace's rbw_
 * token (minted/rotated/revoked here, stored as SHA-256 only) and its AI configuration (mode,
 * provider, model, and a BYOK key stored AES-256-GCM-encrypted under the master key, never
 * returned). Changes that the gateway caches are announced with NOTIFY rigbox_identity.
 */
#ifndef RB_CONTROL_WORKSPACES_H
#define RB_CONTROL_WORKSPACES_H

#include "control/api.h"

#define CTL_WS_NAME_MAX      64
#define CTL_ENV_VARS_MAX     128   /* variables of a workspace (VMM_GUESTCFG_ENV_MAX) */
#define CTL_ENV_JSON_MAX     65536 /* bytes of env_vars as JSON (the schema's bound) */
#define CTL_PROVIDER_KEY_MAX 512

/** POST /workspaces {name, template_id?, ram_mb?, vcpu_count?, disk_size_mb?, env_vars?, user_id?}.
 */
void ctl_workspaces_create(ctl_req_t *r);
/** GET /workspaces → {items, next_cursor}. */
void ctl_workspaces_list(ctl_req_t *r);
/** GET /workspaces/{id} → {vm, failure?}. */
void ctl_workspaces_get(ctl_req_t *r);
/** POST /workspaces/{id}/token → {token, prefix} (shown once; the previously minted token stops
 *  working, the one a running VM booted with does not). */
void ctl_workspaces_token_mint(ctl_req_t *r);
/** DELETE /workspaces/{id}/token → revokes its live tokens, the running VM's included. */
void ctl_workspaces_token_revoke(ctl_req_t *r);
/** GET /workspaces/{id}/ai-config. */
void ctl_workspaces_ai_get(ctl_req_t *r);
/** PUT /workspaces/{id}/ai-config {mode?, provider?, model?, api_key?}, merged into the stored
 *  config (omitted = keep, null = clear; the key goes with managed, null or another provider; a
 *  byok model must be its provider's; {"mode": null} alone removes the workspace's own config,
 *  which then follows its owner's default). Both answer the config in effect, as the gateway
 * applies it: {mode, provider, model, has_api_key, status, source: workspace|user_default|default}.
 */
void ctl_workspaces_ai_put(ctl_req_t *r);
/* The AI config in effect for workspace $1 (NULL: none) of user $2, in the gateway's order
 * (gateway/db.c): the workspace's row, else the user's default; no row: managed. Columns: mode,
 * provider, model ('' when NULL), whether a key is stored, scope. */
#define CTL_AI_EFFECTIVE_SQL                                                                       \
    "SELECT mode, coalesce(provider, ''), coalesce(model, ''), key_ciphertext IS NOT NULL, scope " \
    "FROM ai_configs WHERE (scope = 'workspace' AND workspace_id = $1) OR (scope = "               \
    "'user_default' AND user_id = $2) ORDER BY (scope = 'workspace') DESC LIMIT 1"

/** GET /users/{id|me}/ai-defaults: the user's default AI config, which workspaces without their
 *  own use (source user_default, else default: managed). */
void ctl_workspaces_ai_defaults_get(ctl_req_t *r);
/** PUT /users/{id|me}/ai-defaults {mode?, provider?, model?, api_key?}: as ai-config; the hosted
 *  API's names (default_mode, default_provider, default_model, default_api_key) are taken too, and
 *  the answer has both. */
void ctl_workspaces_ai_defaults_put(ctl_req_t *r);

/* Kinds of workspace token (schema/0009): each kind has at most one live token. */
#define CTL_TOKEN_API  "api"  /* minted by POST /workspaces/{id}/token, shown once */
#define CTL_TOKEN_BOOT "boot" /* given to the guest at each boot */

/** Mints a new rbw_ token of kind for ws_id and revokes the previous one of that kind, in one
 *  transaction on the locked workspace row (db not in one); writes the secret (cap >= 64) and its
 *  display prefix (cap >= 16). Announces it with NOTIFY. RB_ERR_NOTFOUND when the workspace is
 *  gone or being deleted. */
rb_err_t ctl_workspaces_rotate_token(ctl_db_t *db, const char *ws_id, const char *kind,
                                     char *secret, size_t cap, char *prefix, size_t prefix_cap);

/** Revokes the live tokens of ws_id of kind (NULL: every kind); *n says how many. Announces it with
 *  NOTIFY when there were any. */
rb_err_t ctl_workspaces_revoke_tokens(ctl_db_t *db, const char *ws_id, const char *kind, int *n);

/** Columns of ctl_workspaces_load's result. */
enum {
    CTL_WS_COL_ID,
    CTL_WS_COL_NAME,
    CTL_WS_COL_USER,
    CTL_WS_COL_NODE,
    CTL_WS_COL_IMAGE,
    CTL_WS_COL_TEMPLATE,
    CTL_WS_COL_STATUS,
    CTL_WS_COL_RAM,
    CTL_WS_COL_VCPU,
    CTL_WS_COL_DISK,
    CTL_WS_COL_ENV,
    CTL_WS_COL_CREATED,
    CTL_WS_COL_UPDATED,
    CTL_WS_COL_FCODE,
    CTL_WS_COL_FMSG,
    CTL_WS_COL_FATTEMPTS,
    CTL_WS_COL_FRETRY,
    CTL_WS_COL_FAT,
};
/** Loads workspace r->params[0] if the caller may see it (owner or admin): an owned result
 * (PQclear) with the columns above; otherwise sends 404 (or ctl_error_db's answer) and returns
 * NULL. */
PGresult *ctl_workspaces_load(ctl_req_t *r);
/** ctl_workspaces_load for a route that changes the workspace: one being deleted is 409. */
PGresult *ctl_workspaces_load_mutable(ctl_req_t *r);
/** Sends {vm, failure?} from row 0 of a ctl_workspaces_load-shaped result. */
void ctl_workspaces_reply(ctl_req_t *r, int status, PGresult *res);
/** Checks the body's env_vars object at token env: at most CTL_ENV_VARS_MAX variables whose names
 * the guest accepts (like MY_VAR) and whose values are strings a VM can boot with; null values too
 * when nulls (a merge: null removes). Sends 400 and returns -1 otherwise. */
int ctl_workspaces_env_check(ctl_req_t *r, int env, int nulls);
/** Validates the POST /workspaces body (quick: POST /quick-deploy's, where template_id is required
 *  and name optional) and inserts the row (status provisioned); the new row, owned, or NULL after
 *  sending the error. */
PGresult *ctl_workspaces_insert(ctl_req_t *r, int quick);
/** Writes one workspace object (with its failure and apps) from row `row` of such a result. */
void ctl_workspaces_write(rb_jw_t *w, ctl_req_t *r, PGresult *res, int row);
/** The SELECT list matching the columns above. */
extern const char ctl_workspaces_cols[];

#endif
