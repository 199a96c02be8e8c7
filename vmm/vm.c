#include "vmm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "vmm/host.h"

extern char **environ;

#define PATH_BUF      (VMM_VM_DIR_MAX + 32) /* dir + "/" + the longest file name */
#define PROC_FILE_MAX (64 * 1024)           /* bytes read from a /proc file */
#define META_MAX      1024                  /* bytes in vm.meta */
#define ERR_SHOW_MAX  512                   /* bytes of qemu.err logged on failure */
#define MARKER_MAX    64                    /* bytes in a console marker */
#define LOG_CHUNK     4096                  /* console log read size */
#define SPAWN_POLL_US 10000                 /* waitpid polling interval */

/* The files of a VM directory (vm.h). */
static const char *const vm_files[] = {
    "qemu.pid",   "qmp.sock",    "console.sock",     "console.log", "console.log.1",
    "disk.qcow2", "config",      "vm.meta",          "qemu.err",    "disk.qcow2.tmp",
    "config.tmp", "vm.meta.tmp", "console.log.1.tmp"};

struct st_vmm_vm_t {
    char dir[VMM_VM_DIR_MAX + 1];
    pid_t pid;
    unsigned vcpus;
    unsigned ram_mb;
    size_t console_log_max;
    uint64_t console_off; /* where this boot's console output starts in console.log */
    int have_prev;        /* cpu_* hold a previous sample */
    uint64_t cpu_ticks_prev;
    int64_t cpu_ns_prev;
};

/* ---- small helpers ---- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ms(void)
{
    return now_ns() / 1000000;
}

static void join(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, PATH_BUF, "%s/%s", dir, name);
    RB_ASSERT(n > 0 && n < PATH_BUF); /* dir is checked against VMM_VM_DIR_MAX first */
}

static int dir_ok(const char *dir)
{
    size_t n;

    if (dir == NULL || dir[0] != '/')
        return 0;
    n = strlen(dir);
    if (n > VMM_VM_DIR_MAX || strchr(dir, ',') != NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)dir[i] < 0x20)
            return 0;
    }
    return 1;
}

/* mkdir -p without recursion: creates each missing component in turn. */
static rb_err_t mkdir_p(const char *dir, mode_t mode)
{
    char p[PATH_BUF];
    size_t n = strlen(dir);

    RB_ASSERT(n < sizeof(p));
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        p[i] = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST)
            return RB_ERR_SYS;
        p[i] = dir[i];
    }
    return RB_OK;
}

/* Reads up to n bytes of fd from where it stands (fewer at its end); returns how many. */
static size_t read_full(int fd, char *buf, size_t n)
{
    size_t len = 0;

    while (len < n) {
        ssize_t r = read(fd, buf + len, n - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    return len;
}

/* Reads up to cap-1 bytes of path into buf (NUL-terminated); returns the length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len;

    RB_ASSERT(cap > 0);
    if (fd == -1)
        return -1;
    len = read_full(fd, buf, cap - 1);
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Reads the last (at most) n bytes of path into buf; returns their length or -1. */
static ssize_t read_tail(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    ssize_t len = -1;

    if (fd == -1)
        return -1;
    if (fstat(fd, &st) == 0 &&
        lseek(fd, st.st_size > (off_t)n ? st.st_size - (off_t)n : 0, SEEK_SET) != (off_t)-1)
        len = (ssize_t)read_full(fd, buf, n);
    close(fd);
    return len;
}

/* Writes data to path via path.tmp and rename, so readers never see half a file. */
static rb_err_t write_atomic(const char *path, const char *data, size_t len, mode_t mode)
{
    char tmp[PATH_BUF + 8];
    int fd, ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return RB_ERR_LIMIT;
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) == -1)
        return RB_ERR_SYS;
    ok = fchmod(fd, mode) == 0 && write(fd, data, len) == (ssize_t)len;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return RB_ERR_IO;
    }
    return RB_OK;
}

/* ---- processes ---- */

