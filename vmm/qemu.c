#include "vmm/qemu.h"

#include <stdio.h>
#include <string.h>

/* The kernel command line every VM gets: serial console, a panic or reboot ends QEMU
 * (-no-reboot turns the triple-fault reboot into an exit). */
#define BASE_CMDLINE "console=ttyS0 reboot=t panic=-1"

typedef struct st_argv_builder_t {
    vmm_argv_t argv;
    int overflow; /* more than VMM_QEMU_ARGC_MAX arguments */
} argv_builder_t;

static void push(argv_builder_t *b, const char *s)
{
    if (b->argv.n >= VMM_QEMU_ARGC_MAX) {
        b->overflow = 1;
        return;
    }
    if (b->argv.v == NULL)
        b->argv.v = rb_calloc(VMM_QEMU_ARGC_MAX + 1, sizeof(char *));
    b->argv.v[b->argv.n++] = rb_strdup(s);
}

/* Pushes the buffer's text and empties it for the next argument. */
static void push_buf(argv_builder_t *b, rb_buf_t *buf)
{
    push(b, rb_buf_cstr(buf));
    buf->len = 0;
}

static int has_ctl(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    }
    return 0;
}

/* 0 when path is usable: absolute, short enough, no control characters; verbatim paths also
 * refuse commas. Returns the error to report otherwise. */
static rb_err_t check_path(const char *path, size_t len_max, int verbatim)
{
    size_t len;

    if (path == NULL || path[0] != '/' || has_ctl(path))
        return RB_ERR_INVAL;
    len = strlen(path);
    if (len > len_max)
        return RB_ERR_LIMIT;
    if (verbatim && strchr(path, ',') != NULL)
        return RB_ERR_INVAL;
    return RB_OK;
}

static rb_err_t check_fwds(const vmm_qemu_opts_t *o)
{
    if (o->nfwds > VMM_QEMU_FWD_MAX)
        return RB_ERR_LIMIT;
    if (o->nfwds > 0 && o->fwds == NULL)
        return RB_ERR_INVAL;
    for (size_t i = 0; i < o->nfwds; i++) {
        if (o->fwds[i].host_port == 0 || o->fwds[i].guest_port == 0)
            return RB_ERR_INVAL;
        for (size_t j = 0; j < i; j++) {
            if (o->fwds[j].host_port == o->fwds[i].host_port)
                return RB_ERR_INVAL;
        }
    }
    return RB_OK;
}

/* Validates every option; RB_OK or the first problem found. */
static rb_err_t check_opts(const vmm_qemu_opts_t *o)
{
    rb_err_t err;

    if (o->accel != VMM_ACCEL_KVM && o->accel != VMM_ACCEL_TCG)
        return RB_ERR_INVAL;
    if (o->vcpus == 0 || o->ram_mb < VMM_QEMU_RAM_MB_MIN)
        return RB_ERR_INVAL;
    if (o->vcpus > VMM_QEMU_VCPUS_MAX || o->ram_mb > VMM_QEMU_RAM_MB_MAX ||
        o->tsc_khz > VMM_QEMU_TSC_KHZ_MAX)
        return RB_ERR_LIMIT;
    if (o->binary != NULL && (o->binary[0] == '\0' || has_ctl(o->binary)))
        return RB_ERR_INVAL;
    if (o->binary != NULL && strlen(o->binary) > VMM_QEMU_PATH_MAX)
        return RB_ERR_LIMIT;
    if ((err = check_path(o->kernel, VMM_QEMU_PATH_MAX, 1)) != RB_OK ||
        (o->initrd != NULL && (err = check_path(o->initrd, VMM_QEMU_PATH_MAX, 1)) != RB_OK) ||
        (o->pid_file != NULL && (err = check_path(o->pid_file, VMM_QEMU_PATH_MAX, 1)) != RB_OK) ||
        (o->disk != NULL && (err = check_path(o->disk, VMM_QEMU_PATH_MAX, 0)) != RB_OK) ||
        (o->config_path != NULL &&
         (err = check_path(o->config_path, VMM_QEMU_PATH_MAX, 0)) != RB_OK) ||
        (o->console_log != NULL &&
         (err = check_path(o->console_log, VMM_QEMU_PATH_MAX, 0)) != RB_OK) ||
        (err = check_path(o->qmp_path, VMM_QEMU_SOCK_PATH_MAX, 0)) != RB_OK ||
        (err = check_path(o->console_sock, VMM_QEMU_SOCK_PATH_MAX, 0)) != RB_OK)
        return err;
    if (o->disk_format != NULL && strcmp(o->disk_format, "qcow2") != 0 &&
        strcmp(o->disk_format, "raw") != 0)
        return RB_ERR_INVAL;
    if (o->cmdline_extra != NULL) {
        if (has_ctl(o->cmdline_extra))
            return RB_ERR_INVAL;
        if (strlen(o->cmdline_extra) > VMM_QEMU_CMDLINE_MAX)
            return RB_ERR_LIMIT;
    }
    return check_fwds(o);
}

