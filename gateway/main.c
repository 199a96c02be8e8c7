/*
 * rigbox-gateway: the data plane daemon (DESIGN.md §1, §3). Loads the configuration, applies the
 * schema migrations, starts the identity and usage-writer threads, and serves the AI proxy on
 * gateway.ai_listen and app ingress on gateway.apps_listen (404 for every host until app routing
 * lands), each with /healthz and /metrics on the AI listener.
 *
 * Master key for BYOK keys: RIGBOX_MASTER_KEY (secrets.master_key) or the file
 * secrets.master_key_file, holding 64 hex digits (whitespace around them ignored). Without one
 * (no value, no such file), stored BYOK keys cannot be used (calls answer 400 byok_key_missing)
 * and the gateway says so at start; a key that is malformed or unreadable stops the start.
 *
 * Credits (DESIGN.md §3): managed calls are admitted against per-user credit leases (gw_credits)
 * and settled through the spooled ledger writer (gw_recorder). Environment:
 *   RIGBOX_NODE_ID      this gateway's node id (default gw-<hostname>-<ai port>: stable across
 *                       restarts, so a restarted gateway finds and replays its spool);
 *   RIGBOX_SPOOL_DIR    the ledger spool directory (default var/spool/<node id>, relative to the
 *                       working directory);
 *   RIGBOX_METERING=off no holds and no leases (usage is still recorded and priced): for
 *                       benchmarks and operators who bill elsewhere;
 *   RIGBOX_LEASE_IDLE_MS  an unused lease is returned after this long (default 30000);
 *   RIGBOX_LEASE_WAIT_MS  longest wait for a new lease before 503 (default 5000).
 *
 * Limits (DESIGN.md §3, gateway/quota.h) are checked before any spend, from the user's plan and
 * user_limits; rpm, tpm and concurrency are counted by each gateway process on its own. For tests
 * only: RIGBOX_GATEWAY_RATE_WINDOW_S (1..3600) shortens the 60 s rpm/tpm window and the interval
 * of the limits' re-reads; RIGBOX_GATEWAY_QUOTA_TABLE_MAX shrinks the users and subjects tables.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef RB_MIMALLOC
#include <mimalloc.h>
#endif

#include "common/crypto.h"
#include "common/http.h"
#include "common/log.h"
#include "common/pg.h"
#include "common/server.h"
#include "config/config.h"
#include "gateway/credits.h"
#include "gateway/db.h"
#include "gateway/identity.h"
#include "gateway/proxy.h"
#include "gateway/recorder.h"
#include "gateway/upstream.h"

enum {
    ERRBUF_LEN = 1024,
    SHUTDOWN_GRACE_MS = 2000, /* on top of drain_timeout_ms */
    LEASE_IDLE_MS = 30000,    /* default: an unused lease goes back after this long */
    LEASE_WAIT_MS = 5000,     /* default: longest wait for a new lease */
    ENV_MS_MAX = 3600000,     /* bound of the *_MS environment overrides */
};

/* Where the credit machinery lives: node id, spool, switches. */
typedef struct st_node_conf_t {
    char node[GW_CREDITS_NODE_ID_MAX];
    char host[HOST_NAME_MAX + 1];
    char spool[GW_RECORDER_PATH_MAX];
    int metering;
    int idle_ms, wait_ms;
} node_conf_t;

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

static int on_apps_request(h2o_handler_t *self, h2o_req_t *req)
{
    static const char body[] = "{\"error\":{\"code\":\"app_not_found\",\"message\":\"no app is "
                               "published at this host\",\"details\":null},"
                               "\"message\":\"no app is published at this host\"}";
    rb_http_send(req, 404, "application/json", body, sizeof(body) - 1);
    return 0;
}

static int env_ms(const char *name, int dflt)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || v[0] == '\0')
        return dflt;
    n = strtol(v, &end, 10);
    return *end == '\0' && n >= 0 && n <= ENV_MS_MAX ? (int)n : dflt;
}

