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
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let _ = selected(&current_task());
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let task = current_task();
    if task.tgid == task.tid {
        let _ = FILTER_PIDS.remove(task.tgid);
    }
    0
}
