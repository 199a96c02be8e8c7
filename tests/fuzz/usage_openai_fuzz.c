/* Fuzz target for the OpenAI usage extractors (chat, completions, embeddings, Responses). */
#include "usage_fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const chat[] = {""};
    static const char *const responses[] = {"response.completed",
                                            "response.incomplete",
                                            "response.failed",
                                            "response.output_text.delta",
                                            "error",
                                            ""};

    fuzz_usage_route(GW_ROUTE_CHAT, chat, 1, data, size);
    fuzz_usage_route(GW_ROUTE_COMPLETIONS, chat, 1, data, size);
    fuzz_usage_route(GW_ROUTE_EMBEDDINGS, chat, 1, data, size);
    fuzz_usage_route(GW_ROUTE_RESPONSES, responses, sizeof(responses) / sizeof(responses[0]), data,
                     size);
    return 0;
}
