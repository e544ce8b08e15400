//! Process filters: a process named `demo-other` makes the same failing bind as the proxy,
//! just before it (`bind-in-use --other`). Because the other's call comes first, once the
//! proxy's record arrived a wrongly admitted record of the other's would have arrived too.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use serde_json::Value;
use sockerr_e2e::*;

#[test]
fn comm_filter_excludes_other_processes() {
    let tracer = Tracer::start(&["--comm", "demo-proxy", "--output", "json"]);
    let report = run_scenario("bind-in-use", &["--other"]);
    let proxy = actor(&report, "proxy");
    let other = actor(&report, "other");
    assert_eq!(report.attempts_of("other").len(), 1, "the other's bind failed too: {report:?}");

    let is_proxy_failure = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_proxy_failure);
    let records = tracer.stop().records();
    // Concurrent tests run proxies too: all of them are demo-proxy, none is anything else.
    for record in &records {
        assert_eq!(record.str_at("/comm"), Some("demo-proxy"), "{record}");
        assert_ne!(record.pid(), Some(u64::from(other.pid)), "{record}");
    }
}

/// `--pid` needs the pids before anything fails: `--gate` makes the scenario wait for the
/// tracers. Each tracer must report its own process and nothing else at all.
#[test]
fn pid_filter_selects_one_process() {
    let mut scenario = ScenarioRun::start("bind-in-use", &["--other", "--gate"]);
    let gate = scenario.gate();
    let pid_of = |role: &str| {
        gate.actors.iter().find(|a| a.role == role).unwrap_or_else(|| panic!("no {role} in {gate:?}")).pid
    };
    let (proxy_pid, other_pid) = (pid_of("proxy").to_string(), pid_of("other").to_string());
    let proxy_tracer = Tracer::start(&["--pid", &proxy_pid, "--output", "json"]);
    let other_tracer = Tracer::start(&["--pid", &other_pid, "--output", "json"]);
    scenario.open();
    let report = scenario.finish();

    for (tracer, role) in [(proxy_tracer, "proxy"), (other_tracer, "other")] {
        let me = actor(&report, role);
        let [attempt] = report.attempts_of(role)[..] else {
            panic!("one {role} attempt expected: {report:?}")
        };
        let mine = |r: &Value| r.pid() == Some(u64::from(me.pid)) && r.event() == "bind_error";
        tracer.wait_for_records(1, RECORD_TIMEOUT, mine);
        let records = tracer.stop().records();
        for record in &records {
            assert_eq!(record.pid(), Some(u64::from(me.pid)), "--pid {} admitted {record}", me.pid);
        }
        let failures: Vec<&Value> = records.iter().filter(|r| mine(r)).collect();
        let [record] = failures.as_slice() else { panic!("one bind_error of {role} expected: {records:#?}") };
        assert_failure_matches(record, attempt, &report);
    }
}

/// `--cgroup`: a tracer on the scenario's cgroup sees its failures; one on an empty
/// sibling cgroup, running at the same time, sees nothing at all.
#[test]
fn cgroup_filter_selects_the_subtree() {
    let inside = TestCgroup::create("inside");
    let empty = TestCgroup::create("empty");
    let inside_tracer = Tracer::start(&["--cgroup", inside.relative(), "--output", "json"]);
    let empty_tracer = Tracer::start(&["--cgroup", empty.relative(), "--output", "json"]);
    let report = ScenarioRun::start_in_cgroup("bind-in-use", &[], inside.path()).finish();
    let proxy = actor(&report, "proxy");
    let [attempt] = report.attempts_of("proxy")[..] else { panic!("one proxy attempt expected: {report:?}") };

    let mine = |r: &Value| r.pid() == Some(u64::from(proxy.pid)) && r.event() == "bind_error";
    inside_tracer.wait_for_records(1, RECORD_TIMEOUT, mine);
    let inside_records = inside_tracer.stop().records();
    let actors: Vec<u64> = report.run.actors.iter().map(|a| u64::from(a.pid)).collect();
    for record in &inside_records {
        assert!(record.pid().is_some_and(|pid| actors.contains(&pid)), "not from the cgroup: {record}");
    }
    let failures: Vec<&Value> = inside_records.iter().filter(|r| mine(r)).collect();
    let [record] = failures.as_slice() else { panic!("one bind_error expected: {inside_records:#?}") };
    assert_failure_matches(record, attempt, &report);
    let empty_records = empty_tracer.stop().records();
    assert!(empty_records.is_empty(), "the empty cgroup's tracer saw: {empty_records:#?}");
}

/// The marks the quiet-success check sets on its two ends: values no scenario uses.
const QUIET_MARK: u32 = 0x5eed_0001;
const ACCEPTED_MARK: u32 = 0x5eed_0002;

/// Issue 11, "do the minimum where nothing fails": a socket with SO_MARK whose
/// setsockopt(), bind() and connect() all succeed makes no record without `--all`, and
/// one record per call with it; either way its later failure (a setsockopt() with a short
/// buffer) and the reset it receives carry its options. So does the reset the other end
/// sends from close(): accepted without an address buffer, it is attributed by close(),
/// and its options by what close() found (the task's `TASK_STATE`). The close of that
/// accepted socket (options set, nothing failed) is a record only with `--all`. Both runs
/// in one test, one after the other: the tracers follow this test process (`--pid`), whose
/// fd numbers they share.
#[test]
fn successes_of_a_socket_with_options_are_records_only_with_all() {
    require_root();
    quiet_success(false);
    quiet_success(true);
}

