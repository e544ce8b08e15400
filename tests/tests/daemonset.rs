//! The DaemonSet's capability set (deploy/kubernetes/40-daemonset.yaml) is enough: sockerr,
//! root in name but holding only those capabilities, as in the pod, traces the Cilium
//! pattern, names the holder's process (setns, sock_diag, /proc/PID/fd) and attributes the
//! proxy to its pod, and warns about no missing capability.

use serde_json::Value;
use sockerr_e2e::*;

/// The `capabilities.add` list of the DaemonSet, e.g. `["BPF", "PERFMON", ...]`.
///
/// Read line by line: the block is a YAML list of bare words with comments between them,
/// which does not call for a YAML parser in the tests.
fn daemonset_capabilities() -> Vec<String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/40-daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.contains("drop: [\"ALL\"]"), "the DaemonSet must drop every capability first");
    let mut lines = text.lines().map(str::trim).skip_while(|line| *line != "capabilities:");
    let mut lines = lines.by_ref().skip_while(|line| *line != "add:").skip(1);
    let caps: Vec<String> = lines
        .by_ref()
        .take_while(|line| line.starts_with("- ") || line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("- "))
        .map(|cap| cap.trim().to_owned())
        .collect();
    assert!(caps.len() >= 2 && caps.iter().all(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_')));
    caps
}

#[test]
fn daemonset_capabilities_suffice() {
    let caps = daemonset_capabilities();
    assert!(caps.contains(&"BPF".to_owned()) && caps.contains(&"PERFMON".to_owned()), "{caps:?}");
    // setpriv names capabilities in lower case without the CAP_ prefix.
    let bounding = format!(
        "--bounding-set=-all,{}",
        caps.iter().map(|c| format!("+{}", c.to_lowercase())).collect::<Vec<_>>().join(",")
    );
    let pod_uid = "0c3e9a57-1d2b-4f6e-8a90-b1c2d3e4f5a6";
    let container_id = "7e".repeat(32);
    let levels = [
        "kubepods.slice".to_owned(),
        "kubepods-burstable.slice".to_owned(),
        format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_")),
        format!("cri-containerd-{container_id}.scope"),
    ];
    let cgroup = TestCgroup::nested("daemonset-caps", &levels.iter().map(String::as_str).collect::<Vec<_>>());
    let tracer = Tracer::start_under(
        &["setpriv", &bounding, "--inh-caps=-all", "--"],
        &["--cgroup", cgroup.relative(), "--output", "json"],
        &[],
    );
    let report = ScenarioRun::start_in_cgroup("cilium", &[], cgroup.path()).finish();
    let proxy = actor(&report, "proxy");
    let attempts = report.attempts_of("proxy");
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };

    let is_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    let records = tracer.wait_for_records(attempts.len(), RECORD_TIMEOUT, is_failure);
    let stopped = tracer.stop();
    for (record, attempt) in records.iter().zip(&attempts) {
        assert_failure_matches(record, attempt, &report);
        assert_eq!(record.str_at("/cause"), Some("tuple_in_use"), "{record}");
        assert_holder_matches(record, holder);
        assert_eq!(record.str_at("/pod_uid"), Some(pod_uid), "{record}");
        assert_eq!(record.str_at("/container_id"), Some(container_id.as_str()), "{record}");
    }
    assert!(
        !stopped.stderr.contains("no CAP_"),
        "a capability the code uses is missing:\n{}",
        stopped.stderr
    );
}