/* Fills the node's identity and switches; -1 when RIGBOX_NODE_ID is malformed. */
static int node_setup(const cfg_t *cfg, node_conf_t *n)
{
    const char *env = getenv("RIGBOX_NODE_ID"), *port = strrchr(cfg->gateway.ai_listen, ':');

    memset(n, 0, sizeof(*n));
    if (gethostname(n->host, sizeof(n->host) - 1) != 0 || n->host[0] == '\0')
        snprintf(n->host, sizeof(n->host), "localhost");
    if (env != NULL && env[0] != '\0') {
        snprintf(n->node, sizeof(n->node), "%s", env);
    } else {
        snprintf(n->node, sizeof(n->node), "gw-%.40s-%s", n->host, port != NULL ? port + 1 : "0");
        for (char *p = n->node; *p != '\0'; p++) /* nodes.id: [A-Za-z0-9][A-Za-z0-9._:-]* */
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == ':'))
                *p = '-';
    }
    if (strlen(n->node) >= GW_CREDITS_NODE_ID_MAX - 1 ||
        strspn(n->node, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") !=
            strlen(n->node) ||
        n->node[0] == '.' || n->node[0] == '-' || n->node[0] == ':' || n->node[0] == '_') {
        rb_log_error("node_id_invalid",
                     "RIGBOX_NODE_ID must match [A-Za-z0-9][A-Za-z0-9._:-]{0,63}");
        return -1;
    }
    env = getenv("RIGBOX_SPOOL_DIR");
    if (env != NULL && env[0] != '\0')
        snprintf(n->spool, sizeof(n->spool), "%s", env);
    else
        snprintf(n->spool, sizeof(n->spool), "var/spool/%s", n->node);
    env = getenv("RIGBOX_METERING");
    n->metering = env == NULL || strcmp(env, "off") != 0;
    n->idle_ms = env_ms("RIGBOX_LEASE_IDLE_MS", LEASE_IDLE_MS);
    n->wait_ms = env_ms("RIGBOX_LEASE_WAIT_MS", LEASE_WAIT_MS);
    return 0;
}

/* Starts the lease thread (metering on); 0 or -1 (logged). */
static int start_credits(const cfg_t *cfg, const node_conf_t *n, gw_recorder_t *rec,
                         gw_credits_t **credits)
{
    gw_credits_conf_t cc = {.db_url = cfg->database.url,
                            .connect_timeout_s = cfg->database.connect_timeout_s,
                            .node_id = n->node,
                            .hostname = n->host,
                            .chunk_micro = cfg->credits.lease_chunk_micro,
                            .ttl_s = cfg->credits.lease_ttl_s,
                            .idle_ms = n->idle_ms,
                            .wait_ms = n->wait_ms,
                            .rec = rec};
    char err[ERRBUF_LEN];

    if (!n->metering) {
        rb_log_warn("metering_off", "RIGBOX_METERING=off: no credit holds (usage still recorded)");
        return 0;
    }
    if (gw_credits_start(&cc, credits, err, sizeof(err)) != RB_OK) {
        rb_log_error("credits_start_failed", "error=\"%s\"", err);
        return -1;
    }
    return 0;
}

