//! `sockerr scenario bench-loop` and `sockerr scenario flood` (hidden): the workloads of
//! `cargo xtask bench` and of the soak test. Each runs in its own network namespace on
//! loopback, under the process name `sockerr-bench` (so `--comm` can select or exclude it).
//!
//! They call libc directly, not socket2 or std::net: a micro-loop must time the syscall,
//! not allocations or error conversions around it.

use std::{
    mem::size_of,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{Error, netns, runner};

/// What the workloads call themselves (15 bytes at most: the kernel's comm).
pub const COMM: &str = "sockerr-bench";

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 19);
const UPSTREAM_PORT: u16 = 8080;
/// The client port the Cilium pattern re-binds while a live connection holds it.
const HELD_PORT: u16 = 40000;
/// Nobody listens here: a blocking connect is refused at once by the loopback RST.
const CLOSED_PORT: u16 = 9;
/// A listener holds it: bind() fails with EADDRINUSE.
const BOUND_PORT: u16 = 9000;
/// The listener of the successful connection cycle.
const SUCCESS_PORT: u16 = 8081;
/// What the successful cycle writes and reads.
const PAYLOAD: [u8; 64] = [0x5a; 64];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopKind {
    /// A successful connection: socket, SO_REUSEADDR, connect to a listener, accept,
    /// 64-byte write and read, close both ends.
    SuccessCycle,
    /// socket, blocking connect to a closed port (ECONNREFUSED), close.
    RefusedConnect,
    /// The Cilium pattern: socket, SO_REUSEADDR, bind to the tuple of a live connection,
    /// connect to its peer (EADDRNOTAVAIL), close.
    AddrNotAvail,
    /// socket, bind to a port a listener holds (EADDRINUSE), close.
    Bind,
    /// setsockopt(SO_MARK) on one socket (an option sockerr records).
    SoMark,
    /// setsockopt(SO_KEEPALIVE) on one socket (an option sockerr ignores).
    SoKeepalive,
}

#[derive(Debug, Clone, Args)]
pub struct BenchLoopArgs {
    /// The loops to run, one after the other.
    #[arg(long = "loop", value_enum, required = true)]
    pub loops: Vec<LoopKind>,
    /// Length of one batch in milliseconds: iterations per batch are calibrated from the
    /// warm-up, so that loops of 500 ns and of 50 µs (under strace) get comparable samples.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub batch_ms: u64,
    /// Samples per loop (each the mean ns/iteration of one batch).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batches: u64,
    /// Untimed iterations before the batches (caches, branch predictors, socket slabs).
    #[arg(long, default_value_t = 1_000)]
    pub warmup: u64,
    /// Pin to this CPU (sched_setaffinity).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// The process name to run under (what `--comm` of a tracer selects or excludes).
    #[arg(long, default_value = COMM, value_parser = parse_comm)]
    pub comm: String,
}

/// The kernel keeps 15 bytes of a process name: a longer one would silently not match
/// the `--comm` a caller gives a tracer.
fn parse_comm(text: &str) -> Result<String, String> {
    match text.len() {
        1..=15 if !text.contains('\0') => Ok(text.to_owned()),
        _ => Err(format!("`{text}`: a process name has 1 to 15 bytes (the kernel's comm)")),
    }
}

#[derive(Debug, Serialize)]
struct LoopSamples {
    #[serde(rename = "loop")]
    kind: LoopKind,
    /// Mean ns per iteration of each batch.
    ns_per_iteration: Vec<f64>,
    iterations_per_batch: u64,
    /// Every iteration run, warm-up included (for per-iteration costs counted elsewhere).
    iterations: u64,
}

#[derive(Debug, Serialize)]
struct LoopReport {
    pid: u32,
    cpu: Option<usize>,
    loops: Vec<LoopSamples>,
}

