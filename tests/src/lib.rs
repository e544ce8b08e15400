//! Harness of the end-to-end tests: run `sockerr trace` next to `sockerr scenario` and
//! compare what the tracer printed with the scenario's report of what really happened.
//!
//! Everything is bounded in time, and every process started here is killed and reaped
//! when its guard drops, also when a test panics half-way.
//!
//! Tests run in parallel and several scenarios share comm names (`demo-proxy`), so a
//! tracer filtered on `--comm demo-proxy` also sees the proxies of concurrent tests. The
//! tests therefore pick their records by the pids in their own scenario's report (pids are
//! unique while the processes live, and the scenario keeps them alive until the tracer had
//! time to look them up), and assert the netns of each record rather than filtering on it.

pub mod fake_api;
mod memory_cgroup;
mod script;

// Used by src/bin/panic_probe.rs only (a package's binary cannot have dependencies of its own).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya as _;
pub use daemon::{Daemon, HttpResponse};
// Used by the `image` test target only (feature `image`).
#[cfg(feature = "image")]
use k8s_openapi as _;
pub use memory_cgroup::MemoryCgroup;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
pub use script::Script;
use serde_json::Value;
#[cfg(feature = "image")]
use serde_saphyr as _;
pub use sockerr_workloads::Report;
pub use sockerr_workloads::report::{
    ActorFacts, Attempt, Gate, GateActors, HolderFacts, HttpExchange, ResetFacts, ResetReport,
};
use tokio as _;
use tracer_common as _;
use tracing_subscriber as _;

/// How long sockerr may take to load and attach its programs (the contract: it logs a
/// line containing `tracing started` on stderr once they are attached).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a scenario may run (they take ~2 s: 1.5 s of that is the hold).
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long records may take to show up after the scenario finished.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sockerr may take to exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const READY_MARKER: &str = "tracing started";

/// Set by `cargo xtask vm-test` in guests emulated for another architecture (arm64 on an
/// amd64 host: qemu translates every instruction, several times slower than the host).
pub const TIME_SCALE_ENV: &str = "SOCKERR_E2E_TIME_SCALE";

/// `timeout` as long as this machine needs it: multiplied by $SOCKERR_E2E_TIME_SCALE (a
/// whole number, 1 when unset). Every wait for something to happen goes through this, so
/// a slow guest gets more time while a failing test still fails; the fixed pauses of
/// tests that check that nothing happens are not scaled.
pub fn patience(timeout: Duration) -> Duration {
    static SCALE: OnceLock<u32> = OnceLock::new();
    let scale = *SCALE.get_or_init(|| match std::env::var(TIME_SCALE_ENV) {
        Err(std::env::VarError::NotPresent) => 1,
        Ok(value) => value.trim().parse().ok().filter(|&n| n >= 1).unwrap_or_else(|| {
            panic!("{TIME_SCALE_ENV}={value:?}: expected a whole number of at least 1 (unset it for 1)")
        }),
        Err(e) => panic!("{TIME_SCALE_ENV}: {e}"),
    });
    timeout * scale
}

/// The release binary under test: $SOCKERR_BIN (set by `cargo xtask test`), else
/// `<workspace>/target/release/sockerr`.
pub fn sockerr_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SOCKERR_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "SOCKERR_BIN={} does not exist: run `cargo xtask test`", path.display());
        return path;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let path = target.join("release").join("sockerr");
    assert!(
        path.is_file(),
        "no sockerr binary: SOCKERR_BIN is unset and {} does not exist. Run `cargo xtask test` \
         (it builds the release binary and runs these tests as root).",
        path.display()
    );
    path
}

/// Whether this kernel's tracepoint `category:event` has `field` (a field declared as
/// `... field;` in its format, at either tracefs mount point): what a test may expect
/// from a record depends on the kernel's tracepoints.
pub fn tracepoint_has_field(category: &str, event: &str, field: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].iter().any(|tracefs| {
        std::fs::read_to_string(format!("{tracefs}/events/{category}/{event}/format"))
            .is_ok_and(|format| format.contains(&format!(" {field};")))
    })
}

/// Whether `skb:kfree_skb` names the receiving socket (`rx_sk`, Linux 6.11+): before,
/// packet drops are attributed to no socket.
pub fn kernel_has_rx_sk() -> bool {
    tracepoint_has_field("skb", "kfree_skb", "rx_sk")
}

/// These tests load eBPF programs and create network namespaces.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests need root (eBPF, network namespaces): run `cargo xtask test`"
    );
}

mod daemon;

