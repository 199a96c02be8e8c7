# Registration of the gateway's credit tests (include()d by tests/integration/CMakeLists.txt).
# credits_gw_test: no overspend with two gateways on one database, 402 bodies, BYOK, grants.
# credits_gw_crash_test: SIGKILL + spool replay, full replay idempotence, PostgreSQL outage (it runs
# its own cluster under /tmp/rigbox-cgwcrash-pg because it stops it).
foreach(t credits_gw_test credits_gw_crash_test)
  add_test(NAME ${t}
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/${t}.sh $<TARGET_FILE:rigbox-gateway>
                   $<TARGET_FILE:mock-provider> ${CMAKE_SOURCE_DIR})
  set_tests_properties(${t} PROPERTIES LABELS integration TIMEOUT 240)
endforeach()
set_tests_properties(credits_gw_crash_test PROPERTIES RUN_SERIAL TRUE)
