//! A proxy binds the ip:port of a connection that was closed a moment ago: EADDRINUSE (98),
//! and no process holds the address. The side that closes first (here the client) keeps
//! the 4-tuple in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN); the timewait socket stays in the
//! port's bind bucket, and inet_bind_conflict() counts it unless both sides set
//! SO_REUSEADDR. https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/tcp_minisocks.c
//! (tcp_time_wait), .../net/ipv4/inet_connection_sock.c (inet_bind_conflict).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::procnet::{self, TIME_WAIT, TcpEntry};
use super::report::{HolderFacts, Report};
use super::runner::{self, ClientConnection, Plan};
use super::{Addrs, CommonArgs, Error};

const CLIENT_PORT: u16 = 40313;
/// Loopback delivers the last FIN/ACK within microseconds; this only bounds a broken run.
const TIME_WAIT_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(common: &CommonArgs) -> Result<Report, Error> {
    let started = Instant::now();
    let ipv6 = common.ipv6;
    let addrs = Addrs { ipv6 };
    let (netns, [mut upstream, mut client, mut proxy]) = runner::upstream_client_proxy(common)?;
    let client_addr = SocketAddr::new(addrs.client_ip(), CLIENT_PORT);
    let connection = ClientConnection::open(&mut upstream, &mut client, &addrs, client_addr, &[])?;
    let (client_fd, accepted) = (connection.fd, &connection.accepted);

    // Active close by the client (FIN_WAIT1 -> FIN_WAIT2); the upstream sees EOF and closes
    // too, and the client's ACK of that FIN puts the client's side into TIME_WAIT. Without
    // the upstream's close the client would sit in FIN_WAIT2, which also blocks the port but
    // is not what this scenario is about.
    client.close(client_fd)?;
    upstream.await_eof(accepted.fd, Duration::from_secs(2))?;
    upstream.close(accepted.fd)?;
    let time_wait = wait_for_time_wait(ipv6, client_addr, addrs.upstream())?;

    let plan = Plan { bind: Some(client_addr), ..Plan::new(ipv6) };
    let opened = proxy.open(&plan)?;
    proxy.close(opened.fd)?;
    let attempts: Vec<_> = opened.attempt(&proxy, &plan, Duration::ZERO).into_iter().collect();

    // Still there after the failure (60 s timer): this is the holder a tracer should find.
    let sockets = procnet::tcp_sockets(ipv6)?;
    let held = sockets
        .iter()
        .find(|entry| is_time_wait(entry, client_addr, addrs.upstream()))
        .or(time_wait.as_ref());
    let holder = held.map(|entry| HolderFacts {
        // Read before the failing bind: a tracer looks after the failure, so it must see
        // at most this much left, however the scheduler orders its lookup and the read
        // above (under load the tracer may look first).
        timer_ms: time_wait.as_ref().and_then(|before| before.timer_ms).or(entry.timer_ms),
        ..HolderFacts::from_tcp_entry(entry, None)
    });
    let report = Report {
        attempts,
        holders: holder.into_iter().collect(),
        connections: vec![connection.facts(&client)],
        ..Report::new("bind-time-wait", common, netns, vec![proxy.facts(), client.facts(), upstream.facts()])
    };
    let reproduced = time_wait.is_some()
        && report.attempts.len() == 1
        && report.attempts[0].errno == Errno::EADDRINUSE as i32
        && report.holders.len() == 1;
    let expected = "expected the client's side in TIME_WAIT and the proxy's bind() to fail with EADDRINUSE";
    runner::finish(common, started, vec![proxy, client, upstream], report, reproduced, expected)
}

fn is_time_wait(entry: &TcpEntry, local: SocketAddr, remote: SocketAddr) -> bool {
    entry.state == TIME_WAIT && entry.local == local && entry.remote == remote
}

/// The last ACK is processed in softirq context, possibly just after close() returned:
/// there is no event to wait on, so look (bounded) until the kernel lists the socket.
fn wait_for_time_wait(ipv6: bool, local: SocketAddr, remote: SocketAddr) -> Result<Option<TcpEntry>, Error> {
    let deadline = Instant::now() + TIME_WAIT_TIMEOUT;
    loop {
        let found = procnet::tcp_sockets(ipv6)?.into_iter().find(|entry| is_time_wait(entry, local, remote));
        if found.is_some() || Instant::now() >= deadline {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
