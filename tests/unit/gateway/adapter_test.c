/* Tests for gateway/adapter.c: request validation, splice rewrite, usage-chunk detection, cost. */
#include "gateway/adapter.h"

#include <string.h>

#include "test.h"

typedef struct {
    gw_route_t route;
    const char *body;
    rb_err_t err;
    const char *msg;   /* expected error message (exact), or model on success */
    const char *param; /* expected err_param, or NULL */
    int stream, include_usage;
    int64_t max_output;
} inspect_case_t;

static const inspect_case_t inspect_cases[] = {
    {GW_ROUTE_CHAT, "{\"model\":\"gpt-4o\",\"messages\":[]}", RB_OK, "gpt-4o", NULL, 0, 0, 0},
    {GW_ROUTE_CHAT,
     "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,"
     "\"stream_options\":{\"include_usage\":true},\"max_tokens\":100,\"max_completion_tokens\":"
     "200}",
     RB_OK, "gpt-4o", NULL, 1, 1, 200},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":300,\"stream\":false}", RB_OK,
     "m", NULL, 0, 0, 300},
    {GW_ROUTE_CHAT, "{\"model\":\"m\\u00e9\",\"messages\":[],\"stream\":null,\"max_tokens\":null}",
     RB_OK, "m\xc3\xa9", NULL, 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":null}",
     RB_OK, "m", NULL, 1, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":", RB_ERR_PARSE, "request body is not valid JSON", NULL, 0, 0, 0},
    {GW_ROUTE_CHAT, "", RB_ERR_PARSE, "request body is not valid JSON", NULL, 0, 0, 0},
    {GW_ROUTE_CHAT, "[1]", RB_ERR_INVAL, "request body must be a JSON object", NULL, 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"messages\":[]}", RB_ERR_INVAL, "'model' is required", "model", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":null,\"messages\":[]}", RB_ERR_INVAL, "'model' is required",
     "model", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":7,\"messages\":[]}", RB_ERR_INVAL, "'model' must be a string",
     "model", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"\",\"messages\":[]}", RB_ERR_INVAL,
     "'model' is not a valid model name", "model", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"a\\u0000b\",\"messages\":[]}", RB_ERR_INVAL,
     "'model' is not a valid model name", "model", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"stream\":\"yes\"}", RB_ERR_INVAL,
     "'stream' must be a boolean", "stream", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":0}", RB_ERR_INVAL,
     "'max_tokens' must be an integer between 1 and 100000000", "max_tokens", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_completion_tokens\":-5}", RB_ERR_INVAL,
     "'max_completion_tokens' must be an integer between 1 and 100000000", "max_completion_tokens",
     0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":1.5}", RB_ERR_INVAL,
     "'max_tokens' must be an integer between 1 and 100000000", "max_tokens", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":\"10\"}", RB_ERR_INVAL,
     "'max_tokens' must be an integer between 1 and 100000000", "max_tokens", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":100000001}", RB_ERR_INVAL,
     "'max_tokens' must be an integer between 1 and 100000000", "max_tokens", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\"}", RB_ERR_INVAL, "'messages' is required", "messages", 0, 0,
     0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":{}}", RB_ERR_INVAL,
     "'messages' must be an array", "messages", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"stream_options\":true}", RB_ERR_INVAL,
     "'stream_options' must be an object", "stream_options", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"stream_options\":{\"include_usage\":1}}",
     RB_ERR_INVAL, "'stream_options.include_usage' must be a boolean",
     "stream_options.include_usage", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"cheap\",\"messages\":[],\"model\":\"dear\"}", RB_ERR_INVAL,
     "'model' appears more than once", "model", 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"cheap\",\"messages\":[],\"mod\\u0065l\":\"dear\"}", RB_ERR_INVAL,
     "'model' appears more than once", "model", 0, 0, 0},
    /* two keys twice: the one named first among the unique keys, whatever the document order */
    {GW_ROUTE_CHAT,
     "{\"stream\":true,\"stream\":false,\"model\":\"a\",\"messages\":[],\"model\":\"b\"}",
     RB_ERR_INVAL, "'model' appears more than once", "model", 0, 0, 0},
    {GW_ROUTE_CHAT,
     "{\"model\":\"m\",\"messages\":[],\"stream_options\":{\"include_usage\":false,"
     "\"include_usage\":true}}",
     RB_ERR_INVAL, "'stream_options.include_usage' appears more than once",
     "stream_options.include_usage", 0, 0, 0},
    /* an object the gateway reads the type of, with two: upstreams read the last one */
    {GW_ROUTE_RESPONSES,
     "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\","
     "\"type\":\"web_search\"}]}",
     RB_ERR_INVAL, "an object in 'tools' names a member twice", "tools", 0, 0, 0},
    {GW_ROUTE_RESPONSES,
     "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
     "\"file_id\":\"f\",\"type\":\"input_file\"}]}]}",
     RB_ERR_INVAL, "an object in 'input' names a member twice", "input", 0, 0, 0},
    {GW_ROUTE_MESSAGES,
     "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":[{"
     "\"type\":\"document\",\"source\":{\"type\":\"text\",\"data\":\"x\",\"type\":\"url\"}}]}]}",
     RB_ERR_INVAL, "an object in 'messages' names a member twice", "messages", 0, 0, 0},
    {GW_ROUTE_CHAT,
     "{\"model\":\"m\",\"messages\":[{\"type\":\"a\",\"role\":\"user\",\"type\":\"b\","
     "\"content\":\"x\"}]}",
     RB_ERR_INVAL, "an object in 'messages' names a member twice", "messages", 0, 0, 0},
    {GW_ROUTE_MESSAGES,
     "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":\"hi\","
     "\"content\":[{\"type\":\"document\",\"source\":{\"type\":\"url\",\"url\":\"u\"}}]}]}",
     RB_ERR_INVAL, "an object in 'messages' names a member twice", "messages", 0, 0, 0},
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\",\"prompt\":\"Say\"}", RB_OK, "i", NULL, 0, 0, 16},
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\",\"prompt\":[\"a\"],\"max_tokens\":5,\"stream\":true}",
     RB_OK, "i", NULL, 1, 0, 5},
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\"}", RB_ERR_INVAL, "'prompt' is required", "prompt", 0,
     0, 0},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"input\":\"hi\",\"max_output_tokens\":50}", RB_OK,
     "o3", NULL, 0, 0, 50},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"prompt\":{\"id\":\"pmpt_1\"},\"stream\":true}", RB_OK,
     "o3", NULL, 1, 0, 0},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\"}", RB_ERR_INVAL, "'input' is required", "input", 0, 0,
     0},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"input\":\"hi\",\"background\":true}", RB_ERR_INVAL,
     "background responses are not supported through this gateway (their usage could not be "
     "metered)",
     "background", 0, 0, 0},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"input\":\"hi\",\"background\":\"yes\"}", RB_ERR_INVAL,
     "'background' must be a boolean", "background", 0, 0, 0},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"input\":\"hi\",\"background\":false}", RB_OK, "o3",
     NULL, 0, 0, 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"background\":true}", RB_OK, "m", NULL, 0, 0,
     0},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"input\":{}}", RB_ERR_INVAL,
     "'input' must be a string or an array", "input", 0, 0, 0},
    {GW_ROUTE_EMBEDDINGS, "{\"model\":\"e\",\"input\":[\"a\",\"b\"]}", RB_OK, "e", NULL, 0, 0, 0},
    {GW_ROUTE_EMBEDDINGS, "{\"model\":\"e\",\"input\":3}", RB_ERR_INVAL,
     "'input' must be a string or an array", "input", 0, 0, 0},
    {GW_ROUTE_EMBEDDINGS, "{\"model\":\"e\",\"input\":\"x\",\"stream\":\"odd\"}", RB_OK, "e", NULL,
     0, 0, 0},
    {GW_ROUTE_MESSAGES,
     "{\"model\":\"claude\",\"max_tokens\":1024,\"messages\":[],\"stream\":true}", RB_OK, "claude",
     NULL, 1, 0, 1024},
    {GW_ROUTE_MESSAGES, "{\"model\":\"claude\",\"messages\":[]}", RB_ERR_INVAL,
     "'max_tokens' is required", "max_tokens", 0, 0, 0},
    {GW_ROUTE_MESSAGES, "{\"model\":\"claude\",\"max_tokens\":5,\"messages\":\"hi\"}", RB_ERR_INVAL,
     "'messages' must be an array", "messages", 0, 0, 0},
    {GW_ROUTE_COUNT_TOKENS, "{\"model\":\"claude\",\"messages\":[]}", RB_OK, "claude", NULL, 0, 0,
     0},
};

