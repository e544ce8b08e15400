//! `syscalls:sys_enter_bind` / `sys_exit_bind`.
//! SYSCALL_DEFINE3(bind, int, fd, struct sockaddr __user *, umyaddr, int, addrlen)
//! in net/socket.c; errors come from inet_bind_sk()/__inet_bind() in
//! net/ipv4/af_inet.c and __inet6_bind() in net/ipv6/af_inet6.c.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{BindEvent, KernelOrigin, config::FILTER_EMIT_ALL, kind};

use crate::{
    emit::{current_header, emit},
    filter::{current_task, selected},
    maps::{BindInFlight, failure_reported, global, tracked_opts},
    sockaddr::read_user_sockaddr,
    task_state,
};

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    if !selected() {
        return 0;
    }
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    let (fd, addr, len) = unsafe {
        (
            ctx.read_at::<u64>(global!(OFFSETS.bind_fd) as usize),
            ctx.read_at::<u64>(global!(OFFSETS.bind_addr) as usize),
            ctx.read_at::<u64>(global!(OFFSETS.bind_addrlen) as usize),
        )
    };
    let (Ok(fd), Ok(addr), Ok(len)) = (fd, addr, len) else {
        return 0;
    };
    let Some(addr) = read_user_sockaddr(addr, len) else {
        return 0;
    };
    let Some(state) = task_state::for_call() else {
        return 0;
    };
    state.bind = BindInFlight { fd: fd as i32, _pad: 0, addr, origin: KernelOrigin::default() };
    state.bind_active = 1;
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    // Tasks not inside a traced call (the most, node-wide) leave after one lookup.
    let Some(state) = task_state::in_bind() else {
        return 0;
    };
    let task = current_task();
    state.bind_active = 0;
    let call = BindInFlight { ..state.bind };
    // SAFETY: as in sys_enter_bind.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(global!(OFFSETS.sys_exit_ret) as usize) }) else {
        return 0;
    };
    let ret = ret as i32;
    // A successful bind is reported only with --all, whatever options the socket carries:
    // they travel with its later failures instead.
    if ret >= 0 && global!(FILTERS.flags) & FILTER_EMIT_ALL == 0 {
        return 0;
    }
    if ret < 0 {
        failure_reported(task.tgid, call.fd);
    }
    let opts = tracked_opts(task.tgid, call.fd);
    emit::<BindEvent, { kind::BIND }>(|r| {
        r.header = current_header(if ret < 0 { -ret } else { 0 }, &task);
        r.payload = BindEvent { fd: call.fd, ret, addr: call.addr, opts, origin: call.origin };
    });
    0
}
