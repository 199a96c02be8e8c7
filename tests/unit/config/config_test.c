/*
 * Unit tests for config/: the shipped configuration, defaults, every error path (each message
 * must name the file, the line and the key), environment overrides, model lookup and the exact
 * decimal price conversion. Runs from the repository root (ctest's working directory).
 */
#include "config/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

enum { ERRBUF = 1024, TMP_PATH = 512 };

static const char *const env_vars[] = {
    "RIGBOX_DATABASE_URL",
    "RIGBOX_MASTER_KEY",
    "RIGBOX_SESSION_SECRET",
    "RIGBOX_METRICS_TOKEN",
    "RIGBOX_AI_LISTEN",
    "RIGBOX_APPS_LISTEN",
    "RIGBOX_CONTROL_LISTEN",
    "RIGBOX_APPS_DOMAIN",
    "RIGBOX_LOG_LEVEL",
    "RIGBOX_OPENAI_API_KEY",
    "RIGBOX_OPENAI_BASE_URL",
    "RIGBOX_ANTHROPIC_API_KEY",
    "RIGBOX_ANTHROPIC_BASE_URL",
    "RIGBOX_OPENROUTER_API_KEY",
    "RIGBOX_LOCAL_API_KEY",
    "RIGBOX_MY_LOCAL_API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENROUTER_API_KEY",
};

/* Tests must not depend on the developer's environment. */
static void env_clear(void)
{
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
        unsetenv(env_vars[i]);
}

static const cfg_app_t *app_find(const cfg_template_t *t, const char *name)
{
    for (size_t i = 0; t != NULL && i < t->apps_len; i++) {
        if (strcmp(t->apps[i].name, name) == 0)
            return &t->apps[i];
    }
    return NULL;
}

static void check_template(const cfg_t *c, const char *id, int vcpu, int ram, int disk,
                           const char *app, int port, const char *cmd_part)
{
    const cfg_template_t *t = cfg_template_find(c, id);
    const cfg_app_t *a = app_find(t, app);

    CHECK(t != NULL);
    if (t == NULL)
        return;
    CHECK_STR_EQ(t->id, id);
    CHECK_INT_EQ(t->floor_vcpu, vcpu);
    CHECK_INT_EQ(t->floor_ram_mb, ram);
    CHECK_INT_EQ(t->floor_disk_mb, disk);
    CHECK(t->name != NULL && t->name[0] != '\0');
    CHECK(t->description != NULL && t->description[0] != '\0');
    CHECK(a != NULL);
    if (a == NULL)
        return;
    CHECK_INT_EQ(a->port, port);
    CHECK_INT_EQ(a->protocol, CFG_PROTO_HTTP);
    CHECK(a->command != NULL && strstr(a->command, cmd_part) != NULL);
}

static void check_prices(const cfg_t *c, const char *name, int64_t in, int64_t cached, int64_t w5,
                         int64_t w1, int64_t out)
{
    const cfg_model_t *m = cfg_model_find(c, name);
    CHECK(m != NULL);
    if (m == NULL)
        return;
    CHECK(m->priced);
    CHECK_INT_EQ(m->prices.input_micro, in);
    CHECK_INT_EQ(m->prices.cached_input_micro, cached);
    CHECK_INT_EQ(m->prices.cache_write_5m_micro, w5);
    CHECK_INT_EQ(m->prices.cache_write_1h_micro, w1);
    CHECK_INT_EQ(m->prices.output_micro, out);
    /* Anthropic's models price the web search tool: $10 per 1,000 searches */
    CHECK_INT_EQ(m->prices.per_request_micro,
                 m->provider->kind == CFG_PROVIDER_ANTHROPIC ? 1000000 : 0);
}

