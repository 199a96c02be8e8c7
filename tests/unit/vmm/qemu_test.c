/* Unit tests for vmm/qemu.c: every option, forwards, limits and unsafe values. */
#include "vmm/qemu.h"

#include <string.h>

#include "test.h"

/* Index of the first argument equal to s, or -1. */
static int find(const vmm_argv_t *a, const char *s)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i], s) == 0)
            return (int)i;
    }
    return -1;
}

/* The argument after flag, or NULL. */
static const char *after(const vmm_argv_t *a, const char *flag)
{
    int i = find(a, flag);
    return i >= 0 && (size_t)i + 1 < a->n ? a->v[i + 1] : NULL;
}

static vmm_qemu_opts_t minimal(void)
{
    return (vmm_qemu_opts_t){.accel = VMM_ACCEL_TCG,
                             .vcpus = 1,
                             .ram_mb = 256,
                             .kernel = "/img/vmlinux",
                             .qmp_path = "/vm/qmp.sock",
                             .console_sock = "/vm/console.sock"};
}

static rb_err_t build_err(const vmm_qemu_opts_t *o)
{
    vmm_argv_t a = {0};
    rb_err_t err = vmm_qemu_argv(o, &a);
    if (err != RB_OK) {
        CHECK(a.v == NULL && a.n == 0); /* never a partial argv */
    }
    vmm_argv_free(&a);
    return err;
}

static void test_minimal(void)
{
    vmm_qemu_opts_t o = minimal();
    vmm_argv_t a;

    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(a.v[0], "qemu-system-x86_64");
    CHECK(a.v[a.n] == NULL);
    CHECK_STR_EQ(after(&a, "-M"), "microvm,x-option-roms=off,pit=on,pic=on,rtc=on");
    CHECK_STR_EQ(after(&a, "-accel"), "tcg");
    CHECK_INT_EQ(find(&a, "-cpu"), -1);
    CHECK_STR_EQ(after(&a, "-smp"), "1");
    CHECK_STR_EQ(after(&a, "-m"), "256M");
    CHECK(find(&a, "-nodefaults") > 0);
    CHECK(find(&a, "-no-user-config") > 0);
    CHECK(find(&a, "-no-reboot") > 0);
    CHECK_STR_EQ(after(&a, "-display"), "none");
    CHECK_STR_EQ(after(&a, "-kernel"), "/img/vmlinux");
    CHECK_INT_EQ(find(&a, "-initrd"), -1);
    CHECK_STR_EQ(after(&a, "-append"), "console=ttyS0 reboot=t panic=-1");
    CHECK_STR_EQ(after(&a, "-chardev"), "socket,id=con0,path=/vm/console.sock,server=on,wait=off");
    CHECK_STR_EQ(after(&a, "-serial"), "chardev:con0");
    CHECK_STR_EQ(after(&a, "-qmp"), "unix:/vm/qmp.sock,server=on,wait=off");
    CHECK_INT_EQ(find(&a, "-pidfile"), -1);
    CHECK_INT_EQ(find(&a, "-daemonize"), -1);
    CHECK_INT_EQ(find(&a, "-drive"), -1);
    CHECK_INT_EQ(find(&a, "-fw_cfg"), -1);
    CHECK_STR_EQ(after(&a, "-netdev"), "user,id=net0");
    CHECK_STR_EQ(after(&a, "-device"), "virtio-net-device,netdev=net0");
    vmm_argv_free(&a);
    CHECK(a.v == NULL && a.n == 0);
}

