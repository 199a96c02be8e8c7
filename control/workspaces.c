#include "control/workspaces.h"

#include <string.h>

#include "common/crypto.h"
#include "common/log.h"
#include "control/credits.h"
#include "control/limits.h"
#include "control/templates.h"
#include "vmm/guestcfg.h"

#define WS_COLS                                                                                    \
    "id, name, user_id, coalesce(node_id, ''), image, coalesce(template_id, ''), status, ram_mb, " \
    "vcpu_count, disk_size_mb, env_vars::text, "                                                   \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "                   \
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "                   \
    "coalesce(failure_code, ''), coalesce(failure_message, ''), failure_attempts, "                \
    "coalesce(failure_retryable, false), "                                                         \
    "coalesce(to_char(failure_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"

const char ctl_workspaces_cols[] = WS_COLS;

static void write_failure(rb_jw_t *w, PGresult *res, int row)
{
    rb_jw_obj_begin(w);
    rb_jw_kstr(w, "code", PQgetvalue(res, row, CTL_WS_COL_FCODE));
    rb_jw_kstr(w, "message", PQgetvalue(res, row, CTL_WS_COL_FMSG));
    rb_jw_key(w, "attempts");
    rb_jw_raw(w, PQgetvalue(res, row, CTL_WS_COL_FATTEMPTS),
              strlen(PQgetvalue(res, row, CTL_WS_COL_FATTEMPTS)));
    rb_jw_kbool(w, "retryable", PQgetvalue(res, row, CTL_WS_COL_FRETRY)[0] == 't');
    rb_jw_kstr(w, "occurred_at", PQgetvalue(res, row, CTL_WS_COL_FAT));
    rb_jw_obj_end(w);
}

/* The workspace's apps with their forwarded loopback ports. */
static void write_apps(rb_jw_t *w, ctl_req_t *r, const char *ws_id)
{
    const char *params[1] = {ws_id};
    PGresult *res = NULL;

    rb_jw_arr_begin(w);
    if (ctl_db_query(r->db,
                     /* a host port is only the app's while its VM runs: null otherwise */
                     "SELECT a.id, a.name, a.port, CASE WHEN w.status = 'running' AND a.host_port "
                     "IS NOT NULL THEN a.host_port::text ELSE 'null' END, a.subdomain, "
                     "a.visibility, a.protocol, a.status FROM apps a JOIN workspaces w ON w.id = "
                     "a.workspace_id WHERE a.workspace_id = $1 ORDER BY a.name",
                     1, params, &res) == RB_OK) {
        for (int i = 0; i < PQntuples(res); i++) {
            static const char *const keys[] = {"id",        "name",       "port",     "host_port",
                                               "subdomain", "visibility", "protocol", "status"};
            rb_jw_obj_begin(w);
            for (int c = 0; c < 8; c++) {
                rb_jw_key(w, keys[c]);
                if (c == 2 || c == 3)
                    rb_jw_raw(w, PQgetvalue(res, i, c), strlen(PQgetvalue(res, i, c)));
                else
                    rb_jw_str(w, PQgetvalue(res, i, c));
            }
            rb_jw_obj_end(w);
        }
    }
    PQclear(res);
    rb_jw_arr_end(w);
}

void ctl_workspaces_write(rb_jw_t *w, ctl_req_t *r, PGresult *res, int row)
{
    static const struct {
        const char *key;
        int col;
        int raw; /* number or JSON: written as is */
    } fields[] = {{"id", CTL_WS_COL_ID, 0},
                  {"name", CTL_WS_COL_NAME, 0},
                  {"user_id", CTL_WS_COL_USER, 0},
                  {"node_id", CTL_WS_COL_NODE, 0},
                  {"image", CTL_WS_COL_IMAGE, 0},
                  {"template_id", CTL_WS_COL_TEMPLATE, 0},
                  {"status", CTL_WS_COL_STATUS, 0},
                  {"ram_mb", CTL_WS_COL_RAM, 1},
                  {"vcpu_count", CTL_WS_COL_VCPU, 1},
                  {"disk_size_mb", CTL_WS_COL_DISK, 1},
                  {"env_vars", CTL_WS_COL_ENV, 1},
                  {"created_at", CTL_WS_COL_CREATED, 0},
                  {"updated_at", CTL_WS_COL_UPDATED, 0}};

    rb_jw_obj_begin(w);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *v = PQgetvalue(res, row, fields[i].col);
        rb_jw_key(w, fields[i].key);
        if (fields[i].raw)
            rb_jw_raw(w, v, strlen(v));
        else if (v[0] == '\0')
            rb_jw_null(w);
        else
            rb_jw_str(w, v);
    }
    if (strcmp(PQgetvalue(res, row, CTL_WS_COL_STATUS), "failed") == 0) {
        rb_jw_key(w, "failure");
        write_failure(w, res, row);
    }
    rb_jw_key(w, "apps");
    write_apps(w, r, PQgetvalue(res, row, CTL_WS_COL_ID));
    rb_jw_obj_end(w);
}