/* /proc/<pid>/stat state letter and utime+stime; -1 when the process is gone. */
static int proc_stat(pid_t pid, char *state, uint64_t *ticks)
{
    char path[64], buf[1024];
    const char *p;
    unsigned long long ut = 0, st = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof(buf)) <= 0 || (p = strrchr(buf, ')')) == NULL)
        return -1;
    /* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime */
    if (sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", state, &ut, &st) !=
        3)
        return -1;
    *ticks = ut + st;
    return 0;
}

/* 1 when pid runs (not a zombie) and its command line names the socket qmp (so a reused pid is not
 * taken for the VM). */
static int proc_is_vm(pid_t pid, const char *qmp)
{
    char path[64], state;
    char *cmd;
    uint64_t ticks;
    ssize_t n;
    int found;

    if (pid <= 0 || proc_stat(pid, &state, &ticks) != 0 || state == 'Z' || state == 'X')
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    cmd = rb_malloc(PROC_FILE_MAX);
    n = read_small(path, cmd, PROC_FILE_MAX);
    found = n > 0 && memmem(cmd, (size_t)n, qmp, strlen(qmp)) != NULL;
    free(cmd);
    return found;
}

static rb_err_t read_pid(const char *dir, pid_t *out)
{
    char path[PATH_BUF], buf[32], *end;
    long v;

    join(path, dir, "qemu.pid");
    if (read_small(path, buf, sizeof(buf)) <= 0)
        return RB_ERR_NOTFOUND;
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || v <= 1 || v > INT32_MAX)
        return RB_ERR_PARSE;
    *out = (pid_t)v;
    return RB_OK;
}

static int dir_vm_alive(const char *dir, pid_t pid)
{
    char qmp[PATH_BUF];
    join(qmp, dir, "qmp.sock");
    return proc_is_vm(pid, qmp);
}

static void log_file_head(const char *what, const char *path)
{
    char buf[ERR_SHOW_MAX];

    if (read_small(path, buf, sizeof(buf)) > 0) {
        for (char *p = buf; *p != '\0'; p++) {
            if (*p == '\n')
                *p = ' ';
        }
        rb_log_error("vmm_spawn_failed", "what=%s stderr=\"%s\"", what, buf);
    }
}

/* Runs argv with stdin from /dev/null and stdout+stderr into err_path, and waits up to timeout_ms
 * for it to exit. RB_OK only on exit status 0; RB_ERR_TIMEOUT kills it. */
static rb_err_t run_wait(char *const argv[], const char *err_path, unsigned timeout_ms)
{
    rb_err_t err = RB_ERR_SYS;
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status = 0, rc;
    int64_t deadline = now_ms() + timeout_ms;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        rb_log_error("vmm_spawn_failed", "what=%s errno=%d", argv[0], rc);
        return RB_ERR_SYS;
    }
    while ((rc = waitpid(pid, &status, WNOHANG)) == 0 || (rc == -1 && errno == EINTR)) {
        if (now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            err = RB_ERR_TIMEOUT;
            goto Exit;
        }
        usleep(SPAWN_POLL_US);
    }
    if (rc == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        err = RB_OK;
Exit:
    if (err != RB_OK)
        log_file_head(argv[0], err_path);
    return err;
}

/* ---- start ---- */

static rb_err_t check_spec(const vmm_vm_spec_t *s)
{
    if (!dir_ok(s->dir))
        return RB_ERR_INVAL;
    if (s->accel != VMM_ACCEL_KVM && s->accel != VMM_ACCEL_TCG)
        return RB_ERR_INVAL;
    if (s->base_format != NULL && strcmp(s->base_format, "raw") != 0 &&
        strcmp(s->base_format, "qcow2") != 0)
        return RB_ERR_INVAL;
    if (s->kernel == NULL || (s->base_image != NULL && s->base_image[0] != '/'))
        return RB_ERR_INVAL;
    return RB_OK;
}

/* Creates disk.qcow2 over the base (resolved, so a later image rebuild never changes the file
 * under an existing overlay) unless it already exists. */
static uint64_t qcow2_size(const char *path);

/* A kept overlay smaller than disk_mb (the workspace was resized while stopped) grows to it;
 * it never shrinks (the API refuses a smaller disk). The guest's filesystem is its own affair. */
