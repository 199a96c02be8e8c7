# Unit test and fuzz target of gateway/limits.c (the subject limit header parsers). include()d from
# tests/unit/gateway/CMakeLists.txt; gw_limits is defined in gateway/CMakeLists.txt.
rb_unit_test(limits_test ${CMAKE_CURRENT_LIST_DIR}/limits_test.c gw_limits)
rb_fuzz_target(limits_fuzz ${CMAKE_SOURCE_DIR}/tests/fuzz/limits_fuzz.c
               ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/limits gw_limits)
