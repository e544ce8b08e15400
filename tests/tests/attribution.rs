//! Kubernetes attribution: the scenario runs in cgroups shaped like a kubelet's (systemd
//! and cgroupfs drivers, with a containerd container below the pod), and every record of
//! its proxy must carry that pod's UID and that container's id.
//!
//! Pod names come from the API with `--kubernetes`. No API server runs where the suite
//! runs, so `FakeApiServer` stands in for one: it serves a recorded pod list (the shape
//! `kubectl get pods -o json` prints, trimmed; tests/testdata/pods-on-node.json) with this
//! test's pod UID and container id filled in, and holds the watch open; sockerr finds it
//! through a KUBECONFIG file the test writes.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sockerr_e2e::fake_api::{FakeApiServer, write_kubeconfig};
use sockerr_e2e::*;

/// How long sockerr may take to list the pods after it started.
const API_TIMEOUT: Duration = Duration::from_secs(20);
const NODE: &str = "node-e2e";

/// A pod UID and container id of this test only (tests run in parallel).
struct FakePod {
    uid: String,
    container_id: String,
}

impl FakePod {
    fn new() -> Self {
        let random = || RandomState::new().hash_one(std::time::SystemTime::now());
        let hex = format!("{:016x}{:016x}", random(), random());
        let uid =
            format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32]);
        let container_id = format!("{hex}{:016x}{:016x}", random(), random());
        Self { uid, container_id }
    }

    /// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`
    fn systemd_levels(&self) -> Vec<String> {
        let uid = self.uid.replace('-', "_");
        vec![
            "kubepods.slice".into(),
            "kubepods-besteffort.slice".into(),
            format!("kubepods-besteffort-pod{uid}.slice"),
            format!("cri-containerd-{}.scope", self.container_id),
        ]
    }

    /// `kubepods/besteffort/pod<uid>/<id>`
    fn cgroupfs_levels(&self) -> Vec<String> {
        vec!["kubepods".into(), "besteffort".into(), format!("pod{}", self.uid), self.container_id.clone()]
    }

    fn cgroup(&self, tag: &str, levels: &[String]) -> TestCgroup {
        TestCgroup::nested(tag, &levels.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The recorded pod list, with this pod in it.
    fn pod_list(&self) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/pods-on-node.json");
        let template = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        template
            .replace("{{POD_UID}}", &self.uid)
            .replace("{{CONTAINER_ID}}", &self.container_id)
            .replace("{{NODE}}", NODE)
    }
}

/// A scratch directory for the kubeconfig, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sockerr-e2e-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_pod(record: &Value, pod: &FakePod, names: Option<(&str, &str, &str)>) {
    let (name, namespace, container) = match names {
        Some((name, namespace, container)) => (name.into(), namespace.into(), container.into()),
        None => (Value::Null, Value::Null, Value::Null),
    };
    assert_eq!(record["pod_uid"], Value::from(pod.uid.as_str()), "{record}");
    assert_eq!(record["container_id"], Value::from(pod.container_id.as_str()), "{record}");
    assert_eq!(record["pod"], name, "{record}");
    assert_eq!(record["namespace"], namespace, "{record}");
    assert_eq!(record["container"], container, "{record}");
}

/// systemd driver, no API: ids from the cgroup path, in JSON and in the text line.
#[test]
fn systemd_layout_gives_pod_uid_and_container_id() {
    let pod = FakePod::new();
    let cgroup = pod.cgroup("attr-systemd", &pod.systemd_levels());
    let json = Tracer::start(&["--cgroup", cgroup.relative(), "--output", "json"]);
    let text = Tracer::start(&["--cgroup", cgroup.relative(), "--fold", "0"]);
    let report = ScenarioRun::start_in_cgroup("bind-in-use", &[], cgroup.path()).finish();
    let proxy = actor(&report, "proxy");
    let [attempt] = report.attempts_of("proxy")[..] else { panic!("one proxy attempt expected: {report:?}") };

    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    let records = json.wait_for_records(1, RECORD_TIMEOUT, mine);
    assert_failure_matches(&records[0], attempt, &report);
    assert_pod(&records[0], &pod, None);
    let line = text.wait_for_line(RECORD_TIMEOUT, |l| l.contains(&format!("{}[{}]", proxy.comm, proxy.pid)));
    assert!(line.contains(&format!(" pod-uid={}", pod.uid)), "{line}");
    // Every record of the scenario comes from inside the pod's container.
    for record in json.stop().records() {
        assert_pod(&record, &pod, None);
    }
    text.stop();
}