static rb_err_t grow_overlay(const vmm_vm_spec_t *s, const char *disk)
{
    char errp[PATH_BUF], size[32];
    char *argv[6];

    if (s->disk_mb == 0 || qcow2_size(disk) >= (uint64_t)s->disk_mb << 20)
        return RB_OK;
    join(errp, s->dir, "qemu.err");
    snprintf(size, sizeof(size), "%uM", s->disk_mb);
    argv[0] = (char *)(s->qemu_img != NULL ? s->qemu_img : "qemu-img");
    argv[1] = "resize";
    argv[2] = "-q";
    argv[3] = (char *)disk;
    argv[4] = size;
    argv[5] = NULL;
    return run_wait(argv, errp, VMM_VM_QEMU_IMG_TIMEOUT_MS);
}

static rb_err_t ensure_overlay(const vmm_vm_spec_t *s)
{
    char disk[PATH_BUF], tmp[PATH_BUF], errp[PATH_BUF], size[32], *base = NULL;
    char *argv[12];
    size_t n = 0;
    rb_err_t err;

    join(disk, s->dir, "disk.qcow2");
    if (access(disk, F_OK) == 0)
        return grow_overlay(s, disk);
    join(tmp, s->dir, "disk.qcow2.tmp");
    join(errp, s->dir, "qemu.err");
    if ((base = realpath(s->base_image, NULL)) == NULL)
        return RB_ERR_NOTFOUND;
    argv[n++] = (char *)(s->qemu_img != NULL ? s->qemu_img : "qemu-img");
    argv[n++] = "create";
    argv[n++] = "-q";
    argv[n++] = "-f";
    argv[n++] = "qcow2";
    argv[n++] = "-F";
    argv[n++] = (char *)(s->base_format != NULL ? s->base_format : "raw");
    argv[n++] = "-b";
    argv[n++] = base;
    argv[n++] = tmp;
    if (s->disk_mb > 0) {
        snprintf(size, sizeof(size), "%uM", s->disk_mb);
        argv[n++] = size;
    }
    argv[n] = NULL;
    RB_ASSERT(n < sizeof(argv) / sizeof(argv[0]));
    unlink(tmp);
    err = run_wait(argv, errp, VMM_VM_QEMU_IMG_TIMEOUT_MS);
    if (err == RB_OK && rename(tmp, disk) != 0)
        err = RB_ERR_SYS;
    if (err != RB_OK)
        unlink(tmp);
    free(base);
    return err;
}

static uint16_t gateway_port(const vmm_vm_spec_t *s)
{
    return s->gateway_port != 0 ? s->gateway_port : VMM_VM_GATEWAY_PORT;
}

static rb_err_t write_config(const vmm_vm_spec_t *s)
{
    char path[PATH_BUF], url[VMM_VM_GATEWAY_URL_MAX];
    vmm_guestcfg_t g = s->guest;
    rb_buf_t b;
    rb_err_t err;

    if (g.gateway_url == NULL) {
        snprintf(url, sizeof(url), "http://%s:%u",
                 s->egress_none ? VMM_QEMU_GATEWAY_GUEST_ADDR : "10.0.2.2",
                 (unsigned)gateway_port(s));
        g.gateway_url = url;
    }
    join(path, s->dir, "config");
    rb_buf_init(&b, 0);
    if ((err = vmm_guestcfg_render(&g, &b)) == RB_OK)
        err = write_atomic(path, b.base, b.len, 0600);
    rb_buf_free(&b);
    return err;
}

static rb_err_t write_meta(const vmm_vm_t *vm)
{
    char path[PATH_BUF], buf[META_MAX];
    int n = snprintf(buf, sizeof(buf),
                     "vcpus=%u\nram_mb=%u\nconsole_log_max=%zu\nconsole_off=%" PRIu64 "\n",
                     vm->vcpus, vm->ram_mb, vm->console_log_max, vm->console_off);

    RB_ASSERT(n > 0 && n < (int)sizeof(buf));
    join(path, vm->dir, "vm.meta");
    return write_atomic(path, buf, (size_t)n, 0600);
}

