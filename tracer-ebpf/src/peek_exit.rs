//! `--http-peek` syscall exits (read, write, readv, writev, recvfrom, sendto, recvmsg,
//! sendmsg): `ret` bytes were transferred; copy them (see `peek`).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint]
pub fn peek_exit(ctx: TracePointContext) -> u32 {
    crate::peek::exit(&ctx);
    0
}
