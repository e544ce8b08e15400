//! What the programs keep per task, in task-local storage (`BPF_MAP_TYPE_TASK_STORAGE`,
//! usable from tracing programs since Linux 5.12): the filter verdict, the bind(),
//! setsockopt(), accept() and listen() the task is inside, and its close() (for a reset
//! sent inside it). It lives and dies with the task, so nothing is keyed by a reusable
//! tid, nothing is evicted, and a call costs a lookup in the task's own storage instead
//! of an insert into and a removal from a shared hash map.
//!
//! aya-ebpf 0.2.1 has no task storage map type, so the map is declared here the way its
//! BTF map types are (a `.maps` struct of type-carrying pointers, read by the loader
//! from BTF).
//!
//! connect() stays in `CONNECTS`: softirq programs find its in-flight entry by the
//! owner's tid, and a program can only reach the storage of the task it runs on.

use core::ptr;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE},
    helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get},
};
use tracer_common::Loss;

use crate::maps::{BindInFlight, Closing, ListenCall, SockoptInFlight, count_loss};

/// A task's filter verdict (`task_verdict`). `generation` 0: not decided yet (fresh
/// storage is zeroed).
#[repr(C)]
pub struct Verdict {
    pub generation: u32,
    pub selected: u32,
    pub cgroup_id: u64,
    /// 1 while the task's tgid could not be learned and that was counted: kept across
    /// generations, so a task counts `Loss::FilterMapFull` once, not at every exec on the
    /// node (each makes every task decide again).
    pub not_learned: u32,
    pub _pad: u32,
}

/// One task's state. Fresh storage is zeroed: no verdict, no call in flight.
#[repr(C)]
pub struct TaskState {
    pub verdict: Verdict,
    /// 1 between the entry and the exit of a traced bind(): `bind` is that call.
    pub bind_active: u32,
    /// 1 between the entry and the exit of a traced setsockopt() of a recorded option.
    pub sockopt_active: u32,
    /// 1 between the entry and the exit of a traced accept(): `accept_addr` is that call's.
    pub accept_active: u32,
    /// 1 between the entry and the exit of a traced listen(): `listen` is that call.
    pub listen_active: u32,
    pub bind: BindInFlight,
    pub sockopt: SockoptInFlight,
    /// The address buffer the caller of accept() passed (0: none).
    pub accept_addr: u64,
    pub listen: ListenCall,
    /// 1 once a traced close() filled `closing`. The storage of a task no filter selects
    /// exists too (its verdict), with a zero `closing` that must not look like one.
    pub closing_set: u32,
    /// The close() the task is in, or was last in: the fd, the socket it moved to CLOSE
    /// and the options the fd carried, for a reset sent inside it.
    pub closing: Closing,
}

/// The BTF map definition of a task storage map of [`TaskState`]s.
#[repr(C)]
pub struct TaskStates {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const TaskState,
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholder pointers the loader replaces with the map; never dereferenced.
unsafe impl Sync for TaskStates {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "TASK_STATE")]
pub static TASK_STATE: TaskStates =
    TaskStates { r#type: ptr::null(), key: ptr::null(), value: ptr::null(), map_flags: ptr::null() };

/// The current task's state; `create`: allocate it (zeroed) if the task has none yet.
/// `None` when it has none, or the kernel refused it (allocation failed, or this program
/// interrupted another one's task-storage call on this CPU).
#[inline(always)]
pub fn current(create: bool) -> Option<&'static mut TaskState> {
    let flags = if create { BPF_LOCAL_STORAGE_GET_F_CREATE.into() } else { 0 };
    // SAFETY: helper calls; the task pointer is the current task's, valid for the run,
    // and the map pointer is the map above.
    let state = unsafe {
        bpf_task_storage_get(
            ptr::from_ref(&TASK_STATE).cast_mut().cast(),
            bpf_get_current_task_btf(),
            ptr::null_mut(),
            flags,
        )
    }
    .cast::<TaskState>();
    // SAFETY: the storage belongs to the current task and lives as long as it; programs
    // that run on this task at once (a softirq) touch only the fields their own
    // call-site owns.
    unsafe { state.as_mut() }
}

/// The current task's state while it is inside a traced bind() (its entry recorded it).
#[inline(always)]
pub fn in_bind() -> Option<&'static mut TaskState> {
    current(false).filter(|state| state.bind_active != 0)
}

/// The current task's state while it is inside a traced setsockopt().
#[inline(always)]
pub fn in_setsockopt() -> Option<&'static mut TaskState> {
    current(false).filter(|state| state.sockopt_active != 0)
}

/// The current task's state while it is inside a traced accept().
#[inline(always)]
pub fn in_accept() -> Option<&'static mut TaskState> {
    current(false).filter(|state| state.accept_active != 0)
}

/// The current task's state while it is inside a traced listen().
#[inline(always)]
pub fn in_listen() -> Option<&'static mut TaskState> {
    current(false).filter(|state| state.listen_active != 0)
}

/// The current task's last traced close(), if it made one.
#[inline(always)]
pub fn last_close() -> Option<&'static mut Closing> {
    current(false).filter(|state| state.closing_set != 0).map(|state| &mut state.closing)
}

/// The current task's state for a traced call's entry to record itself in; counts
/// [`Loss::TaskStorageUnavailable`] when the kernel refuses it.
#[inline(always)]
pub fn for_call() -> Option<&'static mut TaskState> {
    let state = current(true);
    if state.is_none() {
        count_loss(Loss::TaskStorageUnavailable);
    }
    state
}