static rb_err_t read_meta(vmm_vm_t *vm)
{
    char path[PATH_BUF], buf[META_MAX];
    unsigned long long off = 0;
    size_t logmax = 0;

    join(path, vm->dir, "vm.meta");
    if (read_small(path, buf, sizeof(buf)) <= 0)
        return RB_ERR_NOTFOUND;
    if (sscanf(buf, "vcpus=%u\nram_mb=%u\nconsole_log_max=%zu\nconsole_off=%llu", &vm->vcpus,
               &vm->ram_mb, &logmax, &off) != 4 ||
        vm->vcpus == 0 || vm->ram_mb == 0 || logmax == 0)
        return RB_ERR_PARSE;
    vm->console_log_max = logmax;
    vm->console_off = off;
    return RB_OK;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Fills the QEMU options for s; paths point into the caller's buffers. */
static void fill_opts(const vmm_vm_spec_t *s, vmm_qemu_opts_t *o, char (*p)[PATH_BUF])
{
    join(p[0], s->dir, "disk.qcow2");
    join(p[1], s->dir, "config");
    join(p[2], s->dir, "qmp.sock");
    join(p[3], s->dir, "console.sock");
    join(p[4], s->dir, "console.log");
    join(p[5], s->dir, "qemu.pid");
    *o = (vmm_qemu_opts_t){.binary = s->qemu_binary,
                           .accel = s->accel,
                           .vcpus = s->vcpus,
                           .ram_mb = s->ram_mb,
                           .kernel = s->kernel,
                           .initrd = s->initrd,
                           .cmdline_extra = s->cmdline_extra,
                           .tsc_khz = s->tsc_khz,
                           .disk = s->base_image != NULL ? p[0] : NULL,
                           .disk_format = "qcow2",
                           .config_path = p[1],
                           .qmp_path = p[2],
                           .console_sock = p[3],
                           .console_log = p[4],
                           .pid_file = p[5],
                           .fwds = s->fwds,
                           .nfwds = s->nfwds,
                           .egress_none = s->egress_none,
                           .gateway_port = gateway_port(s),
                           .daemonize = 1};
    if (o->accel == VMM_ACCEL_TCG && o->tsc_khz == 0 && vmm_host_tsc_khz(&o->tsc_khz) != RB_OK)
        o->tsc_khz = 0; /* boots may hang in calibration; logged by the caller's timeout */
}

/* Removes what a previous QEMU may have left (sockets, pid file). */
static void clear_stale(const char *dir)
{
    static const char *const stale[] = {"qemu.pid", "qmp.sock", "console.sock"};
    char path[PATH_BUF];

    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        join(path, dir, stale[i]);
        unlink(path);
    }
}

/* Waits for the pid file QEMU writes before its parent exits. */
static rb_err_t wait_pid(vmm_vm_t *vm, int64_t deadline)
{
    rb_err_t err;

    while ((err = read_pid(vm->dir, &vm->pid)) != RB_OK) {
        if (now_ms() >= deadline)
            return RB_ERR_TIMEOUT;
        usleep(SPAWN_POLL_US);
    }
    return dir_vm_alive(vm->dir, vm->pid) ? RB_OK : RB_ERR_STATE;
}

/* Everything before exec: directory, liveness check, overlay, config. */
static rb_err_t prepare(const vmm_vm_spec_t *s, vmm_vm_t *vm)
{
    rb_err_t err;
    pid_t old;
    char log[PATH_BUF];

    if ((err = mkdir_p(s->dir, 0700)) != RB_OK)
        return err;
    if (read_pid(s->dir, &old) == RB_OK && dir_vm_alive(s->dir, old))
        return RB_ERR_EXISTS;
    clear_stale(s->dir);
    if (s->base_image != NULL && (err = ensure_overlay(s)) != RB_OK)
        return err;
    if ((err = write_config(s)) != RB_OK)
        return err;
    if ((err = vmm_vm_console_rotate(vm)) != RB_OK)
        return err;
    join(log, s->dir, "console.log");
    vm->console_off = file_size(log);
    return write_meta(vm);
}

