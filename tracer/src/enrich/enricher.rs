//! The entry point: answers a [`Query`] for a process, in its network namespace, and
//! names the processes that own the holders.

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use tracing::debug;

use super::{
    EnrichError, Findings, Query,
    answer::answer_in_namespace,
    fd_index::{FdIndex, FdRef},
    netns::Netns,
    procfs,
};
use crate::ttl_cache::TtlCache;

/// A pid's namespace rarely changes; re-reading it for every process of the node on
/// every failure of a retry storm would. A pid reused within this time costs at worst a
/// wasted or skipped fd scan: socket inodes are unique across namespaces.
const NETNS_INODE_TTL: Duration = Duration::from_secs(5);
const NETNS_INODE_CACHE_SIZE: usize = 8192;

/// The owner search reads fd tables one process at a time; past this it gives up and
/// says so, leaving the holders without owners.
const OWNER_SEARCH_BUDGET: Duration = Duration::from_millis(500);

/// Where the kernel programs saw a socket inode held: the fd of the traced process that
/// connected or accepted it (`SOCKET_FDS`).
pub(crate) type KnownHolders = Box<dyn Fn(u64) -> Option<FdRef> + Send + Sync>;

pub struct Enricher {
    proc_root: PathBuf,
    netns_inodes: Mutex<TtlCache<u32, u64>>,
    /// Asked before any fd table is read: on a node holding hundreds of thousands of
    /// sockets, reading the fd links takes seconds, longer than a search may take.
    known_holders: Option<KnownHolders>,
    /// One search at a time reads /proc: searches run one after the other anyway
    /// (records are written in order), and each goes on from what the last one read.
    fd_index: Mutex<FdIndex>,
}

impl Enricher {
    /// `proc_root` is `/proc`, or where the host's procfs is mounted (`/host/proc` in a
    /// DaemonSet), so pids are the host's, as the kernel programs report them.
    pub fn new(proc_root: PathBuf) -> Self {
        let cache = TtlCache::new(NETNS_INODE_TTL, NETNS_INODE_CACHE_SIZE);
        let fd_index = Mutex::new(FdIndex::new(Instant::now()));
        Self { proc_root, netns_inodes: Mutex::new(cache), known_holders: None, fd_index }
    }