void ctl_workspaces_reply(ctl_req_t *r, int status, PGresult *res)
{
    rb_buf_t b;
    rb_jw_t w;
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "vm");
    ctl_workspaces_write(&w, r, res, 0);
    if (strcmp(PQgetvalue(res, 0, CTL_WS_COL_STATUS), "failed") == 0) {
        rb_jw_key(&w, "failure");
        write_failure(&w, res, 0);
    }
    rb_jw_obj_end(&w);
    ctl_reply(r, status, &b);
    rb_buf_free(&b);
}

PGresult *ctl_workspaces_load(ctl_req_t *r)
{
    const char *params[3] = {r->params[0], r->auth.user_id, r->auth.admin ? "t" : "f"};
    PGresult *res = NULL;
    rb_err_t err = ctl_db_query(r->db,
                                "SELECT " WS_COLS " FROM workspaces WHERE id = $1 AND "
                                "(user_id = $2 OR $3::boolean)",
                                3, params, &res);
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return NULL;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        ctl_error(r, 404, "workspace_not_found", "no such workspace", NULL);
        return NULL;
    }
    return res;
}

PGresult *ctl_workspaces_load_mutable(ctl_req_t *r)
{
    PGresult *res = ctl_workspaces_load(r);

    if (res != NULL && strcmp(PQgetvalue(res, 0, CTL_WS_COL_STATUS), "deleting") == 0) {
        PQclear(res);
        ctl_error(r, 409, "invalid_state", "cannot change a workspace that is deleting", NULL);
        return NULL;
    }
    return res;
}

/* Reads an optional positive integer field; -1 and a 400 when malformed. */
static int opt_int(ctl_req_t *r, const char *key, int64_t max, int64_t *out)
{
    int v = rb_json_member(r->body, 0, key);
    char msg[128];
    if (v < 0 || rb_json_type(r->body, v) == RB_JSON_NULL)
        return 0;
    if (rb_json_int64(r->body, v, out) != 0 || *out < 1 || *out > max) {
        snprintf(msg, sizeof(msg), "%s must be an integer from 1 to %lld", key, (long long)max);
        ctl_error(r, 400, "invalid_request", msg, NULL);
        return -1;
    }
    return 0;
}

typedef struct st_ws_spec_t {
    char name[CTL_WS_NAME_MAX + 1];
    char user_id[CTL_PARAM_LEN_MAX];
    const cfg_template_t *tmpl;
    int64_t ram_mb, vcpu, disk_mb;
    char env_json[CTL_ENV_JSON_MAX + 1];
} ws_spec_t;

int ctl_workspaces_env_check(ctl_req_t *r, int env, int nulls)
{
    int k = -1, v = -1,
        ok = rb_json_type(r->body, env) == RB_JSON_OBJECT &&
             rb_json_count(r->body, env) <= CTL_ENV_VARS_MAX;

    while (ok && rb_json_next(r->body, env, &k, &v)) {
        char name[VMM_GUESTCFG_NAME_MAX + 1];
        size_t raw_len, len = 0;
        char *value;

        if (rb_json_type(r->body, v) == RB_JSON_NULL && nulls)
            continue;
        rb_json_raw(r->body, v, &raw_len);
        value = rb_malloc(raw_len + 1); /* unescaping never lengthens */
        ok = rb_json_type(r->body, v) == RB_JSON_STRING &&
             rb_json_str(r->body, v, value, raw_len + 1, &len) == RB_OK && strlen(value) == len &&
             len <= VMM_GUESTCFG_VALUE_MAX &&
             rb_json_str(r->body, k, name, sizeof(name), NULL) == RB_OK && name[0] != '\0' &&
             strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") ==
                 strlen(name) &&
             !(name[0] >= '0' && name[0] <= '9');
        free(value);
    }
    if (!ok) {
        char msg[192];
        snprintf(msg, sizeof(msg),
                 "env_vars must be an object of at most %d variables named like MY_VAR, each a "
                 "string of at most %d bytes%s",
                 CTL_ENV_VARS_MAX, VMM_GUESTCFG_VALUE_MAX, nulls ? " (null removes it)" : "");
        ctl_error(r, 400, "invalid_request", msg, NULL);
    }
    return ok ? 0 : -1;
}

/* env_vars of a new workspace, as JSON in out ("{}" when absent). */
static int parse_env(ctl_req_t *r, char *out, size_t cap)
{
    int env = rb_json_member(r->body, 0, "env_vars");
    size_t len;
    const char *raw;

    snprintf(out, cap, "{}");
    if (env < 0 || rb_json_type(r->body, env) == RB_JSON_NULL)
        return 0;
    if (ctl_workspaces_env_check(r, env, 0) != 0)
        return -1;
    raw = rb_json_raw(r->body, env, &len);
    if (len + 1 > cap) {
        ctl_error(r, 400, "invalid_request", "env_vars is larger than 65536 bytes", NULL);
        return -1;
    }
    memcpy(out, raw, len);
    out[len] = '\0';
    return 0;
}

/* quick (POST /quick-deploy, DESIGN §4): template_id is required and the name optional (the
 * template's id); POST /workspaces: the name is required and the template is base by default */
