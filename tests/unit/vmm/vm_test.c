/* Unit tests for vmm/vm.c that need no guest: spec validation, failures of the QEMU and qemu-img
 * processes, adoption of dead or foreign pids, and file deletion. The real boot is tests/vm/. */
#include "vmm/vm.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

#define DIR_A "/tmp/rb-vm-test-a"

static void touch(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static vmm_vm_spec_t spec(void)
{
    return (vmm_vm_spec_t){.dir = DIR_A,
                           .accel = VMM_ACCEL_TCG,
                           .vcpus = 1,
                           .ram_mb = 128,
                           .kernel = "/nonexistent/vmlinux",
                           .tsc_khz = 2000000,
                           .guest = {.workspace_id = "ws-test"},
                           .start_timeout_ms = 5000};
}

static void test_bad_spec(void)
{
    vmm_vm_spec_t s = spec();
    vmm_vm_t *vm = NULL;

    s.dir = "relative/dir";
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_INVAL);
    s.dir = "/tmp/a,b";
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_INVAL);
    s.dir = "/tmp/"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_INVAL);
    s = spec();
    s.accel = VMM_ACCEL_AUTO;
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_INVAL);
    s = spec();
    s.vcpus = 0;
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_INVAL);
    s = spec();
    s.guest.workspace_id = NULL;
    vm = TEST_STALE(vmm_vm_t);
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_INVAL);
    CHECK(vm == NULL);
    vmm_vm_delete_files(DIR_A);
}

static void test_qemu_fails(void)
{
    vmm_vm_spec_t s = spec();
    vmm_vm_t *vm = NULL;
    struct stat st;

    s.qemu_binary = "false"; /* exits 1 like a QEMU that rejects its arguments */
    vm = TEST_STALE(vmm_vm_t);
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_SYS);
    CHECK(vm == NULL);
    CHECK(stat(DIR_A "/config", &st) == 0 && (st.st_mode & 0777) == 0600);
    s.qemu_binary = "/nonexistent/qemu";
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_SYS);
    touch("/tmp/rb-vm-test-hang.sh", "#!/bin/sh\nexec sleep 5\n"); /* a QEMU that never returns */
    chmod("/tmp/rb-vm-test-hang.sh", 0700);
    s.qemu_binary = "/tmp/rb-vm-test-hang.sh";
    s.start_timeout_ms = 300;
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_TIMEOUT);
    unlink("/tmp/rb-vm-test-hang.sh");
    CHECK_INT_EQ(vmm_vm_delete_files(DIR_A), RB_OK);
    CHECK(access(DIR_A, F_OK) != 0);
}

static void test_overlay_fails(void)
{
    vmm_vm_spec_t s = spec();
    vmm_vm_t *vm = NULL;

    s.base_image = "/nonexistent/base.ext4";
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_NOTFOUND);
    s.base_image = "/etc/hostname"; /* exists; the qemu-img stand-in writes part of its output
                                       (the last argument) and fails */
    touch("/tmp/rb-vm-test-img.sh", "#!/bin/sh\nfor a; do out=$a; done\necho half > \"$out\"\n"
                                    "exit 1\n");
    chmod("/tmp/rb-vm-test-img.sh", 0700);
    s.qemu_img = "/tmp/rb-vm-test-img.sh";
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_SYS);
    unlink("/tmp/rb-vm-test-img.sh");
    CHECK(access(DIR_A "/disk.qcow2", F_OK) != 0); /* no half-made overlay left behind */
    CHECK(access(DIR_A "/disk.qcow2.tmp", F_OK) != 0);
    CHECK_INT_EQ(vmm_vm_delete_files(DIR_A), RB_OK);
}

/* The virtual size in a qcow2 header (big-endian at 24), 0 when not one. */
static unsigned long long qcow2_virtual(const char *path)
{
    unsigned char h[32];
    unsigned long long v = 0;
    FILE *f = fopen(path, "rb");
    if (f != NULL && fread(h, 1, sizeof(h), f) == sizeof(h) && memcmp(h, "QFI\xfb", 4) == 0)
        for (int i = 24; i < 32; i++)
            v = (v << 8) | h[i];
    if (f != NULL)
        fclose(f);
    return v;
}

/* A workspace resized while stopped: its kept overlay grows to the new disk_mb at the next start
 * (it kept its first size before), and never shrinks. Real qemu-img; QEMU itself is "false". */
static void test_overlay_grows(void)
{
    vmm_vm_spec_t s = spec();
    vmm_vm_t *vm = NULL;
    FILE *f = fopen("/tmp/rb-vm-test-base.raw", "w");

    CHECK(f != NULL && ftruncate(fileno(f), 1 << 20) == 0);
    if (f != NULL)
        fclose(f);
    s.base_image = "/tmp/rb-vm-test-base.raw";
    s.qemu_binary = "false";
    s.disk_mb = 2;
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_SYS); /* the overlay is made, then QEMU fails */
    CHECK_INT_EQ(qcow2_virtual(DIR_A "/disk.qcow2"), 2ull << 20);
    s.disk_mb = 5;
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_SYS);
    CHECK_INT_EQ(qcow2_virtual(DIR_A "/disk.qcow2"), 5ull << 20);
    s.disk_mb = 3;
    CHECK_INT_EQ(vmm_vm_start(&s, &vm), RB_ERR_SYS);
    CHECK_INT_EQ(qcow2_virtual(DIR_A "/disk.qcow2"), 5ull << 20);
    unlink("/tmp/rb-vm-test-base.raw");
    CHECK_INT_EQ(vmm_vm_delete_files(DIR_A), RB_OK);
}

