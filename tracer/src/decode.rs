//! Ring-buffer records to [`KernelEvent`]s: every conversion from the kernel's wire
//! types to the model (addresses, the kprobe view, resets) lives in this module.
//!
//! A record is an `EventHeader` then the payload its `kind` names (tracer-common).
//! The buffer is walked with `bytes::Buf`, which bounds-checks every read, and each
//! `#[repr(C)]` struct is copied out unaligned: the ring buffer only guarantees
//! 8-byte alignment and the kernel may grow records in a future version.

use bytes::Buf;
use thiserror::Error;
use tracer_common::{
    AnyPayload, EventHeader, PayloadError, close::CLOSE_REASON_FD_REUSED, kind, record_size,
};

#[cfg(test)]
pub(crate) use self::sockaddr::raw_sockaddr;
pub(crate) use self::sockaddr::socket_addr;
use crate::event::{Header, KernelEvent, Listening, Origin, Payload};

mod origin;
mod reset;
mod sockaddr;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte {what}")]
    Short { what: &'static str, len: usize, need: usize },
    #[error("record kind {0} is unknown to this sockerr (kernel programs and daemon out of sync?)")]
    UnknownKind(u32),
}

/// Copies a `T` off the front of `buf`.
fn read_pod<T: aya::Pod>(buf: &mut impl Buf, what: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if buf.remaining() < need {
        return Err(DecodeError::Short { what, len: buf.remaining(), need });
    }
    let mut value = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `T: Pod` accepts any bit pattern; exactly size_of::<T>() bytes are written.
    let bytes = unsafe { std::slice::from_raw_parts_mut(value.as_mut_ptr().cast::<u8>(), need) };
    buf.copy_to_slice(bytes);
    // SAFETY: fully initialised above.
    Ok(unsafe { value.assume_init() })
}

pub fn decode(mut record: &[u8]) -> Result<KernelEvent, DecodeError> {
    let len = record.len();
    let raw: EventHeader = read_pod(&mut record, "header")?;
    let need = record_size(raw.kind);
    if need == 0 {
        return Err(DecodeError::UnknownKind(raw.kind));
    }
    if len < need {
        return Err(DecodeError::Short { what: "record", len, need });
    }
    let header = Header {
        ts_ns: raw.ts_ns,
        pid: raw.tgid,
        tid: raw.tid,
        cgroup_id: raw.cgroup_id,
        thread: comm_str(&raw.comm),
        errno: raw.errno,
    };
    let payload = match AnyPayload::read(raw.kind, record).map_err(DecodeError::from)? {
        AnyPayload::SockoptEvent(e) => Payload::Sockopt {
            fd: e.fd,
            level: e.level,
            optname: e.optname,
            optlen: e.optlen,
            value: (e.value_unread == 0).then_some(e.value),
            ret: e.ret,
            opts: e.opts,
        },
        AnyPayload::BindEvent(e) => Payload::Bind {
            fd: e.fd,
            addr: socket_addr(&e.addr),
            opts: e.opts,
            origin: Origin::decode(&e.origin),
        },
        AnyPayload::ConnectEvent(e) => Payload::Connect {
            fd: e.fd,
            dst: socket_addr(&e.dst),
            src: socket_addr(&e.src),
            opts: e.opts,
            sk: e.sk,
            origin: Origin::decode(&e.origin),
        },
        AnyPayload::SockEvent(e) => {
            let (fd, src, dst, opts, sk) = (e.fd, socket_addr(&e.src), socket_addr(&e.dst), e.opts, e.sk);
            if raw.kind == kind::ESTABLISHED {
                Payload::Established { fd, src, dst, opts, sk }
            } else {
                Payload::ConnectAsyncError { fd, src, dst, opts, sk }
            }
        }
        AnyPayload::CloseEvent(e) => Payload::Close { fd: e.fd, reused: e.reason == CLOSE_REASON_FD_REUSED },
        AnyPayload::ResetEvent(e) => Payload::Reset(Box::new(reset::seen(&e, &[]))),
        AnyPayload::ResetPeekEvent(e) => {
            Payload::Reset(Box::new(reset::seen(&e.reset, &[&e.own, &e.related])))
        }
        AnyPayload::ListenEvent(e) => Payload::Listening(Listening {
            fd: e.fd,
            backlog: e.backlog,
            sk: e.sk,
            local: socket_addr(&e.local),
        }),
    };
    Ok(KernelEvent { header, payload })
}

impl From<PayloadError> for DecodeError {
    fn from(error: PayloadError) -> Self {
        match error {
            PayloadError::UnknownKind(kind) => Self::UnknownKind(kind),
            PayloadError::Short { what, len, need } => Self::Short { what, len, need },
        }
    }
}

/// A NUL-padded task name as text.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Builds ring-buffer records the way the kernel programs do, for tests.
#[cfg(test)]
pub mod encode {
    use tracer_common::EventHeader;

    pub fn comm(name: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
        out
    }

    pub fn header(kind: u32, errno: i32, pid: u32, ts_ns: u64, name: &str) -> EventHeader {
        EventHeader { kind, errno, ts_ns, tgid: pid, tid: pid, cgroup_id: 1, comm: comm(name) }
    }