static int parse_spec(ctl_req_t *r, ws_spec_t *s, int quick)
{
    static const char *const allowed[] = {"name",       "template_id",  "image",    "ram_mb",
                                          "vcpu_count", "disk_size_mb", "env_vars", "user_id"};
    char tid[CFG_NAME_LEN_MAX] = "base";
    int name = rb_json_member(r->body, 0, "name");

    if (CTL_REJECT_UNKNOWN(r, allowed) != 0)
        return -1;
    if (quick && rb_json_find(r->body, 0, "template_id") < 0 &&
        rb_json_find(r->body, 0, "image") < 0) {
        ctl_error(r, 400, "invalid_request", "template_id is required", NULL);
        return -1;
    }
    /* "image" is the deprecated alias of template_id; a failed read empties the buffer */
    if (rb_json_find(r->body, 0, "template_id") >= 0 || rb_json_find(r->body, 0, "image") >= 0) {
        const char *key = rb_json_find(r->body, 0, "template_id") >= 0 ? "template_id" : "image";
        if (rb_json_get_str(r->body, 0, key, tid, sizeof(tid)) != RB_OK)
            tid[0] = '\0';
    }
    if ((s->tmpl = cfg_template_find(r->app->cfg, tid)) == NULL) {
        ctl_error(r, 400, "template_not_found", "no such template", NULL);
        return -1;
    }
    if (quick && (name < 0 || rb_json_type(r->body, name) == RB_JSON_NULL)) {
        snprintf(s->name, sizeof(s->name), "%s", s->tmpl->id);
    } else if (rb_json_get_str(r->body, 0, "name", s->name, sizeof(s->name)) != RB_OK ||
               s->name[0] == '\0' || !ctl_text_valid(s->name)) {
        ctl_error(r, 400, "invalid_request",
                  "name must be a string of 1 to 64 bytes without control characters", NULL);
        return -1;
    }
    s->ram_mb = s->tmpl->floor_ram_mb;
    s->vcpu = s->tmpl->floor_vcpu;
    s->disk_mb = s->tmpl->floor_disk_mb;
    if (opt_int(r, "ram_mb", 1048576, &s->ram_mb) || opt_int(r, "vcpu_count", 256, &s->vcpu) ||
        opt_int(r, "disk_size_mb", 16777216, &s->disk_mb))
        return -1;
    /* Resources below the template's floor are raised to it. */
    if (s->ram_mb < s->tmpl->floor_ram_mb)
        s->ram_mb = s->tmpl->floor_ram_mb;
    if (s->vcpu < s->tmpl->floor_vcpu)
        s->vcpu = s->tmpl->floor_vcpu;
    if (s->disk_mb < s->tmpl->floor_disk_mb)
        s->disk_mb = s->tmpl->floor_disk_mb;
    if (ctl_opt_user_id(r, s->user_id, sizeof(s->user_id)) != 0)
        return -1;
    return parse_env(r, s->env_json, sizeof(s->env_json));
}

/* 402 plan_limit when the new workspace would pass the owner's limits (plan, then overrides). */
static int check_plan(ctl_req_t *r, const ws_spec_t *s)
{
    const char *params[1] = {s->user_id};
    PGresult *res = NULL;
    ctl_limits_t lim;
    int64_t count, disk;
    char msg[160] = "";
    rb_err_t err = ctl_limits_effective(r->db, r->app->cfg, s->user_id, &lim);

    if (err == RB_ERR_NOTFOUND) {
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
        return -1;
    }
    if (err != RB_OK || (err = ctl_db_query(r->db,
                                            "SELECT count(*), coalesce(sum(disk_size_mb), 0) FROM "
                                            "workspaces WHERE user_id = $1",
                                            1, params, &res)) != RB_OK) {
        ctl_error_db(r, err);
        return -1;
    }
    count = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    disk = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    if (count + 1 > lim.max_vms)
        snprintf(msg, sizeof(msg), "the limit is %lld workspaces", (long long)lim.max_vms);
    else if (s->ram_mb > lim.max_ram_per_vm_mb)
        snprintf(msg, sizeof(msg), "the limit is %lld MB of RAM per workspace",
                 (long long)lim.max_ram_per_vm_mb);
    else if (s->vcpu > lim.max_vcpu_per_vm)
        snprintf(msg, sizeof(msg), "the limit is %lld vCPUs per workspace",
                 (long long)lim.max_vcpu_per_vm);
    else if (disk + s->disk_mb > lim.max_disk_total_mb)
        snprintf(msg, sizeof(msg), "the limit is %lld MB of disk in all",
                 (long long)lim.max_disk_total_mb);
    if (msg[0] != '\0') {
        ctl_error(r, 402, "plan_limit", msg, NULL);
        return -1;
    }
    return 0;
}

