#include "control/users.h"

#include <ctype.h>
#include <string.h>

#include "common/crypto.h"

static const char user_cols[] = "id, email, plan, role, to_char(created_at AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

int ctl_email_valid(const char *email)
{
    size_t len = strlen(email);
    const char *at = strchr(email, '@');

    if (len == 0 || len > CTL_EMAIL_LEN_MAX || at == NULL || at == email || at[1] == '\0')
        return 0;
    /* a domain of dot-separated labels, none empty ("a@.c", "a@b..c", "a@b.c.") */
    if (strchr(at + 1, '@') != NULL || strchr(at + 1, '.') == NULL || at[1] == '.' ||
        strstr(at + 1, "..") != NULL || email[len - 1] == '.')
        return 0;
    for (const char *p = email; *p != '\0'; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return 0;
    return 1;
}

static void write_user(rb_jw_t *w, PGresult *res, int row)
{
    rb_jw_obj_begin(w);
    rb_jw_kstr(w, "id", PQgetvalue(res, row, 0));
    rb_jw_kstr(w, "email", PQgetvalue(res, row, 1));
    rb_jw_kstr(w, "plan", PQgetvalue(res, row, 2));
    rb_jw_kstr(w, "role", PQgetvalue(res, row, 3));
    rb_jw_kstr(w, "created_at", PQgetvalue(res, row, 4));
    rb_jw_obj_end(w);
}

static void reply_user(ctl_req_t *r, int status, PGresult *res)
{
    rb_buf_t b;
    rb_jw_t w;
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "user");
    write_user(&w, res, 0);
    rb_jw_obj_end(&w);
    ctl_reply(r, status, &b);
    rb_buf_free(&b);
}