    /// Asks `known` where a holder's inode is held before searching /proc for it.
    #[must_use]
    pub(crate) fn with_known_holders(mut self, known: KnownHolders) -> Self {
        self.known_holders = Some(known);
        self
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    pub fn netns_of_process(&self, pid: u32) -> Netns {
        Netns::of_process(&self.proc_root, pid)
    }

    pub fn netns_of_thread(&self, pid: u32, tid: u32) -> Netns {
        Netns::of_thread(&self.proc_root, pid, tid)
    }

    /// Answers `query` in the network namespace of process `pid`. Blocks.
    pub fn lookup(&self, pid: u32, query: &Query) -> Result<Findings, EnrichError> {
        self.lookup_in(&self.netns_of_process(pid), query)
    }

    /// Answers `query` in `netns`; owners are searched first among the fds of
    /// `netns.pid()`, then in the other processes of that namespace. Blocks.
    pub fn lookup_in(&self, netns: &Netns, query: &Query) -> Result<Findings, EnrichError> {
        let proc_root = self.proc_root.clone();
        let query_for_worker = query.clone();
        let mut findings = netns.run(move || answer_in_namespace(&proc_root, &query_for_worker))?;
        self.name_owners(netns, &mut findings);
        Ok(findings)
    }

    /// Inode of the network namespace of `pid` (the NS column of `lsns -t net`), cached
    /// for a few seconds.
    pub fn netns_inode(&self, pid: u32) -> Result<u64, EnrichError> {
        let now = Instant::now();
        let cached = self.netns_inodes.lock().unwrap_or_else(PoisonError::into_inner).get(&pid, now);
        if let Some(inode) = cached {
            return Ok(inode);
        }
        let netns = self.netns_of_process(pid);
        let inode = fs::metadata(netns.path()).map_err(|source| netns.open_error(source))?.ino();
        self.netns_inodes.lock().unwrap_or_else(PoisonError::into_inner).insert(pid, inode, now);
        Ok(inode)
    }

    /// Gives back the memory of an owner search index older than its sweep (kept only
    /// while searches use it). Never waits for a search in progress.
    pub fn forget_stale(&self) {
        if let Ok(mut index) = self.fd_index.try_lock() {
            index.expire(Instant::now());
        }
    }

    /// /proc/PID/comm, trimmed; `None` once the process is gone.
    pub fn process_name(&self, pid: u32) -> Option<String> {
        procfs::read_comm(&self.proc_root.join(pid.to_string()))
    }

    fn name_owners(&self, netns: &Netns, findings: &mut Findings) {
        // TIME_WAIT and request sockets have inode 0: no file, so no owner.
        let mut wanted: HashSet<u64> =
            findings.holders.iter().map(|holder| holder.inode).filter(|&inode| inode != 0).collect();
        if let Some(known) = &self.known_holders {
            for holder in findings.holders.iter_mut().filter(|holder| holder.inode != 0) {
                let Some(at) = known(holder.inode) else { continue };
                if let Some(owner) = procfs::owner_at(&self.proc_root, at, holder.inode) {
                    wanted.remove(&holder.inode);
                    holder.owner = Some(owner);
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let namespace = match fs::metadata(netns.path()) {
            Ok(metadata) => Some(metadata.ino()),
            Err(err) => {
                debug!(path = %netns.path().display(), %err, "namespace gone: searching only its process");
                None
            }
        };
        // A namespace file refused for lack of a capability is counted, not taken for "elsewhere".
        let mut in_namespace = |pid| match namespace {
            None => Some(false),
            Some(namespace) => match self.netns_inode(pid) {
                Ok(inode) => Some(inode == namespace),
                Err(err) if err.missing_capability().is_some() => None,
                Err(_) => Some(false),
            },
        };
        let now = Instant::now();
        let mut index = self.fd_index.lock().unwrap_or_else(PoisonError::into_inner);
        index.expire(now);
        let deadline = now + OWNER_SEARCH_BUDGET;
        let scan = procfs::find_owners(
            &self.proc_root,
            netns.pid(),
            &wanted,
            &mut in_namespace,
            deadline,
            &mut index,
        );
        drop(index);

        for holder in findings.holders.iter_mut().filter(|holder| holder.owner.is_none()) {
            holder.owner = scan.owners.get(&holder.inode).cloned();
        }
        if !scan.notes.is_empty() {
            let notes = findings.note.take().into_iter().chain(scan.notes);
            findings.note = Some(notes.collect::<Vec<_>>().join("; "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_enricher_serves_many_blocking_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Enricher>();
        shareable::<EnrichError>();
    }

    #[test]
    fn process_facts_of_this_process() {
        let enricher = Enricher::new(PathBuf::from("/proc"));
        let pid = std::process::id();
        let own_comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(enricher.process_name(pid).as_deref(), Some(own_comm.trim_end()));

        let own_inode = fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(enricher.netns_inode(pid).unwrap(), own_inode);
        // Served from the cache the second time, with the same answer.
        assert_eq!(enricher.netns_inode(pid).unwrap(), own_inode);
    }

    /// Under a fake /proc: process 10 failed and holds nothing, process 20 holds socket
    /// 700 at fd 3, and neither namespace can be read, so only process 10 is searched.
    /// The holder is socket 700, or a TIME_WAIT one (inode 0) with `time_wait`.
    fn holder_search(known: Option<KnownHolders>, time_wait: bool) -> Option<crate::record::HolderOwner> {
        // One directory per call: the tests that use it run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("sockerr-known-holders-{}-{call}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (pid, comm, fds) in [(10, "envoy", &[][..]), (20, "holder", &[(3, "socket:[700]")][..])] {
            let dir = root.join(pid.to_string());
            fs::create_dir_all(dir.join("fd")).unwrap();
            fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            for (fd, target) in fds {
                std::os::unix::fs::symlink(target, dir.join("fd").join(fd.to_string())).unwrap();
            }
        }
        let mut enricher = Enricher::new(root.clone());
        if let Some(known) = known {
            enricher = enricher.with_known_holders(known);
        }
        let holder = crate::record::Holder {
            state: crate::tcp_state::TcpState::Established,
            src: "127.1.0.1:35000".parse().unwrap(),
            dst: None,
            inode: if time_wait { 0 } else { 700 },
            owner: None,
            timer_ms: None,
        };
        let mut findings =
            Findings { holders: vec![holder], ports: None, address_is_local: None, note: None };
        enricher.name_owners(&Netns::of_process(&root, 10), &mut findings);
        let _ = fs::remove_dir_all(&root);
        findings.holders.remove(0).owner
    }

    #[test]
    fn a_holder_the_programs_recorded_is_named_without_a_search() {
        assert_eq!(holder_search(None, false), None, "the search reads only process 10");
        let known: KnownHolders = Box::new(|inode| (inode == 700).then_some(FdRef { pid: 20, fd: 3 }));
        let owner = holder_search(Some(known), false).expect("named from the recorded fd");
        assert_eq!((owner.pid, owner.comm.as_str(), owner.fd), (20, "holder", 3));
        // A recorded fd that no longer links to the socket names nobody.
        let stale: KnownHolders = Box::new(|_| Some(FdRef { pid: 20, fd: 4 }));
        assert_eq!(holder_search(Some(stale), false), None);
    }

    /// A TIME_WAIT holder has no file: the programs' index is not asked about it.
    #[test]
    fn a_holder_without_a_file_is_not_looked_up() {
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&asked);
        let known: KnownHolders = Box::new(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        });
        assert_eq!(holder_search(Some(known), true), None);
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn facts_of_a_vanished_process() {
        let enricher = Enricher::new(PathBuf::from("/nonexistent-proc"));
        assert_eq!(enricher.process_name(42), None);
        assert!(matches!(enricher.netns_inode(42), Err(EnrichError::ProcessGone { pid: 42 })));
        let query = Query::AddressIsLocal { addr: "127.0.0.1".parse().unwrap() };
        assert!(matches!(enricher.lookup(42, &query), Err(EnrichError::ProcessGone { pid: 42 })));
    }
}