static void test_inspect_table(void)
{
    for (size_t i = 0; i < sizeof(inspect_cases) / sizeof(inspect_cases[0]); i++) {
        const inspect_case_t *c = &inspect_cases[i];
        gw_request_info_t info;
        char msg[GW_ADAPTER_ERRMSG_MAX];
        rb_err_t err =
            gw_adapter_inspect(c->route, c->body, strlen(c->body), NULL, &info, msg, sizeof(msg));
        CHECK_INT_EQ(err, c->err);
        if (err != c->err)
            fprintf(stderr, "  case %zu: %s (%s)\n", i, c->body, msg);
        if (c->err == RB_OK) {
            CHECK_STR_EQ(info.model, c->msg);
            CHECK_INT_EQ(info.model_len, strlen(c->msg));
            CHECK_INT_EQ(info.stream, c->stream);
            CHECK_INT_EQ(info.include_usage, c->include_usage);
            CHECK_INT_EQ(info.max_output, c->max_output);
            CHECK_INT_EQ(info.choices, 1);
            CHECK_INT_EQ(info.input_bytes, strlen(c->body));
            CHECK_STR_EQ(msg, "");
        } else {
            CHECK_STR_EQ(msg, c->msg);
            CHECK((c->param == NULL) == (info.err_param == NULL));
            if (c->param != NULL && info.err_param != NULL)
                CHECK_STR_EQ(info.err_param, c->param);
        }
    }
}