/// cgroupfs driver with `--kubernetes`: the Cilium pattern's 4 failures name the pod,
/// namespace and container the (stand-in) API server lists for this node.
#[test]
fn cgroupfs_layout_with_the_api_names_the_pod() {
    let pod = FakePod::new();
    let cgroup = pod.cgroup("attr-cgroupfs", &pod.cgroupfs_levels());
    let api = FakeApiServer::start(pod.pod_list());
    let scratch = Scratch::new("attr-api");
    let kubeconfig = api.write_kubeconfig(&scratch.0);
    let kubeconfig = kubeconfig.to_str().expect("UTF-8 path");
    let args = ["--cgroup", cgroup.relative(), "--kubernetes", "--node-name", NODE];
    let json =
        Tracer::start_with_env(&[&args[..], &["--output", "json"]].concat(), &[("KUBECONFIG", kubeconfig)]);
    let text = Tracer::start_with_env(&args, &[("KUBECONFIG", kubeconfig)]);
    for tracer in [&json, &text] {
        tracer.wait_for_stderr(API_TIMEOUT, |l| l.contains("Kubernetes API reachable: 2 pods known"));
    }
    let report = ScenarioRun::start_in_cgroup("cilium", &[], cgroup.path()).finish();
    let proxy = actor(&report, "proxy");
    let attempts = report.attempts_of("proxy");
    assert_eq!(attempts.len(), 4, "{report:?}");

    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    let records = json.wait_for_records(4, RECORD_TIMEOUT, mine);
    for (record, attempt) in records.iter().zip(&attempts) {
        assert_failure_matches(record, attempt, &report);
        assert_eq!(record.str_at("/cause"), Some("tuple_in_use"), "{record}");
        assert_pod(record, &pod, Some(("checkout-7d9f8b6c5-x2kqp", "shop", "istio-proxy")));
    }
    let line = text.wait_for_line(RECORD_TIMEOUT, |l| l.contains(&format!("{}[{}]", proxy.comm, proxy.pid)));
    assert!(line.contains(" pod=shop/checkout-7d9f8b6c5-x2kqp"), "{line}");
    json.stop();
    text.stop();

    // Only this node's pods were asked for: a list, then a watch from its version.
    let requests = api.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert!(request.starts_with("GET /api/v1/pods?"), "{request}");
        assert!(request.contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")), "{request}");
    }
    assert!(requests.iter().any(|r| r.contains("watch=true") && r.contains("resourceVersion=48211973")));
}

/// API unreachable: one warning, and records still carry the ids from the cgroup path.
#[test]
fn unreachable_api_degrades_to_ids() {
    let pod = FakePod::new();
    let cgroup = pod.cgroup("attr-noapi", &pod.systemd_levels());
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let scratch = Scratch::new("attr-noapi");
    let kubeconfig = write_kubeconfig(&scratch.0, &format!("http://{closed}"));
    let args = ["--cgroup", cgroup.relative(), "--kubernetes", "--output", "json"];
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path")), ("NODE_NAME", NODE)];
    let tracer = Tracer::start_with_env(&args, &env);
    tracer.wait_for_stderr(API_TIMEOUT, |l| l.contains("Kubernetes API unreachable"));
    let report = ScenarioRun::start_in_cgroup("bind-in-use", &[], cgroup.path()).finish();
    let proxy = actor(&report, "proxy");

    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    let records = tracer.wait_for_records(1, RECORD_TIMEOUT, mine);
    assert_pod(&records[0], &pod, None);
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{stopped:?}");
    let warnings = stopped.stderr.lines().filter(|l| l.contains("Kubernetes API unreachable")).count();
    assert_eq!(warnings, 1, "one warning for the outage, not one per retry:\n{}", stopped.stderr);
    assert!(stopped.stderr.contains("pod_uid and container_id"), "{}", stopped.stderr);
    // Nor does the client log each failed retry.
    let errors: Vec<&str> = stopped.stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// `--kubernetes` without a node name: a clear error before anything is loaded.
#[test]
fn kubernetes_without_a_node_name_is_an_error() {
    let mut command = Command::new(sockerr_bin());
    command.args(["trace", "--kubernetes"]).env_remove("NODE_NAME");
    let finished = run_to_end("sockerr trace --kubernetes", &mut command, STOP_TIMEOUT);
    assert!(!finished.status.success(), "{finished:?}");
    assert!(finished.stderr.contains("--node-name NAME or set NODE_NAME"), "{}", finished.stderr);
    assert!(!finished.stderr.contains(READY_MARKER), "{}", finished.stderr);
}
