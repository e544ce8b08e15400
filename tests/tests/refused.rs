//! ECONNREFUSED: reported asynchronously for non-blocking sockets (the error arrives after
//! connect() returned EINPROGRESS), synchronously for blocking ones.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use serde_json::Value;
use sockerr_e2e::*;

#[test]
fn refused_non_blocking_is_async() {
    refused(&[], true);
}

#[test]
fn refused_blocking_is_sync() {
    refused(&["--blocking"], false);
}

fn refused(args: &[&str], is_async: bool) {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let report = run_scenario("refused", args);
    let proxy = actor(&report, "proxy");
    let [attempt] = report.attempts_of("proxy")[..] else {
        panic!("one failed connect expected: {report:?}")
    };
    assert_eq!(attempt.is_async, is_async, "{report:?}");

    let is_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_failure);
    let records: Vec<Value> = tracer.stop().records().into_iter().filter(is_failure).collect();
    let [record] = records.as_slice() else { panic!("one connect_error expected: {records:#?}") };

    assert_failure_matches(record, attempt, &report);
    assert_eq!(record.str_at("/cause"), Some("connection_refused"), "{record}");
    assert_eq!(record["holder"], Value::Null, "nothing holds anything: {record}");
    // The RST arrives in softirq context: no probed function refused the call.
    assert_kernel_fn(record, None);
}
