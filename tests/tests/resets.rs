//! TCP resets, from the `proxy-reset` scenario (the Istio incident): demo-proxy reads a
//! response with `Transfer-Encoding: Chunked` and `Transfer-Encoding: chunked` from
//! demo-upstream and resets both connections with SO_LINGER 0; demo-client and
//! demo-upstream each receive the RST. Records are picked by the scenario's own pids.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use sockerr_e2e::*;

const TRACED: [&str; 6] = ["--comm", "demo-proxy", "--comm", "demo-client", "--comm", "demo-upstream"];

fn tracer(extra: &[&str]) -> Tracer {
    let mut args = TRACED.to_vec();
    args.extend_from_slice(extra);
    Tracer::start(&args)
}

fn is_reset(record: &Value) -> bool {
    record.event() == "rst_sent" || record.event() == "rst_received"
}

/// Waits for the 4 resets of the run and returns every record of its actors.
fn resets_of(tracer: Tracer, report: &ResetReport) -> (Vec<Value>, Vec<String>) {
    let pids: Vec<u64> = report.run.actors.iter().map(|a| u64::from(a.pid)).collect();
    let ours = |r: &Value| r.pid().is_some_and(|pid| pids.contains(&pid));
    tracer.wait_for_records(report.resets.len(), RECORD_TIMEOUT, |r| ours(r) && is_reset(r));
    let stopped = tracer.stop();
    let records: Vec<Value> = stopped.records().into_iter().filter(ours).collect();
    let lines = stopped.stdout.clone();
    (records, lines)
}

/// The record of the reset the report describes, asserted field by field.
fn record_of<'r>(records: &'r [Value], facts: &ResetFacts, report: &ResetReport) -> &'r Value {
    let event = format!("rst_{}", facts.direction);
    let matching: Vec<&Value> = records
        .iter()
        .filter(|r| r.event() == event && r.pid() == Some(u64::from(facts.pid)) && r["fd"] == facts.fd)
        .collect();
    let [record] = matching.as_slice() else { panic!("one {event} of {facts:?} expected: {records:#?}") };
    let context = || format!("record: {record}\nfacts: {facts:?}");
    assert_eq!(record.str_at("/comm"), Some(facts.comm.as_str()), "{}", context());
    assert_eq!(record["src"], addr_json(Some(facts.src)), "{}", context());
    assert_eq!(record["dst"], addr_json(Some(facts.dst)), "{}", context());
    assert_eq!(record.u64_at("/netns"), Some(report.run.netns), "{}", context());
    assert_eq!(record.str_at("/rst/direction"), Some(facts.direction.as_str()), "{}", context());
    assert_eq!(record["rst"]["socket"], Value::Bool(true), "{}", context());
    assert_eq!(record["errno"], Value::Null, "{}", context());
    record
}

/// The kernel names the reason only from Linux 6.10 (tcp:tcp_send_reset's `reason`).
fn kernel_has_reset_reasons() -> bool {
    tracepoint_has_field("tcp", "tcp_send_reset", "reason")
}

