#include "control/lifecycle.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/http.h"
#include "common/log.h"
#include "control/limits.h"
#include "control/states.h"
#include "control/supervisor.h"
#include "control/templates.h"
#include "control/workspaces.h"

/* ---- actions ---- */

/* 402 plan_limit when starting this workspace would pass the owner's running vCPU or RAM cap. */
static int check_running_limits(ctl_req_t *r, PGresult *ws)
{
    const char *params[2] = {PQgetvalue(ws, 0, CTL_WS_COL_USER), PQgetvalue(ws, 0, CTL_WS_COL_ID)};
    PGresult *res = NULL;
    ctl_limits_t lim;
    int64_t vcpus, ram;
    char msg[160] = "";

    if (ctl_limits_effective(r->db, r->app->cfg, params[0], &lim) != RB_OK ||
        ctl_db_query(r->db,
                     "SELECT coalesce(sum(vcpu_count), 0), coalesce(sum(ram_mb), 0) FROM "
                     "workspaces WHERE user_id = $1 AND id <> $2 AND status IN ('starting', "
                     "'running', 'stopping')",
                     2, params, &res) != RB_OK) {
        ctl_error_db(r, RB_ERR_DB);
        return -1;
    }
    vcpus = strtoll(PQgetvalue(res, 0, 0), NULL, 10) +
            strtoll(PQgetvalue(ws, 0, CTL_WS_COL_VCPU), NULL, 10);
    ram = strtoll(PQgetvalue(res, 0, 1), NULL, 10) +
          strtoll(PQgetvalue(ws, 0, CTL_WS_COL_RAM), NULL, 10);
    PQclear(res);
    if (vcpus > lim.max_running_vcpus)
        snprintf(msg, sizeof(msg), "the limit is %lld running vCPUs",
                 (long long)lim.max_running_vcpus);
    else if (ram > lim.max_ram_total_mb)
        snprintf(msg, sizeof(msg), "the limit is %lld MB of running RAM",
                 (long long)lim.max_ram_total_mb);
    if (msg[0] != '\0') {
        ctl_error(r, 402, "plan_limit", msg, NULL);
        return -1;
    }
    return 0;
}

/* Moves the workspace from its current state by ev in PostgreSQL and hands the slow part to the
 * supervisor. Returns the updated row (owned), or NULL after sending the error. */
