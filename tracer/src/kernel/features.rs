//! What the running kernel offers beyond tracepoints, read from sysfs.

use std::path::Path;

use super::{sock_offsets::VMLINUX_BTF, tracefs::kernel_release};
use crate::backend::KernelFeatures;

/// aya attaches kprobes through the kprobe PMU (perf_event_open), which exists when the
/// kernel has CONFIG_KPROBES (and perf events); without it no kprobe can be created.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

pub fn detect() -> KernelFeatures {
    KernelFeatures {
        release: kernel_release(),
        kprobes: Path::new(KPROBE_PMU).exists(),
        btf: Path::new(VMLINUX_BTF).exists(),
    }
}
