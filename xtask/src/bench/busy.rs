//! The busy-node run: `sockerr daemon`, node-wide, while `sockerr scenario busy-node`
//! holds hundreds of thousands of established loopback connections in its own network
//! namespace and the Cilium pattern fails against a few of them. Every failure must come
//! out with its holder (pid and fd of the held connection) and its options; the daemon's
//! loss counters must not move; its maps are read while the connections are held.
//!
//! Cleanup: the namespace belongs to the scenario process (gone with it); the process is
//! killed on any error (`Scenario`'s drop), and every wait is bounded.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    daemon,
    soak::{MapFill, map_fill},
    throughput,
};

/// How long the scenario may take for any step (set-up, failures, the final hold).
const STEP_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the daemon may take to count every failure once they are over.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The daemon's count stopped moving this long: it will not catch up.
const STALL: Duration = Duration::from_secs(10);
/// Incomplete failures quoted in the results.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy)]
pub struct BusyPlan {
    pub connections: u64,
    pub failures: u64,
    pub rate: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusyNode {
    pub connections: u64,
    /// Processes holding them (each as many as its fd limit allows).
    pub holder_processes: u64,
    pub setup_secs: f64,
    /// The scenario's own count of EADDRNOTAVAIL failures.
    pub failures: u64,
    pub rate: u64,
    pub failing_secs: f64,
    pub holders: usize,
    /// connect_error records of the scenario process in the daemon's NDJSON.
    pub records: u64,
    /// Of those, records naming the held connection (pid and fd) and both options.
    pub complete: u64,
    /// A few records that were not complete, and why.
    pub incomplete_examples: Vec<String>,
    /// Failures the daemon had counted in /metrics when the bench stopped waiting, and
    /// how long it waited after the last failure (a daemon behind its ring has not
    /// reported the rest yet: they are missing, not lost).
    pub counted: u64,
    pub drain_secs: f64,
    pub lost_during_setup: u64,
    pub lost_during_failures: u64,
    /// Losses by reason where the daemon gives reasons.
    pub lost_by_reason: Option<BTreeMap<String, u64>>,
    /// Evictions counted by the daemon; None when it exports no eviction count.
    pub evictions: Option<u64>,
    /// The daemon's hash maps while the connections were held.
    pub maps: Vec<MapFill>,
    pub daemon_rss_kib: u64,
    /// Where the daemon's records went.
    pub output: String,
}

impl BusyNode {
    /// Failures the daemon did not report whole: missing records and incomplete ones.
    pub fn not_whole(&self) -> u64 {
        self.failures.saturating_sub(self.complete)
    }
}

/// The scenario process; killed (with its namespace) if dropped before it finished.
struct Scenario {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Scenario {
    fn next_line(&mut self, what: &str, errors: &Path) -> Result<Value> {
        let outcome = self.lines.recv_timeout(STEP_TIMEOUT);
        if let Ok(line) = outcome {
            return serde_json::from_str(&line).with_context(|| format!("busy-node {what}: {line:?}"));
        }
        let _ = self.child.kill();
        let status = self.child.wait();
        let stderr = std::fs::read_to_string(errors).unwrap_or_default();
        match outcome {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("busy-node: no {what} within {} s: {}", STEP_TIMEOUT.as_secs(), stderr.trim())
            }
            _ => bail!("busy-node exited ({status:?}) before its {what}: {}", stderr.trim()),
        }
    }

    fn go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("busy-node stdin closed")?;
        stdin.write_all(b"go\n").and_then(|()| stdin.flush()).context("writing to busy-node")
    }

