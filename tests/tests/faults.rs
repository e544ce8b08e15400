//! Issue 12, item 4: faults sockerr must survive, each bounded in time and cleaned up.
//! - SIGKILL: the kernel keeps no program, link or map of the killed process (checked by
//!   id against the kernel's own lists), and a restart traces again;
//! - two instances at once: both trace; one on a taken port refuses with a clear message;
//! - `--host-proc` pointing nowhere: a clear error before anything is loaded;
//! - the ring buffer full for seconds (the daemon stopped): the loss is counted, and the
//!   daemon catches up and counts what follows;
//! - SIGTERM while lookups (sock_diag, /proc) run: a prompt, clean exit, no torn line;
//! - the Kubernetes API down, back, and flapping: one warning per outage, pods named
//!   again once it is back.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sockerr_e2e::fake_api::FakeApiServer;
use sockerr_e2e::*;

/// How long the kernel may take to free the objects of a process that died.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// BPF objects by id: what a process holds, or what of it the kernel still has.
#[derive(Debug, Default, PartialEq, Eq)]
struct BpfObjects {
    programs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
    links: BTreeSet<u32>,
}

impl BpfObjects {
    /// The objects `pid` holds an fd of (`prog_id:`, `map_id:`, `link_id:` in fdinfo).
    fn held_by(pid: u32) -> Self {
        let mut held = Self::default();
        let dir = format!("/proc/{pid}/fdinfo");
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            // An fd closed since the listing has no fdinfo any more.
            let Ok(info) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else { continue };
            for line in info.lines() {
                let id = |prefix: &str| line.strip_prefix(prefix).and_then(|v| v.trim().parse::<u32>().ok());
                if let Some(id) = id("prog_id:") {
                    held.programs.insert(id);
                } else if let Some(id) = id("map_id:") {
                    held.maps.insert(id);
                } else if let Some(id) = id("link_id:") {
                    held.links.insert(id);
                }
            }
        }
        held
    }

    /// Those of `self` the kernel still lists (BPF_*_GET_NEXT_ID). Objects freed while
    /// the lists are walked come back as errors and count as gone.
    fn still_loaded(&self) -> Self {
        let programs: BTreeSet<u32> =
            aya::programs::loaded_programs().filter_map(Result::ok).map(|p| p.id()).collect();
        let maps: BTreeSet<u32> = aya::maps::loaded_maps().filter_map(Result::ok).map(|m| m.id()).collect();
        let links: BTreeSet<u32> =
            aya::programs::loaded_links().filter_map(Result::ok).map(|l| l.id()).collect();
        Self {
            programs: self.programs.intersection(&programs).copied().collect(),
            maps: self.maps.intersection(&maps).copied().collect(),
            links: self.links.intersection(&links).copied().collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }

    /// Waits (bounded) until the kernel freed every object; returns what is left.
    fn wait_released(&self) -> Self {
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        loop {
            let left = self.still_loaded();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A refused connect of `demo-proxy`, traced by `tracer`: proves it traces.
fn assert_traces(tracer: &Tracer) {
    let report = run_scenario("refused", &["--blocking", "--hold-ms", "300"]);
    let proxy = actor(&report, "proxy");
    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    tracer.wait_for_records(1, RECORD_TIMEOUT, mine);
}

#[test]
fn sigkill_leaves_no_program_link_or_map_and_a_restart_traces() {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let held = BpfObjects::held_by(tracer.pid());
    assert!(!held.programs.is_empty() && !held.maps.is_empty(), "the tracer holds its objects: {held:?}");
    // The check sees them while the tracer lives: it can fail.
    assert_eq!(held.still_loaded(), held, "every object of a live tracer is listed by the kernel");
    let killed = tracer.stop_with(Signal::SIGKILL);
    assert_eq!(killed.status.signal(), Some(Signal::SIGKILL as i32), "{killed:?}");
    let left = held.wait_released();
    assert!(left.is_empty(), "left behind in the kernel {RELEASE_TIMEOUT:?} after SIGKILL: {left:?}");

    let restarted = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let held = BpfObjects::held_by(restarted.pid());
    assert_traces(&restarted);
    let stopped = restarted.stop();
    assert!(stopped.status.success(), "{stopped:?}");
    let left = held.wait_released();
    assert!(left.is_empty(), "left behind after a clean stop: {left:?}");
}

#[test]
fn two_instances_both_trace_and_a_taken_port_is_refused_clearly() {
    let first = Daemon::start(&["--comm", "demo-proxy"]);
    let second = Daemon::start(&["--comm", "demo-proxy"]);
    let report = run_scenario("refused", &["--blocking", "--hold-ms", "300"]);
    let proxy = actor(&report, "proxy");
    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "connect_error";
    for daemon in [&first, &second] {
        daemon.wait_for_records(1, RECORD_TIMEOUT, mine);
        let refused: f64 = daemon
            .metrics()
            .iter()
            .filter(|(series, _)| series.starts_with(r#"sockerr_connect_errors_total{errno="ECONNREFUSED""#))
            .map(|(_, value)| value)
            .sum();
        assert!(refused >= 1.0, "both daemons count the failure");
    }

    // A third on the first one's port: refused before any program is loaded.
    let mut command = Command::new(sockerr_bin());
    command.args(["daemon", "--listen", &first.addr().to_string(), "--comm", "demo-proxy"]);
    let third = run_to_end("sockerr daemon on a taken port", &mut command, STOP_TIMEOUT);
    assert!(!third.status.success(), "{third:?}");
    assert!(
        third.stderr.contains(&format!("cannot listen on {}", first.addr()))
            && third.stderr.contains("the port is taken (another sockerr daemon?)"),
        "{}",
        third.stderr
    );
    assert!(!third.stderr.contains(READY_MARKER), "{}", third.stderr);
    for daemon in [first, second] {
        let stopped = daemon.terminate();
        assert!(stopped.status.success(), "{stopped:?}");
    }
}

#[test]
fn host_proc_missing_at_start_is_a_clear_error() {
    let nowhere = "/nonexistent/sockerr-e2e-host-proc";
    for subcommand in ["trace", "daemon"] {
        let mut command = Command::new(sockerr_bin());
        command.args([subcommand, "--host-proc", nowhere]);
        if subcommand == "daemon" {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let finished =
            run_to_end(&format!("sockerr {subcommand} --host-proc {nowhere}"), &mut command, STOP_TIMEOUT);
        assert!(!finished.status.success(), "{finished:?}");
        assert!(
            finished.stderr.contains(&format!("--host-proc {nowhere}: cannot read it")),
            "{}",
            finished.stderr
        );
        assert!(finished.stderr.contains("mount the host's /proc there"), "{}", finished.stderr);
        assert!(!finished.stderr.contains(READY_MARKER), "nothing loaded: {}", finished.stderr);
        assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    }
    // Not a procfs either: a clear error, not lookups failing record after record.
    let mut command = Command::new(sockerr_bin());
    command.args(["trace", "--host-proc", "/sys"]);
    let finished = run_to_end("sockerr trace --host-proc /sys", &mut command, STOP_TIMEOUT);
    assert!(!finished.status.success(), "{finished:?}");
    assert!(finished.stderr.contains("--host-proc /sys: not a procfs"), "{}", finished.stderr);
}

/// `sockerr scenario flood --gate`: ready (its pid known), waiting for a go.
struct Flood {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Flood {
    fn ready(count: u64) -> Self {
        let mut child = Command::new(sockerr_bin())
            .args(["scenario", "flood", "--gate", "--threads", "2", "--count", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sockerr scenario flood");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the flood's gate line");
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("gate line {line:?}: {e}"));
        let pid = ready["ready"].as_u64().unwrap_or_else(|| panic!("no pid at the gate: {line}")) as u32;
        Self { child, stdin, stdout, pid }
    }

    /// Opens the gate and waits (bounded) for the flood's report.
    fn run(mut self) -> Value {
        let mut stdin = self.stdin.take().expect("gate still closed");
        stdin.write_all(b"go\n").expect("open the flood's gate");
        drop(stdin);
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("the flood's report");
        let deadline = Instant::now() + SCENARIO_TIMEOUT;
        while self.child.try_wait().expect("wait for the flood").is_none() {
            assert!(Instant::now() < deadline, "the flood did not exit within {SCENARIO_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let report: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("flood report {line:?}: {e}"));
        assert_eq!(report["unexpected"].as_u64(), Some(0), "{report}");
        report
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sum(samples: &[(String, f64)], prefix: &str) -> u64 {
    samples.iter().filter(|(series, _)| series.starts_with(prefix)).map(|(_, value)| value).sum::<f64>()
        as u64
}

const COUNTED: &str = r#"sockerr_connect_errors_total{errno="EADDRNOTAVAIL""#;
const LOST: &str = "sockerr_events_lost_total";

/// (failures counted, kernel events lost) once the count stopped growing (bounded).
fn settled(daemon: &Daemon, until: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut previous = None;
    loop {
        let samples = daemon.metrics();
        let counted = sum(&samples, COUNTED);
        if counted >= until || previous == Some(counted) || Instant::now() > deadline {
            return (counted, sum(&samples, LOST));
        }
        previous = Some(counted);
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn ring_full_for_seconds_loss_is_counted_and_the_daemon_catches_up() {
    const FIRST: u64 = 20_000;
    const AFTER: u64 = 2_000;
    let first = Flood::ready(FIRST);
    let after = Flood::ready(AFTER);
    let daemon = Daemon::start(&["--pid", &first.pid.to_string(), "--pid", &after.pid.to_string()]);
    assert_eq!(sum(&daemon.metrics(), LOST), 0);

    // Stopped, the daemon reads nothing: the flood fills the ring buffer (1 MiB) and the
    // kernel programs drop the rest, for seconds.
    let daemon_pid = Pid::from_raw(daemon.pid() as i32);
    kill(daemon_pid, Signal::SIGSTOP).expect("SIGSTOP the daemon");
    let resumed = Resume(daemon_pid);
    let report = first.run();
    assert_eq!(report["failures"].as_u64(), Some(FIRST), "{report}");
    std::thread::sleep(Duration::from_secs(2));
    drop(resumed);

    let (counted, lost) = settled(&daemon, FIRST);
    eprintln!("ring full: {counted} of {FIRST} failures counted, {lost} kernel events lost");
    assert!(lost > 0, "a ring full for seconds lost nothing? {counted} of {FIRST} counted");
    assert!(counted < FIRST, "{lost} events lost, yet every failure counted");
    assert!(counted > 0, "what the ring held before it filled is counted");
    assert!(
        lost >= FIRST - counted,
        "{} failures missing, only {lost} events reported lost",
        FIRST - counted
    );

    // Caught up: what follows is counted whole, and nothing more is lost.
    let report = after.run();
    assert_eq!(report["failures"].as_u64(), Some(AFTER), "{report}");
    let (now_counted, now_lost) = settled(&daemon, counted + AFTER);
    assert_eq!(now_counted - counted, AFTER, "the failures after the recovery are all counted");
    assert_eq!(now_lost, lost, "nothing lost after the recovery");
    let stopped = daemon.terminate();
    assert!(stopped.status.success(), "{stopped:?}");
    // Every printed record is whole JSON (records() fails on a torn line).
    let printed = stopped.records().iter().filter(|r| r.event() == "connect_error").count() as u64;
    assert_eq!(printed, now_counted, "one NDJSON line per counted failure");
}

/// SIGCONT when dropped: a failing test never leaves a stopped daemon behind.
struct Resume(Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn sigterm_while_lookups_run_exits_promptly_and_cleanly() {
    let flood = Flood::ready(40_000);
    let daemon = Daemon::start(&["--pid", &flood.pid.to_string()]);
    let held = BpfObjects::held_by(daemon.pid());
    let flooding = std::thread::spawn(move || flood.run());
    // Every failure of the flood asks for its holder (sock_diag in the flood's network
    // namespace, then /proc): once records with a cause arrive, lookups are under way.
    daemon.wait_for_records(50, RECORD_TIMEOUT, |r| r.str_at("/cause") == Some("tuple_in_use"));
    let stopped = daemon.terminate();
    assert!(stopped.status.success(), "{stopped:?}");
    assert!(stopped.elapsed < STOP_TIMEOUT, "took {:?} to stop", stopped.elapsed);
    assert!(
        stopped.stderr.contains("SIGTERM: stopping") && stopped.stderr.contains("stopped:"),
        "{}",
        stopped.stderr
    );
    // No torn line: records() fails the test on one; each record is complete.
    for record in stopped.records().iter().filter(|r| r.event() == "connect_error") {
        assert!(record.str_at("/cause").is_some(), "a record without its classification: {record}");
    }
    let left = held.wait_released();
    assert!(left.is_empty(), "left behind after SIGTERM: {left:?}");
    flooding.join().expect("the flood ran");
}

const NODE: &str = "node-e2e-faults";
/// How long sockerr may take to list the pods again: kube's backoff doubles from 0.8 s.
const API_TIMEOUT: Duration = Duration::from_secs(40);

/// A pod of this test, in a cgroupfs layout, and the pod list naming it.
fn fake_pod() -> (String, String, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), nanos & 0xffff_ffff_ffff);
    let container_id = format!("{:032x}{:032x}", nanos, u128::from(std::process::id()));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/pods-on-node.json");
    let template = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let list = template
        .replace("{{POD_UID}}", &uid)
        .replace("{{CONTAINER_ID}}", &container_id)
        .replace("{{NODE}}", NODE);
    (uid, container_id, list)
}

fn count_lines(tracer: &Tracer, pattern: &str) -> usize {
    tracer.process_stderr().lines().filter(|l| l.contains(pattern)).count()
}

#[test]
fn kubernetes_api_down_back_and_flapping() {
    let (uid, container_id, list) = fake_pod();
    let levels = ["kubepods".to_owned(), "besteffort".to_owned(), format!("pod{uid}"), container_id.clone()];
    let cgroup = TestCgroup::nested("faults-api", &levels.iter().map(String::as_str).collect::<Vec<_>>());
    let api = FakeApiServer::start(list);
    let dir = std::env::temp_dir().join(format!("sockerr-e2e-{}-faults-api", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let _scratch = RemoveDir(dir.clone());
    let kubeconfig = api.write_kubeconfig(&dir);
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))];
    let args = ["--cgroup", cgroup.relative(), "--kubernetes", "--node-name", NODE, "--output", "json"];
    let tracer = Tracer::start_with_env(&args, &env);
    tracer.wait_for_stderr(API_TIMEOUT, |l| l.contains("Kubernetes API reachable: 2 pods known"));

    // Down: one warning; the pods known stay named meanwhile.
    api.set_down(true);
    tracer.wait_for_stderr(API_TIMEOUT, |l| l.contains("Kubernetes API unreachable"));
    assert_named(&tracer, &cgroup);
    // Back.
    api.set_down(false);
    tracer.wait_for_stderr(API_TIMEOUT, |l| l.contains("Kubernetes API reachable again"));

    // Flapping: three short outages in a row, then up for good.
    for _ in 0..3 {
        api.set_down(true);
        std::thread::sleep(Duration::from_millis(700));
        api.set_down(false);
        std::thread::sleep(Duration::from_millis(700));
    }
    let outages = count_lines(&tracer, "Kubernetes API unreachable");
    let deadline = Instant::now() + API_TIMEOUT;
    while count_lines(&tracer, "Kubernetes API reachable again") < outages {
        assert!(Instant::now() < deadline, "not back after the flapping:\n{}", tracer.process_stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_named(&tracer, &cgroup);
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{stopped:?}");
    let warnings = count_lines_of(&stopped.stderr, "Kubernetes API unreachable");
    let recoveries = count_lines_of(&stopped.stderr, "Kubernetes API reachable again");
    assert!(warnings >= 2, "the outage and the flapping warned:\n{}", stopped.stderr);
    assert_eq!(
        warnings, recoveries,
        "one warning per outage, each followed by its recovery:\n{}",
        stopped.stderr
    );
    let errors: Vec<&str> = stopped.stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

fn count_lines_of(text: &str, pattern: &str) -> usize {
    text.lines().filter(|l| l.contains(pattern)).count()
}

/// A bind failure inside the pod's cgroup comes out with the pod's name.
fn assert_named(tracer: &Tracer, cgroup: &TestCgroup) {
    let report = ScenarioRun::start_in_cgroup("bind-in-use", &["--hold-ms", "300"], cgroup.path()).finish();
    let proxy = actor(&report, "proxy");
    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    let records = tracer.wait_for_records(1, RECORD_TIMEOUT, mine);
    assert_eq!(records[0].str_at("/pod"), Some("checkout-7d9f8b6c5-x2kqp"), "{}", records[0]);
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
