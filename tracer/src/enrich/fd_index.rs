//! What earlier owner searches read in /proc: the (pid, fd) that links to each socket
//! inode.
//!
//! Reading every fd link of a namespace that holds 400,000 sockets takes about a second
//! (some 2 µs a link), longer than one search may hold up the records behind it. With
//! the index, the next search goes on where the last one stopped instead of starting
//! over, and a retried failure is answered with one readlink. An entry is a hint: the
//! search checks its link before it trusts it, since fds are closed and reused.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

/// After this, the fd tables read are read again: a process read whole may have opened
/// sockets since. Entries that answered a search are kept across (they are checked on
/// every use anyway).
const SWEEP_LIFETIME: Duration = Duration::from_secs(30);
/// 7/8 of 2^20: hashbrown fills at most 7/8 of its slots, so the index never grows past
/// 2^20 slots of 13 bytes (13 MiB; 6.5 MiB for the busy node's 400,000 sockets). A
/// process whose sockets do not fit is not marked as read, so a search still reads it
/// when it must.
const MAX_SOCKETS: usize = (1 << 20) / 8 * 7;

/// An fd of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FdRef {
    pub pid: u32,
    pub fd: i32,
}

/// Keyed by socket inode as u32: socket inodes come from get_next_ino() (an unsigned int,
/// fs/inode.c), as sock_diag's idiag_inode (a __u32) says too. One that does not fit is
/// not indexed, only searched for.
#[derive(Debug)]
pub(crate) struct FdIndex {
    sockets: HashMap<u32, FdRef>,
    /// Processes whose every fd link is in `sockets` (as of their reading).
    read_whole: HashSet<u32>,
    /// Inodes whose entry answered a search in this sweep.
    answered: HashSet<u32>,
    sweep_started: Instant,
    capacity: usize,
}

impl FdIndex {
    pub fn new(now: Instant) -> Self {
        Self::with_capacity(MAX_SOCKETS, now)
    }

    fn with_capacity(capacity: usize, now: Instant) -> Self {
        Self {
            sockets: HashMap::new(),
            read_whole: HashSet::new(),
            answered: HashSet::new(),
            sweep_started: now,
            capacity,
        }
    }

    /// Starts a new sweep once the current one is [`SWEEP_LIFETIME`] old: keeps only the
    /// entries that answered a search, and gives the rest of the memory back.
    pub fn expire(&mut self, now: Instant) {
        if now.saturating_duration_since(self.sweep_started) < SWEEP_LIFETIME {
            return;
        }
        let answered = std::mem::take(&mut self.answered);
        let kept: HashMap<u32, FdRef> = answered
            .into_iter()
            .filter_map(|inode| self.sockets.get(&inode).map(|&at| (inode, at)))
            .collect();
        self.sockets = kept;
        self.read_whole = HashSet::new();
        self.sweep_started = now;
    }

    /// Where the inode was last seen; check the link before trusting it.
    pub fn seen_at(&self, inode: u64) -> Option<FdRef> {
        self.sockets.get(&u32::try_from(inode).ok()?).copied()
    }

    /// The entry answered a search (its link was checked): kept across sweeps.
    pub fn answered(&mut self, inode: u64) {
        if let Ok(inode) = u32::try_from(inode) {
            self.answered.insert(inode);
        }
    }

    /// The entry's link no longer points at the inode.
    pub fn forget(&mut self, inode: u64) {
        if let Ok(inode) = u32::try_from(inode) {
            self.sockets.remove(&inode);
            self.answered.remove(&inode);
        }
    }

    pub fn was_read_whole(&self, pid: u32) -> bool {
        self.read_whole.contains(&pid)
    }

    /// Records what reading process `pid` found; `whole` when every link was read.
    /// Returns whether all of `sockets` fit (only then is the process marked as read).
    pub fn add_process(&mut self, pid: u32, sockets: &[(u64, i32)], whole: bool) -> bool {
        if self.sockets.len().saturating_add(sockets.len()) > self.capacity {
            return false;
        }
        let fitting = sockets.iter().filter_map(|&(inode, fd)| Some((u32::try_from(inode).ok()?, fd)));
        self.sockets.extend(fitting.map(|(inode, fd)| (inode, FdRef { pid, fd })));
        if whole {
            self.read_whole.insert(pid);
        }
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sockets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_read_whole_is_remembered_with_its_sockets() {
        let now = Instant::now();
        let mut index = FdIndex::new(now);
        assert!(!index.was_read_whole(10));
        assert!(index.add_process(10, &[(500, 3), (501, 4)], true));
        assert!(index.was_read_whole(10));
        assert_eq!(index.seen_at(501), Some(FdRef { pid: 10, fd: 4 }));
        assert_eq!(index.seen_at(502), None);

        // An inode past u32 (none is) is not indexed.
        assert!(index.add_process(30, &[(1 << 32 | 500, 9)], true));
        assert_eq!(index.seen_at(1 << 32 | 500), None);
        assert_eq!(index.seen_at(500), Some(FdRef { pid: 10, fd: 3 }));

        // A process with an unreadable link keeps its sockets but is read again next time.
        assert!(index.add_process(20, &[(600, 7)], false));
        assert!(!index.was_read_whole(20));
        assert_eq!(index.seen_at(600), Some(FdRef { pid: 20, fd: 7 }));

        index.forget(500);
        assert_eq!(index.seen_at(500), None);
    }

    #[test]
    fn a_process_that_does_not_fit_is_not_marked_as_read() {
        let now = Instant::now();
        let mut index = FdIndex::with_capacity(3, now);
        assert!(index.add_process(10, &[(500, 3), (501, 4)], true));
        assert!(!index.add_process(20, &[(600, 3), (601, 4)], true));
        assert!(!index.was_read_whole(20), "its sockets are not in the index: it must be read again");
        assert_eq!(index.seen_at(600), None);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn an_old_sweep_keeps_only_the_entries_that_answered() {
        let start = Instant::now();
        let mut index = FdIndex::new(start);
        index.add_process(10, &[(500, 3), (501, 4)], true);
        index.answered(501);

        index.expire(start + SWEEP_LIFETIME - Duration::from_millis(1));
        assert!(index.was_read_whole(10), "still the same sweep");
        assert_eq!(index.len(), 2);

        index.expire(start + SWEEP_LIFETIME);
        assert!(!index.was_read_whole(10), "a new sweep reads every process again");
        assert_eq!(index.seen_at(500), None);
        assert_eq!(index.seen_at(501), Some(FdRef { pid: 10, fd: 4 }));

        // Kept once, not for ever: it must answer again in the new sweep.
        index.expire(start + SWEEP_LIFETIME * 2);
        assert_eq!(index.seen_at(501), None);
    }
}
