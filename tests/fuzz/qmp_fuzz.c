/* Fuzz target for the QMP codec (vmm/qmp.c): message parsing, line framing and command building. */
#include <stdint.h>
#include <string.h>

#include "common/json.h"
#include "vmm/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vmm_qmp_msg_t m;
    rb_buf_t in, out;
    size_t consumed, len;

    /* framing: feed the input as a stream and parse every complete line */
    rb_buf_init(&in, 0);
    rb_buf_append(&in, data, size);
    while ((len = vmm_qmp_next_line(&in, &consumed), consumed) != 0) {
        if (vmm_qmp_parse(in.base, len, &m) == RB_OK) {
            RB_ASSERT(m.kind >= VMM_QMP_GREETING && m.kind <= VMM_QMP_EVENT);
            RB_ASSERT(strlen(m.name) < VMM_QMP_NAME_MAX && strlen(m.desc) < VMM_QMP_DESC_MAX);
            vmm_qmp_msg_free(&m);
        }
        rb_buf_consume(&in, consumed);
    }
    /* the whole input as one message */
    if (vmm_qmp_parse((const char *)data, size, &m) == RB_OK)
        vmm_qmp_msg_free(&m);
    /* the input as command arguments: either refused, or a reply-shaped line that parses back */
    rb_buf_init(&out, 0);
    if (size < 4096 && memchr(data, '\0', size) == NULL) {
        char *args = rb_strndup((const char *)data, size);
        if (vmm_qmp_build(&out, "query-status", args, 7) == RB_OK) {
            rb_json_t *doc = NULL;
            RB_ASSERT(out.len > 0 && out.base[out.len - 1] == '\n');
            /* the line parses back: one object whose arguments are an object */
            RB_ASSERT(rb_json_parse(out.base, out.len - 1, NULL, &doc) == RB_OK);
            RB_ASSERT(rb_json_str_eq(doc, rb_json_member(doc, 0, "execute"), "query-status"));
            RB_ASSERT(rb_json_type(doc, rb_json_member(doc, 0, "arguments")) == RB_JSON_OBJECT);
            rb_json_free(doc);
        } else {
            RB_ASSERT(out.len == 0);
        }
        free(args);
    }
    rb_buf_free(&out);
    rb_buf_free(&in);
    return 0;
}
