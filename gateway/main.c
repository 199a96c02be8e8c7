/*
 * rigbox-gateway: the data plane daemon (DESIGN.md §1, §3). Loads the configuration, applies the
 * schema migrations, starts the identity and usage-writer threads, and serves the AI proxy on
 * gateway.ai_listen and app ingress on gateway.apps_listen (404 for every host until app routing
 * lands), each with /healthz and /metrics on the AI listener.
 *
 * Master key for BYOK keys: RIGBOX_MASTER_KEY (secrets.master_key) or the file
 * secrets.master_key_file, holding 64 hex digits (whitespace around them ignored) or exactly 32 raw
 * bytes. Without one, stored BYOK keys cannot be used (calls answer 400 byok_key_missing) and the
 * gateway says so at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "common/http.h"
#include "common/log.h"
#include "common/server.h"
#include "config/config.h"
#include "gateway/db.h"
#include "gateway/identity.h"
#include "gateway/proxy.h"
#include "gateway/recorder.h"
#include "gateway/upstream.h"

enum {
    ERRBUF_LEN = 1024,
    MASTER_KEY_FILE_MAX = 4096, /* a master key file is tiny; a bigger one is refused */
    SHUTDOWN_GRACE_MS = 2000,   /* on top of drain_timeout_ms */
};

typedef struct st_options_t {
    const char *config_path;
    const char *schema_dir;
} options_t;

static void usage(FILE *out)
{
    fputs("usage: rigbox-gateway [--config PATH] [--schema-dir DIR]\n"
          "       rigbox-gateway --version | --help\n"
          "\n"
          "Serves the Rigbox AI gateway on gateway.ai_listen (default 127.0.0.1:9090) and app\n"
          "ingress on gateway.apps_listen (default 127.0.0.1:8080).\n"
          "--config defaults to $RIGBOX_CONFIG, else config/rigbox.yaml of the source tree.\n"
          "--schema-dir defaults to schema/ of the source tree.\n",
          out);
}

