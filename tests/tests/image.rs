//! The container image as a node runs it: the OCI archive of `cargo xtask image`
//! ($SOCKERR_IMAGE_ARCHIVE, set by stage `image` of `cargo xtask test`) pulled into podman
//! and run with exactly the pod of deploy/kubernetes: its capabilities, seccomp profile,
//! user, read-only root, host mounts, args and environment are read from the DaemonSet's
//! manifest, not repeated here. A host process's failure must be reported with its host
//! pid (the container has its own pid namespace) and its holder found (setns and sock_diag
//! from inside the container), and /healthz and /readyz must answer.
//!
//! What Kubernetes itself adds to a pod is stood in for: the pod's network namespace is
//! one this test makes (`ip netns`), the API server is the stand-in of the --kubernetes
//! tests listening in that namespace, and a kubeconfig mounted read-only replaces the
//! service account's token. podman runs with runc (crun refuses hybrid cgroup layouts),
//! the cgroupfs manager (no systemd) and a storage of its own that the test removes, with
//! everything it created, when it ends.

#![cfg(feature = "image")]
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext, Volume};
use nix::sched::{CloneFlags, setns};
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::signal::Signal;
use serde_json::Value;
use sockerr_e2e::fake_api::FakeApiServer;
use sockerr_e2e::*;

const NODE: &str = "image-test-node";
/// Where the stand-in's kubeconfig is mounted in the container.
const KUBECONFIG_IN_CONTAINER: &str = "/etc/sockerr-test/kubeconfig";
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// The one DaemonSet among the manifests (a file may hold several documents).
fn daemonset() -> DaemonSet {
    let mut found = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let documents: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for document in documents.into_iter().filter(|d| d["kind"] == "DaemonSet") {
            let daemonset: DaemonSet = serde_json::from_value(document)
                .unwrap_or_else(|e| panic!("{}: not a DaemonSet of the API ({e})", path.display()));
            found.push(daemonset);
        }
    }
    assert_eq!(found.len(), 1, "deploy/kubernetes should hold one DaemonSet");
    found.pop().expect("one")
}

/// The pod spec and its `sockerr` container.
fn pod_and_container(daemonset: &DaemonSet) -> (PodSpec, Container) {
    let pod = daemonset.spec.template.spec.clone().expect("the DaemonSet has a pod spec");
    let container =
        pod.containers.iter().find(|c| c.name == "sockerr").cloned().expect("a container `sockerr`");
    (pod, container)
}

/// podman's flags for the pod's and container's security context. Every field is named
/// (the destructuring fails to compile when the API adds one): each is either applied or
/// must be unset.
fn security_flags(pod: &PodSpec, container: &Container) -> Vec<String> {
    let SecurityContext {
        allow_privilege_escalation,
        app_armor_profile,
        capabilities,
        privileged,
        proc_mount,
        read_only_root_filesystem,
        run_as_group,
        run_as_non_root,
        run_as_user,
        se_linux_options,
        seccomp_profile,
        windows_options,
    } = container.security_context.clone().unwrap_or_default();
    let pod_context = pod.security_context.clone().unwrap_or_default();
    let mut flags = Vec::new();
    if privileged == Some(true) {
        flags.push("--privileged".to_owned());
    }
    if allow_privilege_escalation == Some(false) {
        flags.extend(["--security-opt".to_owned(), "no-new-privileges".to_owned()]);
    }
    if let Some(capabilities) = capabilities {
        for drop in capabilities.drop.unwrap_or_default() {
            flags.push(format!("--cap-drop={}", capability(&drop)));
        }
        for add in capabilities.add.unwrap_or_default() {
            flags.push(format!("--cap-add={}", capability(&add)));
        }
    }
    if read_only_root_filesystem == Some(true) {
        // A pod's read-only root has no writable /tmp or /run: podman adds those unless told.
        flags.extend(["--read-only".to_owned(), "--read-only-tmpfs=false".to_owned()]);
    }
    let user = run_as_user.or(pod_context.run_as_user);
    let group = run_as_group.or(pod_context.run_as_group);
    if let Some(user) = user {
        flags.push(format!("--user={user}{}", group.map(|g| format!(":{g}")).unwrap_or_default()));
    }
    if run_as_non_root.or(pod_context.run_as_non_root) == Some(true) {
        assert!(user.is_some_and(|u| u != 0), "runAsNonRoot needs a runAsUser other than 0 here");
    }
    let seccomp = seccomp_profile.or(pod_context.seccomp_profile);
    match seccomp.as_ref().map(|profile| profile.type_.as_str()) {
        // podman's default profile is the runtime's default, as RuntimeDefault asks.
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => flags.extend(["--security-opt".to_owned(), "seccomp=unconfined".to_owned()]),
        Some(other) => panic!("seccompProfile type {other} is not supported by this test"),
    }
    assert!(proc_mount.as_deref().is_none_or(|m| m == "Default"), "procMount {proc_mount:?}");
    // Not enforced on this machine (no AppArmor or SELinux), Windows-only: must stay unset
    // for the test to run the pod as specified.
    assert!(app_armor_profile.is_none(), "appArmorProfile is not applied by this test");
    assert!(se_linux_options.is_none(), "seLinuxOptions is not applied by this test");
    assert!(windows_options.is_none(), "windowsOptions");
    flags
}

