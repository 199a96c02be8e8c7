/*
 * Loading rigbox.yaml, the models file and the templates into one cfg_t (see config.h). The
 * schemas below are the single list of keys: each names its default in defaults_fill and its
 * range here. Order of a load: the main file (so usd_per_credit is known), the models file
 * (prices convert with it), the templates, then the plans (allowed_models must name models),
 * then the environment.
 */
#include "config/config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/schema.h"

#ifndef RB_SOURCE_DIR
#define RB_SOURCE_DIR "."
#endif

_Static_assert(sizeof(cfg_accel_t) == sizeof(int) && sizeof(rb_log_level_t) == sizeof(int),
               "enums are stored through int pointers");

enum {
    KEY_FILE_BYTES_MAX = 4096, /* an api_key_file */
    ENV_NAME_MAX = 192,        /* RIGBOX_<NAME>_API_KEY */
    INT_MAX_MS = 86400000,     /* one day: the largest duration we accept */
};

/* ---- enum names ------------------------------------------------------------------------------ */

static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const accel_names[] = {"auto", "kvm", "tcg", NULL};
static const char *const provider_kind_names[] = {"openai", "anthropic", "openai-compatible", NULL};
static const char *const model_type_names[] = {"chat", "embedding", NULL};
static const char *const image_names[] = {"base", "dev", NULL};
static const char *const egress_names[] = {"all", "none", NULL};
static const char *const visibility_names[] = {"private", "privileged", "public", NULL};
static const char *const protocol_names[] = {"http", "tcp", NULL};

const char *cfg_provider_kind_name(cfg_provider_kind_t kind)
{
    RB_ASSERT(kind >= CFG_PROVIDER_OPENAI && kind <= CFG_PROVIDER_OPENAI_COMPATIBLE);
    return provider_kind_names[kind];
}

const char *cfg_visibility_name(cfg_visibility_t vis)
{
    RB_ASSERT(vis >= CFG_VIS_PRIVATE && vis <= CFG_VIS_PUBLIC);
    return visibility_names[vis];
}

const char *cfg_protocol_name(cfg_protocol_t proto)
{
    RB_ASSERT(proto == CFG_PROTO_HTTP || proto == CFG_PROTO_TCP);
    return protocol_names[proto];
}

/* ---- schemas --------------------------------------------------------------------------------- */

#define SEC(k)                                                                                     \
    {                                                                                              \
        .key = k, .type = CFG_T_SECTION                                                            \
    }
#define SKIP(k)                                                                                    \
    {                                                                                              \
        .key = k, .type = CFG_T_SKIP                                                               \
    }
#define NUM(k, t, o, lo, hi)                                                                       \
    {                                                                                              \
        .key = k, .type = t, .off = o, .min = lo, .max = hi                                        \
    }
#define STR(k, o, lo, hi, fl)                                                                      \
    {                                                                                              \
        .key = k, .type = CFG_T_STR, .off = o, .min = lo, .max = hi, .flags = fl                   \
    }
#define ENUM(k, o, nm)                                                                             \
    {                                                                                              \
        .key = k, .type = CFG_T_ENUM, .off = o, .names = nm                                        \
    }
#define BOOL(k, o)                                                                                 \
    {                                                                                              \
        .key = k, .type = CFG_T_BOOL, .off = o                                                     \
    }
#define PRICE(k, o)                                                                                \
    {                                                                                              \
        .key = k, .type = CFG_T_PRICE, .off = o                                                    \
    }
#define LIST(k, o, lo, mx, fl)                                                                     \
    {                                                                                              \
        .key = k, .type = CFG_T_STRLIST, .off = o, .len_off = lo, .max = mx, .flags = fl           \
    }
#define KiB 1024LL
#define MiB (1024LL * 1024)
#define GiB (1024LL * 1024 * 1024)

/* What rigbox.yaml fills: the cfg_t plus values resolved after the walk. */
typedef struct st_main_build_t {
    cfg_t cfg;
    const char *default_plan;
    const char *models;    /* as written */
    const char *templates; /* as written */
} main_build_t;

#define M(f)  offsetof(main_build_t, cfg.f)
#define GL(f) offsetof(main_build_t, cfg.gateway.limits.f)
static const cfg_field_t main_schema[] = {
    SEC("server"),
    NUM("server.workers", CFG_T_INT, M(server.workers), 1, 64),
    ENUM("server.log_level", M(server.log_level), log_level_names),
    ENUM("server.log_format", M(server.log_format), log_format_names),
    SEC("gateway"),
    STR("gateway.ai_listen", M(gateway.ai_listen), 1, 256, CFG_FL_LISTEN),
    STR("gateway.apps_listen", M(gateway.apps_listen), 1, 256, CFG_FL_LISTEN),
    SEC("gateway.limits"),
    NUM("gateway.limits.body_max_bytes", CFG_T_SIZE, GL(body_max_bytes), 1 * KiB, 1 * GiB),
    NUM("gateway.limits.sse_line_max_bytes", CFG_T_SIZE, GL(sse_line_max_bytes), 1 * KiB, 64 * MiB),
    NUM("gateway.limits.json_depth_max", CFG_T_INT, GL(json_depth_max), 2, 1024),
    NUM("gateway.limits.json_tokens_max", CFG_T_INT, GL(json_tokens_max), 16, 16 * MiB),
    NUM("gateway.limits.upstream_connect_timeout_ms", CFG_T_INT, GL(upstream_connect_timeout_ms), 1,
        INT_MAX_MS),
    NUM("gateway.limits.upstream_total_timeout_ms", CFG_T_INT, GL(upstream_total_timeout_ms), 1,
        INT_MAX_MS),
    NUM("gateway.limits.upstream_first_byte_timeout_ms", CFG_T_INT,
        GL(upstream_first_byte_timeout_ms), 1, INT_MAX_MS),
    NUM("gateway.limits.upstream_idle_timeout_ms", CFG_T_INT, GL(upstream_idle_timeout_ms), 1,
        INT_MAX_MS),
    NUM("gateway.limits.stream_high_water_bytes", CFG_T_SIZE, GL(stream_high_water_bytes), 1 * KiB,
        1 * GiB),
    NUM("gateway.limits.stream_low_water_bytes", CFG_T_SIZE, GL(stream_low_water_bytes), 0,
        1 * GiB),
    NUM("gateway.limits.keepalive_interval_ms", CFG_T_INT, GL(keepalive_interval_ms), 100,
        INT_MAX_MS),
    NUM("gateway.limits.client_send_timeout_ms", CFG_T_INT, GL(client_send_timeout_ms), 1000,
        INT_MAX_MS),
    NUM("gateway.limits.drain_timeout_ms", CFG_T_INT, GL(drain_timeout_ms), 0, INT_MAX_MS),
    NUM("gateway.limits.drain_bytes_max", CFG_T_SIZE, GL(drain_bytes_max), 0, 1 * GiB),
    NUM("gateway.limits.drains_max", CFG_T_INT, GL(drains_max), 0, 100000),
    NUM("gateway.limits.writer_queue_max", CFG_T_INT, GL(writer_queue_max), 1, 100000000),
    NUM("gateway.limits.writer_batch_max", CFG_T_INT, GL(writer_batch_max), 1, 1000000),
    NUM("gateway.limits.writer_flush_ms", CFG_T_INT, GL(writer_flush_ms), 1, 60000),
    NUM("gateway.limits.upstream_connections_max", CFG_T_INT, GL(upstream_connections_max), 1,
        100000),
    NUM("gateway.limits.identity_cache_ttl_ms", CFG_T_INT, GL(identity_cache_ttl_ms), 1,
        INT_MAX_MS),
    SEC("control"),
    STR("control.listen", M(control.listen), 1, 256, CFG_FL_LISTEN),
    NUM("control.page_size_default", CFG_T_INT, M(control.page_size_default), 1, 100000),
    NUM("control.page_size_max", CFG_T_INT, M(control.page_size_max), 1, 100000),
    NUM("control.logs_lines_max", CFG_T_INT, M(control.logs_lines_max), 1, 10000000),
    SEC("database"),
    STR("database.url", M(database.url), 1, CFG_STRING_LEN_MAX, 0),
    NUM("database.pool_size", CFG_T_INT, M(database.pool_size), 1, 256),
    NUM("database.connect_timeout_s", CFG_T_INT, M(database.connect_timeout_s), 1, 3600),
    SEC("credits"),
    {.key = "credits.usd_per_credit", .type = CFG_T_DECIMAL, .off = M(credits.usd_per_credit)},
    NUM("credits.lease_chunk_credits", CFG_T_I64, M(credits.lease_chunk_credits), 1, 1000000000),
    NUM("credits.lease_ttl_s", CFG_T_INT, M(credits.lease_ttl_s), 10, 86400),
    NUM("credits.chars_per_token", CFG_T_INT, M(credits.chars_per_token), 1, 64),
    SKIP("plans"),
    STR("default_plan", offsetof(main_build_t, default_plan), 1, CFG_NAME_LEN_MAX, CFG_FL_SLUG),
    SEC("vmm"),
    STR("vmm.qemu_binary", M(vmm.qemu_binary), 1, CFG_PATH_LEN_MAX, 0),
    ENUM("vmm.accel", M(vmm.accel), accel_names),
    STR("vmm.image_dir", M(vmm.image_dir), 1, CFG_PATH_LEN_MAX, 0),
    STR("vmm.state_dir", M(vmm.state_dir), 1, CFG_PATH_LEN_MAX, 0),
    NUM("vmm.stop_timeout_ms", CFG_T_INT, M(vmm.stop_timeout_ms), 100, INT_MAX_MS),
    NUM("vmm.boot_timeout_ms", CFG_T_INT, M(vmm.boot_timeout_ms), 100, INT_MAX_MS),
    NUM("vmm.vms_max", CFG_T_INT, M(vmm.vms_max), 1, 4096),
    NUM("vmm.hostfwd_port_min", CFG_T_INT, M(vmm.hostfwd_port_min), 1024, 65535),
    NUM("vmm.hostfwd_port_max", CFG_T_INT, M(vmm.hostfwd_port_max), 1024, 65535),
    NUM("vmm.console_log_max_bytes", CFG_T_SIZE, M(vmm.console_log_max_bytes), 4 * KiB, 1 * GiB),
    STR("apps_domain", M(apps_domain), 1, 253, CFG_FL_HOST),
    SEC("secrets"),
    STR("secrets.master_key_file", M(secrets.master_key_file), 1, CFG_PATH_LEN_MAX, 0),
    STR("secrets.session_secret_file", M(secrets.session_secret_file), 1, CFG_PATH_LEN_MAX, 0),
    STR("secrets.metrics_token_file", M(secrets.metrics_token_file), 1, CFG_PATH_LEN_MAX, 0),
    STR("models", offsetof(main_build_t, models), 1, CFG_PATH_LEN_MAX, 0),
    STR("templates", offsetof(main_build_t, templates), 1, CFG_PATH_LEN_MAX, 0),
};
#define MAIN_N (sizeof(main_schema) / sizeof(main_schema[0]))

