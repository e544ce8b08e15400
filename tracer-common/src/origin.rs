//! Where in the kernel a failing bind()/connect() was refused, and what the `struct sock`
//! held at that moment: filled by the kprobe backend (kretprobes on the functions below),
//! all zero with the tracepoint backend.

/// No kretprobe saw the error (tracepoint backend, or an error raised elsewhere).
pub const FN_NONE: u32 = 0;
/// `__inet_hash_connect()` (net/ipv4/inet_hashtables.c): no usable source port, or the
/// 4-tuple of a bound socket is in use (EADDRNOTAVAIL), for IPv4 and IPv6.
pub const FN_INET_HASH_CONNECT: u32 = 1;
/// `__inet_bind()` (net/ipv4/af_inet.c).
pub const FN_INET_BIND: u32 = 2;
/// `__inet6_bind()` (net/ipv6/af_inet6.c).
pub const FN_INET6_BIND: u32 = 3;
/// `inet_csk_get_port()` (net/ipv4/inet_connection_sock.c): the port is taken.
pub const FN_INET_CSK_GET_PORT: u32 = 4;

/// The kernel function a `FN_*` id stands for.
pub const fn function_name(id: u32) -> Option<&'static str> {
    match id {
        FN_INET_HASH_CONNECT => Some("__inet_hash_connect"),
        FN_INET_BIND => Some("__inet_bind"),
        FN_INET6_BIND => Some("__inet6_bind"),
        FN_INET_CSK_GET_PORT => Some("inet_csk_get_port"),
        _ => None,
    }
}

/// The innermost probed function that returned an error during one bind()/connect(),
/// with the socket's fields read at its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOrigin {
    /// One of the `FN_*` ids.
    pub function: u32,
    /// The function's return value (a negative errno, or 1 from `inet_csk_get_port`).
    pub ret: i32,
    /// `sk_state` (TCP state numbers).
    pub state: u8,
    /// `sk_reuse` (SK_CAN_REUSE after SO_REUSEADDR).
    pub reuse: u8,
    /// `sk_reuseport`.
    pub reuseport: u8,
    pub _pad: u8,
    /// `sk_mark`.
    pub mark: u32,
    /// Local address (`skc_rcv_saddr`/`skc_v6_rcv_saddr`) and port (`skc_num`).
    pub src: crate::SockAddr,
    /// Remote address (`skc_daddr`/`skc_v6_daddr`) and port (`skc_dport`).
    pub dst: crate::SockAddr,
}

const _: () = assert!(size_of::<KernelOrigin>() == 64);

/// Where the `struct sock` fields the kprobe programs read are, as byte offsets from the
/// start of `struct sock`, found in the kernel's BTF (/sys/kernel/btf/vmlinux) at
/// start-up: nothing about the layout is compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    pub family: u32,
    pub state: u32,
    /// Byte holding the `skc_reuse` bitfield, and the field's shift and width in it.
    pub reuse_byte: u32,
    pub reuse_shift: u32,
    pub reuse_bits: u32,
    pub reuseport_byte: u32,
    pub reuseport_shift: u32,
    pub reuseport_bits: u32,
    pub num: u32,
    pub dport: u32,
    pub rcv_saddr: u32,
    pub daddr: u32,
    pub v6_rcv_saddr: u32,
    pub v6_daddr: u32,
    pub mark: u32,
    /// `sk_err`: whether a socket leaving SYN_SENT failed (an error report follows) or
    /// was closed without one (`tracer_common::pairing`).
    pub err: u32,
    /// `sk_protocol` (a `u16` since Linux 5.6): the BTF-typed `inet_sock_set_state` hook gets
    /// the socket, not the record's `protocol` field, and keeps to TCP.
    pub protocol: u32,
    /// `inet_sport` of `struct inet_sock` (network order): the local port as the
    /// `sock:*` records report it. tcp_set_state() releases the port (`skc_num` = 0)
    /// before the socket's move to CLOSE is traced; `inet_sport` keeps it.
    pub sport: u32,
}

const _: () = assert!(size_of::<SockOffsets>() == 18 * 4);