rb_err_t vmm_vm_start(const vmm_vm_spec_t *spec, vmm_vm_t **out)
{
    rb_err_t err;
    vmm_vm_t *vm = NULL;
    vmm_qemu_opts_t o;
    vmm_argv_t argv = {0};
    char paths[6][PATH_BUF], errp[PATH_BUF];
    unsigned timeout =
        spec->start_timeout_ms != 0 ? spec->start_timeout_ms : VMM_VM_START_TIMEOUT_MS;
    int64_t deadline = now_ms() + timeout;

    RB_ASSERT(spec != NULL && out != NULL);
    *out = NULL;
    if ((err = check_spec(spec)) != RB_OK)
        return err;
    vm = rb_calloc(1, sizeof(*vm));
    memcpy(vm->dir, spec->dir, strlen(spec->dir) + 1);
    vm->vcpus = spec->vcpus;
    vm->ram_mb = spec->ram_mb;
    vm->console_log_max =
        spec->console_log_max != 0 ? spec->console_log_max : VMM_VM_CONSOLE_LOG_MAX;
    fill_opts(spec, &o, paths);
    if ((err = vmm_qemu_argv(&o, &argv)) != RB_OK)
        goto Exit;
    if ((err = prepare(spec, vm)) != RB_OK)
        goto Exit;
    join(errp, spec->dir, "qemu.err");
    if ((err = run_wait(argv.v, errp, timeout)) != RB_OK)
        goto Exit;
    if ((err = wait_pid(vm, deadline)) != RB_OK)
        goto Exit;
    rb_log_info("vmm_vm_started", "dir=%s pid=%d accel=%s vcpus=%u ram_mb=%u", vm->dir,
                (int)vm->pid, vmm_accel_name(spec->accel), vm->vcpus, vm->ram_mb);
    *out = vm;
    vm = NULL;
Exit:
    vmm_argv_free(&argv);
    free(vm);
    return err;
}

rb_err_t vmm_vm_adopt(const char *dir, vmm_vm_t **out)
{
    rb_err_t err;
    vmm_vm_t *vm = NULL;

    RB_ASSERT(dir != NULL && out != NULL);
    *out = NULL;
    if (!dir_ok(dir))
        return RB_ERR_INVAL;
    vm = rb_calloc(1, sizeof(*vm));
    memcpy(vm->dir, dir, strlen(dir) + 1);
    if ((err = read_pid(dir, &vm->pid)) != RB_OK)
        goto Exit;
    if (!dir_vm_alive(dir, vm->pid)) {
        err = RB_ERR_NOTFOUND;
        goto Exit;
    }
    if ((err = read_meta(vm)) != RB_OK)
        goto Exit;
    rb_log_info("vmm_vm_adopted", "dir=%s pid=%d", vm->dir, (int)vm->pid);
    *out = vm;
    vm = NULL;
Exit:
    free(vm);
    return err == RB_ERR_NOTFOUND || err == RB_ERR_PARSE ? RB_ERR_NOTFOUND : err;
}

/* ---- console ---- */

/* Scans console.log from *off for marker; carry holds the last bytes of the previous read so a
 * marker split across reads is found. 1 found, 0 not yet. */
static int scan_log(const char *path, uint64_t *off, const char *marker, char *carry,
                    size_t *ncarry)
{
    char buf[MARKER_MAX + LOG_CHUNK];
    size_t mlen = strlen(marker);
    int fd = open(path, O_RDONLY | O_CLOEXEC), found = 0;
    ssize_t r;

    if (fd == -1)
        return 0;
    if (file_size(path) < *off) { /* rotated under us */
        *off = 0;
        *ncarry = 0;
    }
    while (!found && (r = pread(fd, buf + *ncarry, LOG_CHUNK, (off_t)*off)) > 0) {
        size_t len = *ncarry + (size_t)r;
        memcpy(buf, carry, *ncarry);
        *off += (uint64_t)r;
        found = memmem(buf, len, marker, mlen) != NULL;
        *ncarry = len < mlen - 1 ? len : mlen - 1;
        memcpy(carry, buf + len - *ncarry, *ncarry);
    }
    close(fd);
    return found;
}

