//! Socket addresses as the kernel programs fill them (`tracer_common::SockAddr`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tracer_common::{
    SockAddr,
    sockaddr::{AF_INET, AF_INET6},
};

/// `None` for an address the kernel programs did not fill (family 0).
pub(crate) fn socket_addr(raw: &SockAddr) -> Option<SocketAddr> {
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
#[cfg(test)]
pub(crate) fn raw_sockaddr(addr: SocketAddr) -> SockAddr {
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
