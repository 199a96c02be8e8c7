/*
 * rigbox-control: the control plane daemon (DESIGN.md §1, §4). Loads the configuration, applies the
 * schema migrations, and serves the /api/v1 REST API. `rigbox-control admin create-key` mints an
 * API key from the command line (how an operator gets the first admin key).
 */
#include <getopt.h>
#include <string.h>

#include "common/crypto.h"
#include "common/log.h"
#include "common/pg.h"
#include "common/server.h"
#include "config/config.h"
#include "control/api.h"
#include "control/db.h"
#include "control/lifecycle.h"
#include "control/supervisor.h"
#include "control/users.h"

enum { ERRBUF_LEN = 1024, SHUTDOWN_TIMEOUT_MS = 10000 };

typedef struct st_options_t {
    const char *config_path;
    const char *schema_dir;
    const char *role;  /* admin create-key */
    const char *email; /* admin create-key --user */
    const char *name;  /* admin create-key --name */
} options_t;

static void usage(FILE *out)
{
    fputs("usage: rigbox-control [--config PATH] [--schema-dir DIR]\n"
          "       rigbox-control admin create-key --role admin|user [--user EMAIL] [--name NAME]\n"
          "       rigbox-control --version | --help\n"
          "\n"
          "Serves the Rigbox control API (/api/v1) on control.listen (default 127.0.0.1:8081).\n"
          "--config defaults to $RIGBOX_CONFIG, else config/rigbox.yaml of the source tree.\n"
          "admin create-key prints a new API key once (only its hash is stored); --user names the\n"
          "owner's email (created if missing; default admin@rigbox.local).\n",
          out);
}