PGresult *ctl_workspaces_insert(ctl_req_t *r, int quick)
{
    ws_spec_t s = {0};
    char id[16], ram[24], vcpu[24], disk[24];
    const char *params[8] = {id, s.user_id, s.name, NULL, NULL, ram, vcpu, disk};
    const char *p9[9];
    PGresult *res = NULL;
    rb_err_t err;

    if (parse_spec(r, &s, quick) != 0)
        return NULL;
    if ((err = ctl_limits_lock(r->db, s.user_id)) != RB_OK) {
        ctl_error_db(r, err);
        return NULL;
    }
    if (check_plan(r, &s) != 0) {
        ctl_db_end(r->db, 0);
        return NULL;
    }
    rb_random_id("ws-", id, sizeof(id));
    snprintf(ram, sizeof(ram), "%lld", (long long)s.ram_mb);
    snprintf(vcpu, sizeof(vcpu), "%lld", (long long)s.vcpu);
    snprintf(disk, sizeof(disk), "%lld", (long long)s.disk_mb);
    params[3] = s.tmpl->id;
    params[4] = s.tmpl->image_name;
    memcpy(p9, params, sizeof(params));
    p9[8] = s.env_json;
    err =
        ctl_db_query(r->db,
                     "INSERT INTO workspaces (id, user_id, name, template_id, image, ram_mb, "
                     "vcpu_count, disk_size_mb, env_vars) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                     "$9::jsonb) RETURNING " WS_COLS,
                     9, p9, &res);
    if (err != RB_OK) {
        ctl_error_db(r, err);
        ctl_db_end(r->db, 0);
        return NULL;
    }
    if ((err = ctl_db_end(r->db, 1)) != RB_OK) {
        PQclear(res);
        ctl_error_db(r, err);
        return NULL;
    }
    return res;
}

void ctl_workspaces_create(ctl_req_t *r)
{
    PGresult *res = ctl_workspaces_insert(r, 0);
    if (res != NULL)
        ctl_workspaces_reply(r, 201, res);
    PQclear(res);
}

void ctl_workspaces_list(ctl_req_t *r)
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
                     "SELECT " WS_COLS ", " CTL_PAGE_KEY_SQL " FROM workspaces WHERE user_id = $1 "
                     "AND " CTL_PAGE_AFTER_SQL("$2", "$3") " ORDER BY created_at, id LIMIT $4::int",
                     4, params, &res);
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    ctl_list_begin(&w, &b);
    for (int i = 0; i < PQntuples(res) && i < page.n; i++)
        ctl_workspaces_write(&w, r, res, i);
    ctl_list_end(r, &w, &b, ctl_page_next(&page, res, CTL_WS_COL_ID, cur));
    PQclear(res);
}

void ctl_workspaces_get(ctl_req_t *r)
{
    PGresult *res = ctl_workspaces_load(r);
    if (res == NULL)
        return;
    ctl_workspaces_reply(r, 200, res);
    PQclear(res);
}

static void reply_message(ctl_req_t *r, int status, const char *message)
{
    rb_buf_t b;
    rb_jw_t w;
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "message", message);
    rb_jw_obj_end(&w);
    ctl_reply(r, status, &b);
    rb_buf_free(&b);
}

rb_err_t ctl_workspaces_rotate_token(ctl_db_t *db, const char *ws_id, const char *kind,
                                     char *secret, size_t cap, char *prefix, size_t prefix_cap)
{
    char hex[2 * RB_SHA256_LEN + 1];
    uint8_t digest[RB_SHA256_LEN];
    const char *params[4] = {ws_id, hex, prefix, kind};
    rb_err_t err;
    int rows;

    RB_ASSERT(cap >= 64 && prefix_cap >= 16 && !db->in_tx);
    rb_random_secret("rbw_", secret, cap);
    rb_sha256(secret, strlen(secret), digest);
    rb_hex(digest, sizeof(digest), hex, sizeof(hex));
    snprintf(prefix, prefix_cap, "%.12s", secret);
    /* The workspace's row is locked first, so rotations of one workspace run one after another
     * (each then sees the token the one before inserted as the old one: one live per kind,
     * schema/0009) and none lands on a workspace being deleted. The other kind's token stays. */
    if ((err = ctl_db_begin(db)) != RB_OK)
        return err;
    if ((rows = ctl_db_rows(db,
                            "SELECT 1 FROM workspaces WHERE id = $1 AND status <> 'deleting' FOR "
                            "UPDATE",
                            1, params)) != 1) {
        ctl_db_end(db, 0);
        return rows < 0 ? RB_ERR_DB : RB_ERR_NOTFOUND;
    }
    err = ctl_db_query(db,
                       "WITH old AS (UPDATE workspace_tokens SET revoked_at = now() WHERE "
                       "workspace_id = $1 AND kind = $4 AND revoked_at IS NULL RETURNING 1) "
                       "INSERT INTO workspace_tokens (workspace_id, token_hash, prefix, kind) "
                       "SELECT $1, decode($2, 'hex'), $3, $4 FROM (SELECT count(*) FROM old) AS o",
                       4, params, NULL);
    if (err != RB_OK)
        ctl_db_end(db, 0);
    else
        err = ctl_db_end(db, 1);
    if (err == RB_OK)
        ctl_db_exec(db, "NOTIFY rigbox_identity, 'workspace_token'");
    return err;
}