static PGresult *transition(ctl_req_t *r, ctl_ws_event_t ev)
{
    PGresult *ws = ctl_workspaces_load(r), *res = NULL, *out = NULL;
    ctl_ws_state_t from, to;
    char sql[1536], msg[160];
    const char *params[4];
    int locked = 0; /* in the owner's plan lock (ctl_limits_lock) */
    int parsed;

    if (ws == NULL)
        return NULL;
    RB_ASSERT(r->app->sup != NULL);
    parsed = ctl_state_parse(PQgetvalue(ws, 0, CTL_WS_COL_STATUS), &from) == 0;
    if (parsed && from == CTL_WS_DELETING && ev == CTL_EV_DELETE) {
        out = ws; /* a delete sent again (a client retrying): accepted, as before */
        ws = NULL;
        goto Exit;
    }
    if (!parsed ||
        ctl_state_next(from, ev, PQgetvalue(ws, 0, CTL_WS_COL_FRETRY)[0] == 't', &to) != 0) {
        snprintf(msg, sizeof(msg), "cannot %s a workspace that is %s%s", ctl_event_name(ev),
                 PQgetvalue(ws, 0, CTL_WS_COL_STATUS),
                 ev == CTL_EV_RETRY && from == CTL_WS_FAILED ? " with a non-retryable failure"
                                                             : "");
        ctl_error(r, 409, "invalid_state", msg, NULL);
        goto Exit;
    }
    if (ev == CTL_EV_START || ev == CTL_EV_RETRY) {
        if (ctl_limits_lock(r->db, PQgetvalue(ws, 0, CTL_WS_COL_USER)) != RB_OK) {
            ctl_error_db(r, RB_ERR_DB);
            goto Exit;
        }
        locked = 1;
        if (check_running_limits(r, ws) != 0)
            goto Exit;
    }
    params[0] = PQgetvalue(ws, 0, CTL_WS_COL_ID);
    params[1] = ctl_state_name(from);
    params[2] = ctl_state_name(to);
    params[3] = ctl_supervisor_node(r->app->sup);
    snprintf(sql, sizeof(sql),
             "UPDATE workspaces SET status = $3, node_id = CASE WHEN $3 IN ('starting', "
             "'running', 'stopping') THEN $4 ELSE node_id END WHERE id = $1 AND status = $2 "
             "RETURNING %s",
             ctl_workspaces_cols);
    if (ctl_db_query(r->db, sql, 4, params, &res) != RB_OK) {
        ctl_error_db(r, RB_ERR_DB);
        goto Exit;
    }
    if (PQntuples(res) != 1) {
        ctl_error(r, 409, "invalid_state", "the workspace changed state meanwhile; try again",
                  NULL);
        goto Exit;
    }
    if (locked) {
        locked = 0;
        if (ctl_db_end(r->db, 1) != RB_OK) {
            ctl_error_db(r, RB_ERR_DB);
            goto Exit;
        }
    }
    if (ctl_supervisor_submit(r->app->sup, params[0], ev) != RB_OK) {
        const char *back[3] = {params[0], params[2], params[1]};
        ctl_db_query(r->db, "UPDATE workspaces SET status = $3 WHERE id = $1 AND status = $2", 3,
                     back, NULL);
        ctl_error(r, 503, "busy", "too many workspace operations are queued; try again", NULL);
        goto Exit;
    }
    out = res;
    res = NULL;
Exit:
    if (locked)
        ctl_db_end(r->db, 0);
    PQclear(res);
    PQclear(ws);
    return out;
}

static void act(ctl_req_t *r, ctl_ws_event_t ev)
{
    PGresult *res;

    if (ctl_reject_unknown(r, NULL, 0) != 0) /* the actions take no fields */
        return;
    res = transition(r, ev);
    if (res != NULL)
        ctl_workspaces_reply(r, ev == CTL_EV_DELETE ? 202 : 200, res);
    PQclear(res);
}

void ctl_lifecycle_start(ctl_req_t *r)
{
    act(r, CTL_EV_START);
}

void ctl_lifecycle_stop(ctl_req_t *r)
{
    act(r, CTL_EV_STOP);
}

void ctl_lifecycle_restart(ctl_req_t *r)
{
    act(r, CTL_EV_RESTART);
}

void ctl_lifecycle_cancel(ctl_req_t *r)
{
    act(r, CTL_EV_CANCEL);
}

void ctl_lifecycle_retry(ctl_req_t *r)
{
    act(r, CTL_EV_RETRY);
}

void ctl_lifecycle_delete(ctl_req_t *r)
{
    act(r, CTL_EV_DELETE);
}

void ctl_lifecycle_quick_deploy(ctl_req_t *r)
{
    PGresult *created = ctl_workspaces_insert(r, 1), *started = NULL;
    const cfg_template_t *t;
    rb_buf_t b;
    rb_jw_t w;

    if (created == NULL)
        return;
    snprintf(r->params[0], sizeof(r->params[0]), "%s", PQgetvalue(created, 0, CTL_WS_COL_ID));
    t = cfg_template_find(r->app->cfg, PQgetvalue(created, 0, CTL_WS_COL_TEMPLATE));
    PQclear(created);
    if ((started = transition(r, CTL_EV_START)) == NULL) {
        /* refused (the answer is sent): the workspace made for it goes too, never started */
        const char *params[1] = {r->params[0]};
        ctl_db_query(r->db, "DELETE FROM workspaces WHERE id = $1 AND status = 'provisioned'", 1,
                     params, NULL);
        return;
    }
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "workspace");
    ctl_workspaces_write(&w, r, started, 0);
    rb_jw_key(&w, "expected_apps");
    if (t != NULL)
        ctl_templates_write_apps(&w, t);
    else
        rb_jw_raw(&w, "[]", 2);
    rb_jw_obj_end(&w);
    ctl_reply(r, 201, &b);
    rb_buf_free(&b);
    PQclear(started);
}

