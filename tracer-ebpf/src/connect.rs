//! `syscalls:sys_enter_connect` / `sys_exit_connect`.
//!
//! Entry records the destination; `sock_set_state` adds the source tuple and the
//! `struct sock` while the call runs; exit reports the result. TCP successes are
//! reported later, at ESTABLISHED (see `sock_set_state`), where the source is known;
//! successes only with `--all`, failures always.
//! Format: /sys/kernel/tracing/events/syscalls/sys_enter_connect/format, from
//! SYSCALL_DEFINE3(connect, int, fd, struct sockaddr __user *, uservaddr, int, addrlen)
//! in net/socket.c.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{ConnectEvent, KernelOrigin, SockAddr, SockEvent, config::FILTER_EMIT_ALL, kind};

use crate::{
    emit::{current_header, emit},
    filter::{current_task, selected},
    maps::{CONNECTS, ConnectInFlight, PENDING_CLOSE, failure_reported, global, tracked_opts},
    sockaddr::read_user_sockaddr,
};

const EINPROGRESS: i32 = 115;
/// connect() again on a socket already connecting or connected: how non-blocking
/// callers poll, not a failure of the connection.
const EALREADY: i32 = 114;
const EISCONN: i32 = 106;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if !selected() {
        return 0;
    }
    let task = current_task();
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    let (fd, addr, len) = unsafe {
        (
            ctx.read_at::<u64>(global!(OFFSETS.connect_fd) as usize),
            ctx.read_at::<u64>(global!(OFFSETS.connect_addr) as usize),
            ctx.read_at::<u64>(global!(OFFSETS.connect_addrlen) as usize),
        )
    };
    let (Ok(fd), Ok(addr), Ok(len)) = (fd, addr, len) else {
        return 0;
    };
    let Some(dst) = read_user_sockaddr(addr, len) else {
        return 0;
    };
    let fd = fd as i32;
    let opts = tracked_opts(task.tgid, fd);
    let inflight = ConnectInFlight {
        fd,
        async_errno: 0,
        dst,
        src: SockAddr::default(),
        opts,
        sk: 0,
        origin: KernelOrigin::default(),
    };
    let _ = CONNECTS.insert(task.tid, inflight, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let task = current_task();
    // SAFETY: the entry is copied out before it is removed.
    let Some(call) = (unsafe { CONNECTS.get(task.tid) }).map(|c| ConnectInFlight { ..*c }) else {
        return 0;
    };
    let _ = CONNECTS.remove(task.tid);
    // SAFETY: as in sys_enter_connect.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(global!(OFFSETS.sys_exit_ret) as usize) }) else {
        return 0;
    };
    let ret = ret as i32;
    if ret == -EINPROGRESS && call.async_errno != 0 {
        // The connection failed before the call returned (loopback RST), yet the
        // caller was told EINPROGRESS: report it as the asynchronous failure it is.
        failure_reported(task.tgid, call.fd);
        emit::<SockEvent, { kind::CONNECT_ASYNC_ERROR }>(|r| {
            r.header = current_header(call.async_errno, &task);
            r.payload = SockEvent {
                fd: call.fd,
                _pad: 0,
                src: call.src,
                dst: call.dst,
                opts: call.opts,
                sk: call.sk,
            };
        });
        return 0;
    }
    let failed = ret < 0 && ret != -EINPROGRESS && ret != -EALREADY && ret != -EISCONN;
    // TCP successes are reported at ESTABLISHED; other protocols (UDP) have no
    // state change, so their success is reported here. Either only with --all.
    let reported_success = ret == 0 && call.sk == 0 && global!(FILTERS.flags) & FILTER_EMIT_ALL != 0;
    if failed {
        forget_pending_close(call.sk);
        failure_reported(task.tgid, call.fd);
    }
    if !failed && !reported_success {
        return 0;
    }
    emit::<ConnectEvent, { kind::CONNECT }>(|r| {
        r.header = current_header(if failed { -ret } else { 0 }, &task);
        r.payload = ConnectEvent {
            fd: call.fd,
            ret,
            dst: call.dst,
            src: call.src,
            opts: call.opts,
            sk: call.sk,
            origin: call.origin,
        };
    });
    0
}

/// A connect() that failed synchronously left SYN_SENT -> CLOSE waiting for an error
/// report that never comes; drop it so it cannot pair with another socket's report.
fn forget_pending_close(sk: u64) {
    if sk == 0 {
        return;
    }
    if let Some(pending) = PENDING_CLOSE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, process context.
        let pending = unsafe { &mut *pending };
        if pending.sk == sk {
            pending.ts_ns = 0;
        }
    }
}
