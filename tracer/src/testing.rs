//! Records for unit tests of everything that consumes them.

use std::net::SocketAddr;

use tracer_common::SockOpts;
use tracer_common::options::{FLAG_SO_MARK, FLAG_SO_REUSEADDR};

use crate::clock::Clock;
use crate::pipeline::Inspect;
use crate::record::{Backend, Cause, EventName, Holder, HolderOwner, Record, TcpState};
use crate::table::SocketTable;

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
        reset: None,
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

/// The proxy's reset of its client in the Istio incident, after the upstream's response
/// with two Transfer-Encoding fields (as `--http-peek` shows it).
pub fn istio_reset() -> Record {
    use crate::http_anomaly::{Anomaly, AnomalyKind, MessageKind};
    use crate::reset::{DataDirection, Exchange, FoundAnomaly, ResetDetails, ResetDirection, ResetOwner};
    let upstream = addr("127.0.0.1:8080");
    let response =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let details = ResetDetails {
        direction: ResetDirection::Sent,
        owner: ResetOwner::Socket,
        has_socket: true,
        state: Some(TcpState::Close),
        reason: Some(14),
        reason_name: Some("TCP_STATE".to_owned()),
        active: true,
        cookie: None,
        last_error: None,
        exchanges: vec![Exchange {
            own: false,
            fd: 24,
            local: Some(addr("127.0.0.1:40628")),
            peer: Some(upstream),
            sent: b"GET /wrong HTTP/1.1\r\n\r\n".to_vec(),
            sent_total: 23,
            received: response.clone(),
            received_total: response.len() as u64,
            received_ns: 1,
        }],
        anomalies: vec![FoundAnomaly {
            anomaly: Anomaly {
                kind: AnomalyKind::DuplicateTransferEncoding,
                values: vec!["Chunked".to_owned(), "chunked".to_owned()],
            },
            message: MessageKind::Response,
            direction: DataDirection::Received,
            fd: 24,
            peer: Some(upstream),
        }],
    };
    Record {
        pid: 812,
        tid: 812,
        comm: "proxy".to_owned(),
        thread: "proxy".to_owned(),
        fd: 23,
        src: Some(addr("127.0.0.1:15001")),
        dst: Some(addr("127.0.0.1:38120")),
        reset: Some(Box::new(details)),
        ..record(EventName::RstSent)
    }
}

/// What the run loop's inspections see, without a kernel: a socket table, a clock and
/// the names of some processes.
pub struct FakeState {
    pub table: SocketTable,
    pub clock: Clock,
    pub names: Vec<(u32, &'static str)>,
}

impl Inspect for FakeState {
    fn table(&self) -> &SocketTable {
        &self.table
    }

    fn clock(&self) -> Clock {
        self.clock
    }

    fn process_name(&mut self, pid: u32) -> Option<String> {
        self.names.iter().find(|(known, _)| *known == pid).map(|(_, name)| (*name).to_owned())
    }
}