void ctl_workspaces_token_mint(ctl_req_t *r)
{
    PGresult *res = ctl_workspaces_load(r);
    char secret[64], prefix[16];
    rb_buf_t b;
    rb_jw_t w;
    rb_err_t err;

    if (res == NULL)
        return;
    PQclear(res);
    if (ctl_reject_unknown(r, NULL, 0) != 0) /* no options: a "ttl_s" would be silently lost */
        return;
    if ((err = ctl_workspaces_rotate_token(r->db, r->params[0], CTL_TOKEN_API, secret,
                                           sizeof(secret), prefix, sizeof(prefix))) ==
        RB_ERR_NOTFOUND) {
        ctl_error(r, 409, "invalid_state", "cannot change a workspace that is deleting", NULL);
        return;
    }
    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "token", secret);
    rb_jw_kstr(&w, "prefix", prefix);
    rb_jw_kstr(&w, "workspace_id", r->params[0]);
    rb_jw_obj_end(&w);
    ctl_reply(r, 201, &b);
    rb_buf_free(&b);
}

void ctl_workspaces_token_revoke(ctl_req_t *r)
{
    PGresult *res = ctl_workspaces_load(r);
    rb_err_t err;
    int n;

    if (res == NULL)
        return;
    PQclear(res);
    if (ctl_reject_unknown(r, NULL, 0) != 0) /* every kind is revoked: no "kind" to pick one */
        return;
    /* every kind: revoking cuts the running VM off too, until its next boot */
    if ((err = ctl_workspaces_revoke_tokens(r->db, r->params[0], NULL, &n)) != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    if (n == 0) {
        ctl_error(r, 404, "token_not_found", "the workspace has no live token", NULL);
        return;
    }
    reply_message(r, 200, "token revoked");
}

rb_err_t ctl_workspaces_revoke_tokens(ctl_db_t *db, const char *ws_id, const char *kind, int *n)
{
    const char *params[2] = {ws_id, kind};
    PGresult *res = NULL;
    rb_err_t err;

    *n = 0;
    err = ctl_db_query(db,
                       "UPDATE workspace_tokens SET revoked_at = now() WHERE workspace_id = $1 AND "
                       "($2::text IS NULL OR kind = $2) AND revoked_at IS NULL RETURNING id",
                       2, params, &res);
    if (err != RB_OK)
        return err;
    *n = PQntuples(res);
    PQclear(res);
    if (*n > 0)
        ctl_db_exec(db, "NOTIFY rigbox_identity, 'workspace_token'");
    return RB_OK;
}

/* source: where the config comes from: "workspace", "user_default" or "default" (managed); a
 * user's defaults are also named as the hosted API names them (default_mode, ...) */
static void reply_ai_config(ctl_req_t *r, const char *mode, const char *provider, const char *model,
                            int has_key, const char *source, int defaults)
{
    rb_buf_t b;
    rb_jw_t w;
    const char *status = strcmp(mode, "byok") != 0 ? "managed_active"
                         : has_key                 ? "byok_active"
                                                   : "invalid_missing_key";
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "mode", mode);
    rb_jw_key(&w, "provider");
    provider[0] != '\0' ? rb_jw_str(&w, provider) : rb_jw_null(&w);
    rb_jw_key(&w, "model");
    model[0] != '\0' ? rb_jw_str(&w, model) : rb_jw_null(&w);
    rb_jw_kbool(&w, "has_api_key", has_key);
    rb_jw_kstr(&w, "status", status);
    rb_jw_kstr(&w, "source", source);
    if (defaults) {
        rb_jw_kstr(&w, "default_mode", mode);
        rb_jw_key(&w, "default_provider");
        provider[0] != '\0' ? rb_jw_str(&w, provider) : rb_jw_null(&w);
        rb_jw_key(&w, "default_model");
        model[0] != '\0' ? rb_jw_str(&w, model) : rb_jw_null(&w);
    }
    rb_jw_obj_end(&w);
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
}

/* Replies the AI config in effect (the gateway's order, gateway/db.c): the workspace's row
 * (ws_id; NULL for the user's default alone), else the user's default, else managed. */
