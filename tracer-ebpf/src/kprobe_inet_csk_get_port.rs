//! kprobe backend: `inet_csk_get_port()` refusing a port inside bind(): the port is
//! held (a listener, a bound socket, a TIME_WAIT socket) and the reuse rules forbid
//! sharing it (net/ipv4/inet_connection_sock.c). It returns 1, not an errno; the caller
//! (__inet_bind/__inet6_bind) turns that into EADDRINUSE.
//!
//! 6.1:  int inet_csk_get_port(struct sock *sk, unsigned short snum);
//! 6.12: the same prototype.
//! https://elixir.bootlin.com/linux/v6.1/source/net/ipv4/inet_connection_sock.c
//! https://elixir.bootlin.com/linux/v6.12/source/net/ipv4/inet_connection_sock.c
//!
//! listen() calls it too; only calls inside a traced bind() are recorded.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::origin::FN_INET_CSK_GET_PORT;

use crate::kernel_origin::{Call, record_return, remember_sock};

#[kprobe]
pub fn inet_csk_get_port_entry(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        remember_sock(Call::Bind, sk);
    }
    0
}

#[kretprobe]
pub fn inet_csk_get_port_return(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    // Nested in __inet_bind/__inet6_bind, which release the remembered socket.
    record_return(Call::Bind, FN_INET_CSK_GET_PORT, ret, ret != 0, false);
    0
}
