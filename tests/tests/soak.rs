//! The short soak (`cargo xtask bench --soak` runs the long one): 20,000 Cilium-pattern
//! failing connects from 2 threads under `sockerr daemon`. Every failure is counted once
//! in /metrics and printed once as NDJSON; a failure missing from the count must show as
//! lost kernel events (another unit: several events per failure, so the two are never
//! added); the daemon leaks no fd.
//! Correctness only: nothing here is timed.
//!
//! The flood waits at its gate until the daemon traces `--pid <the flood>`, so the counts
//! hold exactly its failures while other tests run.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sockerr_e2e::*;

const FAILURES: u64 = 20_000;
/// Bound on the flood (a few seconds on 2 cores) and on the daemon catching up.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills the flood if the test fails before it exits.
struct Flood(Child);

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_failure_of_a_flood_is_counted_once_and_no_fd_leaks() {
    require_root();
    let mut flood = Flood(
        Command::new(sockerr_bin())
            .args(["scenario", "flood", "--gate", "--threads", "2", "--count", &FAILURES.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sockerr scenario flood"),
    );
    let mut stdout = BufReader::new(flood.0.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the flood's gate line");
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("gate line {line:?}: {e}"));
    let flood_pid = ready["ready"].as_u64().unwrap_or_else(|| panic!("no pid at the gate: {line}"));

    let daemon = Daemon::start(&["--pid", &flood_pid.to_string()]);
    // After a first request: the agent keeps its connection to the daemon open (one fd).
    daemon.metrics();
    let fds_before = fd_count(daemon.pid());
    let mut stdin = flood.0.stdin.take().expect("piped stdin");
    stdin.write_all(b"go\n").expect("open the flood's gate");
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).expect("read the flood's report");
    let deadline = Instant::now() + FLOOD_TIMEOUT;
    while flood.0.try_wait().expect("wait for the flood").is_none() {
        assert!(Instant::now() < deadline, "the flood did not exit within {FLOOD_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("flood report {line:?}: {e}"));
    assert_eq!(report["failures"].as_u64(), Some(FAILURES), "{report}");
    assert_eq!(report["unexpected"].as_u64(), Some(0), "{report}");

    // The daemon may still be reading its ring buffer: wait until every failure is
    // counted, or the count stopped growing (what is missing then was lost).
    let counter = |samples: &[(String, f64)], prefix: &str| -> f64 {
        samples.iter().filter(|(series, _)| series.starts_with(prefix)).map(|(_, value)| value).sum()
    };
    // "Stopped growing" means for STALL: the daemon's loop also waits on holder lookups
    // (one at a time), and with the suite's other tests loading the machine a single 500 ms
    // pause was seen to end the wait with 3,123 failures still queued, not lost.
    const STALL: Duration = Duration::from_secs(5);
    let mut previous = None;
    let mut last_growth = Instant::now();
    let (counted, lost) = loop {
        let samples = daemon.metrics();
        let counted = counter(&samples, r#"sockerr_connect_errors_total{errno="EADDRNOTAVAIL""#) as u64;
        let lost = counter(&samples, "sockerr_events_lost_total") as u64;
        if previous != Some(counted) {
            last_growth = Instant::now();
        }
        if counted >= FAILURES || last_growth.elapsed() >= STALL || Instant::now() > deadline {
            break (counted, lost);
        }
        previous = Some(counted);
        std::thread::sleep(Duration::from_millis(500));
    };
    let missing = FAILURES.saturating_sub(counted);
    eprintln!("soak: {counted} of {FAILURES} failures counted, {missing} missing, {lost} kernel events lost");
    assert!(counted <= FAILURES, "counted {counted} of {FAILURES} failures: some twice");
    // Failures and events are not added: a missing failure needs a visible loss (each
    // failure is at least one event, so at least as many events lost as failures missing).
    assert!(
        missing == 0 || lost >= missing,
        "{missing} of {FAILURES} failures missing from /metrics, but only {lost} kernel events reported lost: \
         a silent loss"
    );
    let is_failure = |r: &Value| r.pid() == Some(flood_pid) && r.event() == "connect_error";
    let records = daemon.wait_for_records(counted as usize, FLOOD_TIMEOUT, is_failure);
    assert_eq!(records.len() as u64, counted, "one NDJSON line per counted failure");
    assert!(records.iter().all(|r| r["error"] == "EADDRNOTAVAIL"), "only the Cilium failure");
    assert_eq!(fd_count(daemon.pid()), fds_before, "the daemon's fds before and after the flood");
    let stopped = daemon.terminate();
    let all = stopped.records().into_iter().filter(|r| is_failure(r)).count() as u64;
    assert_eq!(all, counted, "no NDJSON line after the count settled");
}

/// The daemon's fds at rest: the fewest of 10 counts 100 ms apart. The port sampler holds
/// a netlink socket and a namespace fd for the few milliseconds of each round (every 5 s):
/// one count caught them once in CI (81 before, 82 after); a leaked fd is in all ten.
fn fd_count(pid: u32) -> usize {
    (0..10)
        .map(|_| {
            let count = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read the daemon's fds").count();
            std::thread::sleep(Duration::from_millis(100));
            count
        })
        .min()
        .expect("ten counts")
}
