//! One line of text per record, for people watching a terminal.
//!
//! Failures read `TIME ERRNO verb process fd=N src -> dst opts=... cause=... held-by=...`,
//! successes drop the errno, setsockopt() records show the option set instead of
//! addresses. Optional parts appear only when known, so a line stays short.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::fmt::friendly::{FractionalUnit, Spacing, SpanPrinter};
use jiff::tz::TimeZone;

use crate::errno::errno_name;
use crate::mark::CiliumMark;
use crate::output::options::{NamedOption, OptionValue, enabled_options};
use crate::record::{EventName, Holder, PodIdentity, PortUsage, Record, TcpState};

/// Renders records as text lines in a time zone.
#[derive(Clone, Debug)]
pub struct TextRenderer {
    tz: TimeZone,
    fold_window: Duration,
}

impl TextRenderer {
    pub fn new(tz: TimeZone, fold_window: Duration) -> Self {
        Self { tz, fold_window }
    }

    /// Local time as `TZ` (or the system's zone) says.
    pub fn local(fold_window: Duration) -> Self {
        Self::new(TimeZone::system(), fold_window)
    }

    /// The window repeats are folded in, which the count suffix quotes.
    pub fn fold_window(&self) -> Duration {
        self.fold_window
    }

    pub fn render(&self, record: &Record) -> String {
        Line { renderer: self, record }.to_string()
    }

    pub(crate) fn clock(&self, time: Timestamp) -> impl fmt::Display {
        self.tz.to_datetime(time).strftime("%H:%M:%S%.3f")
    }
}

struct Line<'a> {
    renderer: &'a TextRenderer,
    record: &'a Record,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = self.record;
        write!(f, "{}", self.renderer.clock(record.time))?;
        if let Some(reset) = &record.reset {
            let process = Process(record);
            write!(f, "{}", super::reset_text::ResetLine { record, reset, process: &process })?;
            if record.count > 1 {
                write!(f, " ({} in {})", record.count, compact(self.renderer.fold_window))?;
            }
            return Ok(());
        }
        if let Some(errno) = record.errno {
            match errno_name(errno) {
                Some(name) => write!(f, " {name}")?,
                None => write!(f, " errno={errno}")?,
            }
        }
        write!(f, " {} {} fd={}", verb(record), Process(record), record.fd)?;
        if record.event == EventName::Sockopt {
            if let Some(call) = record.sockopt {
                let option = NamedOption::of_call(call);
                write!(f, " {}={}{}", option.name, option.value, MarkHint(option.value))?;
            }
        } else {
            write!(f, "{}", Addresses(record.src, record.dst))?;
            write!(f, " opts={}", Options(record))?;
        }
        if let Some(function) = record.kernel_fn {
            write!(f, " in {function}")?;
        }
        if let Some(cause) = record.cause {
            write!(f, " cause={}", cause.as_str())?;
        }
        if let Some(holder) = record.holders.first() {
            write!(f, " held-by={}", HeldBy { holder, record })?;
            if record.holders.len() > 1 {
                write!(f, " +{} more", record.holders.len() - 1)?;
            }
        }
        if let Some(ports) = record.ports {
            write!(f, " {}", Ports(ports))?;
        }
        if let Some(pod) = &record.pod {
            write!(f, "{}", PodLabel(pod))?;
        }
        if let Some(note) = &record.note {
            write!(f, " note={}", Quoted(note))?;
        }
        if record.count > 1 {
            write!(f, " ({} in {})", record.count, compact(self.renderer.fold_window))?;
        }
        Ok(())
    }
}

fn verb(record: &Record) -> &'static str {
    match record.event {
        EventName::ConnectError if record.asynchronous => "connect(async)",
        EventName::ConnectError | EventName::Connect => "connect",
        EventName::BindError | EventName::Bind => "bind",
        EventName::Sockopt => "setsockopt",
        EventName::RstSent | EventName::RstReceived => "RST",
    }
}

/// `envoy[401]`, or `envoy[401/wrk:worker_3]` when a named thread made the call.
struct Process<'a>(&'a Record);