void vmm_qemu_escape(rb_buf_t *out, const char *value)
{
    RB_ASSERT(out != NULL && value != NULL);
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == ',')
            rb_buf_append(out, ",,", 2);
        else
            rb_buf_append(out, p, 1);
    }
}

/* -M, -accel, -cpu, -smp, -m and the fixed device-free defaults. */
static void push_machine(argv_builder_t *b, const vmm_qemu_opts_t *o, rb_buf_t *t)
{
    push(b, o->binary != NULL ? o->binary : VMM_QEMU_DEFAULT_BINARY);
    /* x-option-roms=off: nothing to run before the kernel; pit/pic/rtc kept for TSC calibration */
    push(b, "-M");
    push(b, "microvm,x-option-roms=off,pit=on,pic=on,rtc=on");
    push(b, "-accel");
    push(b, vmm_accel_name(o->accel));
    if (o->accel == VMM_ACCEL_KVM) {
        push(b, "-cpu");
        push(b, "host");
    }
    push(b, "-smp");
    rb_buf_printf(t, "%u", o->vcpus);
    push_buf(b, t);
    push(b, "-m");
    rb_buf_printf(t, "%uM", o->ram_mb);
    push_buf(b, t);
    push(b, "-nodefaults");
    push(b, "-no-user-config");
    /* -display none rather than -nographic: QEMU refuses -nographic together with -daemonize */
    push(b, "-display");
    push(b, "none");
    push(b, "-no-reboot");
}

static void push_kernel(argv_builder_t *b, const vmm_qemu_opts_t *o, rb_buf_t *t)
{
    push(b, "-kernel");
    push(b, o->kernel);
    if (o->initrd != NULL) {
        push(b, "-initrd");
        push(b, o->initrd);
    }
    rb_buf_puts(t, BASE_CMDLINE);
    if (o->tsc_khz > 0)
        rb_buf_printf(t, " tsc_early_khz=%u", o->tsc_khz);
    if (o->cmdline_extra != NULL && o->cmdline_extra[0] != '\0')
        rb_buf_printf(t, " %s", o->cmdline_extra);
    push(b, "-append");
    push_buf(b, t);
}

static void push_control(argv_builder_t *b, const vmm_qemu_opts_t *o, rb_buf_t *t)
{
    rb_buf_puts(t, "socket,id=con0,path=");
    vmm_qemu_escape(t, o->console_sock);
    rb_buf_puts(t, ",server=on,wait=off");
    if (o->console_log != NULL) {
        rb_buf_puts(t, ",logfile=");
        vmm_qemu_escape(t, o->console_log);
        rb_buf_puts(t, ",logappend=on");
    }
    push(b, "-chardev");
    push_buf(b, t);
    push(b, "-serial");
    push(b, "chardev:con0");
    rb_buf_puts(t, "unix:");
    vmm_qemu_escape(t, o->qmp_path);
    rb_buf_puts(t, ",server=on,wait=off");
    push(b, "-qmp");
    push_buf(b, t);
    if (o->pid_file != NULL) {
        push(b, "-pidfile");
        push(b, o->pid_file);
    }
    if (o->daemonize)
        push(b, "-daemonize");
}

