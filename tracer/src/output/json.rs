//! One JSON object per record and line, as docs/design.md "Record schema" describes:
//! every field always present, `null` where unknown.

use serde::ser::{Serialize, SerializeMap, Serializer};
use tracer_common::SockOpts;

use crate::errno::errno_name;
use crate::mark::CiliumMark;
use crate::output::options::{NamedOption, OptionValue, enabled_options};
use crate::output::reset_json::{AnomalyView, ExchangeView, RstView};
use crate::record::{EventName, Holder, PodIdentity, PortUsage, Record};
use crate::reset::ResetOwner;

/// The record as one line of JSON (without the newline).
pub fn render_json(record: &Record) -> String {
    // Every view below serializes into strings, numbers and string-keyed maps, which
    // serde_json cannot fail on.
    serde_json::to_string(&RecordView::of(record)).expect("record views always serialize")
}

#[derive(serde::Serialize)]
struct RecordView<'a> {
    time: String,
    event: &'static str,
    // null for a reset no traced process owns
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<&'a str>,
    thread: Option<&'a str>,
    fd: Option<i32>,
    errno: Option<i32>,
    error: Option<&'static str>,
    #[serde(rename = "async")]
    asynchronous: bool,
    src: Option<String>,
    dst: Option<String>,
    sockopts: SockoptsView,
    mark: Option<MarkView>,
    sockopt: Option<SockoptView>,
    cause: Option<&'static str>,
    holder: Option<HolderView<'a>>,
    holders: Vec<HolderView<'a>>,
    ports: Option<PortsView>,
    note: Option<&'a str>,
    netns: Option<u64>,
    cgroup_id: u64,
    #[serde(flatten)]
    pod: PodView<'a>,
    rst: Option<RstView<'a>>,
    http_anomaly: Option<AnomalyView<'a>>,
    http_anomalies: Vec<AnomalyView<'a>>,
    payload: Option<Vec<ExchangeView>>,
    kernel_fn: Option<&'static str>,
    backend: &'static str,
}

impl<'a> RecordView<'a> {
    fn of(record: &'a Record) -> Self {
        let call = record.sockopt.map(NamedOption::of_call);
        let holders: Vec<_> = record.holders.iter().map(HolderView::of).collect();
        let reset = record.reset.as_deref();
        let owned = reset.is_none_or(|r| r.owner != ResetOwner::Kernel);
        let anomalies: Vec<_> =
            reset.map(|r| r.anomalies.iter().map(AnomalyView::of).collect()).unwrap_or_default();
        let payload = reset
            .filter(|r| !r.exchanges.is_empty())
            .map(|r| r.exchanges.iter().map(ExchangeView::of).collect());
        Self {
            // RFC 3339 in UTC with microseconds: "2026-11-23T12:53:25.866123Z".
            time: format!("{:.6}", record.time),
            event: record.event.as_str(),
            pid: owned.then_some(record.pid),
            tid: owned.then_some(record.tid),
            comm: owned.then_some(record.comm.as_str()),
            thread: owned.then_some(record.thread.as_str()),
            fd: owned.then_some(record.fd),
            errno: record.errno,
            error: record.errno.and_then(errno_name),
            asynchronous: record.asynchronous,
            src: record.src.map(|addr| addr.to_string()),
            dst: record.dst.map(|addr| addr.to_string()),
            sockopts: SockoptsView(record.sockopts),
            mark: mark_of(record, call).map(MarkView::of),
            sockopt: call.map(|option| SockoptView { name: option.name, value: JsonValue(option.value) }),
            cause: record.cause.map(|cause| cause.as_str()),
            holder: holders.first().cloned(),
            holders,
            ports: record.ports.map(PortsView::of),
            note: record.note.as_deref(),
            netns: record.netns,
            cgroup_id: record.cgroup_id,
            pod: PodView::of(record.pod.as_ref()),
            rst: reset.map(RstView::of),
            http_anomaly: anomalies.first().cloned(),
            http_anomalies: anomalies,
            payload,
            kernel_fn: record.kernel_fn,
            backend: record.backend.as_str(),
        }
    }
}

/// The pod fields of every JSON object that names a process: null where unknown.
#[derive(serde::Serialize)]
pub(crate) struct PodView<'a> {
    pod: Option<&'a str>,
    namespace: Option<&'a str>,
    container: Option<&'a str>,
    pod_uid: Option<&'a str>,
    container_id: Option<&'a str>,
}

