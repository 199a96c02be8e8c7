/*
 * vmm/guestcfg: the per-boot guest configuration, rendered as the text the guest init reads.
 *
 * The text reaches the guest read-only over fw_cfg (opt/rigbox/config) and the guest init (see
 * tools/mkimage) sources it with busybox sh. It is therefore a POSIX sh fragment whose values are
 * all single-quoted here ('\'' for a quote), so sourcing it never expands or runs anything except
 * the rigbox_app calls it is made of: export NAME='value'                 platform variables first,
 * then the user's (which may override) rigbox_app 'name' port 'command'    one per app, started in
 * order after the exports Platform variables: RIGBOX_WORKSPACE_ID, RIGBOX_GATEWAY_URL,
 * OPENAI_BASE_URL (<gw>/v1), ANTHROPIC_BASE_URL (<gw>), OPENROUTER_BASE_URL (<gw>/v1) and, when a
 * token is given, RIGBOX_TOKEN, OPENAI_API_KEY, ANTHROPIC_API_KEY, OPENROUTER_API_KEY (all the
 * workspace token: the gateway swaps in the real provider key), then RIGBOX_AI_MODE,
 * RIGBOX_AI_PROVIDER and RIGBOX_AI_MODEL when given.
 *
 * Pure: no I/O, no globals; any thread. Inputs are borrowed.
 */
#ifndef RB_VMM_GUESTCFG_H
#define RB_VMM_GUESTCFG_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define VMM_GUESTCFG_ENV_MAX         128          /* user variables */
#define VMM_GUESTCFG_APPS_MAX        16           /* apps per VM */
#define VMM_GUESTCFG_NAME_MAX        128          /* bytes in a variable name */
#define VMM_GUESTCFG_VALUE_MAX       16384        /* bytes in a variable value */
#define VMM_GUESTCFG_APP_NAME_MAX    64           /* bytes in an app name */
#define VMM_GUESTCFG_COMMAND_MAX     4096         /* bytes in an app command */
#define VMM_GUESTCFG_TEXT_MAX        (256 * 1024) /* bytes in the rendered text */
#define VMM_GUESTCFG_GATEWAY_DEFAULT "http://10.0.2.2:9090"

/** One environment variable: name matches [A-Za-z_][A-Za-z0-9_]*. */
typedef struct st_vmm_env_t {
    const char *name;
    const char *value;
} vmm_env_t;

/** One app the guest starts at boot: name matches [A-Za-z0-9_.-]+, port 1..65535 (informational
 *  for the guest; it is the port the app listens on), command is run by sh -c from /root. */
typedef struct st_vmm_app_t {
    const char *name;
    uint16_t port;
    const char *command;
} vmm_app_t;

/** The configuration; pointers borrowed, NULL allowed where noted. */
typedef struct st_vmm_guestcfg_t {
    const char *workspace_id; /* required, non-empty */
    const char *token;        /* workspace token; may be NULL (no *_API_KEY exported) */
    const char *gateway_url;  /* NULL = VMM_GUESTCFG_GATEWAY_DEFAULT; no trailing slash */
    const char *ai_mode;      /* the workspace's AI config in effect, exported as RIGBOX_AI_MODE, */
    const char *ai_provider;  /* RIGBOX_AI_PROVIDER and RIGBOX_AI_MODEL (the agent's default */
    const char *ai_model;     /* model); each NULL or "" = not exported */
    const vmm_env_t *env;     /* nenv user variables */
    size_t nenv;
    const vmm_app_t *apps; /* napps apps */
    size_t napps;
} vmm_guestcfg_t;

/** Appends the rendered fragment for c to out. RB_ERR_INVAL for a bad name, port or empty command,
 *  RB_ERR_LIMIT past a VMM_GUESTCFG_* limit; out is left as it was on error. */
rb_err_t vmm_guestcfg_render(const vmm_guestcfg_t *c, rb_buf_t *out);

#endif
