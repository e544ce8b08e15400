//! Reproductions of real socket failures, each in its own throwaway network namespace.
//!
//! `sockerr scenario <NAME>` is the ground truth the end-to-end tests and `sockerr demo`
//! compare sockerr's observations against: it makes the kernel fail for real and prints a
//! JSON [`Report`] of what every actor did (pids, fds, tuples, options, errnos), never what a
//! tracer saw. It traces nothing itself.
//!
//! Shape: the runner (this process, single-threaded, no async runtime) moves itself into a
//! new network namespace, brings `lo` up and re-executes its own binary as *actor*
//! processes (`demo-proxy`, `demo-client`, `demo-upstream`, ...). Each actor is a socket
//! puppet: it performs one syscall per request line on stdin and answers with one JSON line
//! on stdout, so the runner orders every step across processes without sleeping. The
//! namespace lives only as long as these processes: nothing to clean up, even after SIGKILL
//! (actors die with the runner through PR_SET_PDEATHSIG).

mod actor;
pub mod bench_loop;
mod bind_in_use;
mod bind_not_local;
mod bind_time_wait;
pub mod busy_node;
mod cilium;
mod exhaustion;
mod fd_reuse;
pub mod listen_overflow;
mod netns;
/// The /proc/net/tcp parser; public for the fuzz target `proc_net_tcp` (../fuzz).
pub mod procnet;
mod protocol;
mod proxy_reset;
mod refused;
pub mod report;
mod runner;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::{Args, Subcommand};
pub use report::{Report, ResetReport};

/// `sockerr scenario <NAME> [options]`
#[derive(Debug, Clone, Args)]
#[command(subcommand_value_name = "NAME", subcommand_help_heading = "Scenarios")]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// The Cilium/Envoy incident: a proxy binds a live client's ip:port with SO_MARK,
    /// SO_REUSEADDR and IP_TRANSPARENT and connects to the same upstream: connect()
    /// fails with EADDRNOTAVAIL on every retry.
    Cilium(CiliumArgs),
    /// A proxy binds the address an upstream listens on: EADDRINUSE.
    BindInUse(BindInUseArgs),
    /// A proxy binds an address the namespace lacks, without IP_TRANSPARENT:
    /// EADDRNOTAVAIL (then binds it with IP_TRANSPARENT, which succeeds).
    BindNotLocal(CommonArgs),
    /// A proxy binds the ip:port of a closed connection still in TIME_WAIT: EADDRINUSE,
    /// held by no process.
    BindTimeWait(CommonArgs),
    /// A proxy connects to one upstream until ip_local_port_range (made tiny inside the
    /// namespace) runs out: EADDRNOTAVAIL.
    Exhaustion(ExhaustionArgs),
    /// A server listens with a tiny backlog and stops accepting; a client's handshakes
    /// beyond the accept queue are dropped (TcpExtListenOverflows).
    ListenOverflow(ListenOverflowArgs),
    /// A proxy connects to a port nobody listens on: ECONNREFUSED, reported
    /// asynchronously (SO_ERROR) unless --blocking.
    Refused(RefusedArgs),
    /// The Istio incident: an upstream answers with two Transfer-Encoding fields
    /// ("Chunked", "chunked"); the proxy rejects the response and resets the upstream and
    /// the client connection (SO_LINGER 0).
    ProxyReset(ProxyResetArgs),
    /// A proxy's upstream connect fails with EADDRNOTAVAIL on fd N (ports exhausted);
    /// the proxy closes it and accept() hands fd N to a client, which then resets the
    /// connection: the proxy receives an RST on a socket that never failed.
    FdReuse(CommonArgs),
    /// Internal: one actor process of a running scenario.
    #[command(hide = true)]
    Actor(actor::ActorArgs),
    /// Internal: the micro-loops of `cargo xtask bench`; prints ns/iteration samples.
    #[command(hide = true)]
    BenchLoop(bench_loop::BenchLoopArgs),
    /// Internal: Cilium-pattern failing connects for throughput and soak runs.
    #[command(hide = true)]
    Flood(bench_loop::FloodArgs),
    /// Internal: many held loopback connections while the Cilium pattern fails (the
    /// busy-node run of `cargo xtask bench`).
    #[command(hide = true)]
    BusyNode(busy_node::BusyNodeArgs),
    /// Internal: one holder process of `busy-node`.
    #[command(hide = true)]
    BusyHolder(busy_node::BusyHolderArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Use IPv6 (::1) instead of 127.0.0.0/8.
    #[arg(long)]
    pub ipv6: bool,
    /// Keep actors and the sockets holding the tuple alive this long after the failures,
    /// so that a tracer can look up the holder.
    #[arg(long, value_name = "MS", default_value_t = 1500, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub hold_ms: u64,
    /// Once the actors run, print their pids as one JSON line on stdout
    /// (`{"gate":{"actors":[...]}}`) and wait (at most 60 s) for a line on stdin before
    /// making anything fail: lets a caller start a tracer filtered on those pids.
    #[arg(long)]
    pub gate: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CiliumArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connection attempts of the proxy: Envoy's retry policy in the incident was one
    /// try plus 3 retries.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub attempts: u32,
    /// The proxy keeps its last failed socket open until the actors exit instead of
    /// closing it (a proxy that holds on to it): a tracer's socket table still lists it,
    /// with its options and error, during the hold.
    #[arg(long)]
    pub keep_open: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BindInUseArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Before the proxy, let a process named `demo-other` make the same failing bind
    /// (for filter tests: `--comm demo-proxy` must not report it).
    #[arg(long)]
    pub other: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExhaustionArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Size of ip_local_port_range inside the namespace (starting at 40000); even, from
    /// 2 to 256.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = parse_port_count)]
    pub ports: u16,
}

