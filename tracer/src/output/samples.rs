//! What the once-a-second samplers report, as a text line and a JSON object:
//! `listen_overflow` (a [`ListenOverflow`]: the drops of one listener in one sampling
//! interval) and `socket_drop` (a [`SocketDrop`]: one (socket, reason) in one interval,
//! already folded by the kernel and `drops::DropFold`). Both come folded, so neither
//! form folds them further.

use std::{fmt, net::SocketAddr};

use super::{TextRenderer, json::PodView, text::PodLabel};
use crate::{drops::SocketDrop, listen::ListenOverflow};

/// Who and when, the opening fields of both JSON objects.
#[derive(serde::Serialize)]
struct TaskView<'a> {
    time: String,
    event: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    fd: i32,
}

impl<'a> TaskView<'a> {
    fn of(time: jiff::Timestamp, event: &'static str, pid: u32, tid: u32, comm: &'a str, fd: i32) -> Self {
        Self { time: format!("{time:.6}"), event, pid, tid, comm, fd }
    }
}

/// Whole milliseconds, saturated.
fn millis(interval: std::time::Duration) -> u64 {
    u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)
}

/// Strings, numbers, booleans and nulls only: serde_json cannot fail on them.
fn to_json(view: &impl serde::Serialize) -> String {
    serde_json::to_string(view).expect("sample views always serialize")
}

/// `12:53:25.866 LISTEN OVERFLOW haproxy[412] fd=5 127.0.0.1:8080 queue=3/2 dropped=26 in 1s`
pub fn overflow_text(renderer: &TextRenderer, overflow: &ListenOverflow) -> String {
    let owner = &overflow.owner;
    let mut line = format!(
        "{} LISTEN OVERFLOW {}[{}] fd={} {} queue={}/{} dropped={} in {}",
        renderer.clock(overflow.time),
        owner.comm,
        owner.pid,
        owner.fd,
        overflow.local,
        overflow.queued,
        overflow.backlog,
        overflow.dropped,
        Interval(overflow.interval),
    );
    if let Some(pod) = &owner.pod {
        line.push_str(&PodLabel(pod).to_string());
    }
    line
}

/// Whole seconds when the interval is close to one (the sampling period), else ms.
struct Interval(std::time::Duration);

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms >= 950 { write!(f, "{}s", (ms + 500) / 1000) } else { write!(f, "{ms}ms") }
    }
}

#[derive(serde::Serialize)]
struct OverflowView<'a> {
    #[serde(flatten)]
    task: TaskView<'a>,
    local: String,
    queue: u32,
    backlog: u32,
    dropped: u64,
    interval_ms: u64,
    /// The dropped peers: no kernel sockerr supports names them (see docs/design.md).
    peer: Option<String>,
    inode: u64,
    netns: Option<u64>,
    cgroup_id: u64,
    #[serde(flatten)]
    pod: PodView<'a>,
    signal: &'static str,
}

pub fn overflow_json(overflow: &ListenOverflow) -> String {
    let owner = &overflow.owner;
    to_json(&OverflowView {
        task: TaskView::of(overflow.time, "listen_overflow", owner.pid, owner.tid, &owner.comm, owner.fd),
        local: overflow.local.to_string(),
        queue: overflow.queued,
        backlog: overflow.backlog,
        dropped: overflow.dropped,
        interval_ms: millis(overflow.interval),
        peer: None,
        inode: overflow.inode,
        netns: owner.netns,
        cgroup_id: owner.cgroup_id,
        pod: PodView::of(owner.pod.as_ref()),
        signal: "sk_drops",
    })
}

fn addr(address: Option<SocketAddr>) -> String {
    address.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

fn reason(drop: &SocketDrop) -> String {
    drop.reason.clone().unwrap_or_else(|| format!("reason#{}", drop.reason_code))
}

/// `12:53:25.866 DROP demo-client[12] fd=3 127.0.0.1:40000 -> 127.0.0.1:8080 reason=SOCKET_FILTER dropped=5 in 1s`
pub fn drop_text(renderer: &TextRenderer, drop: &SocketDrop) -> String {
    let what =
        if drop.listener { addr(drop.local) } else { format!("{} -> {}", addr(drop.local), addr(drop.peer)) };
    format!(
        "{} DROP {}[{}] fd={} {} reason={} dropped={} in {}s",
        renderer.clock(drop.time),
        drop.comm,
        drop.pid,
        drop.fd,
        what,
        reason(drop),
        drop.dropped,
        drop.interval.as_secs_f64().round().max(1.0),
    )
}

#[derive(serde::Serialize)]
struct DropView<'a> {
    #[serde(flatten)]
    task: TaskView<'a>,
    listener: bool,
    src: Option<String>,
    dst: Option<String>,
    reason: String,
    reason_code: u32,
    dropped: u64,
    interval_ms: u64,
    cgroup_id: u64,
}

