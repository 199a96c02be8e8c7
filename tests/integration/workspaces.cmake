add_test(NAME workspaces_test COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/workspaces_test.sh
         ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
set_tests_properties(workspaces_test PROPERTIES LABELS integration TIMEOUT 120)
