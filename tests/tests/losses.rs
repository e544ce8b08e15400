//! What the kernel side cannot read is said, never shown as 0: a setsockopt() whose
//! value sits on a page the process never touched succeeds in the kernel (its copy
//! faults the page in) while the tracepoint's bpf_probe_read_user, which may not fault,
//! cannot read it. The option must show as `?` and the loss be counted by reason.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::{
    net::{Ipv4Addr, TcpListener},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use serde_json::Value;
use sockerr_e2e::*;

/// A fresh anonymous page, never written or read: not yet mapped in the page tables.
struct UntouchedPage(*mut libc::c_void);

impl UntouchedPage {
    fn new() -> Self {
        // SAFETY: anonymous private mapping, no file, checked below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Self(page)
    }
}

impl Drop for UntouchedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.0, 4096) };
    }
}

#[test]
fn unreadable_option_value_is_marked_and_counted() {
    require_root();
    let me = std::process::id().to_string();
    // --all: the successful setsockopt() is a record of its own only then.
    let tracer = Tracer::start(&["--pid", &me, "--output", "json", "--all"]);

    // A port nobody listens on: bind one, note it, close it.
    let closed_port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
    // SAFETY: plain socket(2); the fd is owned below.
    let socket = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)) };
    let page = UntouchedPage::new();
    // SAFETY: the page is 4096 bytes long; the kernel reads 4 of them.
    let ret = unsafe { libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK, page.0, 4) };
    assert_eq!(ret, 0, "setsockopt(SO_MARK) as root: {}", std::io::Error::last_os_error());
    let target = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: closed_port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: a sockaddr_in of the size passed.
    let ret = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const target).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, -1, "nothing listens on {closed_port}");

    let fd = Value::from(socket.as_raw_fd());
    let mine = |r: &Value| r["fd"] == fd && r.pid() == Some(u64::from(std::process::id()));
    tracer.wait_for_records(1, RECORD_TIMEOUT, |r| mine(r) && r.event() == "connect_error");
    let stopped = tracer.stop();
    let records = stopped.records();
    // (std's TcpListener set SO_REUSEADDR on the same fd number before.)
    let is_mark =
        |r: &Value| mine(r) && r.event() == "sockopt" && r.str_at("/sockopt/name") == Some("SO_MARK");
    let sockopt =
        records.iter().find(|r| is_mark(r)).unwrap_or_else(|| panic!("no SO_MARK record: {records:#?}"));
    assert_eq!(sockopt.str_at("/sockopt/value"), Some("?"), "unknown, not 0: {sockopt}");
    let failure = records.iter().find(|r| mine(r) && r.event() == "connect_error").expect("connect_error");
    assert_eq!(failure.str_at("/sockopts/SO_MARK"), Some("?"), "{failure}");
    assert!(
        stopped.stderr.contains("user_read_fault="),
        "the stopped line names the reason: {}",
        stopped.stderr
    );
}
