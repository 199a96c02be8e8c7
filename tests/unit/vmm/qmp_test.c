/* Unit tests for vmm/qmp.c: the codec on real QEMU 7.2 transcript lines, and the client against a
 * scripted fake QMP server (a thread on a unix socket), including its failure paths. */
#include "vmm/qmp.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define GREETING                                                                                   \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "             \
    "\"package\": "                                                                                \
    "\"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}"

static void test_parse_greeting(void)
{
    vmm_qmp_msg_t m;

    CHECK_INT_EQ(vmm_qmp_parse(GREETING "\r\n", strlen(GREETING) + 2, &m), RB_OK);
    CHECK_INT_EQ(m.kind, VMM_QMP_GREETING);
    CHECK_INT_EQ(m.ver_major, 7);
    CHECK_INT_EQ(m.ver_minor, 2);
    CHECK_INT_EQ(m.ver_micro, 22);
    CHECK_INT_EQ(m.has_id, 0);
    CHECK(rb_json_type(m.doc, rb_json_member(m.doc, m.value, "capabilities")) == RB_JSON_ARRAY);
    vmm_qmp_msg_free(&m);
    CHECK(m.doc == NULL && m.text == NULL);
}

static void test_parse_return(void)
{
    const char *s1 = "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": "
                     "true}, \"id\": 1}";
    const char *s2 = "{\"return\": {}}";
    const char *s3 = "{\"return\": {\"qemu\": {\"micro\": 22}}, \"id\": \"str\"}";
    const char *s4 = "{\"return\": \"VM status: running\\r\\n\", \"id\": 7}";
    vmm_qmp_msg_t m;
    char buf[64];

    CHECK_INT_EQ(vmm_qmp_parse(s1, strlen(s1), &m), RB_OK);
    CHECK_INT_EQ(m.kind, VMM_QMP_RETURN);
    CHECK_INT_EQ(m.has_id, 1);
    CHECK_INT_EQ(m.id, 1);
    CHECK_INT_EQ(rb_json_get_str(m.doc, m.value, "status", buf, sizeof(buf)), RB_OK);
    CHECK_STR_EQ(buf, "running");
    vmm_qmp_msg_free(&m);

    CHECK_INT_EQ(vmm_qmp_parse(s2, strlen(s2), &m), RB_OK);
    CHECK_INT_EQ(m.kind, VMM_QMP_RETURN);
    CHECK_INT_EQ(m.has_id, 0);
    CHECK_INT_EQ(rb_json_count(m.doc, m.value), 0);
    vmm_qmp_msg_free(&m);

    CHECK_INT_EQ(vmm_qmp_parse(s3, strlen(s3), &m), RB_OK);
    CHECK_INT_EQ(m.kind, VMM_QMP_RETURN);
    CHECK_INT_EQ(m.has_id, 0); /* only integer ids are ours */
    vmm_qmp_msg_free(&m);

    CHECK_INT_EQ(vmm_qmp_parse(s4, strlen(s4), &m), RB_OK);
    CHECK_INT_EQ(rb_json_str(m.doc, m.value, buf, sizeof(buf), NULL), RB_OK);
    CHECK_STR_EQ(buf, "VM status: running\r\n");
    vmm_qmp_msg_free(&m);
}

static void test_parse_error(void)
{
    const char *s =
        "{\"id\": 5, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command "
        "no-such has not been found\"}}";
    char longdesc[VMM_QMP_DESC_MAX + 200];
    vmm_qmp_msg_t m;
    int n;

    CHECK_INT_EQ(vmm_qmp_parse(s, strlen(s), &m), RB_OK);
    CHECK_INT_EQ(m.kind, VMM_QMP_ERROR);
    CHECK_INT_EQ(m.id, 5);
    CHECK_STR_EQ(m.name, "CommandNotFound");
    CHECK_STR_EQ(m.desc, "The command no-such has not been found");
    vmm_qmp_msg_free(&m);

    n = snprintf(longdesc, sizeof(longdesc), "{\"error\":{\"class\":\"GenericError\",\"desc\":\"");
    memset(longdesc + n, 'd', VMM_QMP_DESC_MAX + 50);
    memcpy(longdesc + n + VMM_QMP_DESC_MAX + 50, "\"}}", 4);
    CHECK_INT_EQ(vmm_qmp_parse(longdesc, strlen(longdesc), &m), RB_OK);
    CHECK_INT_EQ(strlen(m.desc), VMM_QMP_DESC_MAX - 1); /* cut, not refused */
    vmm_qmp_msg_free(&m);
}

