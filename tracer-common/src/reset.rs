//! TCP resets: what `tcp:tcp_send_reset` / `tcp:tcp_receive_reset` saw, who owns the
//! socket, and (with `--http-peek`) the first bytes of the socket's last exchange.

use crate::{SockAddr, sockaddr::TupleOffsets};

/// [`ResetEvent::direction`]: this host sent the RST.
pub const RESET_SENT: u32 = 1;
/// [`ResetEvent::direction`]: this host received the RST.
pub const RESET_RECEIVED: u32 = 2;

/// [`ResetEvent::attributed`]: no traced process owns the socket (or there is none);
/// the header's tgid is 0.
pub const ATTRIBUTED_NONE: u32 = 0;
/// The socket was recorded when a traced process connected or accepted it.
pub const ATTRIBUTED_SOCKET: u32 = 1;
/// The RST was sent inside a traced process's close() of the socket.
pub const ATTRIBUTED_CLOSE: u32 = 2;

/// [`ResetEvent::reason`] when the kernel's tracepoint has no `reason` field
/// (`tcp:tcp_send_reset` before Linux 6.10, and `tcp:tcp_receive_reset` always).
pub const REASON_NONE: u32 = u32::MAX;

/// Payload of [`crate::kind::RESET`], and the head of [`crate::kind::RESET_PEEK`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetEvent {
    /// [`RESET_SENT`] or [`RESET_RECEIVED`].
    pub direction: u32,
    /// `ATTRIBUTED_*`: how the owner in the header was found.
    pub attributed: u32,
    /// The owner's fd, -1 when unattributed.
    pub fd: i32,
    /// TCP state of the socket when the RST was sent; 0 when unknown.
    pub state: i32,
    /// `enum sk_rst_reason` value, or [`REASON_NONE`].
    pub reason: u32,
    /// 1 when the RST was not an answer to an incoming segment (tcp_send_active_reset()).
    pub active: u32,
    /// Kernel address of the `struct sock`, 0 when the kernel had none (identity only).
    pub sk: u64,
    /// The socket's cookie (`sock_cookie` of tcp_receive_reset), 0 when absent.
    pub cookie: u64,
    /// This host's end.
    pub local: SockAddr,
    /// The other end.
    pub peer: SockAddr,
    /// Options the owner set on the socket, as recorded when it connected, accepted or
    /// closed it (empty when unattributed): successful setsockopt() calls are not
    /// reported by default, so this is where a reset's options come from.
    pub opts: crate::SockOpts,
}

const _: () = assert!(size_of::<ResetEvent>() == 96);

/// Bytes of each direction kept per socket by `--http-peek`.
pub const PEEK_BYTES: usize = 1024;

/// One socket's last exchange, as `--http-peek` kept it: the first [`PEEK_BYTES`] the
/// process sent and received since the exchange began.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeekCopy {
    /// The owner's fd; -1 when this slot is empty.
    pub fd: i32,
    /// Bytes valid in `sent` / `received`.
    pub sent_len: u32,
    pub received_len: u32,
    pub _pad: u32,
    /// Bytes sent / received in the exchange, also beyond what was kept (saturating).
    pub sent_total: u64,
    pub received_total: u64,
    /// `bpf_ktime_get_ns()` of the last data received.
    pub received_ns: u64,
    pub local: SockAddr,
    pub peer: SockAddr,
    pub sent: [u8; PEEK_BYTES],
    pub received: [u8; PEEK_BYTES],
}

impl Default for PeekCopy {
    fn default() -> Self {
        Self {
            fd: -1,
            sent_len: 0,
            received_len: 0,
            _pad: 0,
            sent_total: 0,
            received_total: 0,
            received_ns: 0,
            local: SockAddr::default(),
            peer: SockAddr::default(),
            sent: [0; PEEK_BYTES],
            received: [0; PEEK_BYTES],
        }
    }
}

const _: () = assert!(size_of::<PeekCopy>() == 88 + 2 * PEEK_BYTES);

/// Payload of [`crate::kind::RESET_PEEK`]: a reset, the exchange on its own socket, and
/// the exchange on the socket of the same process that received data last (a proxy
/// resets its client after a bad answer from the upstream: that answer is there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetPeekEvent {
    pub reset: ResetEvent,
    pub own: PeekCopy,
    pub related: PeekCopy,
}

/// A tracepoint field sockerr reads when the kernel has it.
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// [`ResetOffsets::send_layout`]: `tcp:tcp_send_reset` as before Linux 6.10
/// (class tcp_event_sk_skb: sport, dport, family, saddr[4], daddr[4], saddr_v6, daddr_v6).
pub const SEND_LAYOUT_FIELDS: u32 = 1;
/// Linux 6.10 and later: `saddr`/`daddr` are `struct sockaddr_in6`-sized arrays holding a
/// sockaddr_in or sockaddr_in6 (TP_STORE_ADDR_PORTS), no separate ports or family.
pub const SEND_LAYOUT_SOCKADDR: u32 = 2;

/// Offsets of the fields the reset and `--http-peek` programs read, from tracefs.
/// Fields the kernel may lack are [`OFFSET_ABSENT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetOffsets {
    // tcp:tcp_send_reset
    pub send_skbaddr: u32,
    pub send_skaddr: u32,
    pub send_state: u32,
    pub send_reason: u32,
    pub send_layout: u32,
    /// With [`SEND_LAYOUT_SOCKADDR`], `saddr` and `daddr` are the two sockaddr_in6 fields
    /// and the rest [`OFFSET_ABSENT`].
    pub send_tuple: TupleOffsets,
    // syscalls:sys_enter_accept, sys_enter_accept4
    pub accept_fd: u32,
    pub accept_addr: u32,
    /// First three argument slots of the `--http-peek` syscalls (fd, buffer or iovec or
    /// msghdr, length or count); 0 when `--http-peek` is off.
    pub peek_fd: u32,
    pub peek_buf: u32,
    pub peek_len: u32,
}

const _: () = assert!(size_of::<ResetOffsets>() == 17 * 4);

/// `--http-peek` directions.
pub const PEEK_SENT: u8 = 1;
pub const PEEK_RECEIVED: u8 = 2;
