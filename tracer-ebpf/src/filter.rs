//! Which tasks are traced, decided in process context from load-time globals.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_ancestor_cgroup_id,
};
use tracer_common::config::{FILTER_CGROUP, FILTER_LEARN_PIDS, FILTER_PROCESS};

use crate::{
    maps::{FILTER_COMMS, FILTER_PIDS, global},
    task_verdict::{self, Decision},
};

/// The current task as the filters and events see it.
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
}

pub fn current_task() -> Task {
    let pid_tgid = bpf_get_current_pid_tgid();
    Task { tgid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32 }
}

/// Whether the current task passes `--cgroup` and `--pid`/`--comm`: without a filter
/// at once, else from the verdict cached in the task's own storage (decided once per
/// task, again after an exec, a rename, a learned tgid or a cgroup move).
#[inline(always)]
pub fn selected() -> bool {
    let flags = global!(FILTERS.flags);
    if flags & (FILTER_CGROUP | FILTER_PROCESS) == 0 {
        return true;
    }
    task_verdict::cached(flags & FILTER_CGROUP != 0, || decide(flags))
}

/// The filters' verdict on the current task, from the filter maps.
fn decide(flags: u32) -> Decision {
    let selected = |selected| Decision { selected, not_learned: false };
    if flags & FILTER_CGROUP != 0 {
        let level = global!(FILTERS.cgroup_level);
        // SAFETY: helper call without pointer arguments.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor != global!(FILTERS.cgroup_id) {
            return selected(false);
        }
    }
    if flags & FILTER_PROCESS == 0 {
        return selected(true);
    }
    let tgid = current_task().tgid;
    // SAFETY: the value is a u8 the map owns; only its presence is read.
    if unsafe { FILTER_PIDS.get(tgid) }.is_some() {
        return selected(true);
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return selected(false);
    };
    // SAFETY: as above.
    if unsafe { FILTER_COMMS.get(comm) }.is_none() {
        return selected(false);
    }
    if flags & FILTER_LEARN_PIDS != 0 {
        if FILTER_PIDS.insert(tgid, 1, 0).is_err() {
            // The thread is still traced by its name; renamed threads of its process are not.
            return Decision { selected: true, not_learned: true };
        }
        // Its other threads may hold a "not selected" verdict: let them decide again.
        task_verdict::invalidate_all();
    }
    selected(true)
}
