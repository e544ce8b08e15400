//! `socket_drop` as a text line and a JSON object: one (socket, reason) in one interval,
//! already folded by the kernel and `drops::DropFold`.

use super::TextRenderer;
use crate::drops::SocketDrop;

fn addr(address: Option<std::net::SocketAddr>) -> String {
    address.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

fn reason(drop: &SocketDrop) -> String {
    drop.reason.clone().unwrap_or_else(|| format!("reason#{}", drop.reason_code))
}

/// `12:53:25.866 DROP demo-client[12] fd=3 127.0.0.1:40000 -> 127.0.0.1:8080 reason=SOCKET_FILTER dropped=5 in 1s`
pub fn text(renderer: &TextRenderer, drop: &SocketDrop) -> String {
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
struct View<'a> {
    time: String,
    event: &'static str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    fd: i32,
    listener: bool,
    src: Option<String>,
    dst: Option<String>,
    reason: String,
    reason_code: u32,
    dropped: u64,
    interval_ms: u64,
    cgroup_id: u64,
}

pub fn json(drop: &SocketDrop) -> String {
    let view = View {
        time: format!("{:.6}", drop.time),
        event: "socket_drop",
        pid: drop.pid,
        tid: drop.tid,
        comm: &drop.comm,
        fd: drop.fd,
        listener: drop.listener,
        src: drop.local.map(|a| a.to_string()),
        dst: drop.peer.map(|a| a.to_string()),
        reason: reason(drop),
        reason_code: drop.reason_code,
        dropped: drop.dropped,
        interval_ms: u64::try_from(drop.interval.as_millis()).unwrap_or(u64::MAX),
        cgroup_id: drop.cgroup_id,
    };
    // Strings, numbers and booleans only: serde_json cannot fail on them.
    serde_json::to_string(&view).expect("socket_drop views always serialize")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::tz::TimeZone;

    use super::*;

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
    fn text_and_json_of_a_drop() {
        let renderer = TextRenderer::new(TimeZone::UTC, Duration::from_millis(500));
        assert_eq!(
            text(&renderer, &drop()),
            "12:53:25.866 DROP demo-client[12] fd=3 127.0.0.1:40000 -> 127.0.0.1:8080 reason=SOCKET_FILTER dropped=5 in 1s"
        );
        let unnamed = SocketDrop { reason: None, reason_code: 77, listener: true, ..drop() };
        assert!(text(&renderer, &unnamed).contains("fd=3 127.0.0.1:40000 reason=reason#77 "));
        let value: serde_json::Value = serde_json::from_str(&json(&drop())).unwrap();
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
}
