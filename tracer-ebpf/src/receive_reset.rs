//! `tcp:tcp_receive_reset`: an RST arrived on a socket. Emitted first thing in
//! tcp_reset() (net/ipv4/tcp_input.c, 6.1 to 6.18), before tcp_done() closes the socket,
//! mostly in softirq: the owner comes from `sockets::SOCK_OWNERS`, never from the
//! current task. Class tcp_event_sk (include/trace/events/tcp.h): ports, family, v4 and
//! v6 addresses, and `sock_cookie` where the kernel has it.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    SockAddr,
    reset::{OFFSET_ABSENT, REASON_NONE, RESET_RECEIVED},
};

use crate::{
    maps::{RESET_OFFSETS, global},
    reset_report::{attribute, report, seen_slot},
    sockaddr::{read_tuple_into, tuple_offsets},
};

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: reads inside the tracepoint record at an offset tracefs gave the daemon.
    let Ok(sk) = (unsafe { ctx.read_at::<u64>(global!(RESET_OFFSETS.recv_skaddr) as usize) }) else {
        return 0;
    };
    let Some(seen) = seen_slot() else {
        return 0;
    };
    seen.direction = RESET_RECEIVED;
    seen.sk = sk;
    seen.active = false;
    if !attribute(seen) {
        return 0;
    }
    let cookie_at = global!(RESET_OFFSETS.recv_cookie);
    seen.cookie = if cookie_at == OFFSET_ABSENT {
        0
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u64>(cookie_at as usize) }.unwrap_or(0)
    };
    let offsets = tuple_offsets(&raw const RESET_OFFSETS.recv_tuple);
    if !read_tuple_into(&ctx, &offsets, &mut seen.local, &mut seen.peer) {
        seen.local = SockAddr::default();
        seen.peer = SockAddr::default();
    }
    seen.state = 0;
    seen.reason = REASON_NONE;
    report(seen);
    0
}
