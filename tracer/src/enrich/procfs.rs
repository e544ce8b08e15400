//! Which process holds a socket: the socket inode sock_diag reports is what
//! /proc/PID/fd/N links to (`socket:[INODE]`, proc(5)).
//!
//! A node has thousands of processes; the scan starts where an earlier scan saw the
//! inode, then reads the failing process, then only processes in the same network
//! namespace (a socket usually stays in the namespace of the process that made it),
//! stops as soon as every inode has an owner, and gives up at a deadline. Each process
//! it reads goes into an [`FdIndex`], so a retried failure costs one readlink.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs, io,
    path::Path,
    time::Instant,
};

use tracing::debug;

use super::{
    EnrichError,
    fd_index::{FdIndex, FdRef},
    netns::is_gone,
};
use crate::record::HolderOwner;

/// What the scan found, and why it may have missed some.
#[derive(Debug, Default)]
pub(crate) struct OwnerScan {
    pub owners: HashMap<u64, HolderOwner>,
    /// Set only when some inode stayed without an owner.
    pub notes: Vec<String>,
}

/// Finds an owning (pid, fd) for each of `wanted`: first where `index` saw it (checked
/// against the link), then in `first_pid`, then in the pids for which `in_namespace`
/// says yes (`None`: cannot tell, the namespace file was denied), those not read whole
/// in this sweep of the index before those that were. Every process read goes into
/// `index`, so a search cut short by `deadline` leaves the next one less to read.
pub(crate) fn find_owners(
    proc_root: &Path,
    first_pid: u32,
    wanted: &HashSet<u64>,
    in_namespace: &mut dyn FnMut(u32) -> Option<bool>,
    deadline: Instant,
    index: &mut FdIndex,
) -> OwnerScan {
    let mut missing = wanted.clone();
    let mut scan = OwnerScan::default();
    let mut first_pid_error = None;
    let mut denied = Denied::default();
    let mut timed_out = false;

    for &inode in wanted {
        let Some(at) = index.seen_at(inode) else { continue };
        if let Some(owner) = owner_at(proc_root, at, inode) {
            scan.owners.insert(inode, owner);
            missing.remove(&inode);
        } else {
            index.forget(inode);
        }
    }

    if !missing.is_empty() {
        match scan_process(proc_root, first_pid, &mut missing, &mut scan.owners, index) {
            Ok(()) => {}
            Err(failure) if failure.is_gone() => {}
            Err(failure) => first_pid_error = Some(failure.into_error(proc_root, first_pid)),
        }
    }

    if !missing.is_empty() {
        match fs::read_dir(proc_root) {
            Ok(entries) => {
                let (unread, read): (Vec<u32>, Vec<u32>) = entries
                    .flatten()
                    .filter_map(|entry| parse_pid(&entry.file_name()))
                    .filter(|&pid| pid != first_pid)
                    .partition(|&pid| !index.was_read_whole(pid));
                for pid in unread.into_iter().chain(read) {
                    if missing.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        timed_out = true;
                        break;
                    }
                    match in_namespace(pid) {
                        Some(true) => {}
                        Some(false) => continue,
                        None => {
                            denied.namespaces += 1;
                            continue;
                        }
                    }
                    match scan_process(proc_root, pid, &mut missing, &mut scan.owners, index) {
                        Ok(()) => {}
                        Err(failure) if failure.is_gone() => {}
                        Err(failure) => {
                            debug!(pid, ?failure, "cannot read the fds of a process");
                            match failure {
                                ScanFailure::List(_) => denied.lists += 1,
                                ScanFailure::Links(_) => denied.links += 1,
                            }
                        }
                    }
                }
            }
            Err(source) => {
                let err = EnrichError::Proc { path: proc_root.to_owned(), source };
                scan.notes.push(err.to_string());
            }
        }
    }

    // The owners found stay in the index across its sweeps.
    for &inode in scan.owners.keys() {
        index.answered(inode);
    }
    if !missing.is_empty() {
        if let Some(err) = first_pid_error {
            scan.notes.push(err.to_string());
        }
        scan.notes.extend(denied.notes(crate::kernel::privileges::holds));
        if timed_out {
            scan.notes.push("the owner search ran out of time".to_string());
        }
    }
    scan
}

