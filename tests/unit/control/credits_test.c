/* control/credits.c's pure checks: time parameters. */
#include "control/credits.h"
#include "test.h"

static void test_time_param(void)
{
    static const char *const good[] = {
        "2030-01-01",          "2030-01-01T00:00:00Z",     "2030-01-01t00:00:00z",
        "2030-01-01T00:00:00", "2030-01-01 00:00:00.123Z", "2030-01-01T09:30:00+02:00"};
    /* words PostgreSQL would also take ("now", "epoch") and shapes that are not a date */
    static const char *const bad[] = {"",
                                      "2030-1-01",
                                      "now",
                                      "2030-01-01Tnow",
                                      "epoch",
                                      "2030-01-01X00:00:00Z",
                                      "2030-01-01T+02:00x"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(ctl_time_param_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!ctl_time_param_valid(bad[i]));
}

TEST_MAIN(test_time_param)
