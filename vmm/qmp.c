#include "vmm/qmp.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK       4096 /* bytes read from the socket per call */
#define CONNECT_RETRY_MS 10   /* pause between connects while the listen backlog is full */

/* ---- codec ---- */

/* Copies string v of doc into dst (cap bytes), cutting it when longer. 0, or -1 when not a string.
 */
static int copy_str_cut(const rb_json_t *doc, int v, char *dst, size_t cap)
{
    char *s;
    size_t n;

    RB_ASSERT(cap > 0);
    if (rb_json_type(doc, v) != RB_JSON_STRING)
        return -1;
    if ((s = rb_json_strdup(doc, v)) == NULL)
        return -1;
    n = strlen(s);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    free(s);
    return 0;
}

static int get_int(const rb_json_t *doc, int v, const char *path, int64_t *out)
{
    return rb_json_get_int64(doc, v, path, out);
}

static rb_err_t parse_greeting(vmm_qmp_msg_t *m, int qmp)
{
    int64_t major, minor, micro;

    if (rb_json_type(m->doc, qmp) != RB_JSON_OBJECT)
        return RB_ERR_PARSE;
    if (get_int(m->doc, qmp, "version.qemu.major", &major) != 0 ||
        get_int(m->doc, qmp, "version.qemu.minor", &minor) != 0 ||
        get_int(m->doc, qmp, "version.qemu.micro", &micro) != 0)
        return RB_ERR_PARSE;
    if (major < 0 || major > 1000 || minor < 0 || minor > 1000 || micro < 0 || micro > 1000)
        return RB_ERR_PARSE;
    m->kind = VMM_QMP_GREETING;
    m->value = qmp;
    m->ver_major = (int)major;
    m->ver_minor = (int)minor;
    m->ver_micro = (int)micro;
    return RB_OK;
}

static rb_err_t parse_error(vmm_qmp_msg_t *m, int error)
{
    if (rb_json_type(m->doc, error) != RB_JSON_OBJECT)
        return RB_ERR_PARSE;
    if (copy_str_cut(m->doc, rb_json_member(m->doc, error, "class"), m->name, sizeof(m->name)) != 0)
        return RB_ERR_PARSE;
    if (copy_str_cut(m->doc, rb_json_member(m->doc, error, "desc"), m->desc, sizeof(m->desc)) != 0)
        return RB_ERR_PARSE;
    m->kind = VMM_QMP_ERROR;
    return RB_OK;
}

static rb_err_t parse_event(vmm_qmp_msg_t *m, int event)
{
    int ts = rb_json_member(m->doc, 0, "timestamp");

    if (copy_str_cut(m->doc, event, m->name, sizeof(m->name)) != 0 || m->name[0] == '\0')
        return RB_ERR_PARSE;
    if (ts != -1 && (get_int(m->doc, ts, "seconds", &m->ts_sec) != 0 ||
                     get_int(m->doc, ts, "microseconds", &m->ts_usec) != 0))
        return RB_ERR_PARSE;
    m->kind = VMM_QMP_EVENT;
    m->value = rb_json_member(m->doc, 0, "data");
    return RB_OK;
}

/* Classifies the parsed object in m->doc. */
static rb_err_t classify(vmm_qmp_msg_t *m)
{
    int v;

    if (rb_json_type(m->doc, 0) != RB_JSON_OBJECT)
        return RB_ERR_PARSE;
    if (rb_json_int64(m->doc, rb_json_member(m->doc, 0, "id"), &m->id) == 0)
        m->has_id = 1;
    if ((v = rb_json_member(m->doc, 0, "QMP")) != -1)
        return parse_greeting(m, v);
    if ((v = rb_json_member(m->doc, 0, "return")) != -1) {
        m->kind = VMM_QMP_RETURN;
        m->value = v;
        return RB_OK;
    }
    if ((v = rb_json_member(m->doc, 0, "error")) != -1)
        return parse_error(m, v);
    if ((v = rb_json_member(m->doc, 0, "event")) != -1)
        return parse_event(m, v);
    return RB_ERR_PARSE;
}

