//! Why the kernel side dropped or degraded data: the index of the per-CPU `LOSSES`
//! counters. Every place a program gives up on something it was asked to report
//! counts here, so the daemon can say what went missing and why
//! (`sockerr_events_lost_total{reason=...}`, the `stopped:` line).

/// A reason for a loss. The discriminant is the counter's index in `LOSSES`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Loss {
    /// A record did not fit in the ring buffer (the daemon fell behind).
    RingFull = 0,
    /// The first half of an asynchronous connect failure was replaced by another
    /// socket's before its second half came (two failures interleaved on one CPU).
    AsyncHalfOverwritten = 1,
    /// The two halves of an asynchronous connect failure named the same tuple but
    /// arrived further apart than the pairing window.
    AsyncHalfTooOld = 2,
    /// A user pointer the syscall passed could not be read (the address of a
    /// connect()/bind(), the value of a setsockopt()): the call is not reported, or
    /// the option is reported with an unknown value.
    UserReadFault = 3,
    /// `FILTER_PIDS` was full: a `--comm` process's tgid was not learned, so its
    /// renamed threads are not followed.
    FilterMapFull = 4,
    /// A socket's owner could not be recorded (owner or listener table full): its
    /// reset, asynchronous failure or drops cannot be attributed.
    OwnerTableFull = 5,
    /// `SOCKET_DROPS` was full: a dropped packet of a traced socket was not added up.
    DropTableFull = 6,
    /// The kernel did not run one of our programs when its hook fired: another kprobe or
    /// tracepoint BPF program was running on that CPU (any agent's, or a bpf() map call
    /// holding the CPU's guard). Counted by the kernel (`recursion_misses`; for
    /// tracepoint and kprobe programs only from Linux 6.7: on older kernels the daemon
    /// says at start that theirs go uncounted) and read by user space; the programs never
    /// count it, so its `LOSSES` slot stays 0.
    ProgramSkipped = 7,
    /// `TRACKED` was full and the kernel evicted its least recently used entry to make
    /// room: a socket's recorded options (a live socket's failure then comes out
    /// without them, and its close unreported) or a dead process's leftover. LRU maps
    /// cannot tell, so user space works it out from the programs' insert and remove
    /// counts (`TRACKED_CHURN`) and the entries left; the programs never count it.
    OptionsEvicted = 8,
    /// A traced bind() or setsockopt() could not be followed from its entry to its exit,
    /// or a close() not remembered for a reset sent inside it: the task's local storage
    /// (`TASK_STATE`) could not be had. The kernel allocates it atomically on a task's
    /// first traced call and can refuse under memory pressure; it also refuses while a
    /// program it interrupted on that CPU is inside a task-storage call. The failed call's
    /// record, the option it set, or the reset's owner is missing.
    TaskStorageUnavailable = 9,
}

impl Loss {
    /// Number of reasons: the size of the `LOSSES` array.
    pub const COUNT: usize = 10;

    /// Every reason, in index order.
    pub const ALL: [Loss; Self::COUNT] = [
        Loss::RingFull,
        Loss::AsyncHalfOverwritten,
        Loss::AsyncHalfTooOld,
        Loss::UserReadFault,
        Loss::FilterMapFull,
        Loss::OwnerTableFull,
        Loss::DropTableFull,
        Loss::ProgramSkipped,
        Loss::OptionsEvicted,
        Loss::TaskStorageUnavailable,
    ];

    /// The `reason` label of the metric and the name in the `stopped:` line.
    pub const fn name(self) -> &'static str {
        match self {
            Loss::RingFull => "ring_full",
            Loss::AsyncHalfOverwritten => "async_half_overwritten",
            Loss::AsyncHalfTooOld => "async_half_too_old",
            Loss::UserReadFault => "user_read_fault",
            Loss::FilterMapFull => "filter_map_full",
            Loss::OwnerTableFull => "owner_table_full",
            Loss::DropTableFull => "drop_table_full",
            Loss::ProgramSkipped => "program_skipped",
            Loss::OptionsEvicted => "options_evicted",
            Loss::TaskStorageUnavailable => "task_storage_unavailable",
        }
    }

    /// Whether the kernel programs count this reason themselves (and warn of its first
    /// occurrence on a CPU); [`Loss::ProgramSkipped`] is the kernel's own count and
    /// [`Loss::OptionsEvicted`] user space's reckoning.
    pub const fn counted_by_programs(self) -> bool {
        !matches!(self, Loss::ProgramSkipped | Loss::OptionsEvicted)
    }

    /// The counter index.
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_the_table_and_names_are_unique() {
        for (position, loss) in Loss::ALL.iter().enumerate() {
            assert_eq!(loss.index() as usize, position, "{loss:?}");
            let same_name = Loss::ALL.iter().filter(|other| other.name() == loss.name()).count();
            assert_eq!(same_name, 1, "{loss:?}");
        }
    }
}
