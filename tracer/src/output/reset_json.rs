//! The JSON parts of a reset record: `rst`, `http_anomaly(ies)` and `payload`.

use serde::Serialize;

use crate::{
    errno::errno_name,
    reset::{Exchange, FoundAnomaly, ResetDetails, ResetDirection},
};

#[derive(Serialize)]
pub struct RstView<'a> {
    direction: &'static str,
    /// How the process was found: socket, close, or kernel (none).
    by: &'static str,
    /// False when the kernel answered a segment for which it had no socket.
    socket: bool,
    state: Option<&'static str>,
    reason: Option<&'a str>,
    reason_code: Option<u32>,
    active: bool,
    sock_cookie: Option<u64>,
    last_error: Option<LastErrorView>,
}

#[derive(Serialize)]
struct LastErrorView {
    operation: &'static str,
    errno: i32,
    error: Option<&'static str>,
}

impl<'a> RstView<'a> {
    pub fn of(reset: &'a ResetDetails) -> Self {
        Self {
            direction: match reset.direction {
                ResetDirection::Sent => "sent",
                ResetDirection::Received => "received",
            },
            by: reset.owner.as_str(),
            socket: reset.has_socket,
            state: reset.state.map(|s| s.as_str()),
            reason: reset.reason_name.as_deref(),
            reason_code: reset.reason,
            active: reset.active,
            sock_cookie: reset.cookie,
            last_error: reset.last_error.map(|e| LastErrorView {
                operation: e.operation.as_str(),
                errno: e.errno,
                error: errno_name(e.errno),
            }),
        }
    }
}

#[derive(Clone, Serialize)]
pub struct AnomalyView<'a> {
    kind: &'static str,
    values: &'a [String],
    /// request or response.
    message: &'static str,
    /// Whether the traced process sent or received the message.
    direction: &'static str,
    fd: i32,
    peer: Option<String>,
}

impl<'a> AnomalyView<'a> {
    pub fn of(found: &'a FoundAnomaly) -> Self {
        Self {
            kind: found.anomaly.kind.as_str(),
            values: &found.anomaly.values,
            message: found.message.as_str(),
            direction: found.direction.as_str(),
            fd: found.fd,
            peer: found.peer.map(|p| p.to_string()),
        }
    }
}

/// One socket's kept exchange (only with `--http-peek`).
#[derive(Serialize)]
pub struct ExchangeView {
    /// `reset`: the reset's socket; `related`: the socket its process received on last.
    socket: &'static str,
    fd: i32,
    local: Option<String>,
    peer: Option<String>,
    /// The kept bytes as text (invalid UTF-8 replaced), and how many were transferred.
    sent: String,
    sent_bytes: u64,
    received: String,
    received_bytes: u64,
}

impl ExchangeView {
    pub fn of(exchange: &Exchange) -> Self {
        Self {
            socket: if exchange.own { "reset" } else { "related" },
            fd: exchange.fd,
            local: exchange.local.map(|a| a.to_string()),
            peer: exchange.peer.map(|a| a.to_string()),
            sent: String::from_utf8_lossy(&exchange.sent).into_owned(),
            sent_bytes: exchange.sent_total,
            received: String::from_utf8_lossy(&exchange.received).into_owned(),
            received_bytes: exchange.received_total,
        }
    }
}