/* Reads an optional integer field in [min, max]; -1 (400 sent) when malformed. */
static int opt_range(ctl_req_t *r, const char *key, int64_t min, int64_t max, int64_t *out)
{
    int v = rb_json_member(r->body, 0, key);
    char msg[128];
    if (v < 0 || rb_json_type(r->body, v) == RB_JSON_NULL)
        return 0;
    if (rb_json_int64(r->body, v, out) != 0 || *out < min || *out > max) {
        snprintf(msg, sizeof(msg), "%s must be an integer from %lld to %lld", key, (long long)min,
                 (long long)max);
        ctl_error(r, 400, "invalid_request", msg, NULL);
        return -1;
    }
    return 0;
}

static const char *const resources_fields[] = {"ram_mb", "vcpu_count", "disk_size_mb"};
static const char *const env_fields[] = {"env_vars"};

void ctl_lifecycle_resources(ctl_req_t *r)
{
    PGresult *ws = ctl_workspaces_load_mutable(r), *res = NULL;
    const cfg_template_t *t;
    int64_t ram, vcpu, disk, old_disk;
    char sram[24], svcpu[24], sdisk[24], sql[1280];
    const char *params[4] = {r->params[0], sram, svcpu, sdisk};
    int locked = 0; /* in the owner's plan lock (ctl_limits_lock) */

    if (ws == NULL || CTL_REJECT_UNKNOWN(r, resources_fields) != 0)
        goto Exit;
    if (strcmp(PQgetvalue(ws, 0, CTL_WS_COL_STATUS), "stopped") != 0 &&
        strcmp(PQgetvalue(ws, 0, CTL_WS_COL_STATUS), "provisioned") != 0) {
        ctl_error(r, 409, "invalid_state", "stop the workspace before resizing it", NULL);
        goto Exit;
    }
    t = cfg_template_find(r->app->cfg, PQgetvalue(ws, 0, CTL_WS_COL_TEMPLATE));
    ram = strtoll(PQgetvalue(ws, 0, CTL_WS_COL_RAM), NULL, 10);
    vcpu = strtoll(PQgetvalue(ws, 0, CTL_WS_COL_VCPU), NULL, 10);
    old_disk = disk = strtoll(PQgetvalue(ws, 0, CTL_WS_COL_DISK), NULL, 10);
    if (opt_range(r, "ram_mb", t != NULL ? t->floor_ram_mb : 128, 1048576, &ram) ||
        opt_range(r, "vcpu_count", t != NULL ? t->floor_vcpu : 1, 256, &vcpu) ||
        opt_range(r, "disk_size_mb", old_disk, 16777216, &disk))
        goto Exit;
    {
        const char *uparams[2] = {PQgetvalue(ws, 0, CTL_WS_COL_USER), r->params[0]};
        PGresult *others = NULL;
        ctl_limits_t lim;
        int64_t disk_total;

        if (ctl_limits_lock(r->db, uparams[0]) != RB_OK) {
            ctl_error_db(r, RB_ERR_DB);
            goto Exit;
        }
        locked = 1;
        if (ctl_limits_effective(r->db, r->app->cfg, uparams[0], &lim) != RB_OK ||
            ctl_db_query(r->db,
                         "SELECT coalesce(sum(disk_size_mb), 0) FROM workspaces WHERE user_id = "
                         "$1 AND id <> $2",
                         2, uparams, &others) != RB_OK) {
            ctl_error_db(r, RB_ERR_DB);
            goto Exit;
        }
        disk_total = strtoll(PQgetvalue(others, 0, 0), NULL, 10) + disk;
        PQclear(others);
        if (ram > lim.max_ram_per_vm_mb || vcpu > lim.max_vcpu_per_vm ||
            disk_total > lim.max_disk_total_mb) {
            ctl_error(r, 402, "plan_limit", "the limits do not allow a workspace this large", NULL);
            goto Exit;
        }
    }
    snprintf(sram, sizeof(sram), "%lld", (long long)ram);
    snprintf(svcpu, sizeof(svcpu), "%lld", (long long)vcpu);
    snprintf(sdisk, sizeof(sdisk), "%lld", (long long)disk);
    snprintf(sql, sizeof(sql),
             "UPDATE workspaces SET ram_mb = $2::int, vcpu_count = $3::int, disk_size_mb = $4::int "
             "WHERE id = $1 AND status IN ('stopped', 'provisioned') RETURNING %s",
             ctl_workspaces_cols);
    if (ctl_db_query(r->db, sql, 4, params, &res) != RB_OK || PQntuples(res) != 1) {
        ctl_error(r, 409, "invalid_state", "the workspace changed state meanwhile", NULL);
        goto Exit;
    }
    locked = 0;
    if (ctl_db_end(r->db, 1) != RB_OK) {
        ctl_error_db(r, RB_ERR_DB);
        goto Exit;
    }
    ctl_workspaces_reply(r, 200, res);
Exit:
    if (locked)
        ctl_db_end(r->db, 0);
    PQclear(res);
    PQclear(ws);
}

