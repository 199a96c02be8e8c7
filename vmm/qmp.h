/*
 * vmm/qmp: the QEMU Machine Protocol, as a pure codec plus a small blocking client.
 *
 * QMP is line-delimited JSON over a unix socket. On connect QEMU sends a greeting
 * {"QMP":{"version":{"qemu":{"major","minor","micro"},...},"capabilities":[...]}}; the client must
 * send
 * {"execute":"qmp_capabilities"} before anything else. Each command {"execute","arguments"?,"id"?}
 * gets exactly one reply carrying the same id: {"return":…,"id":…} or
 * {"error":{"class","desc"},"id":…}. Asynchronous events
 * {"event","data"?,"timestamp":{"seconds","microseconds"}} may arrive at any time, including
 * between a command and its reply (POWERDOWN comes before system_powerdown's return).
 *
 * Codec (vmm_qmp_parse, vmm_qmp_build): pure, bytes in, structs out; any thread. A parsed message
 * owns a copy of its text and the JSON document over it (free with vmm_qmp_msg_free).
 *
 * Client (vmm_qmp_connect …): one connection owned by one thread at a time; every call blocks for
 * at most its timeout. QEMU serves one QMP client per socket at a time, so callers connect, do
 * their commands and close; they do not hold the connection. Events seen while waiting for a reply
 * are kept (up to VMM_QMP_EVENTS_MAX; later ones are counted in events_dropped).
 */
#ifndef RB_VMM_QMP_H
#define RB_VMM_QMP_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/json.h"

#define VMM_QMP_LINE_MAX    (1024 * 1024) /* bytes in one QMP message */
#define VMM_QMP_NAME_MAX    64            /* event names and error classes (longer are cut) */
#define VMM_QMP_DESC_MAX    512           /* error descriptions (longer are cut) */
#define VMM_QMP_COMMAND_MAX 64            /* bytes in a command name */
#define VMM_QMP_EVENTS_MAX  32            /* events kept per connection */
#define VMM_QMP_JSON_DEPTH  32            /* nesting accepted in a message */
#define VMM_QMP_JSON_TOKENS 65536         /* tokens accepted in a message */

/** What a message is. */
typedef enum {
    VMM_QMP_GREETING = 1,
    VMM_QMP_RETURN,
    VMM_QMP_ERROR,
    VMM_QMP_EVENT,
} vmm_qmp_kind_t;

/** One parsed message. `value` is the token of "return" (RETURN), of "data" (EVENT; -1 when absent)
 * or of the "QMP" object (GREETING), in `doc`. */
typedef struct st_vmm_qmp_msg_t {
    vmm_qmp_kind_t kind;
    int has_id; /* the message carried an integer "id" */
    int64_t id;
    char name[VMM_QMP_NAME_MAX];         /* EVENT: event name; ERROR: error class */
    char desc[VMM_QMP_DESC_MAX];         /* ERROR: description */
    int64_t ts_sec, ts_usec;             /* EVENT: timestamp (0 when absent) */
    int ver_major, ver_minor, ver_micro; /* GREETING: QEMU version */
    char *text;                          /* owned copy of the message */
    rb_json_t *doc;                      /* owned, over text */
    int value;
} vmm_qmp_msg_t;

/** Parses one message (one line, without or with its trailing newline). On RB_OK *out is owned by
 * the caller (free with vmm_qmp_msg_free); on error *out is empty. RB_ERR_PARSE for anything that
 * is not one of the four shapes, RB_ERR_LIMIT past VMM_QMP_LINE_MAX or the JSON limits. */
rb_err_t vmm_qmp_parse(const char *text, size_t len, vmm_qmp_msg_t *out);

/** Frees what a parsed message owns and empties it (an empty message is fine). */
void vmm_qmp_msg_free(vmm_qmp_msg_t *m);

/** Appends {"execute":command[,"arguments":args_json],"id":id} and a newline to out. args_json,
 * when not NULL, must be one JSON object; RB_ERR_INVAL when it is not or when command is empty, too
 * long or not [a-zA-Z0-9_-]. Nothing is appended on error. */
rb_err_t vmm_qmp_build(rb_buf_t *out, const char *command, const char *args_json, int64_t id);

/** Splits the first complete line off in: returns its length (newline excluded, "\r" trimmed) and
 * sets *consumed to the bytes to drop with rb_buf_consume; 0 with *consumed 0 when no full line
 * yet. */
size_t vmm_qmp_next_line(const rb_buf_t *in, size_t *consumed);

/* ---- client ---- */

/** One event seen on a connection. */
typedef struct st_vmm_qmp_event_t {
    char name[VMM_QMP_NAME_MAX];
    int64_t ts_sec, ts_usec;
} vmm_qmp_event_t;

typedef struct st_vmm_qmp_t vmm_qmp_t;

/** Connects to the QMP socket at path, reads the greeting and negotiates capabilities, all within
 *  timeout_ms. On RB_OK *out is owned (free with vmm_qmp_close). RB_ERR_SYS when the socket is
 *  missing or refuses, RB_ERR_TIMEOUT, RB_ERR_PARSE when the peer does not speak QMP. */
rb_err_t vmm_qmp_connect(const char *path, unsigned timeout_ms, vmm_qmp_t **out);

/** Sends command (args_json: a JSON object or NULL) and waits up to timeout_ms for the reply with
 * the matching id, keeping events seen meanwhile. On RB_OK *reply (RETURN or ERROR) is owned by the
 * caller (free with vmm_qmp_msg_free); reply may be NULL when the caller only needs RB_OK/the
 * error. A QMP error reply returns RB_ERR_UPSTREAM (with *reply filled when given). RB_ERR_IO when
 * the connection closed (QEMU exited), RB_ERR_TIMEOUT. */
rb_err_t vmm_qmp_execute(vmm_qmp_t *q, const char *command, const char *args_json,
                         unsigned timeout_ms, vmm_qmp_msg_t *reply);

/** Waits up to timeout_ms for the peer to close the connection (QEMU exiting), keeping events.
 *  RB_OK when closed, RB_ERR_TIMEOUT otherwise. */
rb_err_t vmm_qmp_wait_closed(vmm_qmp_t *q, unsigned timeout_ms);

/** The events kept so far (valid until the next call on q); *n gets their count. */
const vmm_qmp_event_t *vmm_qmp_events(const vmm_qmp_t *q, size_t *n);

/** 1 when an event named name has been seen on this connection. */
int vmm_qmp_saw_event(const vmm_qmp_t *q, const char *name);

/** Closes the connection and frees q (NULL is fine). */
void vmm_qmp_close(vmm_qmp_t *q);

#endif
