# Registration of the schema helper's integration test (include()d by tests/integration/CMakeLists.txt).
# migrate_test needs a running cluster: export RB_TEST_PGHOST=$(tools/lib/pg.sh host DIR); without it
# the test fails and says how to start one.
set(rb_migrate_test_srcs ${CMAKE_CURRENT_LIST_DIR}/migrate_test.c)
# Until common/CMakeLists.txt lists pg.c in rb_common, compile it into the test directly.
get_target_property(rb_common_srcs rb_common SOURCES)
list(FILTER rb_common_srcs INCLUDE REGEX "(^|/)pg\\.c$")
if(NOT rb_common_srcs)
  list(APPEND rb_migrate_test_srcs ${CMAKE_SOURCE_DIR}/common/pg.c)
endif()
add_executable(migrate_test ${rb_migrate_test_srcs})
target_include_directories(migrate_test PRIVATE ${CMAKE_SOURCE_DIR}/tests ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(migrate_test PRIVATE rb_common PkgConfig::PQ PkgConfig::SSL Threads::Threads)
add_test(NAME migrate_test COMMAND migrate_test WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(migrate_test PROPERTIES LABELS integration TIMEOUT 120)
