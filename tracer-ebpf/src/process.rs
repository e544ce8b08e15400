//! Following processes named by `--comm` across exec and exit.
//!
//! `sched:sched_process_exec` fires after begin_new_exec() set the new comm
//! (fs/exec.c, exec_binprm()), so `selected()` sees the new name and, with
//! FILTER_LEARN_PIDS, adds the tgid before any thread is renamed.
//! `sched:sched_process_exit` (kernel/exit.c, do_exit()) drops a tgid whose leader
//! exits, so a recycled pid is not traced by accident. Neither reads record fields.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    filter::{current_task, selected},
    maps::FILTER_PIDS,
    task_verdict,
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    // A new program, maybe a new name: the cached verdicts no longer hold.
    task_verdict::invalidate_all();
    let _ = selected();
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let task = current_task();
    if task.tgid == task.tid && FILTER_PIDS.remove(task.tgid).is_ok() {
        task_verdict::invalidate_all();
    }
    0
}

/// `task:task_rename` (prctl(PR_SET_NAME), a write to /proc/PID/comm): fires in the
/// renaming task, which may not be the renamed one, so every cached verdict is decided
/// again rather than only the current task's. Renames are rare (thread start-up).
#[tracepoint(category = "task", name = "task_rename")]
pub fn task_rename(_ctx: TracePointContext) -> u32 {
    task_verdict::invalidate_all();
    0
}