pub fn run_loops(args: &BenchLoopArgs) -> Result<(), Error> {
    prepare(&args.comm)?;
    // The successful cycle leaves a TIME_WAIT socket per connection: the whole port range
    // of the namespace keeps long runs (under strace, at a loaded machine) from running out.
    netns::write_sysctl("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535")?;
    if let Some(cpu) = args.cpu {
        pin(cpu)?;
    }
    let mut fixture = Fixture::new()?;
    let mut loops = Vec::new();
    for &kind in &args.loops {
        let start = Instant::now();
        fixture.run(kind, args.warmup)?;
        let warmup_ns = start.elapsed().as_nanos() as f64 / args.warmup.max(1) as f64;
        let per_batch = ((args.batch_ms as f64 * 1e6 / warmup_ns.max(1.0)) as u64).max(10);
        let mut samples = Vec::new();
        for _ in 0..args.batches {
            let start = Instant::now();
            fixture.run(kind, per_batch)?;
            samples.push(start.elapsed().as_nanos() as f64 / per_batch as f64);
        }
        let iterations = args.warmup + per_batch * args.batches;
        loops.push(LoopSamples {
            kind,
            ns_per_iteration: samples,
            iterations_per_batch: per_batch,
            iterations,
        });
    }
    runner::print_line(&LoopReport { pid: std::process::id(), cpu: args.cpu, loops })
}

#[derive(Debug, Clone, Args)]
pub struct FloodArgs {
    /// Failing connects in all (the Cilium pattern: EADDRNOTAVAIL).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub count: u64,
    /// Threads sharing the count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Failures per second of all threads together; 0: as fast as they go.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Wait for a line on stdin after the report of readiness (`{"ready":pid}`), so the
    /// caller can take its baseline (RSS, fds, counters) with the namespace set up.
    #[arg(long)]
    pub gate: bool,
}

#[derive(Debug, Serialize)]
struct FloodReport {
    pid: u32,
    comm: &'static str,
    /// connect() calls that failed with EADDRNOTAVAIL: what a tracer must count.
    failures: u64,
    /// connect() calls that did anything else (should be 0).
    unexpected: u64,
    elapsed_secs: f64,
}

pub fn run_flood(args: &FloodArgs) -> Result<(), Error> {
    prepare(COMM)?;
    // Set up before the threads: they inherit the namespace and share the held tuple.
    let fixture = Fixture::new()?;
    if args.gate {
        runner::print_line(&serde_json::json!({ "ready": std::process::id() }))?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(Error::Pipe)?;
    }
    let start = Instant::now();
    let threads = args.threads;
    let results: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let count = args.count / threads + u64::from(index < args.count % threads);
                let period =
                    (args.rate > 0).then(|| Duration::from_secs_f64(threads as f64 / args.rate as f64));
                let fixture = &fixture;
                scope.spawn(move || fixture.flood(count, period, start))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap_or((0, u64::MAX))).collect()
    });
    let failures = results.iter().map(|r| r.0).sum();
    let unexpected = results.iter().map(|r| r.1).fold(0u64, u64::saturating_add);
    runner::print_line(&FloodReport {
        pid: std::process::id(),
        comm: COMM,
        failures,
        unexpected,
        elapsed_secs: start.elapsed().as_secs_f64(),
    })
}

/// Names the process and moves it into a new network namespace (gone with the process).
pub(super) fn prepare(comm: &str) -> Result<(), Error> {
    let name = std::ffi::CString::new(comm).map_err(|_| Error::ActorSide {
        comm: comm.into(),
        what: "a process name without NUL bytes".into(),
    })?;
    nix::sys::prctl::set_name(&name).map_err(|source| Error::SetName { comm: comm.into(), source })?;
    netns::enter_new()?;
    Ok(())
}

fn pin(cpu: usize) -> Result<(), Error> {
    let mut set = nix::sched::CpuSet::new();
    let side = |what: String| Error::ActorSide { comm: COMM.into(), what };
    set.set(cpu).map_err(|e| side(format!("CPU {cpu}: {e}")))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| side(format!("sched_setaffinity to CPU {cpu}: {e}")))
}

