# Registration of the gateway's limits test (include()d by tests/integration/CMakeLists.txt).
# limits_gw_test: per-user limits (allowed models, rpm, tpm, concurrency, daily/monthly caps) and
# per-subject limits (budget, rate, malformed headers) in both dialects, limit edits through NOTIFY.
add_test(NAME limits_gw_test
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/limits_gw_test.sh $<TARGET_FILE:rigbox-gateway>
                 $<TARGET_FILE:mock-provider> ${CMAKE_SOURCE_DIR})
set_tests_properties(limits_gw_test PROPERTIES LABELS integration TIMEOUT 240)
