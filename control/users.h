/*
 * ctl_users: users and their API keys. An API key is "rb_" + 40 random base62 characters, shown
 * once at creation; only its SHA-256 is stored. An admin key acts on any user and creates users; a
 * user key acts on itself.
 */
#ifndef RB_CONTROL_USERS_H
#define RB_CONTROL_USERS_H

#include "control/api.h"

#define CTL_EMAIL_LEN_MAX 254
#define CTL_KEY_NAME_MAX  100

/** POST /users {email, plan?} (admin) → 201 {user}. */
void ctl_users_create(ctl_req_t *r);
/** GET /users/{id|me} → {user}. */
void ctl_users_get(ctl_req_t *r);
/** POST /api-keys {name?, role?, user_id?} → 201 {api_key{…}, key} (key shown once). */
void ctl_keys_create(ctl_req_t *r);
/** GET /api-keys → {items, next_cursor} of the caller's (or ?user_id= for admins) keys. */
void ctl_keys_list(ctl_req_t *r);
/** DELETE /api-keys/{id} → revokes it. */
void ctl_keys_delete(ctl_req_t *r);

/** Finds or creates the user with this email (lowercased); writes its id. */
rb_err_t ctl_users_ensure(ctl_db_t *db, const char *email, const char *plan, const char *role,
                          char *user_id, size_t cap);
/** Creates an API key for user_id; writes the secret (cap >= 64) and the key id (cap >= 48). */
rb_err_t ctl_keys_mint(ctl_db_t *db, const char *user_id, const char *role, const char *name,
                       char *secret, size_t secret_cap, char *key_id, size_t id_cap);
/** 1 when email has the shape local@domain (a domain of two or more dot-separated labels, none
 *  empty) with no spaces and fits CTL_EMAIL_LEN_MAX. */
int ctl_email_valid(const char *email);

#endif