impl fmt::Display for Process<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Record { comm, pid, thread, .. } = self.0;
        if thread.is_empty() || thread == comm {
            write!(f, "{comm}[{pid}]")
        } else {
            write!(f, "{comm}[{pid}/{thread}]")
        }
    }
}

/// ` src -> dst`, ` src` (bind) or ` -> dst` (no source yet).
struct Addresses(Option<SocketAddr>, Option<SocketAddr>);

impl fmt::Display for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(src), Some(dst)) => write!(f, " {src} -> {dst}"),
            (Some(src), None) => write!(f, " {src}"),
            (None, Some(dst)) => write!(f, " -> {dst}"),
            (None, None) => Ok(()),
        }
    }
}

/// `SO_MARK=0x32030b00(cilium id=12803),SO_REUSEADDR`, or `-` for none.
struct Options<'a>(&'a Record);

impl fmt::Display for Options<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for option in enabled_options(self.0.sockopts) {
            if any {
                f.write_str(",")?;
            }
            any = true;
            match option.value {
                // Enabled booleans: the name says it all.
                OptionValue::Int(_) => f.write_str(option.name)?,
                OptionValue::Mark(_) | OptionValue::Unread => {
                    write!(f, "{}={}{}", option.name, option.value, MarkHint(option.value))?
                }
            }
        }
        if !any {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// `(cilium id=12803)` after a mark Cilium would have set, else nothing.
struct MarkHint(OptionValue);

impl fmt::Display for MarkHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(CiliumMark { magic_name, identity, cluster, endpoint_id, .. }) = self.0.cilium_mark() else {
            return Ok(());
        };
        match (identity, endpoint_id) {
            // The identity is what a reader looks up; the magic adds little beside it.
            (Some(identity), _) if identity != 0 => {
                write!(f, "(cilium id={identity}")?;
                match cluster {
                    Some(cluster) if cluster != 0 => write!(f, " cluster={cluster})"),
                    _ => f.write_str(")"),
                }
            }
            (_, Some(endpoint)) => write!(f, "(cilium {magic_name} endpoint={endpoint})"),
            _ => write!(f, "(cilium {magic_name})"),
        }
    }
}

/// The socket holding what the call wanted: its owner and state, its tuple when it is
/// not the record's own, and how long a TIME_WAIT socket still stands in the way.
struct HeldBy<'a> {
    holder: &'a Holder,
    record: &'a Record,
}

impl fmt::Display for HeldBy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Holder { state, src, dst, inode, owner, timer_ms } = self.holder;
        let state_name = state.as_str();
        match (owner, state) {
            (Some(owner), _) => write!(f, "{}[{}] fd={} {state_name}", owner.comm, owner.pid, owner.fd)?,
            // TIME_WAIT sockets have no file, hence no inode and no owner to name.
            (None, TcpState::TimeWait) => f.write_str(state_name)?,
            (None, _) => write!(f, "inode {inode} {state_name}")?,
        }
        if (Some(*src), *dst) != (self.record.src, self.record.dst) {
            match dst {
                Some(dst) => write!(f, " {src}->{dst}")?,
                None => write!(f, " {src}")?,
            }
        }
        if let (TcpState::TimeWait, Some(timer_ms)) = (state, timer_ms) {
            write!(f, " expires-in={}", seconds(Duration::from_millis(*timer_ms)))?;
        }
        if owner.is_none() && *state != TcpState::TimeWait {
            f.write_str(" (owner not found)")?;
        }
        Ok(())
    }
}

/// ` pod=<namespace>/<name>` when the API named the pod, ` pod-uid=<uid>` when only the
/// cgroup did, else nothing.
pub(crate) struct PodLabel<'a>(pub &'a PodIdentity);

impl fmt::Display for PodLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            PodIdentity { pod: Some(pod), namespace: Some(namespace), .. } => {
                write!(f, " pod={namespace}/{pod}")
            }
            PodIdentity { pod_uid: Some(uid), .. } => write!(f, " pod-uid={uid}"),
            _ => Ok(()),
        }
    }
}

/// `ports=8/8 in use (ip_local_port_range 40000-40007)`.
struct Ports(PortUsage);

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let PortUsage { range: (low, high), in_use } = self.0;
        write!(f, "ports={in_use}/{} in use (ip_local_port_range {low}-{high})", self.0.range_size())
    }
}