impl<'a> PodView<'a> {
    pub(crate) fn of(pod: Option<&'a PodIdentity>) -> Self {
        let field =
            |field: fn(&'a PodIdentity) -> &'a Option<String>| pod.and_then(|pod| field(pod).as_deref());
        Self {
            pod: field(|p| &p.pod),
            namespace: field(|p| &p.namespace),
            container: field(|p| &p.container),
            pod_uid: field(|p| &p.pod_uid),
            container_id: field(|p| &p.container_id),
        }
    }
}

/// The mark the record is about: the one a setsockopt(SO_MARK) set, else the socket's.
fn mark_of(record: &Record, call: Option<NamedOption>) -> Option<CiliumMark> {
    let call_mark = call.filter(|option| record.event == EventName::Sockopt && is_mark(option.value));
    let mark = call_mark.or_else(|| enabled_options(record.sockopts).find(|option| is_mark(option.value)))?;
    mark.value.cilium_mark()
}

fn is_mark(value: OptionValue) -> bool {
    matches!(value, OptionValue::Mark(_))
}

/// `{"SO_MARK":"0x32030b00","SO_REUSEADDR":1}`, in the renderers' option order.
pub(crate) struct SockoptsView(pub SockOpts);

impl Serialize for SockoptsView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for option in enabled_options(self.0) {
            map.serialize_entry(option.name, &JsonValue(option.value))?;
        }
        map.end()
    }
}

/// A mark as its hex string (as in the text line), a boolean option as its integer.
#[derive(Clone, Copy)]
struct JsonValue(OptionValue);

impl Serialize for JsonValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            // "?": the kernel side could not read the value; a string, as a mark is.
            OptionValue::Mark(_) | OptionValue::Unread => serializer.collect_str(&self.0),
            OptionValue::Int(value) => serializer.serialize_u32(value),
        }
    }
}

#[derive(serde::Serialize)]
struct SockoptView {
    name: &'static str,
    value: JsonValue,
}

#[derive(serde::Serialize)]
pub(crate) struct MarkView {
    magic: String,
    magic_name: &'static str,
    identity: Option<u32>,
    cluster: Option<u32>,
    endpoint_id: Option<u32>,
}

impl MarkView {
    /// Cilium's reading of the socket's SO_MARK, when it is set and looks like Cilium's.
    pub(crate) fn of_socket(opts: SockOpts) -> Option<Self> {
        enabled_options(opts).find_map(|option| option.value.cilium_mark()).map(Self::of)
    }

    fn of(mark: CiliumMark) -> Self {
        Self {
            magic: format!("{:#06x}", mark.magic),
            magic_name: mark.magic_name,
            identity: mark.identity,
            cluster: mark.cluster,
            endpoint_id: mark.endpoint_id,
        }
    }
}

#[derive(Clone, serde::Serialize)]
struct HolderView<'a> {
    pid: Option<u32>,
    comm: Option<&'a str>,
    fd: Option<i32>,
    inode: u64,
    state: &'static str,
    src: String,
    dst: Option<String>,
    timer_ms: Option<u64>,
}

impl<'a> HolderView<'a> {
    fn of(holder: &'a Holder) -> Self {
        let owner = holder.owner.as_ref();
        Self {
            pid: owner.map(|owner| owner.pid),
            comm: owner.map(|owner| owner.comm.as_str()),
            fd: owner.map(|owner| owner.fd),
            inode: holder.inode,
            state: holder.state.as_str(),
            src: holder.src.to_string(),
            dst: holder.dst.map(|addr| addr.to_string()),
            timer_ms: holder.timer_ms,
        }
    }
}

#[derive(serde::Serialize)]
struct PortsView {
    range: [u16; 2],
    in_use: u32,
}