/* Several choices: each may reach the cap, so the hold counts them (n; best_of on completions). */
static const struct {
    gw_route_t route;
    const char *body;
    int64_t choices; /* 0: refused */
} choices_cases[] = {
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"n\":3,\"max_tokens\":10}", 3},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"n\":null,\"best_of\":9}", 1},
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\",\"prompt\":\"a\",\"n\":2,\"best_of\":5}", 5},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"input\":\"hi\",\"n\":4}", 1},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"n\":0}", 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"n\":129}", 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"n\":\"2\"}", 0},
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\",\"prompt\":\"a\",\"best_of\":1.5}", 0},
    {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"n\":2,\"n\":9}", 0},
};

static void test_inspect_choices(void)
{
    for (size_t i = 0; i < sizeof(choices_cases) / sizeof(choices_cases[0]); i++) {
        gw_request_info_t info;
        char msg[GW_ADAPTER_ERRMSG_MAX];
        rb_err_t err =
            gw_adapter_inspect(choices_cases[i].route, choices_cases[i].body,
                               strlen(choices_cases[i].body), NULL, &info, msg, sizeof(msg));
        CHECK_INT_EQ(err, choices_cases[i].choices > 0 ? RB_OK : RB_ERR_INVAL);
        if (err == RB_OK)
            CHECK_INT_EQ(info.choices, choices_cases[i].choices);
        else
            CHECK(strstr(msg, "must be an integer between 1 and 128") != NULL ||
                  strstr(msg, "appears more than once") != NULL);
    }
}

static void test_inspect_limits(void)
{
    static const char deep[] = "{\"model\":\"m\",\"messages\":[[[[[[1]]]]]]}";
    rb_json_limits_t lim = {.depth_max = 4};
    gw_request_info_t info;
    char msg[8];
    char big[GW_MODEL_NAME_MAX + 64];
    int n;

    CHECK_INT_EQ(
        gw_adapter_inspect(GW_ROUTE_CHAT, deep, sizeof(deep) - 1, &lim, &info, msg, sizeof(msg)),
        RB_ERR_LIMIT);
    CHECK_STR_EQ(msg, "request"); /* truncated to errcap, still terminated */
    CHECK_INT_EQ(gw_adapter_inspect(GW_ROUTE_CHAT, deep, sizeof(deep) - 1, NULL, &info, NULL, 0),
                 RB_OK);
    /* a model name at the limit passes, one byte more fails */
    n = snprintf(big, sizeof(big), "{\"model\":\"%0*d\",\"messages\":[]}", GW_MODEL_NAME_MAX, 0);
    CHECK_INT_EQ(gw_adapter_inspect(GW_ROUTE_CHAT, big, (size_t)n, NULL, &info, NULL, 0), RB_OK);
    CHECK_INT_EQ(info.model_len, GW_MODEL_NAME_MAX);
    n = snprintf(big, sizeof(big), "{\"model\":\"%0*d\",\"messages\":[]}", GW_MODEL_NAME_MAX + 1,
                 0);
    CHECK_INT_EQ(gw_adapter_inspect(GW_ROUTE_CHAT, big, (size_t)n, NULL, &info, NULL, 0),
                 RB_ERR_INVAL);
}

