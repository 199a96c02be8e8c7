/*
 * The Rigbox configuration: config/rigbox.yaml, the models file it names (providers, models,
 * prices) and the templates directory it names (one YAML file per workspace template), loaded
 * with libyaml into one immutable, validated cfg_t.
 *
 * Every value has a default (cfg_load_defaults gives them all). Loading is strict: an unknown
 * key, a duplicate key, a value of the wrong type, out of range or not in an enum fails the
 * whole load with ONE message of the form
 *     config/rigbox.yaml:12: gateway.workers: expected an integer from 1 to 64, got "abc"
 * (file, 1-based line, key path, what was expected). Relative paths for the models file and
 * the templates directory are resolved against the directory of the file that names them; the
 * other paths (var/…) are kept as written, relative to the working directory.
 *
 * Money: prices are written in USD per million tokens as exact decimal strings and converted
 * ONCE at load, with integer arithmetic rounding up, into int64 micro-credits per million
 * tokens (1 credit = 1,000,000 micro-credits = credits.usd_per_credit USD).
 *
 * Environment overrides (applied by cfg_load and cfg_load_buffer, winning over the files):
 * RIGBOX_DATABASE_URL, RIGBOX_MASTER_KEY, RIGBOX_SESSION_SECRET (the secret values themselves),
 * RIGBOX_AI_LISTEN, RIGBOX_APPS_LISTEN, RIGBOX_CONTROL_LISTEN, RIGBOX_APPS_DOMAIN,
 * RIGBOX_LOG_LEVEL, and for every provider RIGBOX_<NAME>_API_KEY and RIGBOX_<NAME>_BASE_URL
 * (NAME = provider name uppercased, '-' -> '_'). Secrets never appear in error messages.
 *
 * Ownership and threads: cfg_load* return an owned cfg_t (free with cfg_free); every pointer
 * inside it (strings, arrays, provider pointers) is valid until cfg_free. After load the struct
 * is never written, so any number of threads may read it and call the lookups concurrently.
 */
#ifndef RB_CONFIG_CONFIG_H
#define RB_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/log.h"

/* Named limits of the loader itself. */
enum {
    CFG_FILE_BYTES_MAX = 1 << 20, /* a YAML file larger than this is refused */
    CFG_PROVIDERS_MAX = 64,       /* providers in the models file */
    CFG_MODELS_MAX = 512,         /* models in the models file */
    CFG_ALIASES_MAX = 32,         /* aliases per model */
    CFG_BETAS_MAX = 32,           /* anthropic-beta values allowed per provider */
    CFG_PLANS_MAX = 64,           /* plans in rigbox.yaml */
    CFG_ALLOWED_MODELS_MAX = 256, /* allowed_models entries per plan */
    CFG_TEMPLATES_MAX = 64,       /* templates in the templates directory */
    CFG_TEMPLATE_ENV_MAX = 128,   /* env entries per template */
    CFG_TEMPLATE_APPS_MAX = 32,   /* apps per template */
    CFG_STRING_LEN_MAX = 4096,    /* any string value */
    CFG_NAME_LEN_MAX = 128,       /* names: providers, models, plans, templates, apps */
    CFG_PATH_LEN_MAX = 4096,      /* a resolved file path */
    CFG_KEY_PATH_MAX = 256,       /* a dotted key path in an error message */
    CFG_NESTING_MAX = 8,          /* mapping depth the loader walks */
    CFG_DECIMAL_LEN_MAX = 40,     /* characters of a decimal price string */
    CFG_DECIMAL_FRAC_MAX = 18,    /* significant fractional digits of a decimal */
    CFG_ERRBUF_MIN = 256,         /* recommended errcap */
};

/** How log lines are written. */
typedef enum { CFG_LOG_TEXT, CFG_LOG_JSON } cfg_log_format_t;
/** QEMU accelerator choice: auto = kvm when /dev/kvm works, else tcg. */
typedef enum { CFG_ACCEL_AUTO, CFG_ACCEL_KVM, CFG_ACCEL_TCG } cfg_accel_t;
/** Wire dialect of a provider. */
typedef enum {
    CFG_PROVIDER_OPENAI,
    CFG_PROVIDER_ANTHROPIC,
    CFG_PROVIDER_OPENAI_COMPATIBLE
} cfg_provider_kind_t;
/** What a model does: chat/completions/responses/messages, or embeddings. */
typedef enum { CFG_MODEL_CHAT, CFG_MODEL_EMBEDDING } cfg_model_type_t;
/** Base image of a template. */
typedef enum { CFG_IMAGE_BASE, CFG_IMAGE_DEV } cfg_image_t;
/** Guest network egress: all, or none (only the gateway and forwarded ports). */
typedef enum { CFG_EGRESS_ALL, CFG_EGRESS_NONE } cfg_egress_t;
/** App visibility (DESIGN.md §6). */
typedef enum { CFG_VIS_PRIVATE, CFG_VIS_PRIVILEGED, CFG_VIS_PUBLIC } cfg_visibility_t;
/** App protocol. */
typedef enum { CFG_PROTO_HTTP, CFG_PROTO_TCP } cfg_protocol_t;