static void test_parse_event(void)
{
    const char *s1 = "{\"timestamp\": {\"seconds\": 1796005082, \"microseconds\": 407479}, "
                     "\"event\": \"POWERDOWN\"}";
    const char *s2 = "{\"timestamp\": {\"seconds\": 1796005083, \"microseconds\": 555011}, "
                     "\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": "
                     "\"guest-shutdown\"}}";
    vmm_qmp_msg_t m;
    int guest = 0;

    CHECK_INT_EQ(vmm_qmp_parse(s1, strlen(s1), &m), RB_OK);
    CHECK_INT_EQ(m.kind, VMM_QMP_EVENT);
    CHECK_STR_EQ(m.name, "POWERDOWN");
    CHECK_INT_EQ(m.ts_sec, 1796005082);
    CHECK_INT_EQ(m.ts_usec, 407479);
    CHECK_INT_EQ(m.value, -1);
    vmm_qmp_msg_free(&m);

    CHECK_INT_EQ(vmm_qmp_parse(s2, strlen(s2), &m), RB_OK);
    CHECK_STR_EQ(m.name, "SHUTDOWN");
    CHECK_INT_EQ(rb_json_get_bool(m.doc, m.value, "guest", &guest), 0);
    CHECK_INT_EQ(guest, 1);
    vmm_qmp_msg_free(&m);
}

static void test_parse_rejects(void)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[1,2]",
        "{}",
        "{\"foo\": 1}",
        "{\"error\": \"GenericError\"}",
        "{\"error\": {\"class\": \"X\"}}",
        "{\"error\": {\"class\": 1, \"desc\": \"x\"}}",
        "{\"event\": 12}",
        "{\"event\": \"\"}",
        "{\"event\": \"X\", \"timestamp\": {\"seconds\": \"no\"}}",
        "{\"QMP\": {}}",
        "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2}}}}",
        "{\"QMP\": {\"version\": {\"qemu\": {\"major\": -7, \"minor\": 2, \"micro\": 0}}}}",
        "{\"return\": {}} {\"return\": {}}",
        "{\"return\": {}",
    };
    vmm_qmp_msg_t m;
    char *huge;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rb_err_t err;
        m.doc = TEST_STALE(rb_json_t);
        m.text = TEST_STALE(char);
        err = vmm_qmp_parse(bad[i], strlen(bad[i]), &m);
        if (err != RB_ERR_PARSE)
            fprintf(stderr, "accepted or wrong error for: %s\n", bad[i]);
        CHECK_INT_EQ(err, RB_ERR_PARSE);
        CHECK(m.doc == NULL && m.text == NULL);
    }
    huge = calloc(1, VMM_QMP_LINE_MAX + 2);
    memset(huge, ' ', VMM_QMP_LINE_MAX + 1);
    CHECK_INT_EQ(vmm_qmp_parse(huge, VMM_QMP_LINE_MAX + 1, &m), RB_ERR_LIMIT);
    free(huge);
}

