/* The control API's pure input checks: e-mail addresses and time parameters. */
#include "control/credits.h"
#include "control/users.h"
#include "test.h"

static void test_email(void)
{
    static const char *const good[] = {"a@b.c", "bob@example.com", "x.y+z@mail.example.co.uk"};
    static const char *const bad[] = {"",       "a",      "@b.c",    "a@",      "a@b",    "a@.c",
                                      "a@b..c", "a@b.c.", "a@b@c.d", "a b@c.d", "a@b.c\n"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(ctl_email_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!ctl_email_valid(bad[i]));
}

static void test_time_param(void)
{
    static const char *const good[] = {"2030-01-01",
                                       "2030-01-01T00:00:00Z",
                                       "2030-01-01t00:00:00z",
                                       "2030-01-01 00:00:00.123Z",
                                       "2030-01-01T09:30:00+02:00",
                                       "2030-01-01T00:00:00-05:30"};
    static const char *const bad[] = {
        "2030-01-01T00:00:00", /* no offset: the database session's zone would decide */
        "2030-01-01T00:00:00+0200", "2030-01-01T00:00:00+2", "2030-1-01", "now",
        "2030-01-01Tnow",           "2030-01-01X00:00:00Z",  "",          "2030-01-01T+02:00x"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(ctl_time_param_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!ctl_time_param_valid(bad[i]));
}

TEST_MAIN(test_email, test_time_param)
