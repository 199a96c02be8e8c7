/*
 * VM test: one base workspace through its whole life with the real QEMU (TCG unless RB_TEST_ACCEL
 * says kvm). Builds the images (tools/mkimage), boots with one app (busybox httpd on guest port
 * 8000, forwarded to a free loopback port) that records each boot in a file on the workspace disk,
 * waits for RIGBOX-READY and the app over the forward, checks console capture, metrics, QMP and
 * adoption, stops gracefully (the exit must come from the powerdown), boots again and checks the
 * file survived, kills QEMU with SIGKILL and checks it is seen dead, and deletes the files.
 *
 *   vm_boot_test <path to tools/mkimage> <images dir>
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "vmm/host.h"
#include "vmm/vm.h"

#define READY_TIMEOUT_MS 90000 /* TCG on a busy 2-core box: ~3-5 s normally */
#define HTTP_TIMEOUT_MS  30000
#define STOP_TIMEOUT_MS  20000
#define LOG_MAX          16384 /* small console cap, so the first boot's log passes it */

static const char *g_mkimage, *g_images;
static char g_kernel[512], g_initrd[512], g_base[512], g_dir[64];
static uint16_t g_port;
static uint16_t g_gw_port, g_other_port; /* fake gateway and another host service */
static int g_listen[2] = {-1, -1};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* GET path over the forward with short timeouts (slirp accepts before the guest listens).
 * Returns 1 and the body in body when the answer is 200. */
static int http_get(const char *path, char *body, size_t cap)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(g_port)};
    struct timeval tv = {.tv_sec = 0, .tv_usec = 300000};
    char req[256], resp[4096];
    size_t n = 0;
    ssize_t r;
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
    const char *b;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req)) {
        while (n + 1 < sizeof(resp) && (r = recv(fd, resp + n, sizeof(resp) - 1 - n, 0)) > 0)
            n += (size_t)r;
    }
    close(fd);
    resp[n] = '\0';
    if (strncmp(resp, "HTTP/1.", 7) == 0 && strncmp(resp + 8, " 200", 4) == 0 &&
        (b = strstr(resp, "\r\n\r\n")) != NULL) {
        snprintf(body, cap, "%s", b + 4);
        ok = 1;
    }
    return ok;
}

/* Answers every connection on g_listen[0] with "gw-ok" and on g_listen[1] with "other-ok". */
static void *serve_host(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = g_listen[0], .events = POLLIN},
                              {.fd = g_listen[1], .events = POLLIN}};
        if (poll(p, 2, -1) < 0)
            return NULL;
        for (int i = 0; i < 2; i++) {
            static const char *const answers[] = {"HTTP/1.0 200 OK\r\n\r\ngw-ok\n",
                                                  "HTTP/1.0 200 OK\r\n\r\nother-ok\n"};
            char req[512];
            int fd;
            if (!(p[i].revents & POLLIN) || (fd = accept(g_listen[i], NULL, NULL)) == -1)
                continue;
            if (recv(fd, req, sizeof(req), 0) >= 0 &&
                send(fd, answers[i], strlen(answers[i]), MSG_NOSIGNAL) < 0)
                fprintf(stderr, "fake service: send failed\n");
            close(fd);
        }
    }
}

static int listen_on(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0)
        return -1;
    return fd;
}

static int wait_http(const char *path, char *body, size_t cap)
{
    double end = mono_s() + HTTP_TIMEOUT_MS / 1000.0;
    while (mono_s() < end) {
        if (http_get(path, body, cap))
            return 1;
        usleep(50000);
    }
    return 0;
}

static vmm_accel_t test_accel(void)
{
    const char *e = getenv("RB_TEST_ACCEL");
    vmm_accel_t a = VMM_ACCEL_TCG;
    if (e != NULL && vmm_accel_parse(e, &a) == 0 && a != VMM_ACCEL_AUTO)
        return a;
    return VMM_ACCEL_TCG;
}

static int boot(vmm_vm_t **vm, int egress_none, double *ready_s, double *http_s, char *body,
                size_t cap)
{
    /* records the boot on the workspace disk, probes the gateway and another host port, serves */
    static const vmm_app_t apps[] = {
        {"web", 8000,
         "mkdir -p /root/www && echo boot >> /root/www/boots && echo web-started; "
         "h=${RIGBOX_GATEWAY_URL#http://}; "
         "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${h%:*} ${h##*:} > /root/www/gw 2>&1; "
         "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 10.0.2.2 $RB_OTHER_PORT > /root/www/other "
         "2>&1; "
         "exec httpd -f -p 8000 -h /root/www"}};
    char other[16];
    vmm_env_t env[] = {{"RB_OTHER_PORT", other}};
    vmm_fwd_t fwd = {g_port, 8000};
    vmm_vm_spec_t spec = {.dir = g_dir,
                          .accel = test_accel(),
                          .vcpus = 1,
                          .ram_mb = 256,
                          .kernel = g_kernel,
                          .initrd = g_initrd,
                          .base_image = g_base,
                          .fwds = &fwd,
                          .nfwds = 1,
                          .egress_none = egress_none,
                          .gateway_port = g_gw_port,
                          .console_log_max = LOG_MAX,
                          .guest = {.workspace_id = "ws-vmtest01",
                                    .token = "rbw_test",
                                    .env = env,
                                    .nenv = 1,
                                    .apps = apps,
                                    .napps = 1}};
    double t0 = mono_s();
    rb_err_t err;

    snprintf(other, sizeof(other), "%u", (unsigned)g_other_port);
    if ((err = vmm_vm_start(&spec, vm)) != RB_OK) {
        fprintf(stderr, "start: %s\n", rb_err_str(err));
        return 0;
    }
    if ((err = vmm_vm_wait_console(*vm, VMM_VM_READY_MARKER, READY_TIMEOUT_MS)) != RB_OK) {
        fprintf(stderr, "ready: %s\n", rb_err_str(err));
        return 0;
    }
    *ready_s = mono_s() - t0;
    if (!wait_http("/boots", body, cap))
        return 0;
    *http_s = mono_s() - t0;
    return 1;
}

