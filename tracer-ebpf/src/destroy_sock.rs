//! `tcp:tcp_destroy_sock`, BTF-typed (`tp_btf`): the kernel frees the socket, so its
//! address may name another socket next; forget its owner (`sockets::destroyed`). Emitted by
//! tcp_v4_destroy_sock() (net/ipv4/tcp_ipv4.c, also IPv6's destroy), which
//! inet_csk_destroy_sock() calls after any reset the socket sent.
//!
//! Not a classic tracepoint: it fires once for every TCP socket the node frees, and
//! the classic record (class tcp_event_sk) copies the tuple and, where it has
//! `sock_cookie` (6.18 does), calls sock_gen_cookie(), which gives the socket a cookie
//! nothing asked for. The program needs only the socket.
//!
//! match-proto: TP_PROTO(struct sock *sk) (include/trace/events/tcp.h, 4.16 to 6.18).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::sockets;

#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: BtfTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    sockets::destroyed(sk);
    0
}
