//! The kernel's per-socket drop totals (`SOCKET_DROPS`, filled by
//! tracer-ebpf/src/kfree_skb.rs), read once a second by the run loop, which folds them
//! into `socket_drop` records with `drops::DropFold`.

use std::collections::BTreeMap;

use aya::maps::{Map, MapData, MapError, PerCpuHashMap};
use tracer_common::{DropKey, DropTotal};

/// One total from the per-CPU slots of an entry: the owner of the newest slot, and the
/// sum of the slots of that owner (a slot of another owner is left from a socket that
/// had the same address before).
pub fn merge_slots(slots: &[DropTotal]) -> DropTotal {
    let Some(newest) = slots.iter().filter(|slot| slot.total > 0).max_by_key(|slot| slot.last_ns) else {
        return DropTotal::default();
    };
    let same_owner = |slot: &&DropTotal| slot.total > 0 && slot.tgid == newest.tgid && slot.fd == newest.fd;
    let mine: Vec<&DropTotal> = slots.iter().filter(same_owner).collect();
    DropTotal {
        total: mine.iter().map(|slot| slot.total).sum(),
        first_ns: mine.iter().map(|slot| slot.first_ns).min().unwrap_or(newest.first_ns),
        ..*newest
    }
}

/// The kernel's running totals (the drops it could not add up count as
/// `Loss::DropTableFull`, with the other losses).
pub struct DropMaps {
    totals: PerCpuHashMap<MapData, DropKey, DropTotal>,
    reasons: BTreeMap<u64, String>,
}

impl DropMaps {
    /// `totals` is the object's `SOCKET_DROPS`; `reasons` this kernel's reason names.
    pub fn new(totals: Map, reasons: BTreeMap<u64, String>) -> Result<Self, MapError> {
        Ok(Self { totals: PerCpuHashMap::try_from(totals)?, reasons })
    }

    pub fn reasons(&self) -> &BTreeMap<u64, String> {
        &self.reasons
    }

    /// Every total now, its CPU slots added up (an entry removed meanwhile is skipped).
    pub fn read(&self) -> Vec<(DropKey, DropTotal)> {
        self.totals.iter().filter_map(Result::ok).map(|(key, slots)| (key, merge_slots(&slots))).collect()
    }

    /// Removes totals that stopped growing (see `fold::STALE_AFTER`).
    pub fn remove(&mut self, keys: &[DropKey]) {
        for key in keys {
            // Gone already is fine: nothing else removes entries.
            let _ = self.totals.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_of_the_newest_owner_add_up() {
        let slot = |tgid, total, last_ns| DropTotal {
            tgid,
            fd: 3,
            total,
            first_ns: last_ns,
            last_ns,
            ..DropTotal::default()
        };
        let merged = merge_slots(&[slot(7, 2, 10), DropTotal::default(), slot(7, 3, 30), slot(6, 9, 5)]);
        assert_eq!((merged.tgid, merged.total, merged.first_ns, merged.last_ns), (7, 5, 10, 30));
        assert_eq!(merge_slots(&[DropTotal::default()]).total, 0);
    }
}
