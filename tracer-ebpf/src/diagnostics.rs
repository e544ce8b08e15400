//! Kernel-side diagnostics through aya-log: lines the daemon prints in its own log
//! (tracer/src/kernel/kernel_log.rs).
//!
//! Only rare branches log: each line is a ring-buffer record that wakes the daemon's log
//! reader, which would double the cost of a traced syscall on a hot path
//! (docs/toolchain.md). The logging functions are not inlined, so each call site costs a
//! call instruction rather than a copy of the formatting code, and they format constants
//! only, so they call nothing themselves (stack, see `first_loss_warnings`). Which levels log is decided at
//! load time (`AYA_LOG_LEVEL`, docs/design.md "Kernel-side diagnostics").

use aya_log_ebpf::{debug, warn};
use tracer_common::Loss;

/// The `log` target of every line, so `RUST_LOG=sockerr::kernel=debug` names them alone.
/// The daemon reads the same constant to set the load-time level.
const TARGET: &str = tracer_common::names::KERNEL_LOG_TARGET;

/// One warning function per loss reason, and [`first_loss`] choosing among them.
///
/// Each function formats only constants: a short string whose length is known at compile
/// time is copied with plain stores, while one chosen at run time (`reason.name()`), or a
/// literal piece longer than about 64 bytes, costs a call to `memcpy`: a second stack
/// frame under the logging one. `kfree_skb` uses 464
/// of the 512 stack bytes the verifier allows for a program and the functions it calls
/// together (rounded up to 32 per frame on 6.1 and 6.12): one more frame fits, two do not.
macro_rules! first_loss_warnings {
    ($($reason:ident => $function:ident),* $(,)?) => {
        /// `reason` was counted for the first time on this CPU (its per-CPU counter went
        /// 0 -> 1). The callers pass a constant reason: the match is resolved at compile
        /// time and leaves one call.
        #[inline(always)]
        pub fn first_loss(reason: Loss) {
            match reason {
                $(Loss::$reason => $function(),)*
                // Counted by the daemon from the kernel's recursion misses of the programs,
                // and from the programs' TRACKED insert and remove counts: never by a program.
                Loss::ProgramSkipped | Loss::OptionsEvicted => {}
            }
        }

        $(
            #[inline(never)]
            fn $function() {
                warn!(
                    &(),
                    target: TARGET,
                    "kernel programs lost data: first {} on this CPU (further ones are only counted)",
                    Loss::$reason.name()
                );
            }
        )*
    };
}

first_loss_warnings! {
    RingFull => first_ring_full,
    AsyncHalfOverwritten => first_async_half_overwritten,
    AsyncHalfTooOld => first_async_half_too_old,
    UserReadFault => first_user_read_fault,
    FilterMapFull => first_filter_map_full,
    OwnerTableFull => first_owner_table_full,
    DropTableFull => first_drop_table_full,
    TaskStorageUnavailable => first_task_storage_unavailable,
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

/// Which field a failed read at a BTF offset was for.
#[derive(Clone, Copy)]
pub enum BtfField {
    SockFamily,
    SkbSock,
    TaskFiles,
}

/// A read of a kernel structure at an offset BTF gave the daemon failed where the pointer
/// is known good: the offset is likely wrong for this kernel, and the records built from
/// it lack that field. One constant-only function per field (see `first_loss_warnings`).
#[inline(always)]
pub fn btf_read_failed(field: BtfField) {
    match field {
        BtfField::SockFamily => sock_family_read_failed(),
        BtfField::SkbSock => skb_sock_read_failed(),
        BtfField::TaskFiles => task_files_read_failed(),
    }
}

#[inline(never)]
fn sock_family_read_failed() {
    warn!(
        &(),
        target: TARGET,
        "kernel read of {} at its BTF offset failed, offset wrong for this kernel? {}",
        "struct sock_common.skc_family",
        "Records lack the socket's addresses."
    );
}

#[inline(never)]
fn skb_sock_read_failed() {
    warn!(
        &(),
        target: TARGET,
        "kernel read of {} at its BTF offset failed, offset wrong for this kernel? {}",
        "struct sk_buff.sk",
        "Drops of sent packets are not attributed."
    );
}

#[inline(never)]
fn task_files_read_failed() {
    warn!(
        &(),
        target: TARGET,
        "kernel read of {} at its BTF offset failed, offset wrong for this kernel? {}",
        "struct task_struct.files",
        "Accepted sockets are not recorded: their resets lack an owner."
    );
}
