/* Tests for gateway/usage.c: extractors per provider shape, the stream observer, estimates. */
#include "gateway/usage.h"

#include <string.h>

#include "test.h"

#define U_IN  GW_USAGE_INPUT_UNCACHED
#define U_CR  GW_USAGE_CACHE_READ
#define U_W5  GW_USAGE_CACHE_WRITE_5M
#define U_W1  GW_USAGE_CACHE_WRITE_1H
#define U_OUT GW_USAGE_OUTPUT
#define U_RS  GW_USAGE_REASONING
#define U_RQ  GW_USAGE_REQUESTS

typedef struct {
    const char *what;
    gw_route_t route;
    const char *body;
    rb_err_t err;
    gw_usage_t want; /* terminal: expected whenever a usage object was found */
} body_case_t;

static void check_usage(const char *what, const gw_usage_t *got, const gw_usage_t *want)
{
    int ok = got->input_uncached == want->input_uncached && got->cache_read == want->cache_read &&
             got->cache_write_5m == want->cache_write_5m &&
             got->cache_write_1h == want->cache_write_1h && got->output == want->output &&
             got->reasoning == want->reasoning && got->requests == want->requests &&
             got->reported == want->reported;
    CHECK(ok);
    if (!ok)
        fprintf(
            stderr, "  %s: got in=%lld cr=%lld w5=%lld w1=%lld out=%lld rs=%lld rq=%lld rep=%#x\n",
            what, (long long)got->input_uncached, (long long)got->cache_read,
            (long long)got->cache_write_5m, (long long)got->cache_write_1h, (long long)got->output,
            (long long)got->reasoning, (long long)got->requests, got->reported);
}

