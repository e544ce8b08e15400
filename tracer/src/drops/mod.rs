//! `socket_drop`: packets the kernel dropped on sockets of traced processes, with the
//! kernel's reason, folded per (socket, reason) and interval.
//!
//! The kernel adds the drops up (tracer-ebpf/src/kfree_skb.rs); `kernel::drop_totals` reads the
//! totals once a second and [`DropFold`] turns what grew into [`SocketDrop`]s. No drop
//! of an untraced process's socket is ever counted, and no record is made per packet.

mod fold;

use std::{net::SocketAddr, time::Duration};

pub use self::fold::DropFold;

/// The drops of one traced socket for one reason in one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct SocketDrop {
    pub time: jiff::Timestamp,
    pub pid: u32,
    pub tid: u32,
    /// Thread name when the socket was first seen dropping.
    pub comm: String,
    pub fd: i32,
    /// The socket is a listener (else a connection the process made or accepted).
    pub listener: bool,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// `enum skb_drop_reason` value of this kernel.
    pub reason_code: u32,
    /// Its name (`SOCKET_FILTER`, `TCP_LISTEN_OVERFLOW`, ...), from this kernel's format.
    pub reason: Option<String>,
    pub dropped: u64,
    pub interval: Duration,
    pub cgroup_id: u64,
    /// Filled by the run loop (the kernel's total carries the pid only).
    pub pod: Option<crate::record::PodIdentity>,
}
