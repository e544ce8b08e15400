//! Packets the kernel dropped on sockets of traced processes, folded in the kernel.
//!
//! `skb:kfree_skb` fires once per dropped packet, in softirq, for every socket of the
//! node: a record per packet would cost a ring-buffer write per drop and flood the
//! reader. The program adds each drop of a traced socket to a running total per
//! (socket, reason) in `SOCKET_DROPS`; the daemon reads the totals once a second and
//! reports what grew.

use crate::SockAddr;

/// Key of `SOCKET_DROPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// Kernel address of the `struct sock` (identity only).
    pub sk: u64,
    /// `enum skb_drop_reason` value of this kernel (names from the tracepoint's format).
    pub reason: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<DropKey>() == 16);

/// [`DropTotal::role`]: a socket a traced process connected or accepted.
pub const DROP_ROLE_CONNECTION: u32 = 1;
/// A traced process's listening socket.
pub const DROP_ROLE_LISTENER: u32 = 2;

/// Value of `SOCKET_DROPS`: the running total (only ever grows; the daemon reports
/// differences) and the socket's owner when it was first seen dropping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropTotal {
    pub total: u64,
    /// `bpf_ktime_get_ns()` of the first and the latest drop.
    pub first_ns: u64,
    pub last_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// `DROP_ROLE_*`.
    pub role: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    pub local: SockAddr,
    /// Zero for a listener.
    pub peer: SockAddr,
}

const _: () = assert!(size_of::<DropTotal>() == 112);

/// Where the program reads `skb:kfree_skb` and `struct sk_buff`, from tracefs and BTF.
/// Absent fields are [`crate::reset::OFFSET_ABSENT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropOffsets {
    pub skbaddr: u32,
    /// `rx_sk` (Linux 6.11+): the receiving socket, which the skb does not carry yet.
    pub rx_sk: u32,
    pub reason: u32,
    /// `struct sk_buff.sk` (BTF): the owning socket of packets being sent.
    pub skb_sk: u32,
}

const _: () = assert!(size_of::<DropOffsets>() == 16);