static void test_full(void)
{
    vmm_fwd_t f[] = {{20001, 8000}};
    vmm_qemu_opts_t o = minimal();
    vmm_argv_t a;
    int d;

    o.binary = "/opt/qemu/bin/qemu-system-x86_64";
    o.accel = VMM_ACCEL_KVM;
    o.vcpus = 4;
    o.ram_mb = 2048;
    o.initrd = "/img/initrd.img";
    o.tsc_khz = 2100000;
    o.cmdline_extra = "quiet loglevel=3";
    o.disk = "/vm/disk.qcow2";
    o.config_path = "/vm/config";
    o.console_log = "/vm/console.log";
    o.pid_file = "/vm/qemu.pid";
    o.fwds = f;
    o.nfwds = 1;
    o.daemonize = 1;
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(a.v[0], "/opt/qemu/bin/qemu-system-x86_64");
    CHECK_STR_EQ(after(&a, "-accel"), "kvm");
    CHECK_STR_EQ(after(&a, "-cpu"), "host");
    CHECK_STR_EQ(after(&a, "-smp"), "4");
    CHECK_STR_EQ(after(&a, "-m"), "2048M");
    CHECK_STR_EQ(after(&a, "-initrd"), "/img/initrd.img");
    CHECK_STR_EQ(after(&a, "-append"),
                 "console=ttyS0 reboot=t panic=-1 tsc_early_khz=2100000 quiet loglevel=3");
    CHECK_STR_EQ(after(&a, "-chardev"), "socket,id=con0,path=/vm/console.sock,server=on,wait=off,"
                                        "logfile=/vm/console.log,logappend=on");
    CHECK_STR_EQ(after(&a, "-pidfile"), "/vm/qemu.pid");
    CHECK(find(&a, "-daemonize") > 0);
    CHECK_STR_EQ(after(&a, "-drive"),
                 "id=disk0,if=none,format=qcow2,discard=unmap,file=/vm/disk.qcow2");
    d = find(&a, "-drive");
    CHECK(d > 0 && (size_t)d + 3 < a.n && strcmp(a.v[d + 2], "-device") == 0 &&
          strcmp(a.v[d + 3], "virtio-blk-device,drive=disk0") == 0);
    CHECK_STR_EQ(after(&a, "-fw_cfg"), "name=opt/rigbox/config,file=/vm/config");
    CHECK_STR_EQ(after(&a, "-netdev"), "user,id=net0,hostfwd=tcp:127.0.0.1:20001-:8000");
    vmm_argv_free(&a);

    o.disk_format = "raw";
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(after(&a, "-drive"),
                 "id=disk0,if=none,format=raw,discard=unmap,file=/vm/disk.qcow2");
    vmm_argv_free(&a);
}

static void test_egress_none(void)
{
    vmm_fwd_t f[] = {{20001, 8000}};
    vmm_qemu_opts_t o = minimal();
    vmm_argv_t a;

    o.egress_none = 1;
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(after(&a, "-netdev"), "user,id=net0,restrict=on");
    vmm_argv_free(&a);
    o.fwds = f;
    o.nfwds = 1;
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(after(&a, "-netdev"),
                 "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:20001-:8000");
    vmm_argv_free(&a);
    o.gateway_port = 9090; /* the gateway stays reachable through a relayed guestfwd */
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(after(&a, "-netdev"),
                 "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:9090-cmd:"
                 "busybox nc 127.0.0.1 9090,hostfwd=tcp:127.0.0.1:20001-:8000");
    vmm_argv_free(&a);
    o.egress_none = 0; /* with egress the guest uses 10.0.2.2 directly: no guestfwd */
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(after(&a, "-netdev"), "user,id=net0,hostfwd=tcp:127.0.0.1:20001-:8000");
    vmm_argv_free(&a);
}

static void test_forwards(void)
{
    vmm_fwd_t f[VMM_QEMU_FWD_MAX + 1];
    vmm_qemu_opts_t o = minimal();
    vmm_argv_t a;
    const char *net;

    for (size_t i = 0; i < VMM_QEMU_FWD_MAX + 1; i++)
        f[i] = (vmm_fwd_t){(uint16_t)(30000 + i), (uint16_t)(8000 + i)};
    o.fwds = f;
    o.nfwds = 3;
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(after(&a, "-netdev"),
                 "user,id=net0,hostfwd=tcp:127.0.0.1:30000-:8000,hostfwd=tcp:127.0.0.1:30001-:8001,"
                 "hostfwd=tcp:127.0.0.1:30002-:8002");
    vmm_argv_free(&a);

    o.nfwds = VMM_QEMU_FWD_MAX;
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    net = after(&a, "-netdev");
    CHECK(net != NULL && strstr(net, "hostfwd=tcp:127.0.0.1:30015-:8015") != NULL);
    CHECK(net != NULL && strstr(net, "0.0.0.0") == NULL);
    vmm_argv_free(&a);

    o.nfwds = VMM_QEMU_FWD_MAX + 1;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);

    o.nfwds = 2;
    f[1].host_port = f[0].host_port; /* two forwards on one host port */
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    f[1] = (vmm_fwd_t){0, 80};
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    f[1] = (vmm_fwd_t){30001, 0};
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o.fwds = NULL;
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
}

