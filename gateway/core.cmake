# gw_core: the pure core of the AI gateway (SSE parser, usage extraction, pricing, request/response
# adapters). No sockets, clock or globals; unit-tested and fuzzed under tests/unit/gateway.
# Included from gateway/CMakeLists.txt.
add_library(gw_core STATIC
  ${CMAKE_CURRENT_LIST_DIR}/sse.c
  ${CMAKE_CURRENT_LIST_DIR}/usage.c
  ${CMAKE_CURRENT_LIST_DIR}/pricing.c
  ${CMAKE_CURRENT_LIST_DIR}/adapter.c
)
target_link_libraries(gw_core PUBLIC rb_common)
