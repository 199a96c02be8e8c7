#include "control/limits.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/pg.h"
#include "control/credits.h"

/* The numeric limits: user_limits column = JSON name = cfg_plan_t member. */
typedef struct st_limit_field_t {
    const char *name;
    size_t plan_off; /* offsetof(cfg_plan_t, …) */
    size_t out_off;  /* offsetof(ctl_limits_t, …) */
    int plan_is_int; /* the plan member is an int (else int64_t) */
    int64_t max;     /* largest accepted value (the schema's CHECK) */
} limit_field_t;

/* clang-format off */
#define FIELD(n, is_int, max) {#n, offsetof(cfg_plan_t, n), offsetof(ctl_limits_t, n), is_int, max}
/* clang-format on */
static const limit_field_t fields[] = {
    FIELD(max_vms, 1, 1000000),
    FIELD(max_ram_per_vm_mb, 0, 1048576),
    FIELD(max_ram_total_mb, 0, INT64_C(1099511627776)),
    FIELD(max_vcpu_per_vm, 1, 256),
    FIELD(max_running_vcpus, 1, 1000000),
    FIELD(max_disk_total_mb, 0, INT64_C(1099511627776)),
    FIELD(credits_per_day, 0, INT64_C(9000000000000)),
    FIELD(credits_per_month, 0, INT64_C(9000000000000)),
    FIELD(rpm, 1, 1000000000),
    FIELD(tpm, 0, INT64_C(1000000000000)),
    FIELD(max_concurrent, 1, 1000000),
};
#undef FIELD

enum {
    FIELDS_N = sizeof(fields) / sizeof(fields[0]),
    COL_MODELS = 1 + FIELDS_N, /* column of allowed_models (JSON text) in the GET query */
    COL_USAGE = COL_MODELS + 1 /* first usage column */
};

static int64_t plan_value(const cfg_plan_t *plan, const limit_field_t *f)
{
    const char *base = (const char *)plan + f->plan_off;
    return f->plan_is_int ? (int64_t) * (const int *)base : *(const int64_t *)base;
}

/* Effective values from a result whose columns 1..FIELDS_N are the overrides (NULL = plan). */
static void fill_effective(PGresult *res, const cfg_plan_t *plan, ctl_limits_t *out)
{
    for (size_t i = 0; i < FIELDS_N; i++) {
        int64_t *v = (int64_t *)((char *)out + fields[i].out_off);
        *v = PQgetisnull(res, 0, 1 + (int)i) ? plan_value(plan, &fields[i])
                                             : strtoll(PQgetvalue(res, 0, 1 + (int)i), NULL, 10);
        RB_ASSERT(*v >= 0);
    }
}

rb_err_t ctl_limits_lock(ctl_db_t *db, const char *user_id)
{
    const char *params[1] = {user_id};
    rb_err_t err = ctl_db_begin(db);

    /* a transaction-scoped advisory lock: no row lock for the ledger's key checks to meet */
    if (err == RB_OK &&
        (err = ctl_db_query(db,
                            "SELECT pg_advisory_xact_lock(" CTL_LIMITS_LOCK_CLASS ", hashtext($1))",
                            1, params, NULL)) != RB_OK)
        ctl_db_end(db, 0);
    return err;
}

rb_err_t ctl_limits_effective(ctl_db_t *db, const cfg_t *cfg, const char *user_id,
                              ctl_limits_t *out)
{
    const char *params[1] = {user_id};
    const cfg_plan_t *plan;
    PGresult *res = NULL;
    rb_buf_t q;
    rb_err_t err;

    RB_ASSERT(db != NULL && cfg != NULL && user_id != NULL && out != NULL);
    rb_buf_init(&q, 0);
    rb_buf_puts(&q, "SELECT u.plan");
    for (size_t i = 0; i < FIELDS_N; i++)
        rb_buf_printf(&q, ", l.%s", fields[i].name);
    rb_buf_puts(&q, " FROM users u LEFT JOIN user_limits l ON l.user_id = u.id WHERE u.id = $1");
    err = ctl_db_query(db, rb_buf_cstr(&q), 1, params, &res);
    rb_buf_free(&q);
    if (err != RB_OK)
        return err;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return RB_ERR_NOTFOUND;
    }
    if ((plan = cfg_plan_find(cfg, PQgetvalue(res, 0, 0))) == NULL)
        plan = cfg->default_plan;
    fill_effective(res, plan, out);
    PQclear(res);
    return RB_OK;
}