static void test_shipped_config(void)
{
    char err[ERRBUF] = "";
    cfg_t *c = NULL;
    rb_err_t rc;

    env_clear();
    rc = cfg_load("config/rigbox.yaml", &c, err, sizeof(err));
    if (rc != RB_OK)
        fprintf(stderr, "load: %s\n", err);
    CHECK_INT_EQ(rc, RB_OK);
    if (c == NULL)
        return;
    CHECK_STR_EQ(c->models_path, "config/models.yaml");
    CHECK_STR_EQ(c->templates_dir, "config/templates");
    /* The five templates, sorted, with their floors and apps. */
    CHECK_INT_EQ(c->templates_len, 5);
    CHECK_STR_EQ(c->templates[0].id, "ai-agent-starter");
    CHECK_STR_EQ(c->templates[4].id, "web-fullstack");
    check_template(c, "base", 1, 512, 3072, "www", 8000, "-p 8000 -h /srv/www");
    check_template(c, "dev", 1, 1024, 4096, "editor", 8080, "8080");
    check_template(c, "ai-agent-starter", 1, 1024, 3072, "agent", 8000, "/chat/completions");
    check_template(c, "openclaw", 1, 1024, 2560, "gateway", 18789, "18789");
    check_template(c, "web-fullstack", 1, 1024, 3072, "frontend", 3000, "httpd -f -p 3000");
    check_template(c, "web-fullstack", 1, 1024, 3072, "api", 8000, "httpd -f -p 8000");
    CHECK_INT_EQ(cfg_template_find(c, "dev")->image, CFG_IMAGE_DEV);
    CHECK_STR_EQ(cfg_template_find(c, "base")->image_name, "base");
    CHECK_INT_EQ(app_find(cfg_template_find(c, "web-fullstack"), "frontend")->visibility,
                 CFG_VIS_PUBLIC);
    CHECK_INT_EQ(app_find(cfg_template_find(c, "base"), "www")->visibility, CFG_VIS_PRIVATE);
    CHECK(strstr(app_find(cfg_template_find(c, "ai-agent-starter"), "agent")->command,
                 "$OPENAI_API_KEY") != NULL);
    CHECK(cfg_template_find(c, "full") == NULL);
    /* Prices: USD per Mtok at 0.01 USD per credit -> micro-credits per Mtok, exactly. */
    check_prices(c, "gpt-4o", 250000000, 125000000, 250000000, 250000000, 1000000000);
    check_prices(c, "gpt-4o-mini", 15000000, 7500000, 15000000, 15000000, 60000000);
    check_prices(c, "gpt-4.1", 200000000, 50000000, 200000000, 200000000, 800000000);
    check_prices(c, "gpt-4.1-mini", 40000000, 10000000, 40000000, 40000000, 160000000);
    check_prices(c, "o3-mini", 110000000, 55000000, 110000000, 110000000, 440000000);
    check_prices(c, "gpt-5", 125000000, 12500000, 125000000, 125000000, 1000000000);
    check_prices(c, "gpt-5-mini", 25000000, 2500000, 25000000, 25000000, 200000000);
    check_prices(c, "gpt-5-nano", 5000000, 500000, 5000000, 5000000, 40000000);
    check_prices(c, "claude-sonnet-4-5", 300000000, 30000000, 375000000, 600000000, 1500000000);
    check_prices(c, "claude-haiku-4-5", 100000000, 10000000, 125000000, 200000000, 500000000);
    check_prices(c, "claude-opus-4-1", 1500000000, 150000000, 1875000000, 3000000000LL,
                 7500000000LL);
    check_prices(c, "openrouter-gpt-4o-mini", 15000000, 7500000, 15000000, 15000000, 60000000);
    CHECK(cfg_model_find(c, "o3-mini")->reasoning);
    CHECK(!cfg_model_find(c, "gpt-4o")->reasoning);
    CHECK_INT_EQ(cfg_model_find(c, "text-embedding-3-small")->type, CFG_MODEL_EMBEDDING);
    CHECK_INT_EQ(cfg_model_find(c, "text-embedding-3-small")->prices.input_micro, 2000000);
    CHECK_INT_EQ(cfg_model_find(c, "text-embedding-3-small")->prices.output_micro, 0);
    CHECK(!cfg_model_find(c, "local-model")->priced);
    CHECK_STR_EQ(cfg_model_find(c, "local-model")->provider->name, "local");
    CHECK_INT_EQ(cfg_model_find(c, "gpt-4o")->max_output, 16384);
    CHECK_INT_EQ(cfg_model_find(c, "gpt-4o")->max_output_default, 4096);
    CHECK_INT_EQ(cfg_model_find(c, "gpt-4o")->context_window, 128000);
    CHECK_INT_EQ(cfg_model_find(c, "local-model")->context_window, 0); /* not stated */
    cfg_free(c);
}

static void test_shipped_providers_plans(void)
{
    char err[ERRBUF] = "";
    cfg_t *c = NULL;

    env_clear();
    CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_OK);
    if (c == NULL)
        return;
    /* Providers. */
    CHECK_INT_EQ(c->providers_len, 4);
    CHECK_STR_EQ(cfg_provider_find(c, "openai")->base_url, "https://api.openai.com");
    CHECK_STR_EQ(cfg_provider_find(c, "openai")->api_key_env, "OPENAI_API_KEY");
    CHECK(cfg_provider_find(c, "openai")->api_key == NULL);
    CHECK_INT_EQ(cfg_provider_find(c, "anthropic")->kind, CFG_PROVIDER_ANTHROPIC);
    CHECK_STR_EQ(cfg_provider_find(c, "anthropic")->anthropic_version, "2023-06-01");
    CHECK_STR_EQ(cfg_provider_find(c, "openrouter")->base_url, "https://openrouter.ai/api");
    CHECK_INT_EQ(cfg_provider_find(c, "openrouter")->kind, CFG_PROVIDER_OPENAI_COMPATIBLE);
    CHECK_STR_EQ(cfg_provider_find(c, "local")->base_url, "http://127.0.0.1:8000");
    CHECK(cfg_provider_find(c, "google") == NULL);
    /* Plans. */
    CHECK_STR_EQ(c->default_plan->name, "free");
    CHECK_INT_EQ(cfg_plan_find(c, "free")->max_vms, 2);
    CHECK_INT_EQ(cfg_plan_find(c, "free")->max_ram_per_vm_mb, 1024);
    CHECK_INT_EQ(cfg_plan_find(c, "free")->max_vcpu_per_vm, 1);
    CHECK_INT_EQ(cfg_plan_find(c, "free")->max_disk_total_mb, 8192);
    CHECK_INT_EQ(cfg_plan_find(c, "free")->credits_per_month, 250);
    CHECK_INT_EQ(cfg_plan_find(c, "free")->allowed_models_len, 0);
    CHECK_INT_EQ(cfg_plan_find(c, "pro")->max_vms, 10);
    CHECK_INT_EQ(cfg_plan_find(c, "pro")->max_ram_per_vm_mb, 4096);
    CHECK_INT_EQ(cfg_plan_find(c, "pro")->max_vcpu_per_vm, 4);
    CHECK_INT_EQ(cfg_plan_find(c, "pro")->credits_per_month, 2000);
    CHECK(cfg_plan_find(c, "enterprise") == NULL);
    /* Every shipped plan admits max_vms workspaces of every shipped template at its floors (free
     * used to cap the disk at 4096 MB in all: one workspace, for a plan of two). */
    for (size_t p = 0; p < c->plans_len; p++) {
        const cfg_plan_t *pl = &c->plans[p];
        for (size_t t = 0; t < c->templates_len; t++) {
            const cfg_template_t *tp = &c->templates[t];
            if (tp->floor_disk_mb * pl->max_vms > pl->max_disk_total_mb ||
                tp->floor_ram_mb * pl->max_vms > pl->max_ram_total_mb ||
                tp->floor_vcpu * pl->max_vms > pl->max_running_vcpus)
                fprintf(stderr, "  plan %s cannot hold %d x template %s\n", pl->name,
                        (int)pl->max_vms, tp->id);
            CHECK(tp->floor_disk_mb * pl->max_vms <= pl->max_disk_total_mb);
            CHECK(tp->floor_ram_mb * pl->max_vms <= pl->max_ram_total_mb);
            CHECK(tp->floor_vcpu * pl->max_vms <= pl->max_running_vcpus);
        }
    }
    CHECK(c->templates_len == 5);
    /* The shipped rigbox.yaml spells out the defaults. */
    CHECK_INT_EQ(c->server.workers, 2);
    CHECK_STR_EQ(c->gateway.ai_listen, "127.0.0.1:9090");
    CHECK_INT_EQ(c->gateway.limits.body_max_bytes, 8 << 20);
    CHECK_STR_EQ(c->credits.usd_per_credit, "0.01");
    CHECK_STR_EQ(c->apps_domain, "localhost");
    cfg_free(c);
}

