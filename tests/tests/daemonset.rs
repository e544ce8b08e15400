//! sockerr as the DaemonSet (deploy/kubernetes/40-daemonset.yaml) runs it:
//! - with only the capabilities it adds back, it traces the Cilium pattern, names the
//!   holder's process (setns, sock_diag, /proc/PID/fd), attributes the proxy to its pod and
//!   warns about no missing capability;
//! - with any one of them taken away, it fails the way the manifest's comment says: the
//!   set is the least one;
//! - with the DaemonSet's arguments, its scrape port answers /v1/sockets only to a bearer
//!   token the (stand-in) API server authenticates and authorizes, and /metrics to anyone;
//! - in a pid namespace of its own (`hostPID: false`) with the host's /proc mounted
//!   elsewhere, `--host-proc` is what lets it resolve the host pids the kernel reports.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sockerr_e2e::fake_api::{FakeAccess, FakeApiServer};
use sockerr_e2e::*;

fn daemonset_manifest() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/40-daemonset.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The items of the YAML list that follows the line `key:` (bare words, comments between
/// them), e.g. the container's `args:`.
///
/// Read line by line: these blocks are lists of plain scalars, which do not call for a
/// YAML parser in the tests.
fn list_after(text: &str, key: &str) -> Vec<String> {
    let mut lines = text.lines().map(str::trim).skip_while(|line| *line != key).skip(1);
    lines
        .by_ref()
        .take_while(|line| line.starts_with("- ") || line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("- "))
        .map(|item| item.trim().to_owned())
        .collect()
}

/// `--bounding-set=-all,+cap,...` for setpriv (lower case, no CAP_ prefix).
fn bounding_set(caps: &[String]) -> String {
    let added: Vec<String> = caps.iter().map(|c| format!("+{}", c.to_lowercase())).collect();
    if added.is_empty() {
        "--bounding-set=-all".to_owned()
    } else {
        format!("--bounding-set=-all,{}", added.join(","))
    }
}

/// The `capabilities.add` list of the DaemonSet, e.g. `["BPF", "PERFMON", ...]`.
///
/// Read line by line: the block is a YAML list of bare words with comments between them,
/// which does not call for a YAML parser in the tests.
fn daemonset_capabilities() -> Vec<String> {
    let text = daemonset_manifest();
    assert!(text.contains("drop: [\"ALL\"]"), "the DaemonSet must drop every capability first");
    let from_capabilities = &text[text.find("capabilities:").expect("a capabilities block")..];
    let caps = list_after(from_capabilities, "add:");
    assert!(
        !caps.is_empty() && caps.iter().all(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
    );
    caps
}

#[test]
fn daemonset_capabilities_suffice() {
    let caps = daemonset_capabilities();
    assert!(!caps.contains(&"NET_ADMIN".to_owned()), "sock_diag needs no NET_ADMIN: {caps:?}");
    let bounding = bounding_set(&caps);
    let pod_uid = "0c3e9a57-1d2b-4f6e-8a90-b1c2d3e4f5a6";
    let container_id = "7e".repeat(32);
    let levels = [
        "kubepods.slice".to_owned(),
        "kubepods-burstable.slice".to_owned(),
        format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_")),
        format!("cri-containerd-{container_id}.scope"),
    ];
    let cgroup = TestCgroup::nested("daemonset-caps", &levels.iter().map(String::as_str).collect::<Vec<_>>());
    let tracer = trace_with_capabilities(&bounding, &cgroup);
    let (report, is_failure) = cilium_in(&cgroup);
    let attempts = report.attempts_of("proxy");
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };
    let records = tracer.wait_for_records(attempts.len(), RECORD_TIMEOUT, &is_failure);
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
    let (report, is_failure) = cilium_in(&cgroup);
    let attempts = report.attempts_of("proxy");
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };
    let records = with_host_proc.wait_for_records(attempts.len(), RECORD_TIMEOUT, &is_failure);
    let blind = without.wait_for_records(attempts.len(), RECORD_TIMEOUT, &is_failure);
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

/// `sockerr trace` of `cgroup` in JSON with only the capabilities of `bounding` (a
/// setpriv --bounding-set argument).
fn trace_with_capabilities(bounding: &str, cgroup: &TestCgroup) -> Tracer {
    Tracer::start_under(
        &["setpriv", bounding, "--inh-caps=-all", "--"],
        &["--cgroup", cgroup.relative(), "--output", "json"],
        &[],
    )
}

/// The cilium scenario run in `cgroup`: its report, and which records are its proxy's
/// failed connects.
fn cilium_in(cgroup: &TestCgroup) -> (Report, impl Fn(&Value) -> bool) {
    let report = ScenarioRun::start_in_cgroup("cilium", &[], cgroup.path()).finish();
    let proxy = u64::from(actor(&report, "proxy").pid);
    (report, move |r: &Value| r.pid() == Some(proxy) && r.event() == "connect_error")
}

/// The DaemonSet's capabilities without `cap`, which must be one of them.
fn without(cap: &str) -> Vec<String> {
    let caps = daemonset_capabilities();
    assert!(caps.iter().any(|c| c == cap), "the DaemonSet does not add {cap}: {caps:?}");
    caps.into_iter().filter(|c| c != cap).collect()
}

/// Every capability the DaemonSet adds has a test below showing what fails without it; a
/// new one needs its own.
#[test]
fn daemonset_adds_only_capabilities_proven_needed() {
    let mut caps = daemonset_capabilities();
    caps.sort();
    assert_eq!(
        caps,
        ["DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE"],
        "a capability without its test (or a test without its capability)"
    );
}

/// SYS_ADMIN stands in for BPF and PERFMON, which the DaemonSet does not add: without it
/// no program loads.
#[test]
fn without_sys_admin_sockerr_does_not_start() {
    require_root();
    let bounding = bounding_set(&without("SYS_ADMIN"));
    let mut command = Command::new("setpriv");
    command.args([bounding.as_str(), "--inh-caps=-all", "--"]).arg(sockerr_bin()).args([
        "trace",
        "--duration",
        "1s",
    ]);
    let run = run_to_end("setpriv (DaemonSet caps - SYS_ADMIN) sockerr trace", &mut command, STOP_TIMEOUT);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("missing CAP_BPF and CAP_PERFMON"), "{}", run.stderr);
    assert!(!run.stderr.contains(READY_MARKER), "{}", run.stderr);
}