    pub fn record<T: aya::Pod>(header: EventHeader, payload: T) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(bytes_of(&header));
        out.extend_from_slice(bytes_of(&payload));
        out
    }

    fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
        // SAFETY: Pod types have no padding bytes left uninitialised (explicit padding).
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{
        CloseEvent, ConnectEvent, SockOpts, SockoptEvent,
        options::{FLAG_SO_MARK, SO_MARK, SOL_SOCKET},
    };

    use super::{encode::*, *};

    #[test]
    fn decodes_connect_error() {
        let src = "10.0.1.7:40312".parse().unwrap();
        let dst = "52.216.8.19:443".parse().unwrap();
        let opts = SockOpts { flags: FLAG_SO_MARK, mark: 0x3203_0b00 };
        let payload = ConnectEvent {
            fd: 131,
            ret: -99,
            dst: raw_sockaddr(dst),
            src: raw_sockaddr(src),
            opts,
            sk: 0xffff_8880_dead_beef,
            origin: Default::default(),
        };
        let bytes = record(header(kind::CONNECT, 99, 401, 5, "envoy"), payload);
        let event = decode(&bytes).unwrap();
        assert_eq!(event.header.pid, 401);
        assert_eq!(event.header.errno, 99);
        assert_eq!(event.header.thread, "envoy");
        assert_eq!(
            event.payload,
            Payload::Connect {
                fd: 131,
                dst: Some(dst),
                src: Some(src),
                opts,
                sk: 0xffff_8880_dead_beef,
                origin: None
            }
        );
    }

    /// A faulting optval is an unknown value, never 0.
    #[test]
    fn decodes_an_unreadable_option_value_as_unknown() {
        let sockopt = |value_unread| SockoptEvent {
            fd: 5,
            level: SOL_SOCKET,
            optname: SO_MARK,
            optlen: 4,
            value: 0,
            ret: -14,
            value_unread,
            ..Default::default()
        };
        let unread = decode(&record(header(kind::SOCKOPT, 14, 1, 1, "x"), sockopt(1))).unwrap();
        assert!(matches!(unread.payload, Payload::Sockopt { value: None, .. }), "{unread:?}");
        let zero = decode(&record(header(kind::SOCKOPT, 14, 1, 1, "x"), sockopt(0))).unwrap();
        assert!(matches!(zero.payload, Payload::Sockopt { value: Some(0), .. }), "{zero:?}");
    }

    #[test]
    fn decodes_close_and_reuse() {
        let bytes =
            record(header(kind::CLOSE, 0, 7, 1, "x"), CloseEvent { fd: 3, reason: CLOSE_REASON_FD_REUSED });
        assert_eq!(decode(&bytes).unwrap().payload, Payload::Close { fd: 3, reused: true });
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let bytes = record(header(kind::CONNECT, 0, 1, 1, "x"), CloseEvent::default());
        assert!(matches!(decode(&bytes), Err(DecodeError::Short { what: "record", .. })));
        assert!(matches!(decode(&bytes[..10]), Err(DecodeError::Short { what: "header", .. })));
        let bytes = record(header(77, 0, 1, 1, "x"), CloseEvent::default());
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownKind(77)));
    }

    #[test]
    fn decodes_resets_with_and_without_peek() {
        use tracer_common::{
            PeekCopy, ResetEvent, ResetPeekEvent,
            reset::{ATTRIBUTED_SOCKET, REASON_NONE, RESET_RECEIVED},
        };
        let reset = ResetEvent {
            direction: RESET_RECEIVED,
            attributed: ATTRIBUTED_SOCKET,
            fd: 3,
            reason: REASON_NONE,
            sk: 1,
            local: raw_sockaddr("[::1]:45854".parse().unwrap()),
            peer: raw_sockaddr("[::1]:15001".parse().unwrap()),
            ..Default::default()
        };
        let event = decode(&record(header(kind::RESET, 0, 9, 1, "demo-client"), reset)).unwrap();
        let Payload::Reset(seen) = &event.payload else { panic!("{event:?}") };
        assert_eq!((seen.fd, seen.reason, seen.exchanges.len()), (3, None, 0));
        assert_eq!(seen.peer, Some("[::1]:15001".parse().unwrap()));
        assert_eq!(event.fd(), 3);

        let mut own = PeekCopy { fd: 3, sent_len: 4, ..Default::default() };
        own.sent[..4].copy_from_slice(b"GET ");
        let peek = ResetPeekEvent { reset, own, related: PeekCopy::default() };
        let event = decode(&record(header(kind::RESET_PEEK, 0, 9, 1, "demo-client"), peek)).unwrap();
        let Payload::Reset(seen) = &event.payload else { panic!("{event:?}") };
        assert_eq!(seen.exchanges.len(), 1, "the empty related slot is skipped");
        assert_eq!(seen.exchanges[0].sent, b"GET ");
        let short = record(header(kind::RESET_PEEK, 0, 9, 1, "x"), reset);
        assert!(matches!(decode(&short), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_str(&comm("wrk:worker_0")), "wrk:worker_0");
        assert_eq!(comm_str(&[b'a'; 16]), "a".repeat(16));
    }
}
