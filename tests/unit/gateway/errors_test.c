/* gw_errors_from_provider and gw_errors_mask_account: what a provider's error answer to a call on
 * the operator's key becomes for its caller (nothing that identifies the operator's account). */
#include <string.h>

#include "common/json.h"
#include "gateway/errors.h"
#include "test.h"

static char masked[256];

static const char *mask(const char *s)
{
    snprintf(masked, sizeof(masked), "%s", s);
    gw_errors_mask_account(masked, strlen(masked));
    return masked;
}

static void test_mask_account_words(void)
{
    CHECK_STR_EQ(mask("Incorrect API key provided: sk-proj-****abcd. You can find"),
                 "Incorrect API key provided: ****************. You can find");
    CHECK_STR_EQ(mask("Rate limit reached for gpt-4o in organization org-AbC123 on tokens"),
                 "Rate limit reached for gpt-4o in organization ********** on tokens");
    CHECK_STR_EQ(mask("project proj_xYz9 and proj-Q1"), "project ********* and *******");
    CHECK_STR_EQ(mask("(org: 1b2c3d4e-0000-4a4a-8b8b-0123456789AB, model: claude)"),
                 "(org: ************************************, model: claude)");
    /* words that only look alike stay */
    CHECK_STR_EQ(mask("sk- org- proj_ task-sk-1 my-org-x 1b2c3d4e-0000-4a4a-8b8b-0123456789A"),
                 "sk- org- proj_ task-sk-1 my-org-x 1b2c3d4e-0000-4a4a-8b8b-0123456789A");
    CHECK_STR_EQ(mask("sk-a"), "****");
    CHECK_STR_EQ(mask(""), "");
}

/* from_provider over (status, body) in dialect d: the status answered and the error's fields. */
static int rewrite(gw_dialect_t d, int status, const char *body, char *type, char *code,
                   char *message)
{
    rb_buf_t out;
    rb_json_t *doc = NULL;
    int st, e;

    rb_buf_init(&out, 0);
    st = gw_errors_from_provider(d, status, body, body != NULL ? strlen(body) : 0, &out);
    CHECK_INT_EQ(rb_json_parse(out.base, out.len, NULL, &doc), RB_OK);
    e = rb_json_member(doc, 0, "error");
    CHECK(e >= 0);
    if (d == GW_DIALECT_ANTHROPIC)
        CHECK(rb_json_str_eq(doc, rb_json_member(doc, 0, "type"), "error"));
    CHECK_INT_EQ(rb_json_get_str(doc, e, "type", type, 128), RB_OK);
    CHECK_INT_EQ(rb_json_get_str(doc, e, "message", message, 1024), RB_OK);
    if (rb_json_get_str(doc, e, "code", code, 128) != RB_OK)
        snprintf(code, 128, "(none)");
    rb_json_free(doc);
    rb_buf_free(&out);
    return st;
}

static void test_auth_refusals_are_502(void)
{
    char type[128], code[128], msg[1024];
    const char *oa401 =
        "{\"error\":{\"message\":\"Incorrect API key provided: sk-proj-****abcd.\","
        "\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}";
    const char *an403 = "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":"
                        "\"Your API key does not have permission\"}}";

    CHECK_INT_EQ(rewrite(GW_DIALECT_OPENAI, 401, oa401, type, code, msg), 502);
    CHECK_STR_EQ(code, "upstream_auth_failed");
    CHECK_STR_EQ(type, "api_error");
    CHECK(strstr(msg, "abcd") == NULL && strstr(msg, "sk-") == NULL);
    CHECK_INT_EQ(rewrite(GW_DIALECT_ANTHROPIC, 403, an403, type, code, msg), 502);
    CHECK_STR_EQ(type, "api_error");
    CHECK(strstr(msg, "operator") != NULL);
}

static void test_operator_account_out_of_credit_and_redirects(void)
{
    char type[128], code[128], msg[1024];
    const char *oa = "{\"error\":{\"message\":\"You exceeded your current quota, please check your "
                     "plan and billing details.\",\"type\":\"insufficient_quota\",\"param\":null,"
                     "\"code\":\"insufficient_quota\"}}";
    const char *an =
        "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
        "\"Your credit balance is too low to access the Anthropic API.\"}}";

    CHECK_INT_EQ(rewrite(GW_DIALECT_OPENAI, 429, oa, type, code, msg), 502);
    CHECK_STR_EQ(code, "upstream_quota_exhausted");
    CHECK_INT_EQ(rewrite(GW_DIALECT_ANTHROPIC, 400, an, type, code, msg), 502);
    CHECK_STR_EQ(type, "api_error");
    /* a redirect (curl follows none) is no answer for the caller */
    CHECK_INT_EQ(rewrite(GW_DIALECT_OPENAI, 302, "<html>moved</html>", type, code, msg), 502);
    CHECK_STR_EQ(code, "upstream_error");
    CHECK_INT_EQ(rewrite(GW_DIALECT_OPENAI, 304, NULL, type, code, msg), 502);
}