static int parse_args(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"schema-dir", required_argument, NULL, 's'},
                                             {"version", no_argument, NULL, 'V'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config_path = optarg;
            break;
        case 's':
            o->schema_dir = optarg;
            break;
        case 'V':
            printf("rigbox-gateway %s\n", RB_VERSION);
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Loads the master key: 1 = loaded, 0 = none configured, -1 = malformed (fatal). */
static int load_master_key(const cfg_t *cfg, uint8_t key[RB_AES_KEY_LEN])
{
    char buf[MASTER_KEY_FILE_MAX];
    ssize_t n;
    int fd, rc;

    if (cfg->secrets.master_key != NULL)
        return gw_identity_parse_master_key(cfg->secrets.master_key,
                                            strlen(cfg->secrets.master_key), key) == 0
                   ? 1
                   : -1;
    if (cfg->secrets.master_key_file == NULL ||
        (fd = open(cfg->secrets.master_key_file, O_RDONLY | O_CLOEXEC)) == -1)
        return 0;
    n = read(fd, buf, sizeof(buf));
    close(fd);
    rc = n > 0 && (size_t)n < sizeof(buf) && gw_identity_parse_master_key(buf, (size_t)n, key) == 0
             ? 1
             : -1;
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

static int migrate(const cfg_t *cfg, const char *dir)
{
    gw_db_t *db = NULL;
    char err[ERRBUF_LEN];
    int applied = 0, rc = -1;

    if (gw_db_connect(cfg->database.url, cfg->database.connect_timeout_s, &db, err, sizeof(err)) !=
        RB_OK) {
        rb_log_error("db_connect_failed", "error=\"%s\"", err);
        return -1;
    }
    if (gw_db_migrate(db, dir, &applied, err, sizeof(err)) != RB_OK) {
        rb_log_error("migrate_failed", "dir=%s error=\"%s\"", dir, err);
        goto Exit;
    }
    rb_log_info("migrated", "dir=%s applied=%d", dir, applied);
    rc = 0;
Exit:
    gw_db_close(db);
    return rc;
}

static int on_apps_request(h2o_handler_t *self, h2o_req_t *req)
{
    static const char body[] = "{\"error\":{\"code\":\"app_not_found\",\"message\":\"no app is "
                               "published at this host\",\"details\":null},"
                               "\"message\":\"no app is published at this host\"}";
    rb_http_send(req, 404, "application/json", body, sizeof(body) - 1);
    return 0;
}

/* Starts the writer and identity threads; 0 or -1 (logged). */
static int start_services(const cfg_t *cfg, rb_metrics_t *metrics, gw_recorder_t **rec,
                          gw_identity_t **idy)
{
    const cfg_gateway_limits_t *lim = &cfg->gateway.limits;
    gw_recorder_conf_t rc = {.db_url = cfg->database.url,
                             .connect_timeout_s = cfg->database.connect_timeout_s,
                             .queue_max = lim->writer_queue_max,
                             .batch_max = lim->writer_batch_max,
                             .flush_ms = lim->writer_flush_ms,
                             .metrics = metrics};
    gw_identity_conf_t ic = {.db_url = cfg->database.url,
                             .connect_timeout_s = cfg->database.connect_timeout_s,
                             .ttl_ms = lim->identity_cache_ttl_ms};
    uint8_t master[RB_AES_KEY_LEN];
    char err[ERRBUF_LEN], key_id[24];
    int mk = load_master_key(cfg, master);

    if (mk < 0) {
        rb_log_error("master_key_invalid", "expected 64 hex digits or 32 raw bytes (file=%s)",
                     cfg->secrets.master_key != NULL ? "RIGBOX_MASTER_KEY"
                                                     : cfg->secrets.master_key_file);
        return -1;
    }
    if (mk == 0) {
        rb_log_warn("master_key_missing", "file=%s stored BYOK keys cannot be used",
                    cfg->secrets.master_key_file != NULL ? cfg->secrets.master_key_file : "-");
    } else {
        ic.master_key = master;
        gw_identity_master_key_id(master, key_id, sizeof(key_id));
        rb_log_info("master_key_loaded", "key_id=%s", key_id);
    }
    if (gw_recorder_start(&rc, rec, err, sizeof(err)) != RB_OK) {
        rb_log_error("recorder_start_failed", "error=\"%s\"", err);
        return -1;
    }
    if (gw_identity_start(&ic, idy, err, sizeof(err)) != RB_OK) {
        rb_log_error("identity_start_failed", "error=\"%s\"", err);
        return -1;
    }
    explicit_bzero(master, sizeof(master));
    return 0;
}

static int listen_all(rb_server_t *s, const cfg_t *cfg, gw_proxy_t *proxy)
{
    h2o_hostconf_t *ai = NULL, *apps = NULL;
    char err[ERRBUF_LEN];

    if (rb_server_listen(s, cfg->gateway.ai_listen, &ai, err, sizeof(err)) != RB_OK ||
        rb_server_listen(s, cfg->gateway.apps_listen, &apps, err, sizeof(err)) != RB_OK) {
        rb_log_error("listen_failed", "error=\"%s\"", err);
        return -1;
    }
    gw_proxy_register(proxy, ai);
    rb_server_add_builtins(s, ai, "");
    rb_server_route(apps, "/", on_apps_request, sizeof(h2o_handler_t));
    rb_log_info("listeners", "ai=%s apps=%s", cfg->gateway.ai_listen, cfg->gateway.apps_listen);
    return 0;
}

/* rb_server hooks: user is &proxy (set before the workers start) */
static void on_worker_start(rb_worker_t *w, void *user)
{
    gw_proxy_on_worker_start(w, *(gw_proxy_t **)user);
}

static void on_worker_stop(rb_worker_t *w, void *user)
{
    gw_proxy_on_worker_stop(w, *(gw_proxy_t **)user);
}

static int32_t loop_wait_ms(rb_worker_t *w, void *user)
{
    return gw_proxy_loop_wait_ms(w, *(gw_proxy_t **)user);
}

static int busy(rb_worker_t *w, void *user)
{
    return gw_proxy_busy(w, *(gw_proxy_t **)user);
}

int main(int argc, char **argv)
{
    options_t o = {0};
    cfg_t *cfg = NULL;
    char err[ERRBUF_LEN];
    rb_server_t *s = NULL;
    gw_recorder_t *rec = NULL;
    gw_identity_t *idy = NULL;
    gw_proxy_t *proxy = NULL;
    int rc = 1;

    if (parse_args(argc, argv, &o) != 0)
        return 2;
    if (cfg_load(o.config_path != NULL ? o.config_path : cfg_default_path(), &cfg, err,
                 sizeof(err)) != RB_OK) {
        fprintf(stderr, "rigbox-gateway: %s\n", err);
        return 2;
    }
    rb_log_setup(cfg->server.log_level, cfg->server.log_format == CFG_LOG_JSON);
    gw_upstream_global_init();
    if (migrate(cfg, o.schema_dir != NULL ? o.schema_dir : RB_SOURCE_DIR "/schema") != 0)
        goto Exit;
    /* the hooks get &proxy: the proxy needs the server's metrics, so it comes after create */
    s = rb_server_create(&(rb_server_conf_t){
        .name = "rigbox-gateway",
        .workers = (unsigned)cfg->server.workers,
        .max_request_body = cfg->gateway.limits.body_max_bytes,
        .shutdown_timeout_ms = (unsigned)cfg->gateway.limits.drain_timeout_ms + SHUTDOWN_GRACE_MS,
        .user = &proxy,
        .on_worker_start = on_worker_start,
        .on_worker_stop = on_worker_stop,
        .loop_wait_ms = loop_wait_ms,
        .busy = busy});
    if (start_services(cfg, rb_server_metrics(s), &rec, &idy) != 0)
        goto Exit;
    proxy = gw_proxy_create(cfg, idy, rec, rb_server_metrics(s));
    if (listen_all(s, cfg, proxy) != 0)
        goto Exit;
    rb_server_run(s);
    rc = 0;
Exit:
    gw_recorder_stop(rec); /* flushes every queued usage row */
    gw_identity_stop(idy);
    gw_proxy_destroy(proxy);
    rb_server_destroy(s);
    gw_upstream_global_cleanup();
    cfg_free(cfg);
    return rc;
}
