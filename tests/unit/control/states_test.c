#include "control/states.h"
#include "test.h"

/* The whole transition table, written out independently of the implementation. "-" = illegal. */
static const char *const expected[CTL_WS__STATES][CTL_EV__EVENTS] = {
    /*                start       stop        restart     cancel     retry       delete      ready
       boot_failed halted     crashed    rebooted */
    [CTL_WS_PROVISIONED] = {"starting", "-", "-", "-", "-", "deleting", "-", "-", "-", "-", "-"},
    [CTL_WS_PROVISIONING] = {"-", "-", "-", "stopped", "-", "-", "-", "failed", "-", "-", "-"},
    [CTL_WS_STARTING] = {"-", "stopping", "-", "stopped", "-", "deleting", "running", "failed", "-",
                         "failed", "-"},
    [CTL_WS_RUNNING] = {"-", "stopping", "stopping", "-", "-", "deleting", "-", "-", "stopped",
                        "failed", "starting"},
    [CTL_WS_STOPPING] = {"-", "-", "-", "-", "-", "deleting", "-", "-", "stopped", "stopped", "-"},
    [CTL_WS_STOPPED] = {"starting", "-", "-", "-", "-", "deleting", "-", "-", "-", "-", "-"},
    [CTL_WS_FAILED] = {"-", "-", "-", "-", "starting", "deleting", "-", "-", "-", "-", "-"},
    [CTL_WS_DELETING] = {"-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"},
};

static void test_every_transition(void)
{
    for (int s = 0; s < CTL_WS__STATES; s++) {
        for (int e = 0; e < CTL_EV__EVENTS; e++) {
            ctl_ws_state_t to = CTL_WS__STATES;
            int rc = ctl_state_next((ctl_ws_state_t)s, (ctl_ws_event_t)e, 1, &to);
            if (strcmp(expected[s][e], "-") == 0) {
                if (rc != -1)
                    fprintf(stderr, "  %s --%s--> should be illegal\n",
                            ctl_state_name((ctl_ws_state_t)s), ctl_event_name((ctl_ws_event_t)e));
                CHECK(rc == -1);
            } else {
                CHECK(rc == 0);
                if (rc == 0)
                    CHECK_STR_EQ(ctl_state_name(to), expected[s][e]);
            }
        }
    }
}

static void test_retry_needs_retryable_failure(void)
{
    ctl_ws_state_t to;
    CHECK(ctl_state_next(CTL_WS_FAILED, CTL_EV_RETRY, 0, &to) == -1);
    CHECK(ctl_state_next(CTL_WS_FAILED, CTL_EV_RETRY, 1, &to) == 0 && to == CTL_WS_STARTING);
}

static void test_names_round_trip(void)
{
    for (int s = 0; s < CTL_WS__STATES; s++) {
        ctl_ws_state_t back;
        CHECK(ctl_state_parse(ctl_state_name((ctl_ws_state_t)s), &back) == 0);
        CHECK(back == (ctl_ws_state_t)s);
    }
    ctl_ws_state_t x;
    CHECK(ctl_state_parse("deleted", &x) == -1);
    CHECK(ctl_state_has_vm(CTL_WS_RUNNING) && !ctl_state_has_vm(CTL_WS_STOPPED));
}

TEST_MAIN(test_every_transition, test_retry_needs_retryable_failure, test_names_round_trip)
