/* gw_recorder_row_copy: the spool line is the durable record of a settled request (it is copied
 * into rb_usage_stage, also when replayed after a crash), so every field must round-trip exactly
 * through COPY's text format: decoded here as PostgreSQL decodes it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/recorder.h"
#include "test.h"

#define COLUMNS 26 /* pg_temp.rb_usage_stage, schema/0003_ledger_fast.sql */

typedef struct {
    char v[COLUMNS][512];
    int null[COLUMNS];
} fields_t;

/* Splits one line of COPY text into its fields, undoing the escapes (\\ \t \n \r) and \N; -1 for
 * a line PostgreSQL would refuse (no final newline, a raw CR, the wrong column count). */
static int decode(const char *line, size_t len, fields_t *f)
{
    size_t col = 0, n = 0;

    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < len; i++) {
        char c = line[i];
        if (c == '\r') /* PostgreSQL refuses a literal CR in COPY text data ("use \\r") */
            return -1;
        if (c == '\t' || c == '\n') {
            f->v[col][n] = '\0';
            if (c == '\n')
                return i == len - 1 && col == COLUMNS - 1 ? 0 : -1;
            if (++col == COLUMNS)
                return -1;
            n = 0;
            continue;
        }
        if (c == '\\' && i + 1 < len) {
            c = line[++i];
            if (c == 'N') { /* the NULL marker */
                f->null[col] = 1;
                continue;
            }
            c = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
        }
        if (n + 1 >= sizeof(f->v[col]))
            return -1;
        f->v[col][n++] = c;
    }
    return -1; /* no newline */
}

static void line_of(const gw_db_usage_row_t *row, fields_t *f)
{
    rb_buf_t out;

    rb_buf_init(&out, 0);
    gw_recorder_row_copy(row, &out);
    CHECK(out.len > 1 && out.base[out.len - 1] == '\n');
    CHECK(memchr(out.base, '\n', out.len - 1) == NULL); /* one line */
    CHECK(decode(out.base, out.len, f) == 0);
    rb_buf_free(&out);
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
    static const char *want[COLUMNS] = {"req_abc123",
                                        "u-aaaaaaaa",
                                        "ws-bbbbbbbb",
                                        NULL /* subject, below */,
                                        "/v1/chat/completions",
                                        "openai",
                                        "gpt-4o-mini",
                                        "gpt-4o-mini-2024-07-18",
                                        "managed",
                                        "ok",
                                        "200",
                                        "1200",
                                        "1000",
                                        "300",
                                        "7",
                                        "50",
                                        "20",
                                        "2",
                                        "9223372036854775807",
                                        "t",
                                        "provider",
                                        "12",
                                        "345",
                                        NULL /* error_code */,
                                        "2026-11-30T02:24:26.123Z",
                                        "gw-x.abc.1"};
    fields_t f;

    snprintf(row.request_id, sizeof(row.request_id), "req_abc123");
    snprintf(row.user_id, sizeof(row.user_id), "u-aaaaaaaa");
    snprintf(row.workspace_id, sizeof(row.workspace_id), "ws-bbbbbbbb");
    /* every character COPY treats specially, and UTF-8 */
    snprintf(row.subject, sizeof(row.subject),
             "end user \"7\" \\N \\ tab\there\nnl\rcr caf\xc3\xa9");
    snprintf(row.route, sizeof(row.route), "/v1/chat/completions");
    snprintf(row.provider, sizeof(row.provider), "openai");
    snprintf(row.model, sizeof(row.model), "gpt-4o-mini");
    snprintf(row.upstream_model, sizeof(row.upstream_model), "gpt-4o-mini-2024-07-18");
    snprintf(row.lease_id, sizeof(row.lease_id), "gw-x.abc.1");
    line_of(&row, &f);
    for (int i = 0; i < COLUMNS; i++) {
        if (i == 3)
            CHECK_STR_EQ(f.v[i], row.subject);
        else if (want[i] != NULL)
            CHECK_STR_EQ(f.v[i], want[i]);
        CHECK_INT_EQ(f.null[i], i == 23); /* only error_code is absent */
    }
}

static void test_absent_values_are_null(void)
{
    gw_db_usage_row_t row = {
        .byok = 1, .status = "rejected", .http_status = 0, .usage_source = "none", .ttfb_ms = -1};
    fields_t f;

    snprintf(row.request_id, sizeof(row.request_id), "req_x");
    snprintf(row.user_id, sizeof(row.user_id), "u-aaaaaaaa");
    snprintf(row.route, sizeof(row.route), "/v1/messages");
    snprintf(row.error_code, sizeof(row.error_code), "model_not_found");
    line_of(&row, &f);
    /* workspace_id, subject, provider, model, upstream_model, http_status, ttfb_ms, lease_id */
    for (int i = 0; i < COLUMNS; i++)
        CHECK_INT_EQ(f.null[i], i == 2 || i == 3 || i == 5 || i == 6 || i == 7 || i == 10 ||
                                    i == 21 || i == 25);
    CHECK_STR_EQ(f.v[8], "byok");
    CHECK_STR_EQ(f.v[19], "f");
    CHECK_STR_EQ(f.v[23], "model_not_found");
    CHECK_STR_EQ(f.v[18], "0");
}

/* A row with what every record has (a request, a user, a route), for a test of its subject. */
static void subject_row(gw_db_usage_row_t *row)
{
    *row = (gw_db_usage_row_t){.status = "ok", .usage_source = "none", .ttfb_ms = -1};
    snprintf(row->request_id, sizeof(row->request_id), "req_y");
    snprintf(row->user_id, sizeof(row->user_id), "u-aaaaaaaa");
    snprintf(row->route, sizeof(row->route), "/v1/chat/completions");
}

static void test_ill_formed_utf8_is_replaced(void)
{
    gw_db_usage_row_t row;
    fields_t f;

    subject_row(&row);
    snprintf(row.subject, sizeof(row.subject),
             "a\xff"
             "b\xc3");
    line_of(&row, &f);
    CHECK_STR_EQ(f.v[3], "a\xEF\xBF\xBD"
                         "b\xEF\xBF\xBD");
}

/* Every ASCII byte but NUL at every position of a field round-trips (runs of plain bytes are
 * copied whole, the rest escaped one by one). */
static void test_every_ascii_byte_round_trips(void)
{
    gw_db_usage_row_t row;
    fields_t f;

    subject_row(&row);
    for (int c = 1; c < 0x80; c++) {
        for (size_t len = 1; len <= 12; len++) {
            for (size_t at = 0; at < len; at++) {
                memset(row.subject, 'a', len);
                row.subject[len] = '\0';
                row.subject[at] = (char)c;
                line_of(&row, &f);
                CHECK_STR_EQ(f.v[3], row.subject);
                CHECK_INT_EQ(f.null[3], 0);
            }
        }
    }
}

TEST_MAIN(test_every_field_round_trips, test_absent_values_are_null,
          test_ill_formed_utf8_is_replaced, test_every_ascii_byte_round_trips)
