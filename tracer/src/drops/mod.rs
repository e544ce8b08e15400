//! `socket_drop`: packets the kernel dropped on sockets of traced processes, with the
//! kernel's reason, folded per (socket, reason) and interval.
//!
//! The kernel adds the drops up (tracer-ebpf/src/kfree_skb.rs); [`DropMaps`] reads the
//! totals once a second and [`DropFold`] turns what grew into [`SocketDrop`]s. No drop
//! of an untraced process's socket is ever counted, and no record is made per packet.

mod fold;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use aya::maps::{MapData, PerCpuHashMap};
use tracer_common::{DropKey, DropTotal, names};

pub use self::fold::DropFold;
use crate::kernel::loader::{LoadError, take_map};

/// The drops of one traced socket for one reason in one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct SocketDrop {
    pub time: jiff::Timestamp,
    pub pid: u32,
    pub tid: u32,
    /// Thread name when the socket was first seen dropping.
    pub comm: String,
    pub fd: i32,
    /// The socket is a listener (else a connection the process made or accepted).
    pub listener: bool,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// `enum skb_drop_reason` value of this kernel.
    pub reason_code: u32,
    /// Its name (`SOCKET_FILTER`, `TCP_LISTEN_OVERFLOW`, ...), from this kernel's format.
    pub reason: Option<String>,
    pub dropped: u64,
    pub interval: Duration,
    pub cgroup_id: u64,
    /// Filled by the run loop (the kernel's total carries the pid only).
    pub pod: Option<crate::record::PodIdentity>,
}

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
    pub fn take(ebpf: &mut aya::Ebpf, reasons: BTreeMap<u64, String>) -> Result<Self, LoadError> {
        let map_error = |name| move |source| LoadError::Map { name, source };
        let totals = PerCpuHashMap::try_from(take_map(ebpf, names::SOCKET_DROPS)?)
            .map_err(map_error(names::SOCKET_DROPS))?;
        Ok(Self { totals, reasons })
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
