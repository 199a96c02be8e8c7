#include "vmm/host.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/log.h"
#include "vmm/vm.h"

#define CACHE_LINE_MAX 1200 /* bytes in the verdict cache: a word, a space, a kernel path */

/* Reads up to cap-1 bytes of path (NUL-terminated); length or -1. */
static ssize_t slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;

    if (fd == -1)
        return -1;
    while (len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

int vmm_host_parse_cpuinfo_khz(const char *text, unsigned *out)
{
    const char *p = text;

    RB_ASSERT(text != NULL && out != NULL);
    while ((p = strstr(p, "cpu MHz")) != NULL) {
        char *end;
        double mhz;
        const char *colon = strchr(p, ':');
        const char *nl = strchr(p, '\n');
        p += strlen("cpu MHz");
        if (colon == NULL || (nl != NULL && colon > nl))
            continue;
        errno = 0;
        mhz = strtod(colon + 1, &end);
        if (errno != 0 || end == colon + 1 || !(mhz > 0.0) || mhz * 1000.0 > VMM_QEMU_TSC_KHZ_MAX)
            continue;
        *out = (unsigned)(mhz * 1000.0 + 0.5);
        return 0;
    }
    return -1;
}

rb_err_t vmm_host_tsc_khz(unsigned *out)
{
    char small[64], *end, *info;
    unsigned long v;
    int rc;

    RB_ASSERT(out != NULL);
    if (slurp("/sys/devices/system/cpu/cpu0/tsc_freq_khz", small, sizeof(small)) > 0) {
        v = strtoul(small, &end, 10);
        if (end != small && v > 0 && v <= VMM_QEMU_TSC_KHZ_MAX) {
            *out = (unsigned)v;
            return RB_OK;
        }
    }
    info = rb_malloc(VMM_HOST_CPUINFO_MAX);
    rc = slurp("/proc/cpuinfo", info, VMM_HOST_CPUINFO_MAX) > 0
             ? vmm_host_parse_cpuinfo_khz(info, out)
             : -1;
    free(info);
    return rc == 0 ? RB_OK : RB_ERR_NOTFOUND;
}

/* Binds 127.0.0.1:port (0: any) and closes it; the port bound, or 0 when it could not. */
static uint16_t try_port(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    socklen_t sl = sizeof(sa);
    uint16_t got = 0;
    int fd;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
        return 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        got = ntohs(sa.sin_port);
    close(fd);
    return got;
}

rb_err_t vmm_host_port_alloc(uint16_t *out)
{
    RB_ASSERT(out != NULL);
    return (*out = try_port(0)) != 0 ? RB_OK : RB_ERR_SYS;
}

rb_err_t vmm_host_port_alloc_range(uint16_t min, uint16_t max, const uint16_t *taken, size_t ntaken,
                                   uint16_t *out)
{
    uint32_t span, start;

    RB_ASSERT(min >= 1 && min <= max && out != NULL);
    span = (uint32_t)(max - min) + 1;
    rb_random_bytes(&start, sizeof(start));
    start %= span; /* start + k never wraps: each port is tried once */
    for (uint32_t k = 0; k < span; k++) {
        uint16_t p = (uint16_t)(min + (start + k) % span);
        size_t i = 0;
        while (i < ntaken && taken[i] != p)
            i++;
        if (i == ntaken && try_port(p) == p) {
            *out = p;
            return RB_OK;
        }
    }
    return RB_ERR_LIMIT;
}

/* The cache key: the kernel's mtime and path, so a rebuilt kernel is probed again. */
static void cache_key(const char *kernel, char *key, size_t cap)
{
    struct stat st;
    long long mtime = stat(kernel, &st) == 0 ? (long long)st.st_mtime : 0;
    snprintf(key, cap, "%lld %s", mtime, kernel);
}

/* The cached verdict for kernel: 0 with *out set, or -1. Format: "kvm|tcg <mtime> <path>\n". */
static int cache_read(const char *file, const char *kernel, vmm_accel_t *out)
{
    char buf[CACHE_LINE_MAX], key[CACHE_LINE_MAX], *sp, *nl;
    vmm_accel_t a;

    if (file == NULL || slurp(file, buf, sizeof(buf)) <= 0 || (sp = strchr(buf, ' ')) == NULL)
        return -1;
    *sp = '\0';
    if ((nl = strchr(sp + 1, '\n')) != NULL)
        *nl = '\0';
    cache_key(kernel, key, sizeof(key));
    if (vmm_accel_parse(buf, &a) != 0 || a == VMM_ACCEL_AUTO || strcmp(sp + 1, key) != 0)
        return -1;
    *out = a;
    return 0;
}

static void cache_write(const char *file, const char *kernel, vmm_accel_t a)
{
    char key[CACHE_LINE_MAX];
    FILE *f;

    if (file == NULL || (f = fopen(file, "w")) == NULL)
        return;
    cache_key(kernel, key, sizeof(key));
    fprintf(f, "%s %s\n", vmm_accel_name(a), key);
    fclose(f);
}

/* Boots the canary under KVM; 1 when it answered within the timeout. */
static int canary_boots(const vmm_probe_t *p)
{
    vmm_vm_t *vm = NULL;
    unsigned timeout = p->timeout_ms != 0 ? p->timeout_ms : VMM_HOST_PROBE_TIMEOUT_MS;
    vmm_vm_spec_t spec = {.dir = p->work_dir,
                          .qemu_binary = p->qemu_binary,
                          .accel = VMM_ACCEL_KVM,
                          .vcpus = 1,
                          .ram_mb = VMM_HOST_PROBE_RAM_MB,
                          .kernel = p->kernel,
                          .initrd = p->initrd,
                          .cmdline_extra = "rigbox.canary",
                          .guest = {.workspace_id = "canary"},
                          .start_timeout_ms = timeout};
    int ok = 0;

    if (vmm_vm_start(&spec, &vm) == RB_OK) {
        ok = vmm_vm_wait_console(vm, VMM_HOST_CANARY_MARKER, timeout) == RB_OK;
        vmm_vm_kill(vm);
        vmm_vm_free(vm);
    }
    vmm_vm_delete_files(p->work_dir);
    return ok;
}

rb_err_t vmm_host_accel_resolve(vmm_accel_t want, const vmm_probe_t *probe, vmm_accel_t *out)
{
    int fd;

    RB_ASSERT(out != NULL);
    *out = VMM_ACCEL_TCG;
    if (want != VMM_ACCEL_AUTO) {
        *out = want;
        return RB_OK;
    }
    if (probe == NULL || probe->kernel == NULL || probe->work_dir == NULL)
        return RB_ERR_INVAL;
    if (cache_read(probe->cache_file, probe->kernel, out) == 0)
        return RB_OK;
    if ((fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) == -1) {
        rb_log_info("vmm_accel", "accel=tcg reason=\"no usable /dev/kvm\"");
        cache_write(probe->cache_file, probe->kernel, VMM_ACCEL_TCG);
        return RB_OK;
    }
    close(fd);
    *out = canary_boots(probe) ? VMM_ACCEL_KVM : VMM_ACCEL_TCG;
    rb_log_info("vmm_accel", "accel=%s reason=\"canary boot under kvm %s\"", vmm_accel_name(*out),
                *out == VMM_ACCEL_KVM ? "succeeded" : "failed");
    cache_write(probe->cache_file, probe->kernel, *out);
    return RB_OK;
}