pub fn drop_json(drop: &SocketDrop) -> String {
    to_json(&DropView {
        task: TaskView::of(drop.time, "socket_drop", drop.pid, drop.tid, &drop.comm, drop.fd),
        listener: drop.listener,
        src: drop.local.map(|a| a.to_string()),
        dst: drop.peer.map(|a| a.to_string()),
        reason: reason(drop),
        reason_code: drop.reason_code,
        dropped: drop.dropped,
        interval_ms: millis(drop.interval),
        cgroup_id: drop.cgroup_id,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::tz::TimeZone;

    use super::*;
    use crate::{listen::ListenerOwner, record::PodIdentity};

    fn renderer() -> TextRenderer {
        TextRenderer::new(TimeZone::UTC, Duration::from_millis(500))
    }

    fn overflow() -> ListenOverflow {
        ListenOverflow {
            time: "2026-11-23T12:53:25.866123Z".parse().unwrap(),
            owner: ListenerOwner {
                pid: 412,
                tid: 412,
                comm: "haproxy".into(),
                fd: 5,
                cgroup_id: 77,
                netns: Some(4026531840),
                pod: None,
            },
            local: "127.0.0.1:8080".parse().unwrap(),
            queued: 3,
            backlog: 2,
            dropped: 26,
            interval: Duration::from_millis(1003),
            inode: 9001,
        }
    }

    fn drop() -> SocketDrop {
        SocketDrop {
            time: "2026-11-23T12:53:25.866123Z".parse().unwrap(),
            pid: 12,
            tid: 12,
            comm: "demo-client".into(),
            fd: 3,
            listener: false,
            local: Some("127.0.0.1:40000".parse().unwrap()),
            peer: Some("127.0.0.1:8080".parse().unwrap()),
            reason_code: 5,
            reason: Some("SOCKET_FILTER".into()),
            dropped: 5,
            interval: Duration::from_millis(1001),
            cgroup_id: 9,
            pod: None,
        }
    }

    #[test]
    fn the_overflow_line_names_owner_address_queue_and_drops() {
        assert_eq!(
            overflow_text(&renderer(), &overflow()),
            "12:53:25.866 LISTEN OVERFLOW haproxy[412] fd=5 127.0.0.1:8080 queue=3/2 dropped=26 in 1s"
        );
        let mut short = overflow();
        short.interval = Duration::from_millis(240);
        short.owner.pod = Some(PodIdentity { pod_uid: Some("u-1".into()), ..PodIdentity::default() });
        let line = overflow_text(&renderer(), &short);
        assert!(line.ends_with("dropped=26 in 240ms pod-uid=u-1"), "{line}");
    }

    #[test]
    fn overflow_json_carries_every_field() {
        let value: serde_json::Value = serde_json::from_str(&overflow_json(&overflow())).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "time": "2026-11-23T12:53:25.866123Z", "event": "listen_overflow",
                "pid": 412, "tid": 412, "comm": "haproxy", "fd": 5, "local": "127.0.0.1:8080",
                "queue": 3, "backlog": 2, "dropped": 26, "interval_ms": 1003, "peer": null,
                "inode": 9001, "netns": 4026531840u64, "cgroup_id": 77,
                "pod": null, "namespace": null, "container": null, "pod_uid": null, "container_id": null,
                "signal": "sk_drops",
            })
        );
    }

    #[test]
    fn text_and_json_of_a_drop() {
        assert_eq!(
            drop_text(&renderer(), &drop()),
            "12:53:25.866 DROP demo-client[12] fd=3 127.0.0.1:40000 -> 127.0.0.1:8080 reason=SOCKET_FILTER dropped=5 in 1s"
        );
        let unnamed = SocketDrop { reason: None, reason_code: 77, listener: true, ..drop() };
        assert!(drop_text(&renderer(), &unnamed).contains("fd=3 127.0.0.1:40000 reason=reason#77 "));
        let value: serde_json::Value = serde_json::from_str(&drop_json(&drop())).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "time": "2026-11-23T12:53:25.866123Z", "event": "socket_drop", "pid": 12, "tid": 12,
                "comm": "demo-client", "fd": 3, "listener": false, "src": "127.0.0.1:40000",
                "dst": "127.0.0.1:8080", "reason": "SOCKET_FILTER", "reason_code": 5, "dropped": 5,
                "interval_ms": 1001, "cgroup_id": 9,
            })
        );
    }

    /// serde_json::Value compares objects as maps: the order of the keys, which the
    /// JSON lines keep, is checked on the text itself.
    #[test]
    fn json_keys_keep_their_order() {
        let line = overflow_json(&overflow());
        assert!(line.starts_with(r#"{"time":"2026-11-23T12:53:25.866123Z","event":"listen_overflow","pid":412,"tid":412,"comm":"haproxy","fd":5,"local":"#), "{line}");
        assert!(line.ends_with(r#""cgroup_id":77,"pod":null,"namespace":null,"container":null,"pod_uid":null,"container_id":null,"signal":"sk_drops"}"#), "{line}");
        let line = drop_json(&drop());
        assert!(line.starts_with(r#"{"time":"2026-11-23T12:53:25.866123Z","event":"socket_drop","pid":12,"tid":12,"comm":"demo-client","fd":3,"listener":false,"#), "{line}");
    }
}