#define P(f) offsetof(cfg_plan_t, f)
static const cfg_field_t plan_schema[] = {
    NUM("max_vms", CFG_T_INT, P(max_vms), 0, 100000),
    NUM("max_ram_per_vm_mb", CFG_T_I64, P(max_ram_per_vm_mb), 64, 16 * MiB),
    NUM("max_ram_total_mb", CFG_T_I64, P(max_ram_total_mb), 0, 1 * GiB),
    NUM("max_vcpu_per_vm", CFG_T_INT, P(max_vcpu_per_vm), 1, 256),
    NUM("max_running_vcpus", CFG_T_INT, P(max_running_vcpus), 0, 1000000),
    NUM("max_disk_total_mb", CFG_T_I64, P(max_disk_total_mb), 0, 1 * GiB * KiB),
    NUM("credits_per_day", CFG_T_I64, P(credits_per_day), 0, 1000000000000LL),
    NUM("credits_per_month", CFG_T_I64, P(credits_per_month), 0, 1000000000000LL),
    NUM("rpm", CFG_T_INT, P(rpm), 0, 10000000),
    NUM("tpm", CFG_T_I64, P(tpm), 0, 1000000000000LL),
    NUM("max_concurrent", CFG_T_INT, P(max_concurrent), 0, 1000000),
    LIST("allowed_models", P(allowed_models), P(allowed_models_len), CFG_ALLOWED_MODELS_MAX,
         CFG_FL_NAME),
};
#define PLAN_N (sizeof(plan_schema) / sizeof(plan_schema[0]))

#define PR(f) offsetof(cfg_provider_t, f)
static const cfg_field_t provider_schema[] = {
    ENUM("kind", PR(kind), provider_kind_names),
    STR("base_url", PR(base_url), 1, 2048, CFG_FL_URL),
    STR("api_key_env", PR(api_key_env), 1, CFG_NAME_LEN_MAX, CFG_FL_ENVNAME | CFG_FL_NULLABLE),
    STR("api_key_file", PR(api_key_file), 1, CFG_PATH_LEN_MAX, CFG_FL_NULLABLE),
    STR("anthropic_version", PR(anthropic_version), 1, 64, CFG_FL_NAME),
    LIST("betas", PR(betas), PR(betas_len), CFG_BETAS_MAX, CFG_FL_NAME),
};
#define PROVIDER_N (sizeof(provider_schema) / sizeof(provider_schema[0]))

typedef struct st_model_build_t {
    cfg_model_t m;
    const char *provider;
} model_build_t;

#define MO(f) offsetof(model_build_t, m.f)
static const cfg_field_t model_schema[] = {
    STR("provider", offsetof(model_build_t, provider), 1, CFG_NAME_LEN_MAX, CFG_FL_SLUG),
    STR("upstream", MO(upstream), 1, 256, CFG_FL_NAME),
    LIST("aliases", MO(aliases), MO(aliases_len), CFG_ALIASES_MAX, CFG_FL_NAME),
    ENUM("type", MO(type), model_type_names),
    BOOL("reasoning", MO(reasoning)),
    SEC("prices"),
    PRICE("prices.input", MO(prices.input_micro)),
    PRICE("prices.cached_input", MO(prices.cached_input_micro)),
    PRICE("prices.cache_write_5m", MO(prices.cache_write_5m_micro)),
    PRICE("prices.cache_write_1h", MO(prices.cache_write_1h_micro)),
    PRICE("prices.output", MO(prices.output_micro)),
    PRICE("prices.per_request", MO(prices.per_request_micro)),
    NUM("max_output_default", CFG_T_INT, MO(max_output_default), 1, 10000000),
    NUM("max_output", CFG_T_INT, MO(max_output), 0, 10000000),
    NUM("context_window", CFG_T_INT, MO(context_window), 0, 100000000),
};
#define MODEL_N (sizeof(model_schema) / sizeof(model_schema[0]))

typedef struct st_template_build_t {
    cfg_template_t t;
    const char *id;
} template_build_t;

