//! `sockerr scenario busy-node` (hidden): the busy-node run of `cargo xtask bench`. In its
//! own network namespace (gone with its processes, even after SIGKILL), holder processes
//! (`busy-holder`, re-executions of this binary, as many as the fd limit needs: like the
//! pods of a node) hold many established loopback connections, both ends open, each client
//! socket marked and SO_REUSEADDR as a Cilium-proxied socket is; then this process makes
//! the Cilium pattern fail against the tuples of a few of them, spread over the set. A
//! tracer must still name each failure's holder (pid, fd) and options with that many
//! sockets about.
//!
//! Protocol on stdout/stdin (one JSON line each): `{"ready":{...}}` once the connections
//! are held, then it waits for a line; the report after the failures, then it waits for a
//! line (or EOF) before closing everything, so the caller can inspect the tracer while the
//! connections are still held. Every wait and the set-up are bounded by `--timeout-secs`.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddrV4},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{
    Error,
    bench_loop::{
        COMM, Fd, accept, bind, connect, errno, listener, prepare, set_int, tcp_socket, unexpected,
    },
    runner,
};

/// The upstream every held connection goes to; each holder process listens on its own
/// port from FIRST_UPSTREAM_PORT up.
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);
const FIRST_UPSTREAM_PORT: u16 = 8443;
/// The process name of the holders.
const HOLDER_COMM: &str = "busy-holder";
/// Connections per holder process at most (fewer when its fd limit is lower).
const MAX_PER_HOLDER: u64 = 50_000;
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
    /// Connections set up per second by each holder (one holder after the other); 0: as
    /// fast as they go.
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

/// `sockerr scenario busy-holder` (hidden): one holder process of `busy-node`.
#[derive(Debug, Clone, Args)]
pub struct BusyHolderArgs {
    /// Index of its first connection (addresses follow from the index).
    #[arg(long)]
    pub first: u64,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    pub count: u64,
    /// Its upstream listener's port.
    #[arg(long)]
    pub port: u16,
    /// Connections set up per second; 0: as fast as they go.
    #[arg(long, default_value_t = 0)]
    pub setup_rate: u64,
    /// Connection indices whose client fd to report.
    #[arg(long = "report-index")]
    pub report: Vec<u64>,
    #[arg(long, default_value_t = 180)]
    pub timeout_secs: u64,
}

/// A holder's line once its connections are held.
#[derive(Debug, Serialize, Deserialize)]
struct Held {
    pid: u32,
    held: u64,
    /// (connection index, client fd) of each `--report-index`.
    fds: Vec<(u64, i32)>,
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
    holder_processes: usize,
    setup_secs: f64,
}

#[derive(Debug, Serialize)]
struct HeldTuple {
    /// The holder process and its client socket's fd: the holder a tracer must name.
    pid: u32,
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
    holder_processes: usize,
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
    let per_holder = per_holder()?;
    let targets: Vec<u64> =
        (0..args.holders).map(|i| (2 * i + 1) * args.connections / (2 * args.holders)).collect();

    let started = Instant::now();
    let mut holders = Vec::new();
    let mut first = 0;
    while first < args.connections {
        let count = per_holder.min(args.connections - first);
        let port = FIRST_UPSTREAM_PORT + holders.len() as u16;
        let report: Vec<u64> =
            targets.iter().copied().filter(|t| (first..first + count).contains(t)).collect();
        holders.push(Holder::spawn(first, count, port, &report, args)?);
        first += count;
    }
    let connections = holders.iter().map(|h| h.held.held).sum();
    let setup_secs = started.elapsed().as_secs_f64();
    runner::print_line(&Ready {
        ready: ReadyFacts {
            pid: std::process::id(),
            netns,
            connections,
            holder_processes: holders.len(),
            setup_secs,
        },
    })?;
    runner::wait_for_line(timeout)?;