void ctl_lifecycle_env(ctl_req_t *r)
{
    PGresult *ws = ctl_workspaces_load_mutable(r), *res = NULL;
    int env = rb_json_member(r->body, 0, "env_vars");
    const char *raw;
    size_t len;
    char *json = NULL, max[16];

    if (ws == NULL || CTL_REJECT_UNKNOWN(r, env_fields) != 0)
        goto Exit;
    if (env < 0) {
        ctl_error(r, 400, "invalid_request", "env_vars must be an object", NULL);
        goto Exit;
    }
    if (ctl_workspaces_env_check(r, env, 1) != 0)
        goto Exit;
    raw = rb_json_raw(r->body, env, &len);
    json = rb_strndup(raw, len);
    snprintf(max, sizeof(max), "%d", CTL_ENV_VARS_MAX);
    {
        /* Merge: given keys replace, null values delete (jsonb_strip_nulls); the result is
         * bounded like a new workspace's. */
        const char *params[3] = {r->params[0], json, max};
        rb_err_t err = ctl_db_query(
            r->db,
            "UPDATE workspaces SET env_vars = jsonb_strip_nulls(env_vars || $2::jsonb) "
            "WHERE id = $1 AND (SELECT count(*) FROM jsonb_object_keys(jsonb_strip_nulls("
            "env_vars || $2::jsonb))) <= $3::int RETURNING id",
            3, params, &res);
        if (err != RB_OK && err != RB_ERR_INVAL) {
            ctl_error_db(r, err);
            goto Exit;
        }
        if (err == RB_ERR_INVAL || PQntuples(res) == 0) {
            ctl_error(r, 400, "invalid_request",
                      "the environment would hold more than 128 variables or 65536 bytes", NULL);
            goto Exit;
        }
    }
    {
        rb_buf_t b;
        rb_buf_init(&b, 0);
        rb_buf_puts(&b, "{\"message\":\"environment updated; it applies at the next start\"}");
        ctl_reply(r, 200, &b);
        rb_buf_free(&b);
    }
Exit:
    free(json);
    PQclear(res);
    PQclear(ws);
}

