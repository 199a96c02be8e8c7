/*
 * vmm/vm: one QEMU micro-VM as a daemonized process, seen through its per-VM directory.
 *
 * Everything about a VM lives in one directory (absolute path, no commas, short enough for unix
 * socket paths): qemu.pid, qmp.sock, console.sock (serial console, connect to it for a shell),
 * console.log (capped at console_log_max: rotate with vmm_vm_console_rotate; one older copy in
 * console.log.1), disk.qcow2 (the workspace disk: a qcow2 overlay on the read-only template base,
 * created when missing, kept across stop/start, removed by vmm_vm_delete_files), config (the
 * guestcfg text served over fw_cfg, mode 0600 because it holds the workspace token), vm.meta
 * (sizes, for adoption) and qemu.err (QEMU's stderr during start).
 *
 * QEMU runs with -daemonize, so it is never a child of the caller: the supervisor can restart and
 * re-attach with vmm_vm_adopt. Liveness is the pid from qemu.pid, checked against /proc (the
 * process must exist, not be a zombie, and have this directory's QMP socket on its command line, so
 * a reused pid is never mistaken for the VM).
 *
 * Threads: every call blocks (file I/O, QMP round trips, waiting for exit) but always for a bounded
 * time; run them off an event loop. A vmm_vm_t belongs to one thread at a time. Different VMs are
 * independent. No global state.
 */
#ifndef RB_VMM_VM_H
#define RB_VMM_VM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "vmm/guestcfg.h"
#include "vmm/qemu.h"
#include "vmm/qmp.h"

#define VMM_VM_DIR_MAX             80                /* bytes in the VM directory path */
#define VMM_VM_START_TIMEOUT_MS    30000             /* default: QEMU exec to daemonized */
#define VMM_VM_QEMU_IMG_TIMEOUT_MS 30000             /* qemu-img create */
#define VMM_VM_QMP_TIMEOUT_MS      3000              /* one QMP connect or command */
#define VMM_VM_QUIT_WAIT_MS        3000              /* after QMP quit, before SIGKILL */
#define VMM_VM_KILL_WAIT_MS        3000              /* after SIGKILL */
#define VMM_VM_CONSOLE_LOG_MAX     (4 * 1024 * 1024) /* default console.log cap */
#define VMM_VM_POLL_MS             50                /* liveness / log polling interval */
#define VMM_VM_READY_MARKER        "RIGBOX-READY"
#define VMM_VM_POWEROFF_MARKER     "RIGBOX-POWEROFF" /* the guest's last line before it powers off */
#define VMM_VM_REBOOT_MARKER       "RIGBOX-REBOOT"   /* ... before it reboots (QEMU then exits) */
#define VMM_VM_END_TAIL            4096              /* console bytes read for those markers */
#define VMM_VM_GATEWAY_PORT        9090              /* rigbox-gateway's default AI proxy port */
#define VMM_VM_GATEWAY_URL_MAX     64                /* bytes in the derived gateway URL */

/** What to boot; pointers borrowed for the duration of vmm_vm_start. */
typedef struct st_vmm_vm_spec_t {
    const char *dir;         /* per-VM directory, created (0700) when missing */
    const char *qemu_binary; /* NULL = qemu-system-x86_64 from PATH */
    const char *qemu_img;    /* NULL = qemu-img from PATH */
    vmm_accel_t accel;       /* KVM or TCG (resolve AUTO with vmm_host_accel_resolve) */
    unsigned vcpus;
    unsigned ram_mb;
    unsigned disk_mb;          /* overlay virtual size (a kept smaller one grows); 0 = the base's */
    const char *kernel;        /* absolute: PVH vmlinux (tools/mkimage) */
    const char *initrd;        /* absolute: stage-1 initrd; NULL = none */
    const char *base_image;    /* template base image; NULL = no disk (canary boots) */
    const char *base_format;   /* "raw" (tools/mkimage's ext4) or "qcow2"; NULL = "raw" */
    const char *cmdline_extra; /* extra kernel command line; may be NULL */
    unsigned tsc_khz;      /* 0 = the host's value under TCG (vmm_host_tsc_khz), none under KVM */
    int egress_none;       /* template egress: none -> slirp restrict=on; the gateway is then
                              reached at 10.0.2.100:gateway_port through a relay */
    uint16_t gateway_port; /* host port of the gateway's AI proxy; 0 = VMM_VM_GATEWAY_PORT */
    const vmm_fwd_t *fwds; /* host forwards (host ports from vmm_host_port_alloc) */
    size_t nfwds;
    vmm_guestcfg_t guest;      /* workspace id, token, env, apps; guest.gateway_url NULL = derived:
                                  http://10.0.2.2:<gateway_port>, or 10.0.2.100 with egress none */
    size_t console_log_max;    /* 0 = VMM_VM_CONSOLE_LOG_MAX */
    unsigned start_timeout_ms; /* 0 = VMM_VM_START_TIMEOUT_MS */
} vmm_vm_spec_t;

typedef struct st_vmm_vm_t vmm_vm_t;