/* 1 when the text file at path contains needle (a NUL byte, e.g. a hole left by a truncate that
 * the writer did not follow, ends the text early and so fails the check). */
static int file_has(const char *path, const char *needle)
{
    static char buf[1 << 20];
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static long file_len(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Checks on a running first boot: console capture and its cap, metrics, QMP, adoption. */
static void check_running(vmm_vm_t *vm)
{
    vmm_vm_t *adopted = NULL;
    vmm_metrics_t m;
    vmm_qmp_msg_t reply;
    char status[32], log[128], log1[128];

    snprintf(log, sizeof(log), "%s/console.log", g_dir);
    CHECK(file_has(log, "[app:web] web-started")); /* app output mirrored on the console */

    /* the console log is capped: past LOG_MAX its newest bytes (at most 2 x LOG_MAX) move to
     * console.log.1 and it restarts empty; a guest that wrote more than that between two
     * rotations loses its oldest output, not its newest */
    snprintf(log1, sizeof(log1), "%s/console.log.1", g_dir);
    CHECK(file_len(log) > LOG_MAX);
    {
        FILE *f = fopen(log, "a");
        CHECK(f != NULL);
        for (int i = 0; f != NULL && i < 3 * LOG_MAX / 64; i++)
            fprintf(f, "%063d\n", i);
        if (f != NULL) {
            fputs("newest-line\n", f);
            fclose(f);
        }
    }
    CHECK_INT_EQ(vmm_vm_console_rotate(vm), RB_OK);
    CHECK(file_has(log1, "newest-line"));
    CHECK(file_len(log1) <= 2 * LOG_MAX);
    CHECK(file_len(log) >= 0 && file_len(log) < LOG_MAX);

    sleep(1);
    CHECK_INT_EQ(vmm_vm_metrics(vm, &m), RB_OK);
    printf("metrics: cpu %.1f%% ram %.1f/%.0f MiB disk %.2f MiB of %.0f MiB\n", m.cpu_percent,
           m.ram_used_bytes / 1048576.0, m.ram_total_bytes / 1048576.0,
           m.disk_used_bytes / 1048576.0, m.disk_total_bytes / 1048576.0);
    CHECK(m.cpu_percent > 0.0 && m.cpu_percent <= 100.0);
    CHECK(m.ram_used_bytes > 0 && m.ram_used_bytes <= m.ram_total_bytes);
    CHECK_INT_EQ(m.ram_total_bytes, 256ull << 20);
    CHECK(m.disk_used_bytes > 0);
    CHECK_INT_EQ(m.disk_total_bytes, 1ull << 30); /* the base image's size */

    CHECK_INT_EQ(vmm_vm_qmp(vm, "query-status", NULL, 3000, &reply), RB_OK);
    CHECK_INT_EQ(rb_json_get_str(reply.doc, reply.value, "status", status, sizeof(status)), RB_OK);
    CHECK_STR_EQ(status, "running");
    vmm_qmp_msg_free(&reply);

    /* a restarted supervisor re-attaches */
    CHECK_INT_EQ(vmm_vm_adopt(g_dir, &adopted), RB_OK);
    CHECK(adopted != NULL && vmm_vm_pid(adopted) == vmm_vm_pid(vm));
    CHECK(adopted != NULL && vmm_vm_alive(adopted));
    vmm_vm_free(adopted);
}

static void test_lifecycle(void)
{
    vmm_vm_t *vm = NULL;
    vmm_metrics_t m;
    vmm_stop_how_t how = 0;
    char body[512], log[128];
    double ready = 0, http = 0, t0;
    pid_t pid;

    /* first boot, with egress: the gateway and other host ports are reachable at 10.0.2.2 */
    CHECK(boot(&vm, 0, &ready, &http, body, sizeof(body)));
    if (vm == NULL)
        return;
    printf("boot 1: ready %.2f s, app answering %.2f s\n", ready, http);
    CHECK_STR_EQ(body, "boot\n");
    CHECK(http_get("/gw", body, sizeof(body)) && strstr(body, "gw-ok") != NULL);
    CHECK(http_get("/other", body, sizeof(body)) && strstr(body, "other-ok") != NULL);
    check_running(vm);
    snprintf(log, sizeof(log), "%s/console.log", g_dir);

    /* graceful stop: the guest must power itself off */
    t0 = mono_s();
    CHECK_INT_EQ(vmm_vm_stop(vm, STOP_TIMEOUT_MS, &how), RB_OK);
    printf("stop: %.2f s, how=%d\n", mono_s() - t0, (int)how);
    CHECK_INT_EQ(how, VMM_STOP_POWERDOWN);
    CHECK(!vmm_vm_alive(vm));
    CHECK(file_has(log, "reboot: Power down")); /* QEMU went on writing at the new start */
    vmm_vm_free(vm);
    vm = NULL;

    /* second boot on the same disk, egress none: the file written by the first boot survived; the
     * gateway is still reachable (relayed), the other host port is not */
    CHECK(boot(&vm, 1, &ready, &http, body, sizeof(body)));
    if (vm == NULL)
        return;
    printf("boot 2 (egress none): ready %.2f s, app answering %.2f s\n", ready, http);
    CHECK_STR_EQ(body, "boot\nboot\n");
    CHECK(http_get("/gw", body, sizeof(body)) && strstr(body, "gw-ok") != NULL);
    CHECK(http_get("/other", body, sizeof(body)) && strstr(body, "other-ok") == NULL);

    /* a guest that does not power off in time is ended by QMP quit */
    CHECK_INT_EQ(vmm_vm_stop(vm, 0, &how), RB_OK);
    CHECK_INT_EQ(how, VMM_STOP_QUIT);
    CHECK(!vmm_vm_alive(vm));
    vmm_vm_free(vm);
    vm = NULL;

    /* third boot: SIGKILL from outside is seen as dead; stop then reports it was not running */
    CHECK(boot(&vm, 0, &ready, &http, body, sizeof(body)));
    if (vm == NULL)
        return;
    printf("boot 3: ready %.2f s, app answering %.2f s\n", ready, http);
    /* the quit was a hard stop: boot 2's unsynced line may be lost, but the disk mounts (journal
     * replay) and everything synced by boot 1's clean powerdown is there */
    CHECK(strcmp(body, "boot\nboot\n") == 0 || strcmp(body, "boot\nboot\nboot\n") == 0);
    pid = vmm_vm_pid(vm);
    CHECK_INT_EQ(kill(pid, SIGKILL), 0);
    t0 = mono_s();
    while (vmm_vm_alive(vm) && mono_s() - t0 < 5.0)
        usleep(20000);
    CHECK(!vmm_vm_alive(vm));
    CHECK_INT_EQ(vmm_vm_metrics(vm, &m), RB_ERR_STATE);
    CHECK_INT_EQ(vmm_vm_stop(vm, 1000, &how), RB_OK);
    CHECK_INT_EQ(how, VMM_STOP_ALREADY);
    vmm_vm_free(vm);

    CHECK_INT_EQ(vmm_vm_delete_files(g_dir), RB_OK);
    CHECK(access(g_dir, F_OK) != 0);
}

static int setup(void)
{
    char cmd[1024];
    struct stat st;
    pthread_t t;

    snprintf(cmd, sizeof(cmd), "%s --out %s --image base", g_mkimage, g_images);
    if (system(cmd) != 0) {
        fprintf(stderr, "mkimage failed\n");
        return -1;
    }
    snprintf(g_kernel, sizeof(g_kernel), "%s/vmlinux", g_images);
    snprintf(g_initrd, sizeof(g_initrd), "%s/initrd.img", g_images);
    snprintf(g_base, sizeof(g_base), "%s/base.ext4", g_images);
    snprintf(g_dir, sizeof(g_dir), "/tmp/rb-vmtest-%d", (int)getpid());
    if (stat(g_kernel, &st) != 0 || stat(g_base, &st) != 0)
        return -1;
    vmm_vm_delete_files(g_dir);
    if (vmm_host_port_alloc(&g_port) != RB_OK || vmm_host_port_alloc(&g_gw_port) != RB_OK ||
        vmm_host_port_alloc(&g_other_port) != RB_OK)
        return -1;
    if ((g_listen[0] = listen_on(g_gw_port)) == -1 || (g_listen[1] = listen_on(g_other_port)) == -1)
        return -1;
    return pthread_create(&t, NULL, serve_host, NULL) == 0 ? 0 : -1;
}

static void run(void)
{
    if (setup() != 0) {
        CHECK(!"setup");
        return;
    }
    test_lifecycle();
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <tools/mkimage> <images dir>\n", argv[0]);
        return 2;
    }
    g_mkimage = argv[1];
    g_images = argv[2];
    {
        static const test_fn_t fns[] = {run};
        static const char *const names[] = {"vm_lifecycle"};
        return test_run_(names, fns, 1);
    }
}
