/*
 * Fuzz target for config/: arbitrary bytes as a rigbox.yaml, a models file and a template, parsed
 * from memory with cfg_load_buffer (no file I/O per input). The loader must never crash, leak or
 * read out of bounds; on success the result must satisfy the invariants every consumer relies on.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const cfg_t *c)
{
    RB_ASSERT(c->default_plan != NULL && c->plans_len > 0);
    RB_ASSERT(c->gateway.limits.stream_low_water_bytes < c->gateway.limits.stream_high_water_bytes);
    for (size_t i = 0; i < c->models_len; i++) {
        const cfg_model_t *m = &c->models[i];
        RB_ASSERT(m->provider != NULL && m->upstream != NULL);
        RB_ASSERT(cfg_model_find(c, m->name) == m);
        RB_ASSERT(m->prices.input_micro >= 0 && m->prices.output_micro >= 0);
    }
    for (size_t i = 0; i < c->templates_len; i++) {
        RB_ASSERT(cfg_template_find(c, c->templates[i].id) == &c->templates[i]);
        for (size_t j = 0; j < c->templates[i].apps_len; j++)
            RB_ASSERT(c->templates[i].apps[j].port >= 1 && c->templates[i].apps[j].port <= 65535);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const cfg_doc_kind_t kinds[] = {CFG_DOC_MAIN, CFG_DOC_MODELS, CFG_DOC_TEMPLATE};
    char err[CFG_ERRBUF_MIN];

    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        cfg_t *c = NULL;
        rb_err_t rc =
            cfg_load_buffer(kinds[k], "fuzz.yaml", (const char *)data, size, &c, err, sizeof(err));
        RB_ASSERT((rc == RB_OK) == (c != NULL));
        RB_ASSERT(rc == RB_OK || memchr(err, '\0', sizeof(err)) != NULL);
        if (c != NULL)
            check(c);
        cfg_free(c);
    }
    return 0;
}
