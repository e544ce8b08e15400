//! `/v1/sockets?pid=N` or `?comm=NAME`: what the socket table knows about the live
//! sockets of a process (or of every process with that name), as JSON.
//!
//! Only sockets sockerr saw: those the kernel programs report (every failure; with
//! `--all` also successful setsockopt, bind and connect calls) and not yet closed. Without
//! `--all` a socket appears with its first failure, its options as the kernel carried
//! them, and no `bound` address (a successful bind() is no record).

use serde::Serialize;

use crate::{
    errno::errno_name,
    output::{MarkView, SockoptsView},
    pipeline::Inspect,
    table::{Phase, Socket},
};

/// Which processes a request asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    /// The process name as records give it (the thread-group leader's comm).
    Comm(String),
}

impl Selector {
    /// From the query string's (name, value) pairs: exactly one of `pid=N`, `comm=NAME`.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, String> {
        const USAGE: &str = "use /v1/sockets?pid=N or /v1/sockets?comm=NAME";
        let mut selectors = Vec::new();
        for (name, value) in pairs {
            match name.as_str() {
                "pid" => match value.parse() {
                    Ok(pid) => selectors.push(Self::Pid(pid)),
                    Err(_) => return Err(format!("pid={value:?} is not a process id: {USAGE}")),
                },
                "comm" if !value.is_empty() => selectors.push(Self::Comm(value.clone())),
                "comm" => return Err(format!("comm is empty: {USAGE}")),
                other => return Err(format!("unknown parameter {other:?}: {USAGE}")),
            }
        }
        match <[Selector; 1]>::try_from(selectors) {
            Ok([selector]) => Ok(selector),
            Err(selectors) if selectors.is_empty() => Err(format!("which process? {USAGE}")),
            Err(_) => Err(format!("one process selector at a time: {USAGE}")),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SocketsView {
    /// Processes with at least one socket in the table, by pid.
    pub processes: Vec<ProcessView>,
}

#[derive(Debug, Serialize)]
pub struct ProcessView {
    pub pid: u32,
    /// None when the process is gone (its sockets leave the table within seconds).
    pub comm: Option<String>,
    pub sockets: Vec<SocketView>,
}

#[derive(Serialize)]
pub struct SocketView {
    fd: i32,
    /// How many sockets this fd number of the process named before this one.
    generation: u32,
    /// Options set, with their values: `{"SO_MARK":"0x32030b00","SO_REUSEADDR":1}`.
    options: SockoptsView,
    /// Cilium's reading of SO_MARK, as in records.
    mark: Option<MarkView>,
    /// The address of a successful bind().
    bound: Option<String>,
    /// The source the kernel used (or tried) for the last connect.
    local: Option<String>,
    peer: Option<String>,
    phase: &'static str,
    last_error: Option<LastErrorView>,
    first_seen: String,
    last_seen: String,
}

impl std::fmt::Debug for SocketView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketView").field("fd", &self.fd).field("generation", &self.generation).finish()
    }
}

#[derive(Debug, Serialize)]
struct LastErrorView {
    call: &'static str,
    errno: i32,
    error: Option<&'static str>,
    time: String,
}

/// The sockets `selector` asks about, as the processor knows them now.
pub fn view(state: &mut dyn Inspect, selector: &Selector) -> SocketsView {
    let pids = match selector {
        Selector::Pid(pid) => vec![*pid],
        Selector::Comm(_) => state.table().pids(),
    };
    let clock = state.clock();
    let time = |ts_ns: u64| format!("{:.6}", clock.wall_time(ts_ns));
    let mut processes = Vec::new();
    for pid in pids {
        let comm = state.process_name(pid);
        if let Selector::Comm(wanted) = selector
            && comm.as_ref() != Some(wanted)
        {
            continue;
        }
        let sockets: Vec<SocketView> =
            state.table().of_pid(pid).into_iter().map(|socket| socket_view(socket, &time)).collect();
        if !sockets.is_empty() {
            processes.push(ProcessView { pid, comm, sockets });
        }
    }
    SocketsView { processes }
}