/// Output of a process, collected by reader threads.
#[derive(Default)]
struct Output {
    stdout: Vec<String>,
    stderr: Vec<String>,
    stdout_closed: bool,
    stderr_closed: bool,
}

struct Shared {
    output: Mutex<Output>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Output> {
        // A panicking reader thread cannot leave the output inconsistent: keep using it.
        self.output.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `done` holds or `timeout` passed; returns whether it holds.
    /// `timeout` is scaled by [`patience`].
    fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Output) -> bool) -> bool {
        let deadline = Instant::now() + patience(timeout);
        let mut output = self.lock();
        loop {
            if done(&output) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            output = self.changed.wait_timeout(output, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// A child process whose stdout and stderr lines are collected as they come. Dropping it
/// kills and reaps the process.
struct Process {
    what: String,
    child: Child,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Process {
    fn spawn(what: String, command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let shared = Arc::new(Shared { output: Mutex::default(), changed: Condvar::new() });
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let readers = vec![
            read_lines(stdout, Arc::clone(&shared), |output, line| match line {
                Some(line) => output.stdout.push(line),
                None => output.stdout_closed = true,
            }),
            read_lines(stderr, Arc::clone(&shared), |output, line| match line {
                Some(line) => output.stderr.push(line),
                None => output.stderr_closed = true,
            }),
        ];
        Self { what, child, shared, readers, status: None }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn stderr(&self) -> String {
        self.shared.lock().stderr.join("\n")
    }

    /// Waits (bounded) for the exit, which closes both pipes; kills on timeout.
    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let exited = self.shared.wait_until(timeout, |o| o.stdout_closed && o.stderr_closed);
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().map_err(|e| format!("waiting for {}: {e}", self.what))?;
        self.status = Some(status);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if exited {
            Ok(status)
        } else {
            Err(format!("{} did not exit within {} s (killed)", self.what, patience(timeout).as_secs()))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

fn read_lines(
    pipe: impl Read + Send + 'static,
    shared: Arc<Shared>,
    store: impl Fn(&mut Output, Option<String>) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            store(&mut shared.lock(), Some(line));
            shared.changed.notify_all();
        }
        store(&mut shared.lock(), None);
        shared.changed.notify_all();
    })
}

/// `sockerr trace ...` running in the background.
pub struct Tracer {
    process: Process,
}

/// What a stopped tracer printed.
#[derive(Debug)]
pub struct Stopped {
    pub stdout: Vec<String>,
    pub stderr: String,
    pub status: ExitStatus,
    /// From the stop signal to the exit (as the test saw it, for reports, not asserts).
    pub elapsed: Duration,
}

impl Stopped {
    /// Every stdout line as JSON (`--output json`): a line that is not JSON fails the test.
    pub fn records(&self) -> Vec<Value> {
        parse_records(&self.stdout)
    }

    /// The count of `reason` in the `stopped:` line (absent: 0, as the line lists only
    /// the reasons that counted something). Fails when there is no such line.
    pub fn lost(&self, reason: &str) -> u64 {
        let line = self
            .stderr
            .lines()
            .find(|line| line.contains("stopped:") && line.contains("lost in the kernel"))
            .unwrap_or_else(|| panic!("no stopped: line:\n{}", self.stderr));
        let key = format!("{reason}=");
        let Some(at) = line.find(&key) else { return 0 };
        let digits: String = line[at + key.len()..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("no count after {key}: {line}"))
    }

    /// Runs the kernel skipped (`program_skipped`) by program, summed over the warnings
    /// that name them (`... (runs skipped: kfree_skb=1, ...)`).
    pub fn skipped_runs_by_program(&self) -> BTreeMap<String, u64> {
        let mut runs = BTreeMap::new();
        let named = self
            .stderr
            .lines()
            .filter(|line| line.contains(" WARN ") && line.contains(" program_skipped: "))
            .map(|line| {
                let named = line.rsplit_once("(runs skipped: ").and_then(|(_, rest)| rest.strip_suffix(')'));
                named.unwrap_or_else(|| panic!("a program_skipped warning names no program: {line}"))
            });
        for entry in named.flat_map(|programs| programs.split(", ")) {
            let (program, count) = entry.split_once('=').unwrap_or_else(|| panic!("not name=count: {entry}"));
            let count: u64 = count.parse().unwrap_or_else(|e| panic!("{e}: {entry}"));
            *runs.entry(program.to_owned()).or_default() += count;
        }
        runs
    }

    /// Runs of `program` the kernel skipped: what that program's hook saw and nobody
    /// counted.
    pub fn skipped_runs(&self, program: &str) -> u64 {
        self.skipped_runs_by_program().get(program).copied().unwrap_or(0)
    }
}

impl Tracer {
    /// Starts `sockerr trace <args>` and waits until it reports that its programs are
    /// attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// As [`Tracer::start`], with these environment variables set for sockerr.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], args, env)
    }

    /// As [`Tracer::start_with_env`], started through `wrapper` (a program and its
    /// arguments, e.g. `setpriv ... --`), which then runs `sockerr trace <args>`.
    pub fn start_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(wrapper, "trace", args, env)
    }

    /// sockerr as `command` starts it (e.g. a container engine running the image, whose
    /// stdout and stderr are sockerr's), ready as for [`Tracer::start`].
    pub fn start_program(what: &str, mut command: Command) -> Self {
        require_root();
        command.stdin(Stdio::null());
        let process = Process::spawn(what.to_owned(), &mut command);
        let ready = process.shared.wait_until(READY_TIMEOUT, |output| {
            output.stderr_closed || output.stderr.iter().any(|line| line.contains(READY_MARKER))
        });
        let stderr = process.stderr();
        assert!(
            ready && stderr.contains(READY_MARKER),
            "{what} did not report `{READY_MARKER}` within {} s: stderr:\n{stderr}",
            patience(READY_TIMEOUT).as_secs()
        );
        Self { process }
    }

    /// `<wrapper> sockerr <subcommand> <args>`, ready as for [`Tracer::start`].
    fn start_command(wrapper: &[&str], subcommand: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(wrapper, subcommand, args, env)
    }

    fn launch(wrapper: &[&str], subcommand: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        require_root();
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(sockerr_bin());
                command
            }
            None => Command::new(sockerr_bin()),
        };
        command.arg(subcommand).args(args).stdin(Stdio::null());
        command.envs(env.iter().copied());
        let what = format!(
            "{}sockerr {subcommand} {}",
            wrapper.iter().map(|w| format!("{w} ")).collect::<String>(),
            args.join(" ")
        );
        let process = Process::spawn(what.clone(), &mut command);
        let ready = process.shared.wait_until(READY_TIMEOUT, |output| {
            output.stderr_closed || output.stderr.iter().any(|line| line.contains(READY_MARKER))
        });
        let mut tracer = Self { process };
        let started = tracer.process.shared.lock().stderr.iter().any(|line| line.contains(READY_MARKER));
        if !started {
            let stderr = tracer.process.stderr();
            if ready {
                let status = match tracer.process.wait(STOP_TIMEOUT) {
                    Ok(status) => status.to_string(),
                    Err(e) => e,
                };
                panic!("{what} exited before reporting `{READY_MARKER}` ({status}): stderr:\n{stderr}");
            }
            panic!(
                "{what} did not report `{READY_MARKER}` on stderr within {} s: stderr:\n{stderr}",
                patience(READY_TIMEOUT).as_secs()
            );
        }
        tracer
    }

    /// Waits until a stderr line satisfies `matches`; returns it. Fails the test with
    /// everything printed so far when none arrives within `timeout`.
    pub fn wait_for_stderr(&self, timeout: Duration, matches: impl Fn(&str) -> bool) -> String {
        let arrived =
            self.process.shared.wait_until(timeout, |output| output.stderr.iter().any(|l| matches(l)));
        let output = self.process.shared.lock();
        assert!(
            arrived,
            "{}: no matching stderr line within {} s.\nstderr:\n{}",
            self.process.what,
            patience(timeout).as_secs(),
            output.stderr.join("\n"),
        );
        output.stderr.iter().find(|l| matches(l)).cloned().expect("just found")
    }

    /// The process started: sockerr, or the wrapper of [`Tracer::start_under`].
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Stderr so far (the log).
    pub fn process_stderr(&self) -> String {
        self.process.stderr()
    }

    /// Stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.process.shared.lock().stdout.clone()
    }

    /// Waits until at least `count` JSON records satisfy `matches`; returns them. Fails the
    /// test with everything printed so far when they do not arrive within `timeout`.
    pub fn wait_for_records(
        &self,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let arrived = self.process.shared.wait_until(timeout, |output| {
            parse_records(&output.stdout).iter().filter(|r| matches(r)).count() >= count
        });
        if !arrived {
            let got = parse_records(&self.process.shared.lock().stdout).iter().filter(|r| matches(r)).count();
            self.fail_after_stopping(&format!(
                "expected {count} matching records within {} s, got {got}",
                patience(timeout).as_secs()
            ));
        }
        parse_records(&self.process.shared.lock().stdout).into_iter().filter(|r| matches(r)).collect()
    }

    /// Waits until a stdout line satisfies `matches` (`--output text`).
    pub fn wait_for_line(&self, timeout: Duration, matches: impl Fn(&str) -> bool) -> String {
        let arrived =
            self.process.shared.wait_until(timeout, |output| output.stdout.iter().any(|l| matches(l)));
        if !arrived {
            self.fail_after_stopping(&format!("no matching line within {} s", patience(timeout).as_secs()));
        }
        self.process.shared.lock().stdout.iter().find(|l| matches(l)).cloned().expect("just found")
    }

    /// Fails the test with `problem`, after SIGINT and a bounded wait for the exit: the
    /// report then shows what the tracer still flushed when stopped (records held up in
    /// its pipeline) and its `stopped:` line (events read, lost in the kernel by reason),
    /// which tell a slow pipeline from events the kernel never produced.
    fn fail_after_stopping(&self, problem: &str) -> ! {
        let shown = self.process.shared.lock().stdout.len();
        let stopped = kill(self.process.pid(), Signal::SIGINT).is_ok()
            && self.process.shared.wait_until(STOP_TIMEOUT, |o| o.stdout_closed && o.stderr_closed);
        let output = self.process.shared.lock();
        panic!(
            "{}: {problem}.\nstdout ({shown} lines by then{}):\n{}\nstderr:\n{}",
            self.process.what,
            if stopped { ", the rest flushed when stopped by SIGINT" } else { "; it did not stop in time" },
            output.stdout.join("\n"),
            output.stderr.join("\n"),
        );
    }

    /// SIGINT, then a bounded wait for the exit (killed on timeout, which fails the test).
    pub fn stop(self) -> Stopped {
        self.stop_with(Signal::SIGINT)
    }

    /// `signal`, then a bounded wait for the exit (killed on timeout, which fails the test).
    pub fn stop_with(mut self, signal: Signal) -> Stopped {
        let what = self.process.what.clone();
        let sent = Instant::now();
        kill(self.process.pid(), signal).unwrap_or_else(|e| panic!("{signal} to {what}: {e}"));
        let status = self.process.wait(STOP_TIMEOUT);
        let elapsed = sent.elapsed();
        let output = self.process.shared.lock();
        let stderr = output.stderr.join("\n");
        let status = status.unwrap_or_else(|e| panic!("{e}: stderr:\n{stderr}"));
        Stopped { stdout: output.stdout.clone(), stderr, status, elapsed }
    }
}

