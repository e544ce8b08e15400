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
pub mod listen;
pub mod options;
pub mod origin;
pub mod reset;
pub mod sock_event;
pub mod sockaddr;
pub mod sockopt;

pub use bind::BindEvent;
pub use close::CloseEvent;
pub use config::{Filters, TracepointOffsets};
pub use connect::ConnectEvent;
pub use drops::{DropKey, DropOffsets, DropTotal};
pub use header::EventHeader;
pub use listen::{ListenEvent, ListenOffsets};
pub use options::SockOpts;
pub use origin::{KernelOrigin, SockOffsets};
pub use reset::{PeekCopy, ResetEvent, ResetOffsets, ResetPeekEvent};
pub use sock_event::SockEvent;
pub use sockaddr::SockAddr;
pub use sockopt::SockoptEvent;

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

/// Sizes the ring buffer carries for each kind: header plus payload.
pub const fn record_size(kind: u32) -> usize {
    let payload = match kind {
        kind::SOCKOPT => size_of::<SockoptEvent>(),
        kind::BIND => size_of::<BindEvent>(),
        kind::CONNECT => size_of::<ConnectEvent>(),
        kind::CONNECT_ASYNC_ERROR | kind::ESTABLISHED => size_of::<SockEvent>(),
        kind::CLOSE => size_of::<CloseEvent>(),
        kind::RESET => size_of::<ResetEvent>(),
        kind::RESET_PEEK => size_of::<ResetPeekEvent>(),
        kind::LISTENING => size_of::<ListenEvent>(),
        _ => return 0,
    };
    size_of::<EventHeader>() + payload
}

/// Index of the lost-event counter in the `LOST_EVENTS` per-CPU array.
pub const LOST_EVENTS_INDEX: u32 = 0;

/// Names of the maps and globals the daemon looks up in the eBPF object.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST_EVENTS: &str = "LOST_EVENTS";
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
    pub const SOCKET_DROPS: &str = "SOCKET_DROPS";
    pub const DROPS_UNCOUNTED: &str = "DROPS_UNCOUNTED";
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
);
