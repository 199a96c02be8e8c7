#include "control/supervisor.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/json.h"
#include "common/log.h"
#include "control/db.h"
#include "control/workspaces.h"
#include "vmm/host.h"
#include "vmm/vm.h"

enum {
    CTL_SUP_DIR_MAX = 256,
    ERR_LEN = 512,
    ENV_MAX = VMM_GUESTCFG_ENV_MAX,
    APPS_MAX = VMM_GUESTCFG_APPS_MAX,
    NODE_LEASE_S = 30
};

typedef struct st_job_t {
    char ws_id[CTL_SUP_ID_MAX];
    ctl_ws_event_t action;
} job_t;

/* A ring of samples; `cap` slots, `len` used, `head` = next write. */
typedef struct st_ring_t {
    ctl_vm_sample_t *slots;
    size_t cap, len, head;
} ring_t;

typedef struct st_vm_entry_t {
    char ws_id[CTL_SUP_ID_MAX];
    vmm_vm_t *vm;  /* NULL while not running */
    int busy;      /* a job owns the VM right now: the monitor leaves it alone */
    ring_t fine;   /* CTL_SUP_SAMPLE_MS samples, one hour */
    ring_t coarse; /* one per minute, seven days */
    int64_t coarse_t;
} vm_entry_t;

struct st_ctl_supervisor_t {
    const cfg_t *cfg;
    char node[72];
    char state_dir[CTL_SUP_DIR_MAX];
    char image_dir[CTL_SUP_DIR_MAX];
    uint16_t gateway_port; /* of gateway.ai_listen: the guest's URL is derived from it (vm.c) */
    int accel_resolved;
    vmm_accel_t accel;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job_t queue[CTL_SUP_QUEUE_MAX];
    size_t qhead, qlen;
    vm_entry_t *vms[CTL_SUP_VMS_MAX];
    int stopping;
    pthread_t jobs[CTL_SUP_JOB_THREADS], monitor;
    rb_metrics_t *metrics;                       /* NULL: none kept */
    rb_metric_t *m_boot_time, *m_vms, *m_queued; /* the fixed series of it */
};

/* Adds 1 to the counter name{key="value"} (rigbox_control_*) when metrics are kept; values are
 * fixed strings of this file. */
static void count(ctl_supervisor_t *s, const char *name, const char *help, const char *key,
                  const char *value)
{
    char labels[96];

    if (s->metrics == NULL)
        return;
    snprintf(labels, sizeof(labels), "%s=\"%.64s\"", key, value);
    rb_metric_add(rb_metrics_get(s->metrics, RB_METRIC_COUNTER, name, help, labels), 1);
}

static void count_end(ctl_supervisor_t *s, const char *how)
{
    count(s, "rigbox_control_vm_ends_total",
          "VMs that ended, by how: stop (asked), guest_poweroff, guest_reboot, crash", "how", how);
}

