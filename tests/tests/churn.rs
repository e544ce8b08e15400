//! Issue 12, "unbounded growth", end to end: 100,000 short-lived processes each set
//! SO_MARK on a socket (so the kernel tracks it and reports its close), close it and exit,
//! under `sockerr daemon --all` (without `--all` a successful setsockopt() is no record and
//! the table would learn nothing of them). What the socket table remembers of them must go
//! with them: the daemon's RSS after the first 10,000 (the warm-up) stays within 10 %.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::ffi::CString;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use sockerr_e2e::*;

const PROCESSES: u32 = 100_000;
const CHUNKS: u32 = 10;
/// Bound on one chunk of 10,000 fork/exit cycles (seconds on an idle machine).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);
/// Longer than the daemon's prune interval (5 s): exited processes are forgotten.
const SETTLE: Duration = Duration::from_secs(6);

/// Forks a driver that joins `procs` (a cgroup.procs file) and runs `count` children,
/// one after the other, each: socket, setsockopt(SO_MARK), close, exit. Waits (bounded).
fn run_chunk(procs: &CString, count: u32) {
    // SAFETY: the child only makes async-signal-safe calls (open, write, close, fork,
    // socket, setsockopt, waitpid, _exit) on memory prepared before the fork.
    let driver = unsafe { libc::fork() };
    assert!(driver >= 0, "fork: {}", std::io::Error::last_os_error());
    if driver == 0 {
        // SAFETY: as above.
        unsafe { drive(procs, count) }
    }
    let driver = Pid::from_raw(driver);
    let deadline = Instant::now() + CHUNK_TIMEOUT;
    loop {
        match waitpid(driver, Some(WaitPidFlag::WNOHANG)).expect("waitpid on the driver") {
            WaitStatus::StillAlive => {
                if Instant::now() > deadline {
                    let _ = kill(driver, Signal::SIGKILL);
                    let _ = waitpid(driver, None);
                    panic!("{count} short-lived processes took longer than {CHUNK_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            WaitStatus::Exited(_, 0) => return,
            other => panic!("the driver of the short-lived processes ended with {other:?}"),
        }
    }
}

/// The driver's body; never returns.
///
/// # Safety
/// Only in a freshly forked child.
unsafe fn drive(procs: &CString, count: u32) -> ! {
    // SAFETY: plain syscalls on valid pointers; see run_chunk.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(2);
        }
        libc::close(fd);
        for _ in 0..count {
            let child = libc::fork();
            if child == 0 {
                let socket = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let mark: libc::c_int = 0x0b00;
                let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                libc::setsockopt(socket, libc::SOL_SOCKET, libc::SO_MARK, (&raw const mark).cast(), size);
                libc::close(socket);
                libc::_exit(0);
            }
            if child < 0 {
                libc::_exit(3);
            }
            let mut status = 0;
            libc::waitpid(child, &mut status, 0);
        }
        libc::_exit(0)
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn unbounded_growth_of_next_generation_100000_short_lived_processes_keep_rss_flat() {
    let cgroup = TestCgroup::create("churn");
    // Metrics count every call; stdout (kept by this test in memory) prints none of them.
    let daemon = Daemon::start(&["--cgroup", cgroup.relative(), "--errno", "EADDRNOTAVAIL", "--all"]);
    let procs =
        CString::new(cgroup.path().join("cgroup.procs").to_str().expect("UTF-8 path")).expect("no NUL");
    let mut samples = Vec::new();
    for _ in 0..CHUNKS {
        run_chunk(&procs, PROCESSES / CHUNKS);
        std::thread::sleep(SETTLE);
        samples.push(rss_kib(daemon.pid()));
    }
    let metrics = daemon.metrics();
    let marks: f64 = metrics
        .iter()
        .filter(|(series, _)| {
            series.starts_with(r#"sockerr_setsockopt_calls_total{option="SO_MARK",result="ok""#)
        })
        .map(|(_, value)| value)
        .sum();
    let lost: f64 =
        metrics.iter().filter(|(s, _)| s.starts_with("sockerr_events_lost_total")).map(|(_, v)| v).sum();
    eprintln!(
        "churn: daemon RSS per 10k processes (KiB): {samples:?}; {marks} SO_MARK calls seen, {lost} events lost"
    );
    assert!(
        marks + lost > 0.0 && marks >= f64::from(PROCESSES) * 0.9,
        "the daemon saw the processes: {marks}"
    );
    let warm = samples[0];
    let peak = samples.iter().skip(1).copied().max().unwrap_or(warm);
    let growth = (peak as f64 - warm as f64) / warm as f64 * 100.0;
    assert!(growth <= 10.0, "daemon RSS grew {growth:.1} % after the warm-up: {samples:?} KiB");
    let stopped = daemon.terminate();
    assert!(stopped.status.success(), "{stopped:?}");
}