static void test_defaults(void)
{
    cfg_t *c = NULL;
    const cfg_gateway_limits_t *g;

    CHECK_INT_EQ(cfg_load_defaults(&c), RB_OK);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    g = &c->gateway.limits;
    CHECK_INT_EQ(c->server.workers, 2);
    CHECK_INT_EQ(c->server.log_level, RB_LOG_INFO);
    CHECK_INT_EQ(c->server.log_format, CFG_LOG_TEXT);
    CHECK_STR_EQ(c->gateway.ai_listen, "127.0.0.1:9090");
    CHECK_STR_EQ(c->gateway.apps_listen, "127.0.0.1:8080");
    CHECK_INT_EQ(g->body_max_bytes, 8 << 20);
    CHECK_INT_EQ(g->sse_line_max_bytes, 16 << 20);
    CHECK_INT_EQ(g->json_depth_max, 64);
    CHECK_INT_EQ(g->json_tokens_max, 524288);
    CHECK_INT_EQ(g->upstream_connect_timeout_ms, 5000);
    CHECK_INT_EQ(g->upstream_total_timeout_ms, 3600000);
    CHECK_INT_EQ(g->upstream_first_byte_timeout_ms, 600000);
    CHECK_INT_EQ(g->upstream_idle_timeout_ms, 600000);
    CHECK_INT_EQ(g->stream_high_water_bytes, 256 << 10);
    CHECK_INT_EQ(g->stream_low_water_bytes, 64 << 10);
    CHECK_INT_EQ(g->keepalive_interval_ms, 15000);
    CHECK_INT_EQ(g->client_send_timeout_ms, 60000);
    CHECK_INT_EQ(g->drain_timeout_ms, 30000);
    CHECK_INT_EQ(g->drain_bytes_max, 8 << 20);
    CHECK_INT_EQ(g->drains_max, 64);
    CHECK_INT_EQ(g->writer_queue_max, 100000);
    CHECK_INT_EQ(g->writer_batch_max, 1000);
    CHECK_INT_EQ(g->writer_flush_ms, 50);
    CHECK_INT_EQ(g->upstream_connections_max, 256);
    CHECK_INT_EQ(g->identity_cache_ttl_ms, 60000);
    CHECK_STR_EQ(c->control.listen, "127.0.0.1:8081");
    CHECK_INT_EQ(c->control.page_size_default, 50);
    CHECK_INT_EQ(c->control.page_size_max, 200);
    CHECK_INT_EQ(c->control.logs_lines_max, 10000);
    CHECK_STR_EQ(c->database.url, "host=/var/run/postgresql user=postgres dbname=rigbox");
    CHECK_INT_EQ(c->database.pool_size, 4);
    CHECK_INT_EQ(c->database.connect_timeout_s, 5);
    CHECK_STR_EQ(c->credits.usd_per_credit, "0.01");
    CHECK_INT_EQ(c->credits.chars_per_token, 4);
    CHECK_INT_EQ(c->credits.lease_chunk_micro, c->credits.lease_chunk_credits * 1000000);
    CHECK(c->credits.lease_ttl_s > 0);
    CHECK_STR_EQ(c->default_plan->name, "free");
    CHECK_INT_EQ(c->plans_len, 2);
    CHECK_STR_EQ(c->vmm.qemu_binary, "qemu-system-x86_64");
    CHECK_INT_EQ(c->vmm.accel, CFG_ACCEL_AUTO);
    CHECK_STR_EQ(c->vmm.image_dir, "var/images");
    CHECK_STR_EQ(c->vmm.state_dir, "var/vms");
    CHECK(c->vmm.stop_timeout_ms > 0 && c->vmm.boot_timeout_ms > 0 && c->vmm.vms_max > 0);
    CHECK_STR_EQ(c->apps_domain, "localhost");
    CHECK_STR_EQ(c->secrets.master_key_file, "var/secrets/master.key");
    CHECK_STR_EQ(c->secrets.metrics_token_file, "var/secrets/metrics.token");
    CHECK(c->secrets.master_key == NULL && c->secrets.session_secret == NULL &&
          c->secrets.metrics_token == NULL);
    CHECK_STR_EQ(c->models_path, "models.yaml");
    CHECK_INT_EQ(c->models_len, 0);
    CHECK(cfg_model_find(c, "gpt-4o") == NULL);
    cfg_free(c);
    cfg_free(NULL);
}

