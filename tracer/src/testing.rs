//! Records for unit tests of everything that consumes them.

use std::net::SocketAddr;

use tracer_common::SockOpts;
use tracer_common::options::{FLAG_SO_MARK, FLAG_SO_REUSEADDR};

use crate::record::{Backend, Cause, EventName, Holder, HolderOwner, Record, TcpState};

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// A record of `event` by envoy[401] with nothing else known.
pub fn record(event: EventName) -> Record {
    Record {
        time: "2026-11-23T12:53:25.866123Z".parse().expect("test time"),
        event,
        pid: 401,
        tid: 401,
        comm: "envoy".to_owned(),
        thread: "envoy".to_owned(),
        fd: 131,
        errno: None,
        asynchronous: false,
        src: None,
        dst: None,
        sockopts: SockOpts::default(),
        sockopt: None,
        cause: None,
        holders: Vec::new(),
        ports: None,
        note: None,
        netns: None,
        cgroup_id: 1,
        pod: None,
        kernel_fn: None,
        backend: Backend::Tracepoint,
        count: 1,
    }
}

/// The connect() that failed in the Cilium incident: Envoy reused the source tuple of
/// its own live upstream connection.
pub fn cilium_incident() -> Record {
    let src = addr("10.0.1.7:40312");
    let dst = addr("52.216.8.19:443");
    Record {
        errno: Some(99),
        src: Some(src),
        dst: Some(dst),
        sockopts: SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEADDR, mark: 0x3203_0b00 },
        cause: Some(Cause::TupleInUse),
        holders: vec![Holder {
            state: TcpState::Established,
            src,
            dst: Some(dst),
            inode: 4242,
            owner: Some(HolderOwner { pid: 401, comm: "envoy".to_owned(), fd: 77 }),
            timer_ms: None,
        }],
        netns: Some(4_026_531_840),
        ..record(EventName::ConnectError)
    }
}