static void count_boot(ctl_supervisor_t *s, const char *result)
{
    count(s, "rigbox_control_vm_boots_total",
          "Boots by result: running, or failed (not a boot cancelled or superseded)", "result",
          result);
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- entries (callers hold s->lock) ---- */

static vm_entry_t *entry_find(ctl_supervisor_t *s, const char *ws_id)
{
    for (size_t i = 0; i < CTL_SUP_VMS_MAX; i++)
        if (s->vms[i] != NULL && strcmp(s->vms[i]->ws_id, ws_id) == 0)
            return s->vms[i];
    return NULL;
}

static void entry_drop(ctl_supervisor_t *s, vm_entry_t *e);

/* ws_id's entry, made when missing. A full table gives up the entry of a workspace with no VM and
 * no job under way (its samples end with it), else there is none (NULL). */
static vm_entry_t *entry_get(ctl_supervisor_t *s, const char *ws_id)
{
    vm_entry_t *e = entry_find(s, ws_id);
    size_t i;

    if (e != NULL)
        return e;
    for (i = 0; i < CTL_SUP_VMS_MAX && s->vms[i] != NULL; i++)
        ;
    for (size_t k = 0; i == CTL_SUP_VMS_MAX && k < CTL_SUP_VMS_MAX; k++) {
        if (s->vms[k]->vm == NULL && !s->vms[k]->busy) {
            entry_drop(s, s->vms[k]);
            i = k;
        }
    }
    if (i == CTL_SUP_VMS_MAX)
        return NULL;
    e = rb_calloc(1, sizeof(*e));
    snprintf(e->ws_id, sizeof(e->ws_id), "%s", ws_id);
    e->fine = (ring_t){.slots = rb_calloc(CTL_SUP_RING_1H, sizeof(ctl_vm_sample_t)),
                       .cap = CTL_SUP_RING_1H};
    e->coarse = (ring_t){.slots = rb_calloc(CTL_SUP_RING_7D, sizeof(ctl_vm_sample_t)),
                         .cap = CTL_SUP_RING_7D};
    s->vms[i] = e;
    return e;
}

static void entry_drop(ctl_supervisor_t *s, vm_entry_t *e)
{
    for (size_t i = 0; i < CTL_SUP_VMS_MAX; i++) {
        if (s->vms[i] == e) {
            s->vms[i] = NULL;
            vmm_vm_free(e->vm);
            free(e->fine.slots);
            free(e->coarse.slots);
            free(e);
            return;
        }
    }
    RB_UNREACHABLE();
}

static void ring_push(ring_t *r, const ctl_vm_sample_t *v)
{
    r->slots[r->head] = *v;
    r->head = (r->head + 1) % r->cap;
    if (r->len < r->cap)
        r->len++;
}

/* ---- database outcomes ---- */

/* Marks ws_id failed unless it already left the states a VM may fail in (a cancel, say); returns 1
 * when it did. */
static int record_failure(ctl_supervisor_t *s, ctl_db_t *db, const char *ws_id, const char *code,
                          const char *message, int retryable)
{
    const char *params[4] = {ws_id, code, message, retryable ? "t" : "f"};

    if (ctl_db_rows(db,
                    "UPDATE workspaces SET status = 'failed', failure_code = $2, failure_message = "
                    "$3, failure_retryable = $4::boolean, failure_at = now(), failure_attempts = "
                    "failure_attempts + 1 WHERE id = $1 AND status IN ('starting', 'running', "
                    "'stopping', 'provisioning') RETURNING id",
                    4, params) != 1)
        return 0;
    rb_log_warn("workspace_failed", "workspace=%s code=%s message=\"%s\"", ws_id, code, message);
    count(s, "rigbox_control_workspace_failures_total", "Workspaces that became failed, by code",
          "code", code);
    return 1;
}

/* Moves ws_id from `from` to `to`; returns 1 when the row was in `from`. */
static int set_status(ctl_db_t *db, const char *ws_id, const char *from, const char *to)
{
    const char *params[3] = {ws_id, from, to};
    return ctl_db_rows(
               db,
               "UPDATE workspaces SET status = $3, failure_code = CASE WHEN $3 = 'running' "
               "THEN NULL ELSE failure_code END, failure_message = CASE WHEN $3 = 'running' "
               "THEN NULL ELSE failure_message END, failure_retryable = CASE WHEN $3 = "
               "'running' THEN NULL ELSE failure_retryable END, failure_at = CASE WHEN $3 = "
               "'running' THEN NULL ELSE failure_at END WHERE id = $1 AND status = $2 "
               "RETURNING id",
               3, params) == 1;
}

void ctl_supervisor_vm_dir(const ctl_supervisor_t *s, const char *ws_id, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", s->state_dir, ws_id);
}

/* What one boot needs, with the storage its pointers borrow. */
typedef struct st_boot_t {
    char dir[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX], base[PATH_MAX];
    char token[64], prefix[16];
    char ai_mode[16], ai_provider[CFG_NAME_LEN_MAX], ai_model[208]; /* the AI config in effect */
    int64_t ram_mb, vcpus, disk_mb;
    const cfg_template_t *tmpl;
    rb_json_t *env_doc;
    char *env_text;
    vmm_env_t env[ENV_MAX];
    char *env_values[ENV_MAX], *env_names[ENV_MAX];
    size_t nenv;
    vmm_app_t apps[APPS_MAX];
    vmm_fwd_t fwds[APPS_MAX];
    size_t napps;
} boot_t;

static void boot_free(boot_t *b)
{
    for (size_t i = 0; i < b->nenv; i++) {
        free(b->env_names[i]);
        free(b->env_values[i]);
    }
    rb_json_free(b->env_doc);
    free(b->env_text);
}

/* The AI config in effect, for the guest's RIGBOX_AI_* (managed when none, or unreadable). */
static void boot_ai(ctl_db_t *db, const char *ws_id, const char *user_id, boot_t *b)
{
    const char *params[2] = {ws_id, user_id};
    PGresult *res = NULL;

    snprintf(b->ai_mode, sizeof(b->ai_mode), "managed");
    if (ctl_db_query(db, CTL_AI_EFFECTIVE_SQL, 2, params, &res) == RB_OK && PQntuples(res) == 1) {
        snprintf(b->ai_mode, sizeof(b->ai_mode), "%s", PQgetvalue(res, 0, 0));
        snprintf(b->ai_provider, sizeof(b->ai_provider), "%s", PQgetvalue(res, 0, 1));
        snprintf(b->ai_model, sizeof(b->ai_model), "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
}

/* Template env first, then the workspace's own variables (which win by coming later). */
static void boot_env(boot_t *b)
{
    int k = -1, v = -1;
    for (size_t i = 0; i < b->tmpl->env_len && b->nenv < ENV_MAX; i++) {
        b->env_names[b->nenv] = rb_strdup(b->tmpl->env[i].name);
        b->env_values[b->nenv] = rb_strdup(b->tmpl->env[i].value);
        b->nenv++;
    }
    if (rb_json_parse(b->env_text, strlen(b->env_text), NULL, &b->env_doc) != RB_OK)
        return;
    while (b->nenv < ENV_MAX && rb_json_next(b->env_doc, 0, &k, &v)) {
        char *name = rb_json_strdup(b->env_doc, k), *value = rb_json_strdup(b->env_doc, v);
        if (name == NULL || value == NULL) {
            free(name);
            free(value);
            continue;
        }
        b->env_names[b->nenv] = name;
        b->env_values[b->nenv] = value;
        b->nenv++;
    }
    for (size_t i = 0; i < b->nenv; i++)
        b->env[i] = (vmm_env_t){.name = b->env_names[i], .value = b->env_values[i]};
}

/* Ensures an app row per template app and gives each a fresh loopback port for its hostfwd, from
 * vmm.hostfwd_port_min..max. */
static rb_err_t boot_apps(ctl_supervisor_t *s, ctl_db_t *db, const char *ws_id, const char *user_id,
                          boot_t *b)
{
    uint16_t taken[APPS_MAX];

    for (size_t i = 0; i < b->tmpl->apps_len && i < APPS_MAX; i++) {
        const cfg_app_t *a = &b->tmpl->apps[i];
        char id[16], sub[80], port[8], host_port[8];
        uint16_t hp;
        const char *params[8] = {
            id, ws_id, user_id, a->name, sub, port, cfg_visibility_name(a->visibility), host_port};
        rb_err_t err;

        if ((err = vmm_host_port_alloc_range((uint16_t)s->cfg->vmm.hostfwd_port_min,
                                             (uint16_t)s->cfg->vmm.hostfwd_port_max, taken,
                                             b->napps, &hp)) != RB_OK)
            return err;
        taken[b->napps] = hp;
        rb_random_id("app-", id, sizeof(id));
        snprintf(sub, sizeof(sub), "%s-%s", a->name, ws_id + 3);
        snprintf(port, sizeof(port), "%d", a->port);
        snprintf(host_port, sizeof(host_port), "%u", hp);
        err =
            ctl_db_query(db,
                         "INSERT INTO apps (id, workspace_id, user_id, name, subdomain, port, "
                         "visibility, host_port) VALUES ($1, $2, $3, $4, $5, $6::int, $7, $8::int) "
                         "ON CONFLICT (workspace_id, name) DO UPDATE SET host_port = "
                         "EXCLUDED.host_port",
                         8, params, NULL);
        if (err != RB_OK)
            return err;
        b->apps[b->napps] = (vmm_app_t){.name = a->name,
                                        .port = (uint16_t)a->port,
                                        .command = a->command != NULL ? a->command : "true"};
        b->fwds[b->napps] = (vmm_fwd_t){.host_port = hp, .guest_port = (uint16_t)a->port};
        b->napps++;
    }
    return RB_OK;
}

/* Loads the row and prepares everything for vmm_vm_start; on failure fills code/msg. */
static int boot_prepare(ctl_supervisor_t *s, ctl_db_t *db, const char *ws_id, boot_t *b, char *msg,
                        size_t cap)
{
    const char *params[1] = {ws_id};
    PGresult *res = NULL;
    char user_id[32];
    struct stat st;
    rb_err_t err;

    if (ctl_db_query(db,
                     "SELECT user_id, coalesce(template_id, image), ram_mb, vcpu_count, "
                     "disk_size_mb, env_vars::text FROM workspaces WHERE id = $1 AND status = "
                     "'starting'",
                     1, params, &res) != RB_OK ||
        PQntuples(res) != 1) {
        PQclear(res);
        return 1; /* cancelled or deleted meanwhile: nothing to do */
    }
    snprintf(user_id, sizeof(user_id), "%s", PQgetvalue(res, 0, 0));
    b->tmpl = cfg_template_find(s->cfg, PQgetvalue(res, 0, 1));
    boot_ai(db, ws_id, user_id, b);
    b->ram_mb = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    b->vcpus = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    b->disk_mb = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    b->env_text = rb_strdup(PQgetvalue(res, 0, 5));
    PQclear(res);
    if (b->tmpl == NULL) {
        snprintf(msg, cap, "template_missing:the workspace's template is no longer configured");
        return -1;
    }
    snprintf(b->kernel, sizeof(b->kernel), "%s/vmlinux", s->image_dir);
    snprintf(b->initrd, sizeof(b->initrd), "%s/initrd.img", s->image_dir);
    snprintf(b->base, sizeof(b->base), "%s/%s.ext4", s->image_dir, b->tmpl->image_name);
    if (stat(b->kernel, &st) != 0 || stat(b->base, &st) != 0) {
        snprintf(msg, cap, "image_missing:%.300s has no %s image or kernel: run tools/mkimage",
                 s->image_dir, b->tmpl->image_name);
        return -1;
    }
    ctl_supervisor_vm_dir(s, ws_id, b->dir, sizeof(b->dir));
    boot_env(b);
    if ((err = boot_apps(s, db, ws_id, user_id, b)) == RB_ERR_LIMIT) {
        snprintf(msg, cap, "ports_exhausted:no free loopback port in vmm.hostfwd_port_min..max");
        return -1;
    }
    if (err != RB_OK ||
        ctl_workspaces_rotate_token(db, ws_id, CTL_TOKEN_BOOT, b->token, sizeof(b->token),
                                    b->prefix, sizeof(b->prefix)) != RB_OK) {
        snprintf(msg, cap, "prepare_failed:could not record the workspace's apps or token");
        return -1;
    }
    return 0;
}

static vmm_accel_t resolve_accel(ctl_supervisor_t *s, const boot_t *b)
{
    char work[PATH_MAX], cache[PATH_MAX];
    vmm_accel_t want = s->cfg->vmm.accel == CFG_ACCEL_KVM   ? VMM_ACCEL_KVM
                       : s->cfg->vmm.accel == CFG_ACCEL_TCG ? VMM_ACCEL_TCG
                                                            : VMM_ACCEL_AUTO;
    vmm_probe_t probe = {.qemu_binary = s->cfg->vmm.qemu_binary,
                         .kernel = b->kernel,
                         .initrd = b->initrd,
                         .work_dir = work,
                         .cache_file = cache};

    if (s->accel_resolved) /* read once, then constant: a benign race between job threads */
        return s->accel;
    snprintf(work, sizeof(work), "%s/.canary", s->state_dir);
    snprintf(cache, sizeof(cache), "%s/.accel", s->state_dir);
    vmm_host_accel_resolve(want, &probe, &s->accel);
    rb_log_info("accelerator", "want=%s use=%s", vmm_accel_name(want), vmm_accel_name(s->accel));
    s->accel_resolved = 1;
    return s->accel;
}

/* A VM that is gone needs no token: the next boot mints one. */
static void revoke_boot_token(ctl_db_t *db, const char *ws_id)
{
    int n;
    if (ctl_workspaces_revoke_tokens(db, ws_id, CTL_TOKEN_BOOT, &n) != RB_OK)
        rb_log_error("token_revoke_failed", "workspace=%s kind=boot", ws_id);
}

static void do_start(ctl_supervisor_t *s, ctl_db_t *db, vm_entry_t *e)
{
    boot_t b = {0};
    char msg[ERR_LEN], code[64];
    vmm_vm_t *vm = NULL;
    vmm_vm_spec_t spec;
    int64_t t0 = mono_us();
    int rc = boot_prepare(s, db, e->ws_id, &b, msg, sizeof(msg)), running = 0;
    rb_err_t err;

    if (rc != 0) {
        if (rc < 0) {
            snprintf(code, sizeof(code), "%.*s", (int)strcspn(msg, ":"), msg);
            if (record_failure(s, db, e->ws_id, code, strchr(msg, ':') + 1, 1))
                count_boot(s, "failed");
        }
        goto Exit;
    }
    spec = (vmm_vm_spec_t){.dir = b.dir,
                           .qemu_binary = s->cfg->vmm.qemu_binary,
                           .accel = resolve_accel(s, &b),
                           .vcpus = (unsigned)b.vcpus,
                           .ram_mb = (unsigned)b.ram_mb,
                           .disk_mb = (unsigned)b.disk_mb,
                           .kernel = b.kernel,
                           .initrd = b.initrd,
                           .base_image = b.base,
                           .base_format = "raw",
                           .egress_none = b.tmpl->egress == CFG_EGRESS_NONE,
                           .gateway_port = s->gateway_port,
                           .fwds = b.fwds,
                           .nfwds = b.napps,
                           .console_log_max = s->cfg->vmm.console_log_max_bytes,
                           .guest = {.workspace_id = e->ws_id,
                                     .token = b.token,
                                     .gateway_url = NULL, /* 10.0.2.2, or the relay */
                                     .ai_mode = b.ai_mode,
                                     .ai_provider = b.ai_provider,
                                     .ai_model = b.ai_model,
                                     .env = b.env,
                                     .nenv = b.nenv,
                                     .apps = b.apps,
                                     .napps = b.napps}};
    if ((err = vmm_vm_start(&spec, &vm)) != RB_OK) {
        snprintf(msg, sizeof(msg), "QEMU did not start (%s); see %.300s/qemu.err", rb_err_str(err),
                 b.dir);
        if (record_failure(s, db, e->ws_id, "boot_failed", msg, 1))
            count_boot(s, "failed");
        goto Exit;
    }
    pthread_mutex_lock(&s->lock);
    e->vm = vm;
    pthread_mutex_unlock(&s->lock);
    err = vmm_vm_wait_console(vm, VMM_VM_READY_MARKER, (unsigned)s->cfg->vmm.boot_timeout_ms);
    if (err != RB_OK) {
        vmm_vm_kill(vm);
        snprintf(msg, sizeof(msg), "the guest did not get ready within %d ms (%s)",
                 s->cfg->vmm.boot_timeout_ms, rb_err_str(err));
        if (record_failure(s, db, e->ws_id, err == RB_ERR_TIMEOUT ? "boot_timeout" : "boot_failed",
                           msg, 1))
            count_boot(s, "failed"); /* not when a cancel killed it */
        goto Exit;
    }
    if (!set_status(db, e->ws_id, "starting", "running")) {
        /* Cancelled or deleted while booting: this VM must not outlive the request. */
        vmm_vm_kill(vm);
        rb_log_info("boot_superseded", "workspace=%s", e->ws_id);
    } else {
        rb_log_info("workspace_running", "workspace=%s pid=%d", e->ws_id, (int)vmm_vm_pid(vm));
        count_boot(s, "running");
        if (s->m_boot_time != NULL)
            rb_metric_observe_us(s->m_boot_time, mono_us() - t0);
        running = 1;
    }
Exit:
    if (vm != NULL &&
        !running) { /* killed here: the monitor must not find it and call it a crash */
        pthread_mutex_lock(&s->lock);
        e->vm = NULL;
        pthread_mutex_unlock(&s->lock);
        vmm_vm_free(vm);
    }
    if (rc == 0 && !running) /* the token minted for a guest that is not running */
        revoke_boot_token(db, e->ws_id);
    boot_free(&b);
}

/* Powers the VM down (graceful first). Returns how it ended. */
static vmm_stop_how_t stop_vm(ctl_supervisor_t *s, vm_entry_t *e)
{
    vmm_stop_how_t how = VMM_STOP_ALREADY;
    char dir[PATH_MAX];

    if (e->vm == NULL) {
        ctl_supervisor_vm_dir(s, e->ws_id, dir, sizeof(dir));
        if (vmm_vm_adopt(dir, &e->vm) != RB_OK)
            return VMM_STOP_ALREADY;
    }
    vmm_vm_stop(e->vm, (unsigned)s->cfg->vmm.stop_timeout_ms, &how);
    if (how != VMM_STOP_ALREADY)
        count_end(s, "stop");
    rb_log_info("workspace_stopped", "workspace=%s how=%s", e->ws_id,
                how == VMM_STOP_POWERDOWN ? "powerdown"
                : how == VMM_STOP_QUIT    ? "quit"
                : how == VMM_STOP_KILL    ? "kill"
                                          : "already");
    pthread_mutex_lock(&s->lock);
    vmm_vm_free(e->vm);
    e->vm = NULL;
    pthread_mutex_unlock(&s->lock);
    return how;
}

/* Kills the QEMU of ws_id through a handle of its own, so it may run while a start job owns the
 * entry's handle (the start job then sees QEMU exit and the row no longer `starting`). */
static void kill_vm(ctl_supervisor_t *s, const char *ws_id)
{
    char dir[PATH_MAX];
    vmm_vm_t *vm = NULL;
    ctl_supervisor_vm_dir(s, ws_id, dir, sizeof(dir));
    if (vmm_vm_adopt(dir, &vm) == RB_OK) {
        vmm_vm_kill(vm);
        rb_log_info("workspace_killed", "workspace=%s", ws_id);
    }
    vmm_vm_free(vm);
}

static void do_delete(ctl_supervisor_t *s, ctl_db_t *db, vm_entry_t *e)
{
    char dir[PATH_MAX];
    const char *params[1] = {e->ws_id};

    stop_vm(s, e);
    ctl_supervisor_vm_dir(s, e->ws_id, dir, sizeof(dir));
    if (vmm_vm_delete_files(dir) != RB_OK)
        rb_log_error("vm_files_left", "workspace=%s dir=%s", e->ws_id, dir);
    ctl_db_query(db, "DELETE FROM workspaces WHERE id = $1 AND status = 'deleting'", 1, params,
                 NULL);
    ctl_db_exec(db, "NOTIFY rigbox_identity, 'workspace'");
}

static void run_job(ctl_supervisor_t *s, ctl_db_t *db, const job_t *j, vm_entry_t *e)
{
    switch (j->action) {
    case CTL_EV_START:
    case CTL_EV_RETRY:
        do_start(s, db, e);
        break;
    case CTL_EV_STOP:
        stop_vm(s, e);
        set_status(db, e->ws_id, "stopping", "stopped");
        revoke_boot_token(db, e->ws_id);
        break;
    case CTL_EV_RESTART:
        stop_vm(s, e);
        if (set_status(db, e->ws_id, "stopping", "starting"))
            do_start(s, db, e);
        break;
    case CTL_EV_CANCEL:
        kill_vm(s, e->ws_id);
        break;
    case CTL_EV_DELETE:
        do_delete(s, db, e);
        break;
    default:
        RB_UNREACHABLE();
    }
}

/* Takes the first queued job that may run now (s->lock held): jobs for one workspace run in order,
 * except cancel, which must not wait behind the boot it cancels. */
static int take_job(ctl_supervisor_t *s, job_t *out)
{
    for (size_t k = 0; k < s->qlen; k++) {
        size_t i = (s->qhead + k) % CTL_SUP_QUEUE_MAX;
        vm_entry_t *e = entry_find(s, s->queue[i].ws_id);
        if (e != NULL && e->busy && s->queue[i].action != CTL_EV_CANCEL)
            continue;
        *out = s->queue[i];
        /* close the gap: shift the later jobs down by one */
        for (size_t m = k; m + 1 < s->qlen; m++)
            s->queue[(s->qhead + m) % CTL_SUP_QUEUE_MAX] =
                s->queue[(s->qhead + m + 1) % CTL_SUP_QUEUE_MAX];
        s->qlen--;
        if (s->m_queued != NULL)
            rb_metric_set(s->m_queued, (int64_t)s->qlen);
        return 1;
    }
    return 0;
}

static void *job_main(void *arg)
{
    ctl_supervisor_t *s = arg;
    ctl_db_t db;
    job_t j;

    ctl_db_init(&db, s->cfg->database.url, s->cfg->database.connect_timeout_s);
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        vm_entry_t *e;
        if (!take_job(s, &j)) {
            pthread_cond_wait(&s->cond, &s->lock);
            continue;
        }
        if ((e = entry_get(s, j.ws_id)) == NULL) {
            rb_log_error("too_many_vms", "workspace=%s max=%d", j.ws_id, CTL_SUP_VMS_MAX);
            continue;
        }
        if (j.action != CTL_EV_CANCEL)
            e->busy = 1;
        pthread_mutex_unlock(&s->lock);
        rb_log_info("vm_job", "workspace=%s action=%s", j.ws_id, ctl_event_name(j.action));
        if (j.action == CTL_EV_CANCEL)
            kill_vm(s, j.ws_id);
        else
            run_job(s, &db, &j, e);
        pthread_mutex_lock(&s->lock);
        if (j.action != CTL_EV_CANCEL)
            e->busy = 0;
        if (j.action == CTL_EV_DELETE)
            entry_drop(s, e);
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    ctl_db_close(&db);
    return NULL;
}

rb_err_t ctl_supervisor_submit(ctl_supervisor_t *s, const char *ws_id, ctl_ws_event_t action)
{
    rb_err_t err = RB_OK;
    RB_ASSERT(strlen(ws_id) < CTL_SUP_ID_MAX);
    pthread_mutex_lock(&s->lock);
    if (s->qlen == CTL_SUP_QUEUE_MAX) {
        err = RB_ERR_LIMIT;
    } else {
        job_t *j = &s->queue[(s->qhead + s->qlen) % CTL_SUP_QUEUE_MAX];
        snprintf(j->ws_id, sizeof(j->ws_id), "%s", ws_id);
        j->action = action;
        s->qlen++;
        if (s->m_queued != NULL)
            rb_metric_set(s->m_queued, (int64_t)s->qlen);
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return err;
}

/* Samples one VM (s->lock held; the VM is not busy). Returns 0 while it runs, -1 when it died. */
static int sample_vm(ctl_supervisor_t *s, vm_entry_t *e)
{
    vmm_metrics_t m;
    ctl_vm_sample_t v;

    if (!vmm_vm_alive(e->vm) || vmm_vm_metrics(e->vm, &m) != RB_OK)
        return -1;
    vmm_vm_console_rotate(e->vm);
    v = (ctl_vm_sample_t){.t = now_s(),
                          .cpu_percent = m.cpu_percent,
                          .ram_used_mb = (int64_t)(m.ram_used_bytes >> 20),
                          .ram_total_mb = (int64_t)(m.ram_total_bytes >> 20),
                          .disk_used_mb = (int64_t)((m.disk_used_bytes + (1 << 20) - 1) >> 20),
                          .disk_total_mb = (int64_t)(m.disk_total_bytes >> 20)};
    ring_push(&e->fine, &v);
    if (v.t - e->coarse_t >= 60) {
        ring_push(&e->coarse, &v);
        e->coarse_t = v.t;
    }
    return 0;
}

/* Node heartbeat, and the ledger's housekeeping (schema/0002): leases of dead gateways and expired
 * grants give their credit back. Any control node may run it; the functions lock what they touch.
 */
static void heartbeat(ctl_supervisor_t *s, ctl_db_t *db)
{
    const char *params[1] = {s->node};
    /* two transactions: each locks accounts in user order, but one statement holding the
     * sweep's locks while the expiry starts again from the lowest user would break that order
     * (a deadlock with a usage batch) */
    ctl_db_exec(db, "SELECT rb_lease_sweep()");
    ctl_db_exec(db, "SELECT rb_grant_expire()");
    ctl_db_query(db,
                 "UPDATE nodes SET heartbeat_at = now(), lease_expires_at = now() + interval '30 "
                 "seconds' WHERE id = $1",
                 1, params, NULL);
}

/* A VM found gone (states.c): stopped when it died while being stopped or its guest powered off,
 * booted again when the guest rebooted, else failed with code and message. */
static void vm_ended(ctl_supervisor_t *s, ctl_db_t *db, const char *ws_id, vmm_guest_end_t end,
                     const char *code, const char *message)
{
    if (set_status(db, ws_id, "stopping", "stopped")) {
        count_end(s, "stop");
        return;
    }
    if (end == VMM_END_POWEROFF && set_status(db, ws_id, "running", "stopped")) {
        rb_log_info("workspace_stopped", "workspace=%s how=guest_poweroff", ws_id);
        count_end(s, "guest_poweroff");
        return;
    }
    if (end == VMM_END_REBOOT && set_status(db, ws_id, "running", "starting")) {
        rb_log_info("workspace_rebooting", "workspace=%s", ws_id);
        count_end(s, "guest_reboot");
        if (ctl_supervisor_submit(s, ws_id, CTL_EV_START) == RB_OK)
            return;
        record_failure(s, db, ws_id, "vm_reboot_failed",
                       "the guest rebooted and no start could be queued", 1);
        return;
    }
    if (record_failure(s, db, ws_id, code, message, 1))
        count_end(s, "crash");
}

static void *monitor_main(void *arg)
{
    ctl_supervisor_t *s = arg;
    char dead[CTL_SUP_VMS_MAX][CTL_SUP_ID_MAX];
    vmm_guest_end_t ends[CTL_SUP_VMS_MAX];
    ctl_db_t db;

    ctl_db_init(&db, s->cfg->database.url, s->cfg->database.connect_timeout_s);
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        struct timespec until;
        size_t ndead = 0;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CTL_SUP_SAMPLE_MS / 1000;
        pthread_cond_timedwait(&s->cond, &s->lock, &until);
        if (s->stopping)
            break;
        int64_t nvms = 0;
        for (size_t i = 0; i < CTL_SUP_VMS_MAX; i++) {
            vm_entry_t *e = s->vms[i];
            if (e == NULL || e->vm == NULL)
                continue;
            if (e->busy || sample_vm(s, e) == 0) { /* running (or its job owns it) */
                nvms++;
                continue;
            }
            ends[ndead] = vmm_dir_guest_end(vmm_vm_dir(e->vm));
            snprintf(dead[ndead++], CTL_SUP_ID_MAX, "%s", e->ws_id);
            vmm_vm_free(e->vm);
            e->vm = NULL;
        }
        if (s->m_vms != NULL)
            rb_metric_set(s->m_vms, nvms);
        pthread_mutex_unlock(&s->lock);
        for (size_t i = 0; i < ndead; i++) {
            revoke_boot_token(&db, dead[i]);
            vm_ended(s, &db, dead[i], ends[i], "vm_crashed",
                     "the VM's QEMU process exited unexpectedly");
        }
        heartbeat(s, &db);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    ctl_db_close(&db);
    return NULL;
}

int ctl_supervisor_latest(ctl_supervisor_t *s, const char *ws_id, ctl_vm_sample_t *out)
{
    int rc = -1;
    pthread_mutex_lock(&s->lock);
    vm_entry_t *e = entry_find(s, ws_id);
    if (e != NULL && e->vm != NULL && e->fine.len > 0) {
        *out = e->fine.slots[(e->fine.head + e->fine.cap - 1) % e->fine.cap];
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

size_t ctl_supervisor_series(ctl_supervisor_t *s, const char *ws_id, int64_t range_s,
                             ctl_vm_sample_t *out, size_t cap)
{
    size_t n = 0;
    int64_t since = now_s() - range_s;
    pthread_mutex_lock(&s->lock);
    vm_entry_t *e = entry_find(s, ws_id);
    if (e != NULL) {
        ring_t *r = range_s <= 3600 ? &e->fine : &e->coarse;
        for (size_t k = 0; k < r->len && n < cap; k++) {
            const ctl_vm_sample_t *v = &r->slots[(r->head + r->cap - r->len + k) % r->cap];
            if (v->t >= since)
                out[n++] = *v;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

const char *ctl_supervisor_node(const ctl_supervisor_t *s)
{
    return s->node;
}

/* mkdir -p for an absolute or relative path. */
static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* An absolute form of path (relative to the working directory), whether or not it exists. */
static void absolute(const char *path, char *out, size_t cap)
{
    char cwd[PATH_MAX], real[PATH_MAX];
    if (realpath(path, real) != NULL) {
        snprintf(out, cap, "%.255s", real);
        return;
    }
    if (path[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
        snprintf(out, cap, "%.255s", path);
    else
        snprintf(out, cap, "%.127s/%.127s", cwd, path);
}

static rb_err_t register_node(ctl_supervisor_t *s, ctl_db_t *db)
{
    char host[64] = "localhost";
    const char *params[3] = {s->node, host, RB_VERSION};

    gethostname(host, sizeof(host) - 1);
    for (char *p = host; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-'))
            *p = '-';
    snprintf(s->node, sizeof(s->node), "node-%.58s", host);
    return ctl_db_query(
        db,
        "INSERT INTO nodes (id, hostname, kind, version, lease_expires_at) VALUES "
        "($1, $2, 'control', $3, now() + interval '30 seconds') ON CONFLICT (id) DO "
        "UPDATE SET started_at = now(), heartbeat_at = now(), version = "
        "EXCLUDED.version, lease_expires_at = EXCLUDED.lease_expires_at",
        3, params, NULL);
}

/* Re-attaches to the VMs a previous control process left running (see the header). */
static void adopt_all(ctl_supervisor_t *s, ctl_db_t *db)
{
    const char *params[1] = {s->node};
    PGresult *res = NULL;

    if (ctl_db_query(db,
                     "SELECT id, status FROM workspaces WHERE node_id = $1 AND status IN "
                     "('starting', 'running', 'stopping')",
                     1, params, &res) != RB_OK)
        return;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0), *status = PQgetvalue(res, i, 1);
        char dir[PATH_MAX];
        vmm_vm_t *vm = NULL;
        vm_entry_t *e;

        ctl_supervisor_vm_dir(s, id, dir, sizeof(dir));
        if (vmm_vm_adopt(dir, &vm) != RB_OK) { /* its console may say the guest ended itself */
            revoke_boot_token(db, id);
            vm_ended(s, db, id, vmm_dir_guest_end(dir), "vm_lost",
                     "the VM was not running when rigbox-control restarted");
            continue;
        }
        rb_log_info("vm_adopted", "workspace=%s status=%s pid=%d", id, status, (int)vmm_vm_pid(vm));
        pthread_mutex_lock(&s->lock);
        e = entry_get(s, id);
        if (e != NULL)
            e->vm = vm;
        else
            vmm_vm_free(vm);
        pthread_mutex_unlock(&s->lock);
        if (strcmp(status, "stopping") == 0) {
            ctl_supervisor_submit(s, id, CTL_EV_STOP);
        } else if (strcmp(status, "starting") == 0) {
            /* We cannot tell how far its boot got: boot it again. */
            kill_vm(s, id);
            ctl_supervisor_submit(s, id, CTL_EV_START);
        }
    }
    PQclear(res);
    /* Deletes the previous process accepted but did not finish (its queue died with it): done
     * again, here for this node's workspaces and for those that never ran on a node. */
    if (ctl_db_query(db,
                     "SELECT id FROM workspaces WHERE status = 'deleting' AND (node_id = $1 OR "
                     "node_id IS NULL)",
                     1, params, &res) != RB_OK)
        return;
    for (int i = 0; i < PQntuples(res); i++) {
        rb_log_info("delete_resumed", "workspace=%s", PQgetvalue(res, i, 0));
        if (ctl_supervisor_submit(s, PQgetvalue(res, i, 0), CTL_EV_DELETE) != RB_OK)
            rb_log_error("delete_not_resumed", "workspace=%s", PQgetvalue(res, i, 0));
    }
    PQclear(res);
}

rb_err_t ctl_supervisor_create(const cfg_t *cfg, rb_metrics_t *metrics, ctl_supervisor_t **out,
                               char *errbuf, size_t cap)
{
    ctl_supervisor_t *s = rb_calloc(1, sizeof(*s));
    const char *port = strrchr(cfg->gateway.ai_listen, ':');
    ctl_db_t db;
    rb_err_t err = RB_OK;

    s->cfg = cfg;
    if ((s->metrics = metrics) != NULL) {
        s->m_boot_time =
            rb_metrics_get(metrics, RB_METRIC_HISTOGRAM, "rigbox_control_vm_boot_duration_seconds",
                           "Start job to guest ready", "");
        s->m_vms = rb_metrics_get(metrics, RB_METRIC_GAUGE, "rigbox_control_vms",
                                  "VMs running under this supervisor", "");
        s->m_queued = rb_metrics_get(metrics, RB_METRIC_GAUGE, "rigbox_control_jobs_queued",
                                     "Workspace jobs waiting for a supervisor thread", "");
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    /* the guest reaches the AI listener at 10.0.2.2:port, or through the guestfwd relay at
     * 10.0.2.100:port when its template has no egress (config checked the port) */
    s->gateway_port = port != NULL ? (uint16_t)strtoul(port + 1, NULL, 10) : VMM_VM_GATEWAY_PORT;
    if (mkdir_p(cfg->vmm.state_dir) != 0) {
        snprintf(errbuf, cap, "cannot create vmm.state_dir %s: %s", cfg->vmm.state_dir,
                 strerror(errno));
        err = RB_ERR_SYS;
        goto Exit;
    }
    absolute(cfg->vmm.state_dir, s->state_dir, sizeof(s->state_dir));
    absolute(cfg->vmm.image_dir, s->image_dir, sizeof(s->image_dir));
    if (strlen(s->state_dir) + sizeof("/ws-xxxxxxxx") > VMM_VM_DIR_MAX) {
        snprintf(errbuf, cap, "vmm.state_dir %s is too long for QEMU's unix sockets (max %d)",
                 s->state_dir, (int)(VMM_VM_DIR_MAX - sizeof("/ws-xxxxxxxx")));
        err = RB_ERR_CONFIG;
        goto Exit;
    }
    ctl_db_init(&db, cfg->database.url, cfg->database.connect_timeout_s);
    if ((err = register_node(s, &db)) != RB_OK) {
        snprintf(errbuf, cap, "cannot register this node in PostgreSQL: %s", db.errmsg);
        ctl_db_close(&db);
        goto Exit;
    }
    adopt_all(s, &db);
    ctl_db_close(&db);
    for (int i = 0; i < CTL_SUP_JOB_THREADS; i++)
        if (pthread_create(&s->jobs[i], NULL, job_main, s) != 0)
            RB_UNREACHABLE();
    if (pthread_create(&s->monitor, NULL, monitor_main, s) != 0)
        RB_UNREACHABLE();
    rb_log_info("supervisor", "node=%s state_dir=%s image_dir=%s", s->node, s->state_dir,
                s->image_dir);
    *out = s;
    s = NULL;
Exit:
    if (s != NULL) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
    }
    return err;
}

void ctl_supervisor_destroy(ctl_supervisor_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < CTL_SUP_JOB_THREADS; i++)
        pthread_join(s->jobs[i], NULL);
    pthread_join(s->monitor, NULL);
    for (size_t i = 0; i < CTL_SUP_VMS_MAX; i++)
        if (s->vms[i] != NULL)
            entry_drop(s, s->vms[i]); /* frees handles only: the VMs keep running */
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}