static void iso_time(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void ctl_lifecycle_metrics(ctl_req_t *r)
{
    PGresult *ws = ctl_workspaces_load(r);
    ctl_vm_sample_t v = {0};
    char dir[PATH_MAX], path[PATH_MAX + 16], ts[32];
    struct stat st;
    rb_buf_t b;
    rb_jw_t w;
    int live;

    if (ws == NULL)
        return;
    live = ctl_supervisor_latest(r->app->sup, r->params[0], &v) == 0;
    if (!live) { /* not running: the disk still has a size */
        v.ram_total_mb = strtoll(PQgetvalue(ws, 0, CTL_WS_COL_RAM), NULL, 10);
        v.disk_total_mb = strtoll(PQgetvalue(ws, 0, CTL_WS_COL_DISK), NULL, 10);
        ctl_supervisor_vm_dir(r->app->sup, r->params[0], dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/disk.qcow2", dir);
        if (stat(path, &st) == 0)
            v.disk_used_mb = ((int64_t)st.st_blocks * 512 + (1 << 20) - 1) >> 20;
    }
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "status", PQgetvalue(ws, 0, CTL_WS_COL_STATUS));
    rb_jw_key(&w, "cpu_percent");
    rb_jw_double(&w, v.cpu_percent);
    rb_jw_kint64(&w, "ram_used_mb", v.ram_used_mb);
    rb_jw_kint64(&w, "ram_total_mb", v.ram_total_mb);
    rb_jw_kint64(&w, "disk_used_mb", v.disk_used_mb);
    rb_jw_kint64(&w, "disk_total_mb", v.disk_total_mb);
    rb_jw_key(&w, "updated_at");
    if (live) {
        iso_time(v.t, ts, sizeof(ts));
        rb_jw_str(&w, ts);
    } else {
        rb_jw_null(&w);
    }
    rb_jw_obj_end(&w);
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
    PQclear(ws);
}

void ctl_lifecycle_series(ctl_req_t *r)
{
    static const struct {
        const char *name;
        int64_t seconds;
    } ranges[] = {{"1h", 3600}, {"6h", 21600}, {"24h", 86400}, {"7d", 604800}};
    PGresult *ws = ctl_workspaces_load(r);
    char range[8] = "1h", ts[32];
    int64_t seconds = 0;
    ctl_vm_sample_t *pts;
    size_t n;
    rb_buf_t b;
    rb_jw_t w;

    if (ws == NULL)
        return;
    PQclear(ws);
    if (rb_http_query(r->req, "range", range, sizeof(range)) < 0)
        range[0] = '\0';
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
        if (strcmp(range, ranges[i].name) == 0)
            seconds = ranges[i].seconds;
    if (seconds == 0) {
        ctl_error(r, 400, "invalid_request", "range must be 1h, 6h, 24h or 7d", NULL);
        return;
    }
    pts = rb_calloc(CTL_SERIES_MAX, sizeof(*pts));
    n = ctl_supervisor_series(r->app->sup, r->params[0], seconds, pts, CTL_SERIES_MAX);
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_kstr(&w, "range", range);
    rb_jw_key(&w, "points");
    rb_jw_arr_begin(&w);
    for (size_t i = 0; i < n; i++) {
        iso_time(pts[i].t, ts, sizeof(ts));
        rb_jw_obj_begin(&w);
        rb_jw_kstr(&w, "t", ts);
        rb_jw_key(&w, "cpu_percent");
        rb_jw_double(&w, pts[i].cpu_percent);
        rb_jw_kint64(&w, "ram_used_mb", pts[i].ram_used_mb);
        rb_jw_kint64(&w, "disk_used_mb", pts[i].disk_used_mb);
        rb_jw_obj_end(&w);
    }
    rb_jw_arr_end(&w);
    rb_jw_obj_end(&w);
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
    free(pts);
}

void ctl_lifecycle_capacity(ctl_req_t *r)
{
    const char *params[1] = {ctl_supervisor_node(r->app->sup)};
    PGresult *res = NULL;
    int64_t used, total = r->app->cfg->vmm.vms_max;
    rb_buf_t b;
    rb_err_t err;

    if ((err = ctl_db_query(r->db,
                            "SELECT count(*) FROM workspaces WHERE node_id = $1 AND status IN "
                            "('starting', 'running', 'stopping')",
                            1, params, &res)) != RB_OK) {
        ctl_error_db(r, err); /* not a made-up "used": 0 */
        return;
    }
    used = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    rb_buf_init(&b, 0);
    rb_buf_printf(&b, "{\"available\":%s,\"total\":%lld,\"used\":%lld}",
                  used < total ? "true" : "false", (long long)total, (long long)used);
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
}

/* Reads up to max bytes of path from *offset (or its last max bytes when *offset < 0) into out, and
 * advances *offset past the last complete line. max bytes without a newline are taken whole, as a
 * line cut there, so a longer line cannot stop the reader. A file shorter than *offset was
 * rotated: restart. */
static void read_log(const char *path, int64_t *offset, size_t max, rb_buf_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    ssize_t n;
    char *nl;

    if (fd < 0)
        return;
    if (fstat(fd, &st) != 0)
        goto Exit;
    if (*offset < 0)
        *offset = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
    if (*offset > st.st_size)
        *offset = 0;
    out->len = 0;
    if (rb_buf_append(out, "", 0) != 0)
        goto Exit;
    {
        size_t want = (size_t)(st.st_size - *offset);
        if (want > max)
            want = max;
        char *tmp = rb_malloc(want + 1);
        n = pread(fd, tmp, want, *offset);
        if (n > 0)
            rb_buf_append(out, tmp, (size_t)n);
        free(tmp);
    }
    /* complete lines only, or max bytes of one */
    nl = out->len > 0 ? memrchr(out->base, '\n', out->len) : NULL;
    if (nl != NULL)
        out->len = (size_t)(nl - out->base) + 1;
    else if (out->len < max)
        out->len = 0;
    *offset += (int64_t)out->len;
Exit:
    close(fd);
}

/* Calls fn for each line of buf (without its \r\n) that matches the app filter ("" = all). */
static void each_line(const rb_buf_t *buf, const char *app,
                      void (*fn)(void *ctx, const char *line, size_t len), void *ctx)
{
    char prefix[96];
    size_t plen = app[0] != '\0' ? (size_t)snprintf(prefix, sizeof(prefix), "[app:%s] ", app) : 0;
    const char *p = buf->base, *end = buf->base + buf->len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl != NULL ? nl : end) - p);
        while (len > 0 && (p[len - 1] == '\r'))
            len--;
        if (plen == 0 || (len >= plen && memcmp(p, prefix, plen) == 0))
            fn(ctx, p, len);
        p = nl != NULL ? nl + 1 : end;
    }
}

