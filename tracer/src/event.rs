//! Kernel events as the daemon works with them (the model; `decode` makes them from
//! ring-buffer records).

use std::net::SocketAddr;

use tracer_common::SockOpts;

/// Who did it and when: the ring-buffer header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// tgid: what users call the pid.
    pub pid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
    /// Thread name (Envoy's workers are `wrk:worker_N`).
    pub thread: String,
    /// Positive errno, 0 for success.
    pub errno: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Sockopt {
        fd: i32,
        level: i32,
        optname: i32,
        optlen: i32,
        /// `None`: the caller's buffer could not be read (not the value 0).
        value: Option<u32>,
        ret: i32,
        opts: SockOpts,
    },
    Bind {
        fd: i32,
        addr: Option<SocketAddr>,
        opts: SockOpts,
        /// Where the kernel refused the call (kprobe backend).
        origin: Option<Origin>,
    },
    /// A connect() return. `src` is the tuple the kernel tried, when it got that far.
    Connect {
        fd: i32,
        dst: Option<SocketAddr>,
        src: Option<SocketAddr>,
        opts: SockOpts,
        sk: u64,
        /// Where the kernel refused the call (kprobe backend).
        origin: Option<Origin>,
    },
    /// A TCP connect that failed after connect() returned; errno in the header.
    ConnectAsyncError {
        fd: i32,
        src: Option<SocketAddr>,
        dst: Option<SocketAddr>,
        opts: SockOpts,
        sk: u64,
    },
    Established {
        fd: i32,
        src: Option<SocketAddr>,
        dst: Option<SocketAddr>,
        opts: SockOpts,
        sk: u64,
    },
    /// The fd stopped naming the socket sockerr knew (`reused`: without close()).
    Close {
        fd: i32,
        reused: bool,
    },
    /// A TCP RST sent or received; the header names its owner (pid 0: none).
    Reset(Box<crate::reset::ResetSeen>),
    /// A traced task's listen() made a listening socket (the run loop's listener watch
    /// takes it; it makes no record of its own).
    Listening(Listening),
}

/// A listener a traced task created, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    pub fd: i32,
    /// The backlog listen() was given (the kernel caps it at net.core.somaxconn).
    pub backlog: u32,
    pub sk: u64,
    pub local: Option<SocketAddr>,
}

/// The kernel function that refused a bind()/connect(), and its `struct sock` then, as
/// the kprobe backend's kretprobes read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub function: &'static str,
    /// The function's return value.
    pub ret: i32,
    /// `sk_state` (TCP state number).
    pub state: u8,
    /// `sk_reuse` != 0: SO_REUSEADDR is on.
    pub reuse: bool,
    pub reuseport: bool,
    /// `sk_mark`.
    pub mark: u32,
    /// Local address and port of the socket (port 0 before one was chosen).
    pub src: Option<SocketAddr>,
    /// Remote address and port (`None` before connect() set them).
    pub dst: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    pub header: Header,
    pub payload: Payload,
}

impl KernelEvent {
    pub fn fd(&self) -> i32 {
        match self.payload {
            Payload::Sockopt { fd, .. }
            | Payload::Bind { fd, .. }
            | Payload::Connect { fd, .. }
            | Payload::ConnectAsyncError { fd, .. }
            | Payload::Established { fd, .. }
            | Payload::Close { fd, .. } => fd,
            Payload::Reset(ref seen) => seen.fd,
            Payload::Listening(ref listening) => listening.fd,
        }
    }
}
