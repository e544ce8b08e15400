//! `tcp:tcp_send_reset`: this host sends an RST.
//!
//! Called with skb NULL from tcp_send_active_reset() (net/ipv4/tcp_output.c) for the
//! resets a process causes: close() with unread data or with SO_LINGER {1, 0}, and
//! abort paths (tcp_disconnect(), timeouts); the tracepoint call is there in 6.1
//! (`trace_tcp_send_reset(sk, NULL)`), 6.12 and 6.18 (`trace_tcp_send_reset(sk, NULL,
//! reason)`). With the offending skb from tcp_v4_send_reset()/tcp_v6_send_reset() for
//! RSTs answering a segment: 6.1 traces those only for full sockets, 6.10 and later
//! also without a socket (sk NULL, tuple from the skb).
//!
//! The record differs by kernel (include/trace/events/tcp.h): up to 6.9 it is class
//! tcp_event_sk_skb (separate ports, family, v4 and v6 addresses, no reason); from 6.10
//! its own event with `enum sk_rst_reason reason` and `saddr`/`daddr` holding a
//! sockaddr_in or sockaddr_in6 (TP_STORE_ADDR_PORTS in net_probe_common.h). The daemon
//! reads the format and says which layout applies (`ResetOffsets::send_layout`).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    SockAddr,
    reset::{OFFSET_ABSENT, REASON_NONE, RESET_SENT, SEND_LAYOUT_SOCKADDR},
    sockaddr::{AF_INET, AF_INET6},
};

use crate::{
    maps::{RESET_OFFSETS, global},
    reset_report::{SENT_SLOT, attribute, report, seen_slot},
    sockaddr::{read_tuple_into, tuple_offsets},
};

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    let fields = unsafe {
        (
            ctx.read_at::<u64>(global!(RESET_OFFSETS.send_skbaddr) as usize),
            ctx.read_at::<u64>(global!(RESET_OFFSETS.send_skaddr) as usize),
        )
    };
    let (Ok(skb), Ok(sk)) = fields else {
        return 0;
    };
    let Some(seen) = seen_slot(SENT_SLOT) else {
        return 0;
    };
    seen.direction = RESET_SENT;
    seen.sk = sk;
    seen.active = skb == 0;
    if !attribute(seen) {
        return 0;
    }
    // SAFETY: as above.
    let Ok(state) = (unsafe { ctx.read_at::<i32>(global!(RESET_OFFSETS.send_state) as usize) }) else {
        return 0;
    };
    let reason_at = global!(RESET_OFFSETS.send_reason);
    seen.reason = if reason_at == OFFSET_ABSENT {
        REASON_NONE
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u32>(reason_at as usize) }.unwrap_or(REASON_NONE)
    };
    let offsets = tuple_offsets(&raw const RESET_OFFSETS.send_tuple);
    if global!(RESET_OFFSETS.send_layout) == SEND_LAYOUT_SOCKADDR {
        seen.local = record_sockaddr(&ctx, offsets.saddr);
        seen.peer = record_sockaddr(&ctx, offsets.daddr);
    } else if !read_tuple_into(&ctx, &offsets, &mut seen.local, &mut seen.peer) {
        seen.local = SockAddr::default();
        seen.peer = SockAddr::default();
    }
    seen.state = state;
    seen.cookie = 0;
    report(seen);
    0
}

/// A sockaddr_in or sockaddr_in6 stored in the record (ports and addresses in network
/// order, as in the uapi structs); family 0 (unknown) when the kernel left it zeroed.
fn record_sockaddr(ctx: &TracePointContext, at: u32) -> SockAddr {
    let at = at as usize;
    let mut out = SockAddr::default();
    // SAFETY: reads inside the tracepoint record, within the 28 bytes tracefs sized.
    unsafe {
        let (Ok(family), Ok(port)) = (ctx.read_at::<u16>(at), ctx.read_at::<u16>(at + 2)) else {
            return out;
        };
        match family {
            AF_INET => {
                if let Ok(addr) = ctx.read_at::<[u8; 4]>(at + 4) {
                    out.addr[..4].copy_from_slice(&addr);
                    out.family = AF_INET;
                }
            }
            AF_INET6 => {
                if let (Ok(addr), Ok(scope)) = (ctx.read_at::<[u8; 16]>(at + 8), ctx.read_at::<u32>(at + 24))
                {
                    out.addr = addr;
                    out.scope_id = scope;
                    out.family = AF_INET6;
                }
            }
            _ => return out,
        }
        out.port = u16::from_be(port);
    }
    out
}
