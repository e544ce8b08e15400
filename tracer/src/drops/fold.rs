//! From running totals to per-interval drops (pure).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use tracer_common::{DropKey, DropTotal, drops::DROP_ROLE_LISTENER};

use super::SocketDrop;
use crate::{decode::comm_str, decode::socket_addr};

/// A total unchanged this long is removed from the kernel's map (its socket is most
/// likely gone), which keeps the map from filling with dead sockets.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

struct Seen {
    total: u64,
    /// Owner identity, so a reused socket address starts a new count.
    owner: (u32, i32),
    changed_at: Instant,
}

#[derive(Default)]
pub struct DropFold {
    seen: BTreeMap<DropKey, Seen>,
}

impl DropFold {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares the kernel's totals with the previous read: one [`SocketDrop`] per
    /// (socket, reason) that grew, and the keys to remove (stale).
    pub fn observe(
        &mut self,
        totals: &[(DropKey, DropTotal)],
        reasons: &BTreeMap<u64, String>,
        now: Instant,
        time: jiff::Timestamp,
        interval: Duration,
    ) -> (Vec<SocketDrop>, Vec<DropKey>) {
        let mut drops = Vec::new();
        let mut stale = Vec::new();
        let mut present = BTreeMap::new();
        for (key, total) in totals {
            present.insert(*key, ());
            let owner = (total.tgid, total.fd);
            let before = match self.seen.get(key) {
                Some(seen) if seen.owner == owner => seen.total,
                _ => 0,
            };
            let grew = total.total.saturating_sub(before);
            if grew > 0 {
                drops.push(SocketDrop {
                    time,
                    pid: total.tgid,
                    tid: total.tid,
                    comm: comm_str(&total.comm),
                    fd: total.fd,
                    listener: total.role == DROP_ROLE_LISTENER,
                    local: socket_addr(&total.local),
                    peer: socket_addr(&total.peer),
                    reason_code: key.reason,
                    reason: reasons.get(&u64::from(key.reason)).cloned(),
                    dropped: grew,
                    interval,
                    cgroup_id: total.cgroup_id,
                    pod: None,
                });
                self.seen.insert(*key, Seen { total: total.total, owner, changed_at: now });
            } else if let Some(seen) = self.seen.get(key)
                && now.saturating_duration_since(seen.changed_at) >= STALE_AFTER
            {
                stale.push(*key);
            }
        }
        self.seen.retain(|key, _| present.contains_key(key) && !stale.contains(key));
        (drops, stale)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::SockAddr;

    use super::*;

    fn total(tgid: u32, count: u64) -> DropTotal {
        let mut comm = [0u8; 16];
        comm[..11].copy_from_slice(b"demo-client");
        DropTotal {
            total: count,
            tgid,
            tid: tgid,
            fd: 3,
            comm,
            local: SockAddr {
                family: 2,
                port: 40000,
                scope_id: 0,
                addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            ..DropTotal::default()
        }
    }

    #[test]
    fn growth_is_reported_once_with_the_kernels_reason_name() {
        let reasons = BTreeMap::from([(5, "SOCKET_FILTER".to_string())]);
        let key = DropKey { sk: 0xffff, reason: 5, _pad: 0 };
        let (at, time, second) = (Instant::now(), jiff::Timestamp::UNIX_EPOCH, Duration::from_secs(1));
        let mut fold = DropFold::new();
        let (drops, stale) = fold.observe(&[(key, total(7, 4))], &reasons, at, time, second);
        assert!(stale.is_empty());
        let [drop] = drops.as_slice() else { panic!("{drops:?}") };
        assert_eq!((drop.pid, drop.fd, drop.dropped), (7, 3, 4));
        assert_eq!(drop.reason.as_deref(), Some("SOCKET_FILTER"));
        assert_eq!(drop.comm, "demo-client");
        assert_eq!(drop.local, Some("127.0.0.1:40000".parse().unwrap()));
        // Unchanged: nothing; grown by 2: 2.
        assert!(fold.observe(&[(key, total(7, 4))], &reasons, at, time, second).0.is_empty());
        let (drops, _) = fold.observe(&[(key, total(7, 6))], &reasons, at, time, second);
        assert_eq!(drops.iter().map(|d| d.dropped).collect::<Vec<_>>(), [2]);
        // An unknown value keeps its number and no name.
        let other = DropKey { reason: 99, ..key };
        let (drops, _) = fold.observe(&[(other, total(7, 1))], &reasons, at, time, second);
        assert_eq!((drops[0].reason_code, drops[0].reason.as_deref()), (99, None));
    }

    #[test]
    fn a_reused_socket_address_counts_from_its_own_first_drop() {
        let key = DropKey { sk: 0xffff, reason: 5, _pad: 0 };
        let (at, time, second) = (Instant::now(), jiff::Timestamp::UNIX_EPOCH, Duration::from_secs(1));
        let mut fold = DropFold::new();
        fold.observe(&[(key, total(7, 10))], &BTreeMap::new(), at, time, second);
        let (drops, _) = fold.observe(&[(key, total(8, 1))], &BTreeMap::new(), at, time, second);
        assert_eq!(drops.iter().map(|d| (d.pid, d.dropped)).collect::<Vec<_>>(), [(8, 1)]);
    }

    #[test]
    fn totals_that_stop_growing_are_removed_after_a_while() {
        let key = DropKey { sk: 1, reason: 5, _pad: 0 };
        let (at, time, second) = (Instant::now(), jiff::Timestamp::UNIX_EPOCH, Duration::from_secs(1));
        let mut fold = DropFold::new();
        fold.observe(&[(key, total(7, 1))], &BTreeMap::new(), at, time, second);
        let soon = at + STALE_AFTER - second;
        assert!(fold.observe(&[(key, total(7, 1))], &BTreeMap::new(), soon, time, second).1.is_empty());
        let (_, stale) =
            fold.observe(&[(key, total(7, 1))], &BTreeMap::new(), at + STALE_AFTER, time, second);
        assert_eq!(stale, [key]);
        // Once removed, a new first drop is new.
        let (drops, _) =
            fold.observe(&[(key, total(7, 1))], &BTreeMap::new(), at + STALE_AFTER, time, second);
        assert_eq!(drops.len(), 1);
    }
}