fn parse_records(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"))
        })
        .collect()
}

/// What a command printed when it ran to the end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to the end (killed, failing the test, after `timeout`).
pub fn run_to_end(what: &str, command: &mut Command, timeout: Duration) -> Finished {
    command.stdin(Stdio::null());
    let mut process = Process::spawn(what.to_string(), command);
    let status = process.wait(timeout);
    let output = process.shared.lock();
    let (stdout, stderr) = (output.stdout.join("\n"), output.stderr.join("\n"));
    let status = status.unwrap_or_else(|e| panic!("{e}: stderr:\n{stderr}"));
    Finished { status, stdout, stderr }
}

/// Runs `sockerr scenario <name> <args>` to the end and returns its report.
pub fn run_scenario(name: &str, args: &[&str]) -> Report {
    ScenarioRun::start(name, args).finish()
}

/// Runs `sockerr scenario proxy-reset <args>` to the end and returns its report.
pub fn run_reset_scenario(args: &[&str]) -> ResetReport {
    ScenarioRun::start("proxy-reset", args).finish_as()
}

/// A scenario in flight (see `--gate`).
pub struct ScenarioRun {
    process: Process,
    stdin: Option<std::process::ChildStdin>,
}

impl ScenarioRun {
    pub fn start(name: &str, args: &[&str]) -> Self {
        Self::spawn(name, args, None)
    }

