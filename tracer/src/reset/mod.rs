//! TCP resets: the kernel's view of one ([`ResetSeen`], decoded from the ring), and
//! what a record says about it ([`ResetDetails`]): direction, owner, kernel reason, the
//! socket's last error, and with `--http-peek` the exchange before it and its HTTP
//! anomalies.

mod details;

use std::net::SocketAddr;

pub use details::{DataDirection, FoundAnomaly, ResetDetails, details};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetDirection {
    Sent,
    Received,
}

/// How the process behind a reset was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetOwner {
    /// The socket was recorded when the process connected or accepted it.
    Socket,
    /// The process sent it inside its close() of the socket.
    Close,
    /// No traced process owns the socket, or the kernel had no socket.
    Kernel,
}

impl ResetOwner {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Close => "close",
            Self::Kernel => "kernel",
        }
    }
}

/// One socket's exchange as `--http-peek` kept it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The reset's own socket, or the one its process received data on last.
    pub own: bool,
    pub fd: i32,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub sent: Vec<u8>,
    pub sent_total: u64,
    pub received: Vec<u8>,
    pub received_total: u64,
    /// CLOCK_MONOTONIC of the last data received.
    pub received_ns: u64,
}

/// A reset as the kernel programs reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetSeen {
    pub direction: ResetDirection,
    pub owner: ResetOwner,
    /// The owner's fd (-1 for the kernel).
    pub fd: i32,
    /// The kernel had a socket (`false`: an RST answering a segment for no socket).
    pub has_socket: bool,
    /// The kernel's `struct sock` address (0: none): tells the socket an fd names now
    /// from the one it named before.
    pub sk: u64,
    pub state: Option<crate::tcp_state::TcpState>,
    /// `enum sk_rst_reason`, when the kernel has reasons.
    pub reason: Option<u32>,
    /// Not an answer to an incoming segment (tcp_send_active_reset()).
    pub active: bool,
    pub cookie: Option<u64>,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// Options the owner set on the socket, as the kernel programs recorded them when it
    /// connected, accepted or closed it (empty when unattributed or none were set).
    pub opts: tracer_common::SockOpts,
    pub exchanges: Vec<Exchange>,
}