static void reply_effective(ctl_req_t *r, const char *ws_id, const char *user_id)
{
    const char *params[2] = {ws_id, user_id};
    PGresult *res = NULL;
    rb_err_t err = ctl_db_query(r->db, CTL_AI_EFFECTIVE_SQL, 2, params, &res);

    if (err != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    if (PQntuples(res) == 0)
        reply_ai_config(r, "managed", "", "", 0, "default", ws_id == NULL);
    else
        reply_ai_config(r, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
                        PQgetvalue(res, 0, 3)[0] == 't', PQgetvalue(res, 0, 4), ws_id == NULL);
    PQclear(res);
}

/* The owner of the workspace {id} the caller may see (and change, when mutable) into user_id; -1
 * when the answer is sent. */
static int ws_owner(ctl_req_t *r, int mutable, char *user_id, size_t cap)
{
    PGresult *res = mutable ? ctl_workspaces_load_mutable(r) : ctl_workspaces_load(r);

    if (res == NULL)
        return -1;
    snprintf(user_id, cap, "%s", PQgetvalue(res, 0, CTL_WS_COL_USER));
    PQclear(res);
    return 0;
}

/* The user {id|me} of an ai-defaults route, when the caller may act on it and it exists. */
static int defaults_user(ctl_req_t *r, char *user_id, size_t cap)
{
    return ctl_resolve_user(r, r->params[0], user_id, cap) != 0 || ctl_user_require(r, user_id) != 0
               ? -1
               : 0;
}

void ctl_workspaces_ai_get(ctl_req_t *r)
{
    char user_id[CTL_PARAM_LEN_MAX];

    if (ws_owner(r, 0, user_id, sizeof(user_id)) == 0)
        reply_effective(r, r->params[0], user_id);
}

/* The upsert of an AI config row of scope (SQL literal) on its conflict target ($1 workspace or
 * NULL, $2 user, $3 mode, $4 provider, $5 model, $6-$8 the sealed key in hex, $9 its key id, $10
 * what happens to the stored key: 'set' to the one given, 'keep', or 'clear'). The values are the
 * stored row merged with the body (ai_merge). */
#define AI_UPSERT(scope, target)                                                                   \
    "INSERT INTO ai_configs AS a (workspace_id, user_id, scope, mode, provider, model, "           \
    "key_ciphertext, key_nonce, key_tag, key_id) VALUES ($1, $2, " scope ", $3, $4, $5, "          \
    "decode($6, 'hex'), decode($7, 'hex'), decode($8, 'hex'), $9) ON CONFLICT " target " DO "      \
    "UPDATE SET mode = EXCLUDED.mode, provider = EXCLUDED.provider, model = EXCLUDED.model, "      \
    "key_ciphertext = " AI_KEY("key_ciphertext") ", key_nonce = " AI_KEY(                          \
        "key_nonce") ", key_tag = " AI_KEY("key_tag") ", key_id = " AI_KEY("key_id")
/* a key kept stays only with its own provider, whatever the merge decided */
#define AI_KEY(col)                                                                                \
    "CASE WHEN $10 = 'set' THEN EXCLUDED." col " WHEN $10 = 'keep' AND a.provider IS NOT "         \
    "DISTINCT FROM EXCLUDED.provider AND EXCLUDED.mode = 'byok' THEN a." col " END"
/* The stored row of a scope, locked until the upsert commits (two PUTs merge one after the other):
 * mode, provider, model ('' for NULL), whether it has a key. Of workspace $1 of user $2, or of
 * user $1's default. */
#define AI_STORED_COLS                                                                             \
    "SELECT mode, coalesce(provider, ''), coalesce(model, ''), key_ciphertext IS NOT NULL "        \
    "FROM ai_configs WHERE "
#define AI_STORED_WORKSPACE_SQL AI_STORED_COLS "workspace_id = $1 AND user_id = $2 FOR UPDATE"
#define AI_STORED_DEFAULT_SQL   AI_STORED_COLS "user_id = $1 AND scope = 'user_default' FOR UPDATE"

typedef struct st_ai_put_t {
    char mode[16], provider[CFG_NAME_LEN_MAX], model[201], key[CTL_PROVIDER_KEY_MAX + 1];
    int has_mode, has_provider, has_model; /* present in the body (null included) */
    int has_key, clear_key;                /* api_key given, or null */
    int clear_all;                         /* mode null: the scope's config goes */
    const char *key_action;                /* 'set', 'keep' or 'clear' (ai_merge) */
    char ct_hex[2 * CTL_PROVIDER_KEY_MAX + 1], nonce_hex[2 * RB_AES_NONCE_LEN + 1],
        tag_hex[2 * RB_AES_TAG_LEN + 1];
} ai_put_t;

/* The members of an AI config body; a user's defaults also take the hosted API's default_* names */
typedef struct st_ai_names_t {
    const char *mode, *provider, *model, *api_key;
} ai_names_t;

/* Reads the optional string member name into buf: 1 when present (buf "" for null), 0 when
 * absent, -1 when it is not a string or null or too long for cap. */
static int ai_member(ctl_req_t *r, const char *name, char *buf, size_t cap)
{
    int v = rb_json_member(r->body, 0, name);

    buf[0] = '\0';
    if (v < 0)
        return 0;
    if (rb_json_type(r->body, v) == RB_JSON_NULL)
        return 1;
    return rb_json_get_str(r->body, 0, name, buf, cap) == RB_OK ? 1 : -1;
}

/* Parses a body (DESIGN.md §4: omitted = keep, null = clear, unknown = 400). */
static int parse_ai_put(ctl_req_t *r, const ai_names_t *n, ai_put_t *p)
{
    const char *const allowed[] = {n->mode, n->provider, n->model, n->api_key};
    rb_json_type_t key_type;

    if (CTL_REJECT_UNKNOWN(r, allowed) != 0)
        return -1;
    if (rb_json_type(r->body, rb_json_member(r->body, 0, n->mode)) == RB_JSON_NULL) {
        if (rb_json_count(r->body, 0) != 1) {
            ctl_error(r, 400, "invalid_request",
                      "mode null clears the whole AI config (a workspace's then follows its "
                      "owner's default): send it alone",
                      NULL);
            return -1;
        }
        p->clear_all = 1;
        return 0;
    }
    if ((p->has_mode = ai_member(r, n->mode, p->mode, sizeof(p->mode))) != 0 &&
        strcmp(p->mode, "managed") != 0 && strcmp(p->mode, "byok") != 0) {
        ctl_error(r, 400, "invalid_request", "mode must be \"managed\" or \"byok\"", NULL);
        return -1;
    }
    if ((p->has_provider = ai_member(r, n->provider, p->provider, sizeof(p->provider))) < 0 ||
        (p->provider[0] != '\0' && cfg_provider_find(r->app->cfg, p->provider) == NULL)) {
        ctl_error(r, 400, "unknown_provider", "provider is not configured", NULL);
        return -1;
    }
    if ((p->has_model = ai_member(r, n->model, p->model, sizeof(p->model))) < 0 ||
        (p->model[0] != '\0' && cfg_model_find(r->app->cfg, p->model) == NULL)) {
        ctl_error(r, 400, "model_not_found", "model is not configured", NULL);
        return -1;
    }
    key_type = rb_json_type(r->body, rb_json_member(r->body, 0, n->api_key));
    if (ai_member(r, n->api_key, p->key, sizeof(p->key)) < 0 ||
        (key_type == RB_JSON_STRING && p->key[0] == '\0')) {
        ctl_error(r, 400, "invalid_request", "api_key must be a string of at most 512 bytes", NULL);
        return -1;
    }
    p->has_key = p->key[0] != '\0';
    p->clear_key = key_type == RB_JSON_NULL;
    for (const char *c = p->key; *c != '\0'; c++)
        if (*c <= ' ' || *c > '~') { /* it goes into an HTTP header: printable ASCII, no spaces */
            ctl_error(r, 400, "invalid_request",
                      "api_key must be printable ASCII without spaces or control characters", NULL);
            return -1;
        }
    return 0;
}

/* Merges the body into the stored row of its scope, locked (in the caller's transaction): the
 * values of a field the body omits stay. Checks the result and decides what happens to the stored
 * key: a key given replaces it, null or managed clears it, and so does another provider (its key
 * is never sent to this one). A workspace without a row of its own needs a mode: it runs on its
 * owner's default until then, which an omitted mode must not silently turn into managed. */
static int ai_merge(ctl_req_t *r, const char *ws_id, const char *user_id, ai_put_t *p)
{
    const char *params[2] = {ws_id, user_id};
    const cfg_model_t *m;
    PGresult *res = NULL;
    int stored_key = 0;
    rb_err_t err;

    RB_ASSERT(r->db->in_tx && user_id != NULL);
    if ((err = ws_id != NULL
                   ? ctl_db_query(r->db, AI_STORED_WORKSPACE_SQL, 2, params, &res)
                   : ctl_db_query(r->db, AI_STORED_DEFAULT_SQL, 1, &params[1], &res)) != RB_OK) {
        ctl_error_db(r, err);
        return -1;
    }
    if (PQntuples(res) == 0 && ws_id != NULL && !p->has_mode) {
        PQclear(res);
        ctl_error(r, 400, "invalid_request",
                  "mode is required: the workspace has no AI config of its own yet (it uses its "
                  "owner's default)",
                  NULL);
        return -1;
    }
    if (PQntuples(res) == 1) {
        if (!p->has_mode)
            snprintf(p->mode, sizeof(p->mode), "%s", PQgetvalue(res, 0, 0));
        if (p->has_provider && strcmp(p->provider, PQgetvalue(res, 0, 1)) != 0)
            stored_key = 0; /* another provider: the stored key goes */
        else
            stored_key = PQgetvalue(res, 0, 3)[0] == 't';
        if (!p->has_provider)
            snprintf(p->provider, sizeof(p->provider), "%s", PQgetvalue(res, 0, 1));
        if (!p->has_model)
            snprintf(p->model, sizeof(p->model), "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    if (p->mode[0] == '\0')
        snprintf(p->mode, sizeof(p->mode), "managed");
    if (p->has_key && strcmp(p->mode, "byok") != 0) {
        ctl_error(r, 400, "invalid_request", "api_key is only accepted with mode \"byok\"", NULL);
        return -1;
    }
    if (p->has_key && p->provider[0] == '\0') { /* the gateway sends a key to its provider only */
        ctl_error(r, 400, "invalid_request", "api_key needs the provider it is for", NULL);
        return -1;
    }
    if (strcmp(p->mode, "byok") == 0 && p->provider[0] != '\0' && p->model[0] != '\0' &&
        (m = cfg_model_find(r->app->cfg, p->model)) != NULL &&
        strcmp(m->provider->name, p->provider) != 0) { /* the key would never be used */
        ctl_error(r, 400, "model_provider_mismatch",
                  "model is served by another provider than the one whose key is used", NULL);
        return -1;
    }
    p->key_action = p->has_key                                                    ? "set"
                    : !p->clear_key && stored_key && strcmp(p->mode, "byok") == 0 ? "keep"
                                                                                  : "clear";
    return 0;
}

/* Encrypts p->key under the master key into the hex fields. */
static int seal_key(ctl_req_t *r, ai_put_t *p)
{
    uint8_t ct[CTL_PROVIDER_KEY_MAX], nonce[RB_AES_NONCE_LEN], tag[RB_AES_TAG_LEN];
    size_t len = strlen(p->key);

    if (!r->app->has_master_key) {
        ctl_error(r, 503, "master_key_missing",
                  "BYOK needs a master key (secrets.master_key_file or RIGBOX_MASTER_KEY)", NULL);
        return -1;
    }
    if (rb_aes_gcm_seal(r->app->master_key, p->key, len, ct, nonce, tag) != RB_OK) {
        ctl_error(r, 500, "internal", "internal error", NULL);
        return -1;
    }
    rb_hex(ct, len, p->ct_hex, sizeof(p->ct_hex));
    rb_hex(nonce, sizeof(nonce), p->nonce_hex, sizeof(p->nonce_hex));
    rb_hex(tag, sizeof(tag), p->tag_hex, sizeof(p->tag_hex));
    return 0;
}

/* Merges the body into the AI config of ws_id (NULL: user_id's default), then replies the config
 * in effect. */
static void ai_put(ctl_req_t *r, const char *ws_id, const char *user_id)
{
    static const ai_names_t names = {"mode", "provider", "model", "api_key"},
                            default_names = {"default_mode", "default_provider", "default_model",
                                             "default_api_key"};
    ai_put_t p = {0};
    rb_err_t err;
    int hosted = ws_id == NULL && (rb_json_find(r->body, 0, "default_mode") >= 0 ||
                                   rb_json_find(r->body, 0, "default_provider") >= 0 ||
                                   rb_json_find(r->body, 0, "default_model") >= 0 ||
                                   rb_json_find(r->body, 0, "default_api_key") >= 0);
    const char *params[10] = {ws_id, user_id, p.mode, NULL, NULL, NULL, NULL, NULL, NULL, NULL};

    if (parse_ai_put(r, hosted ? &default_names : &names, &p) != 0)
        goto Exit;
    if (p.clear_all) {
        err = ws_id != NULL ? ctl_db_query(r->db, "DELETE FROM ai_configs WHERE workspace_id = $1",
                                           1, params, NULL)
                            : ctl_db_query(r->db,
                                           "DELETE FROM ai_configs WHERE user_id = $1 AND scope = "
                                           "'user_default'",
                                           1, &params[1], NULL);
        goto Done;
    }
    if ((err = ctl_db_begin(r->db)) != RB_OK) {
        ctl_error_db(r, err);
        goto Exit;
    }
    if (ai_merge(r, ws_id, user_id, &p) != 0 || (p.has_key && seal_key(r, &p) != 0)) {
        ctl_db_end(r->db, 0);
        goto Exit;
    }
    params[3] = p.provider[0] != '\0' ? p.provider : NULL;
    params[4] = p.model[0] != '\0' ? p.model : NULL;
    params[5] = p.has_key ? p.ct_hex : NULL;
    params[6] = p.has_key ? p.nonce_hex : NULL;
    params[7] = p.has_key ? p.tag_hex : NULL;
    params[8] = p.has_key ? r->app->master_key_id : NULL;
    params[9] = p.key_action;
    /* the conflict target is the workspace's row, or the user's one default row */
    err = ctl_db_query(r->db,
                       ws_id != NULL
                           ? AI_UPSERT("'workspace'", "(workspace_id)")
                           : AI_UPSERT("'user_default'", "(user_id) WHERE scope = 'user_default'"),
                       10, params, NULL);
    if (err != RB_OK)
        ctl_db_end(r->db, 0);
    else
        err = ctl_db_end(r->db, 1);
Done:
    if (err != RB_OK) {
        ctl_error_db(r, err);
        goto Exit;
    }
    ctl_db_exec(r->db, "NOTIFY rigbox_identity, 'ai_config'");
    reply_effective(r, ws_id, user_id);
Exit:
    explicit_bzero(p.key, sizeof(p.key));
}

void ctl_workspaces_ai_put(ctl_req_t *r)
{
    char user_id[CTL_PARAM_LEN_MAX];

    if (ws_owner(r, 1, user_id, sizeof(user_id)) == 0)
        ai_put(r, r->params[0], user_id);
}

void ctl_workspaces_ai_defaults_get(ctl_req_t *r)
{
    char user_id[CTL_PARAM_LEN_MAX];

    if (defaults_user(r, user_id, sizeof(user_id)) == 0)
        reply_effective(r, NULL, user_id);
}

void ctl_workspaces_ai_defaults_put(ctl_req_t *r)
{
    char user_id[CTL_PARAM_LEN_MAX];

    if (defaults_user(r, user_id, sizeof(user_id)) == 0)
        ai_put(r, NULL, user_id);
}
