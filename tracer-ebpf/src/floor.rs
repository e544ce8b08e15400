//! The benchmark's floor (`sockerr bench-floor`, `cargo xtask bench`): programs that
//! return at once, attached to exactly the tracepoints `sockerr trace` attaches for the
//! same filters, classic or raw as sockerr's own. What a tracer costs beyond the floor is
//! what its programs do; the floor itself is what the kernel charges for running any
//! program there at all.
//!
//! Identical copies: a program can be attached to a tracepoint only once
//! (bpf_link_create answers EEXIST), and sockerr runs two programs on some tracepoints
//! (sys_exit_accept: fd reuse and accepted sockets). The n-th program sockerr attaches to
//! a tracepoint is matched by `floor_n` (by `floor_raw_n` on a raw tracepoint).

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
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

/// For the raw tracepoints (the `sock:*` ones).
#[raw_tracepoint]
pub fn floor_raw_0(_ctx: RawTracePointContext) -> u32 {
    0
}
