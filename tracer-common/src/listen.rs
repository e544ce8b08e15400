//! Listening sockets of traced processes: where a `listen_overflow` is attributed.
//!
//! The kernel drops a handshake of a full listener in softirq, where no task of the
//! listener's process runs, and on every supported kernel the SYN-time drop
//! (tcp_conn_request(), net/ipv4/tcp_input.c) fires no tracepoint at all. So the owner
//! is learned where it is certain: inside the traced process's listen(), when the
//! socket moves CLOSE -> LISTEN. The daemon then watches that listener's own drop
//! counter (see the tracer's `listen` module).

use crate::SockAddr;

/// Payload of [`crate::kind::LISTENING`]: a traced task's listen() moved a TCP socket
/// to LISTEN. The header names the task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenEvent {
    /// The fd the task passed to listen().
    pub fd: i32,
    /// The backlog the task asked for (the kernel caps it at net.core.somaxconn).
    pub backlog: u32,
    /// Kernel address of the `struct sock` (identity only).
    pub sk: u64,
    pub local: SockAddr,
}

const _: () = assert!(size_of::<ListenEvent>() == 40);

/// Offsets of `syscalls:sys_enter_listen`'s arguments, from tracefs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenOffsets {
    pub fd: u32,
    pub backlog: u32,
}

const _: () = assert!(size_of::<ListenOffsets>() == 8);