static void test_limits(void)
{
    vmm_qemu_opts_t o = minimal();
    char longpath[VMM_QEMU_PATH_MAX + 8], longsock[VMM_QEMU_SOCK_PATH_MAX + 8];
    char cmdline[VMM_QEMU_CMDLINE_MAX + 2];

    o.vcpus = 0;
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o.vcpus = VMM_QEMU_VCPUS_MAX;
    CHECK_INT_EQ(build_err(&o), RB_OK);
    o.vcpus = VMM_QEMU_VCPUS_MAX + 1;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);
    o = minimal();
    o.ram_mb = VMM_QEMU_RAM_MB_MIN - 1;
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o.ram_mb = VMM_QEMU_RAM_MB_MAX + 1;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);
    o = minimal();
    o.tsc_khz = VMM_QEMU_TSC_KHZ_MAX + 1;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);

    o = minimal();
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[VMM_QEMU_PATH_MAX + 1] = '\0';
    o.kernel = longpath;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);
    longpath[VMM_QEMU_PATH_MAX] = '\0';
    CHECK_INT_EQ(build_err(&o), RB_OK);

    o = minimal();
    memset(longsock, 's', sizeof(longsock) - 1);
    longsock[0] = '/';
    longsock[VMM_QEMU_SOCK_PATH_MAX + 1] = '\0';
    o.qmp_path = longsock;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);
    o = minimal();
    o.console_sock = longsock;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);
    longsock[VMM_QEMU_SOCK_PATH_MAX] = '\0';
    CHECK_INT_EQ(build_err(&o), RB_OK);

    o = minimal();
    memset(cmdline, 'x', sizeof(cmdline) - 1);
    cmdline[sizeof(cmdline) - 1] = '\0';
    o.cmdline_extra = cmdline;
    CHECK_INT_EQ(build_err(&o), RB_ERR_LIMIT);
    cmdline[VMM_QEMU_CMDLINE_MAX] = '\0';
    CHECK_INT_EQ(build_err(&o), RB_OK);
}

static void test_unsafe(void)
{
    vmm_qemu_opts_t o = minimal();
    vmm_argv_t a;

    o.accel = VMM_ACCEL_AUTO; /* must be resolved first */
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.kernel = "img/vmlinux"; /* relative */
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o.kernel = NULL;
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o.kernel = "/img/vm,linux"; /* verbatim paths refuse commas */
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.initrd = "/img/init,rd";
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.pid_file = "/vm/q,pid";
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.disk = "/vm/disk\n.qcow2"; /* control characters anywhere */
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.qmp_path = NULL;
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.console_sock = "console.sock";
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.cmdline_extra = "quiet\ninit=/bin/sh";
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.disk = "/vm/disk.qcow2";
    o.disk_format = "vmdk";
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);
    o = minimal();
    o.binary = "";
    CHECK_INT_EQ(build_err(&o), RB_ERR_INVAL);

    /* option-string paths: commas doubled, so ",server=off" cannot be injected */
    o = minimal();
    o.disk = "/vm/a,b.qcow2";
    o.config_path = "/vm/c,format=raw";
    o.qmp_path = "/vm/q,server=off";
    o.console_sock = "/vm/c,s";
    o.console_log = "/vm/l,og";
    CHECK_INT_EQ(vmm_qemu_argv(&o, &a), RB_OK);
    CHECK_STR_EQ(after(&a, "-drive"),
                 "id=disk0,if=none,format=qcow2,discard=unmap,file=/vm/a,,b.qcow2");
    CHECK_STR_EQ(after(&a, "-fw_cfg"), "name=opt/rigbox/config,file=/vm/c,,format=raw");
    CHECK_STR_EQ(after(&a, "-qmp"), "unix:/vm/q,,server=off,server=on,wait=off");
    CHECK_STR_EQ(after(&a, "-chardev"),
                 "socket,id=con0,path=/vm/c,,s,server=on,wait=off,logfile=/vm/l,,og,logappend=on");
    vmm_argv_free(&a);
}

static void test_escape_and_accel(void)
{
    rb_buf_t b;
    vmm_accel_t acc;

    rb_buf_init(&b, 0);
    vmm_qemu_escape(&b, ",a,,b,");
    CHECK_STR_EQ(rb_buf_cstr(&b), ",,a,,,,b,,");
    b.len = 0;
    vmm_qemu_escape(&b, "");
    CHECK_STR_EQ(rb_buf_cstr(&b), "");
    rb_buf_free(&b);

    CHECK_STR_EQ(vmm_accel_name(VMM_ACCEL_KVM), "kvm");
    CHECK_STR_EQ(vmm_accel_name(VMM_ACCEL_TCG), "tcg");
    CHECK_STR_EQ(vmm_accel_name(VMM_ACCEL_AUTO), "auto");
    CHECK_INT_EQ(vmm_accel_parse("kvm", &acc), 0);
    CHECK_INT_EQ(acc, VMM_ACCEL_KVM);
    CHECK_INT_EQ(vmm_accel_parse("tcg", &acc), 0);
    CHECK_INT_EQ(acc, VMM_ACCEL_TCG);
    CHECK_INT_EQ(vmm_accel_parse("auto", &acc), 0);
    CHECK_INT_EQ(acc, VMM_ACCEL_AUTO);
    CHECK_INT_EQ(vmm_accel_parse("hvf", &acc), -1);
}

TEST_MAIN(test_minimal, test_full, test_egress_none, test_forwards, test_limits, test_unsafe,
          test_escape_and_accel)