/// The text as is when it is one word, else quoted so the line still splits on spaces.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty() && !self.0.chars().any(|c| c.is_whitespace() || c == '"' || c == '=');
        if plain { f.write_str(self.0) } else { write!(f, "{:?}", self.0) }
    }
}

/// `500ms`, `1s 500ms`.
fn compact(duration: Duration) -> String {
    SpanPrinter::new().unsigned_duration_to_string(&duration)
}

/// `59.2s`, without spaces so it stays one `key=value` word.
fn seconds(duration: Duration) -> String {
    SpanPrinter::new()
        .spacing(Spacing::None)
        .fractional(Some(FractionalUnit::Second))
        .precision(Some(1))
        .unsigned_duration_to_string(&duration)
}

#[cfg(test)]
mod tests {
    use tracer_common::SockOpts;
    use tracer_common::options::{FLAG_IP_TRANSPARENT, FLAG_SO_MARK, FLAG_SO_REUSEADDR, FLAG_SO_REUSEPORT};

    use super::*;
    use crate::record::{Cause, HolderOwner, SockoptCall};
    use crate::testing::{addr, cilium_incident, record};

    fn utc(fold_window_ms: u64) -> TextRenderer {
        TextRenderer::new(TimeZone::UTC, Duration::from_millis(fold_window_ms))
    }

    fn time_wait(src: &str, dst: &str, timer_ms: u64) -> Holder {
        Holder {
            state: TcpState::TimeWait,
            src: addr(src),
            dst: Some(addr(dst)),
            inode: 0,
            owner: None,
            timer_ms: Some(timer_ms),
        }
    }

    #[test]
    fn cilium_incident_line() {
        let folded = Record { count: 4, ..cilium_incident() };
        assert_eq!(
            utc(500).render(&folded),
            "12:53:25.866 EADDRNOTAVAIL connect envoy[401] fd=131 10.0.1.7:40312 -> 52.216.8.19:443 \
             opts=SO_MARK=0x32030b00(cilium id=12803),SO_REUSEADDR cause=tuple_in_use \
             held-by=envoy[401] fd=77 ESTABLISHED (4 in 500ms)"
        );
    }

    #[test]
    fn kernel_function_shows_before_the_cause() {
        let refused = Record { kernel_fn: Some("__inet_hash_connect"), ..cilium_incident() };
        let line = utc(500).render(&refused);
        assert!(
            line.contains("opts=SO_MARK=0x32030b00(cilium id=12803),SO_REUSEADDR in __inet_hash_connect cause=tuple_in_use"),
            "{line}"
        );
    }

    #[test]
    fn time_is_in_the_given_zone() {
        let one_hour_east = TimeZone::fixed(jiff::tz::offset(1));
        let line = TextRenderer::new(one_hour_east, Duration::ZERO).render(&cilium_incident());
        assert!(line.starts_with("13:53:25.866 EADDRNOTAVAIL"), "{line}");
    }

    #[test]
    fn single_records_have_no_count() {
        let line = utc(500).render(&cilium_incident());
        assert!(line.ends_with("held-by=envoy[401] fd=77 ESTABLISHED"), "{line}");
    }

    #[test]
    fn bind_error_shows_the_local_address() {
        let failed = Record {
            pid: 9,
            tid: 9,
            comm: "proxy".to_owned(),
            thread: "proxy".to_owned(),
            fd: 5,
            errno: Some(98),
            src: Some(addr("127.0.0.19:443")),
            cause: Some(Cause::PortInUse),
            holders: vec![Holder {
                state: TcpState::Listen,
                src: addr("0.0.0.0:443"),
                dst: None,
                inode: 777,
                owner: Some(HolderOwner { pid: 12, comm: "nginx".to_owned(), fd: 6 }),
                timer_ms: None,
            }],
            ..record(EventName::BindError)
        };
        assert_eq!(
            utc(500).render(&failed),
            "12:53:25.866 EADDRINUSE bind proxy[9] fd=5 127.0.0.19:443 opts=- cause=port_in_use \
             held-by=nginx[12] fd=6 LISTEN 0.0.0.0:443"
        );
    }

