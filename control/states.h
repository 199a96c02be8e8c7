/*
 * ctl_states: the workspace lifecycle as a pure state machine (DESIGN.md §4):
 *
 *   provisioned ─start→ starting ─ready→ running ─stop→ stopping ─halted→ stopped ─start→ starting
 *   starting|running|stopping ─crashed→ failed ─retry (retryable)→ starting
 *   running ─halted→ stopped (the guest powered off);  running ─rebooted→ starting (boots again)
 *   starting|provisioning ─cancel→ stopped;  running ─restart→ stopping (then starting again)
 *   provisioned|stopped|failed|running|starting|stopping ─delete→ deleting (the row goes when done)
 *
 * API actions that do not apply to the current state are illegal (the API answers 409); internal
 * events that do not apply are ignored by the supervisor (a late "ready" after a cancel, say).
 * No I/O, no globals: any thread may call these.
 */
#ifndef RB_CONTROL_STATES_H
#define RB_CONTROL_STATES_H

typedef enum {
    CTL_WS_PROVISIONED,
    CTL_WS_PROVISIONING,
    CTL_WS_STARTING,
    CTL_WS_RUNNING,
    CTL_WS_STOPPING,
    CTL_WS_STOPPED,
    CTL_WS_FAILED,
    CTL_WS_DELETING,
    CTL_WS__STATES
} ctl_ws_state_t;

typedef enum {
    /* API actions */
    CTL_EV_START,
    CTL_EV_STOP,
    CTL_EV_RESTART,
    CTL_EV_CANCEL,
    CTL_EV_RETRY,
    CTL_EV_DELETE,
    /* supervisor events */
    CTL_EV_READY,       /* the guest printed its ready marker */
    CTL_EV_BOOT_FAILED, /* QEMU failed to start or the guest never got ready */
    CTL_EV_HALTED,      /* the VM stopped after a stop request, or the guest powered off */
    CTL_EV_CRASHED,     /* the QEMU process went away unasked */
    CTL_EV_REBOOTED,    /* the guest rebooted (QEMU runs with -no-reboot: it is booted again) */
    CTL_EV__EVENTS
} ctl_ws_event_t;

/** The next state for ev in from; retryable is the failure's flag (used by retry). Returns 0 and
 * sets *to, or -1 when ev is not allowed in from. */
int ctl_state_next(ctl_ws_state_t from, ctl_ws_event_t ev, int retryable, ctl_ws_state_t *to);
/** The state's name as stored and shown ("running"). */
const char *ctl_state_name(ctl_ws_state_t s);
/** Parses a state name; 0, or -1 when unknown. */
int ctl_state_parse(const char *name, ctl_ws_state_t *out);
/** The action's name ("start"), for messages. */
const char *ctl_event_name(ctl_ws_event_t ev);
/** 1 when a VM process is expected to exist in state s (starting, running, stopping). */
int ctl_state_has_vm(ctl_ws_state_t s);

#endif