/* The minimal config in tests/unit/config/data: relative paths, a key file, a custom plan. */
static void test_minimal_config(void)
{
    char err[ERRBUF] = "";
    cfg_t *c = NULL;
    const cfg_model_t *m;
    const cfg_provider_t *p;

    env_clear();
    CHECK_INT_EQ(cfg_load("tests/unit/config/data/minimal/rigbox.yaml", &c, err, sizeof(err)),
                 RB_OK);
    if (c == NULL) {
        fprintf(stderr, "load: %s\n", err);
        return;
    }
    CHECK_INT_EQ(c->server.workers, 3);
    CHECK_INT_EQ(c->server.log_format, CFG_LOG_JSON);
    CHECK_STR_EQ(c->templates_dir, "tests/unit/config/data/minimal/templates");
    CHECK_STR_EQ(c->default_plan->name, "solo");
    CHECK_INT_EQ(c->default_plan->max_vms, 1);
    CHECK_INT_EQ(c->default_plan->max_vcpu_per_vm, 1); /* left out: the free plan's value */
    CHECK_INT_EQ(c->default_plan->allowed_models_len, 2);
    CHECK(cfg_plan_find(c, "free") == NULL); /* plans: replaces the built-in plans */
    p = cfg_provider_find(c, "my-local");
    CHECK(p != NULL);
    if (p != NULL) {
        CHECK_STR_EQ(p->base_url, "http://127.0.0.1:8000");
        CHECK_STR_EQ(p->api_key_file, "tests/unit/config/data/minimal/keys/local.key");
        CHECK_STR_EQ(p->api_key, "sk-local-from-file");
    }
    m = cfg_model_find(c, "tiny");
    CHECK(m != NULL);
    if (m != NULL) {
        /* 1 credit = 0.001 USD here: 0.5 USD = 500 credits. */
        CHECK_INT_EQ(m->prices.input_micro, 500000000);
        CHECK_INT_EQ(m->prices.output_micro, 1000000000);
        CHECK_INT_EQ(m->prices.cached_input_micro, 500000000);
        CHECK_INT_EQ(m->prices.per_request_micro, 100000);
        CHECK_STR_EQ(m->upstream, "org/tiny-1b");
    }
    CHECK(cfg_model_find(c, "my-local/org/tiny-1b") == m);
    CHECK_INT_EQ(c->templates_len, 1);
    CHECK_INT_EQ(c->templates[0].egress, CFG_EGRESS_NONE);
    CHECK_STR_EQ(c->templates[0].name, "Tiny");
    CHECK_INT_EQ(c->templates[0].apps_len, 0);
    cfg_free(c);
}

/* ---- error paths ------------------------------------------------------------------------------
 */

static char tmp_dir[TMP_PATH];

static void write_file(const char *rel, const char *text)
{
    char path[TMP_PATH * 2];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmp_dir, rel);
    f = fopen(path, "w");
    RB_ASSERT(f != NULL);
    fputs(text, f);
    fclose(f);
}

static const char good_models[] = "providers:\n"
                                  "  openai: {kind: openai}\n"
                                  "models:\n"
                                  "  m1: {provider: openai, prices: {input: 1, output: 2}}\n";
static const char good_template[] = "name: T\n";

/* Writes the three files (NULL = the good one), loads, and checks the code and that the message
 * contains each of the expected parts ("rigbox.yaml:3:", "server.workers", …). */
static void expect_error(const char *main_yaml, const char *models_yaml, const char *tmpl_yaml,
                         rb_err_t want, const char *part1, const char *part2, const char *part3)
{
    char err[ERRBUF] = "", path[TMP_PATH * 2];
    cfg_t *c = (cfg_t *)1;
    rb_err_t rc;

    write_file("rigbox.yaml", main_yaml != NULL ? main_yaml : "");
    write_file("models.yaml", models_yaml != NULL ? models_yaml : good_models);
    write_file("templates/t.yaml", tmpl_yaml != NULL ? tmpl_yaml : good_template);
    snprintf(path, sizeof(path), "%s/rigbox.yaml", tmp_dir);
    c = TEST_STALE(cfg_t);
    rc = cfg_load(path, &c, err, sizeof(err));
    CHECK_INT_EQ(rc, want);
    CHECK(c == NULL);
    CHECK(part1 == NULL || strstr(err, part1) != NULL);
    CHECK(part2 == NULL || strstr(err, part2) != NULL);
    CHECK(part3 == NULL || strstr(err, part3) != NULL);
    if (rc != want || (part1 && !strstr(err, part1)) || (part2 && !strstr(err, part2)) ||
        (part3 && !strstr(err, part3)))
        fprintf(stderr, "  message was: %s\n", err);
    cfg_free(c == (cfg_t *)1 ? NULL : c);
}

static void test_errors_main(void)
{
    const rb_err_t C = RB_ERR_CONFIG;

    expect_error("server:\n  workerz: 2\n", NULL, NULL, C,
                 "rigbox.yaml:2: server.workerz:", "unknown key", "workers");
    expect_error("server:\n  workers: abc\n", NULL, NULL, C,
                 "rigbox.yaml:2: server.workers:", "expected an integer from 1 to 64",
                 "got \"abc\"");
    expect_error("server:\n  workers: 2x\n", NULL, NULL, C, "rigbox.yaml:2:", "server.workers",
                 "\"2x\"");
    expect_error("server:\n  workers: \"2\"\n", NULL, NULL, C, "rigbox.yaml:2:", "server.workers",
                 "integer");
    expect_error("# c\ngateway:\n  limits:\n    json_depth_max: 100000\n", NULL, NULL, C,
                 "rigbox.yaml:4: gateway.limits.json_depth_max:", "from 2 to 1024", "100000");
    /* 0 once passed here, and the gateway then aborted at start (its cache wants a TTL) */
    expect_error("gateway:\n  limits:\n    identity_cache_ttl_ms: 0\n", NULL, NULL, C,
                 "rigbox.yaml:3: gateway.limits.identity_cache_ttl_ms:", "from 1 to", "\"0\"");
    expect_error("vmm:\n  accel: xen\n", NULL, NULL, C,
                 "rigbox.yaml:2: vmm.accel:", "one of auto, kvm or tcg", "\"xen\"");
    expect_error("server:\n  workers: [1, 2\n", NULL, NULL, RB_ERR_PARSE,
                 "rigbox.yaml:", "YAML syntax error", NULL);
    expect_error("a: b\n  c: d\n", NULL, NULL, RB_ERR_PARSE, "rigbox.yaml:2:", "syntax", NULL);
    expect_error("- a\n- b\n", NULL, NULL, C, "rigbox.yaml:1:", "expected a mapping", NULL);
    expect_error("just text\n", NULL, NULL, C, "rigbox.yaml:1:", "expected a mapping", NULL);
    expect_error("server: 3\n", NULL, NULL, C, "rigbox.yaml:1: server:", "expected a mapping",
                 NULL);
    expect_error("server:\n  workers: 2\nserver:\n  workers: 3\n", NULL, NULL, C,
                 "rigbox.yaml:3: server:", "duplicate key", NULL);
    expect_error("a: 1\n---\nb: 2\n", NULL, NULL, C, "rigbox.yaml:3:", "second", NULL);
    expect_error("gateway:\n  ai_listen: localhost\n", NULL, NULL, C,
                 "rigbox.yaml:2: gateway.ai_listen:", "host:port", NULL);
    expect_error("apps_domain: Not A Host\n", NULL, NULL, C,
                 "rigbox.yaml:1: apps_domain:", "DNS name", NULL);
    expect_error("credits:\n  usd_per_credit: \"0\"\n", NULL, NULL, C,
                 "rigbox.yaml:2: credits.usd_per_credit:", "positive decimal", NULL);
    expect_error("gateway:\n  limits:\n    stream_low_water_bytes: 300000\n", NULL, NULL, C,
                 "rigbox.yaml:3: gateway.limits.stream_low_water_bytes:", "stream_high_water",
                 NULL);
    expect_error("control: {page_size_default: 500}\n", NULL, NULL, C,
                 "rigbox.yaml:1: control.page_size_default:", "page_size_max", NULL);
    expect_error("plans:\n  free: {max_vms: 1}\ndefault_plan: gold\n", NULL, NULL, C,
                 "rigbox.yaml:3: default_plan:", "\"gold\"", NULL);
    expect_error("plans:\n  free:\n    max_vmz: 1\n", NULL, NULL, C,
                 "rigbox.yaml:3: plans.free.max_vmz:", "unknown key", "max_vms");
    expect_error("plans:\n  free:\n    allowed_models: [m1, nope]\n", NULL, NULL, C,
                 "rigbox.yaml:3: plans.free:", "\"nope\"", NULL);
    expect_error("plans:\n  free:\n    max_ram_per_vm_mb: 4096\n", NULL, NULL, C,
                 "rigbox.yaml:3: plans.free:", "max_ram_total_mb", NULL);
    expect_error("plans: {}\n", NULL, NULL, C, "rigbox.yaml:1: plans:", "at least one plan", NULL);
    expect_error("models: nope.yaml\n", NULL, NULL, RB_ERR_IO, "nope.yaml", "cannot read", NULL);
    expect_error("templates: no-such-dir\n", NULL, NULL, RB_ERR_IO, "no-such-dir", "cannot open",
                 NULL);
}

