//! Which of the dumped sockets hold what a failed call wanted. Pure: the kernel's rules
//! restated on [`DiagSocket`] rows, so they are tested without a kernel.
//!
//! Addresses are compared in canonical form: an IPv6 socket talking to an IPv4 peer
//! shows `::ffff:a.b.c.d` in sock_diag while the failed call may name `a.b.c.d`.

use std::net::{IpAddr, SocketAddr};

use super::sock_diag::{DiagSocket, Transport};
use crate::record::{Holder, TcpState};

/// More holders than this say nothing more to a reader (a busy listener's port is
/// shared by every accepted connection); the rest are counted, not listed.
pub(crate) const MAX_HOLDERS: usize = 16;

// idiag_state numbers, include/net/tcp_states.h.
const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// connect() with an explicit source fails with EADDRNOTAVAIL when a TCP socket already
/// has the same 4-tuple (__inet_check_established in net/ipv4/inet_hashtables.c),
/// TIME_WAIT ones included. Only sockets in the established hash can: a CLOSE socket that
/// still shows a peer (another connect() of the same tuple caught half-way by the dump,
/// or one that just failed) is not there, and naming it would hide the real holder.
pub(crate) fn holds_tuple(socket: &DiagSocket, src: SocketAddr, dst: SocketAddr) -> bool {
    socket.transport == Transport::Tcp
        && !matches!(socket.state, TCP_CLOSE | TCP_LISTEN)
        && same_endpoint(socket.local, src)
        && same_endpoint(socket.remote, dst)
}

/// Whether `socket` keeps a bind() of `wanted` from getting its port, following
/// inet_rcv_saddr_equal in net/ipv4/inet_connection_sock.c:
/// - same address, or a wildcard on either side, conflicts within a family;
/// - an IPv4 address conflicts with an IPv6 socket only through `[::]` or a v4-mapped
///   address, and never with an IPV6_V6ONLY one;
/// - an IPv6 address conflicts with IPv4 sockets only when it is `[::]` (the failing
///   socket's own IPV6_V6ONLY is unknown here: the dual-stack default is assumed).
///
/// SO_REUSEADDR/SO_REUSEPORT may let both coexist; telling that is classify's job.
pub(crate) fn holds_port(socket: &DiagSocket, wanted: SocketAddr) -> bool {
    if wanted.port() == 0 || socket.local.port() != wanted.port() || is_request_socket(socket) {
        return false;
    }
    match (wanted.ip().to_canonical(), socket.local.ip()) {
        (IpAddr::V4(want), IpAddr::V4(have)) => {
            want == have || want.is_unspecified() || have.is_unspecified()
        }
        (IpAddr::V4(want), IpAddr::V6(have)) => {
            !socket.v6_only
                && match have.to_ipv4_mapped() {
                    Some(have) => want == have || want.is_unspecified() || have.is_unspecified(),
                    None => have.is_unspecified(),
                }
        }
        (IpAddr::V6(want), IpAddr::V4(_)) => want.is_unspecified(),
        (IpAddr::V6(want), IpAddr::V6(have)) => {
            want == have || want.is_unspecified() || have.is_unspecified()
        }
    }
}

/// A pending connection (inode 0, SYN_RECV: tcp_req_diag_fill) shares its listener's
/// port without being in the bind table; the listener is the holder to name.
fn is_request_socket(socket: &DiagSocket) -> bool {
    socket.transport == Transport::Tcp && socket.state == TCP_SYN_RECV && socket.inode == 0
}

/// A TCP socket to `dst` whose local port came from (or could have come from) the
/// ephemeral range, from `src_ip` unless that is unspecified.
pub(crate) fn uses_ephemeral_port(
    socket: &DiagSocket,
    src_ip: IpAddr,
    dst: SocketAddr,
    range: (u16, u16),
) -> bool {
    let src_ip = src_ip.to_canonical();
    socket.transport == Transport::Tcp
        && same_endpoint(socket.remote, dst)
        && (range.0..=range.1).contains(&socket.local.port())
        && (src_ip.is_unspecified() || socket.local.ip().to_canonical() == src_ip)
}

