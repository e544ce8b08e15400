//! `listen_overflow`: handshakes a traced process's listener dropped, attributed to it.
//!
//! The kernel program (tracer-ebpf/src/listen.rs) names each listener its owner creates
//! ([`crate::event::Listening`]); the run loop hands them to a [`ListenWatch`] and, once a second,
//! [`sample`] reads each watched listener's own drop counter and queue with sock_diag
//! inside its network namespace. A rise of the counter is one [`ListenOverflow`]: the
//! drops of one listener in one interval, folded by construction.
//!
//! Why a counter and not a tracepoint: on 6.1, 6.12 and 6.18 a SYN that meets a full
//! accept queue is dropped in tcp_conn_request() (net/ipv4/tcp_input.c) after
//! `LINUX_MIB_LISTENOVERFLOWS` and tcp_listendrop() with no tracepoint, and the skb is
//! then consumed, not freed with a reason; `skb:kfree_skb` with `TCP_LISTEN_OVERFLOW`
//! only shows the rarer overflow at the final ACK. tcp_listendrop() bumps the listener's
//! `sk_drops` on every kernel, which sock_diag reports as SK_MEMINFO_DROPS.

mod sample;
mod watch;
mod watcher;

use std::{net::SocketAddr, time::Duration};

pub use self::{
    sample::{sample, socket_inode},
    watch::{ListenWatch, Target, Unwatched, Watched},
    watcher::Watcher,
};
use crate::record::PodIdentity;

/// Who owns a watched listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerOwner {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub fd: i32,
    pub cgroup_id: u64,
    /// Inode of the owner's network namespace, when it could be read.
    pub netns: Option<u64>,
    pub pod: Option<PodIdentity>,
}

/// Handshakes one listener dropped in one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenOverflow {
    /// When the drops were seen (the sample that found them).
    pub time: jiff::Timestamp,
    pub owner: ListenerOwner,
    pub local: SocketAddr,
    /// Connections waiting for accept() at the sample.
    pub queued: u32,
    /// The backlog in force at the sample.
    pub backlog: u32,
    /// Handshake segments discarded since the previous sample (the rise of the listener's sk_drops).
    pub dropped: u64,
    /// Since the previous sample (or the listen() call).
    pub interval: Duration,
    /// The listener's socket inode.
    pub inode: u64,
}