static void test_build(void)
{
    rb_buf_t b;

    rb_buf_init(&b, 0);
    CHECK_INT_EQ(vmm_qmp_build(&b, "query-status", NULL, 3), RB_OK);
    CHECK_STR_EQ(rb_buf_cstr(&b), "{\"execute\":\"query-status\",\"id\":3}\n");
    b.len = 0;
    CHECK_INT_EQ(
        vmm_qmp_build(&b, "human-monitor-command", "{\"command-line\":\"info status\"}", 9), RB_OK);
    CHECK_STR_EQ(rb_buf_cstr(&b), "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-"
                                  "line\":\"info status\"},\"id\":9}\n");
    b.len = 0;
    CHECK_INT_EQ(vmm_qmp_build(&b, "", NULL, 1), RB_ERR_INVAL);
    CHECK_INT_EQ(vmm_qmp_build(&b, "quit\"}", NULL, 1), RB_ERR_INVAL);
    CHECK_INT_EQ(vmm_qmp_build(&b, "quit", "[1]", 1), RB_ERR_INVAL);
    CHECK_INT_EQ(vmm_qmp_build(&b, "quit", "{\"a\":1} x", 1), RB_ERR_INVAL);
    CHECK_INT_EQ(b.len, 0); /* nothing appended on error */
    rb_buf_free(&b);
}

static void test_next_line(void)
{
    rb_buf_t b;
    size_t consumed, len;

    rb_buf_init(&b, 0);
    rb_buf_puts(&b, "{\"return\": {}}\r\n{\"ret");
    len = vmm_qmp_next_line(&b, &consumed);
    CHECK_INT_EQ(len, 14);
    CHECK_INT_EQ(consumed, 16);
    rb_buf_consume(&b, consumed);
    CHECK_INT_EQ(vmm_qmp_next_line(&b, &consumed), 0);
    CHECK_INT_EQ(consumed, 0);
    rb_buf_puts(&b, "urn\": 1}\n");
    CHECK_INT_EQ(vmm_qmp_next_line(&b, &consumed), 13);
    rb_buf_free(&b);
}

/* ---- client against a fake server ---- */

typedef struct st_script_t {
    const char *path;
    const char *const *steps; /* "<text" send a line, ">" read one line, "." close, "~" sleep 1 s */
    int listen_fd;
    char got[8][256]; /* lines received */
    int ngot;
} script_t;

static void *serve(void *arg)
{
    script_t *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);

    for (size_t i = 0; fd != -1 && s->steps[i] != NULL; i++) {
        const char *st = s->steps[i];
        if (st[0] == '<') {
            if (write(fd, st + 1, strlen(st + 1)) < 0 || write(fd, "\r\n", 2) < 0)
                break;
        } else if (st[0] == '>') {
            char c;
            size_t n = 0;
            while (read(fd, &c, 1) == 1 && c != '\n') {
                if (n + 1 < sizeof(s->got[0]) && s->ngot < 8)
                    s->got[s->ngot][n++] = c;
            }
            if (s->ngot < 8)
                s->got[s->ngot++][n] = '\0';
        } else if (st[0] == '~') {
            sleep(1);
        } else {
            break;
        }
    }
    if (fd != -1)
        close(fd);
    return NULL;
}

static int start_server(script_t *s, pthread_t *t)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    unlink(s->path);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s->path);
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s->listen_fd == -1 || bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(s->listen_fd, 1) != 0)
        return -1;
    return pthread_create(t, NULL, serve, s);
}