/// The owner of socket `inode` if fd `at` of its process still links to it: where an
/// earlier scan, or the kernel programs (`tracer_common::SocketFd`), saw it held.
pub(crate) fn owner_at(proc_root: &Path, at: FdRef, inode: u64) -> Option<HolderOwner> {
    if !links_to(proc_root, at, inode) {
        return None;
    }
    let comm = read_comm(&proc_root.join(at.pid.to_string())).unwrap_or_default();
    Some(HolderOwner { pid: at.pid, comm, fd: at.fd })
}

/// Whether fd `at` of its process still links to socket `inode`.
fn links_to(proc_root: &Path, at: FdRef, inode: u64) -> bool {
    let link = proc_root.join(at.pid.to_string()).join("fd").join(at.fd.to_string());
    fs::read_link(link).is_ok_and(|target| socket_inode(target.as_os_str()) == Some(inode))
}

/// Processes of the namespace whose fds the scan could not read, by the step that was
/// refused; each step needs its own capability.
#[derive(Debug, Default, PartialEq, Eq)]
struct Denied {
    /// Listing /proc/PID/fd, a mode 0500 directory of the process's user: a permission
    /// check on the directory (proc_fd_permission falls back to generic_permission).
    lists: usize,
    /// Reading /proc/PID/fd/N links: the ptrace access check (proc_fd_access_allowed).
    links: usize,
    /// /proc/PID/ns/net: the ptrace access check too, so the process's namespace is unknown.
    namespaces: usize,
}

impl Denied {
    /// One note per refused step; `holds` tells whether this process has a capability, so
    /// a refusal that holding it did not prevent (an LSM, a user namespace of its own, a
    /// sandbox's init) is said so instead of blaming the capability.
    fn notes(&self, holds: impl Fn(&str) -> bool) -> Vec<String> {
        let why = |capability: &str| {
            if holds(capability) {
                format!(
                    "refused although sockerr holds {capability}: an LSM policy or another user namespace"
                )
            } else {
                format!("needs {capability}")
            }
        };
        let mut notes = Vec::new();
        if self.lists > 0 {
            notes.push(format!(
                "cannot list the fds of {} other processes in the namespace ({})",
                self.lists,
                why("CAP_DAC_READ_SEARCH")
            ));
        }
        if self.links > 0 {
            notes.push(format!(
                "cannot read the fd links of {} other processes in the namespace ({})",
                self.links,
                why("CAP_SYS_PTRACE")
            ));
        }
        if self.namespaces > 0 {
            notes.push(format!(
                "cannot tell the network namespace of {} processes ({})",
                self.namespaces,
                why("CAP_SYS_PTRACE")
            ));
        }
        notes
    }
}

/// Which step of reading a process's fds failed.
#[derive(Debug)]
enum ScanFailure {
    List(io::Error),
    Links(io::Error),
}

impl ScanFailure {
    fn is_gone(&self) -> bool {
        match self {
            Self::List(err) | Self::Links(err) => is_gone(err),
        }
    }

    fn into_error(self, proc_root: &Path, pid: u32) -> EnrichError {
        let path = proc_root.join(pid.to_string()).join("fd");
        match self {
            Self::List(source) => EnrichError::FdList { path, source },
            Self::Links(source) => EnrichError::Proc { path, source },
        }
    }
}