#define T(f) offsetof(template_build_t, t.f)
static const cfg_field_t template_schema[] = {
    STR("id", offsetof(template_build_t, id), 1, CFG_NAME_LEN_MAX, CFG_FL_SLUG),
    STR("name", T(name), 1, CFG_NAME_LEN_MAX, 0),
    STR("description", T(description), 0, CFG_STRING_LEN_MAX, 0),
    ENUM("image", T(image), image_names),
    SEC("floors"),
    NUM("floors.vcpu", CFG_T_INT, T(floor_vcpu), 1, 256),
    NUM("floors.ram_mb", CFG_T_I64, T(floor_ram_mb), 64, 16 * MiB),
    NUM("floors.disk_mb", CFG_T_I64, T(floor_disk_mb), 64, 1 * GiB),
    ENUM("egress", T(egress), egress_names),
    SKIP("env"),
    SKIP("apps"),
};
#define TEMPLATE_N (sizeof(template_schema) / sizeof(template_schema[0]))

#define A(f) offsetof(cfg_app_t, f)
static const cfg_field_t app_schema[] = {
    STR("name", A(name), 1, 63, CFG_FL_SLUG),
    NUM("port", CFG_T_INT, A(port), 1, 65535),
    ENUM("visibility", A(visibility), visibility_names),
    ENUM("protocol", A(protocol), protocol_names),
    STR("command", A(command), 1, CFG_STRING_LEN_MAX, CFG_FL_NULLABLE),
};
#define APP_N (sizeof(app_schema) / sizeof(app_schema[0]))

/* ---- defaults -------------------------------------------------------------------------------- */

static const cfg_plan_t default_plans[] = {
    {.name = "free",
     .max_vms = 2,
     .max_ram_per_vm_mb = 1024,
     .max_ram_total_mb = 2048,
     .max_vcpu_per_vm = 1,
     .max_running_vcpus = 2,
     .max_disk_total_mb = 8192,
     .credits_per_day = 0,
     .credits_per_month = 250,
     .rpm = 60,
     .tpm = 200000,
     .max_concurrent = 4},
    {.name = "pro",
     .max_vms = 10,
     .max_ram_per_vm_mb = 4096,
     .max_ram_total_mb = 16384,
     .max_vcpu_per_vm = 4,
     .max_running_vcpus = 16,
     .max_disk_total_mb = 40960,
     .credits_per_day = 0,
     .credits_per_month = 2000,
     .rpm = 600,
     .tpm = 2000000,
     .max_concurrent = 16},
};

static void defaults_fill(cfg_t *c, cfg_arena_t *arena)
{
    cfg_plan_t *plans = cfg_arena_alloc(arena, sizeof(default_plans));

    memcpy(plans, default_plans, sizeof(default_plans));
    *c = (cfg_t){
        .path = "(defaults)",
        .server = {.workers = 2, .log_level = RB_LOG_INFO, .log_format = CFG_LOG_TEXT},
        .gateway = {.ai_listen = "127.0.0.1:9090",
                    .apps_listen = "127.0.0.1:8080",
                    .limits = {.body_max_bytes = 8 * MiB,
                               .sse_line_max_bytes = 16 * MiB,
                               .json_depth_max = 64,
                               .json_tokens_max = 524288,
                               .upstream_connect_timeout_ms = 5000,
                               .upstream_total_timeout_ms = 3600000,
                               .upstream_first_byte_timeout_ms = 600000,
                               .upstream_idle_timeout_ms = 600000,
                               .stream_high_water_bytes = 256 * KiB,
                               .stream_low_water_bytes = 64 * KiB,
                               .keepalive_interval_ms = 15000,
                               .client_send_timeout_ms = 60000,
                               .drain_timeout_ms = 30000,
                               .drain_bytes_max = 8 * MiB,
                               .drains_max = 64,
                               .writer_queue_max = 100000,
                               .writer_batch_max = 1000,
                               .writer_flush_ms = 50,
                               .upstream_connections_max = 256,
                               .identity_cache_ttl_ms = 60000}},
        .control = {.listen = "127.0.0.1:8081",
                    .page_size_default = 50,
                    .page_size_max = 200,
                    .logs_lines_max = 10000},
        .database = {.url = "host=/var/run/postgresql user=postgres dbname=rigbox",
                     .pool_size = 4,
                     .connect_timeout_s = 5},
        .credits = {.usd_per_credit = "0.01",
                    .lease_chunk_credits = 50,
                    .lease_chunk_micro = 50 * 1000000LL,
                    .lease_ttl_s = 300,
                    .chars_per_token = 4},
        .plans = plans,
        .plans_len = sizeof(default_plans) / sizeof(default_plans[0]),
        .default_plan = &plans[0],
        .vmm = {.qemu_binary = "qemu-system-x86_64",
                .accel = CFG_ACCEL_AUTO,
                .image_dir = "var/images",
                .state_dir = "var/vms",
                .stop_timeout_ms = 10000,
                .boot_timeout_ms = 60000,
                .vms_max = 16,
                .hostfwd_port_min = 20000,
                .hostfwd_port_max = 29999,
                .console_log_max_bytes = 1 * MiB},
        .apps_domain = "localhost",
        .secrets = {.master_key_file = "var/secrets/master.key",
                    .session_secret_file = "var/secrets/session.secret",
                    .metrics_token_file = "var/secrets/metrics.token"},
        .models_path = "models.yaml",
        .templates_dir = "templates",
    };
}

/* ---- the load -------------------------------------------------------------------------------- */

typedef struct st_loader_t {
    cfg_ctx_t ctx;
    main_build_t b;
    char dir[CFG_PATH_LEN_MAX]; /* directory of the main file */
    bool models_loaded;
    const char *main_file;
} loader_t;

static void loader_init(loader_t *L, const char *file, char *errbuf, size_t errcap)
{
    const char *slash = strrchr(file, '/');

    memset(L, 0, sizeof(*L));
    L->ctx =
        (cfg_ctx_t){.file = file, .arena = cfg_arena_create(), .errbuf = errbuf, .errcap = errcap};
    L->main_file = file;
    if (slash == NULL)
        snprintf(L->dir, sizeof(L->dir), ".");
    else if (slash == file)
        snprintf(L->dir, sizeof(L->dir), "/");
    else
        snprintf(L->dir, sizeof(L->dir), "%.*s", (int)(slash - file), file);
    defaults_fill(&L->b.cfg, L->ctx.arena);
    L->b.cfg.path = cfg_arena_strdup(L->ctx.arena, file);
    L->ctx.usd_per_credit = L->b.cfg.credits.usd_per_credit;
    if (errbuf != NULL && errcap > 0)
        errbuf[0] = '\0';
}

/* A path named in a file, resolved against that file's directory; trailing '/' removed. */
static const char *path_resolve(cfg_arena_t *arena, const char *dir, const char *p)
{
    char buf[CFG_PATH_LEN_MAX * 2];
    size_t len;

    if (p[0] == '/' || strcmp(dir, ".") == 0)
        snprintf(buf, sizeof(buf), "%s", p);
    else
        snprintf(buf, sizeof(buf), "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", p);
    len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/')
        len--;
    return cfg_arena_strndup(arena, buf, len);
}

/* Reads a whole file of at most max bytes; returns owned (free()) in *out. */
static rb_err_t file_read(const char *path, size_t max, char **out, size_t *len, int *err_no)
{
    rb_err_t err = RB_OK;
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    int fd;

    *err_no = 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &st) != 0) {
        *err_no = errno;
        err = RB_ERR_IO;
        goto Exit;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        *err_no = S_ISREG(st.st_mode) ? EFBIG : EISDIR;
        err = RB_ERR_IO;
        goto Exit;
    }
    buf = rb_malloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err_no = n < 0 ? errno : EIO;
            err = RB_ERR_IO;
            goto Exit;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
Exit:
    free(buf);
    if (fd != -1)
        close(fd);
    return err;
}