/// `BPF` or `CAP_BPF` as podman takes it.
fn capability(name: &str) -> String {
    if name == "ALL" || name.starts_with("CAP_") { name.to_owned() } else { format!("CAP_{name}") }
}

/// `-v host:container[:ro]` per volume mount (hostPath volumes only: the DaemonSet's kind).
fn mount_flags(pod: &PodSpec, container: &Container) -> Vec<String> {
    let volumes: BTreeMap<&str, &Volume> =
        pod.volumes.iter().flatten().map(|volume| (volume.name.as_str(), volume)).collect();
    let mut flags = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes.get(mount.name.as_str()).unwrap_or_else(|| panic!("no volume {}", mount.name));
        if volume.empty_dir.is_some() {
            flags.push(format!("--tmpfs={}", mount.mount_path));
            continue;
        }
        let host =
            volume.host_path.as_ref().unwrap_or_else(|| panic!("volume {} is not a hostPath", mount.name));
        if host.type_.as_deref() == Some("Directory") {
            assert!(Path::new(&host.path).is_dir(), "hostPath {} is not a directory here", host.path);
        }
        let mut options = vec![if mount.read_only == Some(true) { "ro" } else { "rw" }];
        match mount.mount_propagation.as_deref() {
            None | Some("None") => {}
            Some("HostToContainer") => options.push("rslave"),
            Some("Bidirectional") => options.push("rshared"),
            Some(other) => panic!("mountPropagation {other}"),
        }
        assert!(mount.sub_path.is_none(), "subPath is not supported by this test");
        flags.push(format!("--volume={}:{}:{}", host.path, mount.mount_path, options.join(",")));
    }
    flags
}

/// `-e NAME=VALUE` per variable; fieldRefs get what the kubelet would give this pod.
fn env_flags(container: &Container) -> Vec<String> {
    let mut flags = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => {
                let field =
                    from.field_ref.as_ref().unwrap_or_else(|| panic!("env {}: only fieldRef", var.name));
                match field.field_path.as_str() {
                    "spec.nodeName" => NODE.to_owned(),
                    "metadata.namespace" => "sockerr".to_owned(),
                    "metadata.name" => "sockerr-image-test".to_owned(),
                    other => panic!("env {}: fieldRef {other} is not supported by this test", var.name),
                }
            }
            _ => String::new(),
        };
        flags.push(format!("--env={}={value}", var.name));
    }
    flags
}