/// The sockets the loops need held open: an upstream listener with one live client
/// connection from CLIENT:HELD_PORT, a listener on BOUND_PORT, and a socket to set
/// options on.
struct Fixture {
    _upstream: Fd,
    _holder: Fd,
    _bound: Fd,
    options: Fd,
    success: Fd,
}

impl Fixture {
    fn new() -> Result<Self, Error> {
        let upstream = listener(UPSTREAM, UPSTREAM_PORT)?;
        let holder = tcp_socket()?;
        set_int(holder.0, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
            .map_err(|e| unexpected("SO_REUSEADDR", e))?;
        bind(holder.0, CLIENT, HELD_PORT).map_err(|e| unexpected("bind holder", e))?;
        connect(holder.0, UPSTREAM, UPSTREAM_PORT).map_err(|e| unexpected("connect holder", e))?;
        let bound = listener(Ipv4Addr::LOCALHOST, BOUND_PORT)?;
        let options = tcp_socket()?;
        let success = listener(UPSTREAM, SUCCESS_PORT)?;
        Ok(Fixture { _upstream: upstream, _holder: holder, _bound: bound, options, success })
    }

    fn run(&mut self, kind: LoopKind, iterations: u64) -> Result<(), Error> {
        let expect = |op: &str, result: Result<(), i32>, errno: i32| match result {
            Err(got) if got == errno => Ok(()),
            other => Err(Error::ActorSide {
                comm: COMM.into(),
                what: format!("{op}: {other:?}, expected errno {errno}"),
            }),
        };
        let mut received = [0u8; PAYLOAD.len()];
        for i in 0..iterations {
            match kind {
                LoopKind::SuccessCycle => self.success_cycle(&mut received)?,
                LoopKind::RefusedConnect => {
                    let socket = tcp_socket()?;
                    expect(
                        "refused connect",
                        connect(socket.0, Ipv4Addr::LOCALHOST, CLOSED_PORT),
                        libc::ECONNREFUSED,
                    )?;
                }
                LoopKind::AddrNotAvail => {
                    expect("Cilium connect", self.addr_not_avail(), libc::EADDRNOTAVAIL)?
                }
                LoopKind::Bind => {
                    let socket = tcp_socket()?;
                    expect("bind", bind(socket.0, Ipv4Addr::LOCALHOST, BOUND_PORT), libc::EADDRINUSE)?;
                }
                LoopKind::SoMark => {
                    set_int(self.options.0, libc::SOL_SOCKET, libc::SO_MARK, (i & 0xff) as i32 + 1)
                        .map_err(|e| unexpected("SO_MARK", e))?
                }
                LoopKind::SoKeepalive => set_int(self.options.0, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)
                    .map_err(|e| unexpected("SO_KEEPALIVE", e))?,
            }
        }
        Ok(())
    }

    /// One successful connection cycle; both ends are closed on return (the client's
    /// first: the active close, as a client that is done would).
    fn success_cycle(&self, received: &mut [u8; PAYLOAD.len()]) -> Result<(), Error> {
        let client = tcp_socket()?;
        set_int(client.0, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
            .map_err(|e| unexpected("SO_REUSEADDR", e))?;
        connect(client.0, UPSTREAM, SUCCESS_PORT).map_err(|e| unexpected("connect", e))?;
        let server = accept(self.success.0)?;
        // SAFETY: PAYLOAD is a valid buffer of its length.
        let written = unsafe { libc::write(client.0, PAYLOAD.as_ptr().cast(), PAYLOAD.len()) };
        if written != PAYLOAD.len() as isize {
            return Err(unexpected("write", errno()));
        }
        let mut filled = 0;
        while filled < received.len() {
            let rest = &mut received[filled..];
            // SAFETY: `rest` is a valid, writable buffer of its length.
            let read = unsafe { libc::read(server.0, rest.as_mut_ptr().cast(), rest.len()) };
            if read <= 0 {
                return Err(unexpected("read", if read == 0 { libc::ECONNRESET } else { errno() }));
            }
            filled += read as usize;
        }
        drop(client);
        drop(server);
        Ok(())
    }

    /// One Cilium-pattern attempt; the socket is closed on return.
    fn addr_not_avail(&self) -> Result<(), i32> {
        let socket = tcp_socket().map_err(|_| -1)?;
        set_int(socket.0, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        bind(socket.0, CLIENT, HELD_PORT)?;
        connect(socket.0, UPSTREAM, UPSTREAM_PORT)
    }

    /// `count` Cilium-pattern failures, paced at `period` from `start` if given:
    /// (EADDRNOTAVAIL failures, other outcomes).
    fn flood(&self, count: u64, period: Option<Duration>, start: Instant) -> (u64, u64) {
        let (mut failures, mut unexpected) = (0, 0);
        for i in 0..count {
            if let Some(period) = period {
                let due = start + period * (i as u32);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            match self.addr_not_avail() {
                Err(libc::EADDRNOTAVAIL) => failures += 1,
                _ => unexpected += 1,
            }
        }
        (failures, unexpected)
    }
}

pub(super) fn unexpected(op: &str, errno: i32) -> Error {
    Error::Unexpected {
        comm: COMM.into(),
        pid: std::process::id(),
        op: op.into(),
        errno: nix::Error::from_raw(errno),
    }
}

/// An owned fd, closed on drop (closing is part of what the loops measure).
pub(super) struct Fd(pub(super) i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by this value and closed once.
        unsafe { libc::close(self.0) };
    }
}

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(super) fn tcp_socket() -> Result<Fd, Error> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 { Err(unexpected("socket", errno())) } else { Ok(Fd(fd)) }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

fn check(ret: i32) -> Result<(), i32> {
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

pub(super) fn connect(fd: i32, ip: Ipv4Addr, port: u16) -> Result<(), i32> {
    let addr = sockaddr(ip, port);
    // SAFETY: addr is a valid sockaddr_in of the given length.
    check(unsafe { libc::connect(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as u32) })
}

pub(super) fn bind(fd: i32, ip: Ipv4Addr, port: u16) -> Result<(), i32> {
    let addr = sockaddr(ip, port);
    // SAFETY: as in connect.
    check(unsafe { libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as u32) })
}

pub(super) fn set_int(fd: i32, level: i32, name: i32, value: i32) -> Result<(), i32> {
    // SAFETY: value is an int of the given length.
    check(unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), size_of::<i32>() as u32) })
}

/// accept4() asking for the peer's address, as the proxies sockerr is for do (nginx,
/// HAProxy and Envoy all pass a buffer): the tracer checks the accepted socket against
/// that address. Until 2026-11-30 it recorded no socket accepted without one, so an
/// accept without a buffer measured, and loaded, less than such a server makes it do.
pub(super) fn accept(listener: i32) -> Result<Fd, Error> {
    // SAFETY: all zeroes is a valid sockaddr_storage.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut peer_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: plain syscall; `peer` is writable for `peer_len` bytes.
    let fd =
        unsafe { libc::accept4(listener, (&raw mut peer).cast(), &raw mut peer_len, libc::SOCK_CLOEXEC) };
    if fd < 0 { Err(unexpected("accept", errno())) } else { Ok(Fd(fd)) }
}

pub(super) fn listener(ip: Ipv4Addr, port: u16) -> Result<Fd, Error> {
    let socket = tcp_socket()?;
    bind(socket.0, ip, port).map_err(|e| unexpected("bind listener", e))?;
    // SAFETY: plain syscall on an owned socket.
    check(unsafe { libc::listen(socket.0, 1024) }).map_err(|e| unexpected("listen", e))?;
    Ok(socket)
}
