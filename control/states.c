#include "control/states.h"

#include <string.h>

#include "common/err.h"

static const char *const state_names[CTL_WS__STATES] = {"provisioned", "provisioning", "starting",
                                                        "running",     "stopping",     "stopped",
                                                        "failed",      "deleting"};

static const char *const event_names[CTL_EV__EVENTS] = {
    "start", "stop",        "restart", "cancel",  "retry",   "delete",
    "ready", "boot_failed", "halted",  "crashed", "rebooted"};

#define S(x) (1u << CTL_WS_##x)

/* For each event: the states it applies in. */
static const unsigned allowed_from[CTL_EV__EVENTS] = {
    [CTL_EV_START] = S(PROVISIONED) | S(STOPPED),
    [CTL_EV_STOP] = S(STARTING) | S(RUNNING),
    [CTL_EV_RESTART] = S(RUNNING),
    [CTL_EV_CANCEL] = S(PROVISIONING) | S(STARTING),
    [CTL_EV_RETRY] = S(FAILED),
    [CTL_EV_DELETE] =
        S(PROVISIONED) | S(STOPPED) | S(FAILED) | S(RUNNING) | S(STARTING) | S(STOPPING),
    [CTL_EV_READY] = S(STARTING),
    [CTL_EV_BOOT_FAILED] = S(PROVISIONING) | S(STARTING),
    [CTL_EV_HALTED] = S(RUNNING) | S(STOPPING),
    [CTL_EV_CRASHED] = S(STARTING) | S(RUNNING) | S(STOPPING),
    [CTL_EV_REBOOTED] = S(RUNNING),
};

int ctl_state_next(ctl_ws_state_t from, ctl_ws_event_t ev, int retryable, ctl_ws_state_t *to)
{
    static const ctl_ws_state_t target[CTL_EV__EVENTS] = {
        [CTL_EV_START] = CTL_WS_STARTING,    [CTL_EV_STOP] = CTL_WS_STOPPING,
        [CTL_EV_RESTART] = CTL_WS_STOPPING,  [CTL_EV_CANCEL] = CTL_WS_STOPPED,
        [CTL_EV_RETRY] = CTL_WS_STARTING,    [CTL_EV_DELETE] = CTL_WS_DELETING,
        [CTL_EV_READY] = CTL_WS_RUNNING,     [CTL_EV_BOOT_FAILED] = CTL_WS_FAILED,
        [CTL_EV_HALTED] = CTL_WS_STOPPED,    [CTL_EV_CRASHED] = CTL_WS_FAILED,
        [CTL_EV_REBOOTED] = CTL_WS_STARTING,
    };

    RB_ASSERT((unsigned)from < CTL_WS__STATES && (unsigned)ev < CTL_EV__EVENTS);
    if ((allowed_from[ev] & (1u << from)) == 0)
        return -1;
    if (ev == CTL_EV_RETRY && !retryable)
        return -1;
    /* A VM that dies while being stopped has simply stopped. */
    *to = (ev == CTL_EV_CRASHED && from == CTL_WS_STOPPING) ? CTL_WS_STOPPED : target[ev];
    return 0;
}

const char *ctl_state_name(ctl_ws_state_t s)
{
    RB_ASSERT((unsigned)s < CTL_WS__STATES);
    return state_names[s];
}

int ctl_state_parse(const char *name, ctl_ws_state_t *out)
{
    for (unsigned i = 0; i < CTL_WS__STATES; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (ctl_ws_state_t)i;
            return 0;
        }
    }
    return -1;
}

const char *ctl_event_name(ctl_ws_event_t ev)
{
    RB_ASSERT((unsigned)ev < CTL_EV__EVENTS);
    return event_names[ev];
}

int ctl_state_has_vm(ctl_ws_state_t s)
{
    return s == CTL_WS_STARTING || s == CTL_WS_RUNNING || s == CTL_WS_STOPPING;
}