static void stop_server(script_t *s, pthread_t t)
{
    pthread_join(t, NULL);
    close(s->listen_fd);
    unlink(s->path);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_client_flow(void)
{
    static const char *const steps[] = {
        "<" GREETING,
        ">",
        "<{\"return\": {}, \"id\": 1}",
        ">",
        "<{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"POWERDOWN\"}",
        "<{\"return\": {}, \"id\": 99}", /* someone else's reply: skipped */
        "<{\"return\": {}, \"id\": 2}",
        ">",
        "<{\"id\": 3, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}",
        "<{\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}, \"event\": \"SHUTDOWN\"}",
        ".",
        NULL};
    script_t s = {.path = "/tmp/rb-qmp-test-flow.sock", .steps = steps};
    pthread_t t;
    vmm_qmp_t *q = NULL;
    vmm_qmp_msg_t reply;
    const vmm_qmp_event_t *ev;
    size_t n;

    CHECK(start_server(&s, &t) == 0);
    CHECK_INT_EQ(vmm_qmp_connect(s.path, 2000, &q), RB_OK);
    CHECK_INT_EQ(vmm_qmp_execute(q, "system_powerdown", NULL, 2000, &reply), RB_OK);
    CHECK_INT_EQ(reply.kind, VMM_QMP_RETURN);
    CHECK_INT_EQ(reply.id, 2);
    vmm_qmp_msg_free(&reply);
    CHECK(vmm_qmp_saw_event(q, "POWERDOWN"));
    CHECK_INT_EQ(vmm_qmp_execute(q, "no-such", NULL, 2000, &reply), RB_ERR_UPSTREAM);
    CHECK_INT_EQ(reply.kind, VMM_QMP_ERROR);
    CHECK_STR_EQ(reply.name, "CommandNotFound");
    vmm_qmp_msg_free(&reply);
    CHECK_INT_EQ(vmm_qmp_wait_closed(q, 2000), RB_OK);
    ev = vmm_qmp_events(q, &n);
    CHECK_INT_EQ(n, 2);
    CHECK_STR_EQ(ev[1].name, "SHUTDOWN");
    CHECK_INT_EQ(ev[1].ts_sec, 3);
    /* after the peer closed, commands fail with an I/O error, not a hang */
    CHECK_INT_EQ(vmm_qmp_execute(q, "query-status", NULL, 2000, NULL), RB_ERR_IO);
    vmm_qmp_close(q);
    stop_server(&s, t);
    CHECK_STR_EQ(s.got[0], "{\"execute\":\"qmp_capabilities\",\"id\":1}");
    CHECK_STR_EQ(s.got[1], "{\"execute\":\"system_powerdown\",\"id\":2}");
    CHECK_STR_EQ(s.got[2], "{\"execute\":\"no-such\",\"id\":3}");
}

static void test_client_failures(void)
{
    static const char *const silent[] = {"~", ".", NULL};
    static const char *const closes[] = {"<" GREETING, ">", ".", NULL};
    static const char *const not_qmp[] = {"<{\"return\": {}}", ".", NULL};
    script_t s1 = {.path = "/tmp/rb-qmp-test-1.sock", .steps = silent};
    script_t s2 = {.path = "/tmp/rb-qmp-test-2.sock", .steps = closes};
    script_t s3 = {.path = "/tmp/rb-qmp-test-3.sock", .steps = not_qmp};
    pthread_t t;
    vmm_qmp_t *q = NULL;
    double t0;

    q = TEST_STALE(vmm_qmp_t);
    CHECK_INT_EQ(vmm_qmp_connect("/tmp/rb-qmp-test-missing.sock", 500, &q), RB_ERR_SYS);
    CHECK(q == NULL);

    CHECK(start_server(&s1, &t) == 0);
    t0 = mono_s();
    CHECK_INT_EQ(vmm_qmp_connect(s1.path, 300, &q), RB_ERR_TIMEOUT); /* no greeting */
    CHECK(mono_s() - t0 < 1.5);
    stop_server(&s1, t);

    CHECK(start_server(&s2, &t) == 0);
    q = TEST_STALE(vmm_qmp_t);
    CHECK_INT_EQ(vmm_qmp_connect(s2.path, 2000, &q), RB_ERR_IO); /* closed mid-negotiation */
    CHECK(q == NULL);
    stop_server(&s2, t);

    CHECK(start_server(&s3, &t) == 0);
    CHECK_INT_EQ(vmm_qmp_connect(s3.path, 2000, &q), RB_ERR_PARSE);
    stop_server(&s3, t);
}

TEST_MAIN(test_parse_greeting, test_parse_return, test_parse_error, test_parse_event,
          test_parse_rejects, test_build, test_next_line, test_client_flow, test_client_failures)
