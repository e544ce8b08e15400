//! A proxy binds the ip:port an upstream listens on, without SO_REUSEADDR: EADDRINUSE (98),
//! held by the upstream's listening socket. (A LISTEN socket conflicts even when both set
//! SO_REUSEADDR: inet_bind_conflict() in net/ipv4/inet_connection_sock.c,
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/inet_connection_sock.c.)
//!
//! `--other` first lets `demo-other` make the very same failing bind: a filter on
//! `--comm demo-proxy` (or on the proxy's pid) must report the proxy's failure and not the
//! other's. The other goes first so that, once the proxy's record arrived, the absence of
//! the other's is meaningful (the tracer's ring buffer keeps the order of the calls).

use std::time::Instant;

use nix::errno::Errno;

use super::procnet::{self, LISTEN};
use super::report::{HolderFacts, Report};
use super::runner::{self, Actor, Plan};
use super::{Addrs, BindInUseArgs, Error, netns};

pub fn run(args: &BindInUseArgs) -> Result<Report, Error> {
    let started = Instant::now();
    let common = &args.common;
    let ipv6 = common.ipv6;
    let addrs = Addrs { ipv6 };
    let netns = netns::enter_new()?;

    let mut upstream = Actor::spawn("upstream", "demo-upstream")?;
    let mut other = args.other.then(|| Actor::spawn("other", "demo-other")).transpose()?;
    let mut proxy = Actor::spawn("proxy", "demo-proxy")?;
    let mut everyone: Vec<&Actor> = vec![&upstream, &proxy];
    everyone.extend(other.as_ref());
    runner::gate(common, netns, &everyone)?;

    let (listener, listener_inode) = upstream.listen_on(addrs.upstream(), 16)?;

    let plan = Plan { bind: Some(addrs.upstream()), ..Plan::new(ipv6) };
    let first = Instant::now();
    let mut attempts = Vec::new();
    for actor in other.iter_mut().chain([&mut proxy]) {
        let at = first.elapsed();
        let opened = actor.open(&plan)?;
        actor.close(opened.fd)?;
        attempts.extend(opened.attempt(actor, &plan, at));
    }

    let sockets = procnet::tcp_sockets(ipv6)?;
    let held = sockets.iter().find(|entry| entry.inode == listener_inode);
    let holders = held
        .map(|entry| HolderFacts::from_tcp_entry(entry, Some((&upstream.facts(), listener))))
        .into_iter()
        .collect();

    let mut actors = vec![proxy.facts(), upstream.facts()];
    actors.extend(other.as_ref().map(Actor::facts));
    let report = Report { attempts, holders, ..Report::new("bind-in-use", common, netns, actors) };
    let expected_attempts = if args.other { 2 } else { 1 };
    let reproduced = report.attempts.len() == expected_attempts
        && report.attempts.iter().all(|a| a.errno == Errno::EADDRINUSE as i32)
        && held.is_some_and(|entry| entry.state == LISTEN && entry.local == addrs.upstream());
    let mut all = vec![proxy, upstream];
    all.extend(other);
    let expected = "expected bind() to fail with EADDRINUSE while the upstream LISTENs on the address";
    runner::finish(common, started, all, report, reproduced, expected)
}