/// SYS_PTRACE: the failing proxy (root, every capability) is another process whose
/// /proc/PID/ns/net only the ptrace access check lets sockerr open: without it no holder is
/// looked up in the scenario's namespace, and the note says which capability is missing.
#[test]
fn without_sys_ptrace_holders_in_other_namespaces_are_not_looked_up() {
    let bounding = bounding_set(&without("SYS_PTRACE"));
    let cgroup = TestCgroup::create("no-ptrace");
    let tracer = trace_with_capabilities(&bounding, &cgroup);
    let (_, is_failure) = cilium_in(&cgroup);
    let records = tracer.wait_for_records(1, RECORD_TIMEOUT, &is_failure);
    let stopped = tracer.stop();
    let record = &records[0];
    assert_eq!(record["holder"], Value::Null, "{record}");
    let note = record.str_at("/note").unwrap_or_default();
    assert!(note.contains("needs CAP_SYS_PTRACE"), "{record}");
    assert!(stopped.stderr.contains("no CAP_SYS_PTRACE"), "warned at start: {}", stopped.stderr);
}

/// A process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn wait_until_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr} after 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// DAC_READ_SEARCH: Debian's python3 `http.server` runs as nobody and listens on a
/// loopback port; a process of the test cgroup then fails to bind it. The holder's
/// /proc/PID/fd is a mode 0500 directory of nobody: the DaemonSet's set lists it and names
/// the holder; without DAC_READ_SEARCH the holder's socket is found but not its process,
/// and the note names DAC_READ_SEARCH (it used to blame SYS_PTRACE).
#[test]
fn without_dac_read_search_a_non_root_holder_is_not_named() {
    require_root();
    let port = free_port();
    let scratch = std::env::temp_dir().join(format!("sockerr-e2e-{}-http-server", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let server = Running(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/usr/bin/python3",
                "-m",
                "http.server",
            ])
            .args(["--bind", "127.0.0.1", &port.to_string()])
            .current_dir(&scratch)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server (Debian's python3)"),
    );
    wait_until_listening(SocketAddr::from(([127, 0, 0, 1], port)));
    let holder_pid = server.0.id();

    let cgroup = TestCgroup::create("no-dac");
    let args = ["--cgroup", cgroup.relative(), "--output", "json"];
    let wrapper = |caps: &[String]| {
        vec!["setpriv".to_owned(), bounding_set(caps), "--inh-caps=-all".into(), "--".into()]
    };
    let full = wrapper(&daemonset_capabilities());
    let fewer = wrapper(&without("DAC_READ_SEARCH"));
    fn as_strs(words: &[String]) -> Vec<&str> {
        words.iter().map(String::as_str).collect()
    }
    let with_it = Tracer::start_under(&as_strs(&full), &args, &[]);
    let without_it = Tracer::start_under(&as_strs(&fewer), &args, &[]);

    // Fails to bind the server's port, then stays a moment so its namespace can be read.
    let script = format!(
        "import socket, time\ns = socket.socket()\ntry:\n    s.bind(('127.0.0.1', {port}))\nexcept OSError:\n    time.sleep(3)\n"
    );
    let mut command = Command::new("/usr/bin/python3");
    command.args(["-c", &script]);
    join_cgroup_before_exec(&mut command, cgroup.path());
    let failing = Running(command.spawn().expect("python3 -c"));
    let failing_pid = u64::from(failing.0.id());

    let is_failure = |r: &Value| r.pid() == Some(failing_pid) && r.event() == "bind_error";
    let named = with_it.wait_for_records(1, RECORD_TIMEOUT, is_failure);
    let unnamed = without_it.wait_for_records(1, RECORD_TIMEOUT, is_failure);
    with_it.stop();
    without_it.stop();
    drop((failing, server));
    let _ = std::fs::remove_dir_all(&scratch);

    let record = &named[0];
    assert_eq!(record.str_at("/error"), Some("EADDRINUSE"), "{record}");
    assert_eq!(record.str_at("/cause"), Some("port_in_use"), "{record}");
    assert_eq!(record["holder"]["pid"], Value::from(holder_pid), "{record}");
    let record = &unnamed[0];
    assert_eq!(record.str_at("/cause"), Some("port_in_use"), "the socket is still found: {record}");
    assert_eq!(record["holder"]["pid"], Value::Null, "{record}");
    let note = record.str_at("/note").unwrap_or_default();
    assert!(note.contains("needs CAP_DAC_READ_SEARCH"), "{record}");
    assert!(
        !note.contains("needs CAP_SYS_PTRACE"),
        "SYS_PTRACE is held; the note must not blame it: {record}"
    );
}

/// The container's `args:`, without the subcommand.
fn daemonset_daemon_args() -> Vec<String> {
    let args = list_after(&daemonset_manifest(), "args:");
    assert_eq!(args.first().map(String::as_str), Some("daemon"), "{args:?}");
    args[1..].to_vec()
}

/// The DaemonSet's daemon, with its capabilities and arguments, against a stand-in API
/// server: on the scrape port /v1/sockets needs a token the API server authenticates
/// (TokenReview) and RBAC permits (SubjectAccessReview for get on /v1/sockets); /metrics
/// and the probes need none.
#[test]
fn daemonset_scrape_port_serves_sockets_only_to_permitted_tokens() {
    let args = daemonset_daemon_args();
    for needed in ["--expose-api", "0.0.0.0:9966", "--kubernetes"] {
        assert!(args.iter().any(|a| a == needed), "{needed} not in the DaemonSet's args {args:?}");
    }
    // Test-local: ports the kernel picks on loopback (the pod's 9967 would clash with other
    // tests), and the host's /proc where the pod mounts the node's.
    let mut args: Vec<String> = args
        .into_iter()
        .map(|arg| match arg.as_str() {
            "0.0.0.0:9966" => "127.0.0.1:0".to_owned(),
            "/host/proc" => "/proc".to_owned(),
            _ => arg,
        })
        .collect();
    args.extend(["--api-listen".to_owned(), "127.0.0.1:0".to_owned()]);

    let debugger = "system:serviceaccount:monitoring:debugger";
    let access = FakeAccess {
        tokens: vec![
            ("debugger-token".into(), debugger.into(), vec!["system:serviceaccounts".into()]),
            (
                "app-token".into(),
                "system:serviceaccount:shop:checkout".into(),
                vec!["system:serviceaccounts".into()],
            ),
        ],
        grants: vec![(debugger.into(), "get".into(), "/v1/sockets".into())],
    };
    let pods = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}"#;
    let api = FakeApiServer::start_with_access(pods.into(), access);
    let scratch = std::env::temp_dir().join(format!("sockerr-e2e-{}-expose", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let kubeconfig = api.write_kubeconfig(&scratch);
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path")), ("NODE_NAME", "node-e2e")];
    let bounding = bounding_set(&daemonset_capabilities());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start_under(&["setpriv", &bounding, "--inh-caps=-all", "--"], &args, &env);

    let path = format!("/v1/sockets?pid={}", daemon.pid());
    let no_token = daemon.get_on_scrape_port(&path, None);
    let forged = daemon.get_on_scrape_port(&path, Some("forged-token"));
    let unpermitted = daemon.get_on_scrape_port(&path, Some("app-token"));
    let permitted = daemon.get_on_scrape_port(&path, Some("debugger-token"));
    let again = daemon.get_on_scrape_port(&path, Some("debugger-token"));
    let on_loopback = daemon.get(&path);
    let samples = daemon.metrics();
    let health = daemon.get_on_scrape_port("/healthz", None);
    let ready = daemon.get_on_scrape_port("/readyz", None);
    let stopped = daemon.terminate();
    let _ = std::fs::remove_dir_all(&scratch);

    assert_eq!(no_token.status, 401, "{no_token:?}");
    assert!(no_token.body.contains("Authorization: Bearer"), "{no_token:?}");
    assert_eq!(forged.status, 401, "{forged:?}");
    assert_eq!(unpermitted.status, 403, "{unpermitted:?}");
    assert!(
        unpermitted.body.contains("system:serviceaccount:shop:checkout may not get /v1/sockets"),
        "{unpermitted:?}"
    );
    for refused in [&no_token, &forged, &unpermitted] {
        assert!(!refused.body.contains("processes"), "the table leaked: {refused:?}");
    }
    assert_eq!(permitted.status, 200, "{permitted:?}");
    assert!(permitted.json()["processes"].is_array(), "{permitted:?}");
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(on_loopback.status, 200, "no token on the loopback listener: {on_loopback:?}");
    assert_eq!((health.status, ready.status), (200, 200), "{health:?} {ready:?}");

    let counter = |outcome: &str| {
        let series = format!(r#"sockerr_http_api_access_total{{outcome="{outcome}"}}"#);
        samples.iter().find(|(s, _)| *s == series).map(|(_, v)| *v)
    };
    assert_eq!(counter("no_token"), Some(1.0), "{samples:#?}");
    assert_eq!(counter("unauthenticated"), Some(1.0), "{samples:#?}");
    assert_eq!(counter("forbidden"), Some(1.0), "{samples:#?}");
    assert_eq!(counter("allowed"), Some(2.0), "{samples:#?}");
    assert_eq!(counter("review_failed"), Some(0.0), "{samples:#?}");

    // Reviewed as kube-rbac-proxy does: the token, then the user on the non-resource URL;
    // the second permitted request came from the cache.
    let reviews = api.reviews();
    let token_reviews: Vec<&Value> = reviews.iter().filter(|r| r["kind"] == "TokenReview").collect();
    assert_eq!(token_reviews.len(), 3, "one per distinct token: {reviews:#?}");
    let access_reviews: Vec<&Value> = reviews.iter().filter(|r| r["kind"] == "SubjectAccessReview").collect();
    assert_eq!(access_reviews.len(), 2, "one per authenticated token: {reviews:#?}");
    let mine = access_reviews.iter().find(|r| r["spec"]["user"] == debugger).expect("the debugger's review");
    assert_eq!(
        mine["spec"]["nonResourceAttributes"],
        serde_json::json!({"path": "/v1/sockets", "verb": "get"})
    );
    assert_eq!(mine["spec"]["groups"], serde_json::json!(["system:serviceaccounts"]));
    assert!(stopped.status.success(), "{stopped:?}");
    assert!(!stopped.stderr.contains("no CAP_"), "{}", stopped.stderr);
}
