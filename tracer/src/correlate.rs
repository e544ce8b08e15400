//! From a kernel event, its socket and what the caller knows about the process to the
//! finished [`Record`] (before classification): the one place a record is assembled.

use std::collections::BTreeMap;

use tracer_common::options::{FLAG_SO_MARK, FLAG_SO_REUSEADDR, FLAG_SO_REUSEPORT};
use tracer_common::{SockOpts, options::option_flag};

use crate::{
    event::{KernelEvent, Origin, Payload},
    record::{Backend, EventName, PodIdentity, Record, SockoptCall},
    reset::{self, ResetDirection},
    table::Socket,
};

/// Facts about the process, resolved by the caller (they need /proc).
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    pub time: jiff::Timestamp,
    /// Process name; the thread name when the process is gone.
    pub comm: String,
    pub netns: Option<u64>,
}

/// Everything about a record that is not in the event or the socket table.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub who: Attribution,
    /// Pod and container of the process, when attribution knows them.
    pub pod: Option<PodIdentity>,
    /// The hooks that produced the event (`backend` in JSON).
    pub backend: Backend,
    /// `enum sk_rst_reason` names of the running kernel (empty: numbers stay numbers).
    pub reset_reasons: &'a BTreeMap<u32, String>,
}

/// The record for `event`, or `None` for bookkeeping events (close).
pub fn record(event: &KernelEvent, socket: Option<&Socket>, context: Context<'_>) -> Option<Record> {
    let Context { who, pod, backend, reset_reasons } = context;
    let header = &event.header;
    let errno = (header.errno != 0).then_some(header.errno);
    let known_opts = socket.map(|s| s.opts).unwrap_or_default();
    let opts_at_call = |opts: &SockOpts| if opts.flags != 0 { *opts } else { known_opts };
    let mut record = Record {
        time: who.time,
        event: EventName::Sockopt,
        pid: header.pid,
        tid: header.tid,
        comm: who.comm,
        thread: header.thread.clone(),
        fd: event.fd(),
        errno,
        asynchronous: false,
        src: None,
        dst: None,
        sockopts: known_opts,
        sockopt: None,
        cause: None,
        holders: Vec::new(),
        ports: None,
        note: None,
        netns: who.netns,
        cgroup_id: header.cgroup_id,
        pod,
        kernel_fn: None,
        backend,
        count: 1,
        reset: None,
    };
    match &event.payload {
        Payload::Sockopt { level, optname, value, opts, .. } => {
            record.sockopt = Some(SockoptCall { flag: option_flag(*level, *optname), value: *value });
            record.sockopts = *opts;
            record.src = socket.and_then(|s| s.bound);
        }
        Payload::Bind { addr, opts, origin, .. } => {
            record.event = if errno.is_some() { EventName::BindError } else { EventName::Bind };
            record.src = *addr;
            record.sockopts = opts_at_call(opts);
            if let Some(origin) = origin {
                apply_kernel_view(&mut record, origin, false);
            }
        }
        Payload::Connect { dst, src, opts, origin, .. } => {
            record.event = if errno.is_some() { EventName::ConnectError } else { EventName::Connect };
            record.dst = *dst;
            // The kernel names the tuple it tried; before it got that far, the bound
            // address is the best the table knows.
            record.src = src.or_else(|| socket.and_then(|s| s.bound));
            record.sockopts = opts_at_call(opts);
            if let Some(origin) = origin {
                apply_kernel_view(&mut record, origin, true);
            }
        }
        Payload::ConnectAsyncError { src, dst, opts, .. } => {
            record.event = EventName::ConnectError;
            record.asynchronous = true;
            record.src = *src;
            record.dst = *dst;
            record.sockopts = opts_at_call(opts);
        }
        Payload::Established { src, dst, opts, .. } => {
            record.event = EventName::Connect;
            record.src = *src;
            record.dst = *dst;
            record.sockopts = opts_at_call(opts);
        }
        Payload::Close { .. } | Payload::Listening(_) => return None,
        Payload::Reset(seen) => {
            record.event = match seen.direction {
                ResetDirection::Sent => EventName::RstSent,
                ResetDirection::Received => EventName::RstReceived,
            };
            record.src = seen.local;
            record.dst = seen.peer;
            // The table knows this very socket's options only from records (all of its
            // setsockopt() calls with --all); otherwise the kernel's, recorded when the
            // owner connected, accepted or closed it.
            record.sockopts = socket.map(|s| s.opts).filter(|opts| opts.flags != 0).unwrap_or(seen.opts);
            let last_error = socket.and_then(|s| s.last_error);
            record.reset = Some(Box::new(reset::details(seen, header.ts_ns, last_error, reset_reasons)));
        }
    }
    Some(record)
}