static rb_err_t query_limits(ctl_req_t *r, const char *uid, PGresult **res)
{
    const char *params[1] = {uid};
    rb_buf_t q;
    rb_err_t err;

    rb_buf_init(&q, 0);
    rb_buf_puts(&q, "SELECT u.plan");
    for (size_t i = 0; i < FIELDS_N; i++)
        rb_buf_printf(&q, ", l.%s", fields[i].name);
    rb_buf_puts(
        &q,
        ", array_to_json(l.allowed_models)::text, w.n, w.running, w.ram, w.vcpus, w.disk, e.today, "
        "e.month FROM users u LEFT JOIN user_limits l ON l.user_id = u.id, LATERAL (SELECT "
        "count(*) AS n, count(*) FILTER (WHERE status IN ('starting', 'running', 'stopping')) AS "
        "running, coalesce(sum(ram_mb), 0) AS ram, coalesce(sum(vcpu_count) FILTER (WHERE status "
        "IN ('starting', 'running', 'stopping')), 0) AS vcpus, coalesce(sum(disk_size_mb), 0) AS "
        "disk FROM workspaces WHERE user_id = u.id) w, LATERAL " RB_PG_USAGE_SPEND_SQL
        " e WHERE u.id = $1");
    err = ctl_db_query(r->db, rb_buf_cstr(&q), 1, params, res);
    rb_buf_free(&q);
    return err;
}

static void write_limits(rb_jw_t *w, PGresult *res, const cfg_plan_t *plan)
{
    ctl_limits_t eff;

    fill_effective(res, plan, &eff);
    rb_jw_obj_begin(w);
    for (size_t i = 0; i < FIELDS_N; i++) {
        rb_jw_key(w, fields[i].name);
        rb_jw_int64(w, *(const int64_t *)((const char *)&eff + fields[i].out_off));
    }
    rb_jw_key(w, "allowed_models");
    if (!PQgetisnull(res, 0, COL_MODELS)) {
        rb_jw_raw(w, PQgetvalue(res, 0, COL_MODELS), strlen(PQgetvalue(res, 0, COL_MODELS)));
    } else {
        rb_jw_arr_begin(w);
        for (size_t i = 0; i < plan->allowed_models_len; i++)
            rb_jw_str(w, plan->allowed_models[i]);
        rb_jw_arr_end(w);
    }
    rb_jw_obj_end(w);
}

/* Only the overrides that are set; returns how many. */
static int write_overrides(rb_jw_t *w, PGresult *res)
{
    int n = 0;

    rb_jw_obj_begin(w);
    for (size_t i = 0; i < FIELDS_N; i++) {
        if (PQgetisnull(res, 0, 1 + (int)i))
            continue;
        rb_jw_key(w, fields[i].name);
        rb_jw_int64(w, strtoll(PQgetvalue(res, 0, 1 + (int)i), NULL, 10));
        n++;
    }
    if (!PQgetisnull(res, 0, COL_MODELS)) {
        rb_jw_key(w, "allowed_models");
        rb_jw_raw(w, PQgetvalue(res, 0, COL_MODELS), strlen(PQgetvalue(res, 0, COL_MODELS)));
        n++;
    }
    rb_jw_obj_end(w);
    return n;
}

static void write_usage(rb_jw_t *w, PGresult *res)
{
    static const char *const names[] = {"vms", "running_vms", "ram_mb", "vcpus", "disk_mb"};
    char text[CTL_CREDITS_TEXT_MAX];
    int64_t today = strtoll(PQgetvalue(res, 0, COL_USAGE + 5), NULL, 10);
    int64_t month = strtoll(PQgetvalue(res, 0, COL_USAGE + 6), NULL, 10);

    RB_ASSERT(today >= 0 && today <= month);
    rb_jw_obj_begin(w);
    for (int i = 0; i < 5; i++) {
        rb_jw_key(w, names[i]);
        rb_jw_int64(w, strtoll(PQgetvalue(res, 0, COL_USAGE + i), NULL, 10));
    }
    ctl_credits_format(today, text, sizeof(text));
    rb_jw_kstr(w, "credits_today", text);
    rb_jw_kint64(w, "credits_today_micro", today);
    ctl_credits_format(month, text, sizeof(text));
    rb_jw_kstr(w, "credits_this_month", text);
    rb_jw_kint64(w, "credits_this_month_micro", month);
    rb_jw_obj_end(w);
}

