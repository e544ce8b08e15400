//! `sockerr scenario busy-node` (hidden): the busy-node run of `cargo xtask bench`. In its
//! own network namespace (gone with the process, even after SIGKILL) it holds many
//! established loopback connections, both ends open, each client socket marked and
//! SO_REUSEADDR as a Cilium-proxied socket is; then the Cilium pattern fails against the
//! tuples of a few of them, spread over the set. A tracer must still name each failure's
//! holder and options with that many sockets about.
//!
//! Protocol on stdout/stdin (one JSON line each): `{"ready":{...}}` once the connections
//! are held, then it waits for a line; the report after the failures, then it waits for a
//! line (or EOF) before closing everything, so the caller can inspect the tracer while the
//! connections are still held. Every wait and the set-up are bounded by `--timeout-secs`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use clap::Args;
use serde::Serialize;

use super::{
    Error,
    bench_loop::{COMM, Fd, accept, bind, connect, errno, listener, prepare, set_int, tcp_socket, unexpected},
    runner,
};

/// The upstream every held connection goes to.
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);
const UPSTREAM_PORT: u16 = 8443;
/// Client addresses start here (127.1.0.0 up): each takes PORTS_PER_ADDRESS ports.
const FIRST_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 0);
const FIRST_PORT: u16 = 10_000;
const PORTS_PER_ADDRESS: u32 = 50_000;
/// Connections made between two drains of the accept queue: well under the listen
/// backlog, so that no SYN is dropped (a dropped SYN costs a 1 s retransmission).
const ACCEPT_EVERY: u64 = 256;
/// Cilium's proxy mark of the incident (identity 12803), on every client socket.
const MARK: u32 = 0x3203_0b00;

#[derive(Debug, Clone, Args)]
pub struct BusyNodeArgs {
    /// Established loopback connections to hold (both ends open: twice as many fds).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Cilium-pattern failing connects once the connections are held.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub failures: u64,
    /// Failures per second; 0: as fast as they go.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Connections set up per second; 0: as fast as they go.
    #[arg(long, default_value_t = 20_000)]
    pub setup_rate: u64,
    /// Held connections whose tuple the failures re-bind, spread over the set; the
    /// failures go to each in turn, in equal consecutive runs (one retry storm each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub holders: u64,
    /// Bound on the set-up, on the failures and on each wait for the caller.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
}

#[derive(Debug, Serialize)]
struct Ready {
    ready: ReadyFacts,
}

#[derive(Debug, Serialize)]
struct ReadyFacts {
    pid: u32,
    netns: u64,
    connections: u64,
    setup_secs: f64,
}

#[derive(Debug, Serialize)]
struct HeldTuple {
    /// The client socket's fd in this process: the holder a tracer must name.
    fd: i32,
    src: String,
    dst: String,
}