typedef struct {
    gw_route_t route;
    const char *body, *upstream;
    int64_t cap;
    int force;
    const char *want;
} rewrite_case_t;

static const rewrite_case_t rewrite_cases[] = {
    {GW_ROUTE_CHAT, "{\"model\":\"gpt-4o\",\"messages\":[],\"stream\":true}", "gpt-4o-2024-08-06",
     4096, 1,
     "{\"max_completion_tokens\":4096,\"stream_options\":{\"include_usage\":true},"
     "\"model\":\"gpt-4o-2024-08-06\",\"messages\":[],\"stream\":true}"},
    {GW_ROUTE_CHAT, "{\"model\":\"a\",\"messages\":[],\"stream\":true,\"stream_options\":{}}", "b",
     0, 1,
     "{\"model\":\"b\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":true}"
     "}"},
    {GW_ROUTE_CHAT,
     "{\"model\":\"a\",\"stream_options\":{ \"x\":1 },\"messages\":[],\"stream\":true}", "b", 0, 1,
     "{\"model\":\"b\",\"stream_options\":{\"include_usage\":true, \"x\":1 },\"messages\":[],"
     "\"stream\":true}"},
    {GW_ROUTE_CHAT,
     "{\"model\":\"a\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":false}"
     "}",
     "b", 0, 1,
     "{\"model\":\"b\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":true}"
     "}"},
    {GW_ROUTE_CHAT,
     "{\"model\":\"a\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":null}"
     "}",
     "b", 0, 1,
     "{\"model\":\"b\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":true}"
     "}"},
    {GW_ROUTE_CHAT, "{\"model\":\"a\",\"messages\":[],\"stream\":true,\"stream_options\":null}",
     "b", 0, 1,
     "{\"model\":\"b\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":true}"
     "}"},
    {GW_ROUTE_CHAT,
     "{\"model\":\"a\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":true}"
     "}",
     "b", 0, 1,
     "{\"model\":\"b\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":true}"
     "}"},
    /* not streamed, or not forced: no stream_options */
    {GW_ROUTE_CHAT, "{\"model\":\"a\",\"messages\":[]}", "b", 0, 1,
     "{\"model\":\"b\",\"messages\":[]}"},
    {GW_ROUTE_CHAT, "{\"model\":\"a\",\"messages\":[],\"stream\":true}", "b", 0, 0,
     "{\"model\":\"b\",\"messages\":[],\"stream\":true}"},
    /* the client's own cap is kept; a null cap is replaced in place */
    {GW_ROUTE_CHAT, "{\"model\":\"a\",\"messages\":[],\"max_tokens\":50}", "b", 4096, 0,
     "{\"model\":\"b\",\"messages\":[],\"max_tokens\":50}"},
    {GW_ROUTE_CHAT, "{\"model\":\"a\",\"max_completion_tokens\":null,\"messages\":[]}", "b", 64, 0,
     "{\"model\":\"b\",\"max_completion_tokens\":64,\"messages\":[]}"},
    {GW_ROUTE_CHAT,
     "{\"model\":\"a\",\"max_completion_tokens\":null,\"messages\":[],\"stream\":true}", "b", 64, 1,
     "{\"stream_options\":{\"include_usage\":true},\"model\":\"b\",\"max_completion_tokens\":64,"
     "\"messages\":[],\"stream\":true}"},
    /* whitespace, key order and unknown fields survive byte for byte */
    {GW_ROUTE_MESSAGES,
     "{ \"max_tokens\" : 10,\n  \"model\" : \"claude-x\" ,\"messages\":[{\"role\":\"user\","
     "\"content\":\"h\\u00e9\"}], \"metadata\":{\"user_id\":\"u\"} }",
     "claude-sonnet-4-5-20250929", 99, 1,
     "{ \"max_tokens\" : 10,\n  \"model\" : \"claude-sonnet-4-5-20250929\" "
     ",\"messages\":[{\"role\":"
     "\"user\",\"content\":\"h\\u00e9\"}], \"metadata\":{\"user_id\":\"u\"} }"},
    {GW_ROUTE_RESPONSES, "{\"model\":\"o3\",\"input\":\"hi\",\"stream\":true}", "o3-2025", 2048, 1,
     "{\"max_output_tokens\":2048,\"model\":\"o3-2025\",\"input\":\"hi\",\"stream\":true}"},
    /* legacy completions without a cap: the API's default of 16, written so compatible servers
     * with a larger default keep the bound the hold counts on */
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\",\"prompt\":\"x\",\"stream\":true}", "j", 16, 1,
     "{\"max_tokens\":16,\"stream_options\":{\"include_usage\":true},\"model\":\"j\",\"prompt\":"
     "\"x\",\"stream\":true}"},
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\",\"prompt\":\"x\",\"max_tokens\":null}", "j", 16, 0,
     "{\"model\":\"j\",\"prompt\":\"x\",\"max_tokens\":16}"},
    {GW_ROUTE_COMPLETIONS, "{\"model\":\"i\",\"prompt\":\"x\",\"max_tokens\":9}", "j", 16, 0,
     "{\"model\":\"j\",\"prompt\":\"x\",\"max_tokens\":9}"},
    {GW_ROUTE_EMBEDDINGS, "{\"input\":\"x\",\"model\":\"e\"}", "text-embedding-3-small", 2048, 1,
     "{\"input\":\"x\",\"model\":\"text-embedding-3-small\"}"},
    {GW_ROUTE_CHAT, "{\"model\":\"a\",\"messages\":[]}", "we\"ird\\\n", 0, 0,
     "{\"model\":\"we\\\"ird\\\\\\n\",\"messages\":[]}"},
};

