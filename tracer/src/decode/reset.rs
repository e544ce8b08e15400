//! Ring-buffer reset records to [`ResetSeen`].

use tracer_common::{
    PeekCopy, ResetEvent,
    reset::{ATTRIBUTED_CLOSE, ATTRIBUTED_SOCKET, PEEK_BYTES, REASON_NONE, RESET_SENT},
};

use super::sockaddr::socket_addr;
use crate::{
    reset::{Exchange, ResetDirection, ResetOwner, ResetSeen},
    tcp_state::TcpState,
};

/// The reset in `event`, with the kept exchanges of `peeks` (empty slots skipped).
pub(crate) fn seen(event: &ResetEvent, peeks: &[&PeekCopy]) -> ResetSeen {
    ResetSeen {
        direction: if event.direction == RESET_SENT {
            ResetDirection::Sent
        } else {
            ResetDirection::Received
        },
        owner: match event.attributed {
            ATTRIBUTED_SOCKET => ResetOwner::Socket,
            ATTRIBUTED_CLOSE => ResetOwner::Close,
            _ => ResetOwner::Kernel,
        },
        fd: event.fd,
        has_socket: event.sk != 0,
        sk: event.sk,
        state: u8::try_from(event.state).ok().filter(|&s| s != 0).map(TcpState::from_kernel),
        reason: (event.reason != REASON_NONE).then_some(event.reason),
        active: event.active != 0,
        cookie: (event.cookie != 0).then_some(event.cookie),
        local: socket_addr(&event.local),
        peer: socket_addr(&event.peer),
        opts: event.opts,
        exchanges: peeks
            .iter()
            .enumerate()
            .filter(|(_, peek)| peek.fd >= 0)
            .map(|(i, peek)| exchange(peek, i == 0))
            .collect(),
    }
}

fn exchange(peek: &PeekCopy, own: bool) -> Exchange {
    let kept = |len: u32| (len as usize).min(PEEK_BYTES);
    Exchange {
        own,
        fd: peek.fd,
        local: socket_addr(&peek.local),
        peer: socket_addr(&peek.peer),
        sent: peek.sent[..kept(peek.sent_len)].to_vec(),
        sent_total: peek.sent_total,
        received: peek.received[..kept(peek.received_len)].to_vec(),
        received_total: peek.received_total,
        received_ns: peek.received_ns,
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{
        SockOpts,
        options::FLAG_SO_MARK,
        reset::{ATTRIBUTED_NONE, RESET_RECEIVED},
    };

    use super::*;
    use crate::decode::raw_sockaddr;

    fn event() -> ResetEvent {
        ResetEvent {
            direction: RESET_SENT,
            attributed: ATTRIBUTED_CLOSE,
            fd: 5,
            state: 7,
            reason: 14,
            active: 1,
            sk: 0xffff_8880_0000_0001,
            cookie: 0,
            local: raw_sockaddr("127.0.0.1:15001".parse().unwrap()),
            peer: raw_sockaddr("127.0.0.1:38120".parse().unwrap()),
            opts: SockOpts { flags: FLAG_SO_MARK, mark: 0x0b00 },
        }
    }

    #[test]
    fn fields_and_absent_values() {
        let seen = seen(&event(), &[]);
        assert_eq!((seen.direction, seen.owner, seen.fd), (ResetDirection::Sent, ResetOwner::Close, 5));
        assert_eq!((seen.state, seen.reason, seen.active), (Some(TcpState::Close), Some(14), true));
        assert_eq!((seen.cookie, seen.has_socket), (None, true));
        assert_eq!(seen.peer, Some("127.0.0.1:38120".parse().unwrap()));
        assert_eq!(seen.opts, SockOpts { flags: FLAG_SO_MARK, mark: 0x0b00 }, "the owner's options");
        let received = ResetEvent {
            direction: RESET_RECEIVED,
            attributed: ATTRIBUTED_NONE,
            fd: -1,
            state: 0,
            reason: REASON_NONE,
            sk: 0,
            ..event()
        };
        let seen = super::seen(&received, &[]);
        assert_eq!(
            (seen.direction, seen.owner, seen.state, seen.reason),
            (ResetDirection::Received, ResetOwner::Kernel, None, None)
        );
        assert!(!seen.has_socket);
    }

    #[test]
    fn exchanges_keep_only_their_bytes() {
        let mut own = PeekCopy { fd: 5, sent_len: 3, received_len: 2, sent_total: 10, ..Default::default() };
        own.sent[..4].copy_from_slice(b"GETX");
        own.received[..3].copy_from_slice(b"HTX");
        let empty = PeekCopy::default();
        let related = PeekCopy { fd: 9, received_len: 5000, ..Default::default() };
        let seen = seen(&event(), &[&own, &empty, &related]);
        assert_eq!(seen.exchanges.len(), 2);
        assert_eq!(
            (seen.exchanges[0].own, &seen.exchanges[0].sent[..], &seen.exchanges[0].received[..]),
            (true, &b"GET"[..], &b"HT"[..])
        );
        assert_eq!(seen.exchanges[0].sent_total, 10);
        assert_eq!(
            (seen.exchanges[1].own, seen.exchanges[1].fd, seen.exchanges[1].received.len()),
            (false, 9, PEEK_BYTES)
        );
    }
}
