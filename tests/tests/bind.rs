//! bind() failures: the address held by a listening socket (a process), or by a TIME_WAIT
//! socket (no process).
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use serde_json::Value;
use sockerr_e2e::*;

#[test]
fn bind_in_use_ipv4() {
    bind_in_use(false);
}

#[test]
fn bind_in_use_ipv6() {
    bind_in_use(true);
}

fn bind_in_use(ipv6: bool) {
    let (report, _) = port_in_use("bind-in-use", if ipv6 { &["--ipv6"] } else { &[] }, "LISTEN");
    assert_eq!(report.holders[0].pid, Some(actor(&report, "upstream").pid), "{report:?}");
}

#[test]
fn bind_time_wait() {
    let (report, record) = port_in_use("bind-time-wait", &[], "TIME_WAIT");
    // No process owns a TIME_WAIT socket: pid/comm/fd null, and the timer counts down
    // from 60 s (TCP_TIMEWAIT_LEN).
    assert_eq!(record["holder"]["pid"], Value::Null, "{record}");
    // The scenario read the timer before the failure and the tracer looks after it, so
    // less time is left; the scenario's value comes from /proc/net/tcp in USER_HZ ticks
    // (10 ms), truncated.
    let timer = record.u64_at("/holder/timer_ms").unwrap_or_else(|| panic!("no holder.timer_ms: {record}"));
    let at_report = report.holders[0].timer_ms.expect("the scenario read the timer");
    assert!(timer > 0 && timer < at_report + 10, "timer_ms {timer} not in (0, {at_report} + 10): {record}");
}

/// Runs `scenario`, whose proxy's one bind() fails because one socket in `state` holds
/// the address, and checks sockerr's one bind_error against the report: the attempt,
/// port_in_use, the holder, inet_csk_get_port. Returns the report and the record.
fn port_in_use(scenario: &str, args: &[&str], state: &str) -> (Report, Value) {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let report = run_scenario(scenario, args);
    let proxy = actor(&report, "proxy");
    let [attempt] = report.attempts_of("proxy")[..] else { panic!("one proxy attempt expected: {report:?}") };
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };

    let is_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_failure);
    let records: Vec<Value> = tracer.stop().records().into_iter().filter(is_failure).collect();
    let [record] = records.as_slice() else { panic!("one bind_error expected: {records:#?}") };

    assert_failure_matches(record, attempt, &report);
    assert_eq!(record.str_at("/cause"), Some("port_in_use"), "{record}");
    assert_holder_matches(record, holder);
    assert_eq!(record.str_at("/holder/state"), Some(state), "{record}");
    assert_kernel_fn(record, Some("inet_csk_get_port"));
    let record = record.clone();
    (report, record)
}

/// A bind to an address the namespace lacks fails without IP_TRANSPARENT and succeeds
/// with it; sockerr names the cause of the first and, with `--all` (successes are not
/// reported without it), reports the second as a bind of a socket carrying options.
#[test]
fn bind_not_local_ipv4() {
    bind_not_local(false);
}

#[test]
fn bind_not_local_ipv6() {
    bind_not_local(true);
}

fn bind_not_local(ipv6: bool) {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "json", "--all"]);
    let report = run_scenario("bind-not-local", if ipv6 { &["--ipv6"] } else { &[] });
    let proxy = actor(&report, "proxy");
    let [attempt] = report.attempts_of("proxy")[..] else { panic!("one proxy attempt expected: {report:?}") };

    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid));
    let is_failure = |r: &Value| mine(r) && r.event() == "bind_error";
    let is_fixed = |r: &Value| mine(r) && r.event() == "bind";
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_fixed);
    let records = tracer.stop().records();
    let failures: Vec<&Value> = records.iter().filter(|r| is_failure(r)).collect();
    let [failure] = failures.as_slice() else { panic!("one bind_error expected: {records:#?}") };
    assert_failure_matches(failure, attempt, &report);
    assert_eq!(failure.str_at("/cause"), Some("address_not_local"), "{failure}");
    assert_eq!(failure.pointer("/holder"), Some(&Value::Null), "{failure}");
    assert_kernel_fn(failure, Some(if ipv6 { "__inet6_bind" } else { "__inet_bind" }));

    let fixed: Vec<&Value> = records.iter().filter(|r| is_fixed(r)).collect();
    let [fixed] = fixed.as_slice() else { panic!("one bind expected: {records:#?}") };
    let transparent = if ipv6 { "/sockopts/IPV6_TRANSPARENT" } else { "/sockopts/IP_TRANSPARENT" };
    assert_eq!(fixed.u64_at(transparent), Some(1), "{fixed}");
    assert_eq!(fixed.str_at("/src"), failure.str_at("/src"), "same address, bound this time: {fixed}");
    assert_eq!(fixed.pointer("/errno"), Some(&Value::Null), "{fixed}");
    assert_kernel_fn(fixed, None);
}
