//! A proxy opens connections to one upstream without binding until connect() fails with
//! EADDRNOTAVAIL (99): every port of ip_local_port_range already carries a connection to
//! that destination, and __inet_hash_connect() finds no port whose 4-tuple would be unique.
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/inet_hashtables.c
//! (__inet_hash_connect). The range is a per-namespace sysctl, so it is shrunk to a few
//! ports inside the scenario's namespace only.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::procnet::{self, ESTABLISHED};
use super::report::{Connection, PortFacts, Report};
use super::runner::{self, Actor, Plan};
use super::{Addrs, Error, ExhaustionArgs, netns};

const RANGE_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const FIRST_PORT: u16 = 40000;

pub fn run(args: &ExhaustionArgs) -> Result<Report, Error> {
    let started = Instant::now();
    let common = &args.common;
    let ipv6 = common.ipv6;
    let addrs = Addrs { ipv6 };
    let netns = netns::enter_new()?;

    // An even count of ports from an even first one: the ends differ in parity, as the
    // kernel prefers, and every port of the range is usable (see parse_port_count).
    let last = FIRST_PORT + args.ports - 1;
    netns::write_sysctl(RANGE_PATH, &format!("{FIRST_PORT} {last}"))?;
    let written = netns::read_sysctl(RANGE_PATH)?;
    let range = parse_range(&written).ok_or(Error::ProcNet { path: RANGE_PATH.into(), line: written })?;

    let mut upstream = Actor::spawn("upstream", "demo-upstream")?;
    let mut proxy = Actor::spawn("proxy", "demo-proxy")?;
    runner::gate(common, netns, &[&upstream, &proxy])?;

    // The backlog holds every connection until the upstream accepts them below.
    let (listener, _) = upstream.listen_on(addrs.upstream(), i32::from(args.ports) + 16)?;

    let plan = Plan { connect: Some(addrs.upstream()), ..Plan::new(ipv6) };
    let mut connections = Vec::new();
    let mut attempts = Vec::new();
    let first = Instant::now();
    // Bounded: the range size plus a margin, in case the kernel allowed more than expected.
    for _ in 0..usize::from(args.ports) + 8 {
        let at = first.elapsed();
        let opened = proxy.open(&plan)?;
        if let Some(attempt) = opened.attempt(&proxy, &plan, at) {
            proxy.close(opened.fd)?;
            attempts.push(attempt);
            break;
        }
        let src = opened.src.ok_or_else(|| Error::Actor {
            comm: proxy.comm.clone(),
            pid: proxy.pid,
            what: format!("connected fd {} has no local address", opened.fd),
        })?;
        connections.push(Connection::of(&proxy.facts(), opened.fd, src, addrs.upstream()));
    }
    for _ in &connections {
        upstream.accept(listener, Duration::from_secs(2))?;
    }

    let in_use = procnet::tcp_sockets(ipv6)?
        .iter()
        .filter(|entry| {
            entry.state == ESTABLISHED
                && entry.remote == addrs.upstream()
                && (range[0]..=range[1]).contains(&entry.local.port())
        })
        .count();

    let report = Report {
        attempts,
        connections,
        ports: Some(PortFacts { range, in_use }),
        ..Report::new("exhaustion", common, netns, vec![proxy.facts(), upstream.facts()])
    };
    let size = usize::from(range[1] - range[0]) + 1;
    let reproduced = report.attempts.len() == 1
        && report.attempts[0].errno == Errno::EADDRNOTAVAIL as i32
        && report.connections.len() == size
        && in_use == size;
    let expected = "expected exactly one connection per port of the range, then EADDRNOTAVAIL";
    runner::finish(common, started, vec![proxy, upstream], report, reproduced, expected)
}

fn parse_range(text: &str) -> Option<[u16; 2]> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    let range = [parts.next()?.ok()?, parts.next()?.ok()?];
    (parts.next().is_none() && range[0] <= range[1]).then_some(range)
}

#[cfg(test)]
mod tests {
    #[test]
    fn range_parses_like_the_sysctl_prints_it() {
        assert_eq!(super::parse_range("40000\t40007"), Some([40000, 40007]));
        assert_eq!(super::parse_range("40007 40000"), None);
        assert_eq!(super::parse_range("40000"), None);
    }
}