fn assert_reason(record: &Value) {
    if kernel_has_reset_reasons() {
        let reason = record.str_at("/rst/reason").unwrap_or_else(|| panic!("no reason name: {record}"));
        assert!(!reason.is_empty() && reason.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{record}");
        assert!(record.u64_at("/rst/reason_code").is_some(), "{record}");
    } else {
        assert_eq!(record["rst"]["reason"], Value::Null, "{record}");
    }
}

fn assert_duplicate_transfer_encoding(anomaly: &Value, report: &ResetReport) {
    let context = || format!("anomaly: {anomaly}");
    assert_eq!(anomaly.str_at("/kind"), Some("duplicate_transfer_encoding"), "{}", context());
    let values: Vec<&str> =
        anomaly["values"].as_array().map_or(Vec::new(), |v| v.iter().filter_map(Value::as_str).collect());
    assert_eq!(values, report.exchange.transfer_encoding, "{}", context());
    assert_eq!(values, ["Chunked", "chunked"], "{}", context());
    assert_eq!(anomaly.str_at("/message"), Some("response"), "{}", context());
}

#[test]
fn proxy_reset_with_http_peek_shows_the_duplicate_transfer_encoding() {
    let tracer = tracer(&["--http-peek", "--output", "json"]);
    let report = run_reset_scenario(&[]);
    let (records, _) = resets_of(tracer, &report);
    let upstream = report.exchange.upstream.to_string();

    // The client's connection: reset after the upstream's response, on another socket.
    let facts = report.reset("sent", "proxy", "client").expect("the proxy reset the client");
    let downstream = record_of(&records, facts, &report);
    assert_eq!(downstream.str_at("/rst/by"), Some("socket"), "{downstream}");
    assert_eq!(downstream["rst"]["active"], Value::Bool(true), "{downstream}");
    assert_reason(downstream);
    let anomaly = &downstream["http_anomaly"];
    assert_duplicate_transfer_encoding(anomaly, &report);
    assert_eq!(anomaly.str_at("/direction"), Some("received"), "{downstream}");
    assert_eq!(anomaly.str_at("/peer"), Some(upstream.as_str()), "{downstream}");
    let payload = downstream["payload"].as_array().unwrap_or_else(|| panic!("no payload: {downstream}"));
    let own = payload.iter().find(|p| p["socket"] == "reset").expect("the reset socket's exchange");
    assert_eq!(own.str_at("/received"), Some(report.exchange.request.as_str()), "{downstream}");
    assert_eq!(own.str_at("/sent"), Some(""), "the proxy answered nothing: {downstream}");
    let related = payload.iter().find(|p| p["socket"] == "related").expect("the upstream exchange");
    assert_eq!(related.str_at("/peer"), Some(upstream.as_str()), "{downstream}");
    assert_eq!(related.str_at("/sent"), Some(report.exchange.request.as_str()), "{downstream}");
    assert_eq!(related.str_at("/received"), Some(report.exchange.response.as_str()), "{downstream}");

    // The upstream connection: the bad response is on the reset socket itself.
    let facts = report.reset("sent", "proxy", "upstream").expect("the proxy reset the upstream");
    let to_upstream = record_of(&records, facts, &report);
    assert_duplicate_transfer_encoding(&to_upstream["http_anomaly"], &report);
    assert_eq!(to_upstream.u64_at("/http_anomaly/fd"), Some(facts.fd as u64), "{to_upstream}");
}

#[test]
fn ipv6_resets_keep_their_tuples_and_anomaly() {
    let tracer = tracer(&["--http-peek", "--output", "json"]);
    let report = run_reset_scenario(&["--ipv6"]);
    assert!(report.run.ipv6);
    let (records, _) = resets_of(tracer, &report);
    for facts in &report.resets {
        let record = record_of(&records, facts, &report);
        assert!(record.str_at("/src").is_some_and(|s| s.starts_with("[::1]:")), "{record}");
    }
    let facts = report.reset("sent", "proxy", "client").expect("the proxy reset the client");
    let downstream = record_of(&records, facts, &report);
    assert_duplicate_transfer_encoding(&downstream["http_anomaly"], &report);
    let upstream = report.exchange.upstream.to_string();
    assert_eq!(downstream.str_at("/http_anomaly/peer"), Some(upstream.as_str()), "{downstream}");
}

#[test]
fn received_resets_name_the_receiver() {
    let tracer = tracer(&["--output", "json"]);
    let report = run_reset_scenario(&[]);
    let (records, _) = resets_of(tracer, &report);
    for role in ["client", "upstream"] {
        let facts = report.reset("received", role, "proxy").unwrap_or_else(|| panic!("{role} got no RST"));
        assert_eq!(facts.error.as_deref(), Some("ECONNRESET"), "{facts:?}");
        let record = record_of(&records, facts, &report);
        // Received in softirq: named through the socket recorded at connect/accept.
        assert_eq!(record.str_at("/rst/by"), Some("socket"), "{record}");
        assert_eq!(record["rst"]["reason"], Value::Null, "the receiver learns no reason: {record}");
        // The socket's cookie, as `ss -e` shows it: the program asks the kernel for it,
        // which makes one for a socket that has none yet.
        assert!(record["rst"]["sock_cookie"].as_u64().is_some_and(|cookie| cookie != 0), "{record}");
    }
}

#[test]
fn without_http_peek_no_payload_byte_is_captured() {
    let tracer = tracer(&["--output", "json"]);
    let report = run_reset_scenario(&[]);
    let (records, lines) = resets_of(tracer, &report);
    assert_eq!(records.iter().filter(|r| is_reset(r)).count(), report.resets.len(), "{records:#?}");
    for record in &records {
        assert_eq!(record["payload"], Value::Null, "{record}");
        assert_eq!(record["http_anomaly"], Value::Null, "{record}");
        assert_eq!(record["http_anomalies"], Value::Array(Vec::new()), "{record}");
    }
    // Nothing of either message anywhere in the output, from any process.
    for needle in ["GET /wrong", "http-chunked", "curl/7.80.0", "Transfer-Encoding", "hello"] {
        assert!(!lines.iter().any(|line| line.contains(needle)), "{needle:?} leaked into the output");
    }
}

/// accept(fd, NULL, NULL) (libuv's, so Node.js's, accept) records the socket too: the
/// fd walk checks the socket against its file instead of against the peer address.
#[test]
fn a_socket_accepted_without_its_address_is_attributed_by_its_socket() {
    let tracer = tracer(&["--output", "json"]);
    let report = run_reset_scenario(&["--anonymous-accept"]);
    assert!(report.anonymous_accept);
    let (records, _) = resets_of(tracer, &report);
    for peer in ["client", "upstream"] {
        let facts =
            report.reset("sent", "proxy", peer).unwrap_or_else(|| panic!("the proxy reset the {peer}"));
        let record = record_of(&records, facts, &report);
        assert_eq!(record.str_at("/rst/by"), Some("socket"), "{record}");
    }
}

/// A Node.js server (libuv accepts with no address buffer) whose client resets the
/// connection: the reset is received in softirq, so only a recorded socket names node.
#[test]
fn a_reset_received_by_a_node_js_server_names_it() {
    let node = Path::new("/usr/bin/node");
    if !node.exists() {
        // The arm64 guests run Debian's arm64 packages, which do not include node.
        eprintln!("skipped: {} is not installed here", node.display());
        return;
    }
    let tracer = Tracer::start(&["--comm", "node", "--output", "json"]);
    let mut server = NodeServer::start(node);
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).expect("connect to the node server");
    client.write_all(b"x").expect("write to the node server");
    server.wait_for_line("read");
    // SO_LINGER 0: close() sends a RST instead of a FIN.
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::Linger, &linger).expect("SO_LINGER 0");
    let local = client.local_addr().expect("local address");
    drop(client);
    server.wait_for_line("server saw ECONNRESET");
    let is_received = |r: &Value| r.event() == "rst_received" && r.str_at("/dst") == Some(&local.to_string());
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_received);
    let stopped = tracer.stop();
    let records = stopped.records();
    let record = records.iter().find(|r| is_received(r)).expect("waited for above");
    assert_eq!(record.str_at("/comm"), Some("node"), "{record}");
    assert_eq!(record.pid(), Some(u64::from(server.child.id())), "{record}");
    assert_eq!(record.str_at("/rst/by"), Some("socket"), "{record}");
}