static void test_rewrite_table(void)
{
    for (size_t i = 0; i < sizeof(rewrite_cases) / sizeof(rewrite_cases[0]); i++) {
        const rewrite_case_t *c = &rewrite_cases[i];
        gw_request_info_t info;
        rb_buf_t out;
        rb_json_t *doc = NULL;

        rb_buf_init(&out, 0);
        CHECK_INT_EQ(gw_adapter_inspect(c->route, c->body, strlen(c->body), NULL, &info, NULL, 0),
                     RB_OK);
        CHECK_INT_EQ(gw_adapter_rewrite(c->body, strlen(c->body), &info, c->upstream, c->cap,
                                        c->force, &out),
                     RB_OK);
        CHECK_STR_EQ(rb_buf_cstr(&out), c->want);
        /* the result is valid JSON whose model is the upstream id */
        CHECK_INT_EQ(rb_json_parse(out.base, out.len, NULL, &doc), RB_OK);
        CHECK(rb_json_str_eq(doc, rb_json_member(doc, 0, "model"), c->upstream));
        rb_json_free(doc);
        rb_buf_free(&out);
    }
}

static void test_rewrite_limit(void)
{
    static const char body[] = "{\"model\":\"a\",\"messages\":[]}";
    gw_request_info_t info;
    rb_buf_t out;

    rb_buf_init(&out, 10);
    CHECK_INT_EQ(gw_adapter_inspect(GW_ROUTE_CHAT, body, sizeof(body) - 1, NULL, &info, NULL, 0),
                 RB_OK);
    CHECK_INT_EQ(gw_adapter_rewrite(body, sizeof(body) - 1, &info, "b", 0, 0, &out), RB_ERR_LIMIT);
    rb_buf_free(&out);
}

