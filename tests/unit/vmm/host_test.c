/* Unit tests for vmm/host.c: cpuinfo parsing, the port allocator, and accelerator resolution
 * without a probe boot (explicit choices and the verdict cache). */
#include "vmm/host.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test.h"

static void test_cpuinfo(void)
{
    unsigned khz = 0;

    CHECK_INT_EQ(vmm_host_parse_cpuinfo_khz("processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: "
                                            "2100.000\ncache size\t: 1 KB\ncpu MHz : 3000.0\n",
                                            &khz),
                 0);
    CHECK_INT_EQ(khz, 2100000);
    CHECK_INT_EQ(vmm_host_parse_cpuinfo_khz("cpu MHz\t\t: 2593.9065\n", &khz), 0);
    CHECK_INT_EQ(khz, 2593907);
    CHECK_INT_EQ(vmm_host_parse_cpuinfo_khz("processor : 0\n", &khz), -1);
    CHECK_INT_EQ(vmm_host_parse_cpuinfo_khz("cpu MHz\t: n/a\n", &khz), -1);
    CHECK_INT_EQ(vmm_host_parse_cpuinfo_khz("cpu MHz\t: 0\n", &khz), -1);
    CHECK_INT_EQ(vmm_host_parse_cpuinfo_khz("cpu MHz\nfoo: 12\n", &khz), -1);
    CHECK_INT_EQ(vmm_host_parse_cpuinfo_khz("cpu MHz : 99999999\n", &khz), -1);
    CHECK_INT_EQ(vmm_host_tsc_khz(&khz), RB_OK); /* every Linux host here reports one */
    CHECK(khz > 100000 && khz <= VMM_QEMU_TSC_KHZ_MAX);
}

static void test_port_alloc(void)
{
    uint16_t a = 0, b = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd;

    CHECK_INT_EQ(vmm_host_port_alloc(&a), RB_OK);
    CHECK_INT_EQ(vmm_host_port_alloc(&b), RB_OK);
    CHECK(a != 0 && b != 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(a);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0); /* it really is free */
    close(fd);
}

static void test_port_alloc_range(void)
{
    uint16_t a = 0, got = 0, seen_b = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd;

    CHECK_INT_EQ(vmm_host_port_alloc(&a), RB_OK);
    CHECK_INT_EQ(vmm_host_port_alloc_range(a, a, NULL, 0, &got), RB_OK); /* the one free port */
    CHECK_INT_EQ(got, a);
    CHECK_INT_EQ(vmm_host_port_alloc_range(a, a, &a, 1, &got), RB_ERR_LIMIT); /* taken: none */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(a);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(fd, 1) == 0);
    CHECK_INT_EQ(vmm_host_port_alloc_range(a, a, NULL, 0, &got), RB_ERR_LIMIT); /* in use: none */
    close(fd);
    /* a range of 64: every port given lies in it, and a taken one is never given */
    for (int i = 0; i < 200; i++) {
        uint16_t lo = 20000, hi = 20063, taken[1] = {20001};
        CHECK_INT_EQ(vmm_host_port_alloc_range(lo, hi, taken, 1, &got), RB_OK);
        CHECK(got >= lo && got <= hi && got != 20001);
        seen_b |= got != 20000;
    }
    CHECK(seen_b); /* tried from a random port, not always the first */
}

static void test_accel(void)
{
    vmm_accel_t acc = VMM_ACCEL_AUTO;
    const char *cache = "/tmp/rb-host-test-accel.cache";
    vmm_probe_t p = {.kernel = "/nonexistent/vmlinux",
                     .work_dir = "/tmp/rb-host-test-probe",
                     .cache_file = cache};
    FILE *f;

    CHECK_INT_EQ(vmm_host_accel_resolve(VMM_ACCEL_KVM, NULL, &acc), RB_OK);
    CHECK_INT_EQ(acc, VMM_ACCEL_KVM);
    CHECK_INT_EQ(vmm_host_accel_resolve(VMM_ACCEL_TCG, NULL, &acc), RB_OK);
    CHECK_INT_EQ(acc, VMM_ACCEL_TCG);
    CHECK_INT_EQ(vmm_host_accel_resolve(VMM_ACCEL_AUTO, NULL, &acc), RB_ERR_INVAL);
    CHECK_INT_EQ(acc, VMM_ACCEL_TCG);

    /* a cached verdict for this kernel is used without probing */
    f = fopen(cache, "w");
    CHECK(f != NULL);
    fprintf(f, "kvm 0 /nonexistent/vmlinux\n"); /* mtime 0: the file does not exist */
    fclose(f);
    CHECK_INT_EQ(vmm_host_accel_resolve(VMM_ACCEL_AUTO, &p, &acc), RB_OK);
    CHECK_INT_EQ(acc, VMM_ACCEL_KVM);
    f = fopen(cache, "w"); /* a verdict for another kernel is ignored: the probe runs (and fails,
                              the kernel does not exist) */
    CHECK(f != NULL);
    fprintf(f, "kvm 0 /other/vmlinux\n");
    fclose(f);
    CHECK_INT_EQ(vmm_host_accel_resolve(VMM_ACCEL_AUTO, &p, &acc), RB_OK);
    CHECK_INT_EQ(acc, VMM_ACCEL_TCG);
    unlink(cache);
}

TEST_MAIN(test_cpuinfo, test_port_alloc, test_port_alloc_range, test_accel)
