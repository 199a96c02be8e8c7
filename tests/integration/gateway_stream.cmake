add_test(NAME gateway_stream_test COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gateway_stream_test.sh
         ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
set_tests_properties(gateway_stream_test PROPERTIES LABELS integration TIMEOUT 120)