rb_err_t ctl_users_ensure(ctl_db_t *db, const char *email, const char *plan, const char *role,
                          char *user_id, size_t cap)
{
    char id[16];
    const char *params[4] = {id, email, plan, role};
    PGresult *res = NULL;
    rb_err_t err;

    rb_random_id("u-", id, sizeof(id));
    /* lower() in the database: the schema's check is e = lower(e), beyond ASCII too */
    err = ctl_db_query(db,
                       "INSERT INTO users (id, email, plan, role) VALUES ($1, lower($2), $3, $4) "
                       "ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id",
                       4, params, &res);
    if (err == RB_OK)
        snprintf(user_id, cap, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return err;
}

void ctl_users_create(ctl_req_t *r)
{
    static const char *const allowed[] = {"email", "plan"};
    char email[CTL_EMAIL_LEN_MAX + 2], plan[64] = "", id[16];
    const char *params[3] = {id, email, plan};
    PGresult *res = NULL;
    rb_err_t err;

    if (!r->auth.admin) {
        ctl_error(r, 403, "forbidden", "creating users needs an admin key", NULL);
        return;
    }
    if (CTL_REJECT_UNKNOWN(r, allowed) != 0)
        return;
    if (rb_json_get_str(r->body, 0, "email", email, sizeof(email)) != RB_OK ||
        !ctl_email_valid(email)) {
        ctl_error(r, 400, "invalid_request", "email must be a valid address", NULL);
        return;
    }
    if (rb_json_find(r->body, 0, "plan") >= 0 &&
        rb_json_get_str(r->body, 0, "plan", plan, sizeof(plan)) != RB_OK) {
        ctl_error(r, 400, "invalid_request", "plan must be a string", NULL);
        return;
    }
    if (plan[0] == '\0')
        snprintf(plan, sizeof(plan), "%s", r->app->cfg->default_plan->name);
    if (cfg_plan_find(r->app->cfg, plan) == NULL) {
        ctl_error(r, 400, "unknown_plan", "no such plan", NULL);
        return;
    }
    rb_random_id("u-", id, sizeof(id));
    err =
        ctl_db_query(r->db,
                     "INSERT INTO users (id, email, plan) VALUES ($1, lower($2), $3) RETURNING id, "
                     "email, plan, role, to_char(created_at AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                     3, params, &res);
    if (err == RB_ERR_CONFLICT) {
        ctl_error(r, 409, "user_exists", "a user with this email exists", NULL);
        return;
    }
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    reply_user(r, 201, res);
    PQclear(res);
}

void ctl_users_get(ctl_req_t *r)
{
    char uid[CTL_PARAM_LEN_MAX], sql[256];
    const char *params[1] = {uid};
    PGresult *res = NULL;
    rb_err_t err;

    if (ctl_resolve_user(r, r->params[0], uid, sizeof(uid)) != 0)
        return;
    snprintf(sql, sizeof(sql), "SELECT %s FROM users WHERE id = $1", user_cols);
    if ((err = ctl_db_query(r->db, sql, 1, params, &res)) != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    if (PQntuples(res) == 0)
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
    else
        reply_user(r, 200, res);
    PQclear(res);
}

rb_err_t ctl_keys_mint(ctl_db_t *db, const char *user_id, const char *role, const char *name,
                       char *secret, size_t secret_cap, char *key_id, size_t id_cap)
{
    uint8_t digest[RB_SHA256_LEN];
    char hex[2 * RB_SHA256_LEN + 1], id[16], prefix[16];
    const char *params[6] = {id, user_id, role, name, prefix, hex};
    rb_err_t err;

    rb_random_secret("rb_", secret, secret_cap);
    rb_sha256(secret, strlen(secret), digest);
    rb_hex(digest, sizeof(digest), hex, sizeof(hex));
    snprintf(prefix, sizeof(prefix), "%.10s", secret);
    rb_random_id("key-", id, sizeof(id));
    err = ctl_db_query(db,
                       "INSERT INTO api_keys (id, user_id, role, name, prefix, key_hash) VALUES "
                       "($1, $2, $3, $4, $5, decode($6, 'hex'))",
                       6, params, NULL);
    if (err == RB_OK)
        snprintf(key_id, id_cap, "%s", id);
    return err;
}

void ctl_keys_create(ctl_req_t *r)
{
    static const char *const allowed[] = {"name", "role", "user_id"};
    char name[CTL_KEY_NAME_MAX + 1] = "", role[16] = "user", uid[CTL_PARAM_LEN_MAX] = "";
    char secret[64], key_id[48];
    rb_buf_t b;
    rb_jw_t w;
    rb_err_t err;

    if (CTL_REJECT_UNKNOWN(r, allowed) != 0)
        return;
    if (rb_json_find(r->body, 0, "name") >= 0 &&
        (rb_json_get_str(r->body, 0, "name", name, sizeof(name)) != RB_OK ||
         !ctl_text_valid(name))) {
        ctl_error(r, 400, "invalid_request",
                  "name must be a string of at most 100 bytes without control characters", NULL);
        return;
    }
    if (rb_json_find(r->body, 0, "role") >= 0 &&
        (rb_json_get_str(r->body, 0, "role", role, sizeof(role)) != RB_OK ||
         (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0))) {
        ctl_error(r, 400, "invalid_request", "role must be \"user\" or \"admin\"", NULL);
        return;
    }
    if (strcmp(role, "admin") == 0 && !r->auth.admin) {
        ctl_error(r, 403, "forbidden", "only an admin key may create admin keys", NULL);
        return;
    }
    if (ctl_opt_user_id(r, uid, sizeof(uid)) != 0)
        return;
    err = ctl_keys_mint(r->db, uid, role, name, secret, sizeof(secret), key_id, sizeof(key_id));
    if (err == RB_ERR_INVAL && strcmp(r->db->sqlstate, "23503") == 0) { /* foreign_key_violation */
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
        return;
    }
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "api_key");
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "id", key_id);
    rb_jw_kstr(&w, "user_id", uid);
    rb_jw_kstr(&w, "role", role);
    rb_jw_kstr(&w, "name", name);
    rb_jw_obj_end(&w);
    rb_jw_kstr(&w, "key", secret);
    rb_jw_obj_end(&w);
    ctl_reply(r, 201, &b);
    rb_buf_free(&b);
}

void ctl_keys_list(ctl_req_t *r)
{
    char uid[CTL_PARAM_LEN_MAX], cur[CTL_CURSOR_MAX + 1];
    ctl_page_t page;
    PGresult *res = NULL;
    rb_buf_t b;
    rb_jw_t w;
    rb_err_t err;

    if (ctl_query_user_id(r, uid, sizeof(uid)) != 0 || ctl_page_parse(r, &page) != 0)
        return;
    const char *params[4] = {uid, page.after[0], page.after[1], page.limit};
    err =
        ctl_db_query(r->db,
                     "SELECT id, role, name, prefix, to_char(created_at AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), " CTL_PAGE_KEY_SQL " FROM api_keys WHERE "
                     "user_id = $1 AND revoked_at IS NULL AND " CTL_PAGE_AFTER_SQL(
                         "$2", "$3") " "
                                     "ORDER BY created_at, id LIMIT $4::int",
                     4, params, &res);
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    ctl_list_begin(&w, &b);
    for (int i = 0; i < PQntuples(res) && i < page.n; i++) {
        static const char *const keys[] = {"id", "role", "name", "prefix", "created_at"};
        rb_jw_obj_begin(&w);
        for (int c = 0; c < 5; c++) {
            rb_jw_key(&w, keys[c]);
            rb_jw_str(&w, PQgetvalue(res, i, c));
        }
        rb_jw_obj_end(&w);
    }
    ctl_list_end(r, &w, &b, ctl_page_next(&page, res, 0, cur));
    PQclear(res);
}

void ctl_keys_delete(ctl_req_t *r)
{
    const char *params[3] = {r->params[0], r->auth.user_id, r->auth.admin ? "t" : "f"};
    PGresult *res = NULL;
    rb_err_t err;

    err = ctl_db_query(r->db,
                       "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS "
                       "NULL AND (user_id = $2 OR $3::boolean) RETURNING id",
                       3, params, &res);
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    if (PQntuples(res) == 0) {
        ctl_error(r, 404, "api_key_not_found", "no such API key", NULL);
    } else {
        rb_buf_t b;
        rb_buf_init(&b, 0);
        rb_buf_puts(&b, "{\"message\":\"API key revoked\"}");
        ctl_reply(r, 200, &b);
        rb_buf_free(&b);
        ctl_db_exec(r->db, "NOTIFY rigbox_identity, 'api_key'");
    }
    PQclear(res);
}
