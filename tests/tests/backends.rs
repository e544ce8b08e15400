//! `--backend`: the tracepoint and kprobe backends traced side by side over one scenario
//! run print the same records, field by field, but for where the kernel refused the call
//! (`kernel_fn`, kprobe only), `backend`, and `time` (each tracer stamps its own copy of
//! the event). The kprobe backend builds its tuple and options from `struct sock` read at
//! BTF offsets, the tracepoint backend from syscalls and tracepoints: agreeing is the
//! check that the offsets are right. On a kernel without kprobes (the host's), each test
//! checks instead that asking for them is a clear error.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::process::Command;

use serde_json::Value;
use sockerr_e2e::*;

/// Fields that differ between the backends by design.
const BACKEND_FIELDS: [&str; 3] = ["kernel_fn", "backend", "time"];

#[test]
fn cilium_ipv4_records_agree() {
    backends_agree("cilium", &[], Some("__inet_hash_connect"));
}

#[test]
fn cilium_ipv6_records_agree() {
    backends_agree("cilium", &["--ipv6"], Some("__inet_hash_connect"));
}

#[test]
fn bind_in_use_records_agree() {
    backends_agree("bind-in-use", &[], Some("inet_csk_get_port"));
}

/// Where the kernel has no kprobes, asking for the backend fails, naming what is missing.
fn assert_kprobe_backend_refused() {
    assert!(!kprobes_required(), "SOCKERR_E2E_KPROBES=required but this kernel has no kprobes");
    require_root();
    let mut command = Command::new(sockerr_bin());
    command.args(["trace", "--backend", "kprobe", "--duration", "1s"]);
    let run = run_to_end("sockerr trace --backend kprobe", &mut command, STOP_TIMEOUT + READY_TIMEOUT);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("--backend kprobe needs CONFIG_KPROBES"), "{}", run.stderr);
    assert!(run.stderr.contains("use --backend tracepoint or auto"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

fn backends_agree(scenario: &str, args: &[&str], failure_fn: Option<&str>) {
    if !kprobes_available() {
        // One backend only on this kernel (the host's has no kprobes).
        assert_kprobe_backend_refused();
        return;
    }
    let tracepoint = Tracer::start(&["--backend", "tracepoint", "--comm", "demo-proxy", "--output", "json"]);
    let kprobe = Tracer::start(&["--backend", "kprobe", "--comm", "demo-proxy", "--output", "json"]);
    let report = run_scenario(scenario, args);
    let proxy = actor(&report, "proxy");
    let failures = report.attempts_of("proxy").len();
    assert!(failures > 0, "{report:?}");

    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid));
    let failed = |r: &Value| mine(r) && r.event().ends_with("_error");
    let mut seen = Vec::new();
    for tracer in [tracepoint, kprobe] {
        tracer.wait_for_records(failures, RECORD_TIMEOUT, failed);
        let records: Vec<Value> = tracer.stop().records().into_iter().filter(mine).collect();
        seen.push(records);
    }
    let [by_tracepoint, by_kprobe] = &seen[..] else { unreachable!("two tracers") };
    assert_eq!(
        by_tracepoint.len(),
        by_kprobe.len(),
        "tracepoint records:\n{by_tracepoint:#?}\nkprobe records:\n{by_kprobe:#?}"
    );
    for (tp, kp) in by_tracepoint.iter().zip(by_kprobe) {
        assert_eq!(tp.str_at("/backend"), Some("tracepoint"), "{tp}");
        assert_eq!(kp.str_at("/backend"), Some("kprobe"), "{kp}");
        assert_eq!(tp["kernel_fn"], Value::Null, "{tp}");
        let expected_fn = if failed(kp) { failure_fn } else { None };
        assert_eq!(kp.str_at("/kernel_fn"), expected_fn, "{kp}");
        assert_eq!(
            without_backend_fields(tp),
            without_backend_fields(kp),
            "\ntracepoint: {tp}\nkprobe:     {kp}"
        );
    }
}

fn without_backend_fields(record: &Value) -> Value {
    let mut stripped = record.clone();
    let object = stripped.as_object_mut().unwrap_or_else(|| panic!("a record is a JSON object: {record}"));
    for field in BACKEND_FIELDS {
        assert!(object.remove(field).is_some(), "record without {field}: {record}");
    }
    stripped
}