/// What the kprobe backend read from the refusing function's `struct sock` replaces
/// what sockerr pieced together from syscalls: the options it can see (SO_MARK,
/// SO_REUSEADDR, SO_REUSEPORT, also when set before sockerr started) and, for connect(),
/// the tuple. A bind keeps the address the caller asked for: the kernel has already
/// cleared the socket's on the way out (__inet_bind resets inet_rcv_saddr).
fn apply_kernel_view(record: &mut Record, origin: &Origin, connect: bool) {
    record.kernel_fn = Some(origin.function);
    let opts = &mut record.sockopts;
    if opts.flags & FLAG_SO_MARK != 0 || origin.mark != 0 {
        opts.flags |= FLAG_SO_MARK;
        opts.mark = origin.mark;
    }
    for (flag, on) in [(FLAG_SO_REUSEADDR, origin.reuse), (FLAG_SO_REUSEPORT, origin.reuseport)] {
        if on {
            opts.flags |= flag;
        } else {
            opts.flags &= !flag;
        }
    }
    if connect {
        record.src = origin.src.or(record.src);
        record.dst = origin.dst.or(record.dst);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tracer_common::options::{FLAG_SO_MARK, FLAG_SO_REUSEADDR};

    use super::*;
    use crate::{event::Header, table::SocketTable};

    const NO_REASONS: &BTreeMap<u32, String> = &BTreeMap::new();

    fn who() -> Context<'static> {
        Context {
            who: Attribution {
                time: jiff::Timestamp::UNIX_EPOCH,
                comm: "envoy".into(),
                netns: Some(4026531840),
            },
            pod: None,
            backend: Backend::Tracepoint,
            reset_reasons: NO_REASONS,
        }
    }

    fn event(errno: i32, payload: Payload) -> KernelEvent {
        KernelEvent {
            header: Header {
                ts_ns: 1,
                pid: 401,
                tid: 402,
                cgroup_id: 9,
                thread: "wrk:worker_0".into(),
                errno,
            },
            payload,
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// The bound address is known from a successful bind() record (`--all`).
    #[test]
    fn connect_error_takes_source_from_bind_when_kernel_had_none() {
        let mut table = SocketTable::new(8);
        let opts = SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEADDR, mark: 0x32030b00 };
        table.apply(&event(0, Payload::Bind { fd: 131, addr: addr("10.0.1.7:40312"), opts, origin: None }));
        let connect = event(
            99,
            Payload::Connect {
                fd: 131,
                dst: addr("52.216.8.19:443"),
                src: None,
                opts: SockOpts::default(),
                sk: 0,
                origin: None,
            },
        );
        let socket = table.apply(&connect).cloned();
        let r = record(&connect, socket.as_ref(), who()).unwrap();
        assert_eq!(r.event, EventName::ConnectError);
        assert_eq!((r.pid, r.tid, r.fd, r.errno), (401, 402, 131, Some(99)));
        assert_eq!((r.comm.as_str(), r.thread.as_str()), ("envoy", "wrk:worker_0"));
        assert_eq!((r.src, r.dst), (addr("10.0.1.7:40312"), addr("52.216.8.19:443")));
        assert_eq!(r.sockopts, opts, "options known from the table when the call carried none");
        assert_eq!((r.netns, r.cgroup_id, r.count, r.asynchronous), (Some(4026531840), 9, 1, false));
    }

    #[test]
    fn kernel_tuple_wins_over_bound_address() {
        let connect = event(
            99,
            Payload::Connect {
                fd: 3,
                dst: addr("[::1]:443"),
                src: addr("[::1]:40312"),
                opts: SockOpts::default(),
                sk: 1,
                origin: None,
            },
        );
        let r = record(&connect, None, who()).unwrap();
        assert_eq!(r.src, addr("[::1]:40312"));
    }

    #[test]
    fn kinds_map_to_event_names() {
        let cases = [
            (
                0,
                Payload::Bind { fd: 1, addr: addr("1.2.3.4:5"), opts: SockOpts::default(), origin: None },
                EventName::Bind,
            ),
            (
                98,
                Payload::Bind { fd: 1, addr: addr("1.2.3.4:5"), opts: SockOpts::default(), origin: None },
                EventName::BindError,
            ),
            (
                111,
                Payload::ConnectAsyncError { fd: 1, src: None, dst: None, opts: SockOpts::default(), sk: 0 },
                EventName::ConnectError,
            ),
            (
                0,
                Payload::Established { fd: 1, src: None, dst: None, opts: SockOpts::default(), sk: 0 },
                EventName::Connect,
            ),
            (
                0,
                Payload::Sockopt {
                    fd: 1,
                    level: 1,
                    optname: 36,
                    optlen: 4,
                    value: Some(7),
                    ret: 0,
                    opts: SockOpts::default(),
                },
                EventName::Sockopt,
            ),
        ];
        for (errno, payload, name) in cases {
            let r = record(&event(errno, payload), None, who()).unwrap();
            assert_eq!(r.event, name);
        }
        assert!(record(&event(0, Payload::Close { fd: 1, reused: false }), None, who()).is_none());
    }

    #[test]
    fn sockopt_names_the_option_set() {
        let payload = Payload::Sockopt {
            fd: 1,
            level: 1,
            optname: 36,
            optlen: 4,
            value: Some(0x32030b00),
            ret: -1,
            opts: SockOpts::default(),
        };
        let r = record(&event(1, payload), None, who()).unwrap();
        assert_eq!(r.sockopt, Some(SockoptCall { flag: FLAG_SO_MARK, value: Some(0x32030b00) }));
        assert_eq!(r.errno, Some(1));
    }

    fn origin(function: &'static str, mark: u32, reuse: bool, src: &str, dst: Option<&str>) -> Origin {
        Origin {
            function,
            ret: -99,
            state: 2,
            reuse,
            reuseport: false,
            mark,
            src: addr(src),
            dst: dst.and_then(addr),
        }
    }

    #[test]
    fn kernel_view_of_a_refused_connect_overrides_options_and_tuple() {
        // SO_MARK and SO_REUSEADDR were set before sockerr started: the table knows nothing.
        let seen =
            origin("__inet_hash_connect", 0x3203_0b00, true, "127.0.0.7:40312", Some("127.0.0.19:443"));
        let payload = Payload::Connect {
            fd: 3,
            dst: addr("127.0.0.19:443"),
            src: None,
            opts: SockOpts::default(),
            sk: 1,
            origin: Some(seen),
        };
        let r = record(&event(99, payload), None, who()).unwrap();
        assert_eq!(r.kernel_fn, Some("__inet_hash_connect"));
        assert_eq!(r.sockopts, SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEADDR, mark: 0x3203_0b00 });
        assert_eq!((r.src, r.dst), (addr("127.0.0.7:40312"), addr("127.0.0.19:443")));
    }

    #[test]
    fn kernel_view_of_a_refused_bind_keeps_the_asked_address() {
        let opts = SockOpts { flags: FLAG_SO_REUSEADDR, mark: 0 };
        // The kernel cleared SO_REUSEADDR (setsockopt(.., 0) sockerr missed) and the
        // socket's address on the way out.
        let seen = origin("inet_csk_get_port", 0, false, "0.0.0.0:0", None);
        let payload = Payload::Bind { fd: 3, addr: addr("127.0.0.19:443"), opts, origin: Some(seen) };
        let r = record(&event(98, payload), None, who()).unwrap();
        assert_eq!(r.kernel_fn, Some("inet_csk_get_port"));
        assert_eq!(r.sockopts, SockOpts::default());
        assert_eq!(r.src, addr("127.0.0.19:443"));
    }

    fn reset_of_fd_5(opts: SockOpts) -> KernelEvent {
        use crate::reset::{ResetOwner, ResetSeen};
        let seen = ResetSeen {
            direction: ResetDirection::Received,
            owner: ResetOwner::Socket,
            fd: 5,
            has_socket: true,
            sk: 0xa000,
            state: None,
            reason: None,
            active: false,
            cookie: None,
            local: addr("127.0.0.1:40000"),
            peer: addr("127.0.0.1:80"),
            opts,
            exchanges: Vec::new(),
        };
        event(0, Payload::Reset(Box::new(seen)))
    }

    /// Without --all no setsockopt() success reaches the table: a reset's options are the
    /// ones the kernel recorded for its owner.
    #[test]
    fn reset_carries_the_kernels_options_when_the_table_knows_none() {
        let kernel = SockOpts { flags: FLAG_SO_MARK, mark: 0x0b00 };
        let r = record(&reset_of_fd_5(kernel), None, who()).unwrap();
        assert_eq!((r.event, r.sockopts), (EventName::RstReceived, kernel));

        // With --all the table saw every call on this very socket, also those after connect().
        let mut table = SocketTable::new(8);
        let later = SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEADDR, mark: 0x0c00 };
        let established = Payload::Established {
            fd: 5,
            src: addr("127.0.0.1:40000"),
            dst: addr("127.0.0.1:80"),
            opts: kernel,
            sk: 0xa000,
        };
        table.apply(&event(0, established));
        let set_later =
            Payload::Sockopt { fd: 5, level: 1, optname: 2, optlen: 4, value: Some(1), ret: 0, opts: later };
        table.apply(&event(0, set_later));
        let reset = reset_of_fd_5(kernel);
        let socket = table.apply(&reset).cloned();
        assert!(socket.is_some(), "the table knows the reset's socket");
        let r = record(&reset, socket.as_ref(), who()).unwrap();
        assert_eq!(r.sockopts, later, "the table's later options win");
    }

    #[test]
    fn async_error_is_flagged() {
        let payload = Payload::ConnectAsyncError {
            fd: 4,
            src: addr("127.0.0.1:40000"),
            dst: addr("127.0.0.19:444"),
            opts: SockOpts::default(),
            sk: 0,
        };
        let r = record(&event(111, payload), None, who()).unwrap();
        assert!(r.asynchronous);
        assert_eq!(r.errno, Some(111));
    }
}
