/* control/users.c's pure check: e-mail addresses. */
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

TEST_MAIN(test_email)