    let upstream_port = |index: u64| FIRST_UPSTREAM_PORT + (index / per_holder) as u16;
    let started = Instant::now();
    let (mut failures, mut other) = (0, 0);
    for attempt in 0..args.failures {
        pace(started, attempt, args.rate, timeout, || {
            format!("{attempt} of {} failures after {} s", args.failures, args.timeout_secs)
        })?;
        let target = targets[(attempt * args.holders / args.failures) as usize];
        let (ip, port) = client_address(target);
        match cilium_attempt(ip, port, upstream_port(target))? {
            Err(libc::EADDRNOTAVAIL) => failures += 1,
            _ => other += 1,
        }
    }
    let elapsed_secs = started.elapsed().as_secs_f64();
    let tuples = targets
        .iter()
        .map(|&index| {
            let (ip, port) = client_address(index);
            let (pid, fd) = holders
                .iter()
                .find_map(|h| h.held.fds.iter().find(|(i, _)| *i == index).map(|&(_, fd)| (h.held.pid, fd)))
                .unwrap_or((0, -1));
            HeldTuple {
                pid,
                fd,
                src: SocketAddrV4::new(ip, port).to_string(),
                dst: SocketAddrV4::new(UPSTREAM, upstream_port(index)).to_string(),
            }
        })
        .collect();
    runner::print_line(&BusyReport {
        pid: std::process::id(),
        comm: COMM,
        netns,
        connections,
        holder_processes: holders.len(),
        setup_secs,
        failures,
        unexpected: other,
        elapsed_secs,
        mark: format!("{MARK:#010x}"),
        options: ["SO_MARK", "SO_REUSEADDR"],
        holders: tuples,
    })?;
    runner::wait_for_line(timeout)?;
    for holder in holders {
        holder.finish(timeout)?;
    }
    Ok(())
}

/// One holder process; killed if dropped before it finished.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    held: Held,
}

impl Holder {
    /// Starts a holder of connections `first..first + count` and waits until it holds them
    /// (bounded by its own --timeout-secs: it exits, and its stdout ends, past that).
    fn spawn(
        first: u64,
        count: u64,
        port: u16,
        report: &[u64],
        args: &BusyNodeArgs,
    ) -> Result<Holder, Error> {
        let exe = std::env::current_exe().map_err(|source| Error::Spawn {
            comm: HOLDER_COMM.into(),
            exe: "/proc/self/exe".into(),
            source,
        })?;
        let mut command = Command::new(&exe);
        command
            .args(["scenario", "busy-holder", "--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--port", &port.to_string(), "--setup-rate", &args.setup_rate.to_string()])
            .args(["--timeout-secs", &args.timeout_secs.to_string()]);
        for index in report {
            command.args(["--report-index", &index.to_string()]);
        }
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|source| {
            Error::Spawn { comm: HOLDER_COMM.into(), exe: exe.display().to_string(), source }
        })?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        let read = match child.stdout.take() {
            Some(stdout) => BufReader::new(stdout).read_line(&mut line).map_err(Error::Pipe)?,
            None => 0,
        };
        if read == 0 {
            let pid = child.id();
            let status = child.wait().map_err(Error::Pipe)?;
            return Err(Error::Actor {
                comm: HOLDER_COMM.into(),
                pid,
                what: format!("exited ({status}) before holding its connections"),
            });
        }
        let held: Held =
            serde_json::from_str(&line).map_err(|source| Error::Protocol { line: line.clone(), source })?;
        Ok(Holder { child, stdin, held })
    }

    /// Tells it to close everything and exit; bounded, then killed (by drop).
    fn finish(mut self, timeout: Duration) -> Result<(), Error> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let deadline = Instant::now() + timeout;
        let pid = self.child.id();
        let failed = |what: String| Error::Actor { comm: HOLDER_COMM.into(), pid, what };
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(Error::Pipe)? {
                return if status.success() { Ok(()) } else { Err(failed(format!("exited with {status}"))) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(failed(format!("did not exit within {} s", timeout.as_secs())))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `busy-holder`: holds its connections until told (a line or EOF on stdin).
pub fn run_holder(args: &BusyHolderArgs) -> Result<(), Error> {
    let name = std::ffi::CString::new(HOLDER_COMM).expect("no NUL");
    nix::sys::prctl::set_name(&name).map_err(|source| Error::SetName { comm: HOLDER_COMM.into(), source })?;
    // Dies with the runner: nothing outlives the namespace's owner.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| side(format!("PR_SET_PDEATHSIG: {e}")))?;
    raise_fd_limit(2 * args.count + 64)?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let upstream = listener(UPSTREAM, args.port)?;
    let started = Instant::now();
    let mut held = Vec::with_capacity(2 * args.count as usize);
    let mut fds = Vec::new();
    let mut queued = 0;
    for offset in 0..args.count {
        pace(started, offset, args.setup_rate, timeout, || {
            format!(
                "{offset} of {} connections after {} s (--timeout-secs): the machine is too slow or too busy",
                args.count, args.timeout_secs
            )
        })?;
        let index = args.first + offset;
        let (ip, port) = client_address(index);
        let client = marked_socket()?;
        bind(client.0, ip, port).map_err(|e| unexpected("bind client", e))?;
        connect(client.0, UPSTREAM, args.port).map_err(|e| unexpected("connect", e))?;
        if args.report.contains(&index) {
            fds.push((index, client.0));
        }
        held.push(client);
        queued += 1;
        if queued == ACCEPT_EVERY || offset + 1 == args.count {
            for _ in 0..queued {
                held.push(accept(upstream.0)?);
            }
            queued = 0;
        }
    }
    runner::print_line(&Held { pid: std::process::id(), held: args.count, fds })?;
    runner::wait_for_line(timeout)?;
    drop(held);
    Ok(())
}

/// Connections per holder: what the hard fd limit allows (both ends, plus a margin).
fn per_holder() -> Result<u64, Error> {
    let limit = fd_limit()?;
    let per_holder = (limit.rlim_max.saturating_sub(64) / 2).min(MAX_PER_HOLDER);
    if per_holder < 1000 {
        return Err(side(format!(
            "the hard RLIMIT_NOFILE is {}: too low to hold connections (raise it: `ulimit -Hn 100000`)",
            limit.rlim_max
        )));
    }
    Ok(per_holder)
}

fn fd_limit() -> Result<libc::rlimit, Error> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(side(format!("getrlimit(RLIMIT_NOFILE): errno {}", errno())));
    }
    Ok(limit)
}