/* Reads and parses one YAML file; the message names the file. */
static rb_err_t doc_load_file(cfg_ctx_t *ctx, const char *path, yaml_document_t *doc)
{
    char *text = NULL;
    size_t len = 0;
    int err_no;
    rb_err_t err;

    if (file_read(path, CFG_FILE_BYTES_MAX, &text, &len, &err_no) != RB_OK) {
        cfg_failf(ctx, NULL, NULL, "cannot read the file: %s",
                  err_no == EFBIG ? "larger than 1 MiB" : strerror(err_no));
        return RB_ERR_IO;
    }
    err = cfg_doc_parse(ctx, text, len, doc);
    free(text);
    return err;
}

/* The value node of key in a mapping (already checked by a walk), or NULL. */
static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = cfg_node_str(yaml_document_get_node(doc, p->key));
        if (k != NULL && strcmp(k, key) == 0)
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

/* Cross-field checks of the main file, each naming the line of the key that breaks it. */
static rb_err_t main_check(loader_t *L, const int *lines)
{
    const cfg_t *c = &L->b.cfg;
    const cfg_gateway_limits_t *g = &c->gateway.limits;
#define LINE(k) cfg_schema_line(main_schema, MAIN_N, lines, k)
    if (g->stream_low_water_bytes >= g->stream_high_water_bytes)
        return cfg_fail_line(&L->ctx, LINE("gateway.limits.stream_low_water_bytes"),
                             "gateway.limits.stream_low_water_bytes",
                             "expected less than stream_high_water_bytes (%zu), got %zu",
                             g->stream_high_water_bytes, g->stream_low_water_bytes);
    if (g->upstream_first_byte_timeout_ms > g->upstream_total_timeout_ms ||
        g->upstream_connect_timeout_ms > g->upstream_total_timeout_ms ||
        g->upstream_idle_timeout_ms > g->upstream_total_timeout_ms)
        return cfg_fail_line(&L->ctx, LINE("gateway.limits.upstream_total_timeout_ms"),
                             "gateway.limits.upstream_total_timeout_ms",
                             "expected at least the connect, first-byte and idle timeouts, got %d",
                             g->upstream_total_timeout_ms);
    if (g->writer_batch_max > g->writer_queue_max)
        return cfg_fail_line(&L->ctx, LINE("gateway.limits.writer_batch_max"),
                             "gateway.limits.writer_batch_max",
                             "expected at most writer_queue_max (%d), got %d", g->writer_queue_max,
                             g->writer_batch_max);
    if (c->control.page_size_default > c->control.page_size_max)
        return cfg_fail_line(&L->ctx, LINE("control.page_size_default"),
                             "control.page_size_default",
                             "expected at most page_size_max (%d), got %d",
                             c->control.page_size_max, c->control.page_size_default);
    if (c->vmm.hostfwd_port_min > c->vmm.hostfwd_port_max)
        return cfg_fail_line(&L->ctx, LINE("vmm.hostfwd_port_min"), "vmm.hostfwd_port_min",
                             "expected at most hostfwd_port_max (%d), got %d",
                             c->vmm.hostfwd_port_max, c->vmm.hostfwd_port_min);
#undef LINE
    return RB_OK;
}

/* Walks the main file's top level; resolves paths and the credit unit. */
static rb_err_t main_parse(loader_t *L, yaml_document_t *doc, yaml_node_t *root, int *lines)
{
    cfg_t *c = &L->b.cfg;
    rb_err_t err;

    if (root != NULL && !cfg_node_is_null(root) && root->type != YAML_MAPPING_NODE)
        return cfg_fail_got(&L->ctx, root, NULL, "a mapping of settings at the top level");
    L->b.default_plan = "free";
    L->b.models = "models.yaml";
    L->b.templates = "templates";
    if ((err = cfg_schema_walk(&L->ctx, doc, root, "", main_schema, MAIN_N, &L->b, lines)) != RB_OK)
        return err;
    if ((err = main_check(L, lines)) != RB_OK)
        return err;
    if (__builtin_mul_overflow(c->credits.lease_chunk_credits, (int64_t)1000000,
                               &c->credits.lease_chunk_micro))
        RB_UNREACHABLE(); /* the range keeps it below 10^15 */
    L->ctx.usd_per_credit = c->credits.usd_per_credit;
    c->models_path = path_resolve(L->ctx.arena, L->dir, L->b.models);
    c->templates_dir = path_resolve(L->ctx.arena, L->dir, L->b.templates);
    return RB_OK;
}

/* ---- plans ----------------------------------------------------------------------------------- */

static rb_err_t plan_check(loader_t *L, const cfg_plan_t *p, const char *path, const int *lines)
{
#define LINE(k) cfg_schema_line(plan_schema, PLAN_N, lines, k)
    if (p->max_vms > 0 && p->max_ram_per_vm_mb > p->max_ram_total_mb)
        return cfg_fail_line(&L->ctx, LINE("max_ram_per_vm_mb"), path,
                             "max_ram_per_vm_mb (%lld) is larger than max_ram_total_mb (%lld)",
                             (long long)p->max_ram_per_vm_mb, (long long)p->max_ram_total_mb);
    if (p->max_vms > 0 && p->max_vcpu_per_vm > p->max_running_vcpus)
        return cfg_fail_line(&L->ctx, LINE("max_vcpu_per_vm"), path,
                             "max_vcpu_per_vm (%d) is larger than max_running_vcpus (%d)",
                             p->max_vcpu_per_vm, p->max_running_vcpus);
    for (size_t i = 0; L->models_loaded && i < p->allowed_models_len; i++) {
        if (cfg_model_find(&L->b.cfg, p->allowed_models[i]) == NULL)
            return cfg_fail_line(&L->ctx, LINE("allowed_models"), path,
                                 "allowed_models: expected a model of %s, got \"%s\"",
                                 L->b.cfg.models_path, p->allowed_models[i]);
    }
#undef LINE
    return RB_OK;
}

static rb_err_t plans_parse(loader_t *L, yaml_document_t *doc, yaml_node_t *root,
                            const int *main_lines)
{
    yaml_node_t *node = map_get(doc, root, "plans");
    cfg_t *c = &L->b.cfg;
    const cfg_plan_t *def;
    cfg_plan_t *plans;
    size_t n = 0, i = 0;
    rb_err_t err;

    if (node != NULL) {
        if ((err = cfg_map_check(&L->ctx, doc, node, "plans", CFG_PLANS_MAX, &n)) != RB_OK)
            return err;
        if (n == 0)
            return cfg_fail_got(&L->ctx, node, "plans", "a mapping of at least one plan");
        plans = cfg_arena_alloc(L->ctx.arena, n * sizeof(*plans));
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start;
             pr < node->data.mapping.pairs.top; pr++, i++) {
            yaml_node_t *key = yaml_document_get_node(doc, pr->key);
            const char *name = cfg_node_str(key), *bad = cfg_str_check(name, CFG_FL_SLUG);
            char path[CFG_KEY_PATH_MAX];
            int lines[PLAN_N];
            if (bad != NULL)
                return cfg_fail_got(&L->ctx, key, "plans", bad);
            snprintf(path, sizeof(path), "plans.%s", name);
            plans[i] = default_plans[0]; /* a key left out takes the free plan's value */
            plans[i].name = cfg_arena_strdup(L->ctx.arena, name);
            if ((err = cfg_schema_walk(&L->ctx, doc, yaml_document_get_node(doc, pr->value), path,
                                       plan_schema, PLAN_N, &plans[i], lines)) != RB_OK ||
                (err = plan_check(L, &plans[i], path, lines)) != RB_OK)
                return err;
        }
        c->plans = plans;
        c->plans_len = n;
    }
    if ((def = cfg_plan_find(c, L->b.default_plan)) == NULL)
        return cfg_fail_line(
            &L->ctx, cfg_schema_line(main_schema, MAIN_N, main_lines, "default_plan"),
            "default_plan", "expected the name of a plan, got \"%s\"", L->b.default_plan);
    c->default_plan = def;
    return RB_OK;
}