/// The kernel scans the range in two parity passes over an even count of ports
/// (__inet_hash_connect()): with an odd count a port may stay unused (a range of 3 gives 2
/// connections here), and the scenario would no longer know how many to expect.
fn parse_port_count(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(count) if (2..=256).contains(&count) && count % 2 == 0 => Ok(count),
        _ => Err(format!("`{text}`: expected an even number of ports from 2 to 256")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ProxyResetArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The proxy accepts with accept(fd, NULL, NULL): no peer address for sockerr to
    /// recognise the socket by, so the reset it sends must be attributed from its close().
    #[arg(long)]
    pub anonymous_accept: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ListenOverflowArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// listen()'s backlog: backlog + 1 connections fit in the accept queue.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(i32).range(0..=64))]
    pub backlog: i32,
    /// Connections the client opens.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub clients: u32,
    /// How long the clients keep retrying their SYNs before giving up.
    #[arg(long, value_name = "MS", default_value_t = 2500, value_parser = clap::value_parser!(u64).range(0..=20_000))]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct RefusedArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Use a blocking socket: connect() itself returns ECONNREFUSED.
    #[arg(long)]
    pub blocking: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create a network namespace (needs root or CAP_SYS_ADMIN)")]
    Unshare(#[source] nix::Error),
    #[error("cannot bring lo up in the scenario's network namespace")]
    LoopbackUp(#[source] std::io::Error),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected line in {path}: {line:?}")]
    ProcNet { path: String, line: String },
    #[error("cannot start actor {comm} from {exe}")]
    Spawn {
        comm: String,
        exe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("actor {comm}[{pid}]: {what}")]
    Actor { comm: String, pid: u32, what: String },
    #[error("actor {comm}[{pid}]: no answer to {op} within {} ms", timeout.as_millis())]
    ActorTimeout { comm: String, pid: u32, op: String, timeout: Duration },
    #[error("actor {comm}[{pid}]: {op} failed unexpectedly")]
    Unexpected {
        comm: String,
        pid: u32,
        op: String,
        #[source]
        errno: nix::Error,
    },
    #[error("actor pipe")]
    Pipe(#[source] std::io::Error),
    #[error("malformed actor message {line:?}")]
    Protocol {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no line on stdin within {} s to open the gate", timeout.as_secs())]
    GateTimeout { timeout: Duration },
    /// The kernel did something else than the scenario exists to show: the report says
    /// what happened instead.
    #[error("the kernel did not reproduce the failure: {what}\nreport: {report}")]
    NotReproduced { what: String, report: String },
    #[error("cannot set the process name to {comm:?}")]
    SetName {
        comm: String,
        #[source]
        source: nix::Error,
    },
    #[error("actor {comm}: {what}")]
    ActorSide { comm: String, what: String },
}

/// Runs `sockerr scenario ...`: prints the report (or, for the internal actor, serves
/// requests until stdin closes).
pub fn run(args: ScenarioArgs) -> Result<(), Error> {
    let report = match args.scenario {
        Scenario::Actor(args) => return actor::run(args),
        Scenario::BenchLoop(args) => return bench_loop::run_loops(&args),
        Scenario::Flood(args) => return bench_loop::run_flood(&args),
        Scenario::BusyNode(args) => return busy_node::run(&args),
        Scenario::BusyHolder(args) => return busy_node::run_holder(&args),
        Scenario::Cilium(args) => cilium::run(&args)?,
        Scenario::BindInUse(args) => bind_in_use::run(&args)?,
        Scenario::BindNotLocal(args) => bind_not_local::run(&args)?,
        Scenario::BindTimeWait(args) => bind_time_wait::run(&args)?,
        Scenario::Exhaustion(args) => exhaustion::run(&args)?,
        Scenario::Refused(args) => refused::run(&args)?,
        Scenario::ListenOverflow(args) => return runner::print_line(&listen_overflow::run(&args)?),
        Scenario::ProxyReset(args) => return runner::print_line(&proxy_reset::run(&args)?),
        Scenario::FdReuse(args) => return runner::print_line(&fd_reuse::run(&args)?),
    };
    runner::print_line(&report)
}

fn not_reproduced(what: &str, report: &impl serde::Serialize) -> Error {
    Error::NotReproduced {
        what: what.into(),
        report: serde_json::to_string(report).unwrap_or_else(|e| format!("(unprintable: {e})")),
    }
}

/// The only addresses scenarios send to: 127.0.0.0/8 and ::1, inside their own namespace.
/// (`bind-not-local` also binds a documentation address, which fails by design.)
pub(crate) struct Addrs {
    pub ipv6: bool,
}

impl Addrs {
    /// The client's address (IPv4: a non-default 127/8 address, as a pod IP would be).
    pub fn client_ip(&self) -> IpAddr {
        if self.ipv6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)) }
    }

    /// The upstream's address (IPv4: stands in for the S3 endpoint of the incident).
    pub fn upstream_ip(&self) -> IpAddr {
        if self.ipv6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::new(127, 0, 0, 19)) }
    }

    pub fn upstream(&self) -> SocketAddr {
        SocketAddr::new(self.upstream_ip(), 443)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_counts_are_even_and_bounded() {
        assert_eq!(parse_port_count("8"), Ok(8));
        assert_eq!(parse_port_count("256"), Ok(256));
        assert!(parse_port_count("7").is_err());
        assert!(parse_port_count("0").is_err());
        assert!(parse_port_count("258").is_err());
        assert!(parse_port_count("many").is_err());
    }
}