static int parse_args(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"schema-dir", required_argument, NULL, 's'},
        {"role", required_argument, NULL, 'r'},   {"user", required_argument, NULL, 'u'},
        {"name", required_argument, NULL, 'n'},   {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config_path = optarg;
            break;
        case 's':
            o->schema_dir = optarg;
            break;
        case 'r':
            o->role = optarg;
            break;
        case 'u':
            o->email = optarg;
            break;
        case 'n':
            o->name = optarg;
            break;
        case 'V':
            printf("rigbox-control %s\n", RB_VERSION);
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

static void on_worker_start(rb_worker_t *w, void *user)
{
    const cfg_t *cfg = user;
    ctl_worker_t *cw = rb_calloc(1, sizeof(*cw));
    /* a request never waits for a database that is down (then 503): the worker's loop serves
     * /healthz and the log streams too */
    ctl_db_init_request(&cw->db, cfg->database.url);
    h2o_timeout_init(w->ctx.loop, &cw->poll_timeout, CTL_STREAM_POLL_MS);
    w->data = cw;
}

static void on_worker_stop(rb_worker_t *w, void *user)
{
    ctl_worker_t *cw = w->data;
    ctl_db_close(&cw->db);
    free(cw);
    w->data = NULL;
}

static int admin_create_key(const cfg_t *cfg, const options_t *o)
{
    ctl_db_t db;
    char user_id[16], secret[64], key_id[48];
    const char *role = o->role != NULL ? o->role : "user";
    const char *email = o->email != NULL ? o->email : "admin@rigbox.local";
    int rc = 1;

    if (strcmp(role, "admin") != 0 && strcmp(role, "user") != 0) {
        fprintf(stderr, "rigbox-control: --role must be admin or user\n");
        return 2;
    }
    ctl_db_init(&db, cfg->database.url, cfg->database.connect_timeout_s);
    if (ctl_users_ensure(&db, email, cfg->default_plan->name, role, user_id, sizeof(user_id)) !=
        RB_OK) {
        fprintf(stderr, "rigbox-control: cannot create user %s: %s\n", email, db.errmsg);
        goto Exit;
    }
    if (ctl_keys_mint(&db, user_id, role, o->name != NULL ? o->name : "cli", secret, sizeof(secret),
                      key_id, sizeof(key_id)) != RB_OK) {
        fprintf(stderr, "rigbox-control: cannot create key: %s\n", db.errmsg);
        goto Exit;
    }
    printf("%s\n", secret);
    fprintf(stderr, "created %s key %s for %s (%s); it is shown only this once\n", role, key_id,
            email, user_id);
    rc = 0;
Exit:
    ctl_db_close(&db);
    return rc;
}

/* Loads the master key from RIGBOX_MASTER_KEY or the key file; without one, BYOK writes are
 * refused. A key that is malformed or unreadable stops the start (-1), as in the gateway. */
static int load_master_key(const cfg_t *cfg, ctl_app_t *app)
{
    int rc = rb_master_key_load(cfg->secrets.master_key, cfg->secrets.master_key_file,
                                app->master_key, app->master_key_id, sizeof(app->master_key_id));
    if (rc == 0)
        rb_log_warn("master_key_missing", "file=%s byok=disabled", cfg->secrets.master_key_file);
    else if (rc < 0)
        rb_log_error("master_key_invalid", "expected=\"64 hex characters\" (%s)",
                     cfg->secrets.master_key != NULL ? "RIGBOX_MASTER_KEY"
                                                     : cfg->secrets.master_key_file);
    app->has_master_key = rc == 1;
    return rc < 0 ? -1 : 0;
}

static int serve(cfg_t *cfg)
{
    rb_server_conf_t sc = {.name = "rigbox-control",
                           .workers = (unsigned)cfg->server.workers,
                           .max_request_body = CTL_BODY_MAX,
                           .shutdown_timeout_ms = SHUTDOWN_TIMEOUT_MS,
                           .user = cfg,
                           .on_worker_start = on_worker_start,
                           .on_worker_stop = on_worker_stop};
    rb_server_t *server = rb_server_create(&sc);
    ctl_app_t app = {.cfg = cfg};
    h2o_hostconf_t *hc;
    char err[ERRBUF_LEN];
    int rc = 1;

    rb_server_block_signals(); /* before the supervisor's threads start */
    if (rb_server_listen(server, cfg->control.listen, &hc, err, sizeof(err)) != RB_OK) {
        rb_log_error("listen_failed", "error=\"%s\"", err);
        goto Exit;
    }
    if (load_master_key(cfg, &app) != 0)
        goto Exit;
    if (ctl_supervisor_create(cfg, rb_server_metrics(server), &app.sup, err, sizeof(err)) !=
        RB_OK) {
        rb_log_error("supervisor_failed", "error=\"%s\"", err);
        goto Exit;
    }
    ctl_api_register(server, hc, &app);
    if (rb_server_add_builtins(server, hc, "", cfg->secrets.metrics_token,
                               cfg->secrets.metrics_token_file) != 0)
        goto Exit;
    rc = rb_server_run(server) == RB_OK ? 0 : 1;
Exit:
    ctl_supervisor_destroy(app.sup); /* running VMs keep running */
    rb_server_destroy(server);
    return rc;
}

int main(int argc, char **argv)
{
    options_t o = {.schema_dir = RB_SOURCE_DIR "/schema"};
    char err[ERRBUF_LEN];
    cfg_t *cfg = NULL;
    int rc = 1;

    if (parse_args(argc, argv, &o) != 0)
        return 2;
    if (o.config_path == NULL)
        o.config_path = cfg_default_path();
    if (cfg_load(o.config_path, &cfg, err, sizeof(err)) != RB_OK) {
        fprintf(stderr, "rigbox-control: %s\n", err);
        return 1;
    }
    rb_log_setup(cfg->server.log_level, cfg->server.log_format == CFG_LOG_JSON);
    if (rb_pg_migrate_at_start(cfg->database.url, cfg->database.connect_timeout_s, o.schema_dir) !=
        0)
        goto Exit;
    if (optind < argc) {
        if (optind + 2 == argc && strcmp(argv[optind], "admin") == 0 &&
            strcmp(argv[optind + 1], "create-key") == 0) {
            rc = admin_create_key(cfg, &o);
        } else {
            usage(stderr);
            rc = 2;
        }
        goto Exit;
    }
    rb_log_info("starting", "version=%s config=%s", RB_VERSION, o.config_path);
    rc = serve(cfg);
Exit:
    cfg_free(cfg);
    return rc;
}
