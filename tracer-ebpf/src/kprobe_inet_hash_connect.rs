//! kprobe backend: `__inet_hash_connect()` returning an error, i.e. the EADDRNOTAVAIL of
//! connect() for IPv4 and IPv6 (net/ipv4/inet_hashtables.c):
//!
//! 6.1:  int __inet_hash_connect(struct inet_timewait_death_row *death_row,
//!           struct sock *sk, u64 port_offset,
//!           int (*check_established)(struct inet_timewait_death_row *, struct sock *,
//!                                    __u16, struct inet_timewait_sock **));
//! 6.12: the same prototype.
//! https://elixir.bootlin.com/linux/v6.1/source/net/ipv4/inet_hashtables.c
//! https://elixir.bootlin.com/linux/v6.12/source/net/ipv4/inet_hashtables.c
//!
//! Called from inet_hash_connect() (tcp_v4_connect) and inet6_hash_connect()
//! (tcp_v6_connect) with the socket in SYN_SENT. A bound socket's source port is checked
//! against the established hash (`check_established`: the 4-tuple is in use); an
//! unbound one walks ip_local_port_range and fails when no port is left. Both return
//! -EADDRNOTAVAIL from this function, which is why it, not its callees, is the origin.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::origin::FN_INET_HASH_CONNECT;

use crate::kernel_origin::{Call, record_return, remember_sock};

#[kprobe]
pub fn inet_hash_connect_entry(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(1) {
        remember_sock(Call::Connect, sk);
    }
    0
}

#[kretprobe]
pub fn inet_hash_connect_return(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    record_return(Call::Connect, FN_INET_HASH_CONNECT, ret, ret < 0, true);
    0
}