/* ---- providers ------------------------------------------------------------------------------- */

/* "RIGBOX_<NAME>_<suffix>": NAME uppercased, '-' -> '_'. */
static void env_name(char *buf, size_t cap, const char *provider, const char *suffix)
{
    size_t o = (size_t)snprintf(buf, cap, "RIGBOX_");
    for (const char *p = provider; *p != '\0' && o + 1 < cap; p++)
        buf[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[o] = '\0';
    snprintf(buf + o, cap - o, "_%s", suffix);
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* The operator key: RIGBOX_<NAME>_API_KEY, else $api_key_env, else api_key_file, else none. */
static rb_err_t provider_key(loader_t *L, cfg_provider_t *p, const char *path, int file_line)
{
    char env[ENV_NAME_MAX], *text = NULL;
    const char *v;
    size_t len = 0;
    int err_no;

    env_name(env, sizeof(env), p->name, "API_KEY");
    if ((v = env_nonempty(env)) != NULL ||
        (p->api_key_env != NULL && (v = env_nonempty(p->api_key_env)) != NULL)) {
        p->api_key = cfg_arena_strdup(L->ctx.arena, v);
        return RB_OK;
    }
    if (p->api_key_file == NULL)
        return RB_OK;
    if (file_read(p->api_key_file, KEY_FILE_BYTES_MAX, &text, &len, &err_no) != RB_OK)
        return cfg_fail_line(&L->ctx, file_line, path, "api_key_file: cannot read \"%s\": %s",
                             p->api_key_file,
                             err_no == EFBIG ? "larger than 4096 bytes" : strerror(err_no));
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--; /* the file's trailing newline is not part of the key */
    if (len == 0 || strlen(text) < len) {
        free(text);
        return cfg_fail_line(&L->ctx, file_line, path, "api_key_file: \"%s\" holds no key",
                             p->api_key_file);
    }
    p->api_key = cfg_arena_strndup(L->ctx.arena, text, len);
    free(text);
    return RB_OK;
}

static rb_err_t provider_base_url(loader_t *L, cfg_provider_t *p, yaml_node_t *key,
                                  const char *path)
{
    char env[ENV_NAME_MAX];
    const char *v, *bad;
    size_t len;

    env_name(env, sizeof(env), p->name, "BASE_URL");
    if ((v = env_nonempty(env)) != NULL) {
        if ((bad = cfg_str_check(v, CFG_FL_URL)) != NULL || strlen(v) > 2048)
            return cfg_fail_line(&L->ctx, 0, env, "expected %s, got \"%.40s\"",
                                 bad != NULL ? bad : "a URL of at most 2048 characters", v);
        p->base_url = v;
    } else if (p->base_url == NULL && p->kind == CFG_PROVIDER_OPENAI) {
        p->base_url = "https://api.openai.com";
    } else if (p->base_url == NULL && p->kind == CFG_PROVIDER_ANTHROPIC) {
        p->base_url = "https://api.anthropic.com";
    } else if (p->base_url == NULL) {
        return cfg_failf(&L->ctx, key, path,
                         "missing required key \"base_url\" (an openai-compatible provider has "
                         "no default)");
    }
    len = strlen(p->base_url);
    while (len > 0 && p->base_url[len - 1] == '/')
        len--; /* the gateway appends "/v1/..." */
    p->base_url = cfg_arena_strndup(L->ctx.arena, p->base_url, len);
    return RB_OK;
}

static rb_err_t provider_parse(loader_t *L, yaml_document_t *doc, yaml_node_pair_t *pr,
                               cfg_provider_t *p, const char *dir)
{
    yaml_node_t *key = yaml_document_get_node(doc, pr->key);
    const char *name = cfg_node_str(key), *bad = cfg_str_check(name, CFG_FL_SLUG);
    char path[CFG_KEY_PATH_MAX];
    int lines[PROVIDER_N];
    rb_err_t err;

    if (bad != NULL)
        return cfg_fail_got(&L->ctx, key, "providers", bad);
    snprintf(path, sizeof(path), "providers.%s", name);
    *p = (cfg_provider_t){.name = cfg_arena_strdup(L->ctx.arena, name),
                          .anthropic_version = "2023-06-01"};
    if ((err = cfg_schema_walk(&L->ctx, doc, yaml_document_get_node(doc, pr->value), path,
                               provider_schema, PROVIDER_N, p, lines)) != RB_OK)
        return err;
    if (cfg_schema_line(provider_schema, PROVIDER_N, lines, "kind") == 0)
        return cfg_failf(&L->ctx, key, path,
                         "missing required key \"kind\" (openai, anthropic or openai-compatible)");
    if ((err = provider_base_url(L, p, key, path)) != RB_OK)
        return err;
    if (p->api_key_file != NULL)
        p->api_key_file = path_resolve(L->ctx.arena, dir, p->api_key_file);
    return provider_key(L, p, path,
                        cfg_schema_line(provider_schema, PROVIDER_N, lines, "api_key_file"));
}

static rb_err_t providers_parse(loader_t *L, yaml_document_t *doc, yaml_node_t *node,
                                const char *dir)
{
    cfg_provider_t *arr;
    size_t n = 0, i = 0;
    rb_err_t err;

    if ((err = cfg_map_check(&L->ctx, doc, node, "providers", CFG_PROVIDERS_MAX, &n)) != RB_OK)
        return err;
    if (n == 0)
        return RB_OK;
    arr = cfg_arena_alloc(L->ctx.arena, n * sizeof(*arr));
    for (yaml_node_pair_t *pr = node->data.mapping.pairs.start; pr < node->data.mapping.pairs.top;
         pr++, i++) {
        if ((err = provider_parse(L, doc, pr, &arr[i], dir)) != RB_OK)
            return err;
    }
    L->b.cfg.providers = arr;
    L->b.cfg.providers_len = n;
    return RB_OK;
}

/* ---- models ---------------------------------------------------------------------------------- */

/* The model among models[0..n) whose name or alias is s, or NULL. */
static const cfg_model_t *name_owner(const cfg_model_t *models, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(models[i].name, s) == 0)
            return &models[i];
        for (size_t j = 0; j < models[i].aliases_len; j++) {
            if (strcmp(models[i].aliases[j], s) == 0)
                return &models[i];
        }
    }
    return NULL;
}

static rb_err_t model_prices(loader_t *L, model_build_t *mb, const char *path, const int *lines)
{
    cfg_prices_t *pr = &mb->m.prices;
    int at = cfg_schema_line(model_schema, MODEL_N, lines, "prices");
    char ppath[CFG_KEY_PATH_MAX + 8];

#define SET(k) (cfg_schema_line(model_schema, MODEL_N, lines, "prices." k) != 0)
    if (at == 0) {
        mb->m.priced = false; /* allowed: managed calls to it are refused */
        return RB_OK;
    }
    snprintf(ppath, sizeof(ppath), "%s.prices", path);
    if (!SET("input"))
        return cfg_fail_line(&L->ctx, at, ppath,
                             "missing required key \"input\" (USD per "
                             "million input tokens)");
    if (!SET("output") && mb->m.type == CFG_MODEL_CHAT)
        return cfg_fail_line(&L->ctx, at, ppath,
                             "missing required key \"output\" (USD per "
                             "million output tokens)");
    if (!SET("cached_input"))
        pr->cached_input_micro = pr->input_micro; /* never cheaper than we know it is */
    if (!SET("cache_write_5m"))
        pr->cache_write_5m_micro = pr->input_micro;
    if (!SET("cache_write_1h"))
        pr->cache_write_1h_micro = pr->input_micro;
#undef SET
    mb->m.priced = true;
    return RB_OK;
}

