//! A server that stops accepting: demo-server listens on 127.0.0.1:8080 with a backlog
//! of 2 and never calls accept(); demo-client opens connections to it. The first
//! backlog + 1 complete their handshake into the accept queue (sk_acceptq_is_full() is
//! `>`, include/net/sock.h); every later SYN, and each of its retransmissions, is dropped
//! by tcp_conn_request() (net/ipv4/tcp_input.c): TcpExtListenOverflows and
//! TcpExtListenDrops rise, the listener's sk_drops rises, the clients see only a connect
//! that does not complete, and the server logs nothing. The client waits until the first
//! backlog + 1 handshakes sit in the accept queue before it sends the SYNs that overflow,
//! so every drop is a refused SYN, which sk_drops counts once, as ListenDrops does.
//!
//! The ground truth is the kernel's own count, read from /proc/net/netstat inside the
//! namespace after the clients gave up (closed their sockets, so no SYN is in flight).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::{
    Error, ListenOverflowArgs, procnet,
    report::{ActorFacts, ScenarioReport},
    runner::{self, Actor},
};

pub const PORT: u16 = 8080;
/// Bound on the wait for the handshakes that fill the accept queue.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenOverflowReport {
    pub scenario: String,
    pub netns: u64,
    pub server: ActorFacts,
    pub client: ActorFacts,
    /// The listener: the server's fd, its address and the backlog given to listen().
    pub fd: i32,
    pub local: SocketAddr,
    pub backlog: i32,
    pub clients: u32,
    /// The namespace's TcpExt counters after the clients gave up.
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub elapsed_ms: u64,
}

impl ScenarioReport for ListenOverflowReport {
    fn elapsed_ms_mut(&mut self) -> &mut u64 {
        &mut self.elapsed_ms
    }
}

pub fn run(args: &ListenOverflowArgs) -> Result<ListenOverflowReport, Error> {
    let started = Instant::now();
    let common = &args.common;
    let netns = crate::netns::enter_new()?;
    let mut server = Actor::spawn("server", "demo-server")?;
    let mut client = Actor::spawn("client", "demo-client")?;
    runner::gate(common, netns, &[&server, &client])?;

    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT);
    let (fd, _) = server.listen_on(local, args.backlog)?;
    // Connections that fit in the accept queue: sk_acceptq_is_full() is `>`.
    let queue_room = u32::try_from(args.backlog).unwrap_or(0) + 1;
    let mut sockets = Vec::new();
    for opened in 0..args.clients {
        if opened == queue_room {
            await_full_accept_queue(&client, sockets.len(), local)?;
        }
        let (socket, _) = client.socket(false, true)?;
        match client.connect(socket, local)? {
            // Loopback completes the handshake inside connect() while the queue has room.
            None | Some(Errno::EINPROGRESS) => sockets.push(socket),
            Some(errno) => return Err(client_error(&client, &format!("connect: {errno}"))),
        }
    }
    // SYNs are retransmitted after 1 s, then 3 s (TCP_TIMEOUT_INIT, doubling).
    std::thread::sleep(Duration::from_millis(args.wait_ms));
    for socket in sockets {
        client.close(socket)?;
    }
    let (listen_overflows, listen_drops) = listen_counters()?;
    let report = ListenOverflowReport {
        scenario: "listen-overflow".into(),
        netns,
        server: server.facts(),
        client: client.facts(),
        fd,
        local,
        backlog: args.backlog,
        clients: args.clients,
        listen_overflows,
        listen_drops,
        elapsed_ms: 0,
    };
    let reproduced = args.clients <= queue_room || listen_overflows > 0;
    // The listener stays open while the actors hold, so a tracer samples its final drop count.
    runner::finish(
        common,
        started,
        vec![server, client],
        report,
        reproduced,
        "expected TcpExtListenOverflows to rise",
    )
}

/// Waits (bounded) until the client's first `connections` sit in the accept queue, before
/// any further SYN is sent. A child socket exists only once the client's final ACK was
/// processed, so this also proves the client's handshakes complete.
///
/// Why: a drop is then always a SYN that tcp_conn_request() refuses, which bumps the
/// listener's sk_drops once, as ListenOverflows. Where softirqs run late (a slow emulated
/// guest) the next SYNs could otherwise become request sockets whose final ACK meets the
/// full queue: tcp_check_req() returns NULL after tcp_listendrop(), and tcp_v4_rcv()
/// counts the discarded ACK in sk_drops a second time (`discard_and_relse`).
fn await_full_accept_queue(client: &Actor, connections: usize, local: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let entries = procnet::tcp_sockets(false)?;
        let count = |state| entries.iter().filter(|e| e.local == local && e.state == state).count();
        // Children in the accept queue are ESTABLISHED; request sockets show as SYN_RECV.
        let (queued, pending) = (count(procnet::ESTABLISHED), count(procnet::SYN_RECV));
        if queued == connections && pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = format!(
                "{queued} of {connections} connections reached the accept queue of {local} ({pending} \
                 handshakes pending) within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            return Err(client_error(client, &what));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client_error(client: &Actor, what: &str) -> Error {
    let facts = client.facts();
    Error::Actor { comm: facts.comm, pid: facts.pid, what: what.into() }
}

/// TcpExtListenOverflows and TcpExtListenDrops of the current namespace.
fn listen_counters() -> Result<(u64, u64), Error> {
    let path = "/proc/net/netstat";
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
    let counter = |name| {
        netstat_counter(&text, "TcpExt", name)
            .ok_or_else(|| Error::ProcNet { path: path.into(), line: format!("no TcpExt {name}") })
    };
    Ok((counter("ListenOverflows")?, counter("ListenDrops")?))
}

/// A counter of /proc/net/netstat: a line of names, then a line of values, per group.
pub fn netstat_counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    names.zip(values).find(|(n, _)| *n == name).and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_found_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 13\n\
                    IpExt: InNoRoutes\nIpExt: 4\n";
        assert_eq!(netstat_counter(text, "TcpExt", "ListenOverflows"), Some(12));
        assert_eq!(netstat_counter(text, "TcpExt", "ListenDrops"), Some(13));
        assert_eq!(netstat_counter(text, "IpExt", "InNoRoutes"), Some(4));
        assert_eq!(netstat_counter(text, "TcpExt", "Missing"), None);
    }
}
