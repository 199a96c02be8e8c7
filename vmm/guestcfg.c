#include "vmm/guestcfg.h"

#include <string.h>

static int env_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > VMM_GUESTCFG_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

static int app_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > VMM_GUESTCFG_APP_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* sh single quoting: everything is literal inside '…' except the quote itself, written '\''. */
static void quote(rb_buf_t *out, const char *s)
{
    rb_buf_append(out, "'", 1);
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\'')
            rb_buf_append(out, "'\\''", 4);
        else
            rb_buf_append(out, p, 1);
    }
    rb_buf_append(out, "'", 1);
}

static void export_var(rb_buf_t *out, const char *name, const char *value, const char *suffix)
{
    rb_buf_printf(out, "export %s=", name);
    if (suffix == NULL) {
        quote(out, value);
    } else {
        rb_buf_t v;
        rb_buf_init(&v, 0);
        rb_buf_printf(&v, "%s%s", value, suffix);
        quote(out, rb_buf_cstr(&v));
        rb_buf_free(&v);
    }
    rb_buf_append(out, "\n", 1);
}

static rb_err_t check(const vmm_guestcfg_t *c)
{
    if (c->workspace_id == NULL || c->workspace_id[0] == '\0')
        return RB_ERR_INVAL;
    if (c->nenv > VMM_GUESTCFG_ENV_MAX || c->napps > VMM_GUESTCFG_APPS_MAX)
        return RB_ERR_LIMIT;
    if ((c->nenv > 0 && c->env == NULL) || (c->napps > 0 && c->apps == NULL))
        return RB_ERR_INVAL;
    for (size_t i = 0; i < c->nenv; i++) {
        if (c->env[i].name == NULL || c->env[i].value == NULL || !env_name_ok(c->env[i].name))
            return RB_ERR_INVAL;
        if (strlen(c->env[i].value) > VMM_GUESTCFG_VALUE_MAX)
            return RB_ERR_LIMIT;
    }
    for (size_t i = 0; i < c->napps; i++) {
        const vmm_app_t *a = &c->apps[i];
        if (a->name == NULL || !app_name_ok(a->name) || a->port == 0 || a->command == NULL ||
            a->command[0] == '\0')
            return RB_ERR_INVAL;
        if (strlen(a->command) > VMM_GUESTCFG_COMMAND_MAX)
            return RB_ERR_LIMIT;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->apps[j].name, a->name) == 0)
                return RB_ERR_INVAL;
        }
    }
    return RB_OK;
}

rb_err_t vmm_guestcfg_render(const vmm_guestcfg_t *c, rb_buf_t *out)
{
    rb_err_t err;
    rb_buf_t t;
    const char *gw;

    RB_ASSERT(c != NULL && out != NULL);
    if ((err = check(c)) != RB_OK)
        return err;
    gw = c->gateway_url != NULL ? c->gateway_url : VMM_GUESTCFG_GATEWAY_DEFAULT;
    rb_buf_init(&t, VMM_GUESTCFG_TEXT_MAX);
    rb_buf_puts(&t, "# rigbox guest config v1: a sh fragment, every value single-quoted\n");
    export_var(&t, "RIGBOX_WORKSPACE_ID", c->workspace_id, NULL);
    export_var(&t, "RIGBOX_GATEWAY_URL", gw, NULL);
    export_var(&t, "OPENAI_BASE_URL", gw, "/v1");
    export_var(&t, "ANTHROPIC_BASE_URL", gw, NULL);
    export_var(&t, "OPENROUTER_BASE_URL", gw, "/v1");
    if (c->token != NULL) {
        export_var(&t, "RIGBOX_TOKEN", c->token, NULL);
        export_var(&t, "OPENAI_API_KEY", c->token, NULL);
        export_var(&t, "ANTHROPIC_API_KEY", c->token, NULL);
        export_var(&t, "OPENROUTER_API_KEY", c->token, NULL);
    }
    if (c->ai_mode != NULL && c->ai_mode[0] != '\0')
        export_var(&t, "RIGBOX_AI_MODE", c->ai_mode, NULL);
    if (c->ai_provider != NULL && c->ai_provider[0] != '\0')
        export_var(&t, "RIGBOX_AI_PROVIDER", c->ai_provider, NULL);
    if (c->ai_model != NULL && c->ai_model[0] != '\0')
        export_var(&t, "RIGBOX_AI_MODEL", c->ai_model, NULL);
    for (size_t i = 0; i < c->nenv; i++)
        export_var(&t, c->env[i].name, c->env[i].value, NULL);
    for (size_t i = 0; i < c->napps; i++) {
        rb_buf_puts(&t, "rigbox_app ");
        quote(&t, c->apps[i].name);
        rb_buf_printf(&t, " %u ", (unsigned)c->apps[i].port);
        quote(&t, c->apps[i].command);
        rb_buf_append(&t, "\n", 1);
    }
    if (t.overflow) {
        err = RB_ERR_LIMIT;
    } else {
        rb_buf_append(out, t.base, t.len);
        err = RB_OK;
    }
    rb_buf_free(&t);
    return err;
}