    /// Starts the scenario as a member of the cgroup v2 directory `cgroup`: the runner
    /// joins it before exec, so every actor it starts is in it too.
    pub fn start_in_cgroup(name: &str, args: &[&str], cgroup: &Path) -> Self {
        Self::spawn(name, args, Some(cgroup))
    }

    fn spawn(name: &str, args: &[&str], cgroup: Option<&Path>) -> Self {
        require_root();
        let mut command = Command::new(sockerr_bin());
        command.arg("scenario").arg(name).args(args).stdin(Stdio::piped());
        if let Some(cgroup) = cgroup {
            join_cgroup_before_exec(&mut command, cgroup);
        }
        let mut process = Process::spawn(format!("sockerr scenario {name} {}", args.join(" ")), &mut command);
        let stdin = process.child.stdin.take();
        Self { process, stdin }
    }

    /// With `--gate`: waits for the actors' pids (the first stdout line).
    pub fn gate(&self) -> GateActors {
        let arrived =
            self.process.shared.wait_until(SCENARIO_TIMEOUT, |o| !o.stdout.is_empty() || o.stdout_closed);
        let output = self.process.shared.lock();
        let line = output.stdout.first().filter(|_| arrived).unwrap_or_else(|| {
            panic!("{}: no gate line; stderr:\n{}", self.process.what, output.stderr.join("\n"))
        });
        let gate: Gate = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad gate line ({e}): {line}"));
        gate.gate
    }