static rb_err_t model_names_unique(loader_t *L, const model_build_t *mb, const cfg_model_t *prev,
                                   size_t n, yaml_node_t *key, const char *path, const int *lines)
{
    const cfg_model_t *o;
    int alias_line = cfg_schema_line(model_schema, MODEL_N, lines, "aliases");

    if ((o = name_owner(prev, n, mb->m.name)) != NULL)
        return cfg_failf(&L->ctx, key, path,
                         "duplicate model name: \"%s\" is already used by "
                         "models.%s",
                         mb->m.name, o->name);
    for (size_t j = 0; j < mb->m.aliases_len; j++) {
        const char *a = mb->m.aliases[j];
        if (strcmp(a, mb->m.name) == 0)
            return cfg_fail_line(&L->ctx, alias_line, path, "alias \"%s\" repeats the name", a);
        if ((o = name_owner(prev, n, a)) != NULL)
            return cfg_fail_line(&L->ctx, alias_line, path,
                                 "duplicate model name: alias \"%s\" is already used by models.%s",
                                 a, o->name);
    }
    return RB_OK;
}

static rb_err_t model_parse(loader_t *L, yaml_document_t *doc, yaml_node_pair_t *pr,
                            cfg_model_t *models, size_t i)
{
    yaml_node_t *key = yaml_document_get_node(doc, pr->key);
    const char *name = cfg_node_str(key), *bad = cfg_str_check(name, CFG_FL_NAME);
    char path[CFG_KEY_PATH_MAX];
    int lines[MODEL_N];
    model_build_t mb;
    rb_err_t err;

    if (bad != NULL)
        return cfg_fail_got(&L->ctx, key, "models", bad);
    snprintf(path, sizeof(path), "models.%s", name);
    mb = (model_build_t){.m = {.name = cfg_arena_strdup(L->ctx.arena, name),
                               .type = CFG_MODEL_CHAT,
                               .max_output_default = 4096}};
    if ((err = cfg_schema_walk(&L->ctx, doc, yaml_document_get_node(doc, pr->value), path,
                               model_schema, MODEL_N, &mb, lines)) != RB_OK)
        return err;
    if (mb.provider == NULL)
        return cfg_failf(&L->ctx, key, path, "missing required key \"provider\"");
    if ((mb.m.provider = cfg_provider_find(&L->b.cfg, mb.provider)) == NULL)
        return cfg_fail_line(&L->ctx, cfg_schema_line(model_schema, MODEL_N, lines, "provider"),
                             path,
                             "provider: expected a provider defined under providers:, got "
                             "\"%s\"",
                             mb.provider);
    if (mb.m.upstream == NULL)
        mb.m.upstream = mb.m.name;
    if ((err = model_prices(L, &mb, path, lines)) != RB_OK)
        return err;
    if (mb.m.max_output > 0 && mb.m.max_output_default > mb.m.max_output)
        return cfg_fail_line(&L->ctx,
                             cfg_schema_line(model_schema, MODEL_N, lines, "max_output_default"),
                             path, "max_output_default (%d) is larger than max_output (%d)",
                             mb.m.max_output_default, mb.m.max_output);
    if (mb.m.context_window > 0 && mb.m.max_output_default >= mb.m.context_window)
        return cfg_fail_line(&L->ctx,
                             cfg_schema_line(model_schema, MODEL_N, lines, "context_window"), path,
                             "max_output_default (%d) leaves no input in context_window (%d)",
                             mb.m.max_output_default, mb.m.context_window);
    if ((err = model_names_unique(L, &mb, models, i, key, path, lines)) != RB_OK)
        return err;
    models[i] = mb.m;
    return RB_OK;
}

static const cfg_field_t models_root_schema[] = {SKIP("providers"), SKIP("models")};

/* A whole models document: providers first, then the models that name them. */
static rb_err_t models_doc(loader_t *L, yaml_document_t *doc)
{
    yaml_node_t *root = yaml_document_get_root_node(doc), *node;
    const char *slash = strrchr(L->ctx.file, '/');
    char dir[CFG_PATH_LEN_MAX];
    int lines[2];
    cfg_model_t *models;
    size_t n = 0, i = 0;
    rb_err_t err;

    snprintf(dir, sizeof(dir), "%.*s", slash == NULL ? 1 : (int)(slash - L->ctx.file),
             slash == NULL ? "." : L->ctx.file);
    if (root != NULL && !cfg_node_is_null(root) && root->type != YAML_MAPPING_NODE)
        return cfg_fail_got(&L->ctx, root, NULL, "a mapping with providers: and models:");
    if ((err = cfg_schema_walk(&L->ctx, doc, root, "", models_root_schema, 2, NULL, lines)) !=
            RB_OK ||
        (err = providers_parse(L, doc, map_get(doc, root, "providers"), dir)) != RB_OK)
        return err;
    node = map_get(doc, root, "models");
    if ((err = cfg_map_check(&L->ctx, doc, node, "models", CFG_MODELS_MAX, &n)) != RB_OK)
        return err;
    models = n > 0 ? cfg_arena_alloc(L->ctx.arena, n * sizeof(*models)) : NULL;
    for (i = 0; i < n; i++) {
        if ((err = model_parse(L, doc, &node->data.mapping.pairs.start[i], models, i)) != RB_OK)
            return err;
    }
    L->b.cfg.models = models;
    L->b.cfg.models_len = n;
    L->models_loaded = true;
    return RB_OK;
}

static rb_err_t models_load(loader_t *L)
{
    yaml_document_t doc;
    rb_err_t err;

    L->ctx.file = L->b.cfg.models_path;
    if ((err = doc_load_file(&L->ctx, L->ctx.file, &doc)) != RB_OK)
        return err;
    err = models_doc(L, &doc);
    yaml_document_delete(&doc);
    return err;
}

/* ---- templates ------------------------------------------------------------------------------- */

static rb_err_t env_parse(loader_t *L, yaml_document_t *doc, yaml_node_t *node, cfg_template_t *t)
{
    cfg_env_t *env;
    size_t n = 0, i = 0;
    rb_err_t err;

    if ((err = cfg_map_check(&L->ctx, doc, node, "env", CFG_TEMPLATE_ENV_MAX, &n)) != RB_OK)
        return err;
    env = n > 0 ? cfg_arena_alloc(L->ctx.arena, n * sizeof(*env)) : NULL;
    for (yaml_node_pair_t *pr = n > 0 ? node->data.mapping.pairs.start : NULL;
         pr != NULL && pr < node->data.mapping.pairs.top; pr++, i++) {
        yaml_node_t *key = yaml_document_get_node(doc, pr->key);
        yaml_node_t *val = yaml_document_get_node(doc, pr->value);
        const char *name = cfg_node_str(key), *v = cfg_node_str(val), *bad;
        char path[CFG_KEY_PATH_MAX];
        if ((bad = cfg_str_check(name, CFG_FL_ENVNAME)) != NULL)
            return cfg_fail_got(&L->ctx, key, "env", bad);
        snprintf(path, sizeof(path), "env.%s", name);
        if (cfg_node_is_null(val))
            v = "";
        if (v == NULL || strlen(v) > CFG_STRING_LEN_MAX || cfg_str_check(v, 0) != NULL)
            return cfg_fail_got(&L->ctx, val, path, "a string value");
        env[i] =
            (cfg_env_t){cfg_arena_strdup(L->ctx.arena, name), cfg_arena_strdup(L->ctx.arena, v)};
    }
    t->env = env;
    t->env_len = n;
    return RB_OK;
}