/** How vmm_vm_stop ended the VM. */
typedef enum {
    VMM_STOP_ALREADY = 1, /* it was not running */
    VMM_STOP_POWERDOWN,   /* the guest shut down after system_powerdown (clean) */
    VMM_STOP_QUIT,        /* QMP quit after the powerdown timeout */
    VMM_STOP_KILL,        /* SIGKILL after quit failed */
} vmm_stop_how_t;

/** Host-side measurements of a running VM. */
typedef struct st_vmm_metrics_t {
    double cpu_percent;        /* QEMU process CPU since the previous call (the first call: since
                                  start), as a share of the VM's vCPUs: 0..100 */
    uint64_t ram_used_bytes;   /* RssAnon of QEMU, capped at the guest size */
    uint64_t ram_total_bytes;  /* guest RAM */
    uint64_t disk_used_bytes;  /* allocated blocks of disk.qcow2 */
    uint64_t disk_total_bytes; /* virtual size of disk.qcow2 (0 without a disk) */
} vmm_metrics_t;

/** Prepares the directory (overlay, config, meta), starts QEMU daemonized and returns once QEMU is
 *  initialised (not once the guest is ready: see vmm_vm_wait_console). *out is owned (free with
 *  vmm_vm_free). RB_ERR_EXISTS when a QEMU already runs for dir; RB_ERR_INVAL/RB_ERR_LIMIT for a
 * bad spec; RB_ERR_SYS when QEMU or qemu-img fails (its stderr is logged and kept in qemu.err);
 *  RB_ERR_TIMEOUT. */
rb_err_t vmm_vm_start(const vmm_vm_spec_t *spec, vmm_vm_t **out);

/** Re-attaches to the QEMU running for dir (after a supervisor restart). RB_ERR_NOTFOUND when none
 * is running; *out owned (free with vmm_vm_free). */
rb_err_t vmm_vm_adopt(const char *dir, vmm_vm_t **out);

/** Waits up to timeout_ms for marker (e.g. VMM_VM_READY_MARKER) in the console output of this boot.
 *  RB_ERR_STATE when QEMU exits first, RB_ERR_TIMEOUT. */
rb_err_t vmm_vm_wait_console(vmm_vm_t *vm, const char *marker, unsigned timeout_ms);

/** Stops the VM: QMP system_powerdown and up to timeout_ms for the guest to power off, then QMP
 * quit, then SIGKILL. *how (may be NULL) says which step ended it. RB_ERR_TIMEOUT only when even
 * SIGKILL did not end it. */
rb_err_t vmm_vm_stop(vmm_vm_t *vm, unsigned timeout_ms, vmm_stop_how_t *how);

/** SIGKILL now and wait for the process to go (up to VMM_VM_KILL_WAIT_MS). */
rb_err_t vmm_vm_kill(vmm_vm_t *vm);

/** How a guest ended, from the last marker on its console (tools/mkimage prints them). */
typedef enum {
    VMM_END_UNKNOWN = 0, /* no poweroff or reboot marker after the last ready marker: a crash */
    VMM_END_POWEROFF,    /* the guest shut down (poweroff, halt, the power button) */
    VMM_END_REBOOT,      /* the guest rebooted */
} vmm_guest_end_t;

/** Pure: the end that the console output tail[0..n) shows. Markers count only at a line start. */
vmm_guest_end_t vmm_console_guest_end(const char *tail, size_t n);

/** vmm_console_guest_end over the last VMM_VM_END_TAIL bytes of dir/console.log (the VM
 *  directory); call it once QEMU is gone. */
vmm_guest_end_t vmm_dir_guest_end(const char *dir);

/** 1 while the QEMU process of this VM runs. */
int vmm_vm_alive(const vmm_vm_t *vm);

/** The QEMU process id. */
pid_t vmm_vm_pid(const vmm_vm_t *vm);

/** The VM directory (valid until vmm_vm_free). */
const char *vmm_vm_dir(const vmm_vm_t *vm);

/** Samples the metrics. RB_ERR_STATE when QEMU is not running. */
rb_err_t vmm_vm_metrics(vmm_vm_t *vm, vmm_metrics_t *out);

/** Caps console.log: past the cap, its content moves to console.log.1 and console.log restarts
 *  empty (QEMU appends, so it continues at the new end). Call it periodically, e.g. with metrics.
 */
rb_err_t vmm_vm_console_rotate(vmm_vm_t *vm);

/** Runs one QMP command on a fresh connection (connect, execute, close), bounded by timeout_ms.
 *  reply (may be NULL) as for vmm_qmp_execute. */
rb_err_t vmm_vm_qmp(vmm_vm_t *vm, const char *command, const char *args_json, unsigned timeout_ms,
                    vmm_qmp_msg_t *reply);

/** Frees the handle only; QEMU keeps running (NULL is fine). */
void vmm_vm_free(vmm_vm_t *vm);

/** Removes the VM's files and the directory itself (the workspace disk included). RB_ERR_STATE when
 * a QEMU still runs for dir; RB_OK when dir does not exist. */
rb_err_t vmm_vm_delete_files(const char *dir);

#endif
