//! Types that cross the kernel/user boundary of sockerr.
//!
//! Every record in the ring buffer is an [`EventHeader`] followed by the payload its
//! `kind` names. All types are `#[repr(C)]` with explicit padding and a size asserted
//! at compile time, so the eBPF object and the daemon agree byte for byte. Nothing
//! here is a `bool`, an `Option` or an enum: the kernel side writes plain integers.
#![no_std]

pub mod bind;
pub mod close;
pub mod config;
pub mod connect;
pub mod drops;
pub mod header;
pub mod limits;
pub mod listen;
pub mod loss;
pub mod options;
pub mod origin;
pub mod pairing;
pub mod reset;
pub mod sock_event;
pub mod sockaddr;
pub mod sockopt;
pub mod task_fd;
pub mod tracked_churn;

pub use bind::BindEvent;
pub use close::CloseEvent;
pub use config::{Filters, TracepointOffsets};
pub use connect::ConnectEvent;
pub use drops::{DropKey, DropOffsets, DropTotal};
pub use header::EventHeader;
pub use listen::{ListenEvent, ListenOffsets};
pub use loss::Loss;
pub use options::SockOpts;
pub use origin::{KernelOrigin, SockOffsets};
pub use reset::{PeekCopy, ResetEvent, ResetOffsets, ResetPeekEvent};
pub use sock_event::SockEvent;
pub use sockaddr::SockAddr;
pub use sockopt::SockoptEvent;
pub use task_fd::{SocketFd, TaskFdOffsets};

/// `EventHeader::kind` values.
pub mod kind {
    /// A setsockopt() of one of the options in [`crate::options`] returned.
    pub const SOCKOPT: u32 = 1;
    /// A bind() returned: an error, or success on a socket that carries options.
    pub const BIND: u32 = 2;
    /// A connect() returned with an error, or a non-TCP connect() succeeded.
    pub const CONNECT: u32 = 3;
    /// A TCP connect failed after connect() returned (non-blocking sockets).
    pub const CONNECT_ASYNC_ERROR: u32 = 4;
    /// A TCP connect reached ESTABLISHED on a socket that carries options.
    pub const ESTABLISHED: u32 = 5;
    /// A socket that carried options was closed, or its fd number was reused.
    pub const CLOSE: u32 = 6;
    /// A TCP RST was sent or received (no `--http-peek` bytes).
    pub const RESET: u32 = 7;
    /// A TCP RST with the `--http-peek` bytes of its socket and of a related one.
    pub const RESET_PEEK: u32 = 8;
    /// A traced task's listen() moved a TCP socket to LISTEN.
    pub const LISTENING: u32 = 9;
}

/// A ring-buffer record: the header, then the payload its `kind` names.
#[repr(C)]
pub struct Record<T> {
    pub header: EventHeader,
    pub payload: T,
}

/// Ties a payload type to the record kinds that carry it. The size table
/// ([`record_size`]), the daemon's decoder ([`AnyPayload::read`]) and the kernel's
/// `emit` (which refuses at compile time a kind its payload does not carry) all come
/// from the one list in `payloads!` below.
pub trait Payload: Copy + 'static {
    /// The `kind` values whose records carry this payload.
    const KINDS: &'static [u32];
    /// What the payload is, for decode errors.
    const WHAT: &'static str;
}

/// Whether `kind` is in `kinds` (const: usable in the kernel's compile-time check).
pub const fn carries(kinds: &[u32], kind: u32) -> bool {
    let mut i = 0;
    while i < kinds.len() {
        if kinds[i] == kind {
            return true;
        }
        i += 1;
    }
    false
}

macro_rules! payloads {
    ($($payload:ident => [$($kind:expr),+ $(,)?], $what:literal;)+) => {
        $(
            impl Payload for $payload {
                const KINDS: &'static [u32] = &[$($kind),+];
                const WHAT: &'static str = $what;
            }
        )+

        /// Sizes the ring buffer carries for each kind: header plus payload; 0 for a
        /// kind this build does not know.
        pub const fn record_size(kind: u32) -> usize {
            $(
                if carries(<$payload as Payload>::KINDS, kind) {
                    return size_of::<EventHeader>() + size_of::<$payload>();
                }
            )+
            0
        }

        /// Every payload, as the daemon reads it off a record.
        #[cfg(feature = "user")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(
            clippy::large_enum_variant,
            reason = "lives only from the read to the decoder's match, which boxes the large one"
        )]
        pub enum AnyPayload {
            $($payload($payload),)+
        }

        #[cfg(feature = "user")]
        impl AnyPayload {
            /// The payload of a `kind` record from the bytes after its header.
            pub fn read(kind: u32, bytes: &[u8]) -> Result<Self, PayloadError> {
                $(
                    if carries(<$payload as Payload>::KINDS, kind) {
                        return read_unaligned::<$payload>(bytes).map(AnyPayload::$payload);
                    }
                )+
                Err(PayloadError::UnknownKind(kind))
            }
        }
    };
}

payloads! {
    SockoptEvent => [kind::SOCKOPT], "sockopt";
    BindEvent => [kind::BIND], "bind";
    ConnectEvent => [kind::CONNECT], "connect";
    SockEvent => [kind::CONNECT_ASYNC_ERROR, kind::ESTABLISHED], "socket event";
    CloseEvent => [kind::CLOSE], "close";
    ResetEvent => [kind::RESET], "reset";
    ResetPeekEvent => [kind::RESET_PEEK], "reset with peek";
    ListenEvent => [kind::LISTENING], "listen";
}

