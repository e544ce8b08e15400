//! `syscalls:sys_enter_setsockopt` / `sys_exit_setsockopt`.
//! SYSCALL_DEFINE5(setsockopt, int, fd, int, level, int, optname, char __user *, optval,
//! int, optlen) in net/socket.c. Only the options of `tracer_common::options` are kept;
//! every other (level, optname) returns at entry. A successful call updates `TRACKED`
//! and is reported only with `--all`; a failed one is always reported.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use tracer_common::{Loss, SockoptEvent, config::FILTER_EMIT_ALL, kind, options::option_flag};

use crate::{
    emit::{current_header, emit},
    filter::{current_task, selected},
    maps::{SockoptInFlight, apply_option, count_loss, failure_reported, fd_key, global, tracked_opts},
    task_state,
};

/// setsockopt()'s five arguments, in the order of the syscall's record.
struct Args {
    fd: u64,
    level: u64,
    optname: u64,
    optval: u64,
    optlen: u64,
}

/// The call's arguments, which every setsockopt() of every process reads (the level and
/// optname decide at once whether anything else is done): one read where the record has
/// them in consecutive 8-byte slots (the syscall records give each argument one, in
/// order), one per argument otherwise.
#[inline(always)]
fn args(ctx: &TracePointContext) -> Option<Args> {
    let fd_at = global!(OFFSETS.setsockopt_fd) as usize;
    let at = [
        fd_at,
        global!(OFFSETS.setsockopt_level) as usize,
        global!(OFFSETS.setsockopt_optname) as usize,
        global!(OFFSETS.setsockopt_optval) as usize,
        global!(OFFSETS.setsockopt_optlen) as usize,
    ];
    let consecutive = at[1] == fd_at + 8 && at[2] == fd_at + 16 && at[3] == fd_at + 24 && at[4] == fd_at + 32;
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    let [fd, level, optname, optval, optlen] = unsafe {
        if consecutive {
            ctx.read_at::<[u64; 5]>(fd_at).ok()?
        } else {
            [
                ctx.read_at::<u64>(at[0]).ok()?,
                ctx.read_at::<u64>(at[1]).ok()?,
                ctx.read_at::<u64>(at[2]).ok()?,
                ctx.read_at::<u64>(at[3]).ok()?,
                ctx.read_at::<u64>(at[4]).ok()?,
            ]
        }
    };
    Some(Args { fd, level, optname, optval, optlen })
}

#[tracepoint(category = "syscalls", name = "sys_enter_setsockopt")]
pub fn sys_enter_setsockopt(ctx: TracePointContext) -> u32 {
    let Some(Args { fd, level, optname, optval, optlen }) = args(&ctx) else {
        return 0;
    };
    let (level, optname) = (level as i32, optname as i32);
    let flag = option_flag(level, optname);
    if flag == 0 {
        return 0;
    }
    if !selected() {
        return 0;
    }
    let optlen = optlen as i32;
    // The kernel reads an int for all of these options (sk_setsockopt,
    // do_ip_setsockopt); a shorter optval makes it fail with EINVAL, which the exit
    // still reports, with the first byte as the value.
    // SAFETY: bpf_probe_read_user faults safely on bad user pointers.
    let value = unsafe {
        if optlen >= 4 {
            bpf_probe_read_user(optval as *const u32).ok()
        } else if optlen >= 1 {
            bpf_probe_read_user(optval as *const u8).map(u32::from).ok()
        } else {
            Some(0)
        }
    };
    // A faulting buffer is not a value: the record says so instead of carrying 0.
    let value_unread = u32::from(value.is_none());
    if value.is_none() {
        count_loss(Loss::UserReadFault);
    }
    let value = value.unwrap_or(0);
    let Some(state) = task_state::for_call() else {
        return 0;
    };
    state.sockopt = SockoptInFlight { fd: fd as i32, level, optname, optlen, value, flag, value_unread };
    state.sockopt_active = 1;
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setsockopt")]
pub fn sys_exit_setsockopt(ctx: TracePointContext) -> u32 {
    // Tasks not inside a traced call (the most, node-wide) leave after one lookup.
    let Some(state) = task_state::in_setsockopt() else {
        return 0;
    };
    let task = current_task();
    state.sockopt_active = 0;
    let call = SockoptInFlight { ..state.sockopt };
    // SAFETY: a read inside the tracepoint record at an offset tracefs gave the daemon.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(global!(OFFSETS.sys_exit_ret) as usize) }) else {
        return 0;
    };
    let ret = ret as i32;
    let opts = if ret == 0 {
        let value = if call.value_unread != 0 { None } else { Some(call.value) };
        let opts = apply_option(fd_key(task.tgid, call.fd), call.flag, value);
        // A successful call is state, not news: the options travel with the socket's
        // failure and reset records. Only --all reports the call itself.
        if global!(FILTERS.flags) & FILTER_EMIT_ALL == 0 {
            return 0;
        }
        opts
    } else {
        failure_reported(task.tgid, call.fd);
        tracked_opts(task.tgid, call.fd)
    };
    emit::<SockoptEvent, { kind::SOCKOPT }>(|r| {
        r.header = current_header(if ret < 0 { -ret } else { 0 }, &task);
        r.payload = SockoptEvent {
            fd: call.fd,
            level: call.level,
            optname: call.optname,
            optlen: call.optlen,
            value: call.value,
            ret,
            opts,
            value_unread: call.value_unread,
            _pad: 0,
        };
    });
    0
}
