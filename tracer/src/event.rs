//! Kernel events as the daemon works with them, decoded from ring-buffer records.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tracer_common::{
    SockAddr, SockOpts,
    sockaddr::{AF_INET, AF_INET6},
};

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
        value: u32,
        ret: i32,
        opts: SockOpts,
    },
    Bind {
        fd: i32,
        addr: Option<SocketAddr>,
        opts: SockOpts,
    },
    /// A connect() return. `src` is the tuple the kernel tried, when it got that far.
    Connect {
        fd: i32,
        dst: Option<SocketAddr>,
        src: Option<SocketAddr>,
        opts: SockOpts,
        sk: u64,
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
        }
    }
}

/// `None` for an address the kernel programs did not fill (family 0).
pub fn socket_addr(raw: &SockAddr) -> Option<SocketAddr> {
    match raw.family {
        AF_INET => {
            let ip = Ipv4Addr::new(raw.addr[0], raw.addr[1], raw.addr[2], raw.addr[3]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, raw.port)))
        }
        AF_INET6 => {
            let ip = Ipv6Addr::from(raw.addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, raw.port, 0, raw.scope_id)))
        }
        _ => None,
    }
}

/// The inverse of [`socket_addr`], for building synthetic records in tests.
pub fn raw_sockaddr(addr: SocketAddr) -> SockAddr {
    let mut raw = SockAddr { port: addr.port(), ..Default::default() };
    match addr {
        SocketAddr::V4(a) => {
            raw.family = AF_INET;
            raw.addr[..4].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            raw.family = AF_INET6;
            raw.addr = a.ip().octets();
            raw.scope_id = a.scope_id();
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for s in ["10.0.1.7:40312", "[::1]:443", "[fe80::1%2]:80", "0.0.0.0:0"] {
            let addr: SocketAddr = s.parse().unwrap();
            assert_eq!(socket_addr(&raw_sockaddr(addr)), Some(addr), "{s}");
        }
        assert_eq!(socket_addr(&SockAddr::default()), None);
    }
}