/// Records an owner for each inode of `missing` that `pid` has open, and every socket
/// fd of `pid` in `index`. Links that cannot be read for lack of permission fail the
/// process after the readable ones are looked at.
fn scan_process(
    proc_root: &Path,
    pid: u32,
    missing: &mut HashSet<u64>,
    owners: &mut HashMap<u64, HolderOwner>,
    index: &mut FdIndex,
) -> Result<(), ScanFailure> {
    let process_dir = proc_root.join(pid.to_string());
    let mut comm = None;
    let mut denied_link = None;
    let mut sockets = Vec::new();
    for entry in fs::read_dir(process_dir.join("fd")).map_err(ScanFailure::List)? {
        // An fd closed while listing is no owner: skip it.
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let target = match fs::read_link(entry.path()) {
            Ok(target) => target,
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                denied_link.get_or_insert(err);
                continue;
            }
            // Closed meanwhile.
            Err(_) => continue,
        };
        let Some(inode) = socket_inode(target.as_os_str()) else { continue };
        sockets.push((inode, fd));
        if missing.remove(&inode) {
            let comm = comm.get_or_insert_with(|| read_comm(&process_dir).unwrap_or_default());
            owners.insert(inode, HolderOwner { pid, comm: comm.clone(), fd });
        }
    }
    index.add_process(pid, &sockets, denied_link.is_none());
    match denied_link {
        Some(err) if !missing.is_empty() => Err(ScanFailure::Links(err)),
        _ => Ok(()),
    }
}