rb_err_t vmm_qmp_parse(const char *text, size_t len, vmm_qmp_msg_t *out)
{
    rb_err_t err;
    const rb_json_limits_t limits = {.depth_max = VMM_QMP_JSON_DEPTH,
                                     .tokens_max = VMM_QMP_JSON_TOKENS};
    vmm_qmp_msg_t m = {.value = -1};

    RB_ASSERT(out != NULL && (text != NULL || len == 0));
    *out = (vmm_qmp_msg_t){.value = -1};
    if (len > VMM_QMP_LINE_MAX)
        return RB_ERR_LIMIT;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    m.text = rb_malloc(len + 1);
    if (len > 0)
        memcpy(m.text, text, len);
    m.text[len] = '\0';
    if ((err = rb_json_parse(m.text, len, &limits, &m.doc)) != RB_OK)
        goto Exit;
    if ((err = classify(&m)) != RB_OK)
        goto Exit;
    RB_ASSERT(m.kind >= VMM_QMP_GREETING && m.kind <= VMM_QMP_EVENT);
    *out = m;
    m = (vmm_qmp_msg_t){0};
Exit:
    vmm_qmp_msg_free(&m);
    return err;
}

void vmm_qmp_msg_free(vmm_qmp_msg_t *m)
{
    RB_ASSERT(m != NULL);
    rb_json_free(m->doc);
    free(m->text);
    *m = (vmm_qmp_msg_t){.value = -1};
}

