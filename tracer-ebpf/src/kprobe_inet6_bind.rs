//! kprobe backend: `__inet6_bind()` returning an error: IPv6 bind() refused
//! (net/ipv6/af_inet6.c), the IPv6 twin of kprobe_inet_bind.rs. Static in the source, but
//! not inlined in Debian's 6.1 and 6.12 builds (it is in /proc/kallsyms).
//!
//! 6.1:  static int __inet6_bind(struct sock *sk, struct sockaddr *uaddr, int addr_len,
//!                               u32 flags);
//! 6.12: the same prototype.
//! https://elixir.bootlin.com/linux/v6.1/source/net/ipv6/af_inet6.c
//! https://elixir.bootlin.com/linux/v6.12/source/net/ipv6/af_inet6.c

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::origin::FN_INET6_BIND;

use crate::kernel_origin::{Call, record_return, remember_sock};

#[kprobe]
pub fn inet6_bind_entry(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        remember_sock(Call::Bind, sk);
    }
    0
}

#[kretprobe]
pub fn inet6_bind_return(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    record_return(Call::Bind, FN_INET6_BIND, ret, ret < 0, true);
    0
}
