//! A proxy binds an address its network namespace does not have, without IP_TRANSPARENT
//! or IP_FREEBIND: EADDRNOTAVAIL (99), the way a transparent proxy fails when the option
//! is missing. inet_bind_sk() rejects it unless inet_addr_valid_or_nonlocal() allows
//! non-local binds (net/ipv4/af_inet.c; __inet6_bind() in net/ipv6/af_inet6.c,
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/af_inet.c).
//!
//! The same proxy then binds the same address on a socket with IP_TRANSPARENT, which must
//! succeed: that is what makes "address_not_local" the cause rather than a guess.
//!
//! The address comes from a documentation range (192.0.2.0/24, RFC 5737; 2001:db8::/32,
//! RFC 3849): it is only ever passed to bind(), never sent a packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use nix::errno::Errno;

use super::protocol::SockOpt;
use super::report::Report;
use super::runner::{self, Actor, Plan};
use super::{CommonArgs, Error, netns};

/// The mark is there so that the failing socket carries an option, as Envoy's do.
const MARK: u32 = 0x0000_0b00;

pub fn run(common: &CommonArgs) -> Result<Report, Error> {
    let started = Instant::now();
    let ipv6 = common.ipv6;
    let netns = netns::enter_new()?;
    let mut proxy = Actor::spawn("proxy", "demo-proxy")?;
    runner::gate(common, netns, &[&proxy])?;

    let nonlocal = if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    };
    let addr = SocketAddr::new(nonlocal, 8080);
    let plain = Plan { bind: Some(addr), opts: vec![SockOpt::Mark(MARK)], ..Plan::new(ipv6) };
    let opened = proxy.open(&plain)?;
    proxy.close(opened.fd)?;
    let attempts: Vec<_> = opened.attempt(&proxy, &plain, started.elapsed()).into_iter().collect();

    let transparent = if ipv6 { SockOpt::Ipv6Transparent } else { SockOpt::IpTransparent };
    let fixed = Plan { bind: Some(addr), opts: vec![SockOpt::Mark(MARK), transparent], ..Plan::new(ipv6) };
    let with_transparent = proxy.open(&fixed)?;
    proxy.close(with_transparent.fd)?;

    let report = Report { attempts, ..Report::new("bind-not-local", common, netns, vec![proxy.facts()]) };
    let reproduced = report.attempts.len() == 1
        && report.attempts[0].errno == Errno::EADDRNOTAVAIL as i32
        && with_transparent.failure.is_none();
    let expected = "expected bind() to fail with EADDRNOTAVAIL, and to succeed with IP_TRANSPARENT";
    runner::finish(common, started, vec![proxy], report, reproduced, expected)
}
