//! `tcp:tcp_destroy_sock`: the kernel frees the socket, so its address may name another
//! socket next; forget its owner. Emitted by tcp_v4_destroy_sock() (net/ipv4/tcp_ipv4.c,
//! also IPv6's destroy), which inet_csk_destroy_sock() calls after any reset the socket
//! sent. Format: /sys/kernel/tracing/events/tcp/tcp_destroy_sock/format.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{maps::global, sockets::SOCK_OWNERS};

#[tracepoint(category = "tcp", name = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    // SAFETY: reads inside the tracepoint record at an offset tracefs gave the daemon.
    if let Ok(sk) = unsafe { ctx.read_at::<u64>(global!(RESET_OFFSETS.destroy_skaddr) as usize) } {
        let _ = SOCK_OWNERS.remove(sk);
    }
    0
}
