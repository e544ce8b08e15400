//! The reset and `--http-peek` programs on the loading side: which tracepoints they
//! attach to, and what to do when this kernel lacks the reset tracepoints.

use std::{fmt, path::Path};

use tracer_common::{
    ResetOffsets,
    reset::{OFFSET_ABSENT, SEND_LAYOUT_FIELDS},
};

#[cfg(test)]
use super::reset_offsets::PEEK_SYSCALLS;
use super::reset_offsets::{self, ResetOffsetsError, ResetSetup};
use super::tracefs::TracefsError;

/// `--http-peek` keeps this many sockets' exchanges (about 4 KiB each, LRU).
pub const PEEK_SOCKETS: u32 = 1024;
/// `--http-peek` knows this many fds as TCP sockets worth copying (`FD_SOCKS`, LRU:
/// the least recently named is forgotten and no longer copied).
pub const PEEK_FD_SOCKETS: u32 = 65536;

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

/// What this kernel's reset tracepoints cannot show. The extension point for the kprobe
/// backend (issue 4): its programs would build a `reset_report::Seen` (tracer-ebpf) and
/// call `reset_report::report()`, as both tracepoint programs do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetGap {
    /// tcp:tcp_send_reset has no `reason`: `enum sk_rst_reason` appeared in Linux 6.10.
    /// No probe can read a value the kernel does not have; the calling function (a
    /// kprobe's stack) is the nearest substitute.
    NoReason,
    /// Before 6.10 tcp_v4_send_reset()/tcp_v6_send_reset() call the tracepoint only for
    /// full sockets (`if (sk && sk_fullsock(sk))`, net/ipv4/tcp_ipv4.c in 6.1): RSTs that
    /// answer segments for TIME_WAIT, request or no sockets are not seen. Kprobes on those
    /// two functions would see them.
    FullSocketsOnly,
}

impl fmt::Display for ResetGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoReason => f.write_str(
                "tcp:tcp_send_reset has no reason field (Linux 6.10 added it): resets are reported without one",
            ),
            Self::FullSocketsOnly => f.write_str(
                "tcp:tcp_send_reset fires only for full sockets before Linux 6.10: RSTs answering segments \
                 for TIME_WAIT, request or no sockets need kprobes on tcp_v4_send_reset/tcp_v6_send_reset",
            ),
        }
    }
}

/// The gaps of the kernel whose reset tracepoints have these offsets.
pub fn gaps(offsets: &ResetOffsets) -> Vec<ResetGap> {
    let mut gaps = Vec::new();
    if offsets.send_reason == OFFSET_ABSENT {
        gaps.push(ResetGap::NoReason);
    }
    // The field layout is the pre-6.10 event class, which guards the call site.
    if offsets.send_layout == SEND_LAYOUT_FIELDS {
        gaps.push(ResetGap::FullSocketsOnly);
    }
    gaps
}

#[cfg(test)]
mod tests {
    use tracer_common::reset::SEND_LAYOUT_SOCKADDR;

    use super::*;

    #[test]
    fn gaps_of_6_1_and_none_on_6_18() {
        let linux_6_1 = ResetOffsets {
            send_reason: OFFSET_ABSENT,
            send_layout: SEND_LAYOUT_FIELDS,
            ..Default::default()
        };
        assert_eq!(gaps(&linux_6_1), [ResetGap::NoReason, ResetGap::FullSocketsOnly]);
        let linux_6_18 =
            ResetOffsets { send_reason: 28, send_layout: SEND_LAYOUT_SOCKADDR, ..Default::default() };
        assert!(gaps(&linux_6_18).is_empty());
        assert!(ResetGap::FullSocketsOnly.to_string().contains("tcp_v4_send_reset"));
    }

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