static rb_err_t app_parse(loader_t *L, yaml_document_t *doc, yaml_node_t *node, cfg_app_t *apps,
                          size_t i)
{
    char path[CFG_KEY_PATH_MAX];
    int lines[APP_N];
    cfg_app_t *a = &apps[i];
    rb_err_t err;

    snprintf(path, sizeof(path), "apps[%zu]", i);
    if (node->type != YAML_MAPPING_NODE)
        return cfg_fail_got(&L->ctx, node, path, "a mapping with name, port and command");
    *a = (cfg_app_t){.visibility = CFG_VIS_PRIVATE, .protocol = CFG_PROTO_HTTP};
    if ((err = cfg_schema_walk(&L->ctx, doc, node, path, app_schema, APP_N, a, lines)) != RB_OK)
        return err;
    if (a->name == NULL || a->port == 0)
        return cfg_failf(&L->ctx, node, path, "missing required key \"%s\"",
                         a->name == NULL ? "name" : "port");
    for (size_t j = 0; j < i; j++) {
        if (strcmp(apps[j].name, a->name) == 0)
            return cfg_fail_line(&L->ctx, cfg_schema_line(app_schema, APP_N, lines, "name"), path,
                                 "name: \"%s\" is already used by apps[%zu]", a->name, j);
        if (apps[j].port == a->port)
            return cfg_fail_line(&L->ctx, cfg_schema_line(app_schema, APP_N, lines, "port"), path,
                                 "port: %d is already used by apps[%zu]", a->port, j);
    }
    return RB_OK;
}

static rb_err_t apps_parse(loader_t *L, yaml_document_t *doc, yaml_node_t *node, cfg_template_t *t)
{
    cfg_app_t *apps;
    size_t n, i = 0;
    rb_err_t err;

    if (cfg_node_is_null(node))
        return RB_OK;
    if (node->type != YAML_SEQUENCE_NODE)
        return cfg_fail_got(&L->ctx, node, "apps", "a list of apps");
    n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n > CFG_TEMPLATE_APPS_MAX)
        return cfg_failf(&L->ctx, node, "apps", "too many apps (%zu, at most %d)", n,
                         CFG_TEMPLATE_APPS_MAX);
    apps = n > 0 ? cfg_arena_alloc(L->ctx.arena, n * sizeof(*apps)) : NULL;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top;
         it++, i++) {
        if ((err = app_parse(L, doc, yaml_document_get_node(doc, *it), apps, i)) != RB_OK)
            return err;
    }
    t->apps = apps;
    t->apps_len = n;
    return RB_OK;
}

/* One template document; id is its file name without ".yaml". */
static rb_err_t template_doc(loader_t *L, yaml_document_t *doc, const char *id, cfg_template_t *t)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    const char *bad = cfg_str_check(id, CFG_FL_SLUG);
    template_build_t tb;
    int lines[TEMPLATE_N];
    rb_err_t err;

    if (id[0] == '\0' || bad != NULL || strlen(id) > CFG_NAME_LEN_MAX)
        return cfg_fail_line(&L->ctx, 0, NULL, "expected a file name like my-template.yaml (%s)",
                             bad != NULL ? bad : "1 to 128 characters");
    if (root != NULL && !cfg_node_is_null(root) && root->type != YAML_MAPPING_NODE)
        return cfg_fail_got(&L->ctx, root, NULL, "a mapping describing a template");
    tb = (template_build_t){.t = {.id = cfg_arena_strdup(L->ctx.arena, id),
                                  .image = CFG_IMAGE_BASE,
                                  .floor_vcpu = 1,
                                  .floor_ram_mb = 512,
                                  .floor_disk_mb = 3072,
                                  .egress = CFG_EGRESS_ALL,
                                  .description = ""}};
    tb.t.name = tb.t.id;
    if ((err = cfg_schema_walk(&L->ctx, doc, root, "", template_schema, TEMPLATE_N, &tb, lines)) !=
        RB_OK)
        return err;
    if (tb.id != NULL && strcmp(tb.id, id) != 0)
        return cfg_fail_line(&L->ctx, cfg_schema_line(template_schema, TEMPLATE_N, lines, "id"),
                             "id", "expected \"%s\" (the file name), got \"%s\"", id, tb.id);
    tb.t.image_name = image_names[tb.t.image];
    if ((err = env_parse(L, doc, map_get(doc, root, "env"), &tb.t)) != RB_OK ||
        (err = apps_parse(L, doc, map_get(doc, root, "apps"), &tb.t)) != RB_OK)
        return err;
    *t = tb.t;
    return RB_OK;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The *.yaml names of dir, sorted; returns owned names (free each). */
static rb_err_t template_names(loader_t *L, const char *dir, char **names, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    rb_err_t err = RB_OK;

    *n = 0;
    L->ctx.file = dir;
    if (d == NULL) {
        cfg_fail_line(&L->ctx, 0, NULL, "cannot open the templates directory: %s", strerror(errno));
        return RB_ERR_IO;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0)
            continue;
        if (*n == CFG_TEMPLATES_MAX) {
            err = cfg_fail_line(&L->ctx, 0, NULL, "more than %d templates", CFG_TEMPLATES_MAX);
            break;
        }
        names[(*n)++] = rb_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, *n, sizeof(*names), name_cmp);
    return err;
}

static rb_err_t templates_load(loader_t *L)
{
    char *names[CFG_TEMPLATES_MAX];
    cfg_template_t *arr = NULL;
    size_t n = 0, i;
    rb_err_t err;

    if ((err = template_names(L, L->b.cfg.templates_dir, names, &n)) != RB_OK)
        goto Exit;
    arr = n > 0 ? cfg_arena_alloc(L->ctx.arena, n * sizeof(*arr)) : NULL;
    for (i = 0; i < n; i++) {
        yaml_document_t doc;
        char id[CFG_PATH_LEN_MAX];
        L->ctx.file = path_resolve(L->ctx.arena, L->b.cfg.templates_dir, names[i]);
        snprintf(id, sizeof(id), "%.*s", (int)(strlen(names[i]) - 5), names[i]);
        if ((err = doc_load_file(&L->ctx, L->ctx.file, &doc)) != RB_OK)
            goto Exit;
        err = template_doc(L, &doc, id, &arr[i]);
        yaml_document_delete(&doc);
        if (err != RB_OK)
            goto Exit;
    }
    L->b.cfg.templates = arr;
    L->b.cfg.templates_len = n;
Exit:
    for (i = 0; i < n; i++)
        free(names[i]);
    return err;
}

/* ---- environment ----------------------------------------------------------------------------- */