typedef struct st_lines_t {
    const char *items[CTL_LOG_LINES_DEFAULT * 50];
    size_t lens[CTL_LOG_LINES_DEFAULT * 50];
    size_t n, cap, head; /* a ring of the newest cap lines; the oldest at head once full */
    int first;           /* keep the first cap lines instead (paging forward from a cursor) */
    int more;            /* ... and more lines matched after them */
} lines_t;

static void collect(void *ctx, const char *line, size_t len)
{
    lines_t *l = ctx;
    size_t at = (l->head + l->n) % l->cap;

    if (l->first && l->n == l->cap) {
        l->more = 1;
        return;
    }
    if (l->n == l->cap) /* keep the newest: the oldest is overwritten */
        l->head = (l->head + 1) % l->cap;
    else
        l->n++;
    l->items[at] = line;
    l->lens[at] = len;
}

/* Query parameter name as a count (decimal digits only, in int64 range) into *out: 1, 0 when
 * absent (*out untouched), -1 when malformed. */
static int query_count(ctl_req_t *r, const char *name, int64_t *out)
{
    char arg[32], *end;
    int got = rb_http_query(r->req, name, arg, sizeof(arg));
    int64_t n;

    if (got <= 0)
        return got; /* absent, or too long for any count */
    errno = 0;
    n = strtoll(arg, &end, 10);
    if (!isdigit((unsigned char)arg[0]) || *end != '\0' || errno == ERANGE)
        return -1;
    *out = n;
    return 1;
}