impl PortsView {
    fn of(ports: PortUsage) -> Self {
        Self { range: [ports.range.0, ports.range.1], in_use: ports.in_use }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tracer_common::SockOpts;
    use tracer_common::options::{FLAG_IP_FREEBIND, FLAG_SO_MARK};

    use super::*;
    use crate::record::{Cause, SockoptCall, TcpState};
    use crate::testing::{addr, cilium_incident, record};

    fn parsed(record: &Record) -> Value {
        let line = render_json(record);
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(&line).expect("valid JSON")
    }

    #[test]
    fn cilium_incident_object() {
        let object = parsed(&cilium_incident());
        assert_eq!(
            object,
            json!({
                "time": "2026-11-23T12:53:25.866123Z",
                "event": "connect_error",
                "pid": 401,
                "tid": 401,
                "comm": "envoy",
                "thread": "envoy",
                "fd": 131,
                "errno": 99,
                "error": "EADDRNOTAVAIL",
                "async": false,
                "src": "10.0.1.7:40312",
                "dst": "52.216.8.19:443",
                "sockopts": {"SO_MARK": "0x32030b00", "SO_REUSEADDR": 1},
                "mark": {
                    "magic": "0x0b00",
                    "magic_name": "proxy-egress",
                    "identity": 12803,
                    "cluster": 0,
                    "endpoint_id": null
                },
                "sockopt": null,
                "cause": "tuple_in_use",
                "holder": {
                    "pid": 401, "comm": "envoy", "fd": 77, "inode": 4242, "state": "ESTABLISHED",
                    "src": "10.0.1.7:40312", "dst": "52.216.8.19:443", "timer_ms": null
                },
                "holders": [{
                    "pid": 401, "comm": "envoy", "fd": 77, "inode": 4242, "state": "ESTABLISHED",
                    "src": "10.0.1.7:40312", "dst": "52.216.8.19:443", "timer_ms": null
                }],
                "ports": null,
                "note": null,
                "netns": 4026531840u64,
                "cgroup_id": 1,
                "pod": null, "namespace": null, "container": null, "pod_uid": null, "container_id": null,
                "rst": null, "http_anomaly": null, "http_anomalies": [], "payload": null,
                "kernel_fn": null,
                "backend": "tracepoint"
            })
        );
    }

    #[test]
    fn kprobe_records_name_the_kernel_function() {
        let refused = Record {
            kernel_fn: Some("__inet_hash_connect"),
            backend: crate::record::Backend::Kprobe,
            ..cilium_incident()
        };
        let object = parsed(&refused);
        assert_eq!(object["kernel_fn"], "__inet_hash_connect");
        assert_eq!(object["backend"], "kprobe");
    }

    /// The whole line, keys in schema order: `Value` comparisons above ignore the order.
    #[test]
    fn the_line_keeps_the_schema_order() {
        let pod = PodIdentity {
            pod_uid: Some("u-1".into()),
            container_id: Some("c-1".into()),
            pod: Some("envoy-0".into()),
            namespace: Some("edge".into()),
            container: None,
        };
        let line = render_json(&Record { pod: Some(pod), ..cilium_incident() });
        assert_eq!(
            line,
            concat!(
                r#"{"time":"2026-11-23T12:53:25.866123Z","event":"connect_error","pid":401,"tid":401,"#,
                r#""comm":"envoy","thread":"envoy","fd":131,"errno":99,"error":"EADDRNOTAVAIL","async":false,"#,
                r#""src":"10.0.1.7:40312","dst":"52.216.8.19:443","#,
                r#""sockopts":{"SO_MARK":"0x32030b00","SO_REUSEADDR":1},"#,
                r#""mark":{"magic":"0x0b00","magic_name":"proxy-egress","identity":12803,"cluster":0,"endpoint_id":null},"#,
                r#""sockopt":null,"cause":"tuple_in_use","#,
                r#""holder":{"pid":401,"comm":"envoy","fd":77,"inode":4242,"state":"ESTABLISHED","src":"10.0.1.7:40312","dst":"52.216.8.19:443","timer_ms":null},"#,
                r#""holders":[{"pid":401,"comm":"envoy","fd":77,"inode":4242,"state":"ESTABLISHED","src":"10.0.1.7:40312","dst":"52.216.8.19:443","timer_ms":null}],"#,
                r#""ports":null,"note":null,"netns":4026531840,"cgroup_id":1,"#,
                r#""pod":"envoy-0","namespace":"edge","container":null,"pod_uid":"u-1","container_id":"c-1","#,
                r#""rst":null,"http_anomaly":null,"http_anomalies":[],"payload":null,"kernel_fn":null,"backend":"tracepoint"}"#,
            )
        );
    }

    #[test]
    fn sockopts_keep_the_display_order() {
        let line = render_json(&cilium_incident());
        assert!(line.contains(r#""sockopts":{"SO_MARK":"0x32030b00","SO_REUSEADDR":1}"#), "{line}");
    }

    #[test]
    fn unknowns_are_null_and_lists_empty() {
        let object = parsed(&record(EventName::Bind));
        for field in
            ["errno", "error", "src", "dst", "mark", "sockopt", "cause", "holder", "ports", "note", "netns"]
        {
            assert_eq!(object[field], Value::Null, "{field}");
        }
        assert_eq!(object["holders"], json!([]));
        assert_eq!(object["sockopts"], json!({}));
        assert_eq!(object["event"], "bind");
    }

    #[test]
    fn time_wait_holder_has_no_owner() {
        let failed = Record {
            errno: Some(99),
            asynchronous: true,
            src: Some(addr("[::1]:40313")),
            dst: Some(addr("[::1]:443")),
            cause: Some(Cause::TupleInUse),
            holders: vec![Holder {
                state: TcpState::TimeWait,
                src: addr("[::1]:40313"),
                dst: Some(addr("[::1]:443")),
                inode: 0,
                owner: None,
                timer_ms: Some(59_200),
            }],
            note: Some("TIME_WAIT sockets have no owner".to_owned()),
            ..record(EventName::ConnectError)
        };
        let object = parsed(&failed);
        assert_eq!(object["async"], true);
        assert_eq!(object["src"], "[::1]:40313");
        assert_eq!(
            object["holder"],
            json!({
                "pid": null, "comm": null, "fd": null, "inode": 0, "state": "TIME_WAIT",
                "src": "[::1]:40313", "dst": "[::1]:443", "timer_ms": 59200
            })
        );
        assert_eq!(object["note"], "TIME_WAIT sockets have no owner");
    }

    #[test]
    fn ports_and_every_holder() {
        let mut second = cilium_incident().holders[0].clone();
        second.owner = None;
        let failed = Record {
            ports: Some(PortUsage { range: (40000, 40007), in_use: 8 }),
            holders: vec![cilium_incident().holders[0].clone(), second],
            ..cilium_incident()
        };
        let object = parsed(&failed);
        assert_eq!(object["ports"], json!({"range": [40000, 40007], "in_use": 8}));
        assert_eq!(object["holders"].as_array().map(Vec::len), Some(2));
        assert_eq!(object["holder"], object["holders"][0]);
        assert_eq!(object["holders"][1]["pid"], Value::Null);
    }

    #[test]
    fn sockopt_object_and_mark_of_the_call() {
        let set = Record {
            sockopts: SockOpts { flags: FLAG_SO_MARK, mark: 0x0b00 },
            sockopt: Some(SockoptCall { flag: FLAG_SO_MARK, value: Some(0x3203_0a00) }),
            ..record(EventName::Sockopt)
        };
        let object = parsed(&set);
        assert_eq!(object["sockopt"], json!({"name": "SO_MARK", "value": "0x32030a00"}));
        assert_eq!(object["mark"]["magic_name"], "proxy-ingress");
        assert_eq!(object["mark"]["identity"], 12803);

        let refused = Record {
            errno: Some(1),
            sockopt: Some(SockoptCall { flag: FLAG_IP_FREEBIND, value: Some(1) }),
            ..record(EventName::Sockopt)
        };
        let object = parsed(&refused);
        assert_eq!(object["sockopt"], json!({"name": "IP_FREEBIND", "value": 1}));
        assert_eq!(object["error"], "EPERM");
        assert_eq!(object["mark"], Value::Null);
    }

    #[test]
    fn foreign_mark_is_listed_without_decoding() {
        let istio =
            Record { sockopts: SockOpts { flags: FLAG_SO_MARK, mark: 0x539 }, ..record(EventName::Connect) };
        let object = parsed(&istio);
        assert_eq!(object["sockopts"], json!({"SO_MARK": "0x00000539"}));
        assert_eq!(object["mark"], Value::Null);
    }

    #[test]
    fn reset_with_anomaly_and_payload() {
        let object = parsed(&crate::testing::istio_reset());
        assert_eq!(object["event"], "rst_sent");
        assert_eq!((object["pid"].clone(), object["fd"].clone()), (json!(812), json!(23)));
        assert_eq!(
            object["rst"],
            json!({"direction": "sent", "by": "socket", "socket": true, "state": "CLOSE", "reason": "TCP_STATE",
                   "reason_code": 14, "active": true, "sock_cookie": null, "last_error": null})
        );
        let anomaly = json!({"kind": "duplicate_transfer_encoding", "values": ["Chunked", "chunked"],
                             "message": "response", "direction": "received", "fd": 24, "peer": "127.0.0.1:8080"});
        assert_eq!(object["http_anomaly"], anomaly);
        assert_eq!(object["http_anomalies"], json!([anomaly]));
        assert_eq!(object["payload"][0]["socket"], "related");
        assert_eq!(object["payload"][0]["sent"], "GET /wrong HTTP/1.1\r\n\r\n");
        assert_eq!(object["payload"][0]["received_bytes"], 75, "the response head is 75 bytes");
    }

    #[test]
    fn unattributed_reset_has_null_process() {
        let mut record = crate::testing::istio_reset();
        let reset = record.reset.as_mut().unwrap();
        reset.owner = crate::reset::ResetOwner::Kernel;
        reset.exchanges.clear();
        reset.anomalies.clear();
        let object = parsed(&record);
        for field in ["pid", "tid", "comm", "thread", "fd", "payload", "http_anomaly"] {
            assert_eq!(object[field], Value::Null, "{field}");
        }
        assert_eq!(object["rst"]["by"], "kernel");
        assert_eq!(object["src"], "127.0.0.1:15001");
    }

    #[test]
    fn text_in_fields_is_escaped() {
        let odd = Record {
            comm: "a\"b\\c".to_owned(),
            note: Some("line\nbreak".to_owned()),
            ..record(EventName::Bind)
        };
        let object = parsed(&odd);
        assert_eq!(object["comm"], "a\"b\\c");
        assert_eq!(object["note"], "line\nbreak");
    }
}