    #[test]
    fn async_connect_error_is_marked() {
        let failed = Record {
            errno: Some(111),
            asynchronous: true,
            src: Some(addr("10.0.1.7:40400")),
            dst: Some(addr("10.0.2.9:8080")),
            cause: Some(Cause::ConnectionRefused),
            ..record(EventName::ConnectError)
        };
        assert_eq!(
            utc(500).render(&failed),
            "12:53:25.866 ECONNREFUSED connect(async) envoy[401] fd=131 10.0.1.7:40400 -> 10.0.2.9:8080 \
             opts=- cause=connection_refused"
        );
    }

    #[test]
    fn time_wait_holder_has_its_tuple_and_expiry() {
        let failed = Record {
            errno: Some(99),
            src: Some(addr("127.0.0.7:40313")),
            dst: Some(addr("127.0.0.19:443")),
            sockopts: SockOpts { flags: FLAG_SO_REUSEADDR, mark: 0 },
            cause: Some(Cause::TupleInUse),
            holders: vec![time_wait("127.0.0.7:40313", "127.0.0.19:8443", 59_200)],
            ..record(EventName::ConnectError)
        };
        let line = utc(500).render(&failed);
        assert!(
            line.ends_with(
                "opts=SO_REUSEADDR cause=tuple_in_use held-by=TIME_WAIT 127.0.0.7:40313->127.0.0.19:8443 \
                 expires-in=59.2s"
            ),
            "{line}"
        );
    }

    #[test]
    fn holder_tuple_equal_to_the_records_is_left_out() {
        let failed = Record {
            errno: Some(99),
            src: Some(addr("127.0.0.7:40313")),
            dst: Some(addr("127.0.0.19:443")),
            holders: vec![time_wait("127.0.0.7:40313", "127.0.0.19:443", 60_000)],
            ..record(EventName::ConnectError)
        };
        let line = utc(500).render(&failed);
        assert!(line.ends_with("opts=- held-by=TIME_WAIT expires-in=1m0.0s"), "{line}");
    }

    #[test]
    fn holder_without_owner_and_more_holders() {
        let owned_elsewhere = Holder {
            state: TcpState::Established,
            src: addr("10.0.1.7:40312"),
            dst: Some(addr("52.216.8.19:443")),
            inode: 12345,
            owner: None,
            timer_ms: None,
        };
        let failed = Record {
            holders: vec![owned_elsewhere.clone(), owned_elsewhere.clone(), owned_elsewhere],
            note: Some("holder's process exited".to_owned()),
            ..cilium_incident()
        };
        let line = utc(500).render(&failed);
        assert!(
            line.ends_with(
                "cause=tuple_in_use held-by=inode 12345 ESTABLISHED (owner not found) +2 more \
                 note=\"holder's process exited\""
            ),
            "{line}"
        );
    }

    #[test]
    fn ephemeral_exhaustion_counts_ports() {
        let failed = Record {
            errno: Some(99),
            dst: Some(addr("10.0.2.9:8080")),
            cause: Some(Cause::EphemeralPortsExhausted),
            ports: Some(PortUsage { range: (40000, 40007), in_use: 8 }),
            ..record(EventName::ConnectError)
        };
        assert_eq!(
            utc(500).render(&failed),
            "12:53:25.866 EADDRNOTAVAIL connect envoy[401] fd=131 -> 10.0.2.9:8080 opts=- \
             cause=ephemeral_ports_exhausted ports=8/8 in use (ip_local_port_range 40000-40007)"
        );
    }

    #[test]
    fn one_word_notes_are_not_quoted() {
        let failed =
            Record { cause: Some(Cause::Unknown), note: Some("no-holder".to_owned()), ..cilium_incident() };
        assert!(utc(500).render(&failed).contains("cause=unknown held-by="));
        let failed = Record { holders: Vec::new(), ..failed };
        assert!(utc(500).render(&failed).ends_with("cause=unknown note=no-holder"));
    }