void ctl_lifecycle_logs(ctl_req_t *r)
{
    PGresult *ws = ctl_workspaces_load(r);
    char dir[PATH_MAX], path[PATH_MAX + 16], app[64] = "", cursor[32];
    int64_t offset = -1, lines = CTL_LOG_LINES_DEFAULT;
    int got;
    lines_t *l;
    rb_buf_t data, b;
    rb_jw_t w;

    if (ws == NULL)
        return;
    PQclear(ws);
    if ((got = query_count(r, "lines", &lines)) < 0 ||
        (got == 1 && (lines < 1 || lines > r->app->cfg->control.logs_lines_max ||
                      lines > CTL_LOG_LINES_DEFAULT * 50))) {
        ctl_error(r, 400, "invalid_request", "lines must be a positive integer within the limit",
                  NULL);
        return;
    }
    if (query_count(r, "cursor", &offset) < 0) {
        ctl_error(r, 400, "invalid_request", "cursor is not one this API returned", NULL);
        return;
    }
    rb_http_query(r->req, "app", app, sizeof(app));
    ctl_supervisor_vm_dir(r->app->sup, r->params[0], dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/console.log", dir);
    rb_buf_init(&data, 0);
    l = rb_calloc(1, sizeof(*l));
    l->cap = (size_t)lines;
    l->first = offset >= 0; /* no cursor: the newest lines; a cursor: the next ones after it */
    read_log(path, &offset, CTL_LOG_READ_MAX, &data);
    each_line(&data, app, collect, l);
    if (l->more) { /* the cursor goes right after the last line given, not to the chunk's end */
        const char *last =
            l->items[(l->head + l->n - 1) % l->cap] + l->lens[(l->head + l->n - 1) % l->cap];
        const char *nl = memchr(last, '\n', (size_t)(data.base + data.len - last));
        offset -= (int64_t)(data.base + data.len - (nl + 1));
    }
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "lines");
    rb_jw_arr_begin(&w);
    for (size_t i = 0; i < l->n; i++)
        rb_jw_strn(&w, l->items[(l->head + i) % l->cap], l->lens[(l->head + i) % l->cap]);
    rb_jw_arr_end(&w);
    rb_jw_key(&w, "next_cursor");
    snprintf(cursor, sizeof(cursor), "%lld", (long long)(offset < 0 ? 0 : offset));
    rb_jw_str(&w, cursor);
    rb_jw_obj_end(&w);
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
    rb_buf_free(&data);
    free(l);
}

/* ---- GET /workspaces/{id}/logs/stream: SSE ---- */

enum {
    KEEPALIVE_POLLS = 30, /* a comment every 15 s of silence */
    ROW_CHECK_POLLS = 10, /* a stream with no log file yet asks for its workspace's row every 5 s */
};

typedef struct st_log_stream_t {
    h2o_generator_t super;
    h2o_req_t *req;
    h2o_timeout_t *timeout;
    h2o_timeout_entry_t te;
    char path[PATH_MAX];
    int64_t offset;
    int idle_polls;
    int had_log;  /* console.log existed at some poll: its going away means the VM was deleted */
    ctl_db_t *db; /* the worker's: asks whether a workspace that never booted still exists */
    char ws_id[CTL_PARAM_LEN_MAX];
    int done;      /* the client went away */
    rb_buf_t data; /* bytes read from the log */
    rb_buf_t out;  /* the SSE being sent: owned by h2o until proceed */
} log_stream_t;

/* One event per log line. An SSE line also ends at \r, so each piece of a line the guest broke
 * with \r (a progress bar) is a data line of the same event (the client joins them with \n). */
static void add_event(void *ctx, const char *line, size_t len)
{
    rb_buf_t *out = ctx;
    const char *end = line + len;

    do {
        const char *cr = memchr(line, '\r', (size_t)(end - line));
        const char *stop = cr != NULL ? cr : end;
        rb_buf_puts(out, "data: ");
        rb_buf_append(out, line, (size_t)(stop - line));
        rb_buf_puts(out, "\n");
        line = cr != NULL ? cr + 1 : end;
    } while (line < end);
    rb_buf_puts(out, "\n");
}

/* 0 when the stream's workspace is gone from the database (asked every ROW_CHECK_POLLS polls). */
static int stream_ws_exists(log_stream_t *s)
{
    const char *params[1] = {s->ws_id};
    /* when the database does not answer (-1), keep the stream */
    return ctl_db_rows(s->db, "SELECT 1 FROM workspaces WHERE id = $1", 1, params) != 0;
}

