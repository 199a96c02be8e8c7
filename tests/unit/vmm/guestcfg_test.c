/* Unit tests for vmm/guestcfg.c: the rendered text, validation, limits, and a round trip through a
 * real sh to prove the quoting holds for hostile values. */
#include "vmm/guestcfg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

static void test_render(void)
{
    vmm_env_t env[] = {{"FOO", "bar"}, {"OPENAI_BASE_URL", "http://x"}};
    vmm_app_t apps[] = {{"web", 8000, "httpd -f -p 8000 -h /www"}};
    vmm_guestcfg_t c = {.workspace_id = "ws-abc12345",
                        .token = "rbw_tok",
                        .ai_mode = "byok",
                        .ai_provider = "",
                        .ai_model = "gpt-4o-mini",
                        .env = env,
                        .nenv = 2,
                        .apps = apps,
                        .napps = 1};
    rb_buf_t b;

    rb_buf_init(&b, 0);
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_OK);
    CHECK_STR_EQ(rb_buf_cstr(&b),
                 "# rigbox guest config v1: a sh fragment, every value single-quoted\n"
                 "export RIGBOX_WORKSPACE_ID='ws-abc12345'\n"
                 "export RIGBOX_GATEWAY_URL='http://10.0.2.2:9090'\n"
                 "export OPENAI_BASE_URL='http://10.0.2.2:9090/v1'\n"
                 "export ANTHROPIC_BASE_URL='http://10.0.2.2:9090'\n"
                 "export OPENROUTER_BASE_URL='http://10.0.2.2:9090/v1'\n"
                 "export RIGBOX_TOKEN='rbw_tok'\n"
                 "export OPENAI_API_KEY='rbw_tok'\n"
                 "export ANTHROPIC_API_KEY='rbw_tok'\n"
                 "export OPENROUTER_API_KEY='rbw_tok'\n"
                 "export RIGBOX_AI_MODE='byok'\n"
                 "export RIGBOX_AI_MODEL='gpt-4o-mini'\n"
                 "export FOO='bar'\n"
                 "export OPENAI_BASE_URL='http://x'\n"
                 "rigbox_app 'web' 8000 'httpd -f -p 8000 -h /www'\n");
    b.len = 0;
    c.token = NULL;
    c.gateway_url = "http://gw:1";
    c.nenv = 0;
    c.napps = 0;
    c.ai_mode = c.ai_model = NULL;
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_OK);
    CHECK(strstr(rb_buf_cstr(&b), "API_KEY") == NULL);
    CHECK(strstr(rb_buf_cstr(&b), "RIGBOX_AI_") == NULL);
    CHECK(strstr(rb_buf_cstr(&b), "export OPENAI_BASE_URL='http://gw:1/v1'\n") != NULL);
    rb_buf_free(&b);
}

static void test_invalid(void)
{
    vmm_env_t env[1];
    vmm_app_t apps[2];
    vmm_guestcfg_t c = {.workspace_id = "ws-1", .env = env, .nenv = 1};
    rb_buf_t b;

    rb_buf_init(&b, 0);
    static const char *const bad_names[] = {"", "1ABC", "A-B", "A B", "A=B", "$(x)"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        env[0] = (vmm_env_t){bad_names[i], "v"};
        CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL);
    }
    env[0] = (vmm_env_t){"_ok9", NULL};
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL);
    c.nenv = 0;
    c.apps = apps;
    c.napps = 1;
    apps[0] = (vmm_app_t){"we b", 80, "x"};
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL);
    apps[0] = (vmm_app_t){"../x", 80, "x"};
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL);
    apps[0] = (vmm_app_t){"web", 0, "x"};
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL);
    apps[0] = (vmm_app_t){"web", 80, ""};
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL);
    apps[0] = (vmm_app_t){"web", 80, "x"};
    apps[1] = (vmm_app_t){"web", 81, "y"};
    c.napps = 2;
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL); /* duplicate name */
    c.napps = 0;
    c.workspace_id = "";
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_INVAL);
    CHECK_INT_EQ(b.len, 0);
    rb_buf_free(&b);
}