static const body_case_t body_cases[] = {
    /* member lookup: the first member of a name counts (also inside a details object), names
     * compare unescaped, a details value that is not an object has no members, and a name with a
     * dot in it is not a path */
    {"chat duplicate members",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10,\"prompt_tokens\":99,\"completion_tokens\":5,"
     "\"prompt_tokens_details\":{\"cached_tokens\":4,\"cached_tokens\":9},"
     "\"prompt_tokens_details\":{\"cached_tokens\":8}}}",
     RB_OK,
     {.input_uncached = 6, .cache_read = 4, .output = 5, .reported = U_IN | U_CR | U_OUT}},
    {"chat escaped names",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt\\u005ftokens\":10,\"completion_tokens\":5,"
     "\"prompt_tokens_details\":{\"cached\\u005ftokens\":3}}}",
     RB_OK,
     {.input_uncached = 7, .cache_read = 3, .output = 5, .reported = U_IN | U_CR | U_OUT}},
    {"chat details not an object",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"prompt_tokens_details\":3,"
     "\"completion_tokens_details\":[{\"reasoning_tokens\":2}]}}",
     RB_OK,
     {.input_uncached = 10, .output = 5, .reported = U_IN | U_OUT}},
    {"chat dotted name",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,"
     "\"prompt_tokens_details.cached_tokens\":3}}",
     RB_OK,
     {.input_uncached = 10, .output = 5, .reported = U_IN | U_OUT}},
    {"anthropic duplicate members",
     GW_ROUTE_MESSAGES,
     "{\"usage\":{\"input_tokens\":5,\"input_tokens\":7,\"output_tokens\":2,"
     "\"cache_creation\":{\"ephemeral_5m_input_tokens\":3},"
     "\"cache_creation\":{\"ephemeral_1h_input_tokens\":4}}}",
     RB_OK,
     {.input_uncached = 5,
      .cache_write_5m = 3,
      .output = 2,
      .reported = U_IN | U_W5 | U_W1 | U_OUT}},
    {"chat basic",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}}",
     RB_OK,
     {.input_uncached = 10, .output = 5, .reported = U_IN | U_OUT}},
    {"chat cached+reasoning",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,\"prompt_tokens_details\":"
     "{\"cached_tokens\":1920,\"audio_tokens\":0},\"completion_tokens_details\":"
     "{\"reasoning_tokens\":256}}}",
     RB_OK,
     {.input_uncached = 86,
      .cache_read = 1920,
      .output = 300,
      .reasoning = 256,
      .reported = U_IN | U_CR | U_OUT | U_RS}},
    {"chat details null",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1,\"prompt_tokens_details\":null,"
     "\"completion_tokens_details\":null}}",
     RB_OK,
     {.input_uncached = 7, .output = 1, .reported = U_IN | U_OUT}},
    {"chat explicit zeros",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"prompt_tokens_details\":"
     "{\"cached_tokens\":0}}}",
     RB_OK,
     {.reported = U_IN | U_CR | U_OUT}},
    {"chat cached > prompt is clamped",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":50}}}",
     RB_OK,
     {.cache_read = 10, .reported = U_IN | U_CR}},
    {"chat negative is ignored",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":-3,\"completion_tokens\":4}}",
     RB_ERR_PARSE,
     {.output = 4, .reported = U_OUT}},
    {"chat fraction is ignored",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":3.5,\"completion_tokens\":\"4\"}}",
     RB_ERR_PARSE,
     {0}},
    {"chat absurd is ignored",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10000000000000,\"completion_tokens\":1}}",
     RB_ERR_PARSE,
     {.output = 1, .reported = U_OUT}},
    {"deepseek cache hit",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":2,\"prompt_cache_hit_tokens\":64,"
     "\"prompt_cache_miss_tokens\":36}}",
     RB_OK,
     {.input_uncached = 36, .cache_read = 64, .output = 2, .reported = U_IN | U_CR | U_OUT}},
    {"openrouter extras",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":20,\"total_tokens\":1020,"
     "\"cost\":0.0123,\"is_byok\":false,\"cost_details\":{\"upstream_inference_cost\":null},"
     "\"prompt_tokens_details\":{\"cached_tokens\":600,\"cache_write_tokens\":300}}}",
     RB_OK,
     {.input_uncached = 100,
      .cache_read = 600,
      .cache_write_5m = 300,
      .output = 20,
      .reported = U_IN | U_CR | U_W5 | U_OUT}},
    /* the subsets never bill more input than the whole: cache writes past what the cached part
     * leaves are cut, and a cached count past the prompt is cut to it */
    {"openrouter writes past the prompt",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,"
     "\"prompt_tokens_details\":{\"cached_tokens\":6,\"cache_write_tokens\":8}}}",
     RB_OK,
     {.input_uncached = 0,
      .cache_read = 6,
      .cache_write_5m = 4,
      .output = 1,
      .reported = U_IN | U_CR | U_W5 | U_OUT}},
    {"cached past the prompt",
     GW_ROUTE_CHAT,
     "{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,"
     "\"prompt_tokens_details\":{\"cached_tokens\":12}}}",
     RB_OK,
     {.input_uncached = 0, .cache_read = 10, .output = 1, .reported = U_IN | U_CR | U_OUT}},
    {"chat no usage", GW_ROUTE_CHAT, "{\"id\":\"x\",\"choices\":[]}", RB_ERR_NOTFOUND, {0}},
    {"chat usage null", GW_ROUTE_CHAT, "{\"usage\":null}", RB_ERR_NOTFOUND, {0}},
    {"bad json", GW_ROUTE_CHAT, "{\"usage\":", RB_ERR_PARSE, {0}},
    {"completions",
     GW_ROUTE_COMPLETIONS,
     "{\"object\":\"text_completion\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":16}}",
     RB_OK,
     {.input_uncached = 5, .output = 16, .reported = U_IN | U_OUT}},
    {"embeddings",
     GW_ROUTE_EMBEDDINGS,
     "{\"object\":\"list\",\"data\":[],\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}",
     RB_OK,
     {.input_uncached = 8, .reported = U_IN}},
    {"responses",
     GW_ROUTE_RESPONSES,
     "{\"object\":\"response\",\"usage\":{\"input_tokens\":328,\"input_tokens_details\":"
     "{\"cached_tokens\":128},\"output_tokens\":52,\"output_tokens_details\":"
     "{\"reasoning_tokens\":40},\"total_tokens\":380}}",
     RB_OK,
     {.input_uncached = 200,
      .cache_read = 128,
      .output = 52,
      .reasoning = 40,
      .reported = U_IN | U_CR | U_OUT | U_RS}},
    {"anthropic plain",
     GW_ROUTE_MESSAGES,
     "{\"type\":\"message\",\"usage\":{\"input_tokens\":12,\"output_tokens\":6}}",
     RB_OK,
     {.input_uncached = 12, .output = 6, .reported = U_IN | U_OUT}},
    {"anthropic caches without split",
     GW_ROUTE_MESSAGES,
     "{\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":2048,"
     "\"cache_read_input_tokens\":1000,\"output_tokens\":9}}",
     RB_OK,
     {.input_uncached = 3,
      .cache_read = 1000,
      .cache_write_5m = 2048,
      .output = 9,
      .reported = U_IN | U_CR | U_W5 | U_OUT}},
    {"anthropic 5m/1h split",
     GW_ROUTE_MESSAGES,
     "{\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":3000,"
     "\"cache_read_input_tokens\":0,\"cache_creation\":{\"ephemeral_5m_input_tokens\":1000,"
     "\"ephemeral_1h_input_tokens\":2000},\"output_tokens\":9,\"service_tier\":\"standard\"}}",
     RB_OK,
     {.input_uncached = 3,
      .cache_write_5m = 1000,
      .cache_write_1h = 2000,
      .output = 9,
      .reported = U_IN | U_CR | U_W5 | U_W1 | U_OUT}},
    {"anthropic split short of total",
     GW_ROUTE_MESSAGES,
     "{\"usage\":{\"cache_creation_input_tokens\":3000,\"cache_creation\":"
     "{\"ephemeral_1h_input_tokens\":2000}}}",
     RB_OK,
     {.cache_write_5m = 1000, .cache_write_1h = 2000, .reported = U_W5 | U_W1}},
    {"anthropic web search",
     GW_ROUTE_MESSAGES,
     "{\"usage\":{\"input_tokens\":100,\"output_tokens\":50,\"server_tool_use\":"
     "{\"web_search_requests\":2}}}",
     RB_OK,
     {.input_uncached = 100, .output = 50, .requests = 2, .reported = U_IN | U_OUT | U_RQ}},
    {"count_tokens is not usage",
     GW_ROUTE_COUNT_TOKENS,
     "{\"input_tokens\":42}",
     RB_ERR_NOTFOUND,
     {0}},
};

