//! How many entries `TRACKED` evicted. It is an LRU map (see `limits::TRACKED_ENTRIES`),
//! and the kernel evicts from an LRU map without telling anyone; the programs count
//! what they inserted and removed (`TRACKED_CHURN`, per CPU, indexed by the constants
//! below), user space counts the entries of exited processes it removed, and whatever
//! went in, came out neither way and is not there any more was evicted.

/// Index of the count of new keys the programs inserted.
pub const INSERTED: u32 = 0;
/// Index of the count of keys the programs removed (that were there).
pub const REMOVED: u32 = 1;
/// Entries of `TRACKED_CHURN`.
pub const COUNT: u32 = 2;

/// Free entries each CPU may keep to itself (`LOCAL_FREE_TARGET`, kernel/bpf/bpf_lru_list.c):
/// a CPU that finds its own list and the shared one empty evicts, although other CPUs
/// still hold up to this many free entries each.
pub const LRU_LOCAL_FREE: u64 = 128;

/// Whether the map may have evicted anything: what the programs inserted and did not
/// remove has come within the other CPUs' free lists of `capacity`. Below that no
/// insert can have needed an eviction, so the entries need not be counted.
pub fn may_have_evicted(inserted: u64, removed: u64, capacity: u64, cpus: u64) -> bool {
    inserted.saturating_sub(removed) + LRU_LOCAL_FREE * cpus >= capacity
}

/// Whether the map is half full: time to remove the entries of exited processes, well
/// before the LRU map evicts them (or live ones) to make room.
pub fn worth_sweeping(inserted: u64, removed: u64, capacity: u64) -> bool {
    inserted.saturating_sub(removed) >= capacity / 2
}

/// Entries evicted so far: inserted, not removed by the programs, and not there
/// (`present`, counted by user space). Entries that change while they are counted make
/// it off by as many.
pub fn evicted(inserted: u64, removed: u64, present: u64) -> u64 {
    inserted.saturating_sub(removed).saturating_sub(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_far_from_full_cannot_have_evicted() {
        assert!(!may_have_evicted(1000, 10, 65536, 2));
        // 65,280 live + 2 x 128 held in per-CPU free lists: the next insert may evict.
        assert!(may_have_evicted(65_290, 10, 65536, 2));
        assert!(may_have_evicted(70_000, 0, 65536, 2));
        // More removed than inserted (a removal counted before its insert's CPU total
        // was read) is no underflow.
        assert!(!may_have_evicted(5, 9, 65536, 2));
    }

    #[test]
    fn a_half_full_map_is_worth_sweeping() {
        assert!(!worth_sweeping(1000, 10, 262_144));
        assert!(worth_sweeping(131_072, 0, 262_144));
        assert!(!worth_sweeping(131_072, 1, 262_144));
        assert!(!worth_sweeping(5, 9, 16));
    }

    #[test]
    fn evicted_is_what_went_in_and_neither_came_out_nor_is_there() {
        assert_eq!(evicted(100, 40, 60), 0);
        assert_eq!(evicted(100, 40, 50), 10);
        assert_eq!(evicted(70_000, 0, 65_536), 4464);
        // Counted while inserts ran: more present than the counters say is no eviction.
        assert_eq!(evicted(100, 40, 70), 0);
        assert_eq!(evicted(3, 9, 0), 0);
    }
}
