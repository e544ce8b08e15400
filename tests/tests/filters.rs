//! Process filters: a process named `demo-other` makes the same failing bind as the proxy,
//! just before it (`bind-in-use --other`). Because the other's call comes first, once the
//! proxy's record arrived a wrongly admitted record of the other's would have arrived too.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use serde_json::Value;
use sockerr_e2e::*;

#[test]
fn comm_filter_excludes_other_processes() {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let report = run_scenario("bind-in-use", &["--other"]);
    let proxy = actor(&report, "proxy");
    let other = actor(&report, "other");
    assert_eq!(report.attempts_of("other").len(), 1, "the other's bind failed too: {report:?}");

    let is_proxy_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_proxy_failure);
    let records = tracer.stop().records();
    // Concurrent tests run proxies too: all of them are demo-proxy, none is anything else.
    for record in &records {
        assert_eq!(record.str_at("/comm"), Some("demo-proxy"), "{record}");
        assert_ne!(record.pid(), Some(u64::from(other.pid)), "{record}");
    }
}

/// `--pid` needs the pids before anything fails: `--gate` makes the scenario wait for the
/// tracers. Each tracer must report its own process and nothing else at all.
#[test]
fn pid_filter_selects_one_process() {
    let mut scenario = ScenarioRun::start("bind-in-use", &["--other", "--gate"]);
    let gate = scenario.gate();
    let pid_of = |role: &str| {
        gate.actors.iter().find(|a| a.role == role).unwrap_or_else(|| panic!("no {role} in {gate:?}")).pid
    };
    let (proxy_pid, other_pid) = (pid_of("proxy").to_string(), pid_of("other").to_string());
    let proxy_tracer = Tracer::start(&["--pid", &proxy_pid, "--output", "json"]);
    let other_tracer = Tracer::start(&["--pid", &other_pid, "--output", "json"]);
    scenario.open();
    let report = scenario.finish();

    for (tracer, role) in [(proxy_tracer, "proxy"), (other_tracer, "other")] {
        let me = actor(&report, role);
        let [attempt] = report.attempts_of(role)[..] else {
            panic!("one {role} attempt expected: {report:?}")
        };
        let mine = |r: &Value| r.pid() == Some(u64::from(me.pid)) && r.event() == "bind_error";
        tracer.wait_for_records(1, RECORD_TIMEOUT, mine);
        let records = tracer.stop().records();
        for record in &records {
            assert_eq!(record.pid(), Some(u64::from(me.pid)), "--pid {} admitted {record}", me.pid);
        }
        let failures: Vec<&Value> = records.iter().filter(|r| mine(r)).collect();
        let [record] = failures.as_slice() else { panic!("one bind_error of {role} expected: {records:#?}") };
        assert_failure_matches(record, attempt, &report);
    }
}

/// `--cgroup`: a tracer on the scenario's cgroup sees its failures; one on an empty
/// sibling cgroup, running at the same time, sees nothing at all.
#[test]
fn cgroup_filter_selects_the_subtree() {
    let inside = TestCgroup::create("inside");
    let empty = TestCgroup::create("empty");
    let inside_tracer = Tracer::start(&["--cgroup", inside.relative(), "--output", "json"]);
    let empty_tracer = Tracer::start(&["--cgroup", empty.relative(), "--output", "json"]);
    let report = ScenarioRun::start_in_cgroup("bind-in-use", &[], inside.path()).finish();
    let proxy = actor(&report, "proxy");
    let [attempt] = report.attempts_of("proxy")[..] else { panic!("one proxy attempt expected: {report:?}") };

    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    inside_tracer.wait_for_records(1, RECORD_TIMEOUT, mine);
    let inside_records = inside_tracer.stop().records();
    let actors: Vec<u64> = report.run.actors.iter().map(|a| u64::from(a.pid)).collect();
    for record in &inside_records {
        assert!(record.pid().is_some_and(|pid| actors.contains(&pid)), "not from the cgroup: {record}");
    }
    let failures: Vec<&Value> = inside_records.iter().filter(|r| mine(r)).collect();
    let [record] = failures.as_slice() else { panic!("one bind_error expected: {inside_records:#?}") };
    assert_failure_matches(record, attempt, &report);
    let empty_records = empty_tracer.stop().records();
    assert!(empty_records.is_empty(), "the empty cgroup's tracer saw: {empty_records:#?}");
}