static void test_bodies(void)
{
    for (size_t i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
        const body_case_t *c = &body_cases[i];
        gw_usage_t u;
        rb_err_t err = gw_usage_from_body(c->route, c->body, strlen(c->body), NULL, &u);
        CHECK_INT_EQ(err, c->err);
        if (err != c->err)
            fprintf(stderr, "  case: %s\n", c->what);
        check_usage(c->what, &u, &c->want);
        {
            rb_json_t *doc = NULL;
            int parses = rb_json_parse(c->body, strlen(c->body), NULL, &doc) == RB_OK;
            rb_json_free(doc);
            CHECK_INT_EQ(u.terminal, parses && err != RB_ERR_NOTFOUND);
        }
    }
}

typedef struct {
    const char *name, *data;
} ev_t;

static void observe_all(gw_usage_observer_t *obs, gw_route_t route, const ev_t *ev, size_t n)
{
    gw_usage_observer_init(obs, route, NULL);
    for (size_t i = 0; i < n; i++)
        gw_usage_observe(obs, ev[i].name, strlen(ev[i].name), ev[i].data, strlen(ev[i].data));
}

/* Observes one event given as C strings. */
static void obs_str(gw_usage_observer_t *obs, const char *name, const char *data)
{
    gw_usage_observe(obs, name, strlen(name), data, strlen(data));
}

