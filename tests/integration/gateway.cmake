# Registration of the gateway's integration test (include()d by tests/integration/CMakeLists.txt).
# gateway_test.sh starts the mock provider and rigbox-gateway against a database on
# RB_TEST_PGHOST (or a private cluster it starts itself under /tmp when that is unset).
add_executable(gateway_seal ${CMAKE_CURRENT_LIST_DIR}/gateway_seal.c)
target_link_libraries(gateway_seal PRIVATE rb_common)
add_test(NAME gateway_test
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/gateway_test.sh $<TARGET_FILE:rigbox-gateway>
                 $<TARGET_FILE:mock-provider> $<TARGET_FILE:gateway_seal> ${CMAKE_SOURCE_DIR})
set_tests_properties(gateway_test PROPERTIES LABELS integration TIMEOUT 180)
