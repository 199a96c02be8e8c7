/* Fuzz target for the Anthropic usage extractor and the messages stream observer. */
#include "usage_fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"message_start", "content_block_delta", "message_delta",
                                        "message_delta", "message_stop",        "error",
                                        "ping"};

    fuzz_usage_route(GW_ROUTE_MESSAGES, names, sizeof(names) / sizeof(names[0]), data, size);
    fuzz_usage_route(GW_ROUTE_COUNT_TOKENS, names, 1, data, size);
    return 0;
}
