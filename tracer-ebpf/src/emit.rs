//! Writing records into the ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_ktime_get_ns},
};
use tracer_common::{EventHeader, Loss, Payload, Record, carries, limits::WAKEUP_THRESHOLD};

use crate::{
    filter::Task,
    maps::{EVENTS, Owner, count_loss},
};

/// Reserves a `KIND` record carrying a `T` and lets `fill` write it; counts the loss
/// when the ring is full. A kind whose records do not carry `T` does not compile.
#[inline(always)]
pub fn emit<T: Payload, const KIND: u32>(fill: impl FnOnce(&mut Record<T>)) {
    const { assert!(carries(T::KINDS, KIND), "this payload type does not belong to this kind") };
    let Some(mut entry) = EVENTS.reserve::<Record<T>>(0) else {
        count_loss(Loss::RingFull);
        return;
    };
    // SAFETY: `fill` writes every field it reads; the header is initialised by the
    // header constructors below before submission.
    let record = unsafe { &mut *entry.as_mut_ptr() };
    fill(record);
    record.header.kind = KIND;
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if pending >= WAKEUP_THRESHOLD { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(flags as u64);
}

/// Header for an event raised by the current task (`emit` sets the kind).
pub fn current_header(errno: i32, task: &Task) -> EventHeader {
    EventHeader {
        kind: 0,
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
pub fn owner_header(errno: i32, owner: &Owner) -> EventHeader {
    EventHeader {
        kind: 0,
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
pub fn kernel_header() -> EventHeader {
    EventHeader {
        // SAFETY: helper call without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ..EventHeader::default()
    }
}
