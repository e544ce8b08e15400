//! The benchmark's floor (`sockerr bench-floor`, `cargo xtask bench`): programs that
//! return at once, attached to exactly the tracepoints `sockerr trace` attaches for the
//! same filters. What a tracer costs beyond the floor is what its programs do; the floor
//! itself is what the kernel charges for running any program there at all.
//!
//! Identical copies: a program can be attached to a tracepoint only once
//! (bpf_link_create answers EEXIST), and sockerr runs two programs on some tracepoints
//! (sys_exit_accept: fd reuse and accepted sockets). The n-th program sockerr attaches to
//! a tracepoint is matched by `floor_n`.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

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
