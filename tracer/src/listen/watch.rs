//! The watched listeners and what each sample of them means (pure).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Instant,
};

use super::{ListenOverflow, ListenerOwner};
use crate::enrich::ListenerDiag;

/// Listeners watched at once. Each costs one port in a sock_diag request per second;
/// a listener beyond this is counted as [`Unwatched::Full`], never silently skipped.
pub const MAX_LISTENERS: usize = 1024;

/// A listener to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub owner: ListenerOwner,
    pub local: SocketAddr,
    pub inode: u64,
    /// sk_drops at the previous sample; 0 at listen(), when the socket was new.
    pub drops_before: u64,
    pub sampled_at: Instant,
}

/// Why a listener a traced process created is not watched (or stopped being watched
/// before its end was seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unwatched {
    /// [`MAX_LISTENERS`] were watched already.
    Full,
    /// Its fd was closed (or the process gone) before the daemon read the socket inode.
    NoInode,
    /// The kernel reported no drop counter (no INET_DIAG_SKMEMINFO).
    NoDropCounter,
    /// Its network namespace could not be read (process gone, no permission).
    SampleFailed,
}

impl Unwatched {
    pub const ALL: [Self; 4] = [Self::Full, Self::NoInode, Self::NoDropCounter, Self::SampleFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::NoInode => "no_inode",
            Self::NoDropCounter => "no_drop_counter",
            Self::SampleFailed => "sample_failed",
        }
    }
}

/// One sock_diag round: a namespace, entered through one of its processes, and the
/// ports of the watched listeners in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub ports: Vec<u16>,
}

/// Namespaces are told apart by inode; a listener whose namespace could not be read
/// is sampled through its own process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NamespaceKey {
    Inode(u64),
    Process(u32),
}

fn namespace_key(owner: &ListenerOwner) -> NamespaceKey {
    owner.netns.map_or(NamespaceKey::Process(owner.pid), NamespaceKey::Inode)
}

#[derive(Debug, Default)]
pub struct ListenWatch {
    /// By socket inode: unique across namespaces, and what sock_diag reports.
    listeners: BTreeMap<u64, Watched>,
    unwatched: BTreeMap<Unwatched, u64>,
}

