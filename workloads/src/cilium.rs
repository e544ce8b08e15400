//! The first incident (Cilium's Envoy, 2022): Envoy keeps the
//! client pod's original source ip:port for the upstream connection (IP_TRANSPARENT),
//! marks it (SO_MARK, Cilium identity 12803) and sets SO_REUSEADDR "to not fail on address
//! already in use". While the pod's own connection with that very 4-tuple is alive, every
//! connect() fails at once with EADDRNOTAVAIL (99) and the retry policy (1 + 3 retries)
//! fails identically 4 times.
//!
//! Why bind() succeeds: the port's bind bucket already has an owner (the client), so
//! inet_csk_get_port() takes the fast path only when `tb->fastreuse > 0 && sk->sk_reuse`,
//! and otherwise asks inet_csk_bind_conflict()/inet_bind_conflict(), which let two
//! sockets share an address only if *both* set SO_REUSEADDR and neither listens. Without
//! SO_REUSEADDR on the client the proxy's bind would fail with EADDRINUSE instead; here the
//! client sets it so the scenario reproduces the connect failure of the incident.
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/inet_connection_sock.c
//! (inet_csk_get_port, inet_bind_conflict).
//!
//! Why connect() fails: the source port is already bound, so __inet_hash_connect() does not
//! search for a port but only checks the established hash for an identical 4-tuple
//! (__inet_check_established()); the client's ESTABLISHED socket is exactly that, and the
//! answer is -EADDRNOTAVAIL, synchronously, even on a non-blocking socket.
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/inet_hashtables.c
//! (__inet_hash_connect, __inet_check_established; IPv6: __inet6_check_established in
//! net/ipv6/inet6_hashtables.c).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::procnet::{self, ESTABLISHED};
use super::protocol::SockOpt;
use super::report::{CiliumMark, HolderFacts, Report};
use super::runner::{self, ClientConnection, Plan};
use super::{Addrs, CiliumArgs, Error};

/// The client pod's source port in the incident's capture.
const CLIENT_PORT: u16 = 40312;
/// Cilium security identity of the client pod in the incident (Envoy logged "id: 12803").
const IDENTITY: u32 = 12803;
/// Cilium's "egress proxy" magic in bits 8..12 of the mark.
const MAGIC_EGRESS: u32 = 0x0b00;

/// Cilium's proxy mark: identity bits 0..16 in the upper half, the magic, identity bits
/// 16..24 (the cluster id) in the low byte. Cilium: pkg/datapath/linux/linux_defaults/mark.go.
fn cilium_mark(identity: u32) -> u32 {
    ((identity & 0xffff) << 16) | MAGIC_EGRESS | ((identity >> 16) & 0xff)
}

/// Envoy's retry back-off is a few ms here: short enough that all attempts fall in one
/// fold window of sockerr's text output, long enough to be separate events.
fn backoff(retry: u32) -> Duration {
    Duration::from_millis((2u64 << retry.min(3)).min(25))
}

pub fn run(args: &CiliumArgs) -> Result<Report, Error> {
    let started = Instant::now();
    let common = &args.common;
    let ipv6 = common.ipv6;
    let addrs = Addrs { ipv6 };
    let (netns, [mut upstream, mut client, mut proxy]) = runner::upstream_client_proxy(common)?;

    // The pod's own connection, alive for the whole scenario.
    let client_addr = SocketAddr::new(addrs.client_ip(), CLIENT_PORT);
    let connection =
        ClientConnection::open(&mut upstream, &mut client, &addrs, client_addr, &[SockOpt::ReuseAddr])?;
    let (client_fd, client_inode, accepted) = (connection.fd, connection.inode, &connection.accepted);
    if accepted.peer != client_addr {
        return Err(Error::Actor {
            comm: upstream.comm.clone(),
            pid: upstream.pid,
            what: format!("accepted {} instead of the client {client_addr}", accepted.peer),
        });
    }

    let mark = cilium_mark(IDENTITY);
    let transparent = if ipv6 { SockOpt::Ipv6Transparent } else { SockOpt::IpTransparent };
    let plan = Plan {
        opts: vec![SockOpt::Mark(mark), SockOpt::ReuseAddr, transparent],
        bind: Some(client_addr),
        connect: Some(addrs.upstream()),
        ..Plan::new(ipv6)
    };
    let mut attempts = Vec::new();
    let first = Instant::now();
    for attempt in 0..args.attempts {
        if attempt > 0 {
            std::thread::sleep(backoff(attempt));
        }
        let at = first.elapsed();
        let opened = proxy.open(&plan)?;
        let last = attempt + 1 == args.attempts;
        if !(last && args.keep_open) {
            proxy.close(opened.fd)?;
        }
        if let Some(attempt) = opened.attempt(&proxy, &plan, at) {
            attempts.push(attempt);
        }
    }

    // The kernel's view of the holder while the proxy failed (the client is still there).
    let sockets = procnet::tcp_sockets(ipv6)?;
    let held = sockets.iter().find(|entry| entry.inode == client_inode);
    let holder = held.map(|entry| HolderFacts::from_tcp_entry(entry, Some((&client.facts(), client_fd))));
    let report = Report {
        attempts,
        holders: holder.into_iter().collect(),
        connections: vec![connection.facts(&client)],
        mark: Some(CiliumMark {
            value: format!("{mark:#010x}"),
            magic: format!("{MAGIC_EGRESS:#06x}"),
            identity: IDENTITY,
            cluster: IDENTITY >> 16,
        }),
        ..Report::new("cilium", common, netns, vec![proxy.facts(), client.facts(), upstream.facts()])
    };
    let reproduced = report.attempts.len() == args.attempts as usize
        && report.attempts.iter().all(|a| a.errno == Errno::EADDRNOTAVAIL as i32 && !a.is_async)
        && held.is_some_and(|entry| entry.state == ESTABLISHED && entry.remote == addrs.upstream());
    let expected = "expected every proxy connect() to fail with EADDRNOTAVAIL while the client's connection is ESTABLISHED";
    runner::finish(common, started, vec![proxy, client, upstream], report, reproduced, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_of_the_incident() {
        // Envoy logged: "SO_MARK to 32030b00 (magic mark: b00, id: 12803, cluster: 0)".
        assert_eq!(cilium_mark(12803), 0x3203_0b00);
    }

    #[test]
    fn backoff_stays_short() {
        // 3 retries must fit well inside sockerr's default 500 ms fold window.
        let retries: Duration = (1..4).map(backoff).sum();
        assert!(backoff(1) >= Duration::from_millis(2));
        assert!(retries < Duration::from_millis(100), "{retries:?}");
        assert!((1..64).all(|retry| backoff(retry) <= Duration::from_millis(25)));
    }
}