static void test_adopt(void)
{
    vmm_vm_t *vm = NULL;
    char pid[32];

    CHECK_INT_EQ(vmm_vm_adopt("/tmp/rb-vm-test-none", &vm), RB_ERR_NOTFOUND);
    mkdir(DIR_A, 0700);
    touch(DIR_A "/qemu.pid", "garbage");
    CHECK_INT_EQ(vmm_vm_adopt(DIR_A, &vm), RB_ERR_NOTFOUND);
    snprintf(pid, sizeof(pid), "%d\n", (int)getpid()); /* alive, but not this VM's QEMU */
    touch(DIR_A "/qemu.pid", pid);
    vm = TEST_STALE(vmm_vm_t);
    CHECK_INT_EQ(vmm_vm_adopt(DIR_A, &vm), RB_ERR_NOTFOUND);
    CHECK(vm == NULL);
    CHECK_INT_EQ(vmm_vm_delete_files(DIR_A), RB_OK); /* a foreign pid does not block deletion */
}

static void test_delete(void)
{
    CHECK_INT_EQ(vmm_vm_delete_files("/tmp/rb-vm-test-none"), RB_OK);
    CHECK_INT_EQ(vmm_vm_delete_files("relative"), RB_ERR_INVAL);
    mkdir(DIR_A, 0700);
    touch(DIR_A "/disk.qcow2", "x");
    touch(DIR_A "/console.log", "x");
    touch(DIR_A "/unknown", "x");
    CHECK_INT_EQ(vmm_vm_delete_files(DIR_A), RB_ERR_SYS); /* never removes files it does not know */
    CHECK(access(DIR_A "/unknown", F_OK) == 0);
    CHECK(access(DIR_A "/disk.qcow2", F_OK) != 0);
    unlink(DIR_A "/unknown");
    CHECK_INT_EQ(vmm_vm_delete_files(DIR_A), RB_OK);
}

static vmm_guest_end_t end_of(const char *console)
{
    return vmm_console_guest_end(console, strlen(console));
}

static void test_guest_end(void)
{
    CHECK_INT_EQ(end_of(""), VMM_END_UNKNOWN);
    CHECK_INT_EQ(end_of("RIGBOX-READY uptime=2.5\n[app:www] serving\n"), VMM_END_UNKNOWN);
    CHECK_INT_EQ(end_of("RIGBOX-READY uptime=2.5\nrigbox: shutting down\nRIGBOX-POWEROFF\n"
                        "[   9.1] reboot: Power down\n"),
                 VMM_END_POWEROFF);
    CHECK_INT_EQ(end_of("RIGBOX-READY\nRIGBOX-REBOOT\n[   9.1] reboot: Restarting system\n"),
                 VMM_END_REBOOT);
    CHECK_INT_EQ(end_of("RIGBOX-POWEROFF"), VMM_END_POWEROFF); /* no newline after it */
    /* the last marker decides: a poweroff of an earlier boot is followed by this boot's ready */
    CHECK_INT_EQ(end_of("RIGBOX-POWEROFF\nRIGBOX-READY uptime=2.4\n"), VMM_END_UNKNOWN);
    CHECK_INT_EQ(end_of("RIGBOX-REBOOT\nRIGBOX-READY\nRIGBOX-POWEROFF\n"), VMM_END_POWEROFF);
    /* only at a line start: an app's mirrored line or an echoed command does not count */
    CHECK_INT_EQ(end_of("RIGBOX-READY\n[app:x] RIGBOX-POWEROFF\n~ # echo RIGBOX-REBOOT\n"),
                 VMM_END_UNKNOWN);
    CHECK_INT_EQ(end_of("RIGBOX-READY\nRIGBOX-POWER\n"), VMM_END_UNKNOWN); /* cut short */
}

/* The console tail read from a VM directory: a window that starts mid-line does not count its
 * first, partial line (here an app's "[app:x] RIGBOX-REBOOT" cut to the marker). */
static void test_dir_guest_end(void)
{
    char *text = malloc(2 * VMM_VM_END_TAIL);
    size_t pre = strlen("RIGBOX-READY\n[app:x] "), n;

    CHECK_INT_EQ(vmm_dir_guest_end("/tmp/rb-vm-test-none"), VMM_END_UNKNOWN);
    mkdir(DIR_A, 0700);
    snprintf(text, 2 * VMM_VM_END_TAIL, "RIGBOX-READY\n[app:x] RIGBOX-REBOOT\n");
    n = strlen(text);
    memset(text + n, 'y', pre + VMM_VM_END_TAIL - n - 1); /* the window starts at the marker */
    text[pre + VMM_VM_END_TAIL - 1] = '\n';
    text[pre + VMM_VM_END_TAIL] = '\0';
    touch(DIR_A "/console.log", text);
    CHECK_INT_EQ(vmm_dir_guest_end(DIR_A), VMM_END_UNKNOWN);
    touch(DIR_A "/console.log", "RIGBOX-READY\nRIGBOX-POWEROFF\n");
    CHECK_INT_EQ(vmm_dir_guest_end(DIR_A), VMM_END_POWEROFF);
    CHECK_INT_EQ(vmm_vm_delete_files(DIR_A), RB_OK);
    free(text);
}

TEST_MAIN(test_bad_spec, test_qemu_fails, test_overlay_fails, test_overlay_grows, test_adopt,
          test_delete, test_guest_end, test_dir_guest_end)