static void test_errors_models(void)
{
    const rb_err_t C = RB_ERR_CONFIG;
    const char *prov = "providers:\n  openai: {kind: openai}\nmodels:\n";
    char y[1024];

    expect_error(NULL,
                 "providers:\n  openai: {kind: openai}\nmodels:\n  m1: {provider: openai}\n"
                 "  m1: {provider: openai}\n",
                 NULL, C, "models.yaml:5: models:", "duplicate key \"m1\"", NULL);
    snprintf(y, sizeof(y),
             "%s  a: {provider: openai, aliases: [x]}\n  b:\n    provider: openai\n"
             "    aliases: [x]\n",
             prov);
    expect_error(NULL, y, NULL, C, "models.yaml:7: models.b:", "alias \"x\"", "models.a");
    snprintf(y, sizeof(y), "%s  a: {provider: openai}\n  b: {provider: openai, aliases: [a]}\n",
             prov);
    expect_error(NULL, y, NULL, C, "models.yaml:5: models.b:", "duplicate", NULL);
    snprintf(y, sizeof(y), "%s  m:\n    provider: openia\n", prov);
    expect_error(NULL, y, NULL, C, "models.yaml:5: models.m:", "provider", "\"openia\"");
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    prices: {input: 1.2.3, output: 1}\n",
             prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m.prices.input:", "decimal", "\"1.2.3\"");
    snprintf(y, sizeof(y),
             "%s  m:\n    provider: openai\n    prices:\n      input: 1\n"
             "      output: -1\n",
             prov);
    expect_error(NULL, y, NULL, C, "models.yaml:8: models.m.prices.output:", "decimal", "\"-1\"");
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    prices: {input: abc, output: 1}\n",
             prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m.prices.input:", "\"abc\"", NULL);
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    prices: {input: 1e-3, output: 1}\n",
             prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m.prices.input:", "\"1e-3\"", NULL);
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    prices: {input: 1}\n", prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m.prices:", "\"output\"", NULL);
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    prices: {inptu: 1}\n", prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m.prices.inptu:", "unknown key",
                 "cached_input");
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    reasoning: yes\n", prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m.reasoning:", "true or false", NULL);
    snprintf(y, sizeof(y), "%s  m:\n    upstream: x\n", prov);
    expect_error(NULL, y, NULL, C, "models.yaml:4: models.m:", "\"provider\"", NULL);
    snprintf(y, sizeof(y),
             "%s  m:\n    provider: openai\n    max_output_default: 9000\n"
             "    max_output: 100\n",
             prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m:", "max_output", NULL);
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    context_window: 4000\n", prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m:", "max_output_default (4096)",
                 "context_window (4000)");
    snprintf(y, sizeof(y), "%s  m:\n    provider: openai\n    context_window: -1\n", prov);
    expect_error(NULL, y, NULL, C, "models.yaml:6: models.m.context_window:", NULL, NULL);
    expect_error(NULL, "providers:\n  x: {kind: openai-compatible}\n", NULL, C,
                 "models.yaml:2: providers.x:", "base_url", NULL);
    expect_error(NULL, "providers:\n  x:\n    kind: grpc\n", NULL, C,
                 "models.yaml:3: providers.x.kind:", "openai-compatible", "\"grpc\"");
    expect_error(NULL, "providers:\n  x:\n    kind: openai\n    base_url: ftp://a\n", NULL, C,
                 "models.yaml:4: providers.x.base_url:", "http", NULL);
    expect_error(NULL, "providers:\n  x:\n    kind: openai\n    api_key_file: missing.key\n", NULL,
                 C, "models.yaml:4: providers.x:", "missing.key", "cannot read");
    expect_error(NULL, "providerz: {}\n", NULL, C, "models.yaml:1: providerz:", "unknown key",
                 NULL);
    expect_error(NULL, "[1, 2]\n", NULL, C, "models.yaml:1:", "mapping", NULL);
}

