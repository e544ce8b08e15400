//! The reset and `--http-peek` programs on the loading side: which tracepoints they
//! attach to, and what to do when this kernel lacks the reset tracepoints.

use std::path::Path;

#[cfg(test)]
use super::reset_offsets::PEEK_SYSCALLS;
use super::reset_offsets::{self, ResetOffsetsError, ResetSetup};
use super::tracefs::TracefsError;

/// `--http-peek` keeps this many sockets' exchanges (about 4 KiB each, LRU).
pub const PEEK_SOCKETS: u32 = 1024;

/// (program, category, tracepoint), exits before entries as in the loader. Attached
/// after the loader's own list: `sys_exit_new_fd` (fd reuse) must run before
/// `sys_exit_accept` on the same tracepoint, and programs run in attach order.
pub const RESET_ATTACHMENTS: &[(&str, &str, &str)] = &[
    ("tcp_destroy_sock", "tcp", "tcp_destroy_sock"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept4"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("sys_enter_accept", "syscalls", "sys_enter_accept"),
    ("sys_enter_accept", "syscalls", "sys_enter_accept4"),
];

/// The `--http-peek` attachments, exits first: one per syscall in
/// [`PEEK_SYSCALLS`], with the entry program for the way it passes its data.
pub const PEEK_ATTACHMENTS: &[(&str, &str, &str)] = &[
    ("peek_exit", "syscalls", "sys_exit_read"),
    ("peek_exit", "syscalls", "sys_exit_write"),
    ("peek_exit", "syscalls", "sys_exit_readv"),
    ("peek_exit", "syscalls", "sys_exit_writev"),
    ("peek_exit", "syscalls", "sys_exit_recvfrom"),
    ("peek_exit", "syscalls", "sys_exit_sendto"),
    ("peek_exit", "syscalls", "sys_exit_recvmsg"),
    ("peek_exit", "syscalls", "sys_exit_sendmsg"),
    ("peek_enter_recv", "syscalls", "sys_enter_read"),
    ("peek_enter_send", "syscalls", "sys_enter_write"),
    ("peek_enter_readv", "syscalls", "sys_enter_readv"),
    ("peek_enter_writev", "syscalls", "sys_enter_writev"),
    ("peek_enter_recv", "syscalls", "sys_enter_recvfrom"),
    ("peek_enter_send", "syscalls", "sys_enter_sendto"),
    ("peek_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("peek_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
];

/// The reset setup, or `None` (with a warning) when this kernel lacks one of the
/// reset tracepoints and `--http-peek` was not asked for: the other events still work.
pub fn prepare(
    tracefs: &Path,
    kernel: &str,
    http_peek: bool,
    sys_exit_ret: u32,
) -> Result<Option<ResetSetup>, ResetOffsetsError> {
    match reset_offsets::discover(tracefs, kernel, http_peek, sys_exit_ret) {
        Ok(setup) => Ok(Some(setup)),
        Err(ResetOffsetsError::Tracefs(missing @ TracefsError::MissingTracepoint { .. })) if !http_peek => {
            tracing::warn!("TCP resets are not traced: {missing}");
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peek_syscall_has_an_entry_and_an_exit() {
        for (name, _) in PEEK_SYSCALLS {
            let exit = format!("sys_exit_{name}");
            let entry = format!("sys_enter_{name}");
            assert!(PEEK_ATTACHMENTS.iter().any(|(p, _, tp)| *p == "peek_exit" && *tp == exit), "{exit}");
            assert!(
                PEEK_ATTACHMENTS.iter().any(|(p, _, tp)| p.starts_with("peek_enter_") && *tp == entry),
                "{entry}"
            );
        }
        assert_eq!(PEEK_ATTACHMENTS.len(), 2 * PEEK_SYSCALLS.len());
        let first_entry = PEEK_ATTACHMENTS.iter().position(|(p, _, _)| *p != "peek_exit").unwrap();
        assert!(PEEK_ATTACHMENTS[first_entry..].iter().all(|(p, _, _)| *p != "peek_exit"), "exits first");
    }
}
