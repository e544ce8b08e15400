//! kprobe backend: `__inet_bind()` returning an error: IPv4 bind() refused
//! (net/ipv4/af_inet.c). EADDRNOTAVAIL (address not local, no IP_TRANSPARENT/FREEBIND)
//! is raised here; EADDRINUSE comes from inet_csk_get_port() (kprobe_inet_csk_get_port.rs),
//! whose refusal this function turns into the errno.
//!
//! 6.1:  int __inet_bind(struct sock *sk, struct sockaddr *uaddr, int addr_len, u32 flags);
//!       called by inet_bind(struct socket *, ...).
//! 6.12: the same prototype; called by inet_bind_sk(struct sock *, ...) from inet_bind().
//! https://elixir.bootlin.com/linux/v6.1/source/net/ipv4/af_inet.c
//! https://elixir.bootlin.com/linux/v6.12/source/net/ipv4/af_inet.c

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::origin::FN_INET_BIND;

use crate::kernel_origin::{Call, record_return, remember_sock};

#[kprobe]
pub fn inet_bind_entry(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        remember_sock(Call::Bind, sk);
    }
    0
}

#[kretprobe]
pub fn inet_bind_return(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    record_return(Call::Bind, FN_INET_BIND, ret, ret < 0, true);
    0
}
