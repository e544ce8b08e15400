//! A proxy connects to a port nobody listens on: the SYN is answered with RST and the
//! connect fails with ECONNREFUSED (111). On a non-blocking socket (Envoy's way) connect()
//! returns EINPROGRESS, because the RST is processed only when connect() releases the
//! socket lock (backlog processing in release_sock()); the error arrives later through
//! SO_ERROR (tcp_reset() -> tcp_done() -> sk_error_report()). With `--blocking` connect()
//! sleeps in inet_wait_for_connect() and returns the error itself.
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/af_inet.c (__inet_stream_connect),
//! .../net/ipv4/tcp_input.c (tcp_reset).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::report::Report;
use super::runner::{self, Actor, Plan};
use super::{Addrs, Error, RefusedArgs, netns};

/// Next to the upstream's 443, where nothing listens.
const CLOSED_PORT: u16 = 444;

pub fn run(args: &RefusedArgs) -> Result<Report, Error> {
    let started = Instant::now();
    let common = &args.common;
    let ipv6 = common.ipv6;
    let addrs = Addrs { ipv6 };
    let netns = netns::enter_new()?;

    let mut proxy = Actor::spawn("proxy", "demo-proxy")?;
    runner::gate(common, netns, &[&proxy])?;

    let dst = SocketAddr::new(addrs.upstream_ip(), CLOSED_PORT);
    let plan = Plan { nonblocking: !args.blocking, connect: Some(dst), ..Plan::new(ipv6) };
    let opened = proxy.open(&plan)?;
    proxy.close(opened.fd)?;
    let attempts: Vec<_> = opened.attempt(&proxy, &plan, Duration::ZERO).into_iter().collect();

    let report = Report { attempts, ..Report::new("refused", common, netns, vec![proxy.facts()]) };
    let expect_async = !args.blocking;
    let reproduced = report.attempts.len() == 1
        && report.attempts[0].errno == Errno::ECONNREFUSED as i32
        && report.attempts[0].is_async == expect_async;
    let how = if args.blocking { "from connect() itself" } else { "through SO_ERROR after EINPROGRESS" };
    runner::finish(common, started, vec![proxy], report, reproduced, &format!("expected ECONNREFUSED {how}"))
}
