//! The benchmark's floor (`sockerr bench-floor`, `cargo xtask bench`): programs that
//! return at once, attached to exactly the tracepoints `sockerr trace` attaches for the
//! same filters, classic or BTF-typed as sockerr's own. What a tracer costs beyond
//! the floor is what its programs do; the floor itself is what the kernel charges for
//! running any program there at all.
//!
//! Identical copies: a program can be attached to a tracepoint only once
//! (bpf_link_create answers EEXIST), and sockerr runs two programs on some tracepoints
//! (sys_exit_accept: fd reuse and accepted sockets). The n-th program sockerr attaches to
//! a tracepoint is matched by `floor_n`; the n-th BTF-typed tracepoint by `floor_btf_n`.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};

#[tracepoint]
pub fn floor_0(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_1(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_2(_ctx: TracePointContext) -> u32 {
    0
}

/// For the BTF-typed tracepoints (the `sock:*` ones, `tcp:tcp_destroy_sock` and
/// `tcp:tcp_receive_reset`). The kernel binds such a program to its tracepoint when it
/// loads it, so each needs a program of its own; the function named here is only the
/// section's, the loader names the tracepoint.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn floor_btf_0(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn floor_btf_1(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn floor_btf_2(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn floor_btf_3(_ctx: BtfTracePointContext) -> u32 {
    0
}
