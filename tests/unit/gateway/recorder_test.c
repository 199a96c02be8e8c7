/* gw_recorder_row_json: the spool line is the durable record of a settled request (it is replayed
 * into rb_usage_post after a crash), so every field must round-trip exactly through JSON. */
#include <stdint.h>
#include <string.h>

#include "common/json.h"
#include "gateway/recorder.h"
#include "test.h"

static rb_json_t *line_of(const gw_db_usage_row_t *row, rb_buf_t *out)
{
    rb_json_t *doc = NULL;
    rb_buf_init(out, 0);
    gw_recorder_row_json(row, out);
    CHECK(out->len > 1 && out->base[out->len - 1] == '\n');
    CHECK(memchr(out->base, '\n', out->len - 1) == NULL); /* one line */
    CHECK(rb_json_parse(out->base, out->len - 1, NULL, &doc) == RB_OK);
    return doc;
}

static void test_every_field_round_trips(void)
{
    gw_db_usage_row_t row = {.byok = 0,
                             .status = "ok",
                             .http_status = 200,
                             .input_uncached = 1200,
                             .cache_read = 1000,
                             .cache_write_5m = 300,
                             .cache_write_1h = 7,
                             .output = 50,
                             .reasoning = 20,
                             .requests = 2,
                             .cost_micro = INT64_MAX,
                             .billed = 1,
                             .usage_source = "provider",
                             .ttfb_ms = 12,
                             .duration_ms = 345,
                             .created_at_ms = 1796005466123};
    rb_buf_t out;
    rb_json_t *doc;
    int64_t v;
    int b;

    snprintf(row.request_id, sizeof(row.request_id), "req_abc123");
    snprintf(row.user_id, sizeof(row.user_id), "u-aaaaaaaa");
    snprintf(row.workspace_id, sizeof(row.workspace_id), "ws-bbbbbbbb");
    snprintf(row.subject, sizeof(row.subject), "end user \"7\" \\ caf\xc3\xa9");
    snprintf(row.route, sizeof(row.route), "/v1/chat/completions");
    snprintf(row.provider, sizeof(row.provider), "openai");
    snprintf(row.model, sizeof(row.model), "gpt-4o-mini");
    snprintf(row.upstream_model, sizeof(row.upstream_model), "gpt-4o-mini-2024-07-18");
    snprintf(row.lease_id, sizeof(row.lease_id), "gw-x.abc.1");
    doc = line_of(&row, &out);
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "request_id"), "req_abc123"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "user_id"), "u-aaaaaaaa"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "workspace_id"), "ws-bbbbbbbb"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "subject"), row.subject));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "route"), "/v1/chat/completions"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "upstream_model"), "gpt-4o-mini-2024-07-18"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "mode"), "managed"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "status"), "ok"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "usage_source"), "provider"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "lease_id"), "gw-x.abc.1"));
    CHECK(rb_json_get_int64(doc, 0, "cost_micro", &v) == 0 && v == INT64_MAX);
    CHECK(rb_json_get_int64(doc, 0, "input_uncached", &v) == 0 && v == 1200);
    CHECK(rb_json_get_int64(doc, 0, "cache_read", &v) == 0 && v == 1000);
    CHECK(rb_json_get_int64(doc, 0, "cache_write_5m", &v) == 0 && v == 300);
    CHECK(rb_json_get_int64(doc, 0, "cache_write_1h", &v) == 0 && v == 7);
    CHECK(rb_json_get_int64(doc, 0, "output", &v) == 0 && v == 50);
    CHECK(rb_json_get_int64(doc, 0, "reasoning", &v) == 0 && v == 20);
    CHECK(rb_json_get_int64(doc, 0, "requests", &v) == 0 && v == 2);
    CHECK(rb_json_get_int64(doc, 0, "http_status", &v) == 0 && v == 200);
    CHECK(rb_json_get_int64(doc, 0, "ttfb_ms", &v) == 0 && v == 12);
    CHECK(rb_json_get_int64(doc, 0, "duration_ms", &v) == 0 && v == 345);
    CHECK(rb_json_get_bool(doc, 0, "billed", &b) == 0 && b == 1);
    rb_json_free(doc);
    rb_buf_free(&out);
}

static void test_absent_values_are_null(void)
{
    gw_db_usage_row_t row = {
        .byok = 1, .status = "rejected", .http_status = 0, .usage_source = "none", .ttfb_ms = -1};
    rb_buf_t out;
    rb_json_t *doc;
    int64_t v;

    snprintf(row.request_id, sizeof(row.request_id), "req_x");
    snprintf(row.user_id, sizeof(row.user_id), "u-aaaaaaaa");
    snprintf(row.route, sizeof(row.route), "/v1/messages");
    snprintf(row.error_code, sizeof(row.error_code), "model_not_found");
    doc = line_of(&row, &out);
    CHECK(rb_json_type(doc, rb_json_find(doc, 0, "workspace_id")) == RB_JSON_NULL);
    CHECK(rb_json_type(doc, rb_json_find(doc, 0, "subject")) == RB_JSON_NULL);
    CHECK(rb_json_type(doc, rb_json_find(doc, 0, "model")) == RB_JSON_NULL);
    CHECK(rb_json_type(doc, rb_json_find(doc, 0, "http_status")) == RB_JSON_NULL);
    CHECK(rb_json_type(doc, rb_json_find(doc, 0, "ttfb_ms")) == RB_JSON_NULL);
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "mode"), "byok"));
    CHECK(rb_json_str_eq(doc, rb_json_find(doc, 0, "error_code"), "model_not_found"));
    CHECK(rb_json_get_int64(doc, 0, "cost_micro", &v) == 0 && v == 0);
    rb_json_free(doc);
    rb_buf_free(&out);
}

TEST_MAIN(test_every_field_round_trips, test_absent_values_are_null)