#[derive(Debug, Serialize)]
struct BusyReport {
    pid: u32,
    comm: &'static str,
    netns: u64,
    connections: u64,
    setup_secs: f64,
    /// connect() calls that failed with EADDRNOTAVAIL.
    failures: u64,
    /// Attempts that did anything else (should be 0).
    unexpected: u64,
    elapsed_secs: f64,
    /// SO_MARK of every attempt, as sockerr prints it.
    mark: String,
    /// Every attempt sets SO_MARK and SO_REUSEADDR, in that order, before bind().
    options: [&'static str; 2],
    holders: Vec<HeldTuple>,
}

pub fn run(args: &BusyNodeArgs) -> Result<(), Error> {
    prepare(COMM)?;
    let netns = super::netns::current_inode()?;
    let timeout = Duration::from_secs(args.timeout_secs);
    raise_fd_limit(2 * args.connections + 64)?;
    let upstream = listener(UPSTREAM, UPSTREAM_PORT)?;

    let started = Instant::now();
    let mut held = Vec::with_capacity(args.connections as usize);
    let mut queued = 0;
    for index in 0..args.connections {
        if started.elapsed() > timeout {
            return Err(side(format!(
                "{index} of {} connections after {} s (--timeout-secs): the machine is too slow or too busy",
                args.connections, args.timeout_secs
            )));
        }
        pace(started, index, args.setup_rate);
        let (ip, port) = client_address(index);
        let client = marked_socket()?;
        bind(client.0, ip, port).map_err(|e| unexpected("bind client", e))?;
        connect(client.0, UPSTREAM, UPSTREAM_PORT).map_err(|e| unexpected("connect", e))?;
        held.push(client);
        queued += 1;
        if queued == ACCEPT_EVERY || index + 1 == args.connections {
            for _ in 0..queued {
                held.push(accept(upstream.0)?);
            }
            queued = 0;
        }
    }
    let setup_secs = started.elapsed().as_secs_f64();
    runner::print_line(&Ready {
        ready: ReadyFacts { pid: std::process::id(), netns, connections: args.connections, setup_secs },
    })?;
    runner::wait_for_line(timeout)?;

    let targets: Vec<u64> = (0..args.holders).map(|i| (2 * i + 1) * args.connections / (2 * args.holders)).collect();
    let started = Instant::now();
    let (mut failures, mut other) = (0, 0);
    for attempt in 0..args.failures {
        if started.elapsed() > timeout {
            return Err(side(format!("{attempt} of {} failures after {} s", args.failures, args.timeout_secs)));
        }
        pace(started, attempt, args.rate);
        let (ip, port) = client_address(targets[(attempt * args.holders / args.failures) as usize]);
        match cilium_attempt(ip, port)? {
            Err(libc::EADDRNOTAVAIL) => failures += 1,
            _ => other += 1,
        }
    }
    let elapsed_secs = started.elapsed().as_secs_f64();
    let holders = targets
        .iter()
        .map(|&index| {
            let (ip, port) = client_address(index);
            // Connections were pushed client first, then a run of accepted sockets.
            let fd = held.get(client_slot(index)).map_or(-1, |fd| fd.0);
            HeldTuple {
                fd,
                src: SocketAddrV4::new(ip, port).to_string(),
                dst: SocketAddrV4::new(UPSTREAM, UPSTREAM_PORT).to_string(),
            }
        })
        .collect();
    runner::print_line(&BusyReport {
        pid: std::process::id(),
        comm: COMM,
        netns,
        connections: args.connections,
        setup_secs,
        failures,
        unexpected: other,
        elapsed_secs,
        mark: format!("{MARK:#010x}"),
        options: ["SO_MARK", "SO_REUSEADDR"],
        holders,
    })?;
    runner::wait_for_line(timeout)?;
    drop(held);
    Ok(())
}

/// Position of connection `index`'s client socket in the held list: each run of
/// ACCEPT_EVERY client sockets is followed by as many accepted ones.
fn client_slot(index: u64) -> usize {
    let run = index / ACCEPT_EVERY;
    (run * 2 * ACCEPT_EVERY + index % ACCEPT_EVERY) as usize
}

/// Client address and port of connection `index`: 127.1.0.0:10000 onwards.
fn client_address(index: u64) -> (Ipv4Addr, u16) {
    let address = u32::from(FIRST_CLIENT) + (index / u64::from(PORTS_PER_ADDRESS)) as u32;
    let port = FIRST_PORT + (index % u64::from(PORTS_PER_ADDRESS)) as u16;
    (Ipv4Addr::from(address), port)
}

/// A TCP socket with the options of a Cilium-proxied one.
fn marked_socket() -> Result<Fd, Error> {
    let socket = tcp_socket()?;
    set_int(socket.0, libc::SOL_SOCKET, libc::SO_MARK, MARK as i32).map_err(|e| unexpected("SO_MARK", e))?;
    set_int(socket.0, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(|e| unexpected("SO_REUSEADDR", e))?;
    Ok(socket)
}

/// One Cilium-pattern attempt on a held tuple; the socket is closed on return.
fn cilium_attempt(ip: Ipv4Addr, port: u16) -> Result<Result<(), i32>, Error> {
    let socket = marked_socket()?;
    if let Err(errno) = bind(socket.0, ip, port) {
        return Ok(Err(errno));
    }
    Ok(connect(socket.0, UPSTREAM, UPSTREAM_PORT))
}

/// Sleeps until the `index`-th event of a run paced at `rate` per second is due.
fn pace(start: Instant, index: u64, rate: u64) {
    if rate == 0 {
        return;
    }
    let due = start + Duration::from_secs_f64(index as f64 / rate as f64);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// Raises RLIMIT_NOFILE to `needed` (soft and hard), within fs.nr_open.
fn raise_fd_limit(needed: u64) -> Result<(), Error> {
    let path = "/proc/sys/fs/nr_open";
    let nr_open: u64 = std::fs::read_to_string(path)
        .map_err(|source| Error::Read { path: path.into(), source })?
        .trim()
        .parse()
        .map_err(|_| side(format!("{path} is not a number")))?;
    if nr_open < needed {
        return Err(side(format!(
            "{needed} fds needed but fs.nr_open is {nr_open}: raise it (`sysctl -w fs.nr_open={needed}`) \
             or hold fewer connections (--connections)"
        )));
    }
    let limit = libc::rlimit { rlim_cur: needed, rlim_max: needed };
    // SAFETY: `limit` is a valid rlimit; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(side(format!("setrlimit(RLIMIT_NOFILE, {needed}): errno {} (needs root)", errno())));
    }
    Ok(())
}

fn side(what: String) -> Error {
    Error::ActorSide { comm: COMM.into(), what }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_unique_and_roll_over() {
        assert_eq!(client_address(0), (Ipv4Addr::new(127, 1, 0, 0), 10_000));
        assert_eq!(client_address(49_999), (Ipv4Addr::new(127, 1, 0, 0), 59_999));
        assert_eq!(client_address(50_000), (Ipv4Addr::new(127, 1, 0, 1), 10_000));
        assert_eq!(client_address(200_000), (Ipv4Addr::new(127, 1, 0, 4), 10_000));
    }

    #[test]
    fn client_slots_skip_the_accepted_runs() {
        assert_eq!(client_slot(0), 0);
        assert_eq!(client_slot(255), 255);
        assert_eq!(client_slot(256), 512);
        assert_eq!(client_slot(513), 2 * 512 + 1);
    }
}