/* Starts the writer and identity threads; 0 or -1 (logged). */
static int start_services(const cfg_t *cfg, const node_conf_t *n, rb_metrics_t *metrics,
                          gw_recorder_t **rec, gw_identity_t **idy)
{
    const cfg_gateway_limits_t *lim = &cfg->gateway.limits;
    gw_recorder_conf_t rc = {.db_url = cfg->database.url,
                             .connect_timeout_s = cfg->database.connect_timeout_s,
                             .queue_max = lim->writer_queue_max,
                             .batch_max = lim->writer_batch_max,
                             .flush_ms = lim->writer_flush_ms,
                             .spool_dir = n->spool,
                             .metrics = metrics};
    gw_identity_conf_t ic = {.db_url = cfg->database.url,
                             .connect_timeout_s = cfg->database.connect_timeout_s,
                             .ttl_ms = lim->identity_cache_ttl_ms};
    const char *cmax = getenv("RIGBOX_GATEWAY_IDENTITY_CACHE_MAX"); /* tests only */
    uint8_t master[RB_AES_KEY_LEN];
    char err[ERRBUF_LEN], key_id[24];
    int mk = rb_master_key_load(cfg->secrets.master_key, cfg->secrets.master_key_file, master,
                                key_id, sizeof(key_id));

    if (cmax != NULL && strtol(cmax, NULL, 10) > 1) {
        ic.cache_max = (size_t)strtol(cmax, NULL, 10);
        rb_log_warn("test_mode", "identity cache of %zu entries (tests only)", ic.cache_max);
    }
    if (mk < 0) {
        rb_log_error("master_key_invalid", "expected 64 hex digits (file=%s)",
                     cfg->secrets.master_key != NULL ? "RIGBOX_MASTER_KEY"
                                                     : cfg->secrets.master_key_file);
        return -1;
    }
    if (mk == 0) {
        rb_log_warn("master_key_missing", "file=%s stored BYOK keys cannot be used",
                    cfg->secrets.master_key_file != NULL ? cfg->secrets.master_key_file : "-");
    } else {
        ic.master_key = master;
        rb_log_info("master_key_loaded", "key_id=%s", key_id);
    }
    if (gw_recorder_start(&rc, rec, err, sizeof(err)) != RB_OK) {
        rb_log_error("recorder_start_failed", "error=\"%s\"", err);
        explicit_bzero(master, sizeof(master));
        return -1;
    }
    if (gw_identity_start(&ic, idy, err, sizeof(err)) != RB_OK) {
        rb_log_error("identity_start_failed", "error=\"%s\"", err);
        explicit_bzero(master, sizeof(master));
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
    if (rb_server_add_builtins(s, ai, "", cfg->secrets.metrics_token,
                               cfg->secrets.metrics_token_file) != 0)
        return -1;
    rb_server_route(apps, "/", on_apps_request, sizeof(h2o_handler_t));
    rb_log_info("listeners", "ai=%s apps=%s", cfg->gateway.ai_listen, cfg->gateway.apps_listen);
#ifdef RB_MIMALLOC
    rb_log_info("allocator", "name=mimalloc version=%d", mi_version());
#else
    rb_log_info("allocator", "name=libc");
#endif
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
    gw_credits_t *credits = NULL;
    node_conf_t node;
    int rc = 1;

    rb_server_block_signals(); /* before any thread starts */
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    if (cfg_load(o.config_path != NULL ? o.config_path : cfg_default_path(), &cfg, err,
                 sizeof(err)) != RB_OK) {
        fprintf(stderr, "rigbox-gateway: %s\n", err);
        return 2;
    }
    rb_log_setup(cfg->server.log_level, cfg->server.log_format == CFG_LOG_JSON);
    gw_upstream_global_init();
    if (node_setup(cfg, &node) != 0)
        goto Exit;
    if (rb_pg_migrate_at_start(cfg->database.url, cfg->database.connect_timeout_s,
                               o.schema_dir != NULL ? o.schema_dir : RB_SOURCE_DIR "/schema") != 0)
        goto Exit;
    /* the hooks get &proxy: the proxy needs the server's metrics, so it comes after create */
    s = rb_server_create(&(rb_server_conf_t){
        .name = "rigbox-gateway",
        .workers = (unsigned)cfg->server.workers,
        .max_request_body = cfg->gateway.limits.body_max_bytes,
        .shutdown_timeout_ms = (unsigned)cfg->gateway.limits.drain_timeout_ms + SHUTDOWN_GRACE_MS,
        .client_send_timeout_ms = (unsigned)cfg->gateway.limits.client_send_timeout_ms,
        .user = &proxy,
        .on_worker_start = on_worker_start,
        .on_worker_stop = on_worker_stop,
        .loop_wait_ms = loop_wait_ms,
        .busy = busy});
    if (start_services(cfg, &node, rb_server_metrics(s), &rec, &idy) != 0 ||
        start_credits(cfg, &node, rec, &credits) != 0)
        goto Exit;
    proxy = gw_proxy_create(cfg, idy, rec, credits, rb_server_metrics(s));
    if (listen_all(s, cfg, proxy) != 0)
        goto Exit;
    rb_server_run(s);
    gw_recorder_record_unfinished(rec); /* the calls the stop cut, before their leases close */
    rc = 0;
Exit:
    gw_credits_stop(credits); /* waits for the costs to be posted, returns the leases */
    gw_recorder_stop(rec);    /* posts what is left (or keeps it in the spool) */
    gw_identity_stop(idy);
    gw_proxy_destroy(proxy);
    rb_server_destroy(s);
    gw_upstream_global_cleanup();
    cfg_free(cfg);
    return rc;
}
