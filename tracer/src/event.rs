//! Kernel events as the daemon works with them, decoded from ring-buffer records.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tracer_common::{
    KernelOrigin, SockAddr, SockOpts,
    origin::function_name,
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

impl Origin {
    /// `None` when no kretprobe saw the failure (tracepoint backend, other errors).
    pub fn decode(raw: &KernelOrigin) -> Option<Self> {
        let function = function_name(raw.function)?;
        let dst = socket_addr(&raw.dst).filter(|addr| addr.port() != 0 || !addr.ip().is_unspecified());
        Some(Self {
            function,
            ret: raw.ret,
            state: raw.state,
            reuse: raw.reuse != 0,
            reuseport: raw.reuseport != 0,
            mark: raw.mark,
            src: socket_addr(&raw.src),
            dst,
        })
    }
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
    fn origin_names_its_function_and_drops_an_unset_peer() {
        let raw = KernelOrigin {
            function: tracer_common::origin::FN_INET_CSK_GET_PORT,
            ret: 1,
            state: 7,
            reuse: 1,
            reuseport: 0,
            _pad: 0,
            mark: 0x0b00,
            src: raw_sockaddr("127.0.0.19:0".parse().unwrap()),
            dst: raw_sockaddr("0.0.0.0:0".parse().unwrap()),
        };
        let origin = Origin::decode(&raw).unwrap();
        assert_eq!(origin.function, "inet_csk_get_port");
        assert_eq!(
            (origin.ret, origin.state, origin.reuse, origin.reuseport, origin.mark),
            (1, 7, true, false, 0x0b00)
        );
        assert_eq!(origin.src, Some("127.0.0.19:0".parse().unwrap()));
        assert_eq!(origin.dst, None);
        assert_eq!(Origin::decode(&KernelOrigin::default()), None, "tracepoint backend");
    }

    #[test]
    fn addresses_round_trip() {
        for s in ["10.0.1.7:40312", "[::1]:443", "[fe80::1%2]:80", "0.0.0.0:0"] {
            let addr: SocketAddr = s.parse().unwrap();
            assert_eq!(socket_addr(&raw_sockaddr(addr)), Some(addr), "{s}");
        }
        assert_eq!(socket_addr(&SockAddr::default()), None);
    }
}