static void test_chat_stream(void)
{
    static const ev_t ev[] = {
        {"", "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
             "\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}"},
        {"", "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
             "\"finish_reason\":null}],\"usage\":null}"},
        {"", "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w\\u00f6rld\\n\"},"
             "\"finish_reason\":\"stop\"}],\"usage\":null}"},
        {"", "{\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":"
             "3,\"total_tokens\":22,\"prompt_tokens_details\":{\"cached_tokens\":0}}}"},
        {"", "[DONE]"},
    };
    gw_usage_observer_t obs;
    observe_all(&obs, GW_ROUTE_CHAT, ev, 5);
    check_usage("chat stream", &obs.usage,
                &(gw_usage_t){.input_uncached = 19, .output = 3, .reported = U_IN | U_CR | U_OUT});
    CHECK_INT_EQ(obs.usage.terminal, 1);
    CHECK_INT_EQ(obs.done, 1);
    CHECK_INT_EQ(obs.provider_error, 0);
    CHECK_INT_EQ(obs.malformed, 0);
    CHECK_INT_EQ(obs.output_bytes, 5 + 8); /* "Hello" + " wörld\n" (ö is 2 bytes) */

    /* reasoning text counts as output for an estimate: DeepSeek's reasoning_content and
     * OpenRouter's reasoning deltas */
    gw_usage_observer_init(&obs, GW_ROUTE_CHAT, NULL);
    obs_str(&obs, "", "{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think\"}}]}");
    obs_str(&obs, "", "{\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"more\"}}]}");
    obs_str(&obs, "", "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}");
    CHECK_INT_EQ(obs.output_bytes, 5 + 4 + 2);

    /* without include_usage: nothing reported, not terminal, but done */
    observe_all(&obs, GW_ROUTE_CHAT, ev + 1, 2);
    obs_str(&obs, "", "[DONE]\n");
    CHECK_INT_EQ(obs.usage.reported, 0);
    CHECK_INT_EQ(obs.usage.terminal, 0);
    CHECK_INT_EQ(obs.done, 1);
}

static void test_chat_stream_errors(void)
{
    static const ev_t ev[] = {
        {"", "{\"choices\":[{\"delta\":{\"content\":\"the \\\"error\\\": word\"}}]}"},
        {"", "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":"
             "\"{\\\"a\\\":1}\"}}]}}]}"},
    };
    gw_usage_observer_t obs;
    observe_all(&obs, GW_ROUTE_CHAT, ev, 2);
    CHECK_INT_EQ(obs.provider_error, 0); /* "error" inside content is not an error */
    CHECK_INT_EQ(obs.output_bytes, 17 + 7);
    obs_str(&obs, "", "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}");
    CHECK_INT_EQ(obs.provider_error, 1);
    CHECK_INT_EQ(obs.done, 0);
    /* a usage chunk that does not parse is noted */
    obs_str(&obs, "", "{\"usage\":{\"prompt_tokens\":");
    CHECK_INT_EQ(obs.malformed, 1);
    CHECK_INT_EQ(obs.usage.reported, 0);
}

