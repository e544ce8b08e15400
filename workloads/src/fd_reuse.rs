//! A proxy's fd number outlives its socket: the upstream connect() fails with
//! EADDRNOTAVAIL (ip_local_port_range, shrunk inside the namespace, has no port left for
//! that destination) on fd N, the proxy closes it, and accept() hands fd N to a client's
//! connection. The client then resets that connection (SO_LINGER {1, 0}): the RST the
//! proxy receives on fd N is the accepted socket's, and has nothing to do with the
//! earlier connect's error. The failed socket had no recorded option, so the kernel
//! programs did not track its fd and reported no close: only what the reset itself
//! says about its socket tells the two apart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::report::{FdReuseReport, ResetFacts, RunFacts};
use super::runner::{self, Actor, Plan};
use super::{Addrs, CommonArgs, Error, netns};

const RANGE_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// Two ports: two connections to the upstream use them up.
const RANGE: (u16, u16) = (40000, 40001);
const PROXY_PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(3);

pub fn run(common: &CommonArgs) -> Result<FdReuseReport, Error> {
    let started = Instant::now();
    let ipv6 = common.ipv6;
    let addrs = Addrs { ipv6 };
    let netns = netns::enter_new()?;
    netns::write_sysctl(RANGE_PATH, &format!("{} {}", RANGE.0, RANGE.1))?;

    let mut upstream = Actor::spawn("upstream", "demo-upstream")?;
    let mut proxy = Actor::spawn("proxy", "demo-proxy")?;
    let mut client = Actor::spawn("client", "demo-client")?;
    runner::gate(common, netns, &[&upstream, &proxy, &client])?;

    let proxy_addr = SocketAddr::new(addrs.client_ip(), PROXY_PORT);
    let _listener = upstream.listen_on(addrs.upstream(), 16)?;
    // Before the upstream connections, so that accept() is the next call to take an fd.
    let (proxy_listener, _) = proxy.listen_on(proxy_addr, 16)?;

    let plan = Plan { connect: Some(addrs.upstream()), ..Plan::new(ipv6) };
    let first = Instant::now();
    let mut attempt = None;
    // Bounded: the two ports of the range, then the failure, plus a margin.
    for _ in 0..8 {
        let opened = proxy.open(&plan)?;
        if let Some(failed) = opened.attempt(&proxy, &plan, first.elapsed()) {
            proxy.close(opened.fd)?;
            attempt = Some(failed);
            break;
        }
    }
    let attempt = match attempt {
        Some(failed) if failed.errno == Errno::EADDRNOTAVAIL as i32 => failed,
        other => {
            return Err(Error::NotReproduced {
                what: "the proxy's upstream connects did not fail with EADDRNOTAVAIL".into(),
                report: format!("{other:?}"),
            });
        }
    };

    let (client_fd, _) = client.socket(ipv6, false)?;
    client.connect_ok(client_fd, proxy_addr)?;
    let client_local = client.local_addr(client_fd)?.ok_or_else(|| Error::Actor {
        comm: client.comm.clone(),
        pid: client.pid,
        what: "the connection to the proxy has no local address".into(),
    })?;
    let accepted = proxy.accept(proxy_listener, WAIT)?;
    if accepted.fd != attempt.fd {
        return Err(Error::NotReproduced {
            what: format!("accept() returned fd {} instead of the closed fd {}", accepted.fd, attempt.fd),
            report: format!("{accepted:?}"),
        });
    }
    client.linger_zero(client_fd)?;
    client.close(client_fd)?;
    let (_, error) = proxy.recv_until(accepted.fd, "never sent", WAIT)?;
    let report = FdReuseReport {
        run: RunFacts::new("fd-reuse", common, netns, vec![proxy.facts(), client.facts(), upstream.facts()]),
        reset: ResetFacts {
            direction: "received".into(),
            role: proxy.role.into(),
            pid: proxy.pid,
            comm: proxy.comm.clone(),
            fd: accepted.fd,
            src: accepted.local,
            dst: client_local,
            peer_role: client.role.into(),
            error: error.map(runner::errno_name),
        },
        attempt,
    };
    let reproduced = report.reset.error.as_deref() == Some("ECONNRESET");
    let expected = "expected the proxy's read on the accepted socket to fail with ECONNRESET";
    runner::finish(common, started, vec![proxy, client, upstream], report, reproduced, expected)
}