/// podman with a storage of its own, reset and removed on drop.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sockerr-e2e-{}-podman", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Self { dir }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver=overlay", "--runtime=runc", "--cgroup-manager=cgroupfs"])
            .args(["--events-backend=file", "--tmpdir"])
            .arg(self.dir.join("tmp"));
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let mut command = self.command();
        command.args(args);
        let what = format!("podman {}", args.join(" "));
        let finished = run_to_end(&what, &mut command, Duration::from_secs(120));
        assert!(finished.status.success(), "{what} failed ({}): {}", finished.status, finished.stderr);
        finished.stdout.trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers, images, volumes and the storage's own directories.
        let _ = self.command().args(["rm", "--all", "--force"]).output();
        let _ = self.command().args(["system", "reset", "--force"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A network namespace for the pod, made with `ip netns` and deleted on drop.
struct PodNetwork {
    name: String,
}

impl PodNetwork {
    fn new() -> Self {
        let name = format!("sockerr-e2e-{}-pod", std::process::id());
        for args in [vec!["netns", "add", &name], vec!["-n", &name, "link", "set", "lo", "up"]] {
            let finished = run_to_end("ip", Command::new("ip").args(&args), Duration::from_secs(10));
            assert!(finished.status.success(), "ip {}: {}", args.join(" "), finished.stderr);
        }
        Self { name }
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay there).
    fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns: {e}"));
                    f()
                })
                .join()
                .expect("the thread inside the pod's namespace panicked")
        })
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// The stand-in API server, living on a thread inside the pod's namespace (its listener
/// is there, and so must be the connection that wakes it to stop).
struct ApiInPod {
    url: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl ApiInPod {
    fn start(network: &PodNetwork, pod_list: String) -> Self {
        let path = network.path();
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns: {e}"));
            let api = FakeApiServer::start(pod_list);
            url_tx.send(api.url()).expect("the test waits for the url");
            // Bounded: the test ends within minutes; a dropped sender ends the wait too.
            let _ = stop_rx.recv_timeout(Duration::from_secs(300));
            api.requests()
        });
        let url = url_rx.recv_timeout(Duration::from_secs(10)).expect("the API server started");
        Self { url, stop: Some(stop_tx), thread: Some(thread) }
    }

    fn stop(&mut self) -> Vec<String> {
        drop(self.stop.take());
        self.thread.take().map(|t| t.join().expect("API thread")).unwrap_or_default()
    }
}