/* Sends whatever is new (or a keep-alive comment now and then); then waits for proceed. */
static void stream_poll(log_stream_t *s)
{
    h2o_iovec_t iov;

    s->out.len = 0;
    if (access(s->path, F_OK) == 0) {
        s->had_log = 1;
    } else if (s->had_log ||
               (s->idle_polls % ROW_CHECK_POLLS == ROW_CHECK_POLLS - 1 && !stream_ws_exists(s))) {
        /* deleted with its workspace (files gone, or, never booted, its row): the stream ends */
        rb_buf_puts(&s->out, "event: end\ndata: the workspace was deleted\n\n");
        iov = h2o_iovec_init(s->out.base, s->out.len);
        h2o_send(s->req, &iov, 1, H2O_SEND_STATE_FINAL);
        return;
    }
    read_log(s->path, &s->offset, CTL_STREAM_CHUNK_MAX, &s->data);
    each_line(&s->data, "", add_event, &s->out);
    if (s->out.len == 0) {
        if (++s->idle_polls < KEEPALIVE_POLLS) {
            h2o_timeout_link(s->req->conn->ctx->loop, s->timeout, &s->te);
            return;
        }
        rb_buf_puts(&s->out, ": keep-alive\n\n");
    }
    s->idle_polls = 0;
    iov = h2o_iovec_init(s->out.base, s->out.len);
    h2o_send(s->req, &iov, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void on_stream_timer(h2o_timeout_entry_t *te)
{
    log_stream_t *s = H2O_STRUCT_FROM_MEMBER(log_stream_t, te, te);
    stream_poll(s);
}

static void on_stream_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    log_stream_t *s = (log_stream_t *)g;
    h2o_timeout_link(req->conn->ctx->loop, s->timeout, &s->te);
}

static void on_stream_stop(h2o_generator_t *g, h2o_req_t *req)
{
    log_stream_t *s = (log_stream_t *)g;
    if (h2o_timeout_is_linked(&s->te))
        h2o_timeout_unlink(&s->te);
    s->done = 1;
}

static void on_stream_dispose(void *p)
{
    log_stream_t *s = p;
    if (h2o_timeout_is_linked(&s->te))
        h2o_timeout_unlink(&s->te);
    rb_buf_free(&s->data);
    rb_buf_free(&s->out);
}

void ctl_lifecycle_logs_stream(ctl_req_t *r)
{
    PGresult *ws = ctl_workspaces_load(r);
    log_stream_t *s;
    char dir[PATH_MAX];
    struct stat st;

    if (ws == NULL)
        return;
    PQclear(ws);
    s = h2o_mem_alloc_shared(&r->req->pool, sizeof(*s), on_stream_dispose);
    *s = (log_stream_t){.super = {on_stream_proceed, on_stream_stop},
                        .req = r->req,
                        .timeout = &r->worker->poll_timeout,
                        .db = r->db,
                        .te = {.cb = on_stream_timer}};
    snprintf(s->ws_id, sizeof(s->ws_id), "%s", r->params[0]);
    rb_buf_init(&s->data, CTL_STREAM_CHUNK_MAX + 1);
    rb_buf_init(&s->out, 0);
    ctl_supervisor_vm_dir(r->app->sup, r->params[0], dir, sizeof(dir));
    snprintf(s->path, sizeof(s->path), "%.4000s/console.log", dir);
    /* Start with the recent past (one chunk), then follow. */
    s->had_log = stat(s->path, &st) == 0;
    s->offset =
        s->had_log && st.st_size > CTL_STREAM_CHUNK_MAX ? st.st_size - CTL_STREAM_CHUNK_MAX : 0;
    r->req->res.status = 200;
    r->req->res.reason = "OK";
    h2o_add_header(&r->req->pool, &r->req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream"));
    h2o_add_header(&r->req->pool, &r->req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
    h2o_start_response(r->req, &s->super);
    rb_buf_puts(&s->out, ": rigbox log stream\n\n");
    read_log(s->path, &s->offset, CTL_STREAM_CHUNK_MAX, &s->data);
    each_line(&s->data, "", add_event, &s->out);
    h2o_send(r->req, &(h2o_iovec_t){s->out.base, s->out.len}, 1, H2O_SEND_STATE_IN_PROGRESS);
}