/// /proc/PID/comm without its newline; `None` once the process is gone.
pub(crate) fn read_comm(process_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(process_dir.join("comm")).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

/// `socket:[12345]` → 12345 (the target of an fd link to a socket, proc(5)).
pub(crate) fn socket_inode(link_target: &OsStr) -> Option<u64> {
    link_target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

pub(crate) fn parse_pid(name: &OsStr) -> Option<u32> {
    name.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::symlink, path::PathBuf, time::Duration};

    use super::*;

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(socket_inode(OsStr::new("socket:[12345]")), Some(12345));
        assert_eq!(socket_inode(OsStr::new("socket:[]")), None);
        assert_eq!(socket_inode(OsStr::new("pipe:[12345]")), None);
        assert_eq!(socket_inode(OsStr::new("/dev/null")), None);
        assert_eq!(parse_pid(OsStr::new("4242")), Some(4242));
        assert_eq!(parse_pid(OsStr::new("self")), None);
    }

    /// A fake proc root: each process a comm file and fd links to `socket:[inode]`.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!("sockerr-procfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Self(root)
        }

        fn process(&self, pid: u32, comm: &str, fds: &[(i32, &str)]) {
            let dir = self.0.join(pid.to_string());
            fs::create_dir_all(dir.join("fd")).unwrap();
            fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            for (fd, target) in fds {
                symlink(target, dir.join("fd").join(fd.to_string())).unwrap();
            }
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn fresh_index() -> FdIndex {
        FdIndex::new(Instant::now())
    }

    #[test]
    fn a_recorded_fd_names_the_owner_only_while_it_links_to_the_socket() {
        let proc = FakeProc::new("owner-at");
        proc.process(20, "holder", &[(3, "socket:[700]"), (4, "pipe:[9]")]);
        let owner = owner_at(&proc.0, FdRef { pid: 20, fd: 3 }, 700).expect("fd 3 links to 700");
        assert_eq!((owner.pid, owner.comm.as_str(), owner.fd), (20, "holder", 3));
        // Closed and reused for another file, another socket, or gone with its process.
        assert!(owner_at(&proc.0, FdRef { pid: 20, fd: 4 }, 700).is_none());
        assert!(owner_at(&proc.0, FdRef { pid: 20, fd: 3 }, 701).is_none());
        assert!(owner_at(&proc.0, FdRef { pid: 21, fd: 3 }, 700).is_none());
    }

    #[test]
    fn the_next_search_reads_first_what_the_last_did_not() {
        let proc = FakeProc::new("next-search");
        proc.process(10, "envoy", &[]);
        proc.process(20, "holder-a", &[(3, "socket:[700]")]);
        proc.process(30, "holder-b", &[(4, "socket:[701]"), (5, "socket:[702]")]);
        let mut index = fresh_index();
        let wanted = HashSet::from([700, 701]);
        let scan = find_owners(&proc.0, 10, &wanted, &mut |_| Some(true), later(), &mut index);
        assert_eq!(scan.owners.len(), 2, "{scan:?}");
        // What was found outlives the index's next sweep; the rest of what was read not.
        let mut swept = FdIndex::new(Instant::now());
        let scan = find_owners(&proc.0, 10, &HashSet::from([700]), &mut |_| Some(true), later(), &mut swept);
        assert_eq!(scan.owners.len(), 1);
        swept.expire(Instant::now() + Duration::from_secs(31));
        assert!(swept.seen_at(700).is_some() && swept.seen_at(702).is_none());

        // A socket of a process not read yet: the processes read whole wait until the end.
        proc.process(40, "holder-c", &[(6, "socket:[800]")]);
        let mut asked = Vec::new();
        let wanted = HashSet::from([800]);
        let mut in_namespace = |pid| {
            asked.push(pid);
            Some(true)
        };
        let scan = find_owners(&proc.0, 10, &wanted, &mut in_namespace, later(), &mut index);
        assert_eq!(scan.owners[&800], HolderOwner { pid: 40, comm: "holder-c".into(), fd: 6 });
        assert_eq!(asked, [40]);

        // A socket the last search read but did not look for: no process is read.
        let mut asked = 0;
        let scan = find_owners(
            &proc.0,
            10,
            &HashSet::from([702]),
            &mut |_| {
                asked += 1;
                Some(true)
            },
            later(),
            &mut index,
        );
        assert_eq!(scan.owners[&702], HolderOwner { pid: 30, comm: "holder-b".into(), fd: 5 });
        assert_eq!(asked, 0);
    }

    #[test]
    fn an_index_entry_whose_fd_changed_is_not_believed() {
        let proc = FakeProc::new("stale-entry");
        proc.process(10, "envoy", &[]);
        proc.process(30, "holder", &[(5, "socket:[701]")]);
        let mut index = fresh_index();
        let scan = find_owners(&proc.0, 10, &HashSet::from([701]), &mut |_| Some(true), later(), &mut index);
        assert_eq!(scan.owners[&701].fd, 5);

        // fd 5 now holds another socket, and 701 moved to another process.
        let fd5 = proc.0.join("30/fd/5");
        fs::remove_file(&fd5).unwrap();
        symlink("socket:[999]", &fd5).unwrap();
        proc.process(40, "new-holder", &[(9, "socket:[701]")]);
        let scan = find_owners(&proc.0, 10, &HashSet::from([701]), &mut |_| Some(true), later(), &mut index);
        assert_eq!(scan.owners[&701], HolderOwner { pid: 40, comm: "new-holder".into(), fd: 9 });
    }

    #[test]
    fn owners_are_found_in_the_failing_process_and_its_namespace() {
        let proc = FakeProc::new("owners");
        proc.process(10, "envoy", &[(0, "/dev/null"), (131, "socket:[500]")]);
        proc.process(20, "other-ns", &[(3, "socket:[600]")]);
        proc.process(30, "same-ns", &[(4, "pipe:[1]"), (7, "socket:[600]")]);

        let mut asked = Vec::new();
        let wanted = HashSet::from([500, 600]);
        let scan = find_owners(
            &proc.0,
            10,
            &wanted,
            &mut |pid| {
                asked.push(pid);
                Some(pid != 20)
            },
            later(),
            &mut FdIndex::new(Instant::now()),
        );

        assert_eq!(scan.owners[&500], HolderOwner { pid: 10, comm: "envoy".into(), fd: 131 });
        assert_eq!(scan.owners[&600], HolderOwner { pid: 30, comm: "same-ns".into(), fd: 7 });
        assert!(scan.notes.is_empty(), "{:?}", scan.notes);
        assert!(!asked.contains(&10), "the failing process is scanned without asking");
    }

    #[test]
    fn scan_stops_once_everything_is_found() {
        let proc = FakeProc::new("stops");
        proc.process(10, "envoy", &[(5, "socket:[500]")]);
        proc.process(30, "other", &[(5, "socket:[700]")]);
        let mut asked = 0;
        let scan = find_owners(
            &proc.0,
            10,
            &HashSet::from([500]),
            &mut |_| {
                asked += 1;
                Some(true)
            },
            later(),
            &mut FdIndex::new(Instant::now()),
        );
        assert_eq!(scan.owners.len(), 1);
        assert_eq!(asked, 0, "no other process needed");
    }

    #[test]
    fn vanished_processes_are_skipped_silently() {
        let proc = FakeProc::new("vanished");
        // pid 10 has no directory at all: it exited before the scan.
        proc.process(30, "other", &[(5, "socket:[700]")]);
        let scan = find_owners(
            &proc.0,
            10,
            &HashSet::from([700, 800]),
            &mut |_| Some(true),
            later(),
            &mut fresh_index(),
        );
        assert_eq!(scan.owners[&700].pid, 30);
        assert!(!scan.owners.contains_key(&800));
        assert!(scan.notes.is_empty(), "not finding is no error: {:?}", scan.notes);
    }

    #[test]
    fn a_passed_deadline_is_reported_when_owners_are_missing() {
        let proc = FakeProc::new("deadline");
        proc.process(10, "envoy", &[]);
        proc.process(30, "other", &[(5, "socket:[700]")]);
        let scan = find_owners(
            &proc.0,
            10,
            &HashSet::from([700]),
            &mut |_| Some(true),
            Instant::now(),
            &mut fresh_index(),
        );
        assert!(scan.owners.is_empty());
        assert_eq!(scan.notes, ["the owner search ran out of time"]);
    }

    /// Root passes every permission check of a fake /proc, so the refusals are counted
    /// here as the scan counts them.
    #[test]
    fn each_refused_step_names_its_own_capability() {
        let denied = Denied { lists: 2, links: 1, namespaces: 3 };
        assert_eq!(
            denied.notes(|_| false),
            [
                "cannot list the fds of 2 other processes in the namespace (needs CAP_DAC_READ_SEARCH)",
                "cannot read the fd links of 1 other processes in the namespace (needs CAP_SYS_PTRACE)",
                "cannot tell the network namespace of 3 processes (needs CAP_SYS_PTRACE)",
            ]
        );
        assert!(Denied::default().notes(|_| false).is_empty());
        // Holding SYS_PTRACE but not DAC_READ_SEARCH: only the latter is blamed.
        let notes = denied.notes(|cap| cap == "CAP_SYS_PTRACE");
        assert!(notes[0].ends_with("(needs CAP_DAC_READ_SEARCH)"), "{notes:?}");
        assert!(notes[1].contains("refused although sockerr holds CAP_SYS_PTRACE"), "{notes:?}");
        assert!(notes.iter().all(|note| !note.contains("needs CAP_SYS_PTRACE")), "{notes:?}");
        let eacces = || io::Error::from_raw_os_error(libc::EACCES);
        let list = ScanFailure::List(eacces()).into_error(Path::new("/proc"), 7).to_string();
        assert_eq!(list, "cannot list /proc/7/fd (needs CAP_DAC_READ_SEARCH)");
        let links = ScanFailure::Links(eacces()).into_error(Path::new("/proc"), 7).to_string();
        assert_eq!(links, "cannot read /proc/7/fd (needs CAP_SYS_PTRACE)");
    }

    #[test]
    fn processes_of_unknown_namespace_are_counted() {
        let proc = FakeProc::new("unknown-ns");
        proc.process(10, "envoy", &[]);
        proc.process(30, "other", &[(5, "socket:[700]")]);
        let scan =
            find_owners(&proc.0, 10, &HashSet::from([700]), &mut |_| None, later(), &mut fresh_index());
        assert!(scan.owners.is_empty());
        let [note] = scan.notes.as_slice() else { panic!("{:?}", scan.notes) };
        assert!(note.starts_with("cannot tell the network namespace of 1 processes ("), "{note}");
    }

    #[test]
    fn comm_is_trimmed() {
        let proc = FakeProc::new("comm");
        proc.process(10, "wrk:worker_0", &[]);
        assert_eq!(read_comm(&proc.0.join("10")).as_deref(), Some("wrk:worker_0"));
        assert_eq!(read_comm(&proc.0.join("11")), None);
    }
}
