//! `sockerr daemon`: the Cilium incident seen through its metrics, its live socket table
//! and its NDJSON; health endpoints; SIGTERM; a taken port; the panic policy; slow and
//! oversized HTTP clients while a failure is traced.
//!
//! The daemon traces `--pid <the scenario's proxy>` (the scenario waits at its gate until
//! the daemon runs), so its counters hold exactly this scenario's events even while
//! other tests run proxies named demo-proxy.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sockerr_e2e::*;

/// Long enough to query the socket table while the proxy still holds its socket.
const HOLD_MS: &str = "4000";

#[test]
fn daemon_reports_the_cilium_incident_and_stops_on_sigterm() {
    let mut scenario = ScenarioRun::start("cilium", &["--gate", "--keep-open", "--hold-ms", HOLD_MS]);
    let gate = scenario.gate();
    let proxy_pid = gate.actors.iter().find(|a| a.role == "proxy").expect("a proxy at the gate").pid;
    let daemon = Daemon::start(&["--pid", &proxy_pid.to_string()]);

    let health = daemon.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"), "{health:?}");
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 200, "ready once the daemon logged it: {ready:?}");

    scenario.open();
    let is_proxy = |r: &Value| r.pid() == Some(u64::from(proxy_pid));
    let is_failure = |r: &Value| is_proxy(r) && r.event() == "connect_error";
    daemon.wait_for_records(4, RECORD_TIMEOUT, is_failure);
    // The scenario holds its sockets (and its proxy keeps the last one open) meanwhile.
    let by_pid = daemon.get(&format!("/v1/sockets?pid={proxy_pid}"));
    let by_comm = daemon.get("/v1/sockets?comm=demo-proxy");
    // Not on the scrape port without --expose-api.
    let on_scrape_port = daemon.get_on_scrape_port(&format!("/v1/sockets?pid={proxy_pid}"), None);
    let samples = daemon.metrics();
    let report = scenario.finish();

    let attempts = report.attempts_of("proxy");
    assert_eq!(attempts.len(), 4, "Envoy's 1 try + 3 retries: {report:?}");
    let last = attempts.last().expect("attempts");

    // /metrics: exactly this scenario's counts.
    let counter = |series: &str| samples.iter().find(|(s, _)| s == series).map(|(_, value)| *value);
    let labels = r#"comm="demo-proxy",pod_namespace="""#;
    let connect_errors =
        format!(r#"sockerr_connect_errors_total{{errno="EADDRNOTAVAIL",cause="tuple_in_use",{labels}}}"#);
    assert_eq!(counter(&connect_errors), Some(4.0), "{samples:#?}");
    let conflicts = format!(r#"sockerr_tuple_conflicts_total{{cause="tuple_in_use",{labels}}}"#);
    assert_eq!(counter(&conflicts), Some(4.0), "{samples:#?}");
    // Successful setsockopt() calls are records (and counted) only with --all (the churn
    // test counts them); without it their options travel with the failures.
    let calls: Vec<&String> = samples
        .iter()
        .map(|(series, _)| series)
        .filter(|s| s.starts_with("sockerr_setsockopt_calls_total"))
        .collect();
    assert_eq!(calls, Vec::<&String>::new(), "no setsockopt() record without --all: {samples:#?}");
    let failure_series: Vec<&String> = samples
        .iter()
        .map(|(series, _)| series)
        .filter(|s| {
            s.starts_with("sockerr_connect_errors_total") || s.starts_with("sockerr_bind_errors_total")
        })
        .collect();
    assert_eq!(failure_series, [&connect_errors], "no other failure was seen");
    // One series per loss reason, present (at 0) before anything is lost.
    let lost: Vec<&(String, f64)> = samples
        .iter()
        .filter(|(series, _)| series.starts_with("sockerr_events_lost_total{reason="))
        .collect();
    assert!(lost.len() >= 6, "every reason listed: {samples:#?}");
    assert!(lost.iter().all(|(_, value)| *value == 0.0), "{lost:#?}");
    assert_eq!(counter(r#"sockerr_events_lost_total{reason="ring_full"}"#), Some(0.0), "{samples:#?}");
    assert_eq!(counter("sockerr_records_undecodable_total"), Some(0.0), "{samples:#?}");
    // 4 failed connects, and the closes of the 3 tracked sockets the proxy closed; no
    // success (option set, bind) is an event without --all.
    assert_eq!(counter("sockerr_events_total"), Some(7.0), "{samples:#?}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        samples
            .iter()
            .any(|(s, v)| s.starts_with(&format!(r#"sockerr_build_info{{version="{version}""#)) && *v == 1.0),
        "{samples:#?}"
    );

    // /v1/sockets: the proxy's last socket, still open, with its options and error.
    assert_eq!(by_pid.status, 200, "{by_pid:?}");
    assert_eq!(by_pid.content_type.as_deref(), Some("application/json"));
    let view = by_pid.json();
    let processes = view["processes"].as_array().expect("processes");
    let [process] = processes.as_slice() else { panic!("one process expected: {view:#}") };
    assert_eq!(process["pid"], Value::from(proxy_pid), "{view:#}");
    assert_eq!(process["comm"], "demo-proxy", "{view:#}");
    let sockets = process["sockets"].as_array().expect("sockets");
    let [socket] = sockets.as_slice() else { panic!("the closed sockets are gone, one is left: {view:#}") };
    let earlier_on_that_fd = attempts[..attempts.len() - 1].iter().filter(|a| a.fd == last.fd).count();
    assert_eq!(socket["fd"], Value::from(last.fd), "{view:#}");
    assert_eq!(socket["generation"], Value::from(earlier_on_that_fd), "{view:#}");
    assert_eq!(socket["options"], serde_json::to_value(&last.sockopts).unwrap(), "{view:#}");
    let mark = report.mark.as_ref().expect("cilium reports its mark");
    assert_eq!(socket["mark"]["identity"], Value::from(mark.identity), "{view:#}");
    // The bind succeeded, which is no record without --all: the source is the one the
    // failed connect tried.
    let src = addr_json(last.src);
    assert_eq!((&socket["bound"], &socket["local"]), (&Value::Null, &src), "{view:#}");
    assert_eq!(socket["peer"], addr_json(last.dst), "{view:#}");
    assert_eq!(socket["phase"], "failed", "{view:#}");
    let error = &socket["last_error"];
    assert_eq!((error["call"].as_str(), error["errno"].as_i64()), (Some("connect"), Some(99)), "{view:#}");
    assert_eq!(error["error"], Value::from(last.error.as_str()), "{view:#}");
    assert!(error["time"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339 UTC: {view:#}");
    assert_eq!(on_scrape_port.status, 404, "{on_scrape_port:?}");
    assert!(!on_scrape_port.body.contains("demo-proxy"), "{on_scrape_port:?}");
    // By name: the same process (the daemon traces no other).
    assert_eq!(by_comm.status, 200, "{by_comm:?}");
    assert_eq!(by_comm.json(), view, "comm=demo-proxy and pid={proxy_pid} differ");

    // SIGTERM: a clean exit, the records on stdout as `trace --output json` prints them.
    let stopped = daemon.terminate();
    eprintln!("daemon exited {:?} after SIGTERM", stopped.elapsed);
    assert!(stopped.status.success(), "{}: stderr:\n{}", stopped.status, stopped.stderr);
    assert!(stopped.stderr.contains("SIGTERM: stopping"), "{}", stopped.stderr);
    let records = stopped.records();
    let failures: Vec<&Value> = records.iter().filter(|r| is_failure(r)).collect();
    assert_eq!(failures.len(), 4, "{failures:#?}");
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };
    for (record, attempt) in failures.iter().zip(&attempts) {
        assert_failure_matches(record, attempt, &report);
        assert_eq!(record.str_at("/cause"), Some("tuple_in_use"), "{record}");
        assert_holder_matches(record, holder);
    }
    assert!(records.iter().all(is_proxy), "--pid admitted another process: {records:#?}");
}

#[test]
fn daemon_refuses_a_taken_port() {
    require_root();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let addr = taken.local_addr().expect("its address").to_string();
    let mut command = Command::new(sockerr_bin());
    command.args(["daemon", "--listen", &addr]);
    let finished = run_to_end(&format!("sockerr daemon --listen {addr}"), &mut command, STOP_TIMEOUT);
    assert_eq!(finished.status.code(), Some(1), "{finished:?}");
    let expected =
        format!("sockerr: error: cannot listen on {addr} for the HTTP endpoints: the port is taken");
    assert!(finished.stderr.contains(&expected), "{}", finished.stderr);
    assert!(finished.stderr.contains("--listen ADDR"), "the fix: {}", finished.stderr);
    assert!(!finished.stderr.contains(READY_MARKER), "fails before loading programs: {}", finished.stderr);
    assert!(finished.stdout.is_empty(), "{finished:?}");
}

#[test]
fn a_panicking_task_ends_the_process() {
    let mut probe = Command::new(env!("CARGO_BIN_EXE_panic_probe"));
    let finished = run_to_end("panic_probe", &mut probe, Duration::from_secs(15));
    assert_eq!(finished.status.code(), Some(tracer::fatal::PANIC_EXIT_STATUS), "{finished:?}");
    assert!(finished.stderr.contains("probe: a task panicked"), "logged: {}", finished.stderr);
    assert!(finished.stderr.contains("panic in thread"), "logged: {}", finished.stderr);
    assert!(!finished.stdout.contains("still alive"), "{finished:?}");
}

/// Connections a slowloris client keeps opening from 127.0.0.1: more than the daemon's
/// share per client address (16), so some are refused.
const SLOWLORIS: usize = 24;
/// Bound on the attack, whatever the test does meanwhile.
const ATTACK_LIMIT: Duration = Duration::from_secs(30);

/// Opens a connection from `source` (any 127/8 address is this host's loopback).
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let SocketAddr::V4(to) = to else { panic!("{to}: IPv4 expected") };
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(source, 0))).expect("bind the source address");
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))
        .unwrap_or_else(|e| panic!("connect {source} -> {to}: {e}"));
    TcpStream::from(fd)
}

/// Sends `request` from `source` and reads the answer until the server closes.
fn raw_request(source: Ipv4Addr, to: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect_from(source, to);
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// One slowloris connection after another: a request head never finished, a header line
/// every 200 ms; returns how many connections the server cut.
fn slowloris(to: SocketAddr, stop: &AtomicBool) -> usize {
    let deadline = Instant::now() + ATTACK_LIMIT;
    let mut cut = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let mut stream = connect_from(Ipv4Addr::LOCALHOST, to);
        stream.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let mut buf = [0u8; 512];
            match stream.read(&mut buf) {
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stream.write_all(b"X-Slow: 1\r\n").is_err() {
                        cut += 1;
                        break;
                    }
                }
                // Closed (or answered, which a head never finished cannot be): cut.
                _ => {
                    cut += 1;
                    break;
                }
            }
        }
        // A refused connection is closed at once: do not spin on reconnecting.
        std::thread::sleep(Duration::from_millis(100));
    }
    cut
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

#[test]
fn slow_and_oversized_clients_stall_neither_tracing_nor_scrapes() {
    let mut scenario = ScenarioRun::start("cilium", &["--gate"]);
    let gate = scenario.gate();
    let proxy_pid = gate.actors.iter().find(|a| a.role == "proxy").expect("a proxy at the gate").pid;
    let daemon = Daemon::start(&["--pid", &proxy_pid.to_string()]);
    let addr = daemon.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..SLOWLORIS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || slowloris(addr, &stop))
        })
        .collect();
    // Stops the attackers even when an assertion below fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _stop_attack = StopOnDrop(Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(500));

    let scraper = Ipv4Addr::new(127, 0, 0, 2);
    let big_head = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(32 * 1024));
    let oversized_head = raw_request(scraper, addr, big_head.as_bytes());
    let big_body =
        [b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n".as_slice(), &[b'x'; 65536]]
            .concat();
    let oversized_body = raw_request(scraper, addr, &big_body);

    // Tracing goes on under the attack: the incident's 4 failures arrive.
    scenario.open();
    let is_failure = |r: &Value| r.pid() == Some(u64::from(proxy_pid)) && r.event() == "connect_error";
    daemon.wait_for_records(4, RECORD_TIMEOUT, is_failure);
    scenario.finish();
    // And a scrape from another address is answered while the slowloris holds its share.
    let scrape = raw_request(scraper, addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    // Held heads are cut at the header read timeout (5 s): wait for the first ones.
    let deadline = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let answer =
            raw_request(scraper, addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let timeouts = r#"sockerr_http_connections_aborted_total{listener="scrape",reason="header_timeout"}"#;
        if counter(&answer, timeouts) > 0.0 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, Ordering::SeqCst);
    let cut: usize = attackers.into_iter().map(|a| a.join().expect("slowloris thread")).sum();
    let stopped = daemon.terminate();

    assert!(oversized_head.starts_with("HTTP/1.1 431"), "{oversized_head}");
    assert!(oversized_body.starts_with("HTTP/1.1 413"), "{oversized_body}");
    let series =
        |listener_reason: &str| counter(&metrics, &format!("sockerr_http_connections_{listener_reason}"));
    assert!(series(r#"aborted_total{listener="scrape",reason="header_timeout"}"#) >= 1.0, "{metrics}");
    assert!(series(r#"aborted_total{listener="scrape",reason="head_too_large"}"#) >= 1.0, "{metrics}");
    assert!(series(r#"refused_total{listener="scrape",reason="client_limit"}"#) >= 1.0, "{metrics}");
    assert_eq!(series(r#"refused_total{listener="scrape",reason="connection_limit"}"#), 0.0, "{metrics}");
    assert!(cut >= SLOWLORIS - 16, "the server cut {cut} connections");
    assert!(stopped.status.success(), "{stopped:?}");
}