static void test_usage_chunk(void)
{
    static const struct {
        const char *data;
        int yes;
    } cases[] = {
        {"{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":"
         "{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}",
         1},
        {"{\"choices\": [ ], \"usage\": {\"prompt_tokens\":1}}", 1},
        {"{\"choices\":[],\"usage\":null}", 0},
        {"{\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}", 0}, /* Mistral-style */
        {"{\"choices\":[{\"delta\":{\"content\":\"\\\"choices\\\":[],\\\"usage\\\":{\"}}]}", 0},
        {"{\"choices\":[],\"usage\":{\"prompt_tokens\":1}", 0}, /* truncated */
        {"[DONE]", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_INT_EQ(gw_adapter_is_injected_usage_chunk(cases[i].data, strlen(cases[i].data)),
                     cases[i].yes);
}

static void test_add_cost(void)
{
    static const struct {
        const char *in;
        int64_t cost;
        rb_err_t err;
        const char *want;
    } cases[] = {
        {"{\"id\":\"x\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}", 1250, RB_OK,
         "{\"id\":\"x\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"cost_micro\":1250,"
         "\"cost_credits\":\"0.001250\"}}"},
        {"{\"usage\":{}}", 0, RB_OK,
         "{\"usage\":{\"cost_micro\":0,\"cost_credits\":\"0.000000\"}}"},
        {"{\"type\":\"message\",\"usage\": { \"input_tokens\": 3 } ,\"x\":1}", 2500000, RB_OK,
         "{\"type\":\"message\",\"usage\": { \"input_tokens\": 3 ,\"cost_micro\":2500000,"
         "\"cost_credits\":\"2.500000\"} ,\"x\":1}"},
        {"{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1}}}", 7,
         RB_OK,
         "{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1,"
         "\"cost_micro\":7,\"cost_credits\":\"0.000007\"}}}"},
        {"{\"choices\":[]}", 5, RB_ERR_NOTFOUND, ""},
        {"{\"usage\":null}", 5, RB_ERR_NOTFOUND, ""},
        {"{\"usage\":", 5, RB_ERR_PARSE, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rb_buf_t out;
        rb_buf_init(&out, 0);
        CHECK_INT_EQ(gw_adapter_add_cost(cases[i].in, strlen(cases[i].in), cases[i].cost, &out),
                     cases[i].err);
        CHECK_STR_EQ(rb_buf_cstr(&out), cases[i].want);
        rb_buf_free(&out);
    }
    /* an output buffer too small for any part of the result: a limit error, never a cut body */
    for (size_t cap = 1; cap < strlen(cases[0].want); cap += 7) {
        rb_buf_t out;
        rb_buf_init(&out, cap);
        CHECK_INT_EQ(gw_adapter_add_cost(cases[0].in, strlen(cases[0].in), cases[0].cost, &out),
                     RB_ERR_LIMIT);
        rb_buf_free(&out);
    }
}

static void test_routes(void)
{
    CHECK_INT_EQ(gw_route_dialect(GW_ROUTE_CHAT), GW_DIALECT_OPENAI);
    CHECK_INT_EQ(gw_route_dialect(GW_ROUTE_RESPONSES), GW_DIALECT_OPENAI);
    CHECK_INT_EQ(gw_route_dialect(GW_ROUTE_EMBEDDINGS), GW_DIALECT_OPENAI);
    CHECK_INT_EQ(gw_route_dialect(GW_ROUTE_MESSAGES), GW_DIALECT_ANTHROPIC);
    CHECK_INT_EQ(gw_route_dialect(GW_ROUTE_COUNT_TOKENS), GW_DIALECT_ANTHROPIC);
    CHECK_STR_EQ(gw_route_name(GW_ROUTE_COMPLETIONS), "completions");
    CHECK_STR_EQ(gw_route_name(GW_ROUTE_COUNT_TOKENS), "count_tokens");
}

/* Inspects a body that must pass; returns what was learnt. */
static gw_request_info_t inspect_ok(gw_route_t route, const char *body)
{
    gw_request_info_t info;
    char msg[GW_ADAPTER_ERRMSG_MAX] = "";

    memset(&info, 0, sizeof(info));
    if (gw_adapter_inspect(route, body, strlen(body), NULL, &info, msg, sizeof(msg)) != RB_OK)
        CHECK_STR_EQ(msg, "(no error)"); /* fails, naming the refusal */
    return info;
}

/* A field name inspect reported (NULL: none) is the one expected. */
static void check_field(const char *got, const char *want)
{
    if (want == NULL)
        CHECK(got == NULL);
    else
        CHECK(got != NULL && strcmp(got, want) == 0);
}

/* The cap's field, named in the error for a cap past the model's limit. */
static void test_cap_name(void)
{
    static const struct {
        gw_route_t route;
        const char *body, *name;
    } cases[] = {
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_completion_tokens\":9}",
         "max_completion_tokens"},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":9}", "max_tokens"},
        {GW_ROUTE_CHAT,
         "{\"model\":\"m\",\"messages\":[],\"max_tokens\":9,\"max_completion_tokens\":8}",
         "max_tokens"},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[]}", "max_completion_tokens"},
        {GW_ROUTE_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"max_output_tokens\":9}",
         "max_output_tokens"},
        {GW_ROUTE_MESSAGES, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":9}", "max_tokens"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_STR_EQ(inspect_ok(cases[i].route, cases[i].body).cap_name, cases[i].name);
}

/* The options that change what the provider charges (refused on the operator's key). */
static void test_priced_option(void)
{
    static const struct {
        gw_route_t route;
        const char *body, *option; /* NULL: none */
    } cases[] = {
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"service_tier\":\"priority\"}",
         "service_tier"},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"service_tier\":\"scale\"}",
         "service_tier"},
        /* cheaper (flex), or another server's own default tier: billed at the model's prices */
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"service_tier\":\"flex\"}", NULL},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"service_tier\":\"on_demand\"}", NULL},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"plugins\":[{\"id\":\"web\"}]}",
         "plugins"},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"plugins\":[]}", NULL},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"web_search_preview_2025_03_11\"}]"
         "}",
         "tools"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"local_shell\"},{\"type\":\"mcp\","
         "\"server_label\":\"s\"},{\"type\":\"apply_patch\"},{\"type\":\"computer_use_preview\"}]}",
         NULL},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"service_tier\":\"auto\"}", NULL},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"service_tier\":\"default\"}", NULL},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"service_tier\":null}", NULL},
        {GW_ROUTE_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"service_tier\":\"priority\"}",
         "service_tier"},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"models\":[\"a\",\"b\"]}", "models"},
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"web_search_options\":{}}",
         "web_search_options"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"},"
         "{\"type\":\"web_search\"}]}",
         "tools"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"code_interpreter\"}]}", "tools"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"},"
         "{\"type\":\"custom\",\"name\":\"g\"}]}",
         NULL},
        /* chat tools are functions (billed as tokens); Anthropic's server tools are metered */
        {GW_ROUTE_CHAT,
         "{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":\"function\",\"function\":{}}]}",
         NULL},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"messages\":[],\"max_tokens\":9,\"service_tier\":\"auto\","
         "\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}]}",
         NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_field(inspect_ok(cases[i].route, cases[i].body).priced_option, cases[i].option);
}

