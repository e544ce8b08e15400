//! Runner <-> actor messages: one JSON object per line, one reply per request.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Options the scenarios set, with the values sockerr's JSON uses for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SockOpt {
    Mark(u32),
    ReuseAddr,
    IpTransparent,
    Ipv6Transparent,
}

impl SockOpt {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mark(_) => "SO_MARK",
            Self::ReuseAddr => "SO_REUSEADDR",
            Self::IpTransparent => "IP_TRANSPARENT",
            Self::Ipv6Transparent => "IPV6_TRANSPARENT",
        }
    }

    /// As docs/design.md renders option values: SO_MARK in hex, booleans as 1.
    pub fn json_value(self) -> serde_json::Value {
        match self {
            Self::Mark(mark) => serde_json::Value::String(format!("{mark:#010x}")),
            Self::ReuseAddr | Self::IpTransparent | Self::Ipv6Transparent => serde_json::Value::from(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// socket(AF_INET[6], SOCK_STREAM [| SOCK_NONBLOCK], IPPROTO_TCP)
    Socket {
        ipv6: bool,
        nonblocking: bool,
    },
    SetOpt {
        fd: i32,
        opt: SockOpt,
    },
    Bind {
        fd: i32,
        addr: SocketAddr,
    },
    Listen {
        fd: i32,
        backlog: i32,
    },
    Connect {
        fd: i32,
        addr: SocketAddr,
    },
    /// Waits (bounded) until a non-blocking connect completes, then reads SO_ERROR.
    AwaitConnect {
        fd: i32,
        timeout_ms: u64,
    },
    /// Waits (bounded) for a connection, then accept(). `anonymous`: accept(fd, NULL,
    /// NULL), as servers that do not ask for the peer's address do.
    Accept {
        fd: i32,
        timeout_ms: u64,
        #[serde(default)]
        anonymous: bool,
    },
    /// write() of the whole text (bounded retries on short writes).
    Send {
        fd: i32,
        data: String,
    },
    /// read()s until the data received contains `until` (or the peer closed, or an error,
    /// or `max` bytes), within the timeout.
    Recv {
        fd: i32,
        until: String,
        max: usize,
        timeout_ms: u64,
    },
    /// SO_LINGER {on, 0}: close() then resets the connection.
    LingerZero {
        fd: i32,
    },
    /// Reads until the peer's FIN (bounded), discarding data.
    AwaitEof {
        fd: i32,
        timeout_ms: u64,
    },
    /// getsockname()
    LocalAddr {
        fd: i32,
    },
    Close {
        fd: i32,
    },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Socket { .. } => "socket",
            Self::SetOpt { .. } => "setsockopt",
            Self::Bind { .. } => "bind",
            Self::Listen { .. } => "listen",
            Self::Connect { .. } => "connect",
            Self::AwaitConnect { .. } => "await-connect",
            Self::Accept { .. } => "accept",
            Self::Send { .. } => "send",
            Self::Recv { .. } => "recv",
            Self::LingerZero { .. } => "setsockopt(SO_LINGER)",
            Self::AwaitEof { .. } => "await-eof",
            Self::LocalAddr { .. } => "getsockname",
            Self::Close { .. } => "close",
        }
    }

    /// How long the actor may legitimately block on this request.
    pub fn blocks_for_ms(&self) -> u64 {
        match *self {
            Self::AwaitConnect { timeout_ms, .. }
            | Self::Accept { timeout_ms, .. }
            | Self::Recv { timeout_ms, .. }
            | Self::AwaitEof { timeout_ms, .. } => timeout_ms,
            _ => 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// First line of every actor, once its name is set.
    Hello {
        pid: u32,
        comm: String,
        netns: u64,
    },
    /// The call returned 0.
    Done,
    /// socket(): the new fd and its socket inode.
    Socket {
        fd: i32,
        inode: u64,
    },
    /// accept(): the new fd, its inode and both ends.
    Accepted {
        fd: i32,
        inode: u64,
        local: SocketAddr,
        peer: SocketAddr,
    },
    Addr {
        addr: SocketAddr,
    },
    /// The connect completed; `errno` is SO_ERROR (None: connected).
    Completed {
        errno: Option<i32>,
    },
    /// The call failed with this errno.
    Errno {
        errno: i32,
    },
    /// recv: what arrived (lossy UTF-8), and the error that ended the reading, if any.
    Received {
        data: String,
        errno: Option<i32>,
    },
    /// A bounded wait expired.
    TimedOut,
    /// The actor could not do what was asked (bad fd number, unsupported address...).
    Refused {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_render_like_sockerr() {
        assert_eq!(SockOpt::Mark(0x3203_0b00).json_value(), serde_json::json!("0x32030b00"));
        assert_eq!(SockOpt::Mark(0x100).json_value(), serde_json::json!("0x00000100"));
        assert_eq!(SockOpt::ReuseAddr.json_value(), serde_json::json!(1));
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Socket { ipv6: true, nonblocking: true },
            Request::SetOpt { fd: 3, opt: SockOpt::Mark(7) },
            Request::Bind { fd: 3, addr: "[::1]:40312".parse().unwrap() },
            Request::AwaitConnect { fd: 3, timeout_ms: 10 },
        ];
        for request in requests {
            let line = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request, "{line}");
        }
        assert_eq!(
            serde_json::to_string(&Reply::Errno { errno: 99 }).unwrap(),
            r#"{"reply":"errno","errno":99}"#
        );
    }
}
