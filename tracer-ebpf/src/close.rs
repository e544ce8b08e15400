//! The end of a tracked socket's fd: `syscalls:sys_enter_close`, and fd numbers that
//! socket()/accept() hand out again while still tracked (dup2, close_range and exec
//! close fds without close(2)). Only fds in `TRACKED` produce events, and without `--all`
//! only those a failure record named: the record retires user space's table entry.
//! SYSCALL_DEFINE1(close, unsigned int, fd) in fs/open.c.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    CloseEvent, SockOpts,
    close::{CLOSE_REASON_CLOSE, CLOSE_REASON_FD_REUSED},
    config::FILTER_EMIT_ALL,
    kind,
};

use crate::{
    emit::{current_header, emit},
    filter::{Task, current_task, selected},
    maps::{TRACKED, fd_key, forget_tracked, global},
};

/// Forgets the options of `fd` and reports its close when user space holds an entry for
/// it (a failure was reported on it) or `--all` asks; returns the options it had.
fn untrack(task: &Task, fd: i32, reason: u32) -> SockOpts {
    let key = fd_key(task.tgid, fd);
    // SAFETY: the value is copied out at once.
    let Some(tracked) = unsafe { TRACKED.get(key) }.copied() else {
        return SockOpts::default();
    };
    forget_tracked(key);
    // The close of a socket nothing failed on is not news: user space has no entry to
    // retire (its options only ever travelled inside records that were not sent).
    if tracked.failure_reported == 0 && global!(FILTERS.flags) & FILTER_EMIT_ALL == 0 {
        return tracked.opts;
    }
    emit::<CloseEvent, { kind::CLOSE }>(|r| {
        r.header = current_header(0, task);
        r.payload = CloseEvent { fd, reason };
    });
    tracked.opts
}

#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    // Every close() of every process lands here: one check for the untraced ones. Only
    // selected tasks have TRACKED or FD_SOCKS entries or own a reset sent in close().
    if !selected() {
        return 0;
    }
    let task = current_task();
    // SAFETY: reads inside the tracepoint record at an offset tracefs gave the daemon.
    if let Ok(fd) = unsafe { ctx.read_at::<u64>(global!(OFFSETS.close_fd) as usize) } {
        let opts = untrack(&task, fd as i32, CLOSE_REASON_CLOSE);
        crate::sockets::close_started(&task, fd as i32, opts);
    }
    0
}

/// Attached to `sys_exit_socket`, `sys_exit_accept` and `sys_exit_accept4`: all return
/// the new fd.
#[tracepoint]
pub fn sys_exit_new_fd(ctx: TracePointContext) -> u32 {
    // SAFETY: as above.
    if let Ok(ret) = unsafe { ctx.read_at::<i64>(global!(OFFSETS.sys_exit_ret) as usize) }
        && ret >= 0
    {
        // Every socket() and accept() of every process: as in sys_enter_close, one check
        // for the untraced ones, which have no TRACKED or FD_SOCKS entries.
        if !selected() {
            return 0;
        }
        let task = current_task();
        untrack(&task, ret as i32, CLOSE_REASON_FD_REUSED);
        // Whatever the fd named before is gone.
        crate::peek::fd_closed(task.tgid, ret as i32);
    }
    0
}
