/*
 * vmm/host: facts about the host a VM needs: the TSC frequency (TCG guests hang in TSC calibration
 * without tsc_early_khz), free loopback ports for host forwards, and which accelerator really
 * works.
 *
 * /dev/kvm existing does not mean KVM works: on nested or PVM hosts stock kernels hang or die
 * minutes later. vmm_host_accel_resolve therefore proves KVM with a canary boot (the stage-1 initrd
 * answers `rigbox.canary` with RIGBOX-CANARY-OK and powers off) under a timeout, and caches the
 * verdict in a file so the cost is paid once per host and kernel. The caller keeps the resolved
 * value (no global).
 *
 * Threads: any; calls block for bounded times (the probe up to its timeout).
 */
#ifndef RB_VMM_HOST_H
#define RB_VMM_HOST_H

#include <stdint.h>

#include "common/err.h"
#include "vmm/qemu.h"

#define VMM_HOST_PROBE_TIMEOUT_MS 15000 /* default canary boot budget under KVM */
#define VMM_HOST_PROBE_RAM_MB     128
#define VMM_HOST_CPUINFO_MAX      (256 * 1024) /* bytes of /proc/cpuinfo read */
#define VMM_HOST_CANARY_MARKER    "RIGBOX-CANARY-OK"

/** The host TSC frequency in kHz: /sys/devices/system/cpu/cpu0/tsc_freq_khz, else /proc/cpuinfo's
 *  first "cpu MHz". RB_ERR_NOTFOUND when neither says. */
rb_err_t vmm_host_tsc_khz(unsigned *out);

/** Parses the first "cpu MHz : 2100.000" line of cpuinfo text into kHz (pure). 0, or -1. */
int vmm_host_parse_cpuinfo_khz(const char *text, unsigned *out);

/** A loopback TCP port free right now (bind 127.0.0.1:0, read it, close). Another process may take
 * it before QEMU binds it: callers retry a start that fails on a forward. */
rb_err_t vmm_host_port_alloc(uint16_t *out);

/** A loopback TCP port in [min, max] free right now and not in taken[0..ntaken), tried from a
 *  random one on (bind, close): the same race as vmm_host_port_alloc. RB_ERR_LIMIT when none is. */
rb_err_t vmm_host_port_alloc_range(uint16_t min, uint16_t max, const uint16_t *taken, size_t ntaken,
                                   uint16_t *out);

/** What the accelerator probe boots; pointers borrowed. */
typedef struct st_vmm_probe_t {
    const char *qemu_binary; /* NULL = qemu-system-x86_64 */
    const char *kernel;      /* absolute: PVH vmlinux */
    const char *initrd;      /* absolute: the stage-1 initrd (knows rigbox.canary) */
    const char *work_dir;    /* absolute, for the canary VM's files; removed afterwards */
    const char *cache_file;  /* verdict cache; NULL = do not cache */
    unsigned timeout_ms;     /* 0 = VMM_HOST_PROBE_TIMEOUT_MS */
} vmm_probe_t;

/** Resolves want: KVM and TCG are returned as they are; AUTO gives the cached verdict for this
 * kernel when there is one, TCG when /dev/kvm cannot be opened, else KVM only if a canary boots
 * under KVM within the timeout (the verdict is then cached). Always sets *out; RB_OK unless the
 * probe could not be run at all (then *out is TCG). */
rb_err_t vmm_host_accel_resolve(vmm_accel_t want, const vmm_probe_t *probe, vmm_accel_t *out);

#endif
