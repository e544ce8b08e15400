//! `listen_overflow` as a text line and a JSON object: two views of one
//! [`ListenOverflow`], which is already folded (the drops of one listener in one
//! sampling interval), so neither form folds it further.

use std::fmt;

use super::{TextRenderer, text::PodLabel};
use crate::listen::ListenOverflow;

/// `12:53:25.866 LISTEN OVERFLOW haproxy[412] fd=5 127.0.0.1:8080 queue=3/2 dropped=26 in 1s`
pub fn text(renderer: &TextRenderer, overflow: &ListenOverflow) -> String {
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
struct View<'a> {
    time: String,
    event: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    fd: i32,
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
    pod: Option<&'a str>,
    namespace: Option<&'a str>,
    container: Option<&'a str>,
    pod_uid: Option<&'a str>,
    container_id: Option<&'a str>,
    signal: &'static str,
}

pub fn json(overflow: &ListenOverflow) -> String {
    let owner = &overflow.owner;
    let pod = |field: fn(&crate::record::PodIdentity) -> &Option<String>| {
        owner.pod.as_ref().and_then(|pod| field(pod).as_deref())
    };
    let view = View {
        time: format!("{:.6}", overflow.time),
        event: "listen_overflow",
        pid: owner.pid,
        tid: owner.tid,
        comm: &owner.comm,
        fd: owner.fd,
        local: overflow.local.to_string(),
        queue: overflow.queued,
        backlog: overflow.backlog,
        dropped: overflow.dropped,
        interval_ms: u64::try_from(overflow.interval.as_millis()).unwrap_or(u64::MAX),
        peer: None,
        inode: overflow.inode,
        netns: owner.netns,
        cgroup_id: owner.cgroup_id,
        pod: pod(|p| &p.pod),
        namespace: pod(|p| &p.namespace),
        container: pod(|p| &p.container),
        pod_uid: pod(|p| &p.pod_uid),
        container_id: pod(|p| &p.container_id),
        signal: "sk_drops",
    };
    // Strings, numbers and nulls only: serde_json cannot fail on them.
    serde_json::to_string(&view).expect("listen_overflow views always serialize")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::tz::TimeZone;

    use super::*;
    use crate::{listen::ListenerOwner, record::PodIdentity};

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

    #[test]
    fn the_line_names_owner_address_queue_and_drops() {
        let renderer = TextRenderer::new(TimeZone::UTC, Duration::from_millis(500));
        assert_eq!(
            text(&renderer, &overflow()),
            "12:53:25.866 LISTEN OVERFLOW haproxy[412] fd=5 127.0.0.1:8080 queue=3/2 dropped=26 in 1s"
        );
        let mut short = overflow();
        short.interval = Duration::from_millis(240);
        short.owner.pod = Some(PodIdentity { pod_uid: Some("u-1".into()), ..PodIdentity::default() });
        assert!(
            text(&renderer, &short).ends_with("dropped=26 in 240ms pod-uid=u-1"),
            "{}",
            text(&renderer, &short)
        );
    }

    #[test]
    fn json_carries_every_field() {
        let value: serde_json::Value = serde_json::from_str(&json(&overflow())).unwrap();
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
}