/** server: process-wide settings of both daemons. */
typedef struct st_cfg_server_t {
    int workers;                 /* threads (event loops) per daemon; default 2 */
    rb_log_level_t log_level;    /* default info */
    cfg_log_format_t log_format; /* default text */
} cfg_server_t;

/** gateway.limits: every bound of the data plane (STYLE.md rule 13). */
typedef struct st_cfg_gateway_limits_t {
    size_t body_max_bytes;              /* request body; default 8 MiB */
    size_t sse_line_max_bytes;          /* one SSE event; default 16 MiB */
    int json_depth_max;                 /* default 64 */
    int json_tokens_max;                /* default 524288 */
    int upstream_connect_timeout_ms;    /* default 5000 */
    int upstream_total_timeout_ms;      /* default 3600000 */
    int upstream_first_byte_timeout_ms; /* default 600000 */
    int upstream_idle_timeout_ms;       /* default 600000 */
    size_t stream_high_water_bytes;     /* pause upstream above this; default 256 KiB */
    size_t stream_low_water_bytes;      /* resume below this; default 64 KiB */
    int keepalive_interval_ms;          /* SSE keep-alive comment interval; default 15000 */
    int client_send_timeout_ms;         /* a client that takes none of the answer this long
                                         * is cut (TCP_USER_TIMEOUT); default 60000 */
    int drain_timeout_ms;               /* draining after a client left; default 30000 */
    size_t drain_bytes_max;             /* default 8 MiB */
    int drains_max;                     /* concurrent drains; default 64 */
    int writer_queue_max;               /* ledger writer queue; default 100000 */
    int writer_batch_max;               /* events per transaction; default 1000 */
    int writer_flush_ms;                /* default 50 */
    int upstream_connections_max;       /* libcurl total connections; default 256 */
    int identity_cache_ttl_ms;          /* default 60000 */
} cfg_gateway_limits_t;

/** gateway: the AI proxy and app ingress listeners. */
typedef struct st_cfg_gateway_t {
    const char *ai_listen;   /* "host:port"; default "127.0.0.1:9090" */
    const char *apps_listen; /* default "127.0.0.1:8080" */
    cfg_gateway_limits_t limits;
} cfg_gateway_t;

/** control: the REST API listener and its bounds. */
typedef struct st_cfg_control_t {
    const char *listen;    /* default "127.0.0.1:8081" */
    int page_size_default; /* default 50 */
    int page_size_max;     /* default 200 */
    int logs_lines_max;    /* default 10000 */
} cfg_control_t;

/** database: PostgreSQL. */
typedef struct st_cfg_database_t {
    /* libpq conninfo or URI; default "host=/var/run/postgresql user=postgres dbname=rigbox" */
    const char *url;
    int pool_size;         /* connections per daemon; default 4 */
    int connect_timeout_s; /* default 5 */
} cfg_database_t;

/** credits: the unit of money and the gateway's lease sizing. */
typedef struct st_cfg_credits_t {
    const char *usd_per_credit;  /* exact decimal string; default "0.01" */
    int64_t lease_chunk_credits; /* credits taken per lease refill; default 50 */
    int64_t lease_chunk_micro;   /* the same in micro-credits */
    int lease_ttl_s;             /* a lease expires this long after its last renewal; default 300 */
    int chars_per_token;         /* input estimate: characters per token; default 4 */
} cfg_credits_t;

/** One plan: defaults that per-user limits override. 0 in an AI cap means "no cap". */
typedef struct st_cfg_plan_t {
    const char *name;
    int max_vms;
    int64_t max_ram_per_vm_mb;
    int64_t max_ram_total_mb;
    int max_vcpu_per_vm;
    int max_running_vcpus;
    int64_t max_disk_total_mb;
    int64_t credits_per_day;           /* credits; 0 = no daily cap */
    int64_t credits_per_month;         /* credits; the monthly allowance; 0 = no monthly cap */
    int rpm;                           /* requests per minute; 0 = unlimited */
    int64_t tpm;                       /* tokens per minute; 0 = unlimited */
    int max_concurrent;                /* concurrent AI requests; 0 = unlimited */
    const char *const *allowed_models; /* public model names; empty = all */
    size_t allowed_models_len;
} cfg_plan_t;

