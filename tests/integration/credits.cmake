# Registration of the ledger helper's integration tests (include()d by tests/integration/CMakeLists.txt).
# Both need a running cluster: export RB_TEST_PGHOST=$(tools/lib/pg.sh host DIR).
# ledger_sql_test: the SQL contract of schema/0002_credits.sql, straight through psql.
add_test(NAME ledger_sql_test COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/ledger_sql_test.sh
         ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
set_tests_properties(ledger_sql_test PROPERTIES LABELS integration TIMEOUT 120)
# credits_test: the credits, ledger, ai-usage, ai/requests and limits endpoints of rigbox-control.
add_test(NAME credits_test COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/credits_test.sh
         ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
set_tests_properties(credits_test PROPERTIES LABELS integration TIMEOUT 120)
