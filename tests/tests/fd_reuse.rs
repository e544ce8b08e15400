//! Issue 12, "wrong attribution across fd reuse", end to end: the `fd-reuse` scenario's
//! proxy fails an upstream connect with EADDRNOTAVAIL on fd N (an fd the kernel programs
//! do not track: no option was set), closes it, and accept() hands fd N to a client that
//! then resets the connection. The RST record of the accepted socket must not carry the
//! earlier socket's error, in JSON or in text; the failed connect keeps its own record.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use sockerr_e2e::*;
use sockerr_workloads::report::FdReuseReport;

#[test]
fn wrong_attribution_across_fd_reuse_reset_on_the_accepted_socket() {
    let json = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let text = Tracer::start(&["--comm", "demo-proxy", "--output", "text"]);
    let report: FdReuseReport = ScenarioRun::start("fd-reuse", &[]).finish_as();
    let proxy = u64::from(report.reset.pid);
    let fd = report.reset.fd;
    assert_eq!(report.attempt.fd, fd, "the scenario reproduced the reuse: {report:?}");
    let ours = |r: &serde_json::Value| r.pid() == Some(proxy) && r["fd"] == fd;
    json.wait_for_records(2, RECORD_TIMEOUT, |r| {
        ours(r) && matches!(r.event(), "connect_error" | "rst_received")
    });
    let records: Vec<serde_json::Value> = json.stop().records().into_iter().filter(ours).collect();
    let failed = records.iter().find(|r| r.event() == "connect_error").expect("the failed connect");
    assert_eq!(failed.str_at("/error"), Some("EADDRNOTAVAIL"), "{failed}");
    let reset =
        records.iter().find(|r| r.event() == "rst_received").expect("the reset of the accepted socket");
    assert_eq!(reset["src"], addr_json(Some(report.reset.src)), "{reset}");
    assert_eq!(reset["dst"], addr_json(Some(report.reset.dst)), "{reset}");
    assert_eq!(reset.str_at("/rst/by"), Some("socket"), "{reset}");
    assert_eq!(reset["rst"]["last_error"], serde_json::Value::Null, "an error of another socket: {reset}");

    let needle = format!("demo-proxy[{proxy}] fd={fd} {}", report.reset.src);
    let line =
        text.wait_for_line(RECORD_TIMEOUT, |line| line.contains("RST received") && line.contains(&needle));
    assert!(!line.contains("last-error"), "an error of another socket: {line}");
}