rb_err_t vmm_vm_wait_console(vmm_vm_t *vm, const char *marker, unsigned timeout_ms)
{
    char path[PATH_BUF], carry[MARKER_MAX];
    size_t ncarry = 0;
    uint64_t off;
    int64_t deadline = now_ms() + timeout_ms;

    RB_ASSERT(vm != NULL && marker != NULL);
    if (marker[0] == '\0' || strlen(marker) >= MARKER_MAX)
        return RB_ERR_INVAL;
    join(path, vm->dir, "console.log");
    off = vm->console_off;
    for (;;) {
        if (scan_log(path, &off, marker, carry, &ncarry))
            return RB_OK;
        if (!vmm_vm_alive(vm))
            return scan_log(path, &off, marker, carry, &ncarry) ? RB_OK : RB_ERR_STATE;
        if (now_ms() >= deadline)
            return RB_ERR_TIMEOUT;
        usleep(VMM_VM_POLL_MS * 1000);
    }
}

rb_err_t vmm_vm_console_rotate(vmm_vm_t *vm)
{
    char log[PATH_BUF], old[PATH_BUF];
    char *data;
    ssize_t n;
    uint64_t size;
    rb_err_t err = RB_OK;

    RB_ASSERT(vm != NULL && vm->console_log_max > 0);
    join(log, vm->dir, "console.log");
    join(old, vm->dir, "console.log.1");
    if ((size = file_size(log)) <= vm->console_log_max)
        return RB_OK;
    /* QEMU holds console.log open with O_APPEND: copy its newest bytes aside (at most twice the
     * cap), then truncate in place (what the guest writes in between is lost, as with any
     * copy-and-truncate rotation) */
    if (size > vm->console_log_max * 2)
        size = vm->console_log_max * 2;
    data = rb_malloc((size_t)size);
    n = read_tail(log, data, (size_t)size);
    if (n < 0 || write_atomic(old, data, (size_t)n, 0600) != RB_OK || truncate(log, 0) != 0)
        err = RB_ERR_IO;
    free(data);
    vm->console_off = 0;
    return err;
}

/* ---- stop, liveness ---- */

vmm_guest_end_t vmm_console_guest_end(const char *tail, size_t n)
{
    static const struct {
        const char *marker;
        vmm_guest_end_t end;
    } kinds[] = {{VMM_VM_READY_MARKER, VMM_END_UNKNOWN},
                 {VMM_VM_POWEROFF_MARKER, VMM_END_POWEROFF},
                 {VMM_VM_REBOOT_MARKER, VMM_END_REBOOT}};

    /* the last line that starts with a marker decides */
    for (size_t i = n; i-- > 0;) {
        if (i > 0 && tail[i - 1] != '\n')
            continue;
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            size_t m = strlen(kinds[k].marker);
            if (n - i >= m && memcmp(tail + i, kinds[k].marker, m) == 0)
                return kinds[k].end;
        }
    }
    return VMM_END_UNKNOWN;
}

vmm_guest_end_t vmm_dir_guest_end(const char *dir)
{
    char path[PATH_BUF], tail[VMM_VM_END_TAIL];
    ssize_t n;

    RB_ASSERT(dir != NULL && strlen(dir) < VMM_VM_DIR_MAX);
    join(path, dir, "console.log");
    if ((n = read_tail(path, tail, sizeof(tail))) <= 0)
        return VMM_END_UNKNOWN;
    if ((size_t)n == sizeof(tail)) { /* a full window may start mid-line: from its first line on */
        const char *nl = memchr(tail, '\n', (size_t)n);
        size_t skip = nl != NULL ? (size_t)(nl - tail) + 1 : (size_t)n;
        return vmm_console_guest_end(tail + skip, (size_t)n - skip);
    }
    return vmm_console_guest_end(tail, (size_t)n);
}

int vmm_vm_alive(const vmm_vm_t *vm)
{
    RB_ASSERT(vm != NULL);
    return dir_vm_alive(vm->dir, vm->pid);
}