static rb_err_t env_apply(loader_t *L)
{
    cfg_t *c = &L->b.cfg;
    struct {
        const char *name;
        const char **dst;
        unsigned flags;
    } vars[] = {
        {"RIGBOX_DATABASE_URL", &c->database.url, 0},
        {"RIGBOX_AI_LISTEN", &c->gateway.ai_listen, CFG_FL_LISTEN},
        {"RIGBOX_APPS_LISTEN", &c->gateway.apps_listen, CFG_FL_LISTEN},
        {"RIGBOX_CONTROL_LISTEN", &c->control.listen, CFG_FL_LISTEN},
        {"RIGBOX_APPS_DOMAIN", &c->apps_domain, CFG_FL_HOST},
        {"RIGBOX_MASTER_KEY", &c->secrets.master_key, 0},
        {"RIGBOX_SESSION_SECRET", &c->secrets.session_secret, 0},
        {"RIGBOX_METRICS_TOKEN", &c->secrets.metrics_token, 0},
    };
    const char *v, *bad;

    L->ctx.file = "environment";
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        if ((v = env_nonempty(vars[i].name)) == NULL)
            continue;
        if (strlen(v) > CFG_STRING_LEN_MAX)
            return cfg_fail_line(&L->ctx, 0, vars[i].name, "longer than %d characters",
                                 CFG_STRING_LEN_MAX);
        /* Secrets are checked for nothing and never echoed. */
        if (vars[i].flags != 0 && (bad = cfg_str_check(v, vars[i].flags)) != NULL)
            return cfg_fail_line(&L->ctx, 0, vars[i].name, "expected %s, got \"%.40s\"", bad, v);
        *vars[i].dst = cfg_arena_strdup(L->ctx.arena, v);
    }
    if ((v = env_nonempty("RIGBOX_LOG_LEVEL")) != NULL &&
        rb_log_level_parse(v, &c->server.log_level) != 0)
        return cfg_fail_line(&L->ctx, 0, "RIGBOX_LOG_LEVEL",
                             "expected one of debug, info, warn or error, got \"%.40s\"", v);
    return RB_OK;
}

/* ---- public ---------------------------------------------------------------------------------- */

/* Moves the built configuration into its arena; the loader no longer owns the arena. */
static cfg_t *loader_finish(loader_t *L)
{
    cfg_t *cfg = cfg_arena_alloc(L->ctx.arena, sizeof(*cfg));

    *cfg = L->b.cfg;
    cfg->arena_ = L->ctx.arena;
    L->ctx.arena = NULL;
    RB_ASSERT(cfg->default_plan != NULL && cfg->plans_len > 0);
    return cfg;
}

rb_err_t cfg_load(const char *path, cfg_t **out, char *errbuf, size_t errcap)
{
    loader_t L;
    yaml_document_t doc;
    yaml_node_t *root;
    bool have_doc = false;
    int lines[MAIN_N];
    rb_err_t err;

    RB_ASSERT(path != NULL && out != NULL);
    *out = NULL;
    loader_init(&L, path, errbuf, errcap);
    if ((err = doc_load_file(&L.ctx, path, &doc)) != RB_OK)
        goto Exit;
    have_doc = true;
    root = yaml_document_get_root_node(&doc);
    if ((err = main_parse(&L, &doc, root, lines)) != RB_OK || (err = models_load(&L)) != RB_OK ||
        (err = templates_load(&L)) != RB_OK)
        goto Exit;
    L.ctx.file = path;
    if ((err = plans_parse(&L, &doc, root, lines)) != RB_OK || (err = env_apply(&L)) != RB_OK)
        goto Exit;
    *out = loader_finish(&L);
Exit:
    if (have_doc)
        yaml_document_delete(&doc);
    cfg_arena_destroy(L.ctx.arena); /* NULL after loader_finish */
    return err;
}

rb_err_t cfg_load_buffer(cfg_doc_kind_t kind, const char *name, const char *yaml, size_t len,
                         cfg_t **out, char *errbuf, size_t errcap)
{
    loader_t L;
    yaml_document_t doc;
    bool have_doc = false;
    int lines[MAIN_N];
    const char *base = strrchr(name, '/'), *dot;
    cfg_template_t *t;
    char id[CFG_PATH_LEN_MAX];
    rb_err_t err;

    RB_ASSERT(name != NULL && out != NULL && (yaml != NULL || len == 0));
    *out = NULL;
    loader_init(&L, name, errbuf, errcap);
    if ((err = cfg_doc_parse(&L.ctx, yaml, len, &doc)) != RB_OK)
        goto Exit;
    have_doc = true;
    if (kind == CFG_DOC_MAIN) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if ((err = main_parse(&L, &doc, root, lines)) != RB_OK ||
            (err = plans_parse(&L, &doc, root, lines)) != RB_OK)
            goto Exit;
    } else if (kind == CFG_DOC_MODELS) {
        if ((err = models_doc(&L, &doc)) != RB_OK)
            goto Exit;
    } else {
        RB_ASSERT(kind == CFG_DOC_TEMPLATE);
        base = base != NULL ? base + 1 : name;
        dot = strstr(base, ".yaml");
        snprintf(id, sizeof(id), "%.*s", dot != NULL ? (int)(dot - base) : (int)strlen(base), base);
        t = cfg_arena_alloc(L.ctx.arena, sizeof(*t));
        if ((err = template_doc(&L, &doc, id, t)) != RB_OK)
            goto Exit;
        L.b.cfg.templates = t;
        L.b.cfg.templates_len = 1;
    }
    if ((err = env_apply(&L)) != RB_OK)
        goto Exit;
    *out = loader_finish(&L);
Exit:
    if (have_doc)
        yaml_document_delete(&doc);
    cfg_arena_destroy(L.ctx.arena);
    return err;
}

rb_err_t cfg_load_defaults(cfg_t **out)
{
    loader_t L;

    RB_ASSERT(out != NULL);
    loader_init(&L, "(defaults)", NULL, 0);
    *out = loader_finish(&L);
    return RB_OK;
}

void cfg_free(cfg_t *cfg)
{
    if (cfg != NULL)
        cfg_arena_destroy(cfg->arena_); /* cfg itself lives in the arena */
}

const char *cfg_default_path(void)
{
    const char *p = env_nonempty("RIGBOX_CONFIG");
    return p != NULL ? p : RB_SOURCE_DIR "/config/rigbox.yaml";
}

const cfg_provider_t *cfg_provider_find(const cfg_t *cfg, const char *name)
{
    RB_ASSERT(cfg != NULL && name != NULL);
    for (size_t i = 0; i < cfg->providers_len; i++) {
        if (strcmp(cfg->providers[i].name, name) == 0)
            return &cfg->providers[i];
    }
    return NULL;
}

/* "provider/rest": rest is the upstream id, the public name or an alias of that provider's model.
 */
static const cfg_model_t *model_find_slug(const cfg_t *cfg, const char *slug)
{
    const char *slash = strchr(slug, '/'), *rest;
    size_t plen;

    if (slash == NULL || slash == slug)
        return NULL;
    plen = (size_t)(slash - slug);
    rest = slash + 1;
    for (size_t i = 0; i < cfg->models_len; i++) {
        const cfg_model_t *m = &cfg->models[i];
        if (strlen(m->provider->name) != plen || strncmp(m->provider->name, slug, plen) != 0)
            continue;
        if (strcmp(m->upstream, rest) == 0 || strcmp(m->name, rest) == 0)
            return m;
        for (size_t j = 0; j < m->aliases_len; j++) {
            if (strcmp(m->aliases[j], rest) == 0)
                return m;
        }
    }
    return NULL;
}

const cfg_model_t *cfg_model_find(const cfg_t *cfg, const char *name)
{
    const cfg_model_t *m;

    RB_ASSERT(cfg != NULL && name != NULL);
    if ((m = name_owner(cfg->models, cfg->models_len, name)) != NULL)
        return m;
    return model_find_slug(cfg, name);
}

const cfg_template_t *cfg_template_find(const cfg_t *cfg, const char *id)
{
    RB_ASSERT(cfg != NULL && id != NULL);
    for (size_t i = 0; i < cfg->templates_len; i++) {
        if (strcmp(cfg->templates[i].id, id) == 0)
            return &cfg->templates[i];
    }
    return NULL;
}

const cfg_plan_t *cfg_plan_find(const cfg_t *cfg, const char *name)
{
    RB_ASSERT(cfg != NULL && name != NULL);
    for (size_t i = 0; i < cfg->plans_len; i++) {
        if (strcmp(cfg->plans[i].name, name) == 0)
            return &cfg->plans[i];
    }
    return NULL;
}