static void test_rate_limits_keep_type_and_code_only(void)
{
    char type[128], code[128], msg[1024];
    const char *oa =
        "{\"error\":{\"message\":\"Rate limit reached for gpt-4o in organization "
        "org-abc on tokens per min (TPM): Limit 30000, Used 29000\",\"type\":\"tokens\","
        "\"param\":null,\"code\":\"rate_limit_exceeded\"}}";
    const char *an = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":"
                     "\"This request would exceed your organization's rate limit of 50,000 input "
                     "tokens per minute\"}}";

    CHECK_INT_EQ(rewrite(GW_DIALECT_OPENAI, 429, oa, type, code, msg), 429);
    CHECK_STR_EQ(type, "tokens");
    CHECK_STR_EQ(code, "rate_limit_exceeded");
    CHECK(strstr(msg, "org-") == NULL && strstr(msg, "30000") == NULL);
    CHECK_INT_EQ(rewrite(GW_DIALECT_ANTHROPIC, 429, an, type, code, msg), 429);
    CHECK_STR_EQ(type, "rate_limit_error");
    CHECK(strstr(msg, "50,000") == NULL);
}

static void test_other_errors_keep_their_words_masked(void)
{
    char type[128], code[128], msg[1024];
    const char *oa =
        "{\"error\":{\"message\":\"Invalid value for 'messages[0].role' (key "
        "sk-abc1).\",\"type\":\"invalid_request_error\",\"param\":\"messages[0].role\","
        "\"code\":null}}";
    const char *an = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
                     "\"Overloaded\"},\"request_id\":\"req_1\"}";

    CHECK_INT_EQ(rewrite(GW_DIALECT_OPENAI, 400, oa, type, code, msg), 400);
    CHECK_STR_EQ(type, "invalid_request_error");
    CHECK_STR_EQ(code, "(none)");
    CHECK_STR_EQ(msg, "Invalid value for 'messages[0].role' (key *******).");
    CHECK_INT_EQ(rewrite(GW_DIALECT_ANTHROPIC, 529, an, type, code, msg), 529);
    CHECK_STR_EQ(type, "overloaded_error");
    CHECK_STR_EQ(msg, "Overloaded");
}

static void test_bodies_that_are_no_error_document(void)
{
    char type[128], code[128], msg[1024];
    const char *bodies[] = {NULL,
                            "",
                            "<html>502 Bad Gateway</html>",
                            "{\"error\":\"plain\"}",
                            "{\"error\":{\"message\":\"no type\"}}",
                            "[1,2]",
                            "{\"error\":{\"type\":\"x\",\"message\":\"\\u0000cut\"}}"};

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        int st = rewrite(GW_DIALECT_OPENAI, 502, bodies[i], type, code, msg);
        CHECK_INT_EQ(st, 502);
        if (i < 6) {
            CHECK_STR_EQ(code, "upstream_error");
            CHECK_STR_EQ(msg, "the provider answered HTTP 502");
        } else { /* a type, but a message that cannot be a C string */
            CHECK_STR_EQ(type, "x");
            CHECK_STR_EQ(msg, "the provider answered HTTP 502");
        }
    }
    /* a type or code is an identifier: anything else in it is replaced */
    CHECK_INT_EQ(rewrite(GW_DIALECT_OPENAI, 400,
                         "{\"error\":{\"type\":\"a b\\\"c\",\"code\":\"x\\ny\",\"message\":\"m\"}}",
                         type, code, msg),
                 400);
    CHECK_STR_EQ(type, "a_b_c");
    CHECK_STR_EQ(code, "x_y");
}

TEST_MAIN(test_mask_account_words, test_auth_refusals_are_502,
          test_operator_account_out_of_credit_and_redirects,
          test_rate_limits_keep_type_and_code_only, test_other_errors_keep_their_words_masked,
          test_bodies_that_are_no_error_document)
