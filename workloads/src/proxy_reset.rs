//! The second incident (Istio, 2022): an upstream answers
//! with `Transfer-Encoding: Chunked` and `Transfer-Encoding: chunked`. Transfer codings
//! are case-insensitive, so this is "chunked, chunked", not a framing a strict proxy
//! accepts: Envoy resets the upstream connection and fails the request
//! (`upstream_reset_before_response_started{protocol_error}`); curl shows the client
//! the reset. Finding it took tcpdump in the pod's netns and Wireshark.
//!
//! Here demo-proxy stands for Envoy: it accepts demo-client's connection, forwards the
//! request to demo-upstream, reads the response, finds two Transfer-Encoding fields and
//! rejects it by resetting both connections (SO_LINGER {1, 0} then close(): the kernel
//! sends RST from tcp_disconnect(), net/ipv4/tcp.c). The client and the upstream each
//! receive an RST (their next read fails with ECONNRESET).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::report::{HttpExchange, ResetFacts, ResetReport, RunFacts};
use super::runner::{self, Actor};
use super::{Error, ProxyResetArgs, netns};

/// The incident's request (curl to the sample app's `/wrong` endpoint).
pub const REQUEST: &str =
    "GET /wrong HTTP/1.1\r\nHost: http-chunked:8080\r\nUser-Agent: curl/7.80.0\r\nAccept: */*\r\n\r\n";
/// The sample app's answer: one Transfer-Encoding set by the app (`Chunked`), one by
/// the framework (`chunked`).
pub const RESPONSE: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: Chunked\r\n\
Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

/// Istio's inbound/outbound listener port and the app's port in the incident.
const PROXY_PORT: u16 = 15001;
const UPSTREAM_PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(3);

pub fn run(args: &ProxyResetArgs) -> Result<ResetReport, Error> {
    let started = Instant::now();
    let common = &args.common;
    let ip = if common.ipv6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    let netns = netns::enter_new()?;

    let mut upstream = Actor::spawn("upstream", "demo-upstream")?;
    let mut proxy = Actor::spawn("proxy", "demo-proxy")?;
    let mut client = Actor::spawn("client", "demo-client")?;
    runner::gate(common, netns, &[&upstream, &proxy, &client])?;

    let upstream_addr = SocketAddr::new(ip, UPSTREAM_PORT);
    let proxy_addr = SocketAddr::new(ip, PROXY_PORT);
    let (upstream_listener, _) = upstream.listen_on(upstream_addr, 16)?;
    let (proxy_listener, _) = proxy.listen_on(proxy_addr, 16)?;

    // Downstream: the client's request reaches the proxy.
    let (client_fd, _) = client.socket(common.ipv6, false)?;
    client.connect_ok(client_fd, proxy_addr)?;
    let downstream = proxy.accept_with(proxy_listener, WAIT, args.anonymous_accept)?;
    client.send(client_fd, REQUEST)?;
    let (request, _) = proxy.recv_until(downstream.fd, "\r\n\r\n", WAIT)?;

    // Upstream: the proxy forwards it and reads the answer.
    let (proxy_upstream_fd, _) = proxy.socket(common.ipv6, false)?;
    proxy.connect_ok(proxy_upstream_fd, upstream_addr)?;
    let proxy_upstream_local = proxy.local_addr(proxy_upstream_fd)?.ok_or_else(|| Error::Actor {
        comm: proxy.comm.clone(),
        pid: proxy.pid,
        what: "the upstream connection has no local address".into(),
    })?;
    let upstream_conn = upstream.accept(upstream_listener, WAIT)?;
    proxy.send(proxy_upstream_fd, &request)?;
    upstream.recv_until(upstream_conn.fd, "\r\n\r\n", WAIT)?;
    upstream.send(upstream_conn.fd, RESPONSE)?;
    let (response, _) = proxy.recv_until(proxy_upstream_fd, "0\r\n\r\n", WAIT)?;

    // The proxy's verdict, with httparse as Envoy's codec would parse the head.
    let transfer_encoding = transfer_encodings(&response);
    if transfer_encoding.len() < 2 {
        return Err(Error::NotReproduced {
            what: format!("the proxy received no duplicate Transfer-Encoding: {transfer_encoding:?}"),
            report: response,
        });
    }
    for fd in [proxy_upstream_fd, downstream.fd] {
        proxy.linger_zero(fd)?;
        proxy.close(fd)?;
    }
    let (_, client_error) = client.recv_until(client_fd, "\r\n\r\n", WAIT)?;
    let (_, upstream_error) = upstream.recv_until(upstream_conn.fd, "never sent", WAIT)?;

    let fact = |direction: &str, actor: &Actor, fd: i32, src, dst, peer_role: &str, error: Option<Errno>| {
        ResetFacts {
            direction: direction.into(),
            role: actor.role.into(),
            pid: actor.pid,
            comm: actor.comm.clone(),
            fd,
            src,
            dst,
            peer_role: peer_role.into(),
            error: error.map(runner::errno_name),
        }
    };
    let resets = vec![
        fact("sent", &proxy, proxy_upstream_fd, proxy_upstream_local, upstream_addr, "upstream", None),
        fact("sent", &proxy, downstream.fd, downstream.local, downstream.peer, "client", None),
        fact("received", &client, client_fd, downstream.peer, proxy_addr, "proxy", client_error),
        fact(
            "received",
            &upstream,
            upstream_conn.fd,
            upstream_addr,
            proxy_upstream_local,
            "proxy",
            upstream_error,
        ),
    ];
    let report = ResetReport {
        run: RunFacts::new(
            "proxy-reset",
            common,
            netns,
            vec![proxy.facts(), client.facts(), upstream.facts()],
        ),
        resets,
        exchange: HttpExchange { request, response, upstream: upstream_addr, transfer_encoding },
        anonymous_accept: args.anonymous_accept,
    };
    let reset_seen =
        |role: &str| report.resets.iter().any(|r| r.role == role && r.error.as_deref() == Some("ECONNRESET"));
    let reproduced = reset_seen("client") && reset_seen("upstream");
    let expected = "expected the client's and the upstream's next read to fail with ECONNRESET";
    runner::finish(common, started, vec![proxy, client, upstream], report, reproduced, expected)
}

/// The Transfer-Encoding values of a response head, parsed with httparse.
fn transfer_encodings(response: &str) -> Vec<String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    if parsed.parse(response.as_bytes()).is_err() {
        return Vec::new();
    }
    parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incident_response_has_two_transfer_encodings() {
        assert_eq!(transfer_encodings(RESPONSE), ["Chunked", "chunked"]);
        assert!(transfer_encodings("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").len() == 1);
    }
}
