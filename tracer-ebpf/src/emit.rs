//! Writing records into the ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_ktime_get_ns},
};
use tracer_common::{EventHeader, LOST_EVENTS_INDEX};

use crate::{
    filter::Task,
    maps::{EVENTS, LOST_EVENTS, Owner},
};

/// A ring-buffer record: header then payload, as `tracer_common::record_size` says.
#[repr(C)]
pub struct Record<T> {
    pub header: EventHeader,
    pub payload: T,
}

/// The reader polls on a timer, so records are submitted without waking it; waking it
/// per record costs more than the rest of the tracing (see docs/toolchain.md).
/// Once this much is pending the reader is woken so a burst cannot fill the ring.
const WAKEUP_THRESHOLD: u64 = 256 * 1024;

/// Reserves a record and lets `fill` write it; counts the loss when the ring is full.
pub fn emit<T: 'static>(fill: impl FnOnce(&mut Record<T>)) {
    let Some(mut entry) = EVENTS.reserve::<Record<T>>(0) else {
        count_lost();
        return;
    };
    // SAFETY: `fill` writes every field it reads; the header is initialised by the
    // header constructors below before submission.
    let record = unsafe { &mut *entry.as_mut_ptr() };
    fill(record);
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if pending >= WAKEUP_THRESHOLD { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(flags as u64);
}

fn count_lost() {
    if let Some(counter) = LOST_EVENTS.get_ptr_mut(LOST_EVENTS_INDEX) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}

/// Header for an event raised by the current task.
pub fn current_header(kind: u32, errno: i32, task: &Task) -> EventHeader {
    EventHeader {
        kind,
        errno,
        // SAFETY: helper calls without pointer arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid: task.tgid,
        tid: task.tid,
        // SAFETY: as above, no pointer arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Header for an event about a socket, attributed to the task that connected it.
pub fn owner_header(kind: u32, errno: i32, owner: &Owner) -> EventHeader {
    EventHeader {
        kind,
        errno,
        // SAFETY: helper call without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid: owner.tgid,
        tid: owner.tid,
        cgroup_id: owner.cgroup_id,
        comm: owner.comm,
    }
}

/// Header for an event no traced task owns (a reset the kernel sent on its own).
pub fn kernel_header(kind: u32) -> EventHeader {
    EventHeader {
        kind,
        // SAFETY: helper call without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ..EventHeader::default()
    }
}