    /// Lets a gated scenario go on.
    pub fn open(&mut self) {
        // Closing stdin is a go as well as a newline; this keeps it simple.
        drop(self.stdin.take());
    }

    /// Waits (bounded) for the end and parses the report (the last stdout line).
    pub fn finish(self) -> Report {
        self.finish_as()
    }

    /// [`ScenarioRun::finish`] for scenarios whose report has another shape.
    pub fn finish_as<T: serde::de::DeserializeOwned>(mut self) -> T {
        self.open();
        let status = self.process.wait(SCENARIO_TIMEOUT);
        let output = self.process.shared.lock();
        let stderr = output.stderr.join("\n");
        let what = &self.process.what;
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("{what} failed ({status}): stderr:\n{stderr}"),
            Err(e) => panic!("{e}: stderr:\n{stderr}"),
        }
        let line =
            output.stdout.last().unwrap_or_else(|| panic!("{what} printed no report; stderr:\n{stderr}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: bad report ({e}): {line}"))
    }
}

/// Accessors for sockerr's records (docs/design.md, "Record schema").
pub trait RecordExt {
    fn str_at(&self, pointer: &str) -> Option<&str>;
    fn u64_at(&self, pointer: &str) -> Option<u64>;
    fn event(&self) -> &str;
    fn pid(&self) -> Option<u64>;
}

impl RecordExt for Value {
    fn str_at(&self, pointer: &str) -> Option<&str> {
        self.pointer(pointer).and_then(Value::as_str)
    }

    fn u64_at(&self, pointer: &str) -> Option<u64> {
        self.pointer(pointer).and_then(Value::as_u64)
    }

    fn event(&self) -> &str {
        self.str_at("/event").unwrap_or("")
    }

    fn pid(&self) -> Option<u64> {
        self.u64_at("/pid")
    }
}

/// The actor of `role` in a report; fails the test when the scenario has none.
pub fn actor<'r>(report: &'r Report, role: &str) -> &'r ActorFacts {
    report
        .actor(role)
        .unwrap_or_else(|| panic!("the {} report has no {role}: {report:?}", report.run.scenario))
}

/// `address` as sockerr prints it ("ip:port", IPv6 as "[ip]:port"), or JSON null.
pub fn addr_json(address: Option<std::net::SocketAddr>) -> Value {
    address.map_or(Value::Null, |a| Value::String(a.to_string()))
}

/// Asserts the fields every failure record shares with the report's attempt.
pub fn assert_failure_matches(record: &Value, attempt: &Attempt, report: &Report) {
    let context = || format!("record: {record}\nattempt: {attempt:?}");
    assert_eq!(record.event(), attempt.event, "{}", context());
    assert_eq!(record.pid(), Some(u64::from(attempt.pid)), "{}", context());
    assert_eq!(record.str_at("/comm"), Some(attempt.comm.as_str()), "{}", context());
    assert_eq!(record["fd"], Value::from(attempt.fd), "{}", context());
    assert_eq!(record["errno"], Value::from(attempt.errno), "{}", context());
    assert_eq!(record.str_at("/error"), Some(attempt.error.as_str()), "{}", context());
    assert_eq!(record["async"], Value::Bool(attempt.is_async), "{}", context());
    assert_eq!(record["dst"], addr_json(attempt.dst), "{}", context());
    match (attempt.src, attempt.src_port) {
        (Some(src), _) => assert_eq!(record["src"], addr_json(Some(src)), "{}", context()),
        // The kernel had already cleared the address when the scenario asked: the port is
        // what the scenario knows of the source.
        (None, Some(port)) => {
            let src: std::net::SocketAddr = record
                .str_at("/src")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no parsable src, expected port {port}\n{}", context()));
            assert_eq!(src.port(), port, "{}", context());
        }
        (None, None) => {}
    }
    assert_eq!(record["sockopts"], serde_json::to_value(&attempt.sockopts).unwrap(), "{}", context());
    assert_eq!(record.u64_at("/netns"), Some(report.run.netns), "{}", context());
}

