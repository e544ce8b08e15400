//! Kernel-side diagnostics through aya-log: lines the daemon prints in its own log
//! (tracer/src/kernel/kernel_log.rs).
//!
//! Only rare branches log: each line is a ring-buffer record that wakes the daemon's log
//! reader, which would double the cost of a traced syscall on a hot path
//! (docs/toolchain.md). The functions are not inlined, so each call site costs a call
//! instruction rather than a copy of the formatting code. Which levels log is decided at
//! load time (`AYA_LOG_LEVEL`, docs/design.md "Kernel-side diagnostics").

use aya_log_ebpf::{debug, warn};
use tracer_common::Loss;

/// The `log` target of every line, so `RUST_LOG=sockerr::kernel=debug` names them alone.
/// The daemon reads the same constant to set the load-time level.
const TARGET: &str = tracer_common::names::KERNEL_LOG_TARGET;

/// `reason` was counted for the first time on this CPU (its per-CPU counter went 0 -> 1).
#[inline(never)]
pub fn first_loss(reason: Loss) {
    warn!(
        &(),
        target: TARGET,
        "kernel programs lost data: first {} on this CPU (further ones are only counted)",
        reason.name()
    );
}

/// A connect()/bind()/accept() address that is neither a complete IPv4/IPv6 address
/// nor of a family that is routinely skipped (AF_UNSPEC, AF_UNIX, AF_NETLINK).
#[inline(never)]
pub fn unexpected_family(family: u16, len: u64) {
    debug!(
        &(),
        target: TARGET,
        "socket address of family {} ({} bytes) not traced: not a complete IPv4/IPv6 address",
        family,
        len
    );
}

/// A read of a kernel structure at an offset BTF gave the daemon failed: the offset is
/// likely wrong for this kernel, and the records built from it lack that field.
#[inline(never)]
pub fn btf_read_failed(field: &'static str) {
    warn!(
        &(),
        target: TARGET,
        "kernel read of {} at its BTF offset failed: records lack that field (offset wrong for this kernel?)",
        field
    );
}