static void test_errors_templates(void)
{
    const rb_err_t C = RB_ERR_CONFIG;

    expect_error(NULL, NULL, "name: T\nfloors:\n  vcpu: 0\n", C,
                 "templates/t.yaml:3: floors.vcpu:", "from 1 to 256", NULL);
    expect_error(NULL, NULL, "id: other\n", C, "t.yaml:1: id:", "\"t\"", NULL);
    expect_error(NULL, NULL, "image: windows\n", C, "t.yaml:1: image:", "base or dev", NULL);
    expect_error(NULL, NULL, "egress: some\n", C, "t.yaml:1: egress:", "all or none", NULL);
    expect_error(NULL, NULL, "apps:\n  - name: a\n    port: 80\n  - name: b\n    port: 80\n", C,
                 "t.yaml:5: apps[1]:", "port: 80", NULL);
    expect_error(NULL, NULL, "apps:\n  - name: a\n    port: 80\n  - name: a\n    port: 81\n", C,
                 "t.yaml:4: apps[1]:", "\"a\"", NULL);
    expect_error(NULL, NULL, "apps:\n  - name: a\n    port: 70000\n", C,
                 "t.yaml:3: apps[0].port:", "65535", NULL);
    expect_error(NULL, NULL, "apps:\n  - name: a\n    visibility: secret\n    port: 1\n", C,
                 "t.yaml:3: apps[0].visibility:", "privileged", NULL);
    expect_error(NULL, NULL, "apps:\n  - name: a\n    prot: 1\n", C,
                 "t.yaml:3: apps[0].prot:", "unknown key", "protocol");
    expect_error(NULL, NULL, "apps:\n  - port: 1\n", C, "t.yaml:2: apps[0]:", "\"name\"", NULL);
    expect_error(NULL, NULL, "apps:\n  - name: My App\n    port: 1\n", C,
                 "t.yaml:2: apps[0].name:", "lowercase", NULL);
    expect_error(NULL, NULL, "apps: {a: 1}\n", C, "t.yaml:1: apps:", "list", NULL);
    expect_error(NULL, NULL, "env:\n  1BAD: x\n", C, "t.yaml:2: env:", "environment variable",
                 NULL);
    expect_error(NULL, NULL, "env:\n  GOOD: [x]\n", C, "t.yaml:2: env.GOOD:", "string", NULL);
    expect_error(NULL, NULL, "floors: {vcpu: 1\n", RB_ERR_PARSE, "t.yaml:", "syntax", NULL);
}

static void test_errors_misc(void)
{
    char err[16];
    cfg_t *c = NULL;
    const char bad[] = "server: {workers: 999}\n";

    /* A small buffer truncates, never overflows; a NULL buffer is allowed. */
    memset(err, 'x', sizeof(err));
    CHECK_INT_EQ(cfg_load_buffer(CFG_DOC_MAIN, "r.yaml", bad, strlen(bad), &c, err, sizeof(err)),
                 RB_ERR_CONFIG);
    CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    CHECK(strncmp(err, "r.yaml:1: serv", 14) == 0);
    c = TEST_STALE(cfg_t);
    CHECK_INT_EQ(cfg_load_buffer(CFG_DOC_MAIN, "r.yaml", bad, strlen(bad), &c, NULL, 0),
                 RB_ERR_CONFIG);
    CHECK(c == NULL);
    CHECK_INT_EQ(cfg_load("/nonexistent/rigbox.yaml", &c, err, sizeof(err)), RB_ERR_IO);
    /* An empty main document is all defaults. */
    CHECK_INT_EQ(cfg_load_buffer(CFG_DOC_MAIN, "r.yaml", "", 0, &c, NULL, 0), RB_OK);
    CHECK(c != NULL && c->server.workers == 2);
    cfg_free(c);
}

/* ---- environment --------------------------------------------------------------------------------
 */