/// Asserts a record's `holder` (and its presence in `holders`) against the report's.
pub fn assert_holder_matches(record: &Value, holder: &HolderFacts) {
    let context = || format!("record: {record}\nexpected holder: {holder:?}");
    let found = &record["holder"];
    assert!(found.is_object(), "no holder\n{}", context());
    assert_eq!(found["pid"], holder.pid.map_or(Value::Null, Value::from), "{}", context());
    assert_eq!(found["comm"], holder.comm.as_deref().map_or(Value::Null, Value::from), "{}", context());
    assert_eq!(found["fd"], holder.fd.map_or(Value::Null, Value::from), "{}", context());
    assert_eq!(found.str_at("/state"), Some(holder.state.as_str()), "{}", context());
    assert_eq!(found["src"], addr_json(Some(holder.src)), "{}", context());
    assert_eq!(found["dst"], addr_json(holder.dst), "{}", context());
    if holder.inode != 0 {
        assert_eq!(found.u64_at("/inode"), Some(holder.inode), "{}", context());
    }
    let holders = record["holders"].as_array().unwrap_or_else(|| panic!("no holders array\n{}", context()));
    assert!(holders.contains(found), "holder missing from holders\n{}", context());
}

/// What the folded text line of a `cilium` run must contain (format: docs/design.md and
/// the example `... EADDRNOTAVAIL connect envoy[401] fd=131 10.0.1.7:40312 -> 52.216.8.19:443
/// opts=SO_MARK=0x32030b00(cilium id=12803),SO_REUSEADDR cause=tuple_in_use
/// held-by=envoy[401] fd=77 ESTABLISHED (4 in 500ms)`).
pub fn cilium_text_expectations(report: &Report) -> Vec<String> {
    let proxy = actor(report, "proxy");
    let client = actor(report, "client");
    let attempts = report.attempts_of("proxy");
    let first = attempts.first().unwrap_or_else(|| panic!("no proxy attempt: {report:?}"));
    let [holder] = report.holders.as_slice() else { panic!("one holder expected: {report:?}") };
    let mark = report.mark.as_ref().expect("cilium reports its mark");
    let src = first.src.expect("the proxy bound the client's address");
    let dst = first.dst.expect("connect has a destination");
    let mut expected = vec![
        format!("{} connect {}[{}] fd={} {src} -> {dst} ", first.error, proxy.comm, proxy.pid, first.fd),
        format!("SO_MARK={}", mark.value),
        format!("cilium id={}", mark.identity),
        "cause=tuple_in_use".to_owned(),
        format!(
            "held-by={}[{}] fd={} {}",
            client.comm,
            client.pid,
            holder.fd.expect("client fd"),
            holder.state
        ),
        format!("({} in ", attempts.len()),
    ];
    // Boolean options print as their bare name.
    expected.extend(first.sockopts.keys().filter(|name| name.as_str() != "SO_MARK").cloned());
    expected
}

/// Makes the child write "0" (itself) to `cgroup`/cgroup.procs between fork and exec.
pub fn join_cgroup_before_exec(command: &mut Command, cgroup: &Path) {
    use std::os::unix::{ffi::OsStrExt, process::CommandExt};
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .expect("cgroup path without NUL");
    // SAFETY: only async-signal-safe calls (open, write, close) on memory prepared
    // before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 { Err(error) } else { Ok(()) }
        });
    }
}

/// A cgroup v2 directory made for one test (with nested levels below it, if asked),
/// removed when dropped, deepest first, also when the test fails half-way (once its
/// processes are gone: rmdir of a populated cgroup fails with EBUSY, so it is retried
/// briefly).
pub struct TestCgroup {
    /// Every directory created, outermost first.
    created: Vec<PathBuf>,
    relative: String,
}

impl TestCgroup {
    pub fn create(tag: &str) -> Self {
        Self::nested(tag, &[])
    }

