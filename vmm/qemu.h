/*
 * vmm/qemu: the QEMU command line for one micro-VM, built from a struct.
 *
 * Pure: no I/O, no clock, no globals; the same options always give the same argv. The machine is
 * `-M microvm` (virtio-mmio, ACPI left on because Debian kernels find virtio-mmio devices only
 * through the DSDT), booted from an uncompressed PVH vmlinux with `-kernel`, an optional initrd,
 * one virtio-blk disk, the per-boot guest configuration over fw_cfg (`opt/rigbox/config`),
 * user-mode networking with host forwards bound to 127.0.0.1 only, the serial console on a unix
 * socket with a log file, and QMP on a unix socket. Paths must be absolute. Paths that QEMU parses
 * as `key=value,...` option strings (disk, fw_cfg file, sockets, console log) have their commas
 * doubled QEMU-style; paths that QEMU takes verbatim (kernel, initrd, pid file) are refused when
 * they hold a comma, since QEMU versions differ in how they split those. Any control character in
 * any string is refused.
 *
 * Ownership: options are borrowed; the built argv is owned by the caller (free with vmm_argv_free).
 * Any thread may call these functions.
 */
#ifndef RB_VMM_QEMU_H
#define RB_VMM_QEMU_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define VMM_QEMU_FWD_MAX        16       /* host forwards per VM */
#define VMM_QEMU_VCPUS_MAX      64       /* vCPUs per VM */
#define VMM_QEMU_RAM_MB_MIN     64       /* the guest kernel needs about this much */
#define VMM_QEMU_RAM_MB_MAX     262144   /* 256 GiB */
#define VMM_QEMU_PATH_MAX       1024     /* bytes in any path option */
#define VMM_QEMU_SOCK_PATH_MAX  107      /* sun_path minus the NUL */
#define VMM_QEMU_CMDLINE_MAX    2048     /* bytes of extra kernel command line */
#define VMM_QEMU_TSC_KHZ_MAX    20000000 /* 20 GHz: anything above is a unit mistake */
#define VMM_QEMU_ARGC_MAX       64       /* arguments in the built argv */
#define VMM_QEMU_DEFAULT_BINARY "qemu-system-x86_64"
#define VMM_QEMU_FW_CFG_NAME    "opt/rigbox/config"
/* With egress none, slirp's restrict=on also refuses 10.0.2.2, and guestfwd cannot use that
 * address; the gateway is then reached at this guest address, relayed per connection by this host
 * command. */
#define VMM_QEMU_GATEWAY_GUEST_ADDR "10.0.2.100"
#define VMM_QEMU_GATEWAY_RELAY      "busybox nc 127.0.0.1"

/** Accelerator: AUTO is resolved by vmm_host_accel_resolve before building a command line. */
typedef enum { VMM_ACCEL_AUTO, VMM_ACCEL_KVM, VMM_ACCEL_TCG } vmm_accel_t;

/** One host forward: 127.0.0.1:host_port on the host reaches guest_port in the guest. */
typedef struct st_vmm_fwd_t {
    uint16_t host_port;
    uint16_t guest_port;
} vmm_fwd_t;

/** Everything that shapes the command line; pointers are borrowed, NULL means "none" where allowed.
 */
typedef struct st_vmm_qemu_opts_t {
    const char *binary;        /* NULL = VMM_QEMU_DEFAULT_BINARY (looked up in PATH) */
    vmm_accel_t accel;         /* VMM_ACCEL_KVM or VMM_ACCEL_TCG */
    unsigned vcpus;            /* 1..VMM_QEMU_VCPUS_MAX */
    unsigned ram_mb;           /* VMM_QEMU_RAM_MB_MIN..VMM_QEMU_RAM_MB_MAX */
    const char *kernel;        /* required: PVH vmlinux */
    const char *initrd;        /* may be NULL */
    const char *cmdline_extra; /* appended to the kernel command line; may be NULL */
    unsigned tsc_khz;          /* > 0 adds tsc_early_khz= (TCG boots hang without it); 0 omits */
    const char *disk;          /* the workspace disk (qcow2 overlay); may be NULL */
    const char *disk_format;   /* "qcow2" or "raw"; NULL = "qcow2" */
    const char *config_path;   /* fw_cfg file for opt/rigbox/config; may be NULL */
    const char *qmp_path;      /* required: QMP unix socket */
    const char *console_sock;  /* required: serial console unix socket */
    const char *console_log;   /* console log file (appended); may be NULL */
    const char *pid_file;      /* may be NULL */
    const vmm_fwd_t *fwds;     /* nfwds forwards; host ports must be distinct */
    size_t nfwds;
    int egress_none;       /* 1: slirp restrict=on (no outbound traffic from the guest) */
    uint16_t gateway_port; /* with egress_none and > 0: guest VMM_QEMU_GATEWAY_GUEST_ADDR:port
                              reaches host 127.0.0.1:port (guestfwd + VMM_QEMU_GATEWAY_RELAY) */
    int daemonize;         /* 1: -daemonize (the parent exits once QEMU is initialised) */
} vmm_qemu_opts_t;

/** A NULL-terminated argument vector: v[n] == NULL. Owned by whoever built it. */
typedef struct st_vmm_argv_t {
    char **v;
    size_t n;
} vmm_argv_t;

/** Builds the argv for o into *out (owned; free with vmm_argv_free). RB_ERR_INVAL names no field
 * but never builds a partial argv; RB_ERR_LIMIT when a count or length passes its VMM_QEMU_* limit.
 */
rb_err_t vmm_qemu_argv(const vmm_qemu_opts_t *o, vmm_argv_t *out);

/** Frees the strings and the vector, and resets *a to empty (an empty argv is fine). */
void vmm_argv_free(vmm_argv_t *a);

/** Appends value to out with every ',' doubled (QEMU option-string escaping). */
void vmm_qemu_escape(rb_buf_t *out, const char *value);

/** The accelerator as a word: "kvm", "tcg" or "auto". */
const char *vmm_accel_name(vmm_accel_t accel);

/** Parses "kvm", "tcg" or "auto"; returns 0, or -1 when unknown. */
int vmm_accel_parse(const char *s, vmm_accel_t *out);

#endif