fn quiet_success(all: bool) {
    use std::{
        net::{Ipv4Addr, TcpListener},
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
    };

    let me = std::process::id().to_string();
    let mut args = vec!["--pid", me.as_str(), "--output", "json"];
    if all {
        args.push("--all");
    }
    let tracer = Tracer::start(&args);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen on loopback");
    let server = listener.local_addr().expect("listener address");
    // SAFETY: plain socket(2); the fd is owned below.
    let client = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(client >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd owned by nothing else.
    let client = unsafe { OwnedFd::from_raw_fd(client) };
    let int = size_of::<u32>() as libc::socklen_t;
    let set_mark = |fd: &OwnedFd, mark: u32, len: libc::socklen_t| {
        // SAFETY: the value is a u32 on the stack; `len` is at most its size.
        unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK, (&raw const mark).cast(), len)
        }
    };
    let ret = set_mark(&client, QUIET_MARK, int);
    assert_eq!(ret, 0, "setsockopt(SO_MARK) as root: {}", std::io::Error::last_os_error());
    let sockaddr = |port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sockaddr(0);
    // SAFETY: a sockaddr_in of the size passed.
    let ret = unsafe { libc::bind(client.as_raw_fd(), (&raw const local).cast(), len) };
    assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
    let target = sockaddr(server.port());
    // SAFETY: as above.
    let ret = unsafe { libc::connect(client.as_raw_fd(), (&raw const target).cast(), len) };
    assert_eq!(ret, 0, "connect to {server}: {}", std::io::Error::last_os_error());
    // The peer resets the connection: close with SO_LINGER {on, 0 s}.
    // SAFETY: accept(2) without an address buffer; the fd is owned below.
    let accepted = unsafe { libc::accept(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
    assert!(accepted >= 0, "accept: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd owned by nothing else.
    let accepted = unsafe { OwnedFd::from_raw_fd(accepted) };
    let ret = set_mark(&accepted, ACCEPTED_MARK, int);
    assert_eq!(ret, 0, "setsockopt(SO_MARK): {}", std::io::Error::last_os_error());
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a linger struct of the size passed, on an open fd.
    let ret = unsafe {
        libc::setsockopt(
            accepted.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    let accepted_fd = Value::from(accepted.as_raw_fd());
    drop(accepted);
    // A failure of the same socket: the kernel wants an int, gets 2 bytes (EINVAL).
    assert_eq!(set_mark(&client, QUIET_MARK, 2), -1, "setsockopt(SO_MARK) with 2 bytes must fail");

    // Only this test makes sockets in this process while its tracer runs.
    let fd = Value::from(client.as_raw_fd());
    let mine = |r: &Value| r.pid() == Some(u64::from(std::process::id())) && r["fd"] == fd;
    let is_failure = |r: &Value| mine(r) && r.event() == "sockopt" && r.u64_at("/errno") == Some(22);
    let is_reset = |r: &Value| mine(r) && r.event() == "rst_received";
    let is_sent = |r: &Value| {
        r.pid() == Some(u64::from(std::process::id())) && r["fd"] == accepted_fd && r.event() == "rst_sent"
    };
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_failure);
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_reset);
    tracer.wait_for_records(1, RECORD_TIMEOUT, is_sent);
    let stopped = tracer.stop();
    let records = stopped.records();
    // The accepted socket carried options (SO_MARK, SO_LINGER) and nothing failed on it:
    // its close is a record only with --all. Close records print nothing, so they are what
    // the tracer counted beyond the printed records and the listener's LISTENING record
    // (the client and the listener close after the tracer stopped).
    let closes = events_counted(&stopped) - records.len() as u64 - 1;
    assert_eq!(closes, u64::from(all), "close records (--all: {all}): {records:#?}\n{}", stopped.stderr);
    let mark_json = Value::from(format!("{QUIET_MARK:#010x}"));
    for record in records.iter().filter(|r| is_failure(r) || is_reset(r)) {
        assert_eq!(record.pointer("/sockopts/SO_MARK"), Some(&mark_json), "options carried: {record}");
    }
    let reset = records.iter().find(|r| is_reset(r)).expect("waited for above");
    assert_eq!(reset.str_at("/dst"), Some(server.to_string().as_str()), "the client's reset: {reset}");
    let sent = records.iter().find(|r| is_sent(r)).expect("waited for above");
    // Recorded at accept() (no address buffer: checked against its file), and sent inside
    // its close(): the options the fd carried then, set after accept().
    assert_eq!(sent.str_at("/rst/by"), Some("socket"), "attributed by its socket: {sent}");
    let accepted_mark = Value::from(format!("{ACCEPTED_MARK:#010x}"));
    assert_eq!(sent.pointer("/sockopts/SO_MARK"), Some(&accepted_mark), "options carried: {sent}");
    let successes: Vec<&Value> = records
        .iter()
        .filter(|r| mine(r) && r["errno"].is_null() && ["sockopt", "bind", "connect"].contains(&r.event()))
        .collect();
    let mut events: Vec<&str> = successes.iter().map(|r| r.event()).collect();
    events.sort_unstable();
    if all {
        assert_eq!(events, ["bind", "connect", "sockopt"], "--all: one record per call: {successes:#?}");
        for record in &successes {
            assert_eq!(record.pointer("/sockopts/SO_MARK"), Some(&mark_json), "{record}");
        }
    } else {
        assert_eq!(events, Vec::<&str>::new(), "no success is a record without --all: {successes:#?}");
    }
}

/// The records the tracer read from the kernel, from its `stopped: N events` line.
fn events_counted(stopped: &Stopped) -> u64 {
    stopped
        .stderr
        .lines()
        .find_map(|line| line.split_once("stopped: ")?.1.split_once(" events")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no `stopped: N events` line:\n{}", stopped.stderr))
}