/* The fields that bring input the body does not hold (held at the model's context window). */
static void test_input_elsewhere(void)
{
    static const struct {
        gw_route_t route;
        const char *body, *field; /* NULL: none */
    } cases[] = {
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"resp_1\"}",
         "previous_response_id"},
        {GW_ROUTE_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":null}",
         NULL},
        {GW_ROUTE_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"conversation\":\"conv_1\"}",
         "conversation"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"conversation\":{\"id\":\"conv_1\"}}", "conversation"},
        {GW_ROUTE_RESPONSES, "{\"model\":\"m\",\"prompt\":{\"id\":\"pmpt_1\"}}", "prompt"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
         "\"text\":\"x\"},{\"type\":\"input_file\",\"file_id\":\"file-1\"}]}]}",
         "input"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_file\","
         "\"file_url\":\"https://example.com/a.pdf\"}]}]}",
         "input"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]}", "input"},
        /* inline: a file's data, tool output */
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_file\","
         "\"file_data\":\"data:application/pdf;base64,AA==\"},{\"type\":\"input_text\","
         "\"text\":\"image_url\"}]},{\"type\":\"function_call_output\","
         "\"call_id\":\"c\",\"output\":\"file_id\"}]}",
         NULL},
        /* an image, by URL, inline or by file: its tokens follow its pixels, not its bytes */
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\","
         "\"image_url\":\"https://example.com/a.png\"}]}]}",
         "input"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\","
         "\"file_id\":\"file-1\"}]}]}",
         "input"},
        {GW_ROUTE_CHAT,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
         "\"text\":\"x\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
         "AA==\"}}]}]}",
         "messages"},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":[{"
         "\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://e.com/a.png\"}}]}]}",
         "messages"},
        /* a tool result's image (Anthropic: a screenshot a computer-use tool returns) */
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":[{"
         "\"type\":\"tool_result\",\"tool_use_id\":\"t\",\"content\":[{\"type\":\"image\","
         "\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"AA==\"}}]}]}]}",
         "messages"},
        {GW_ROUTE_CHAT,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\","
         "\"file\":{\"file_id\":\"file-1\"}}]}]}",
         "messages"},
        {GW_ROUTE_CHAT,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\","
         "\"file\":{\"file_data\":\"AA==\",\"filename\":\"a.pdf\"}}]}]}",
         NULL},
        /* previous_response_id is a Responses field: elsewhere it is the upstream's to refuse */
        {GW_ROUTE_CHAT, "{\"model\":\"m\",\"messages\":[],\"previous_response_id\":\"r\"}", NULL},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":[{"
         "\"type\":\"document\",\"source\":{\"type\":\"url\",\"url\":\"https://e.com/a.pdf\"}}]}]}",
         "messages"},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":[{"
         "\"type\":\"document\",\"source\":{\"type\":\"file\",\"file_id\":\"file_1\"}}]}]}",
         "messages"},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":[{"
         "\"type\":\"document\",\"source\":{\"type\":\"text\",\"media_type\":\"text/plain\","
         "\"data\":\"x\"}}]}]}",
         NULL},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[],\"tools\":[{\"name\":\"f\","
         "\"input_schema\":{}},{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}]}",
         "tools"},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[],\"tools\":[{\"type\":"
         "\"web_fetch_20250910\",\"name\":\"web_fetch\"}]}",
         "tools"},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[],\"tools\":[{\"type\":"
         "\"bash_20250124\",\"name\":\"bash\"},{\"type\":\"custom\",\"name\":\"web_search_x\"}]}",
         NULL},
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[],\"mcp_servers\":[{\"type\":\"url\","
         "\"url\":\"https://e.com/mcp\",\"name\":\"e\"}]}",
         "mcp_servers"},
        {GW_ROUTE_MESSAGES, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[],\"mcp_servers\":[]}",
         NULL},
        /* one level deeper: a tool result's document, a function call output's file */
        {GW_ROUTE_MESSAGES,
         "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":[{"
         "\"type\":\"tool_result\",\"tool_use_id\":\"t\",\"content\":[{\"type\":\"document\","
         "\"source\":{\"type\":\"url\",\"url\":\"https://e.com/a.pdf\"}}]}]}]}",
         "messages"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\","
         "\"output\":[{\"type\":\"input_file\",\"file_id\":\"file-1\"}]}]}",
         "input"},
        {GW_ROUTE_RESPONSES,
         "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"mcp\",\"server_label\":\"s\","
         "\"server_url\":\"https://e.com/mcp\"}]}",
         "tools"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_field(inspect_ok(cases[i].route, cases[i].body).input_elsewhere, cases[i].field);
}

/* The web searches an Anthropic call may run, held at the per_request price. */
static void test_web_searches(void)
{
    CHECK_INT_EQ(
        inspect_ok(GW_ROUTE_MESSAGES,
                   "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[],\"tools\":[{\"type\":"
                   "\"web_search_20250305\",\"name\":\"web_search\",\"max_uses\":3},{"
                   "\"type\":\"web_search_20250305\",\"name\":\"w2\"},{\"type\":"
                   "\"web_fetch_20250910\",\"name\":\"f\"},{\"name\":\"g\","
                   "\"input_schema\":{}}]}")
            .web_searches,
        3 + GW_ADAPTER_WEB_SEARCH_USES_DEFAULT);
    CHECK_INT_EQ(inspect_ok(GW_ROUTE_MESSAGES, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[]}")
                     .web_searches,
                 0);
    /* an OpenAI route's web search is refused on the operator's key (priced_option), not held */
    CHECK_INT_EQ(inspect_ok(GW_ROUTE_RESPONSES, "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{"
                                                "\"type\":\"web_search_preview\"}]}")
                     .web_searches,
                 0);
}

TEST_MAIN(test_priced_option, test_input_elsewhere, test_web_searches, test_cap_name,
          test_inspect_table, test_inspect_choices, test_inspect_limits, test_rewrite_table,
          test_rewrite_limit, test_usage_chunk, test_add_cost, test_routes)
