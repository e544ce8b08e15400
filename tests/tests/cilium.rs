//! The Cilium incident (`sockerr scenario cilium`): Envoy-like retries binding a live
//! client's ip:port fail with EADDRNOTAVAIL; sockerr must name the options, the cause and
//! the client's socket as the holder.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use serde_json::Value;
use sockerr_e2e::*;

#[test]
fn cilium_ipv4_json() {
    cilium_json(false, Successes::Default);
}

#[test]
fn cilium_ipv6_json() {
    cilium_json(true, Successes::Default);
}

/// With `--all` the setsockopt() calls themselves are records too.
#[test]
fn cilium_ipv4_json_all() {
    cilium_json(false, Successes::All);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Successes {
    /// No `--all`: the options travel with the failures only.
    Default,
    All,
}

fn cilium_json(ipv6: bool, successes: Successes) {
    let mut args = vec!["--comm", "demo-proxy", "--output", "json"];
    if successes == Successes::All {
        args.push("--all");
    }
    let tracer = Tracer::start(&args);
    let report = run_scenario("cilium", if ipv6 { &["--ipv6"] } else { &[] });
    let proxy = actor(&report, "proxy");
    let attempts = report.attempts_of("proxy");
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };
    assert!(!attempts.is_empty(), "{report:?}");

    let is_proxy = |r: &Value| r.pid() == Some(u64::from(proxy.pid));
    let is_failure = |r: &Value| is_proxy(r) && r.event() == "connect_error";
    tracer.wait_for_records(attempts.len(), RECORD_TIMEOUT, is_failure);
    let stopped = tracer.stop();
    let records = stopped.records();

    // Every attempt, in order, and nothing more: JSON output never folds.
    let failures: Vec<&Value> = records.iter().filter(|r| is_failure(r)).collect();
    assert_eq!(failures.len(), attempts.len(), "failures: {failures:#?}\nreport: {report:?}");
    for (record, attempt) in failures.iter().zip(&attempts) {
        assert_failure_matches(record, attempt, &report);
        assert_eq!(record.str_at("/cause"), Some("tuple_in_use"), "{record}");
        assert_holder_matches(record, holder);
        assert_eq!(record.str_at("/thread"), Some(proxy.comm.as_str()), "single-threaded actor: {record}");
        // IPv4 and IPv6 alike: tcp_v{4,6}_connect -> inet{,6}_hash_connect -> here.
        assert_kernel_fn(record, Some("__inet_hash_connect"));
    }
    let transparent = if ipv6 { "IPV6_TRANSPARENT" } else { "IP_TRANSPARENT" };
    let mark = report.mark.as_ref().expect("cilium reports its mark");
    let expected_opts = serde_json::json!({"SO_MARK": mark.value, "SO_REUSEADDR": 1, transparent: 1});
    assert_eq!(serde_json::to_value(&attempts[0].sockopts).unwrap(), expected_opts, "report: {report:?}");

    // The setsockopt calls themselves (--all): each option of each attempt, on that
    // attempt's fd; by default none, the failures above carry the options.
    let sockopt_records: Vec<&Value> =
        records.iter().filter(|r| is_proxy(r) && r.event() == "sockopt").collect();
    // The bind of each attempt succeeds; only --all reports it.
    let binds = records.iter().filter(|r| is_proxy(r) && r.event() == "bind").count();
    if successes == Successes::Default {
        assert_eq!(sockopt_records, Vec::<&Value>::new(), "successful setsockopt() without --all");
        assert_eq!(binds, 0, "successful bind() without --all: {records:#?}");
        return;
    }
    assert_eq!(binds, attempts.len(), "one bind per attempt with --all: {records:#?}");
    let options_per_attempt = attempts[0].sockopts.len();
    assert_eq!(sockopt_records.len(), attempts.len() * options_per_attempt, "{sockopt_records:#?}");
    for (chunk, attempt) in sockopt_records.chunks(options_per_attempt).zip(&attempts) {
        for record in chunk {
            assert_eq!(record["fd"], Value::from(attempt.fd), "{record}");
            assert_eq!(record["errno"], Value::Null, "the options succeed: {record}");
            let name = record.str_at("/sockopt/name").unwrap_or_else(|| panic!("no sockopt.name: {record}"));
            let value =
                attempt.sockopts.get(name).unwrap_or_else(|| panic!("unexpected option {name}: {record}"));
            assert_eq!(&record["sockopt"]["value"], value, "{record}");
        }
        let mut names: Vec<&str> = chunk.iter().filter_map(|r| r.str_at("/sockopt/name")).collect();
        names.sort_unstable();
        let expected: Vec<&str> = attempt.sockopts.keys().map(String::as_str).collect();
        assert_eq!(names, expected, "each option once per attempt");
    }
}

/// Text output folds the retries into one line naming the holder.
#[test]
fn cilium_text_folds_retries() {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "text"]);
    let report = run_scenario("cilium", &[]);
    let proxy = actor(&report, "proxy");

    let needle = format!("EADDRNOTAVAIL connect {}[{}]", proxy.comm, proxy.pid);
    tracer.wait_for_line(RECORD_TIMEOUT, |line| line.contains(&needle));
    let stopped = tracer.stop();
    let lines: Vec<&String> = stopped.stdout.iter().filter(|line| line.contains(&needle)).collect();
    let [line] = lines.as_slice() else { panic!("one folded line expected, got {lines:#?}") };

    let mut expected = cilium_text_expectations(&report);
    if auto_backend() == "kprobe" {
        expected.push(" in __inet_hash_connect cause=tuple_in_use".to_owned());
    }
    for part in expected {
        assert!(line.contains(&part), "missing `{part}` in\n{line}");
    }
}