/// Why a payload could not be read.
#[cfg(feature = "user")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    UnknownKind(u32),
    Short { what: &'static str, len: usize, need: usize },
}

/// Copies a `T` off the front of `bytes` (ring records are only 8-byte aligned).
#[cfg(feature = "user")]
fn read_unaligned<T: Payload + aya::Pod>(bytes: &[u8]) -> Result<T, PayloadError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(PayloadError::Short { what: T::WHAT, len: bytes.len(), need });
    }
    // SAFETY: `T: Pod` accepts any bit pattern, and `bytes` holds at least
    // size_of::<T>() bytes (checked above); read_unaligned needs no alignment.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Names of the maps and globals the daemon looks up in the eBPF object.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU loss counters, indexed by [`crate::Loss`].
    pub const LOSSES: &str = "LOSSES";
    pub const FILTER_PIDS: &str = "FILTER_PIDS";
    pub const FILTER_COMMS: &str = "FILTER_COMMS";
    pub const OFFSETS: &str = "OFFSETS";
    pub const FILTERS: &str = "FILTERS";
    pub const RESET_OFFSETS: &str = "RESET_OFFSETS";
    /// Per-socket `--http-peek` buffers: sized to 1 entry when the option is off.
    pub const PEEKS: &str = "PEEKS";
    pub const SOCK_OFFSETS: &str = "SOCK_OFFSETS";
    pub const LISTEN_OFFSETS: &str = "LISTEN_OFFSETS";
    pub const DROP_OFFSETS: &str = "DROP_OFFSETS";
    pub const TASK_FD_OFFSETS: &str = "TASK_FD_OFFSETS";
    /// Per-(socket, drop reason) running totals of `skb:kfree_skb`.
    pub const SOCKET_DROPS: &str = "SOCKET_DROPS";
    /// Owners of sockets in SYN_SENT, by `struct sock` (`--owner-table-entries`).
    pub const SK_OWNERS: &str = "SK_OWNERS";
    /// Owners of connected and accepted sockets, by `struct sock` (`--owner-table-entries`).
    pub const SOCK_OWNERS: &str = "SOCK_OWNERS";
    /// The fd of a traced process holding each connected or accepted socket, by inode
    /// number (`--owner-table-entries`).
    pub const SOCKET_FDS: &str = "SOCKET_FDS";
    /// Owners of listening sockets, by `struct sock` (`--listener-table-entries`).
    pub const LISTENERS: &str = "LISTENERS";
    /// Options of sockets, by (tgid, fd) (`--options-table-entries`).
    pub const TRACKED: &str = "TRACKED";
    /// What the programs inserted into and removed from `TRACKED` (`crate::tracked_churn`).
    pub const TRACKED_CHURN: &str = "TRACKED_CHURN";
    /// The TCP sockets `--http-peek` copies from, by (tgid, fd): sized to 1 entry without it.
    pub const FD_SOCKS: &str = "FD_SOCKS";
    /// Every map the daemon opens by name or resizes before load.
    pub const MAPS: [&str; 13] = [
        EVENTS,
        LOSSES,
        FILTER_PIDS,
        FILTER_COMMS,
        PEEKS,
        SOCKET_DROPS,
        SK_OWNERS,
        SOCK_OWNERS,
        SOCKET_FDS,
        LISTENERS,
        TRACKED,
        TRACKED_CHURN,
        FD_SOCKS,
    ];
    /// Every load-time global the daemon rewrites.
    pub const GLOBALS: [&str; 7] =
        [OFFSETS, FILTERS, RESET_OFFSETS, SOCK_OFFSETS, LISTEN_OFFSETS, DROP_OFFSETS, TASK_FD_OFFSETS];
    /// The `log` target of the kernel programs' aya-log lines (`RUST_LOG=sockerr::kernel=debug`).
    pub const KERNEL_LOG_TARGET: &str = "sockerr::kernel";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_payload_and_a_size() {
        for kind in 1..=9 {
            let owners = [
                SockoptEvent::KINDS,
                BindEvent::KINDS,
                ConnectEvent::KINDS,
                SockEvent::KINDS,
                CloseEvent::KINDS,
                ResetEvent::KINDS,
                ResetPeekEvent::KINDS,
                ListenEvent::KINDS,
            ]
            .iter()
            .filter(|kinds| carries(kinds, kind))
            .count();
            assert_eq!(owners, 1, "kind {kind}");
            assert!(record_size(kind) > size_of::<EventHeader>(), "kind {kind}");
        }
        assert_eq!(record_size(0), 0);
        assert_eq!(record_size(10), 0);
        assert_eq!(record_size(kind::ESTABLISHED), size_of::<EventHeader>() + size_of::<SockEvent>());
    }
}

/// Declares a `#[repr(C)]` type `aya::Pod` for the daemon (feature `user`).
macro_rules! user_pod {
    ($($t:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, made of integers only, with
            // explicit padding fields, so every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )+
    };
}

user_pod!(
    EventHeader,
    SockAddr,
    SockOpts,
    options::Tracked,
    SockoptEvent,
    BindEvent,
    ConnectEvent,
    SockEvent,
    CloseEvent,
    TracepointOffsets,
    Filters,
    ResetEvent,
    PeekCopy,
    ResetPeekEvent,
    ResetOffsets,
    KernelOrigin,
    SockOffsets,
    ListenEvent,
    ListenOffsets,
    DropKey,
    DropTotal,
    DropOffsets,
    TaskFdOffsets,
    SocketFd,
);