static void test_env_overrides(void)
{
    char err[ERRBUF] = "";
    cfg_t *c = NULL;
    const cfg_provider_t *p;

    env_clear();
    setenv("RIGBOX_OPENAI_API_KEY", "sk-test-123", 1);
    setenv("RIGBOX_OPENAI_BASE_URL", "http://127.0.0.1:9999/", 1);
    setenv("RIGBOX_DATABASE_URL", "host=/tmp/pg dbname=t", 1);
    setenv("ANTHROPIC_API_KEY", "sk-ant-from-api-key-env", 1);
    setenv("RIGBOX_MASTER_KEY", "master-secret", 1);
    setenv("RIGBOX_METRICS_TOKEN", "metrics-secret-0123", 1);
    setenv("RIGBOX_AI_LISTEN", "127.0.0.1:19090", 1);
    setenv("RIGBOX_LOG_LEVEL", "debug", 1);
    CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_OK);
    if (c != NULL) {
        p = cfg_provider_find(c, "openai");
        CHECK_STR_EQ(p->api_key, "sk-test-123");
        CHECK_STR_EQ(p->base_url, "http://127.0.0.1:9999");
        CHECK_STR_EQ(c->database.url, "host=/tmp/pg dbname=t");
        CHECK_STR_EQ(cfg_provider_find(c, "anthropic")->api_key, "sk-ant-from-api-key-env");
        CHECK_STR_EQ(cfg_provider_find(c, "anthropic")->base_url, "https://api.anthropic.com");
        CHECK(cfg_provider_find(c, "openrouter")->api_key == NULL);
        CHECK_STR_EQ(c->secrets.master_key, "master-secret");
        CHECK_STR_EQ(c->secrets.metrics_token, "metrics-secret-0123");
        CHECK(c->secrets.session_secret == NULL);
        CHECK_STR_EQ(c->gateway.ai_listen, "127.0.0.1:19090");
        CHECK_INT_EQ(c->server.log_level, RB_LOG_DEBUG);
        /* A model's provider pointer sees the override. */
        CHECK_STR_EQ(cfg_model_find(c, "gpt-4o")->provider->base_url, "http://127.0.0.1:9999");
        cfg_free(c);
    }
    /* RIGBOX_<NAME>_API_KEY wins over api_key_env. */
    setenv("RIGBOX_ANTHROPIC_API_KEY", "sk-ant-rigbox", 1);
    CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_OK);
    if (c != NULL) {
        CHECK_STR_EQ(cfg_provider_find(c, "anthropic")->api_key, "sk-ant-rigbox");
        cfg_free(c);
    }
    /* and over api_key_file; '-' in a provider name becomes '_'. */
    setenv("RIGBOX_MY_LOCAL_API_KEY", "sk-env-beats-file", 1);
    CHECK_INT_EQ(cfg_load("tests/unit/config/data/minimal/rigbox.yaml", &c, err, sizeof(err)),
                 RB_OK);
    if (c != NULL) {
        CHECK_STR_EQ(cfg_provider_find(c, "my-local")->api_key, "sk-env-beats-file");
        cfg_free(c);
    }
    /* A bad override fails with the variable's name and never echoes a key. */
    setenv("RIGBOX_OPENAI_BASE_URL", "not-a-url", 1);
    c = TEST_STALE(cfg_t);
    CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_ERR_CONFIG);
    CHECK(c == NULL);
    CHECK(strstr(err, "RIGBOX_OPENAI_BASE_URL") != NULL);
    CHECK(strstr(err, "sk-test-123") == NULL);
    unsetenv("RIGBOX_OPENAI_BASE_URL");
    setenv("RIGBOX_AI_LISTEN", "nowhere", 1);
    CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_ERR_CONFIG);
    CHECK(strstr(err, "environment: RIGBOX_AI_LISTEN: expected host:port") != NULL);
    unsetenv("RIGBOX_AI_LISTEN");
    setenv("RIGBOX_LOG_LEVEL", "loud", 1);
    CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_ERR_CONFIG);
    CHECK(strstr(err, "RIGBOX_LOG_LEVEL") != NULL);
    unsetenv("RIGBOX_LOG_LEVEL");
    /* a secret that fails its one check (length) is named, never echoed */
    {
        static char secret[CFG_STRING_LEN_MAX + 2];
        memset(secret, 'k', sizeof(secret) - 1);
        memcpy(secret, "sk-secret-", 10);
        setenv("RIGBOX_MASTER_KEY", secret, 1);
        CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_ERR_CONFIG);
        CHECK(strstr(err, "RIGBOX_MASTER_KEY") != NULL);
        CHECK(strstr(err, "sk-secret-") == NULL);
    }
    env_clear();
}

/* ---- lookups
 * -------------------------------------------------------------------------------------- */

static void test_model_find(void)
{
    char err[ERRBUF] = "";
    cfg_t *c = NULL;
    const cfg_model_t *mini, *sonnet;

    env_clear();
    CHECK_INT_EQ(cfg_load("config/rigbox.yaml", &c, err, sizeof(err)), RB_OK);
    if (c == NULL)
        return;
    mini = cfg_model_find(c, "gpt-4o-mini");
    sonnet = cfg_model_find(c, "claude-sonnet-4-5");
    CHECK(mini != NULL && sonnet != NULL);
    CHECK_STR_EQ(mini->name, "gpt-4o-mini");
    CHECK_STR_EQ(mini->upstream, "gpt-4o-mini");
    CHECK_STR_EQ(mini->provider->name, "openai");
    /* aliases */
    CHECK(cfg_model_find(c, "gpt-4o-mini-2024-07-18") == mini);
    CHECK(cfg_model_find(c, "sonnet") == sonnet);
    CHECK(cfg_model_find(c, "claude-sonnet-4-5-20250929") == sonnet);
    /* provider/upstream slugs, and provider/alias */
    CHECK(cfg_model_find(c, "openai/gpt-4o-mini") == mini);
    CHECK(cfg_model_find(c, "anthropic/claude-sonnet-4-5") == sonnet);
    CHECK(cfg_model_find(c, "anthropic/sonnet") == sonnet);
    CHECK_STR_EQ(cfg_model_find(c, "openrouter/openai/gpt-4o-mini")->name,
                 "openrouter-gpt-4o-mini");
    CHECK_STR_EQ(cfg_model_find(c, "openrouter-gpt-4o-mini")->upstream, "openai/gpt-4o-mini");
    /* misses */
    CHECK(cfg_model_find(c, "openai/claude-sonnet-4-5") == NULL);
    CHECK(cfg_model_find(c, "GPT-4O-MINI") == NULL);
    CHECK(cfg_model_find(c, "gpt-4o-mini ") == NULL);
    CHECK(cfg_model_find(c, "/gpt-4o") == NULL);
    CHECK(cfg_model_find(c, "openai/") == NULL);
    CHECK(cfg_model_find(c, "") == NULL);
    CHECK(cfg_model_find(c, "nosuch/gpt-4o") == NULL);
    cfg_free(c);
}

/* ---- documents from memory ----------------------------------------------------------------------
 */

static void test_load_buffer(void)
{
    const char models[] = "providers:\n  a: {kind: anthropic}\nmodels:\n"
                          "  m: {provider: a, prices: {input: \"0.000001\", output: 0.0000001}}\n";
    const char tmpl[] = "floors: {vcpu: 2}\napps:\n  - {name: x, port: 22, protocol: tcp}\n";
    char err[ERRBUF] = "";
    cfg_t *c = NULL;

    env_clear();
    CHECK_INT_EQ(
        cfg_load_buffer(CFG_DOC_MODELS, "m.yaml", models, strlen(models), &c, err, sizeof(err)),
        RB_OK);
    if (c != NULL) {
        /* 0.000001 USD / 0.01 = 0.0001 credit = 100 micro; 1e-7 USD = 10 micro. */
        CHECK_INT_EQ(cfg_model_find(c, "m")->prices.input_micro, 100);
        CHECK_INT_EQ(cfg_model_find(c, "m")->prices.output_micro, 10);
        CHECK_STR_EQ(cfg_provider_find(c, "a")->base_url, "https://api.anthropic.com");
        CHECK_STR_EQ(cfg_provider_find(c, "a")->anthropic_version, "2023-06-01");
        cfg_free(c);
    }
    CHECK_INT_EQ(
        cfg_load_buffer(CFG_DOC_TEMPLATE, "dir/box.yaml", tmpl, strlen(tmpl), &c, err, sizeof(err)),
        RB_OK);
    if (c != NULL) {
        const cfg_template_t *t = cfg_template_find(c, "box");
        CHECK(t != NULL);
        CHECK_INT_EQ(t->floor_vcpu, 2);
        CHECK_INT_EQ(t->floor_ram_mb, 512);
        CHECK_INT_EQ(t->apps[0].protocol, CFG_PROTO_TCP);
        CHECK(t->apps[0].command == NULL);
        CHECK_STR_EQ(cfg_protocol_name(t->apps[0].protocol), "tcp");
        cfg_free(c);
    }
    CHECK_STR_EQ(cfg_provider_kind_name(CFG_PROVIDER_OPENAI_COMPATIBLE), "openai-compatible");
    CHECK_STR_EQ(cfg_visibility_name(CFG_VIS_PRIVILEGED), "privileged");
}

