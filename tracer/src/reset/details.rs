//! What a record says about a reset, from what the kernel saw, the socket table and the
//! kernel's reason names.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use super::{Exchange, ResetDirection, ResetOwner, ResetSeen};
use crate::{
    http_anomaly::{Anomaly, MessageKind, analyze},
    last_error::LastError,
    tcp_state::TcpState,
};

/// The exchange of another socket of the process counts only this fresh: a proxy
/// resets its client right after the upstream's bad answer.
pub const RELATED_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDirection {
    Sent,
    Received,
}

impl DataDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// An anomaly and the message it was found in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundAnomaly {
    pub anomaly: Anomaly,
    pub message: MessageKind,
    /// Whether the traced process sent or received the message.
    pub direction: DataDirection,
    /// The socket it travelled on, and that socket's other end.
    pub fd: i32,
    pub peer: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetDetails {
    pub direction: ResetDirection,
    pub owner: ResetOwner,
    pub has_socket: bool,
    pub state: Option<TcpState>,
    pub reason: Option<u32>,
    /// The reason as this kernel names it (tcp:tcp_send_reset's print format).
    pub reason_name: Option<String>,
    pub active: bool,
    pub cookie: Option<u64>,
    /// The last error the socket table knows for the owner's socket.
    pub last_error: Option<LastError>,
    /// `--http-peek`: the reset's own socket first, then the related one (if fresh).
    pub exchanges: Vec<Exchange>,
    /// Most telling first: received messages before sent ones, own socket first.
    pub anomalies: Vec<FoundAnomaly>,
}

/// The details of `seen`, raised at `ts_ns` (CLOCK_MONOTONIC).
pub fn details(
    seen: &ResetSeen,
    ts_ns: u64,
    last_error: Option<LastError>,
    reasons: &BTreeMap<u32, String>,
) -> ResetDetails {
    let exchanges: Vec<Exchange> =
        seen.exchanges.iter().filter(|exchange| exchange.own || is_fresh(exchange, ts_ns)).cloned().collect();
    ResetDetails {
        direction: seen.direction,
        owner: seen.owner,
        has_socket: seen.has_socket,
        state: seen.state,
        reason: seen.reason,
        reason_name: seen.reason.and_then(|code| reasons.get(&code).cloned()),
        active: seen.active,
        cookie: seen.cookie,
        last_error,
        anomalies: anomalies_in(&exchanges),
        exchanges,
    }
}

fn is_fresh(exchange: &Exchange, ts_ns: u64) -> bool {
    exchange.received_ns != 0
        && ts_ns.saturating_sub(exchange.received_ns) <= RELATED_WINDOW.as_nanos() as u64
}

fn anomalies_in(exchanges: &[Exchange]) -> Vec<FoundAnomaly> {
    let mut found = Vec::new();
    for direction in [DataDirection::Received, DataDirection::Sent] {
        for exchange in exchanges {
            let (bytes, total) = match direction {
                DataDirection::Received => (&exchange.received, exchange.received_total),
                DataDirection::Sent => (&exchange.sent, exchange.sent_total),
            };
            let Some(analysis) = analyze(bytes, total) else { continue };
            found.extend(analysis.anomalies.into_iter().map(|anomaly| FoundAnomaly {
                anomaly,
                message: analysis.message,
                direction,
                fd: exchange.fd,
                peer: exchange.peer,
            }));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{http_anomaly::AnomalyKind, last_error::Operation};

    const REQUEST: &[u8] = b"GET /wrong HTTP/1.1\r\nHost: http-chunked:8080\r\n\r\n";
    const RESPONSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn exchange(own: bool, fd: i32, sent: &[u8], received: &[u8], received_ns: u64) -> Exchange {
        Exchange {
            own,
            fd,
            local: None,
            peer: Some(if own { "127.0.0.1:38120" } else { "127.0.0.1:8080" }.parse().unwrap()),
            sent: sent.to_vec(),
            sent_total: sent.len() as u64,
            received: received.to_vec(),
            received_total: received.len() as u64,
            received_ns,
        }
    }

    fn seen(exchanges: Vec<Exchange>) -> ResetSeen {
        ResetSeen {
            direction: ResetDirection::Sent,
            owner: ResetOwner::Socket,
            fd: 23,
            has_socket: true,
            sk: 0xffff_8880_0000_0001,
            state: Some(TcpState::Close),
            reason: Some(14),
            active: true,
            cookie: None,
            local: Some("127.0.0.1:15001".parse().unwrap()),
            peer: Some("127.0.0.1:38120".parse().unwrap()),
            opts: tracer_common::SockOpts::default(),
            exchanges,
        }
    }

    #[test]
    fn proxy_reset_after_the_upstreams_bad_response() {
        let second = 1_000_000_000;
        let downstream = exchange(true, 23, b"", REQUEST, 5 * second);
        let upstream = exchange(false, 24, REQUEST, RESPONSE, 6 * second);
        let reasons = BTreeMap::from([(14, "TCP_STATE".to_string())]);
        let last_error = Some(LastError { operation: Operation::Connect, errno: 111, ts_ns: 1 });
        let d = details(&seen(vec![downstream, upstream]), 6 * second + 1000, last_error, &reasons);
        assert_eq!(d.reason_name.as_deref(), Some("TCP_STATE"));
        assert_eq!(d.last_error, last_error);
        assert_eq!(d.exchanges.len(), 2);
        let [first] = &d.anomalies[..] else { panic!("{:?}", d.anomalies) };
        assert_eq!(first.anomaly.kind, AnomalyKind::DuplicateTransferEncoding);
        assert_eq!(first.anomaly.values, ["Chunked", "chunked"]);
        assert_eq!(
            (first.message, first.direction, first.fd),
            (MessageKind::Response, DataDirection::Received, 24)
        );
        assert_eq!(first.peer, Some("127.0.0.1:8080".parse().unwrap()));
    }

    #[test]
    fn a_stale_related_exchange_is_dropped_and_unknown_reasons_stay_numbers() {
        let second = 1_000_000_000;
        let upstream = exchange(false, 24, REQUEST, RESPONSE, second);
        let d = details(&seen(vec![upstream]), 10 * second, None, &BTreeMap::new());
        assert!(d.exchanges.is_empty() && d.anomalies.is_empty(), "{d:?}");
        assert_eq!((d.reason, d.reason_name), (Some(14), None));
    }
}