pid_t vmm_vm_pid(const vmm_vm_t *vm)
{
    RB_ASSERT(vm != NULL);
    return vm->pid;
}

const char *vmm_vm_dir(const vmm_vm_t *vm)
{
    RB_ASSERT(vm != NULL);
    return vm->dir;
}

/* Polls until the VM is gone or the deadline passes; 1 when gone. */
static int wait_gone(const vmm_vm_t *vm, unsigned timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;

    while (vmm_vm_alive(vm)) {
        if (now_ms() >= deadline)
            return 0;
        usleep(VMM_VM_POLL_MS * 1000);
    }
    return 1;
}

rb_err_t vmm_vm_kill(vmm_vm_t *vm)
{
    RB_ASSERT(vm != NULL);
    if (!vmm_vm_alive(vm))
        return RB_OK;
    kill(vm->pid, SIGKILL);
    return wait_gone(vm, VMM_VM_KILL_WAIT_MS) ? RB_OK : RB_ERR_TIMEOUT;
}

rb_err_t vmm_vm_stop(vmm_vm_t *vm, unsigned timeout_ms, vmm_stop_how_t *how)
{
    char qmp_path[PATH_BUF];
    vmm_qmp_t *q = NULL;
    vmm_stop_how_t h = VMM_STOP_ALREADY;
    rb_err_t err = RB_OK;

    RB_ASSERT(vm != NULL);
    if (!vmm_vm_alive(vm))
        goto Exit;
    join(qmp_path, vm->dir, "qmp.sock");
    if (vmm_qmp_connect(qmp_path, VMM_VM_QMP_TIMEOUT_MS, &q) == RB_OK) {
        h = VMM_STOP_POWERDOWN;
        if (vmm_qmp_execute(q, "system_powerdown", NULL, VMM_VM_QMP_TIMEOUT_MS, NULL) == RB_OK &&
            wait_gone(vm, timeout_ms))
            goto Exit;
        h = VMM_STOP_QUIT;
        if (vmm_qmp_execute(q, "quit", NULL, VMM_VM_QMP_TIMEOUT_MS, NULL) != RB_ERR_TIMEOUT &&
            wait_gone(vm, VMM_VM_QUIT_WAIT_MS))
            goto Exit;
    }
    h = VMM_STOP_KILL;
    err = vmm_vm_kill(vm);
Exit:
    vmm_qmp_close(q);
    if (how != NULL)
        *how = h;
    rb_log_info("vmm_vm_stopped", "dir=%s pid=%d how=%d", vm->dir, (int)vm->pid, (int)h);
    return err;
}

rb_err_t vmm_vm_qmp(vmm_vm_t *vm, const char *command, const char *args_json, unsigned timeout_ms,
                    vmm_qmp_msg_t *reply)
{
    char qmp_path[PATH_BUF];
    vmm_qmp_t *q = NULL;
    rb_err_t err;

    RB_ASSERT(vm != NULL && command != NULL);
    if (reply != NULL)
        *reply = (vmm_qmp_msg_t){.value = -1};
    join(qmp_path, vm->dir, "qmp.sock");
    if ((err = vmm_qmp_connect(qmp_path, timeout_ms, &q)) == RB_OK)
        err = vmm_qmp_execute(q, command, args_json, timeout_ms, reply);
    vmm_qmp_close(q);
    return err;
}

/* ---- metrics ---- */

static uint64_t rss_anon_bytes(pid_t pid)
{
    char path[64], buf[4096];
    const char *p;
    unsigned long long kb = 0;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (read_small(path, buf, sizeof(buf)) <= 0 || (p = strstr(buf, "RssAnon:")) == NULL)
        return 0;
    if (sscanf(p + strlen("RssAnon:"), "%llu", &kb) != 1)
        return 0;
    return (uint64_t)kb * 1024;
}