    #[test]
    fn sockopt_lines_show_the_option_set() {
        let set = Record {
            sockopt: Some(SockoptCall { flag: FLAG_SO_MARK, value: Some(0x3203_0b00) }),
            ..record(EventName::Sockopt)
        };
        assert_eq!(
            utc(500).render(&set),
            "12:53:25.866 setsockopt envoy[401] fd=131 SO_MARK=0x32030b00(cilium id=12803)"
        );
        let refused = Record {
            errno: Some(1),
            sockopt: Some(SockoptCall { flag: FLAG_IP_TRANSPARENT, value: Some(1) }),
            ..record(EventName::Sockopt)
        };
        assert_eq!(
            utc(500).render(&refused),
            "12:53:25.866 EPERM setsockopt envoy[401] fd=131 IP_TRANSPARENT=1"
        );
    }

    #[test]
    fn successes_have_no_errno() {
        let opts = SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEPORT, mark: 0x0b00 };
        let connected = Record {
            src: Some(addr("[fd00::7]:40312")),
            dst: Some(addr("[::1]:443")),
            sockopts: opts,
            ..record(EventName::Connect)
        };
        assert_eq!(
            utc(500).render(&connected),
            "12:53:25.866 connect envoy[401] fd=131 [fd00::7]:40312 -> [::1]:443 \
             opts=SO_MARK=0x00000b00(cilium proxy-egress),SO_REUSEPORT"
        );
        let bound = Record { src: Some(addr("127.0.0.19:443")), sockopts: opts, ..record(EventName::Bind) };
        assert_eq!(
            utc(500).render(&bound),
            "12:53:25.866 bind envoy[401] fd=131 127.0.0.19:443 opts=SO_MARK=0x00000b00(cilium proxy-egress),SO_REUSEPORT"
        );
    }

    #[test]
    fn thread_name_follows_the_pid() {
        let worker = Record { tid: 433, thread: "wrk:worker_3".to_owned(), ..cilium_incident() };
        assert!(utc(500).render(&worker).contains(" connect envoy[401/wrk:worker_3] fd=131 "));
    }

    #[test]
    fn marks_foreign_to_cilium_get_no_hint_and_clusters_show() {
        let istio = Record { sockopts: SockOpts { flags: FLAG_SO_MARK, mark: 0x539 }, ..cilium_incident() };
        assert!(utc(500).render(&istio).contains(" opts=SO_MARK=0x00000539 cause="));
        let remote =
            Record { sockopts: SockOpts { flags: FLAG_SO_MARK, mark: 0x3203_0b2a }, ..cilium_incident() };
        assert!(utc(500).render(&remote).contains("opts=SO_MARK=0x32030b2a(cilium id=2765315 cluster=42) "));
        let epid =
            Record { sockopts: SockOpts { flags: FLAG_SO_MARK, mark: 0x0007_0900 }, ..cilium_incident() };
        assert!(utc(500).render(&epid).contains("(cilium proxy-egress-epid endpoint=7) "));
    }

    #[test]
    fn unnamed_errno_shows_its_number() {
        let failed = Record { errno: Some(4000), ..cilium_incident() };
        assert!(utc(500).render(&failed).starts_with("12:53:25.866 errno=4000 connect "));
    }

    #[test]
    fn long_fold_windows_read_naturally() {
        let folded = Record { count: 12, ..cilium_incident() };
        assert!(utc(1500).render(&folded).ends_with(" (12 in 1s 500ms)"));
    }

    #[test]
    fn pod_is_named_when_known() {
        let uid = "8b9f4a3e-2c1d-4e5f-9a7b-6c5d4e3f2a1b";
        let ids_only = PodIdentity {
            pod_uid: Some(uid.into()),
            container_id: Some("3f4e".into()),
            ..Default::default()
        };
        let named = PodIdentity {
            pod: Some("web-0".into()),
            namespace: Some("shop".into()),
            container: Some("istio-proxy".into()),
            ..ids_only.clone()
        };
        let line = |pod: Option<PodIdentity>| utc(500).render(&Record { pod, count: 4, ..cilium_incident() });
        assert!(line(Some(named)).ends_with("ESTABLISHED pod=shop/web-0 (4 in 500ms)"), "{}", line(None));
        assert!(line(Some(ids_only)).ends_with(&format!("ESTABLISHED pod-uid={uid} (4 in 500ms)")));
        let container_only = PodIdentity { container_id: Some("3f4e".into()), ..Default::default() };
        assert_eq!(line(Some(container_only)), line(None));
    }
}