    /// `<cgroup2 mount>/sockerr-e2e-<pid>-<tag>/<levels...>`, e.g. the levels of a pod
    /// and container as a kubelet names them; [`TestCgroup::path`] is the deepest.
    pub fn nested(tag: &str, levels: &[&str]) -> Self {
        let root = tracer::kernel::cgroup::resolve(Path::new("/"))
            .unwrap_or_else(|e| panic!("the cgroup tests need cgroup v2: {e}"))
            .path;
        let name = format!("sockerr-e2e-{}-{tag}", std::process::id());
        let mut cgroup = Self { created: Vec::new(), relative: String::new() };
        let mut path = root;
        for level in std::iter::once(name.as_str()).chain(levels.iter().copied()) {
            assert!(!level.is_empty() && !level.contains('/'), "one directory per level: {level:?}");
            path.push(level);
            // On failure the levels made so far are removed as `cgroup` drops.
            std::fs::create_dir(&path)
                .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
            cgroup.created.push(path.clone());
            cgroup.relative.push('/');
            cgroup.relative.push_str(level);
        }
        cgroup
    }

    pub fn path(&self) -> &Path {
        self.created.last().expect("at least the top directory")
    }

    /// The path as `--cgroup` takes it: relative to the cgroup2 mount.
    pub fn relative(&self) -> &str {
        &self.relative
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.created.iter().rev() {
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Whether this kernel can run the kprobe backend (what `--backend auto` checks: the
/// kprobe PMU and the kernel's BTF).
pub fn kprobes_available() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
        && Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// `cargo xtask vm-test` sets SOCKERR_E2E_KPROBES=required on kernels that have kprobes, so
/// that a kernel where they silently went missing fails instead of testing less.
pub fn kprobes_required() -> bool {
    std::env::var("SOCKERR_E2E_KPROBES").is_ok_and(|value| value == "required")
}

/// The backend `--backend auto` picks here.
pub fn auto_backend() -> &'static str {
    let available = kprobes_available();
    assert!(available || !kprobes_required(), "SOCKERR_E2E_KPROBES=required but this kernel has no kprobes");
    if available { "kprobe" } else { "tracepoint" }
}

/// Asserts `backend` and `kernel_fn` of a record from a tracer started with the default
/// `--backend auto`: the kprobe backend names `kprobe_fn` (`None`: no probed function
/// refused the call), the tracepoint backend never names one.
pub fn assert_kernel_fn(record: &Value, kprobe_fn: Option<&str>) {
    let backend = auto_backend();
    assert_eq!(record.str_at("/backend"), Some(backend), "{record}");
    let expected = if backend == "kprobe" { kprobe_fn } else { None };
    assert_eq!(record.str_at("/kernel_fn"), expected, "kernel_fn with the {backend} backend: {record}");
    if expected.is_none() {
        assert_eq!(record["kernel_fn"], Value::Null, "{record}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real report of `sockerr scenario cilium` (trimmed to 2 attempts).
    const REPORT: &str = r#"{"scenario":"cilium","ipv6":false,"netns":4026532177,"hold_ms":1500,"elapsed_ms":1561,
        "actors":[{"role":"proxy","pid":29945,"comm":"demo-proxy"},{"role":"client","pid":29944,"comm":"demo-client"},
                  {"role":"upstream","pid":29943,"comm":"demo-upstream"}],
        "attempts":[
          {"pid":29945,"comm":"demo-proxy","fd":3,"call":"connect","event":"connect_error","nonblocking":true,
           "sockopts":{"IP_TRANSPARENT":1,"SO_MARK":"0x32030b00","SO_REUSEADDR":1},"src":"127.0.0.7:40312",
           "src_port":40312,"dst":"127.0.0.19:443","errno":99,"error":"EADDRNOTAVAIL","async":false,
           "returned":"EADDRNOTAVAIL","at_ms":0.0},
          {"pid":29945,"comm":"demo-proxy","fd":3,"call":"connect","event":"connect_error","nonblocking":true,
           "sockopts":{"IP_TRANSPARENT":1,"SO_MARK":"0x32030b00","SO_REUSEADDR":1},"src":"127.0.0.7:40312",
           "src_port":40312,"dst":"127.0.0.19:443","errno":99,"error":"EADDRNOTAVAIL","async":false,
           "returned":"EADDRNOTAVAIL","at_ms":4.1}],
        "holders":[{"pid":29944,"comm":"demo-client","fd":3,"inode":50499,"state":"ESTABLISHED",
                    "src":"127.0.0.7:40312","dst":"127.0.0.19:443","timer_ms":null}],
        "connections":[{"pid":29944,"comm":"demo-client","fd":3,"src":"127.0.0.7:40312","dst":"127.0.0.19:443"}],
        "ports":null,"mark":{"value":"0x32030b00","magic":"0x0b00","identity":12803,"cluster":0}}"#;

    /// A record as docs/design.md specifies it, for the first attempt of REPORT.
    fn record() -> Value {
        let holder = serde_json::json!({"pid": 29944, "comm": "demo-client", "fd": 3, "inode": 50499,
            "state": "ESTABLISHED", "src": "127.0.0.7:40312", "dst": "127.0.0.19:443", "timer_ms": null});
        serde_json::json!({
            "time": "2026-05-20T12:53:25.866000Z", "event": "connect_error", "pid": 29945, "tid": 29945,
            "comm": "demo-proxy", "thread": "demo-proxy", "fd": 3, "errno": 99, "error": "EADDRNOTAVAIL",
            "async": false, "src": "127.0.0.7:40312", "dst": "127.0.0.19:443",
            "sockopts": {"SO_MARK": "0x32030b00", "SO_REUSEADDR": 1, "IP_TRANSPARENT": 1},
            "mark": {"identity": 12803}, "sockopt": null, "cause": "tuple_in_use",
            "holder": holder.clone(), "holders": [holder], "ports": null, "note": null,
            "netns": 4026532177u64, "cgroup_id": 1
        })
    }

    fn report() -> Report {
        serde_json::from_str(REPORT).expect("the sample report parses")
    }

    #[test]
    fn a_record_matching_the_report_passes() {
        let report = report();
        assert_failure_matches(&record(), &report.attempts[0], &report);
        assert_holder_matches(&record(), &report.holders[0]);
    }

    #[test]
    fn mismatches_fail() {
        let report = report();
        let mutations: [(&str, Value); 6] = [
            ("/errno", Value::from(98)),
            ("/fd", Value::from(4)),
            ("/async", Value::Bool(true)),
            ("/src", Value::from("127.0.0.7:40313")),
            ("/sockopts/SO_MARK", Value::from("0x32030b01")),
            ("/netns", Value::from(1)),
        ];
        for (pointer, value) in mutations {
            let mut record = record();
            *record.pointer_mut(pointer).unwrap() = value;
            let result =
                std::panic::catch_unwind(|| assert_failure_matches(&record, &report.attempts[0], &report));
            assert!(result.is_err(), "a wrong {pointer} passed");
        }
        let mut record = record();
        record["holder"]["pid"] = Value::from(1);
        assert!(std::panic::catch_unwind(|| assert_holder_matches(&record, &report.holders[0])).is_err());
    }

    #[test]
    fn text_expectations_fit_the_documented_line() {
        let report = report();
        let line = "12:53:25.866 EADDRNOTAVAIL connect demo-proxy[29945] fd=3 127.0.0.7:40312 -> \
                    127.0.0.19:443 opts=SO_MARK=0x32030b00(cilium id=12803),SO_REUSEADDR,IP_TRANSPARENT \
                    cause=tuple_in_use held-by=demo-client[29944] fd=3 ESTABLISHED (2 in 4ms)";
        for part in cilium_text_expectations(&report) {
            assert!(line.contains(&part), "`{part}` not in {line}");
        }
        let unfolded = line.replace("(2 in 4ms)", "");
        assert!(!cilium_text_expectations(&report).iter().all(|part| unfolded.contains(part)));
    }

    /// Needs root and cgroup v2, like every test of this crate but the ones above.
    #[test]
    fn nested_cgroups_are_removed_deepest_first_even_on_failure() {
        require_root();
        let cgroup = TestCgroup::nested("harness", &["kubepods.slice", "cri-containerd-x.scope"]);
        assert!(cgroup.path().is_dir() && cgroup.path().ends_with("kubepods.slice/cri-containerd-x.scope"));
        assert!(cgroup.relative().ends_with("-harness/kubepods.slice/cri-containerd-x.scope"));
        let top = cgroup.created[0].clone();
        drop(cgroup);
        assert!(!top.exists(), "{} left behind", top.display());

        // `cgroup.procs` is a file of every cgroup: that level cannot be made.
        let failed = std::panic::catch_unwind(|| TestCgroup::nested("harness-bad", &["ok", "cgroup.procs"]));
        assert!(failed.is_err());
        let root = tracer::kernel::cgroup::resolve(Path::new("/")).unwrap().path;
        let top = root.join(format!("sockerr-e2e-{}-harness-bad", std::process::id()));
        assert!(!top.exists(), "{} left behind", top.display());
    }

    #[test]
    #[should_panic(expected = "not JSON")]
    fn non_json_output_fails() {
        parse_records(&["{\"event\":\"bind_error\"}".to_owned(), "12:53:25 EADDRINUSE bind".to_owned()]);
    }
}
