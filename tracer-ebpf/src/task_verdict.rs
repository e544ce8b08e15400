//! The filter verdict of each task, decided once and kept in the task's own storage
//! (`task_state`): nothing is keyed by a reusable tid and nothing is evicted.
//!
//! A verdict holds while nothing it depends on changed: the filter generation (bumped
//! when `FILTER_PIDS` learns or forgets a tgid, at exec and at a task rename, so every
//! task decides again once) and, with `--cgroup`, the task's cgroup (a move to another
//! cgroup decides again).

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::map, maps::Array};
use tracer_common::Loss;

use crate::{maps::count_loss, task_state};

/// The filters' verdict on a task, as `filter::decide` makes it.
pub struct Decision {
    pub selected: bool,
    /// Selected by its name, but its tgid did not fit in `FILTER_PIDS` (counted once per
    /// task by [`cached`]: a task decides again after every exec on the node).
    pub not_learned: bool,
}

/// Bumped whenever a verdict may have changed for tasks other than the current one.
#[map]
static FILTER_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// The current generation, 1-based so that 0 means "undecided".
#[inline(always)]
fn generation() -> u32 {
    // SAFETY: a u32 array slot, read once.
    FILTER_GENERATION.get(0).map_or(1, |g| g.wrapping_add(1) | 1)
}

/// Every cached verdict must be decided again (a tgid learned or forgotten, an exec or
/// a rename changed a task's name).
pub fn invalidate_all() {
    if let Some(counter) = FILTER_GENERATION.get_ptr_mut(0) {
        // SAFETY: array slot; a lost concurrent increment still changes the value.
        unsafe { *counter = (*counter).wrapping_add(2) };
    }
}

/// The current task's cached verdict, or `decide()`'s, cached. `with_cgroup`: the
/// verdict depends on the task's cgroup.
#[inline(always)]
pub fn cached(with_cgroup: bool, decide: impl FnOnce() -> Decision) -> bool {
    // No storage (allocation failed, or the task is exiting): decide every time, as
    // before; nothing is lost, it only costs more.
    let Some(state) = task_state::current(true) else {
        let decision = decide();
        if decision.not_learned {
            count_loss(Loss::FilterMapFull);
        }
        return decision.selected;
    };
    // Programs that run on this task at once (a softirq) only ever write a complete,
    // equally valid verdict.
    let verdict = &mut state.verdict;
    // SAFETY: helper call without arguments.
    let cgroup_id = if with_cgroup { unsafe { bpf_get_current_cgroup_id() } } else { 0 };
    let generation = generation();
    if verdict.generation == generation && verdict.cgroup_id == cgroup_id {
        return verdict.selected != 0;
    }
    let decision = decide();
    if decision.not_learned && verdict.not_learned == 0 {
        count_loss(Loss::FilterMapFull);
    }
    // Stamped with the generation read before deciding: if anything changed meanwhile
    // (another thread of this process learned its tgid, a rename on another CPU), the
    // next call decides again instead of keeping a verdict made on the old state. When
    // decide() itself learned the tgid, that costs one more (selected) decision.
    verdict.generation = generation;
    verdict.selected = u32::from(decision.selected);
    verdict.cgroup_id = cgroup_id;
    verdict.not_learned = u32::from(decision.not_learned);
    decision.selected
}