fn socket_view(socket: &Socket, time: &impl Fn(u64) -> String) -> SocketView {
    let address = |addr: Option<std::net::SocketAddr>| addr.map(|a| a.to_string());
    SocketView {
        fd: socket.fd,
        generation: socket.generation,
        options: SockoptsView(socket.opts),
        mark: MarkView::of_socket(socket.opts),
        bound: address(socket.bound),
        local: address(socket.local),
        peer: address(socket.peer),
        phase: match socket.phase {
            Phase::Open => "open",
            Phase::Connecting => "connecting",
            Phase::Established => "established",
            Phase::Failed => "failed",
        },
        last_error: socket.last_error.map(|error| LastErrorView {
            call: error.operation.as_str(),
            errno: error.errno,
            error: errno_name(error.errno),
            time: time(error.ts_ns),
        }),
        first_seen: time(socket.first_seen_ns),
        last_seen: time(socket.last_seen_ns),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tracer_common::{
        SockOpts,
        options::{FLAG_IP_TRANSPARENT, FLAG_SO_MARK, FLAG_SO_REUSEADDR},
    };

    use super::*;
    use crate::{
        clock::Clock,
        event::{Header, KernelEvent, Payload},
        table::SocketTable,
        testing::{FakeState, addr},
    };

    fn event(pid: u32, ts_ns: u64, errno: i32, payload: Payload) -> KernelEvent {
        KernelEvent {
            header: Header { ts_ns, pid, tid: pid, cgroup_id: 1, thread: "t".into(), errno },
            payload,
        }
    }

    /// Envoy's Cilium attempt on fd 131, the second socket on that fd: options, bind,
    /// connect failing with EADDRNOTAVAIL. Plus one bare socket of each other process.
    fn table() -> FakeState {
        let mut table = SocketTable::new(64);
        let opts =
            SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEADDR | FLAG_IP_TRANSPARENT, mark: 0x3203_0b00 };
        let src = Some(addr("10.0.1.7:40312"));
        let events = [
            event(401, 1_000, 0, Payload::Close { fd: 131, reused: false }),
            event(
                401,
                2_000,
                0,
                Payload::Sockopt {
                    fd: 131,
                    level: 1,
                    optname: 36,
                    optlen: 4,
                    value: Some(opts.mark),
                    ret: 0,
                    opts,
                },
            ),
            event(401, 3_000, 0, Payload::Bind { fd: 131, addr: src, opts, origin: None }),
            event(
                401,
                866_123_000,
                99,
                Payload::Connect {
                    fd: 131,
                    dst: Some(addr("52.216.8.19:443")),
                    src,
                    opts,
                    sk: 1,
                    origin: None,
                },
            ),
            event(
                402,
                4_000,
                0,
                Payload::Bind {
                    fd: 5,
                    addr: Some(addr("0.0.0.0:8080")),
                    opts: SockOpts::default(),
                    origin: None,
                },
            ),
            event(
                77,
                5_000,
                0,
                Payload::Bind {
                    fd: 3,
                    addr: Some(addr("0.0.0.0:9090")),
                    opts: SockOpts::default(),
                    origin: None,
                },
            ),
        ];
        for e in &events {
            table.apply(e);
        }
        FakeState {
            table,
            // 2026-11-23T12:53:25Z at kernel time 0.
            clock: Clock::from_offset_ns(1_795_438_405_000_000_000),
            names: vec![(401, "envoy"), (402, "envoy"), (77, "curl")],
        }
    }

    fn json_of(view: &SocketsView) -> Value {
        serde_json::to_value(view).unwrap()
    }

    #[test]
    fn a_process_with_its_failed_socket() {
        let view = view(&mut table(), &Selector::Pid(401));
        assert_eq!(
            json_of(&view),
            json!({"processes": [{
                "pid": 401,
                "comm": "envoy",
                "sockets": [{
                    "fd": 131,
                    "generation": 1,
                    "options": {"SO_MARK": "0x32030b00", "SO_REUSEADDR": 1, "IP_TRANSPARENT": 1},
                    "mark": {"magic": "0x0b00", "magic_name": "proxy-egress", "identity": 12803,
                             "cluster": 0, "endpoint_id": null},
                    "bound": "10.0.1.7:40312",
                    "local": "10.0.1.7:40312",
                    "peer": "52.216.8.19:443",
                    "phase": "failed",
                    "last_error": {"call": "connect", "errno": 99, "error": "EADDRNOTAVAIL",
                                   "time": "2026-11-23T12:53:25.866123Z"},
                    "first_seen": "2026-11-23T12:53:25.000002Z",
                    "last_seen": "2026-11-23T12:53:25.866123Z"
                }]
            }]})
        );
    }

    #[test]
    fn by_name_every_process_of_that_name() {
        let view = view(&mut table(), &Selector::Comm("envoy".into()));
        let pids: Vec<u32> = view.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [401, 402]);
        let bare = &json_of(&view)["processes"][1]["sockets"][0];
        assert_eq!(bare["options"], json!({}));
        assert_eq!(bare["mark"], Value::Null);
        assert_eq!(bare["bound"], "0.0.0.0:8080");
        assert_eq!(bare["phase"], "open");
        assert_eq!(bare["last_error"], Value::Null);
    }

    #[test]
    fn unknown_process_gives_no_processes() {
        assert!(view(&mut table(), &Selector::Pid(9999)).processes.is_empty());
        assert!(view(&mut table(), &Selector::Comm("nginx".into())).processes.is_empty());
    }

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn selectors_from_the_query() {
        assert_eq!(Selector::from_query(&pairs(&[("pid", "401")])), Ok(Selector::Pid(401)));
        assert_eq!(Selector::from_query(&pairs(&[("comm", "envoy")])), Ok(Selector::Comm("envoy".into())));
        for (query, complaint) in [
            (&[][..], "which process?"),
            (&[("pid", "envoy")][..], "pid=\"envoy\" is not a process id"),
            (&[("pid", "1"), ("comm", "envoy")][..], "one process selector at a time"),
            (&[("comm", "")][..], "comm is empty"),
            (&[("fd", "3")][..], "unknown parameter \"fd\""),
        ] {
            let err = Selector::from_query(&pairs(query)).unwrap_err();
            assert!(err.starts_with(complaint), "{query:?}: {err}");
            assert!(err.ends_with("use /v1/sockets?pid=N or /v1/sockets?comm=NAME"), "{err}");
        }
    }
}