static void test_limits(void)
{
    vmm_env_t *env = calloc(VMM_GUESTCFG_ENV_MAX + 1, sizeof(*env));
    vmm_app_t apps[VMM_GUESTCFG_APPS_MAX + 1];
    char names[VMM_GUESTCFG_APPS_MAX + 1][8];
    char *big = malloc(VMM_GUESTCFG_VALUE_MAX + 2);
    vmm_guestcfg_t c = {.workspace_id = "ws-1", .env = env};
    rb_buf_t b;

    rb_buf_init(&b, 0);
    for (size_t i = 0; i < VMM_GUESTCFG_ENV_MAX + 1; i++)
        env[i] = (vmm_env_t){"V", "x"};
    c.nenv = VMM_GUESTCFG_ENV_MAX;
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_OK);
    c.nenv = VMM_GUESTCFG_ENV_MAX + 1;
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_LIMIT);
    memset(big, 'v', VMM_GUESTCFG_VALUE_MAX + 1);
    big[VMM_GUESTCFG_VALUE_MAX + 1] = '\0';
    env[0].value = big;
    c.nenv = 1;
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_LIMIT);
    c.nenv = 0;
    for (size_t i = 0; i < VMM_GUESTCFG_APPS_MAX + 1; i++) {
        snprintf(names[i], sizeof(names[i]), "a%zu", i);
        apps[i] = (vmm_app_t){names[i], 8000, "true"};
    }
    c.apps = apps;
    c.napps = VMM_GUESTCFG_APPS_MAX;
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_OK);
    c.napps = VMM_GUESTCFG_APPS_MAX + 1;
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_ERR_LIMIT);
    rb_buf_free(&b);
    free(big);
    free(env);
}

/* Sources the fragment in /bin/sh (as the guest init does) and checks values arrive verbatim. */
static void test_sh_round_trip(void)
{
    const char *nasty = "it's $HOME `id` $(id) \"q\" \\ \n line2 ;|&";
    vmm_env_t env[] = {{"NASTY", nasty}};
    vmm_app_t apps[] = {{"w.1", 8080, "echo 'a b' \"$X\""}};
    vmm_guestcfg_t c = {.workspace_id = "ws-'x'", .env = env, .nenv = 1, .apps = apps, .napps = 1};
    char path[] = "/tmp/rb-guestcfg-XXXXXX", cmd[512], out[512];
    rb_buf_t b, want;
    FILE *f;
    size_t n;
    int fd;

    rb_buf_init(&b, 0);
    rb_buf_init(&want, 0);
    CHECK_INT_EQ(vmm_guestcfg_render(&c, &b), RB_OK);
    fd = mkstemp(path);
    CHECK(fd != -1 && write(fd, b.base, b.len) == (ssize_t)b.len);
    close(fd);
    snprintf(cmd, sizeof(cmd),
             "sh -c 'rigbox_app() { printf \"[%%s|%%s|%%s]\" \"$1\" \"$2\" \"$3\"; }; . %s; "
             "printf \"%%s|%%s\" \"$RIGBOX_WORKSPACE_ID\" \"$NASTY\"'",
             path);
    f = popen(cmd, "r");
    CHECK(f != NULL);
    n = f != NULL ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[n] = '\0';
    if (f != NULL)
        CHECK_INT_EQ(pclose(f), 0);
    rb_buf_printf(&want, "[w.1|8080|echo 'a b' \"$X\"]ws-'x'|%s", nasty);
    CHECK_STR_EQ(out, rb_buf_cstr(&want));
    unlink(path);
    rb_buf_free(&b);
    rb_buf_free(&want);
}

TEST_MAIN(test_render, test_invalid, test_limits, test_sh_round_trip)