/// The holders to report, best first, at most [`MAX_HOLDERS`], and how many were left
/// out. Best: a socket that owns the address outright (listening, bound, UDP) before a
/// connection, TIME_WAIT last (it goes away by itself); within each, an exact address
/// match before a wildcard one.
pub(crate) fn best_holders(mut matched: Vec<DiagSocket>, wanted_ip: IpAddr) -> (Vec<Holder>, usize) {
    let wanted_ip = wanted_ip.to_canonical();
    matched.sort_by_key(|socket| {
        let inexact = socket.local.ip().to_canonical() != wanted_ip;
        let state_rank = match (socket.transport, socket.state) {
            (Transport::Udp, _) | (Transport::Tcp, TCP_LISTEN | TCP_CLOSE) => 0,
            (Transport::Tcp, TCP_TIME_WAIT) => 2,
            (Transport::Tcp, _) => 1,
        };
        (state_rank, inexact)
    });
    let left_out = matched.len().saturating_sub(MAX_HOLDERS);
    let holders = matched.iter().take(MAX_HOLDERS).map(holder).collect();
    (holders, left_out)
}

fn holder(socket: &DiagSocket) -> Holder {
    let connected = socket.remote.port() != 0 || !socket.remote.ip().is_unspecified();
    Holder {
        state: match socket.transport {
            Transport::Tcp => TcpState::from_kernel(socket.state),
            // A UDP socket's state is TCP_CLOSE or TCP_ESTABLISHED only in name.
            Transport::Udp => TcpState::Other(socket.state),
        },
        src: socket.local,
        dst: connected.then_some(socket.remote),
        inode: socket.inode,
        owner: None,
        timer_ms: socket.timer_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(state: u8, local: &str, remote: &str) -> DiagSocket {
        DiagSocket {
            transport: Transport::Tcp,
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            v6_only: false,
            inode: 100,
            timer_ms: None,
        }
    }

    fn udp(local: &str) -> DiagSocket {
        DiagSocket { transport: Transport::Udp, ..tcp(TCP_CLOSE, local, "0.0.0.0:0") }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const ESTABLISHED: u8 = 1;

    #[test]
    fn tuple_matches_only_the_exact_four_tuple() {
        let socket = tcp(ESTABLISHED, "10.0.1.7:40312", "52.216.1.1:443");
        assert!(holds_tuple(&socket, addr("10.0.1.7:40312"), addr("52.216.1.1:443")));
        assert!(!holds_tuple(&socket, addr("10.0.1.7:40313"), addr("52.216.1.1:443")));
        assert!(!holds_tuple(&socket, addr("10.0.1.8:40312"), addr("52.216.1.1:443")));
        assert!(!holds_tuple(&socket, addr("10.0.1.7:40312"), addr("52.216.1.1:80")));
        // The peer's view of the same connection is not a holder of ours.
        assert!(!holds_tuple(&socket, addr("52.216.1.1:443"), addr("10.0.1.7:40312")));
    }

    #[test]
    fn tuple_matches_through_v4_mapped_addresses_both_ways() {
        let mapped = tcp(ESTABLISHED, "[::ffff:10.0.1.7]:40312", "[::ffff:52.216.1.1]:443");
        assert!(holds_tuple(&mapped, addr("10.0.1.7:40312"), addr("52.216.1.1:443")));
        let plain = tcp(ESTABLISHED, "10.0.1.7:40312", "52.216.1.1:443");
        assert!(holds_tuple(&plain, addr("[::ffff:10.0.1.7]:40312"), addr("[::ffff:52.216.1.1]:443")));
    }

    #[test]
    fn tuple_holders_are_tcp_only_and_include_time_wait() {
        let time_wait = tcp(TCP_TIME_WAIT, "127.0.0.1:40000", "127.0.0.1:80");
        assert!(holds_tuple(&time_wait, addr("127.0.0.1:40000"), addr("127.0.0.1:80")));
        let udp = DiagSocket { transport: Transport::Udp, ..time_wait };
        assert!(!holds_tuple(&udp, addr("127.0.0.1:40000"), addr("127.0.0.1:80")));
    }

    #[test]
    fn tuple_holders_exclude_sockets_outside_the_established_hash() {
        // Seen on 6.12 under load: the dump caught another connect() of the same tuple in
        // CLOSE, and it was named before the ESTABLISHED socket that really held it.
        let closed = tcp(TCP_CLOSE, "127.0.0.7:40312", "127.0.0.19:443");
        assert!(!holds_tuple(&closed, addr("127.0.0.7:40312"), addr("127.0.0.19:443")));
        let established = tcp(ESTABLISHED, "127.0.0.7:40312", "127.0.0.19:443");
        assert!(holds_tuple(&established, addr("127.0.0.7:40312"), addr("127.0.0.19:443")));
    }

    #[test]
    fn port_holders_within_ipv4() {
        let listener = tcp(TCP_LISTEN, "127.0.0.1:8080", "0.0.0.0:0");
        assert!(holds_port(&listener, addr("127.0.0.1:8080")));
        assert!(holds_port(&listener, addr("0.0.0.0:8080")), "wildcard bind vs specific holder");
        assert!(!holds_port(&listener, addr("127.0.0.2:8080")), "other specific address");
        assert!(!holds_port(&listener, addr("127.0.0.1:8081")));

        let wildcard = tcp(TCP_LISTEN, "0.0.0.0:8080", "0.0.0.0:0");
        assert!(holds_port(&wildcard, addr("10.1.2.3:8080")), "specific bind vs wildcard holder");
    }

    #[test]
    fn dual_stack_wildcard_holds_the_ipv4_port_unless_v6only() {
        let dual = tcp(TCP_LISTEN, "[::]:8080", "[::]:0");
        assert!(holds_port(&dual, addr("127.0.0.1:8080")));
        assert!(holds_port(&dual, addr("[::1]:8080")));
        let v6_only = DiagSocket { v6_only: true, ..dual };
        assert!(!holds_port(&v6_only, addr("127.0.0.1:8080")));
        assert!(holds_port(&v6_only, addr("[::1]:8080")));
    }

    #[test]
    fn specific_ipv6_address_does_not_hold_ipv4_ports() {
        // Measured on Linux 6.18: 0.0.0.0:P binds next to a dual-stack [::1]:P listener.
        let loopback6 = tcp(TCP_LISTEN, "[::1]:8080", "[::]:0");
        assert!(!holds_port(&loopback6, addr("0.0.0.0:8080")));
        assert!(!holds_port(&loopback6, addr("127.0.0.1:8080")));
    }

    #[test]
    fn v4_mapped_holder_and_v4_mapped_bind_compare_as_ipv4() {
        let mapped = tcp(TCP_LISTEN, "[::ffff:127.0.0.1]:8080", "[::]:0");
        assert!(holds_port(&mapped, addr("127.0.0.1:8080")));
        assert!(!holds_port(&mapped, addr("127.0.0.2:8080")));
        let plain = tcp(TCP_CLOSE, "127.0.0.1:8080", "0.0.0.0:0");
        assert!(holds_port(&plain, addr("[::ffff:127.0.0.1]:8080")));
    }

    #[test]
    fn ipv6_bind_meets_ipv4_sockets_only_as_wildcard() {
        let v4_wildcard = tcp(TCP_LISTEN, "0.0.0.0:8080", "0.0.0.0:0");
        assert!(holds_port(&v4_wildcard, addr("[::]:8080")));
        assert!(!holds_port(&v4_wildcard, addr("[::1]:8080")));
    }

    #[test]
    fn port_holders_include_bound_udp_and_time_wait_but_not_request_sockets() {
        assert!(holds_port(&udp("127.0.0.1:5353"), addr("127.0.0.1:5353")));
        let time_wait = DiagSocket { inode: 0, ..tcp(TCP_TIME_WAIT, "127.0.0.1:8080", "127.0.0.1:5000") };
        assert!(holds_port(&time_wait, addr("127.0.0.1:8080")));
        let request = DiagSocket { inode: 0, ..tcp(TCP_SYN_RECV, "127.0.0.1:8080", "127.0.0.1:5000") };
        assert!(!holds_port(&request, addr("127.0.0.1:8080")));
    }

    #[test]
    fn port_zero_and_portless_sockets_hold_nothing() {
        let unbound = tcp(TCP_CLOSE, "0.0.0.0:0", "0.0.0.0:0");
        assert!(!holds_port(&unbound, addr("0.0.0.0:0")));
        assert!(!holds_port(&unbound, addr("127.0.0.1:8080")));
    }

    #[test]
    fn ephemeral_usage_counts_connections_to_the_destination_inside_the_range() {
        let range = (40000, 40009);
        let dst = addr("127.0.0.1:80");
        let sockets = [
            tcp(ESTABLISHED, "127.0.0.1:40000", "127.0.0.1:80"),
            tcp(TCP_TIME_WAIT, "127.0.0.1:40009", "127.0.0.1:80"),
            tcp(ESTABLISHED, "127.0.0.2:40002", "127.0.0.1:80"),
            tcp(ESTABLISHED, "[::ffff:127.0.0.1]:40004", "[::ffff:127.0.0.1]:80"),
            tcp(ESTABLISHED, "127.0.0.1:39999", "127.0.0.1:80"), // below the range
            tcp(ESTABLISHED, "127.0.0.1:40001", "127.0.0.1:81"), // other destination
            tcp(ESTABLISHED, "127.0.0.1:80", "127.0.0.1:40003"), // the server side
            udp("127.0.0.1:40005"),
        ];
        let count = |src: &str| {
            let src: IpAddr = src.parse().unwrap();
            sockets.iter().filter(|s| uses_ephemeral_port(s, src, dst, range)).count()
        };
        assert_eq!(count("0.0.0.0"), 4);
        assert_eq!(count("::"), 4);
        assert_eq!(count("127.0.0.1"), 3);
        assert_eq!(count("::ffff:127.0.0.1"), 3);
        assert_eq!(count("127.0.0.2"), 1);
        assert_eq!(count("127.0.0.3"), 0);
    }

    #[test]
    fn best_holders_put_exact_live_owners_first_and_cap_the_list() {
        let wanted: IpAddr = "127.0.0.1".parse().unwrap();
        let time_wait = DiagSocket { inode: 0, ..tcp(TCP_TIME_WAIT, "127.0.0.1:80", "127.0.0.1:5000") };
        let wildcard = tcp(TCP_LISTEN, "0.0.0.0:80", "0.0.0.0:0");
        let exact = tcp(TCP_LISTEN, "127.0.0.1:80", "0.0.0.0:0");
        let child = tcp(ESTABLISHED, "127.0.0.1:80", "127.0.0.1:5001");
        let (holders, left_out) = best_holders(vec![time_wait, wildcard, child, exact], wanted);
        let order: Vec<_> = holders.iter().map(|h| (h.state, h.src.to_string())).collect();
        assert_eq!(
            order,
            [
                (TcpState::Listen, "127.0.0.1:80".to_string()),
                (TcpState::Listen, "0.0.0.0:80".to_string()),
                (TcpState::Established, "127.0.0.1:80".to_string()),
                (TcpState::TimeWait, "127.0.0.1:80".to_string()),
            ]
        );
        assert_eq!(left_out, 0);

        let many: Vec<_> = (0..MAX_HOLDERS as u16 + 3)
            .map(|i| tcp(ESTABLISHED, "127.0.0.1:80", &format!("127.0.0.1:{}", 5000 + i)))
            .collect();
        let (holders, left_out) = best_holders(many, wanted);
        assert_eq!((holders.len(), left_out), (MAX_HOLDERS, 3));
    }

    #[test]
    fn holders_carry_state_addresses_inode_and_timer() {
        let wanted: IpAddr = "127.0.0.1".parse().unwrap();
        let time_wait = DiagSocket {
            inode: 0,
            timer_ms: Some(41_000),
            ..tcp(TCP_TIME_WAIT, "127.0.0.1:40000", "127.0.0.1:80")
        };
        let (holders, _) = best_holders(vec![time_wait, udp("127.0.0.1:53")], wanted);
        assert_eq!(
            holders,
            [
                Holder {
                    state: TcpState::Other(TCP_CLOSE),
                    src: addr("127.0.0.1:53"),
                    dst: None,
                    inode: 100,
                    owner: None,
                    timer_ms: None,
                },
                Holder {
                    state: TcpState::TimeWait,
                    src: addr("127.0.0.1:40000"),
                    dst: Some(addr("127.0.0.1:80")),
                    inode: 0,
                    owner: None,
                    timer_ms: Some(41_000),
                },
            ]
        );
    }
}