impl Drop for ApiInPod {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Gives the kubeconfig's cluster a CA, as the in-cluster configuration of a real pod always
/// has (the service account's ca.crt). Without one, kube's rustls client loads the system's
/// roots, which a `scratch` image has none of, and the daemon refuses to start (seen in the
/// stage: "No CA certificates were loaded from the system"). The stand-in API server speaks
/// plain HTTP, so which certificate it is does not matter: the first of the host's bundle.
fn with_cluster_ca(kubeconfig: &Path) {
    let bundle = std::fs::read_to_string(HOST_CA_BUNDLE)
        .unwrap_or_else(|e| panic!("{HOST_CA_BUNDLE}: {e} (install Debian's ca-certificates)"));
    let end = "-----END CERTIFICATE-----";
    let first = bundle.find(end).map(|at| &bundle[..at + end.len()]).expect("a PEM certificate");
    let encoded = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("piped stdin").write_all(first.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64");
    assert!(encoded.status.success(), "base64 failed");
    let encoded = String::from_utf8(encoded.stdout).expect("base64 is ASCII");
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let server_line =
        text.lines().find(|line| line.trim_start().starts_with("server:")).expect("server line");
    let indent = &server_line[..server_line.len() - server_line.trim_start().len()];
    let with_ca = text.replacen(
        server_line,
        &format!("{server_line}\n{indent}certificate-authority-data: {encoded}"),
        1,
    );
    std::fs::write(kubeconfig, with_ca).expect("kubeconfig");
}

const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The pod's RLIMIT_NPROC at most (see where it is used).
const NPROC_IN_POD: u64 = 4096;

/// The process's own soft and hard limit of `resource`, for podman's --ulimit: podman's
/// defaults exceed this machine's hard limits, which a container without
/// CAP_SYS_RESOURCE cannot raise.
fn own_limit(resource: Resource) -> (u64, u64) {
    getrlimit(resource).unwrap_or_else(|e| panic!("getrlimit({resource:?}): {e}"))
}

/// GET `path` on `address`, HTTP/1.0 on a plain socket (from inside the pod's namespace).
fn http_status(address: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect_timeout(&address, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {address} in the pod's namespace: {e}"));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: {response}"))
}

/// The architectures the pod may be scheduled on: `kubernetes.io/arch` in the node
/// selector or in required node affinity.
fn schedulable_architectures(pod: &PodSpec) -> Vec<String> {
    let mut arches: Vec<String> = pod
        .node_selector
        .iter()
        .flatten()
        .filter(|(k, _)| *k == "kubernetes.io/arch")
        .map(|(_, v)| v.clone())
        .collect();
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    for term in required.iter().flat_map(|r| &r.node_selector_terms) {
        for expression in term.match_expressions.iter().flatten().filter(|e| e.key == "kubernetes.io/arch") {
            assert_eq!(expression.operator, "In", "{expression:?}");
            arches.extend(expression.values.iter().flatten().cloned());
        }
    }
    arches.sort();
    arches
}

/// The image holds amd64 and arm64 (`cargo xtask image` checks its index): the DaemonSet
/// must schedule on exactly those.
#[test]
fn the_daemonset_schedules_on_the_images_architectures() {
    let (pod, _) = pod_and_container(&daemonset());
    assert_eq!(schedulable_architectures(&pod), ["amd64", "arm64"]);
}

#[test]
fn the_image_runs_under_the_daemonsets_security_context() {
    require_root();
    let archive = std::env::var_os("SOCKERR_IMAGE_ARCHIVE").map(PathBuf::from).expect(
        "SOCKERR_IMAGE_ARCHIVE is unset: stage `image` of `cargo xtask test` builds the image and sets it",
    );
    assert!(archive.is_file(), "{} does not exist", archive.display());
    let daemonset = daemonset();
    let (pod, container) = pod_and_container(&daemonset);
    assert_ne!(pod.host_network, Some(true), "this test gives the pod a network namespace of its own");

    let podman = Podman::new();
    // The index's instance for this machine's architecture.
    let pulled = podman.run(&["pull", "--quiet", &format!("oci-archive:{}", archive.display())]);
    let image = pulled.lines().last().expect("podman pull printed the image id").to_owned();
    let arch = podman.run(&["image", "inspect", "--format", "{{.Architecture}}", &image]);
    let expected_arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    assert_eq!(arch, expected_arch, "podman picked another architecture's image");

    let network = PodNetwork::new();
    let pod_uid = "3f2c1b0a-4d5e-4f60-8a71-92b3c4d5e6f7";
    let container_id = "ab".repeat(32);
    let pod_list_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pods-on-node.json");
    let pod_list = std::fs::read_to_string(&pod_list_path)
        .unwrap_or_else(|e| panic!("{}: {e}", pod_list_path.display()))
        .replace("{{POD_UID}}", pod_uid)
        .replace("{{CONTAINER_ID}}", &container_id)
        .replace("{{NODE}}", NODE);
    let mut api = ApiInPod::start(&network, pod_list);
    let kubeconfig = sockerr_e2e::fake_api::write_kubeconfig(&podman.dir, &api.url);
    with_cluster_ca(&kubeconfig);

    let (nofile_soft, nofile_hard) = own_limit(Resource::RLIMIT_NOFILE);
    // RLIMIT_NPROC binds no process holding CAP_SYS_ADMIN (the DaemonSet's), so any value
    // serves; but runc cannot raise it above what its parent (conmon) has without
    // CAP_SYS_RESOURCE, and conmon's differs from ours (32768 here, measured, against our
    // 96365: the run failed with "error setting rlimit type 6"). 4096 is below either.
    let (nproc_soft, nproc_hard) = own_limit(Resource::RLIMIT_NPROC);
    let (nproc_soft, nproc_hard) = (nproc_soft.min(NPROC_IN_POD), nproc_hard.min(NPROC_IN_POD));
    let name = format!("sockerr-e2e-{}", std::process::id());
    let mut run = podman.command();
    run.args(["run", "--rm", "--name", &name, "--pull=never"])
        .arg(format!("--network=ns:{}", network.path().display()))
        .arg(if pod.host_pid == Some(true) { "--pid=host" } else { "--pid=private" })
        .arg(format!("--ulimit=nofile={nofile_soft}:{nofile_hard}"))
        .arg(format!("--ulimit=nproc={nproc_soft}:{nproc_hard}"))
        .args(security_flags(&pod, &container))
        .args(mount_flags(&pod, &container))
        .args(env_flags(&container))
        .arg(format!("--volume={}:{KUBECONFIG_IN_CONTAINER}:ro", kubeconfig.display()))
        .arg(format!("--env=KUBECONFIG={KUBECONFIG_IN_CONTAINER}"));
    if let Some(command) = &container.command {
        run.arg(format!("--entrypoint={}", serde_json::to_string(command).expect("JSON")));
    }
    run.arg(&image).args(container.args.iter().flatten());
    let what = format!("podman run {image} (the DaemonSet's pod)");
    let daemon = Tracer::start_program(&what, run);
    daemon.wait_for_stderr(READY_TIMEOUT, |line| line.contains("Kubernetes API reachable"));

    // A failure made by a host process, in a pod's cgroup.
    let levels = [
        "kubepods.slice".to_owned(),
        "kubepods-besteffort.slice".to_owned(),
        format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
        format!("cri-containerd-{container_id}.scope"),
    ];
    let cgroup = TestCgroup::nested("image", &levels.iter().map(String::as_str).collect::<Vec<_>>());
    let report = ScenarioRun::start_in_cgroup("cilium", &[], cgroup.path()).finish();
    let proxy = actor(&report, "proxy");
    let attempts = report.attempts_of("proxy");
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };
    let is_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    let records = daemon.wait_for_records(attempts.len(), RECORD_TIMEOUT, is_failure);
    for (record, attempt) in records.iter().zip(&attempts) {
        // Host pids, although the container has a pid namespace of its own.
        assert_failure_matches(record, attempt, &report);
        assert_eq!(record.str_at("/cause"), Some("tuple_in_use"), "{record}");
        assert_holder_matches(record, holder);
        assert_eq!(record.str_at("/pod_uid"), Some(pod_uid), "{record}");
        assert_eq!(record.str_at("/pod"), Some("checkout-7d9f8b6c5-x2kqp"), "{record}");
    }

    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .map(|p| p.container_port)
        .expect("the container declares its http port");
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, u16::try_from(port).expect("a port")));
    let (healthz, readyz) =
        network.inside(|| (http_status(address, "/healthz"), http_status(address, "/readyz")));
    assert_eq!((healthz, readyz), (200, 200), "/healthz and /readyz in the pod's network namespace");

    // The kubelet stops a pod with SIGTERM; podman forwards it to the container.
    let stopped = daemon.stop_with(Signal::SIGTERM);
    assert!(stopped.status.success(), "the daemon's exit: {}\nstderr:\n{}", stopped.status, stopped.stderr);
    assert!(
        !stopped.stderr.contains("no CAP_"),
        "a capability the code uses is missing:\n{}",
        stopped.stderr
    );
    let requests = api.stop();
    assert!(
        requests.iter().any(|r| r.contains(&format!("spec.nodeName%3D{NODE}"))
            || r.contains(&format!("spec.nodeName={NODE}"))),
        "the daemon did not ask for this node's pods: {requests:?}"
    );
    drop(cgroup);
    drop(network);
    drop(podman);
    let leftovers = std::env::temp_dir().join(format!("sockerr-e2e-{}-podman", std::process::id()));
    assert!(!leftovers.exists(), "{} was not removed", leftovers.display());
}
