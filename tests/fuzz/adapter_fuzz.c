/*
 * Fuzz target for gateway/adapter.c. The first byte picks the route and options; the rest is a
 * request body. A body that inspects cleanly must rewrite to valid JSON that keeps every original
 * top-level key, adds only the cap field and stream_options, names the upstream model, and inspects
 * cleanly again with the same stream flag. add_cost and the usage-chunk check run on the raw bytes
 * and must either refuse or produce valid JSON.
 */
#include <stdint.h>
#include <string.h>

#include "gateway/adapter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_upstream[] = "up\"stream\\\xc3\xa9";

static void fuzz_check_rewrite(gw_route_t route, const char *body, size_t len,
                               const gw_request_info_t *info, int64_t cap, int force)
{
    gw_request_info_t again;
    rb_json_t *in = NULL, *out_doc = NULL;
    rb_buf_t out;
    int k = -1, v = -1;
    size_t added = 0;

    rb_buf_init(&out, 0);
    RB_ASSERT(gw_adapter_rewrite(body, len, info, fuzz_upstream, cap, force, &out) == RB_OK);
    RB_ASSERT(rb_json_parse(body, len, NULL, &in) == RB_OK);
    RB_ASSERT(rb_json_parse(out.base, out.len, NULL, &out_doc) == RB_OK);
    RB_ASSERT(rb_json_str_eq(out_doc, rb_json_member(out_doc, 0, "model"), fuzz_upstream));
    while (rb_json_next(in, 0, &k, &v)) {
        char key[256];
        size_t key_len = 0;
        /* a key with an embedded NUL cannot be looked up by C string */
        if (rb_json_str(in, k, key, sizeof(key), &key_len) == RB_OK && strlen(key) == key_len)
            RB_ASSERT(rb_json_member(out_doc, 0, key) >= 0);
    }
    added += cap != 0 && !info->cap_given && !info->cap_null &&
             (route == GW_ROUTE_CHAT || route == GW_ROUTE_RESPONSES ||
              route == GW_ROUTE_COMPLETIONS); /* the cap field */
    added += force && info->stream && !info->include_usage && info->so_kind == 0 &&
             (route == GW_ROUTE_CHAT || route == GW_ROUTE_COMPLETIONS); /* stream_options */
    RB_ASSERT(rb_json_count(out_doc, 0) == rb_json_count(in, 0) + added);
    RB_ASSERT(gw_adapter_inspect(route, out.base, out.len, NULL, &again, NULL, 0) == RB_OK);
    RB_ASSERT(again.stream == info->stream);
    if (cap != 0 && info->max_output == 0 &&
        (route == GW_ROUTE_CHAT || route == GW_ROUTE_RESPONSES))
        RB_ASSERT(again.max_output == cap);
    if (force && info->stream && (route == GW_ROUTE_CHAT || route == GW_ROUTE_COMPLETIONS))
        RB_ASSERT(again.include_usage == 1);
    rb_json_free(in);
    rb_json_free(out_doc);
    rb_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_request_info_t info;
    char msg[GW_ADAPTER_ERRMSG_MAX];
    const char *body = (const char *)data + 1;
    gw_route_t route;
    rb_buf_t out;
    rb_err_t err;

    if (size == 0)
        return 0;
    route = (gw_route_t)(data[0] % GW_ROUTE__COUNT);
    size--;
    err = gw_adapter_inspect(route, body, size, NULL, &info, msg, sizeof(msg));
    RB_ASSERT(err == RB_OK || strlen(msg) > 0);
    if (err == RB_OK) {
        RB_ASSERT(info.model_len > 0 && info.model_len <= GW_MODEL_NAME_MAX);
        fuzz_check_rewrite(route, body, size, &info, (data[0] & 0x40) ? 777 : 0, data[0] & 0x80);
    }
    (void)gw_adapter_is_injected_usage_chunk(body, size);
    rb_buf_init(&out, 0);
    if (gw_adapter_add_cost(body, size, (int64_t)size * 1234567, &out) == RB_OK) {
        rb_json_t *doc = NULL;
        RB_ASSERT(rb_json_parse(out.base, out.len, NULL, &doc) == RB_OK);
        rb_json_free(doc);
    } else {
        RB_ASSERT(out.len == 0);
    }
    rb_buf_free(&out);
    return 0;
}
