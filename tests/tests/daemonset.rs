//! sockerr as the DaemonSet (deploy/kubernetes/40-daemonset.yaml) runs it:
//! - with only the capabilities it adds back, it traces the Cilium pattern, names the
//!   holder's process (setns, sock_diag, /proc/PID/fd), attributes the proxy to its pod and
//!   warns about no missing capability;
//! - in a pid namespace of its own (`hostPID: false`) with the host's /proc mounted
//!   elsewhere, `--host-proc` is what lets it resolve the host pids the kernel reports.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::path::PathBuf;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
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

/// Runs `sockerr trace` as pid 1 of a new pid namespace with a fresh /proc of that
/// namespace, the host's procfs bound at `$HP` first: the view of a pod with
/// `hostPID: false` and hostPath /proc mounted at /host/proc.
const OWN_PID_NAMESPACE: &[&str] = &[
    "unshare",
    "--pid",
    "--fork",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    r#"mount --bind /proc "$HP" && mount -t proc proc /proc && exec "$@""#,
    "sh",
];

/// Stops a tracer started under [`OWN_PID_NAMESPACE`]: `unshare` ignores SIGINT, so the
/// signal goes to its child (sockerr); `unshare` exits with it.
fn stop_in_namespace(tracer: Tracer) -> Stopped {
    let pid = tracer.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(child), Signal::SIGINT);
    }
    tracer.stop()
}

/// A directory to bind the host's /proc on, removed when dropped (the bind mount lives
/// only in the tracer's mount namespace).
struct MountPoint(PathBuf);

impl Drop for MountPoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn host_proc_resolves_host_pids_from_a_pid_namespace() {
    let host_proc =
        MountPoint(std::env::temp_dir().join(format!("sockerr-e2e-{}-host-proc", std::process::id())));
    std::fs::create_dir_all(&host_proc.0).unwrap();
    let host_proc_path = host_proc.0.to_str().expect("UTF-8 path");
    let pod_uid = "5d6e7f80-9a1b-4c2d-8e3f-405162738495";
    let container_id = "c4".repeat(32);
    let levels =
        ["kubepods".to_owned(), "burstable".to_owned(), format!("pod{pod_uid}"), container_id.clone()];
    let cgroup = TestCgroup::nested("host-proc", &levels.iter().map(String::as_str).collect::<Vec<_>>());
    let env = [("HP", host_proc_path)];
    let common = ["--cgroup", cgroup.relative(), "--output", "json"];
    let with_host_proc = Tracer::start_under(
        OWN_PID_NAMESPACE,
        &[&["--host-proc", host_proc_path][..], &common].concat(),
        &env,
    );
    let without = Tracer::start_under(OWN_PID_NAMESPACE, &common, &env);
    let report = ScenarioRun::start_in_cgroup("cilium", &[], cgroup.path()).finish();
    let proxy = actor(&report, "proxy");
    let attempts = report.attempts_of("proxy");
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };

    let is_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    let records = with_host_proc.wait_for_records(attempts.len(), RECORD_TIMEOUT, is_failure);
    let blind = without.wait_for_records(attempts.len(), RECORD_TIMEOUT, is_failure);
    stop_in_namespace(with_host_proc);
    stop_in_namespace(without);
    for (record, attempt) in records.iter().zip(&attempts) {
        assert_failure_matches(record, attempt, &report);
        assert_holder_matches(record, holder);
        assert_eq!(record.str_at("/pod_uid"), Some(pod_uid), "{record}");
        assert_eq!(record.str_at("/container_id"), Some(container_id.as_str()), "{record}");
    }
    // Its own /proc knows none of the host's pids: no namespace, no holder, no pod.
    for record in &blind {
        assert_eq!(record["netns"], Value::Null, "{record}");
        assert_eq!(record["holder"], Value::Null, "{record}");
        assert_eq!(record["pod_uid"], Value::Null, "{record}");
    }
}