    /// Lets it close everything and exit; bounded, then killed.
    fn finish(mut self) -> Result<()> {
        self.go()?;
        self.stdin = None;
        let deadline = Instant::now() + STEP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() { Ok(()) } else { bail!("busy-node exited with {status}") };
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("busy-node did not exit within {} s of its last step", STEP_TIMEOUT.as_secs())
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(sockerr: &Path, scratch: &Path, plan: BusyPlan) -> Result<BusyNode> {
    let ndjson = scratch.join("busy-node.ndjson");
    let errors = scratch.join("busy-node.err");
    let mut daemon = daemon::start(sockerr, &ndjson, &[], None)?;
    let pid = daemon.running.pid();
    let lost_at_start = daemon::lost(&daemon::metrics(daemon.address)?)?;

    let mut command = Command::new(sockerr);
    command
        .args(["scenario", "busy-node"])
        .args(["--connections", &plan.connections.to_string()])
        .args(["--failures", &plan.failures.to_string(), "--rate", &plan.rate.to_string()])
        .args(["--timeout-secs", &STEP_TIMEOUT.as_secs().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&errors).with_context(|| format!("creating {}", errors.display()))?);
    let mut child = command.spawn().context("could not start `sockerr scenario busy-node`")?;
    let stdout = child.stdout.take().context("stdout not captured")?;
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdin = child.stdin.take();
    let mut scenario = Scenario { child, stdin, lines };

    let ready = scenario.next_line("ready line", &errors)?;
    let connections = ready["ready"]["connections"].as_u64().context("ready line without connections")?;
    eprintln!(
        "bench: busy node: {connections} connections held by {} processes ({:.1} s to set up)",
        ready["ready"]["holder_processes"],
        ready["ready"]["setup_secs"].as_f64().unwrap_or(0.0)
    );
    let metrics = daemon::metrics(daemon.address)?;
    let lost_after_setup = daemon::lost(&metrics)?;
    let counted_before = throughput::counted(&metrics);
    scenario.go()?;
    let report = scenario.next_line("report", &errors)?;
    let failures = report["failures"].as_u64().context("report without failures")?;
    if report["unexpected"].as_u64() != Some(0) {
        bail!("busy-node: attempts that did not fail with EADDRNOTAVAIL: {report}");
    }
    // The daemon counts each failure once it has looked its holder up among the held
    // connections: wait until it has caught up (or lost them), bounded.
    let drain_started = Instant::now();
    // Lost events are not all failures (node-wide, any event of any process): wait for
    // the count itself, until it is complete or stops moving for STALL.
    let mut progress = (0.0, Instant::now());
    let (lost_after_failures, counted) = loop {
        let metrics = daemon::metrics(daemon.address)?;
        let lost = daemon::lost(&metrics)?;
        let counted = throughput::counted(&metrics) - counted_before;
        if counted > progress.0 {
            progress = (counted, Instant::now());
        }
        if counted >= failures as f64
            || progress.1.elapsed() > STALL
            || drain_started.elapsed() > DRAIN_TIMEOUT
        {
            break (lost, counted as u64);
        }
        thread::sleep(Duration::from_millis(250));
    };
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let maps = map_fill(pid)?;
    let daemon_rss_kib = daemon::rss_kib(pid)?;
    scenario.finish()?;
    daemon.running.stop();

    let scenario_pid = report["pid"].as_u64().context("report without pid")? as u32;
    let check = check_records(&ndjson, scenario_pid, &report)?;
    let total = lost_after_failures.since(&lost_at_start);
    Ok(BusyNode {
        connections,
        holder_processes: report["holder_processes"].as_u64().unwrap_or(0),
        setup_secs: report["setup_secs"].as_f64().unwrap_or(0.0),
        failures,
        rate: plan.rate,
        failing_secs: report["elapsed_secs"].as_f64().unwrap_or(0.0),
        holders: report["holders"].as_array().map_or(0, Vec::len),
        records: check.records,
        complete: check.complete,
        incomplete_examples: check.examples,
        counted,
        drain_secs,
        lost_during_setup: lost_after_setup.since(&lost_at_start).total,
        lost_during_failures: lost_after_failures.since(&lost_after_setup).total,
        evictions: total.evictions(),
        lost_by_reason: total.by_reason,
        maps,
        daemon_rss_kib,
        output: ndjson.display().to_string(),
    })
}

#[derive(Debug, Default, PartialEq)]
struct RecordCheck {
    records: u64,
    complete: u64,
    examples: Vec<String>,
}

fn check_records(ndjson: &Path, pid: u32, report: &Value) -> Result<RecordCheck> {
    let file = File::open(ndjson).with_context(|| format!("opening {}", ndjson.display()))?;
    let marker = format!("\"pid\":{pid},");
    let mut check = RecordCheck::default();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if !line.contains(&marker) || !line.contains("\"event\":\"connect_error\"") {
            continue;
        }
        let record: Value =
            serde_json::from_str(&line).with_context(|| format!("a daemon record: {line}"))?;
        check.records += 1;
        match incomplete(&record, report) {
            None => check.complete += 1,
            Some(why) if check.examples.len() < EXAMPLES => check.examples.push(why),
            Some(_) => {}
        }
    }
    Ok(check)
}

/// Why a failure record of the busy node lacks its holder or options; None when whole.
fn incomplete(record: &Value, report: &Value) -> Option<String> {
    let src = record["src"].as_str().unwrap_or("?");
    let holders = report["holders"].as_array()?;
    let Some(expected) = holders.iter().find(|h| h["src"].as_str() == Some(src)) else {
        return Some(format!("src {src} is none of the held tuples"));
    };
    let holder = &record["holder"];
    if !holder.is_object() {
        return Some(format!("src {src}: no holder ({})", record["note"].as_str().unwrap_or("no note")));
    }
    if holder["pid"] != expected["pid"] || holder["fd"] != expected["fd"] {
        return Some(format!(
            "src {src}: holder pid {} fd {}, expected pid {} fd {} ({})",
            holder["pid"],
            holder["fd"],
            expected["pid"],
            expected["fd"],
            record["note"].as_str().unwrap_or("no note")
        ));
    }
    let options = &record["sockopts"];
    let mark = report["mark"].as_str().unwrap_or("?");
    let mark_ok = match &options["SO_MARK"] {
        Value::String(text) => text == mark,
        Value::Number(n) => n.as_u64().map(|n| format!("{n:#010x}")).as_deref() == Some(mark),
        _ => false,
    };
    if !mark_ok || options["SO_REUSEADDR"].as_u64() != Some(1) {
        return Some(format!("src {src}: options {options}, expected SO_MARK={mark} and SO_REUSEADDR=1"));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_failure_is_whole_with_its_holder_and_options() {
        let report = json!({
            "pid": 7, "mark": "0x32030b00",
            "holders": [{ "pid": 8, "fd": 10, "src": "127.1.0.0:10000" }, { "pid": 9, "fd": 900, "src": "127.1.0.3:20000" }],
        });
        let whole = json!({
            "event": "connect_error", "pid": 7, "src": "127.1.0.3:20000",
            "holder": { "pid": 9, "fd": 900 }, "sockopts": { "SO_MARK": "0x32030b00", "SO_REUSEADDR": 1 },
        });
        assert_eq!(incomplete(&whole, &report), None);
        let mut numeric_mark = whole.clone();
        numeric_mark["sockopts"]["SO_MARK"] = json!(0x3203_0b00u32);
        assert_eq!(incomplete(&numeric_mark, &report), None);

        let mut no_holder = whole.clone();
        no_holder["holder"] = Value::Null;
        no_holder["note"] = json!("the owner search ran out of time");
        assert!(incomplete(&no_holder, &report).unwrap().contains("ran out of time"));
        let mut wrong_fd = whole.clone();
        wrong_fd["holder"]["fd"] = json!(10);
        assert!(incomplete(&wrong_fd, &report).unwrap().contains("expected pid 9 fd 900"));
        let mut wrong_pid = whole.clone();
        wrong_pid["holder"]["pid"] = json!(8);
        assert!(incomplete(&wrong_pid, &report).unwrap().contains("holder pid 8 fd 900"));
        let mut no_options = whole.clone();
        no_options["sockopts"] = json!({});
        assert!(incomplete(&no_options, &report).unwrap().contains("SO_MARK"));
        let mut elsewhere = whole;
        elsewhere["src"] = json!("127.0.0.1:1");
        assert!(incomplete(&elsewhere, &report).unwrap().contains("none of the held"));
    }

    #[test]
    fn failures_not_whole_count_the_missing_records_too() {
        let busy = BusyNode {
            connections: 200_000,
            holder_processes: 21,
            setup_secs: 1.0,
            failures: 100,
            rate: 10,
            failing_secs: 1.0,
            holders: 4,
            records: 98,
            complete: 97,
            incomplete_examples: vec![],
            counted: 98,
            drain_secs: 1.0,
            lost_during_setup: 0,
            lost_during_failures: 0,
            lost_by_reason: None,
            evictions: None,
            maps: vec![],
            daemon_rss_kib: 0,
            output: String::new(),
        };
        assert_eq!(busy.not_whole(), 3);
    }
}
