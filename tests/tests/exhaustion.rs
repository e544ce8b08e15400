//! connect() without a source port after ip_local_port_range ran out.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use serde_json::Value;
use sockerr_e2e::*;

#[test]
fn ephemeral_ports_exhausted() {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let report = run_scenario("exhaustion", &[]);
    let proxy = actor(&report, "proxy");
    let [attempt] = report.attempts_of("proxy")[..] else {
        panic!("one failed connect expected: {report:?}")
    };
    let ports = report.ports.as_ref().expect("exhaustion reports its ports");

    let is_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_failure);
    // Without --all no success is reported (with options or not), so the failure is the
    // only record of the proxy.
    let records: Vec<Value> =
        tracer.stop().records().into_iter().filter(|r| r.pid() == Some(u64::from(proxy.pid))).collect();
    let [record] = records.as_slice() else { panic!("only the failed connect expected: {records:#?}") };
    assert!(is_failure(record), "{record}");

    assert_failure_matches(record, attempt, &report);
    assert_eq!(record.str_at("/cause"), Some("ephemeral_ports_exhausted"), "{record}");
    assert_eq!(record["ports"]["range"], serde_json::json!(ports.range), "{record}");
    assert_eq!(record["ports"]["in_use"], Value::from(ports.in_use), "{record}");
    // No port left in the range: __inet_hash_connect's own EADDRNOTAVAIL.
    assert_kernel_fn(record, Some("__inet_hash_connect"));
}
