//! `tcp:tcp_receive_reset`: an RST arrived on a socket. Emitted first thing in
//! tcp_reset() (net/ipv4/tcp_input.c, 6.1 to 6.18), before tcp_done() closes the socket,
//! mostly in softirq: the owner comes from `sockets::SOCK_OWNERS`, never from the
//! current task.
//!
//! BTF-typed (`tp_btf`), not classic. The kernel runs one classic tracepoint or kprobe
//! program per CPU at a time (`bpf_prog_active`), so a classic program here missed the
//! RST of every softirq that interrupted such a program, sockerr's own syscall programs
//! included, and before Linux 6.7 without a count. A BTF-typed program is only kept from
//! running inside itself, as the `sock:*` ones are, and such a skipped run is counted
//! on every kernel sockerr supports. It is handed the socket: the tuple comes from BTF
//! offsets (`sock_tuple`), and the cookie from `bpf_get_socket_cookie`, which makes one
//! for a socket that has none as the classic record's `sock_cookie` did
//! (`sock_gen_cookie()`).
//!
//! match-proto: TP_PROTO(struct sock *sk) (include/trace/events/tcp.h, class
//! tcp_event_sk, 6.1 to 6.18).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use tracer_common::reset::{REASON_NONE, RESET_RECEIVED};

use crate::{
    reset_report::{RECEIVED_SLOT, attribute, report, seen_slot},
    sock_tuple::read_record_tuple,
};

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> u32 {
    let sk: *mut c_void = ctx.arg(0);
    let Some(seen) = seen_slot(RECEIVED_SLOT) else {
        return 0;
    };
    seen.direction = RESET_RECEIVED;
    seen.sk = sk as u64;
    seen.active = false;
    if !attribute(seen) {
        return 0;
    }
    // SAFETY: `sk` is the tracepoint's own argument, a BTF-typed socket pointer.
    seen.cookie = unsafe { bpf_get_socket_cookie(sk) };
    read_record_tuple(sk as u64, &mut seen.local, &mut seen.peer);
    seen.state = 0;
    seen.reason = REASON_NONE;
    report(seen);
    0
}