static int command_ok(const char *command)
{
    size_t n = strlen(command);

    if (n == 0 || n >= VMM_QMP_COMMAND_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = command[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

rb_err_t vmm_qmp_build(rb_buf_t *out, const char *command, const char *args_json, int64_t id)
{
    rb_jw_t w;
    rb_json_t *args = NULL;

    RB_ASSERT(out != NULL && command != NULL);
    if (!command_ok(command))
        return RB_ERR_INVAL;
    if (args_json != NULL) {
        rb_err_t err = rb_json_parse(args_json, strlen(args_json), NULL, &args);
        int is_obj = err == RB_OK && rb_json_type(args, 0) == RB_JSON_OBJECT;
        rb_json_free(args);
        if (!is_obj)
            return RB_ERR_INVAL;
    }
    rb_jw_init(&w, out);
    rb_jw_obj_begin(&w);
    rb_jw_key(&w, "execute");
    rb_jw_str(&w, command);
    if (args_json != NULL) {
        rb_jw_key(&w, "arguments");
        rb_jw_raw(&w, args_json, strlen(args_json));
    }
    rb_jw_key(&w, "id");
    rb_jw_int64(&w, id);
    rb_jw_obj_end(&w);
    rb_buf_append(out, "\n", 1);
    return RB_OK;
}

size_t vmm_qmp_next_line(const rb_buf_t *in, size_t *consumed)
{
    const char *nl;
    size_t len;

    RB_ASSERT(in != NULL && consumed != NULL);
    *consumed = 0;
    if (in->len == 0 || (nl = memchr(in->base, '\n', in->len)) == NULL)
        return 0;
    len = (size_t)(nl - in->base);
    *consumed = len + 1;
    if (len > 0 && in->base[len - 1] == '\r')
        len--;
    return len;
}

/* ---- client ---- */

struct st_vmm_qmp_t {
    int fd;
    int closed; /* the peer closed the connection */
    int64_t next_id;
    rb_buf_t in;
    vmm_qmp_event_t events[VMM_QMP_EVENTS_MAX];
    size_t nevents;
    size_t events_dropped;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : (int)left;
}

/* Waits for fd to be ready for events before the deadline: 0 ready, -1 timeout or error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, remaining_ms(deadline));
        if (r > 0)
            return 0;
        if (r == 0 || errno != EINTR)
            return -1;
    }
}

static rb_err_t send_all(vmm_qmp_t *q, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(q->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EPIPE)
            return RB_ERR_IO;
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return RB_ERR_IO;
        if (wait_fd(q->fd, POLLOUT, deadline) != 0)
            return RB_ERR_TIMEOUT;
    }
    return RB_OK;
}

/* Reads more bytes into q->in. RB_ERR_IO on EOF (sets closed), RB_ERR_TIMEOUT, RB_ERR_LIMIT. */
static rb_err_t fill(vmm_qmp_t *q, int64_t deadline)
{
    char chunk[READ_CHUNK];

    for (;;) {
        ssize_t r = recv(q->fd, chunk, sizeof(chunk), 0);
        if (r > 0) {
            if (rb_buf_append(&q->in, chunk, (size_t)r) != 0)
                return RB_ERR_LIMIT;
            return RB_OK;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            q->closed = 1;
            return RB_ERR_IO;
        }
        if (wait_fd(q->fd, POLLIN, deadline) != 0)
            return RB_ERR_TIMEOUT;
    }
}

static void keep_event(vmm_qmp_t *q, const vmm_qmp_msg_t *m)
{
    vmm_qmp_event_t *e;

    if (q->nevents == VMM_QMP_EVENTS_MAX) {
        q->events_dropped++;
        return;
    }
    e = &q->events[q->nevents++];
    memcpy(e->name, m->name, sizeof(e->name));
    e->ts_sec = m->ts_sec;
    e->ts_usec = m->ts_usec;
}

/* Reads the next message that is not an event (events are kept), before the deadline. */
static rb_err_t read_msg(vmm_qmp_t *q, int64_t deadline, vmm_qmp_msg_t *out)
{
    for (;;) {
        size_t consumed, len = vmm_qmp_next_line(&q->in, &consumed);
        rb_err_t err;
        if (consumed == 0) {
            if ((err = fill(q, deadline)) != RB_OK)
                return err;
            continue;
        }
        if (len == 0) {
            rb_buf_consume(&q->in, consumed);
            continue;
        }
        err = vmm_qmp_parse(q->in.base, len, out);
        rb_buf_consume(&q->in, consumed);
        if (err != RB_OK)
            return err;
        if (out->kind != VMM_QMP_EVENT)
            return RB_OK;
        keep_event(q, out);
        vmm_qmp_msg_free(out);
    }
}

/* Connects a non-blocking unix socket to path before the deadline; a full backlog (EAGAIN) is
 * retried every CONNECT_RETRY_MS. */
static rb_err_t open_socket(const char *path, int64_t deadline, int *out)
{
    rb_err_t err = RB_ERR_SYS;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = -1, soerr = 0;
    socklen_t sl = sizeof(soerr);

    if (strlen(path) >= sizeof(sa.sun_path))
        return RB_ERR_LIMIT;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    for (;;) {
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) == -1)
            goto Exit;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        if (errno == EINPROGRESS) {
            if (wait_fd(fd, POLLOUT, deadline) != 0) {
                err = RB_ERR_TIMEOUT;
                goto Exit;
            }
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0)
                goto Exit;
            break;
        }
        if (errno != EAGAIN)
            goto Exit;
        close(fd);
        fd = -1;
        if (remaining_ms(deadline) == 0) {
            err = RB_ERR_TIMEOUT;
            goto Exit;
        }
        usleep(CONNECT_RETRY_MS * 1000);
    }
    *out = fd;
    fd = -1;
    err = RB_OK;
Exit:
    if (fd != -1)
        close(fd);
    return err;
}