/* Virtual size from a qcow2 header: magic "QFI\xfb" at 0, big-endian u64 size at 24. */
static uint64_t qcow2_size(const char *path)
{
    unsigned char h[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint64_t v = 0;

    if (fd == -1)
        return 0;
    if (pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && memcmp(h, "QFI\xfb", 4) == 0) {
        for (int i = 24; i < 32; i++)
            v = (v << 8) | h[i];
    }
    close(fd);
    return v;
}

/* Process start time as CLOCK_MONOTONIC-comparable ns: boot-relative starttime from /proc. */
static int64_t proc_start_ns(pid_t pid)
{
    char path[64], buf[1024];
    const char *p;
    unsigned long long start = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof(buf)) <= 0 || (p = strrchr(buf, ')')) == NULL)
        return 0;
    /* field 22 is starttime; p points at field 2's end, so skip fields 3..21 */
    if (sscanf(p + 1,
               " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d "
               "%llu",
               &start) != 1)
        return 0;
    return (int64_t)(start * (1000000000ULL / (unsigned long long)sysconf(_SC_CLK_TCK)));
}

static double cpu_sample(vmm_vm_t *vm, uint64_t ticks)
{
    long hz = sysconf(_SC_CLK_TCK);
    int64_t t = now_ns(), prev_ns;
    uint64_t prev_ticks;
    struct timespec boot;
    double pct;

    if (vm->have_prev) {
        prev_ns = vm->cpu_ns_prev;
        prev_ticks = vm->cpu_ticks_prev;
    } else {
        /* first sample: average since QEMU started (CLOCK_BOOTTIME matches /proc starttime) */
        clock_gettime(CLOCK_BOOTTIME, &boot);
        prev_ns = t - ((int64_t)boot.tv_sec * 1000000000 + boot.tv_nsec - proc_start_ns(vm->pid));
        prev_ticks = 0;
    }
    vm->have_prev = 1;
    vm->cpu_ns_prev = t;
    vm->cpu_ticks_prev = ticks;
    if (t <= prev_ns || ticks < prev_ticks || hz <= 0)
        return 0.0;
    pct = 100.0 * ((double)(ticks - prev_ticks) / (double)hz) / ((double)(t - prev_ns) / 1e9) /
          (double)vm->vcpus;
    return pct < 0.0 ? 0.0 : (pct > 100.0 ? 100.0 : pct);
}

rb_err_t vmm_vm_metrics(vmm_vm_t *vm, vmm_metrics_t *out)
{
    char disk[PATH_BUF], state;
    uint64_t ticks, cap;
    struct stat st;

    RB_ASSERT(vm != NULL && out != NULL && vm->vcpus > 0);
    *out = (vmm_metrics_t){0};
    if (!vmm_vm_alive(vm) || proc_stat(vm->pid, &state, &ticks) != 0)
        return RB_ERR_STATE;
    out->cpu_percent = cpu_sample(vm, ticks);
    cap = (uint64_t)vm->ram_mb * 1024 * 1024;
    out->ram_total_bytes = cap;
    out->ram_used_bytes = rss_anon_bytes(vm->pid);
    if (out->ram_used_bytes > cap)
        out->ram_used_bytes = cap;
    join(disk, vm->dir, "disk.qcow2");
    if (stat(disk, &st) == 0) {
        out->disk_used_bytes = (uint64_t)st.st_blocks * 512;
        out->disk_total_bytes = qcow2_size(disk);
    }
    return RB_OK;
}

void vmm_vm_free(vmm_vm_t *vm)
{
    free(vm);
}

rb_err_t vmm_vm_delete_files(const char *dir)
{
    char path[PATH_BUF];
    pid_t pid;

    RB_ASSERT(dir != NULL);
    if (!dir_ok(dir))
        return RB_ERR_INVAL;
    if (access(dir, F_OK) != 0)
        return RB_OK;
    if (read_pid(dir, &pid) == RB_OK && dir_vm_alive(dir, pid))
        return RB_ERR_STATE;
    for (size_t i = 0; i < sizeof(vm_files) / sizeof(vm_files[0]); i++) {
        join(path, dir, vm_files[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            return RB_ERR_SYS;
    }
    if (rmdir(dir) != 0) {
        rb_log_warn("vmm_vm_delete_files", "dir=%s errno=%d (unknown files left)", dir, errno);
        return RB_ERR_SYS;
    }
    return RB_OK;
}