/* ---- money
 * ------------------------------------------------------------------------------------------ */

static void test_decimal_to_micro(void)
{
    static const struct {
        const char *usd, *unit;
        rb_err_t err;
        int64_t micro;
    } cases[] = {
        {"2.50", "0.01", RB_OK, 250000000},
        {"2.5", "0.01", RB_OK, 250000000},
        {"0.075", "0.01", RB_OK, 7500000},
        {"0.005", "0.01", RB_OK, 500000},
        {"10", "0.01", RB_OK, 1000000000},
        {"75", "0.01", RB_OK, 7500000000LL},
        {"0", "0.01", RB_OK, 0},
        {"0.000", "0.01", RB_OK, 0},
        {"000.50", "0.01", RB_OK, 50000000},
        {"1", "1", RB_OK, 1000000},
        {"1", "0.001", RB_OK, 1000000000},
        /* rounding up */
        {"0.00000001", "0.01", RB_OK, 1},           /* exactly 1 micro */
        {"0.000000001", "0.01", RB_OK, 1},          /* 0.1 micro -> 1 */
        {"0.000000015", "0.01", RB_OK, 2},          /* 1.5 -> 2 */
        {"0.000000000000000001", "0.01", RB_OK, 1}, /* 18 decimals */
        {"1", "3", RB_OK, 333334},                  /* 333333.33… -> 333334 */
        {"2", "3", RB_OK, 666667},
        {"3", "3", RB_OK, 1000000},
        {"1.000000000000000000000", "0.01", RB_OK, 100000000}, /* trailing zeros are free */
        {"0.1", "0.07", RB_OK, 1428572},                       /* 1428571.43 -> 1428572 */
        /* limits */
        {"9223372036854.775807", "1", RB_OK, INT64_MAX},
        {"9223372036854.775808", "1", RB_ERR_LIMIT, 0},
        {"100000000000000", "0.01", RB_ERR_LIMIT, 0},
        {"99999999999999999999999999999999999999", "0.01", RB_ERR_LIMIT, 0},
        {"0.0000000000000000001", "0.01", RB_ERR_LIMIT, 0}, /* 19 decimals */
        {"1", "0.0000000000000000001", RB_ERR_LIMIT, 0},
        {"1234567890123456789012345678901234567890123", "1", RB_ERR_LIMIT, 0}, /* too long */
        /* malformed */
        {"", "0.01", RB_ERR_PARSE, 0},
        {"1.2.3", "0.01", RB_ERR_PARSE, 0},
        {"-1", "0.01", RB_ERR_PARSE, 0},
        {"+1", "0.01", RB_ERR_PARSE, 0},
        {"abc", "0.01", RB_ERR_PARSE, 0},
        {"1.", "0.01", RB_ERR_PARSE, 0},
        {".5", "0.01", RB_ERR_PARSE, 0},
        {"1e3", "0.01", RB_ERR_PARSE, 0},
        {" 1", "0.01", RB_ERR_PARSE, 0},
        {"1 ", "0.01", RB_ERR_PARSE, 0},
        {"1,5", "0.01", RB_ERR_PARSE, 0},
        {"0x10", "0.01", RB_ERR_PARSE, 0},
        {"1", "", RB_ERR_PARSE, 0},
        {"1", "-0.01", RB_ERR_PARSE, 0},
        {"1", "0", RB_ERR_INVAL, 0},
        {"1", "0.000", RB_ERR_INVAL, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t out = -7;
        rb_err_t rc = cfg_decimal_to_micro(cases[i].usd, cases[i].unit, &out);
        if (rc != cases[i].err || (rc == RB_OK && out != cases[i].micro))
            fprintf(stderr, "  case %zu: \"%s\" / \"%s\" -> %s %lld\n", i, cases[i].usd,
                    cases[i].unit, rb_err_name(rc), (long long)out);
        CHECK_INT_EQ(rc, cases[i].err);
        if (rc == RB_OK)
            CHECK_INT_EQ(out, cases[i].micro);
        else
            CHECK_INT_EQ(out, -7); /* untouched on error */
    }
}

/* ---- setup
 * ------------------------------------------------------------------------------------------ */

static void test_setup(void)
{
    char path[TMP_PATH * 2];

    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/rb-config-test-XXXXXX");
    CHECK(mkdtemp(tmp_dir) != NULL);
    snprintf(path, sizeof(path), "%s/templates", tmp_dir);
    CHECK(mkdir(path, 0700) == 0);
}

static void test_cleanup(void)
{
    static const char *const files[] = {"rigbox.yaml", "models.yaml", "templates/t.yaml",
                                        "templates", ""};
    char path[TMP_PATH * 2];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", tmp_dir, files[i]);
        CHECK(remove(path) == 0 || errno == ENOENT);
    }
}

TEST_MAIN(test_setup, test_shipped_config, test_shipped_providers_plans, test_defaults,
          test_minimal_config, test_errors_main, test_errors_models, test_errors_templates,
          test_errors_misc, test_env_overrides, test_model_find, test_load_buffer,
          test_decimal_to_micro, test_cleanup)