/** vmm: QEMU micro-VMs on this node. */
typedef struct st_cfg_vmm_t {
    const char *qemu_binary;      /* default "qemu-system-x86_64" */
    cfg_accel_t accel;            /* default auto */
    const char *image_dir;        /* kernel and base images; default "var/images" */
    const char *state_dir;        /* per-VM overlays, sockets, logs; default "var/vms" */
    int stop_timeout_ms;          /* powerdown, then kill; default 10000 */
    int boot_timeout_ms;          /* default 60000 */
    int vms_max;                  /* running VMs per node; default 16 */
    int hostfwd_port_min;         /* loopback ports for app forwarding; default 20000 */
    int hostfwd_port_max;         /* default 29999 */
    size_t console_log_max_bytes; /* serial console log before rotation; default 1 MiB */
} cfg_vmm_t;

/** secrets: where the master key, session secret and metrics token come from. */
typedef struct st_cfg_secrets_t {
    const char *master_key_file;     /* default "var/secrets/master.key" */
    const char *session_secret_file; /* default "var/secrets/session.secret" */
    const char *metrics_token_file;  /* default "var/secrets/metrics.token" */
    const char *master_key;          /* RIGBOX_MASTER_KEY's value, else NULL (read the file) */
    const char *session_secret;      /* RIGBOX_SESSION_SECRET's value, else NULL */
    const char *metrics_token;       /* RIGBOX_METRICS_TOKEN's value, else NULL (read the file) */
} cfg_secrets_t;

/** A provider from the models file. */
typedef struct st_cfg_provider_t {
    const char *name;
    cfg_provider_kind_t kind;
    const char *base_url; /* root URL without "/v1" and trailing "/"; RIGBOX_<NAME>_BASE_URL wins */
    const char *api_key_env;       /* name of the env var holding the operator key, or NULL */
    const char *api_key_file;      /* resolved path, or NULL */
    const char *api_key;           /* the operator key (secret), or NULL when none configured */
    const char *anthropic_version; /* anthropic-version header; default "2023-06-01" */
    const char *const *betas; /* anthropic-beta values a call on the operator's key may send; none
                               * listed: any */
    size_t betas_len;
} cfg_provider_t;

/** Prices in micro-credits per million tokens (per_request_micro: per request). */
typedef struct st_cfg_prices_t {
    int64_t input_micro;          /* uncached input */
    int64_t cached_input_micro;   /* cache reads; default = input */
    int64_t cache_write_5m_micro; /* default = input */
    int64_t cache_write_1h_micro; /* default = input */
    int64_t output_micro;         /* includes reasoning; 0 for embeddings */
    int64_t per_request_micro;    /* per request (web search etc.); default 0 */
} cfg_prices_t;

/** A model from the models file. */
typedef struct st_cfg_model_t {
    const char *name;               /* public name */
    const cfg_provider_t *provider; /* never NULL */
    const char *upstream;           /* id sent upstream; default = name */
    const char *const *aliases;
    size_t aliases_len;
    cfg_model_type_t type;  /* default chat */
    bool reasoning;         /* o-series: max_completion_tokens, no temperature */
    bool priced;            /* false: managed calls are refused (model_not_priced) */
    cfg_prices_t prices;    /* all zero when !priced */
    int max_output_default; /* cap written upstream when the request has none */
    int max_output;         /* hard cap on a request's max tokens; 0 = none */
    int context_window;     /* input + output tokens the model takes; 0 = not stated */
} cfg_model_t;

/** A template's environment variable. */
typedef struct st_cfg_env_t {
    const char *name;
    const char *value;
} cfg_env_t;

/** An app a template starts and publishes. */
typedef struct st_cfg_app_t {
    const char *name;            /* [a-z0-9-], unique in the template */
    int port;                    /* guest port, unique in the template */
    cfg_visibility_t visibility; /* default private */
    cfg_protocol_t protocol;     /* default http */
    const char *command;         /* shell command the guest init runs, or NULL */
} cfg_app_t;

/** A workspace template (templates/<id>.yaml). */
typedef struct st_cfg_template_t {
    const char *id; /* the file name without .yaml */
    const char *name;
    const char *description;
    cfg_image_t image;
    const char *image_name; /* "base" or "dev" */
    int floor_vcpu;
    int64_t floor_ram_mb;
    int64_t floor_disk_mb;
    cfg_egress_t egress;
    const cfg_env_t *env;
    size_t env_len;
    const cfg_app_t *apps;
    size_t apps_len;
} cfg_template_t;