static void push_devices(argv_builder_t *b, const vmm_qemu_opts_t *o, rb_buf_t *t)
{
    if (o->disk != NULL) {
        rb_buf_printf(t, "id=disk0,if=none,format=%s,discard=unmap,file=",
                      o->disk_format != NULL ? o->disk_format : "qcow2");
        vmm_qemu_escape(t, o->disk);
        push(b, "-drive");
        push_buf(b, t);
        push(b, "-device");
        push(b, "virtio-blk-device,drive=disk0");
    }
    if (o->config_path != NULL) {
        rb_buf_puts(t, "name=" VMM_QEMU_FW_CFG_NAME ",file=");
        vmm_qemu_escape(t, o->config_path);
        push(b, "-fw_cfg");
        push_buf(b, t);
    }
    rb_buf_puts(t, "user,id=net0");
    if (o->egress_none) {
        rb_buf_puts(t, ",restrict=on");
        if (o->gateway_port > 0)
            rb_buf_printf(t, ",guestfwd=tcp:%s:%u-cmd:%s %u", VMM_QEMU_GATEWAY_GUEST_ADDR,
                          (unsigned)o->gateway_port, VMM_QEMU_GATEWAY_RELAY,
                          (unsigned)o->gateway_port);
    }
    for (size_t i = 0; i < o->nfwds; i++)
        rb_buf_printf(t, ",hostfwd=tcp:127.0.0.1:%u-:%u", (unsigned)o->fwds[i].host_port,
                      (unsigned)o->fwds[i].guest_port);
    push(b, "-netdev");
    push_buf(b, t);
    push(b, "-device");
    push(b, "virtio-net-device,netdev=net0");
}

rb_err_t vmm_qemu_argv(const vmm_qemu_opts_t *o, vmm_argv_t *out)
{
    rb_err_t err;
    argv_builder_t b = {0};
    rb_buf_t t;

    RB_ASSERT(o != NULL && out != NULL);
    *out = (vmm_argv_t){0};
    if ((err = check_opts(o)) != RB_OK)
        return err;
    rb_buf_init(&t, 0);
    push_machine(&b, o, &t);
    push_kernel(&b, o, &t);
    push_control(&b, o, &t);
    push_devices(&b, o, &t);
    rb_buf_free(&t);
    if (b.overflow) {
        vmm_argv_free(&b.argv);
        return RB_ERR_LIMIT;
    }
    RB_ASSERT(b.argv.n > 0 && b.argv.v[b.argv.n] == NULL);
    *out = b.argv;
    return RB_OK;
}

void vmm_argv_free(vmm_argv_t *a)
{
    RB_ASSERT(a != NULL);
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    *a = (vmm_argv_t){0};
}

const char *vmm_accel_name(vmm_accel_t accel)
{
    switch (accel) {
    case VMM_ACCEL_KVM:
        return "kvm";
    case VMM_ACCEL_TCG:
        return "tcg";
    case VMM_ACCEL_AUTO:
        return "auto";
    }
    return "auto";
}

int vmm_accel_parse(const char *s, vmm_accel_t *out)
{
    RB_ASSERT(s != NULL && out != NULL);
    if (strcmp(s, "kvm") == 0)
        *out = VMM_ACCEL_KVM;
    else if (strcmp(s, "tcg") == 0)
        *out = VMM_ACCEL_TCG;
    else if (strcmp(s, "auto") == 0)
        *out = VMM_ACCEL_AUTO;
    else
        return -1;
    return 0;
}