static void reply_limits(ctl_req_t *r, const char *uid)
{
    PGresult *res = NULL;
    const cfg_plan_t *plan;
    rb_buf_t b, ov;
    rb_jw_t w, wo;
    rb_err_t err;
    int custom;

    if ((err = query_limits(r, uid, &res)) != RB_OK) {
        ctl_error_db(r, err);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
        return;
    }
    if ((plan = cfg_plan_find(r->app->cfg, PQgetvalue(res, 0, 0))) == NULL)
        plan = r->app->cfg->default_plan; /* a plan removed from the config */
    rb_buf_init(&ov, 0);
    rb_jw_init(&wo, &ov);
    custom = write_overrides(&wo, res) > 0;
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "user_id", uid);
    rb_jw_kstr(&w, "plan", PQgetvalue(res, 0, 0));
    rb_jw_kbool(&w, "custom", custom);
    rb_jw_key(&w, "limits");
    write_limits(&w, res, plan);
    rb_jw_key(&w, "overrides");
    rb_jw_raw(&w, ov.base, ov.len);
    rb_jw_key(&w, "usage");
    write_usage(&w, res);
    rb_jw_obj_end(&w);
    PQclear(res);
    rb_buf_free(&ov);
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
}

void ctl_limits_get(ctl_req_t *r)
{
    char uid[CTL_PARAM_LEN_MAX];

    if (ctl_resolve_user(r, r->params[0], uid, sizeof(uid)) != 0)
        return;
    reply_limits(r, uid);
}

/* ---- PUT ---- */

typedef struct st_limits_update_t {
    rb_buf_t cols, vals, sets; /* the pieces of the upsert */
    const char *params[CTL_DB_PARAMS_MAX];
    char nums[FIELDS_N][24];
    char *models; /* owned: the validated allowed_models JSON array, or NULL */
    int n;        /* params used */
    unsigned seen;
} limits_update_t;

static int bad_field(ctl_req_t *r, const char *name, const char *what)
{
    char msg[192];
    snprintf(msg, sizeof(msg), "%s: %s", name, what);
    ctl_error(r, 400, "invalid_request", msg, NULL);
    return -1;
}

/* Adds col = $n to the upsert; models: the value is a JSON array turned into text[]. */
static void add_column(limits_update_t *u, const char *col, int models, const char *v)
{
    RB_ASSERT(u->n < CTL_DB_PARAMS_MAX);
    u->params[u->n++] = v;
    rb_buf_printf(&u->cols, ", %s", col);
    if (models)
        rb_buf_printf(&u->vals,
                      ", CASE WHEN $%d::jsonb IS NULL THEN NULL ELSE ARRAY(SELECT "
                      "jsonb_array_elements_text($%d::jsonb)) END",
                      u->n, u->n);
    else
        rb_buf_printf(&u->vals, ", $%d", u->n);
    rb_buf_printf(&u->sets, "%s%s = EXCLUDED.%s", u->sets.len > 0 ? ", " : "", col, col);
}

/* allowed_models: null, or an array of at most CFG_ALLOWED_MODELS_MAX configured models, stored
 * by their public names (the gateway compares those: an alias or a typo would allow nothing). */