static void test_anthropic_stream(void)
{
    static const ev_t ev[] = {
        {"message_start",
         "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,"
         "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4000,\"output_tokens\":1}}"
         "}"},
        {"ping", "{\"type\": \"ping\"}"},
        {"content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","
         "\"thinking\":\"hmm\"}}"},
        {"content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
         "\"text\":\"Hi!\"}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},"
                          "\"usage\":{\"output_tokens\":10}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                          "\"usage\":{\"output_tokens\":25}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
    };
    gw_usage_observer_t obs;

    /* interrupted after message_start: input known, output a placeholder only */
    observe_all(&obs, GW_ROUTE_MESSAGES, ev, 4);
    check_usage(
        "anthropic start", &obs.usage,
        &(gw_usage_t){
            .input_uncached = 25, .cache_read = 4000, .output = 1, .reported = U_IN | U_CR | U_W5});
    CHECK_INT_EQ(obs.usage.terminal, 0);
    CHECK_INT_EQ(obs.output_bytes, 6);
    /* complete: message_delta is cumulative, the last one wins (25, not 35) */
    observe_all(&obs, GW_ROUTE_MESSAGES, ev, 7);
    check_usage("anthropic full", &obs.usage,
                &(gw_usage_t){.input_uncached = 25,
                              .cache_read = 4000,
                              .output = 25,
                              .reported = U_IN | U_CR | U_W5 | U_OUT});
    CHECK_INT_EQ(obs.usage.terminal, 1);
    CHECK_INT_EQ(obs.done, 1);
    CHECK_INT_EQ(obs.provider_error, 0);
}

static void test_anthropic_restating_delta(void)
{
    static const ev_t ev[] = {
        {"message_start",
         "{\"message\":{\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":300,"
         "\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,\"ephemeral_1h_input_tokens\":"
         "200},\"output_tokens\":1}}}"},
        /* newer API versions restate input/cache fields in message_delta (without the split) */
        {"message_delta", "{\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":300,"
                          "\"cache_read_input_tokens\":0,\"output_tokens\":0,"
                          "\"server_tool_use\":{\"web_search_requests\":1}}}"},
        {"error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}"},
    };
    gw_usage_observer_t obs;
    observe_all(&obs, GW_ROUTE_MESSAGES, ev, 3);
    check_usage("anthropic restate", &obs.usage,
                &(gw_usage_t){.input_uncached = 5,
                              .cache_write_5m = 100,
                              .cache_write_1h = 200,
                              .requests = 1,
                              .reported = U_IN | U_CR | U_W5 | U_W1 | U_OUT | U_RQ});
    CHECK_INT_EQ(obs.usage.output, 0); /* an explicit zero stays zero */
    CHECK_INT_EQ(obs.provider_error, 1);
    CHECK_INT_EQ(obs.done, 0);
}

static void test_responses_stream(void)
{
    static const char *const terminal[] = {"response.completed", "response.incomplete",
                                           "response.failed"};
    for (size_t k = 0; k < 3; k++) {
        char data[512];
        gw_usage_observer_t obs;
        int n =
            snprintf(data, sizeof(data),
                     "{\"type\":\"%s\",\"sequence_number\":9,\"response\":{\"status\":\"x\","
                     "\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\""
                     ":20},\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":"
                     "0},\"total_tokens\":57}}}",
                     terminal[k]);
        gw_usage_observer_init(&obs, GW_ROUTE_RESPONSES, NULL);
        obs_str(&obs, "response.created", "{\"type\":\"response.created\"}");
        obs_str(&obs, "response.output_text.delta",
                "{\"type\":\"response.output_text.delta\",\"delta\":\"Hi there\"}");
        CHECK_INT_EQ(obs.usage.reported, 0);
        gw_usage_observe(&obs, terminal[k], strlen(terminal[k]), data, (size_t)n);
        check_usage(terminal[k], &obs.usage,
                    &(gw_usage_t){.input_uncached = 30,
                                  .cache_read = 20,
                                  .output = 7,
                                  .reported = U_IN | U_CR | U_OUT | U_RS});
        CHECK_INT_EQ(obs.usage.terminal, 1);
        CHECK_INT_EQ(obs.done, 1);
        CHECK_INT_EQ(obs.output_bytes, 8);
        /* the same event without an `event:` line is recognised by its type */
        gw_usage_observer_init(&obs, GW_ROUTE_RESPONSES, NULL);
        gw_usage_observe(&obs, "", 0, data, (size_t)n);
        CHECK_INT_EQ(obs.usage.input_uncached, 30);
        CHECK_INT_EQ(obs.done, 1);
    }
    gw_usage_observer_t obs;
    gw_usage_observer_init(&obs, GW_ROUTE_RESPONSES, NULL);
    obs_str(&obs, "error", "{\"type\":\"error\",\"code\":\"server_error\"}");
    CHECK_INT_EQ(obs.provider_error, 1);
}

static void test_estimates(void)
{
    gw_usage_t u = gw_usage_estimate(10, 9, 4);
    CHECK_INT_EQ(u.input_uncached, 3);
    CHECK_INT_EQ(u.output, 3);
    CHECK_INT_EQ(u.reported, 0);
    u = gw_usage_estimate(8, 0, 0); /* default chars per token */
    CHECK_INT_EQ(u.input_uncached, 8 / GW_USAGE_CHARS_PER_TOKEN_DEFAULT);
    CHECK_INT_EQ(u.output, 0);
    u = gw_usage_estimate(-5, INT64_MAX, 1);
    CHECK_INT_EQ(u.input_uncached, 0);
    CHECK_INT_EQ(u.output, INT64_MAX);

    /* nothing reported: both sides estimated */
    u = (gw_usage_t){0};
    CHECK_INT_EQ(gw_usage_fill_estimate(&u, 400, 40, 4), 1);
    CHECK_INT_EQ(u.input_uncached, 100);
    CHECK_INT_EQ(u.output, 10);
    /* provider's explicit zeros are never replaced */
    u = (gw_usage_t){.reported = U_IN | U_OUT};
    CHECK_INT_EQ(gw_usage_fill_estimate(&u, 400, 40, 4), 0);
    CHECK_INT_EQ(u.input_uncached, 0);
    CHECK_INT_EQ(u.output, 0);
    /* input known from message_start, output placeholder raised but never lowered */
    u = (gw_usage_t){.cache_read = 50, .output = 1, .reported = U_CR};
    CHECK_INT_EQ(gw_usage_fill_estimate(&u, 4000, 400, 4), 1);
    CHECK_INT_EQ(u.input_uncached, 0);
    CHECK_INT_EQ(u.output, 100);
    u = (gw_usage_t){.output = 500, .reported = U_IN};
    gw_usage_fill_estimate(&u, 0, 4, 4);
    CHECK_INT_EQ(u.output, 500);
}

/* The text of a non-streamed answer, which an output estimate counts: not its envelope. */
static void test_body_text_bytes(void)
{
    static const char chat[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"h\\u00e9llo\",\"tool_calls\":[{"
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},\"finish_reason\":"
        "\"stop\"}]}";
    static const char responses[] =
        "{\"id\":\"resp_1\",\"instructions\":null,\"text\":{\"format\":{\"type\":\"text\"}},"
        "\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":"
        "\"abc\"}]}]}";
    static const char messages[] =
        "{\"id\":\"msg_1\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\"},{\"type\":"
        "\"text\",\"text\":\"ok\"}],\"stop_reason\":\"end_turn\"}";

    /* "héllo" (6 bytes) + {"a":1} (7) */
    CHECK_INT_EQ(gw_usage_body_text_bytes(GW_ROUTE_CHAT, chat, strlen(chat)), 13);
    CHECK_INT_EQ(gw_usage_body_text_bytes(GW_ROUTE_RESPONSES, responses, strlen(responses)), 3);
    /* "thinking" the type is a string too: only values after the key count ("hmm", "ok") */
    CHECK_INT_EQ(gw_usage_body_text_bytes(GW_ROUTE_MESSAGES, messages, strlen(messages)), 5);
    CHECK_INT_EQ(gw_usage_body_text_bytes(GW_ROUTE_EMBEDDINGS, chat, strlen(chat)), 0);
    CHECK_INT_EQ(gw_usage_body_text_bytes(GW_ROUTE_CHAT, "", 0), 0);
}

TEST_MAIN(test_body_text_bytes, test_bodies, test_chat_stream, test_chat_stream_errors,
          test_anthropic_stream, test_anthropic_restating_delta, test_responses_stream,
          test_estimates)