impl ListenWatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Listeners not watched so far, by reason (every reason, zeros included).
    pub fn unwatched(&self) -> impl Iterator<Item = (Unwatched, u64)> + '_ {
        Unwatched::ALL.into_iter().map(|reason| (reason, self.unwatched.get(&reason).copied().unwrap_or(0)))
    }

    pub fn count_unwatched(&mut self, reason: Unwatched) {
        *self.unwatched.entry(reason).or_insert(0) += 1;
    }

    /// Starts watching `listener`; a socket inode seen again (fd passed on) replaces the entry.
    pub fn register(&mut self, listener: Watched) {
        if self.listeners.len() >= MAX_LISTENERS && !self.listeners.contains_key(&listener.inode) {
            self.count_unwatched(Unwatched::Full);
            return;
        }
        self.listeners.insert(listener.inode, listener);
    }

    /// What to sample now: one target per namespace, its ports sorted and distinct.
    pub fn targets(&self) -> Vec<Target> {
        let mut by_namespace: BTreeMap<NamespaceKey, (u32, BTreeSet<u16>)> = BTreeMap::new();
        for listener in self.listeners.values() {
            let entry = by_namespace
                .entry(namespace_key(&listener.owner))
                .or_insert_with(|| (listener.owner.pid, BTreeSet::new()));
            entry.1.insert(listener.local.port());
        }
        by_namespace
            .into_values()
            .map(|(pid, ports)| Target { pid, ports: ports.into_iter().collect() })
            .collect()
    }

    /// Folds the sample of `target`'s namespace in. Listeners of that namespace missing
    /// from a good sample are closed and leave; a failed sample (namespace gone) ends
    /// them too, counted. Returns one overflow per listener whose drop counter rose.
    pub fn observe(
        &mut self,
        target: &Target,
        sample: Result<&[ListenerDiag], ()>,
        now: Instant,
        time: jiff::Timestamp,
    ) -> Vec<ListenOverflow> {
        let key =
            self.listeners.values().find(|l| l.owner.pid == target.pid).map(|l| namespace_key(&l.owner));
        let Some(key) = key else { return Vec::new() };
        let inodes: Vec<u64> = self
            .listeners
            .iter()
            .filter(|(_, l)| namespace_key(&l.owner) == key)
            .map(|(&inode, _)| inode)
            .collect();
        let Ok(sample) = sample else {
            for inode in inodes {
                self.listeners.remove(&inode);
                self.count_unwatched(Unwatched::SampleFailed);
            }
            return Vec::new();
        };
        let mut overflows = Vec::new();
        for inode in inodes {
            let Some(seen) = sample.iter().find(|diag| diag.inode == inode) else {
                self.listeners.remove(&inode); // closed
                continue;
            };
            let Some(drops) = seen.drops else {
                self.listeners.remove(&inode);
                self.count_unwatched(Unwatched::NoDropCounter);
                continue;
            };
            let Some(listener) = self.listeners.get_mut(&inode) else { continue };
            let drops = u64::from(drops);
            // sk_drops is an atomic_t read as u32: it wraps, it never goes back.
            let dropped = drops.wrapping_sub(listener.drops_before) & u64::from(u32::MAX);
            if dropped > 0 {
                overflows.push(ListenOverflow {
                    time,
                    owner: listener.owner.clone(),
                    local: seen.local,
                    queued: seen.queued,
                    backlog: seen.backlog,
                    dropped,
                    interval: now.saturating_duration_since(listener.sampled_at),
                    inode,
                });
            }
            listener.drops_before = drops;
            listener.sampled_at = now;
        }
        overflows
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn owner(pid: u32, netns: Option<u64>) -> ListenerOwner {
        ListenerOwner { pid, tid: pid, comm: "haproxy".into(), fd: 5, cgroup_id: 1, netns, pod: None }
    }

    fn watched(pid: u32, netns: Option<u64>, port: u16, inode: u64, at: Instant) -> Watched {
        Watched {
            owner: owner(pid, netns),
            local: SocketAddr::from(([127, 0, 0, 1], port)),
            inode,
            drops_before: 0,
            sampled_at: at,
        }
    }

    fn diag(port: u16, inode: u64, queued: u32, drops: Option<u32>) -> ListenerDiag {
        ListenerDiag { local: SocketAddr::from(([127, 0, 0, 1], port)), inode, queued, backlog: 2, drops }
    }

    #[test]
    fn one_target_per_namespace_with_distinct_ports() {
        let at = Instant::now();
        let mut watch = ListenWatch::new();
        watch.register(watched(10, Some(1), 8080, 100, at));
        watch.register(watched(11, Some(1), 8080, 101, at));
        watch.register(watched(11, Some(1), 443, 102, at));
        watch.register(watched(20, Some(2), 80, 200, at));
        watch.register(watched(30, None, 80, 300, at));
        let targets = watch.targets();
        assert_eq!(
            targets,
            [
                Target { pid: 10, ports: vec![443, 8080] },
                Target { pid: 20, ports: vec![80] },
                Target { pid: 30, ports: vec![80] },
            ]
        );
    }

    #[test]
    fn a_rise_of_the_drop_counter_is_one_overflow_with_the_difference() {
        let at = Instant::now();
        let time = jiff::Timestamp::UNIX_EPOCH;
        let mut watch = ListenWatch::new();
        watch.register(watched(10, Some(1), 8080, 100, at));
        let target = &watch.targets()[0];
        let later = at + Duration::from_secs(1);
        let found = watch.observe(target, Ok(&[diag(8080, 100, 3, Some(26))]), later, time);
        let [overflow] = found.as_slice() else { panic!("{found:?}") };
        assert_eq!((overflow.dropped, overflow.queued, overflow.backlog), (26, 3, 2));
        assert_eq!(overflow.interval, Duration::from_secs(1));
        assert_eq!(overflow.owner.comm, "haproxy");
        // No new drop: nothing; new drops: only the difference.
        assert!(watch.observe(target, Ok(&[diag(8080, 100, 3, Some(26))]), later, time).is_empty());
        let found = watch.observe(target, Ok(&[diag(8080, 100, 3, Some(30))]), later, time);
        assert_eq!(found.iter().map(|o| o.dropped).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn the_counter_wraps_forward() {
        let at = Instant::now();
        let mut watch = ListenWatch::new();
        let mut listener = watched(10, Some(1), 8080, 100, at);
        listener.drops_before = u64::from(u32::MAX) - 1;
        watch.register(listener);
        let target = &watch.targets()[0];
        let found =
            watch.observe(target, Ok(&[diag(8080, 100, 0, Some(3))]), at, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(found.iter().map(|o| o.dropped).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn closed_listeners_leave_and_losses_are_counted_by_reason() {
        let at = Instant::now();
        let time = jiff::Timestamp::UNIX_EPOCH;
        let mut watch = ListenWatch::new();
        watch.register(watched(10, Some(1), 8080, 100, at));
        watch.register(watched(10, Some(1), 8081, 101, at));
        watch.register(watched(20, Some(2), 80, 200, at));
        let targets = watch.targets();
        // 100 is gone (closed), 101 has no counter.
        watch.observe(&targets[0], Ok(&[diag(8081, 101, 0, None)]), at, time);
        watch.observe(&targets[1], Err(()), at, time);
        assert!(watch.is_empty());
        let counts: Vec<_> = watch.unwatched().collect();
        assert_eq!(
            counts,
            [
                (Unwatched::Full, 0),
                (Unwatched::NoInode, 0),
                (Unwatched::NoDropCounter, 1),
                (Unwatched::SampleFailed, 1)
            ]
        );
    }

    #[test]
    fn a_full_watch_counts_what_it_refuses() {
        let at = Instant::now();
        let mut watch = ListenWatch::new();
        for inode in 0..MAX_LISTENERS as u64 + 2 {
            watch.register(watched(10, Some(1), 80, inode, at));
        }
        assert_eq!(watch.len(), MAX_LISTENERS);
        assert_eq!(watch.unwatched().find(|(r, _)| *r == Unwatched::Full), Some((Unwatched::Full, 2)));
    }
}
