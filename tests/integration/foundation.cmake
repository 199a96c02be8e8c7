add_test(NAME daemons_test COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/daemons_test.sh
         ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
set_tests_properties(daemons_test PROPERTIES LABELS integration TIMEOUT 120)