/// Raises the soft RLIMIT_NOFILE to `needed` within the hard limit (raising that needs
/// CAP_SYS_RESOURCE, which a container may lack: the runner sizes holders by it instead).
fn raise_fd_limit(needed: u64) -> Result<(), Error> {
    let mut limit = fd_limit()?;
    if limit.rlim_max < needed {
        return Err(side(format!("{needed} fds needed, the hard RLIMIT_NOFILE is {}", limit.rlim_max)));
    }
    limit.rlim_cur = limit.rlim_cur.max(needed);
    // SAFETY: `limit` is a valid rlimit; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(side(format!("setrlimit(RLIMIT_NOFILE, {needed}): errno {}", errno())));
    }
    Ok(())
}

/// Client address and port of connection `index`: 127.1.0.0:10000 onwards, unique over
/// all holders.
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
fn cilium_attempt(ip: Ipv4Addr, port: u16, upstream_port: u16) -> Result<Result<(), i32>, Error> {
    let socket = marked_socket()?;
    if let Err(errno) = bind(socket.0, ip, port) {
        return Ok(Err(errno));
    }
    Ok(connect(socket.0, UPSTREAM, upstream_port))
}

/// Waits for step `index`'s turn at `rate` steps a second (0: at once) from `start`; once
/// `timeout` has passed, an error saying how far the loop got.
fn pace(
    start: Instant,
    index: u64,
    rate: u64,
    timeout: Duration,
    how_far: impl FnOnce() -> String,
) -> Result<(), Error> {
    if start.elapsed() > timeout {
        return Err(side(how_far()));
    }
    if rate == 0 {
        return Ok(());
    }
    let due = start + Duration::from_secs_f64(index as f64 / rate as f64);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
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
}