static int take_models(ctl_req_t *r, limits_update_t *u, int v)
{
    size_t n = rb_json_count(r->body, v);
    char name[CTL_MODEL_NAME_MAX + 1];
    rb_buf_t b;
    rb_jw_t w;

    if (rb_json_type(r->body, v) != RB_JSON_NULL) {
        if (rb_json_type(r->body, v) != RB_JSON_ARRAY || n > CFG_ALLOWED_MODELS_MAX)
            return bad_field(r, "allowed_models", "must be null or an array of model names");
        rb_buf_init(&b, 0);
        rb_jw_init(&w, &b);
        rb_jw_arr_begin(&w);
        for (size_t i = 0; i < n; i++) {
            int e = rb_json_index(r->body, v, i);
            size_t nlen = 0;
            const cfg_model_t *m = NULL;
            if (rb_json_str(r->body, e, name, sizeof(name), &nlen) != RB_OK || nlen == 0 ||
                strlen(name) != nlen || (m = cfg_model_find(r->app->cfg, name)) == NULL) {
                rb_buf_free(&b);
                return bad_field(r, "allowed_models", "each entry is a configured model");
            }
            rb_jw_str(&w, m->name);
        }
        rb_jw_arr_end(&w);
        u->models = rb_strdup(rb_buf_cstr(&b));
        rb_buf_free(&b);
    }
    add_column(u, "allowed_models", 1, u->models);
    return 0;
}

static int take_field(ctl_req_t *r, limits_update_t *u, const char *name, int v)
{
    size_t i;
    int64_t x;
    char what[96];

    if (strcmp(name, "allowed_models") == 0)
        i = FIELDS_N;
    else
        for (i = 0; i < FIELDS_N && strcmp(name, fields[i].name) != 0; i++)
            ;
    if (i == FIELDS_N && strcmp(name, "allowed_models") != 0)
        return bad_field(r, name, "unknown field");
    if (u->seen & (1u << i))
        return bad_field(r, name, "given twice");
    u->seen |= 1u << i;
    if (i == FIELDS_N)
        return take_models(r, u, v);
    if (rb_json_type(r->body, v) == RB_JSON_NULL) {
        add_column(u, fields[i].name, 0, NULL);
        return 0;
    }
    if (rb_json_int64(r->body, v, &x) != 0 || x < 0 || x > fields[i].max) {
        snprintf(what, sizeof(what), "must be null or an integer from 0 to %" PRId64,
                 fields[i].max);
        return bad_field(r, name, what);
    }
    snprintf(u->nums[i], sizeof(u->nums[i]), "%" PRId64, x);
    add_column(u, fields[i].name, 0, u->nums[i]);
    return 0;
}

void ctl_limits_put(ctl_req_t *r)
{
    char uid[CTL_PARAM_LEN_MAX], name[64];
    limits_update_t u = {.n = 1};
    int k = -1, v = -1;
    rb_buf_t q;
    rb_err_t err = RB_OK;

    if (!r->auth.admin) {
        ctl_error(r, 403, "forbidden", "changing limits needs an admin key", NULL);
        return;
    }
    if (ctl_resolve_user(r, r->params[0], uid, sizeof(uid)) != 0)
        return;
    u.params[0] = uid;
    rb_buf_init(&u.cols, 0);
    rb_buf_init(&u.vals, 0);
    rb_buf_init(&u.sets, 0);
    rb_buf_init(&q, 0);
    while (rb_json_next(r->body, 0, &k, &v)) {
        if (rb_json_str(r->body, k, name, sizeof(name), NULL) != RB_OK) {
            bad_field(r, "(key)", "unknown field");
            goto Exit;
        }
        if (take_field(r, &u, name, v) != 0)
            goto Exit;
    }
    if (u.n > 1) {
        rb_buf_printf(&q,
                      "INSERT INTO user_limits (user_id%s) VALUES ($1%s) ON CONFLICT (user_id) "
                      "DO UPDATE SET %s",
                      rb_buf_cstr(&u.cols), rb_buf_cstr(&u.vals), rb_buf_cstr(&u.sets));
        err = ctl_db_query(r->db, rb_buf_cstr(&q), u.n, u.params, NULL);
    }
    if (err == RB_OK)
        reply_limits(r, uid);
    else if (strcmp(r->db->sqlstate, "23503") == 0)
        ctl_error(r, 404, "user_not_found", "no such user", NULL);
    else
        ctl_error_db(r, err);
Exit:
    free(u.models);
    rb_buf_free(&q);
    rb_buf_free(&u.sets);
    rb_buf_free(&u.vals);
    rb_buf_free(&u.cols);
}