#[test]
fn text_line_names_proxy_socket_and_anomaly() {
    let tracer = tracer(&["--http-peek"]);
    let report = run_reset_scenario(&[]);
    let facts = report.reset("sent", "proxy", "client").expect("the proxy reset the client").clone();
    let expected = format!(
        "RST sent by {}[{}] fd={} {} -> {} after response from {} with duplicate Transfer-Encoding (\"Chunked\", \
         \"chunked\")",
        facts.comm, facts.pid, facts.fd, facts.src, facts.dst, report.exchange.upstream
    );
    let line = tracer.wait_for_line(RECORD_TIMEOUT, |line| line.contains(&expected));
    let client = report.reset("received", "client", "proxy").expect("the client got the RST");
    let received = format!(
        "RST received by {}[{}] fd={} {} -> {}",
        client.comm, client.pid, client.fd, client.src, client.dst
    );
    tracer.wait_for_line(RECORD_TIMEOUT, |line| line.contains(&received));
    assert!(line.find(" RST sent by ").is_some_and(|at| at == 12), "time first: {line}");
    tracer.stop();
}

#[test]
fn http_peek_requires_a_process_filter() {
    require_root();
    let run = run_to_end(
        "sockerr trace --http-peek",
        Command::new(sockerr_bin()).args(["trace", "--http-peek"]),
        Duration::from_secs(30),
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("--http-peek") && run.stderr.contains("--comm"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// `node` running a TCP server on a loopback port of its choosing, which says on stdout
/// when it read from a connection and when that connection was reset. Killed on drop.
struct NodeServer {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl NodeServer {
    const SCRIPT: &str = r"
        const net = require('net');
        const server = net.createServer((socket) => {
            // Reading, so that libuv polls the socket and sees the reset.
            socket.on('data', () => console.log('read'));
            socket.on('error', (err) => { console.log('server saw ' + err.code); server.close(); });
        });
        server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
        setTimeout(() => process.exit(0), 30000);
    ";

    fn start(node: &Path) -> Self {
        let mut child = Command::new(node)
            .args(["-e", Self::SCRIPT])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", node.display()));
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = NodeServer { child, port: 0, lines };
        let port = server.wait_for_line("port ");
        server.port = port["port ".len()..].parse().unwrap_or_else(|err| panic!("{port:?}: {err}"));
        server
    }

    /// The first line starting with `prefix`, within the scaled record timeout.
    fn wait_for_line(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + patience(RECORD_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(err) => panic!("node said no {prefix:?} line ({err})"),
            }
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
