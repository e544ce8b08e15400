//! The one event model every sink renders: a text line and a JSON object are two
//! views of a [`Record`], never two code paths.

use std::net::SocketAddr;

use tracer_common::SockOpts;

pub use crate::backend::Backend;
use crate::reset::ResetDetails;
pub use crate::tcp_state::TcpState;

/// What happened, as the JSON `event` field names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventName {
    ConnectError,
    BindError,
    Sockopt,
    Connect,
    Bind,
    /// This host sent a TCP RST.
    RstSent,
    /// A TCP RST arrived.
    RstReceived,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectError => "connect_error",
            Self::BindError => "bind_error",
            Self::Sockopt => "sockopt",
            Self::Connect => "connect",
            Self::Bind => "bind",
            Self::RstSent => "rst_sent",
            Self::RstReceived => "rst_received",
        }
    }

    /// Failures of a call, and broken connections: what text output prints by default.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::ConnectError | Self::BindError | Self::RstSent | Self::RstReceived)
    }
}

/// Why a call failed, as far as sockerr could establish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// connect(): a live socket already holds the same source and destination.
    TupleInUse,
    /// bind(): a live socket already holds the local address and port.
    PortInUse,
    /// connect() without a source port: every port of ip_local_port_range to that
    /// destination is taken.
    EphemeralPortsExhausted,
    /// bind() to an address the network namespace lacks, without IP_TRANSPARENT or
    /// IP_FREEBIND.
    AddressNotLocal,
    /// The peer answered the SYN with RST.
    ConnectionRefused,
    /// No answer to the SYN (or to retransmissions).
    TimedOut,
    /// Routing or ICMP said the destination cannot be reached.
    Unreachable,
    /// Looked, found no explanation.
    Unknown,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TupleInUse => "tuple_in_use",
            Self::PortInUse => "port_in_use",
            Self::EphemeralPortsExhausted => "ephemeral_ports_exhausted",
            Self::AddressNotLocal => "address_not_local",
            Self::ConnectionRefused => "connection_refused",
            Self::TimedOut => "timed_out",
            Self::Unreachable => "unreachable",
            Self::Unknown => "unknown",
        }
    }
}

/// A live socket that holds the address a failed call wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub state: TcpState,
    pub src: SocketAddr,
    pub dst: Option<SocketAddr>,
    /// Socket inode (0 for TIME_WAIT: no file, no owner).
    pub inode: u64,
    /// Owner, when an fd of a process refers to the inode.
    pub owner: Option<HolderOwner>,
    /// Milliseconds left on the socket's timer (TIME_WAIT: until it disappears).
    pub timer_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderOwner {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
}

/// Ephemeral-port accounting for a connect() without a source port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortUsage {
    /// ip_local_port_range of the namespace, inclusive.
    pub range: (u16, u16),
    /// Sockets to the same destination holding a port inside the range.
    pub in_use: u32,
}

impl PortUsage {
    pub fn range_size(&self) -> u32 {
        u32::from(self.range.1.saturating_sub(self.range.0)) + 1
    }
}

/// A setsockopt() call, for `sockopt` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockoptCall {
    /// `tracer_common::options::FLAG_*` of the option.
    pub flag: u32,
    /// `None`: the caller's buffer could not be read, so the value is unknown.
    pub value: Option<u32>,
}

/// Who a process is in Kubernetes terms, as far as its cgroup and the API tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// From the API server (`--kubernetes`), when reachable.
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub container: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Wall-clock time of the kernel event.
    pub time: jiff::Timestamp,
    pub event: EventName,
    pub pid: u32,
    pub tid: u32,
    /// Process name (the thread-group leader's comm), or the thread name when the
    /// process is gone.
    pub comm: String,
    /// Name of the thread that made the call.
    pub thread: String,
    pub fd: i32,
    /// Positive errno for failures (and a failed setsockopt), else `None`.
    pub errno: Option<i32>,
    /// True when the error arrived after connect() returned (non-blocking sockets).
    pub asynchronous: bool,
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    /// Options of the socket at the time of the call.
    pub sockopts: SockOpts,
    /// For `sockopt` records: the option this call set.
    pub sockopt: Option<SockoptCall>,
    pub cause: Option<Cause>,
    /// The live sockets holding what the call wanted (first is the best match).
    pub holders: Vec<Holder>,
    pub ports: Option<PortUsage>,
    /// Why the cause is `unknown` or why a holder could not be named.
    pub note: Option<String>,
    /// Network namespace inode of the process.
    pub netns: Option<u64>,
    pub cgroup_id: u64,
    /// Kubernetes attribution; `None` for processes outside pods (or before it is known).
    pub pod: Option<PodIdentity>,
    /// The kernel function that refused the call (kprobe backend), e.g. `__inet_hash_connect`.
    pub kernel_fn: Option<&'static str>,
    /// The hooks that produced the record.
    pub backend: Backend,
    /// How many identical records this one stands for (text output folds repeats).
    pub count: u32,
    /// `rst_sent` / `rst_received`: the reset's details.
    pub reset: Option<Box<ResetDetails>>,
}