rb_err_t vmm_qmp_connect(const char *path, unsigned timeout_ms, vmm_qmp_t **out)
{
    rb_err_t err;
    int64_t deadline = now_ms() + timeout_ms;
    int fd = -1;
    vmm_qmp_t *q = NULL;
    vmm_qmp_msg_t greeting = {.value = -1};

    RB_ASSERT(path != NULL && out != NULL);
    *out = NULL;
    if ((err = open_socket(path, deadline, &fd)) != RB_OK)
        goto Exit;
    q = rb_calloc(1, sizeof(*q));
    q->fd = fd;
    q->next_id = 1;
    fd = -1; /* q owns it now */
    rb_buf_init(&q->in, VMM_QMP_LINE_MAX + READ_CHUNK);
    if ((err = read_msg(q, deadline, &greeting)) != RB_OK)
        goto Exit;
    if (greeting.kind != VMM_QMP_GREETING) {
        err = RB_ERR_PARSE;
        goto Exit;
    }
    if ((err = vmm_qmp_execute(q, "qmp_capabilities", NULL, (unsigned)remaining_ms(deadline),
                               NULL)) != RB_OK)
        goto Exit;
    *out = q;
    q = NULL;
Exit:
    vmm_qmp_msg_free(&greeting);
    if (fd != -1)
        close(fd);
    vmm_qmp_close(q);
    return err;
}

rb_err_t vmm_qmp_execute(vmm_qmp_t *q, const char *command, const char *args_json,
                         unsigned timeout_ms, vmm_qmp_msg_t *reply)
{
    rb_err_t err;
    int64_t deadline = now_ms() + timeout_ms, id;
    rb_buf_t cmd;
    vmm_qmp_msg_t m = {.value = -1};

    RB_ASSERT(q != NULL && command != NULL);
    if (reply != NULL)
        *reply = (vmm_qmp_msg_t){.value = -1};
    rb_buf_init(&cmd, 0);
    id = q->next_id++;
    if ((err = vmm_qmp_build(&cmd, command, args_json, id)) != RB_OK)
        goto Exit;
    if ((err = send_all(q, cmd.base, cmd.len, deadline)) != RB_OK)
        goto Exit;
    for (;;) {
        if ((err = read_msg(q, deadline, &m)) != RB_OK)
            goto Exit;
        if ((m.kind == VMM_QMP_RETURN || m.kind == VMM_QMP_ERROR) && m.has_id && m.id == id)
            break;
        vmm_qmp_msg_free(&m); /* a stray greeting or another id: not ours */
    }
    err = m.kind == VMM_QMP_ERROR ? RB_ERR_UPSTREAM : RB_OK;
    if (reply != NULL) {
        *reply = m;
        m = (vmm_qmp_msg_t){.value = -1};
    }
Exit:
    vmm_qmp_msg_free(&m);
    rb_buf_free(&cmd);
    return err;
}

rb_err_t vmm_qmp_wait_closed(vmm_qmp_t *q, unsigned timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    vmm_qmp_msg_t m = {.value = -1};

    RB_ASSERT(q != NULL);
    while (!q->closed) {
        rb_err_t err = read_msg(q, deadline, &m);
        vmm_qmp_msg_free(&m);
        if (err == RB_ERR_TIMEOUT)
            return err;
        if (err == RB_ERR_IO)
            break;
        /* a parse error or a non-event message: keep reading until EOF */
    }
    return RB_OK;
}

const vmm_qmp_event_t *vmm_qmp_events(const vmm_qmp_t *q, size_t *n)
{
    RB_ASSERT(q != NULL && n != NULL);
    *n = q->nevents;
    return q->events;
}

int vmm_qmp_saw_event(const vmm_qmp_t *q, const char *name)
{
    RB_ASSERT(q != NULL && name != NULL);
    for (size_t i = 0; i < q->nevents; i++) {
        if (strcmp(q->events[i].name, name) == 0)
            return 1;
    }
    return 0;
}

void vmm_qmp_close(vmm_qmp_t *q)
{
    if (q == NULL)
        return;
    if (q->fd != -1)
        close(q->fd);
    rb_buf_free(&q->in);
    free(q);
}
