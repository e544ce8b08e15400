//! `--http-peek` syscall entries, one program per way the syscall passes its data and
//! per direction (see `peek`). Formats: /sys/kernel/tracing/events/syscalls/sys_enter_*
//! /format; the first three argument slots are the same in all (the daemon checks):
//! SYSCALL_DEFINE3(read, unsigned int, fd, char __user *, buf, size_t, count) and write
//! (fs/read_write.c); SYSCALL_DEFINE3(readv/writev, unsigned long, fd,
//! const struct iovec __user *, vec, unsigned long, vlen) (fs/read_write.c);
//! SYSCALL_DEFINE6(recvfrom/sendto, int, fd, void __user *, ubuf, size_t, size, ...) and
//! SYSCALL_DEFINE3(recvmsg/sendmsg, int, fd, struct user_msghdr __user *, msg,
//! unsigned int, flags) (net/socket.c).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::reset::{PEEK_RECEIVED, PEEK_SENT};

use crate::peek::{Shape, enter};

/// read, recvfrom.
#[tracepoint]
pub fn peek_enter_recv(ctx: TracePointContext) -> u32 {
    enter(&ctx, PEEK_RECEIVED, Shape::Buffer);
    0
}

/// write, sendto.
#[tracepoint]
pub fn peek_enter_send(ctx: TracePointContext) -> u32 {
    enter(&ctx, PEEK_SENT, Shape::Buffer);
    0
}

#[tracepoint]
pub fn peek_enter_readv(ctx: TracePointContext) -> u32 {
    enter(&ctx, PEEK_RECEIVED, Shape::Iovec);
    0
}

#[tracepoint]
pub fn peek_enter_writev(ctx: TracePointContext) -> u32 {
    enter(&ctx, PEEK_SENT, Shape::Iovec);
    0
}

#[tracepoint]
pub fn peek_enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter(&ctx, PEEK_RECEIVED, Shape::Msghdr);
    0
}

#[tracepoint]
pub fn peek_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter(&ctx, PEEK_SENT, Shape::Msghdr);
    0
}