struct st_cfg_arena_t;

/** The whole configuration; immutable after load. */
typedef struct st_cfg_t {
    const char *path; /* the rigbox.yaml loaded, or "(defaults)" */
    cfg_server_t server;
    cfg_gateway_t gateway;
    cfg_control_t control;
    cfg_database_t database;
    cfg_credits_t credits;
    const cfg_plan_t *plans; /* default: free and pro */
    size_t plans_len;
    const cfg_plan_t *default_plan; /* default_plan: free */
    cfg_vmm_t vmm;
    const char *apps_domain; /* default "localhost" */
    cfg_secrets_t secrets;
    const char *models_path;   /* resolved; default "<dir of rigbox.yaml>/models.yaml" */
    const char *templates_dir; /* resolved; default "<dir of rigbox.yaml>/templates" */
    const cfg_provider_t *providers;
    size_t providers_len;
    const cfg_model_t *models; /* in file order */
    size_t models_len;
    const cfg_template_t *templates; /* sorted by id */
    size_t templates_len;
    struct st_cfg_arena_t *arena_; /* private: owns every string and array above */
} cfg_t;

/** Which document cfg_load_buffer parses. */
typedef enum {
    CFG_DOC_MAIN,     /* a rigbox.yaml; the models file and templates it names are NOT read */
    CFG_DOC_MODELS,   /* a models file, on top of the defaults */
    CFG_DOC_TEMPLATE, /* one template, on top of the defaults; its id is `name` without .yaml */
} cfg_doc_kind_t;

/**
 * Loads rigbox.yaml at path, the models file and templates it names, applies the environment
 * overrides and validates. Returns owned (free with cfg_free) in *out; on error *out is NULL and
 * errbuf (errcap > 0) holds one message. RB_ERR_CONFIG for a bad value, RB_ERR_PARSE for YAML
 * syntax, RB_ERR_IO for a missing or unreadable file.
 */
rb_err_t cfg_load(const char *path, cfg_t **out, char *errbuf, size_t errcap);

/** Parses one document of `kind` from memory (no file I/O except api_key_file); for tests and
 *  fuzzing. `name` is used in messages. Same results and ownership as cfg_load. */
rb_err_t cfg_load_buffer(cfg_doc_kind_t kind, const char *name, const char *yaml, size_t len,
                         cfg_t **out, char *errbuf, size_t errcap);

/** Every default, no file and no environment; returns owned (free with cfg_free). */
rb_err_t cfg_load_defaults(cfg_t **out);

/** Frees a configuration; NULL is a no-op. */
void cfg_free(cfg_t *cfg);

/** The config path to use when none is given: $RIGBOX_CONFIG, else
 * RB_SOURCE_DIR/config/rigbox.yaml. */
const char *cfg_default_path(void);

/** A model by public name, alias, or "provider/upstream_id" / "provider/name" slug; NULL if none.
 */
const cfg_model_t *cfg_model_find(const cfg_t *cfg, const char *name);

/** A provider by name; NULL if none. */
const cfg_provider_t *cfg_provider_find(const cfg_t *cfg, const char *name);

/** A template by id; NULL if none. */
const cfg_template_t *cfg_template_find(const cfg_t *cfg, const char *id);

/** A plan by name; NULL if none. */
const cfg_plan_t *cfg_plan_find(const cfg_t *cfg, const char *name);

/** The name of an enum value as written in YAML ("openai-compatible", "privileged", …). */
const char *cfg_provider_kind_name(cfg_provider_kind_t kind);
/** "private", "privileged" or "public". */
const char *cfg_visibility_name(cfg_visibility_t vis);
/** "http" or "tcp". */
const char *cfg_protocol_name(cfg_protocol_t proto);

/**
 * Converts an exact decimal price in USD (per million tokens, or per request) into micro-credits,
 * rounding UP: ceil(usd * 1e6 / usd_per_credit), integer arithmetic only. Decimals are
 * [0-9]+(\.[0-9]+)?. RB_ERR_PARSE for a malformed string, RB_ERR_INVAL for usd_per_credit = 0,
 * RB_ERR_LIMIT when the result or an intermediate does not fit (or too many digits).
 */
rb_err_t cfg_decimal_to_micro(const char *usd_per_mtok, const char *usd_per_credit, int64_t *out);

#endif
