//! Which process holds a socket: the socket inode sock_diag reports is what
//! /proc/PID/fd/N links to (`socket:[INODE]`, proc(5)).
//!
//! A node has thousands of processes; the scan starts with the failing process, then
//! visits only processes in the same network namespace (a socket usually stays in the
//! namespace of the process that made it), stops as soon as every inode has an owner,
//! and gives up at a deadline.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs, io,
    path::Path,
    time::Instant,
};

use tracing::debug;

use super::{EnrichError, netns::is_gone};
use crate::record::HolderOwner;

/// What the scan found, and why it may have missed some.
#[derive(Debug, Default)]
pub(crate) struct OwnerScan {
    pub owners: HashMap<u64, HolderOwner>,
    /// Set only when some inode stayed without an owner.
    pub notes: Vec<String>,
}

/// Finds an owning (pid, fd) for each of `wanted`, looking at `first_pid` and then at
/// the pids for which `in_namespace` says yes.
pub(crate) fn find_owners(
    proc_root: &Path,
    first_pid: u32,
    wanted: &HashSet<u64>,
    in_namespace: &mut dyn FnMut(u32) -> bool,
    deadline: Instant,
) -> OwnerScan {
    let mut missing = wanted.clone();
    let mut scan = OwnerScan::default();
    let mut first_pid_error = None;
    let mut unreadable = 0usize;
    let mut timed_out = false;

    match scan_process(proc_root, first_pid, &mut missing, &mut scan.owners) {
        Ok(()) => {}
        Err(err) if is_gone(&err) => {}
        Err(source) => {
            let path = proc_root.join(first_pid.to_string()).join("fd");
            first_pid_error = Some(EnrichError::Proc { path, source });
        }
    }

    if !missing.is_empty() {
        match fs::read_dir(proc_root) {
            Ok(entries) => {
                for pid in entries.flatten().filter_map(|entry| parse_pid(&entry.file_name())) {
                    if missing.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        timed_out = true;
                        break;
                    }
                    if pid == first_pid || !in_namespace(pid) {
                        continue;
                    }
                    match scan_process(proc_root, pid, &mut missing, &mut scan.owners) {
                        Ok(()) => {}
                        Err(err) if is_gone(&err) => {}
                        Err(err) => {
                            debug!(pid, %err, "cannot list the fds of a process");
                            unreadable += 1;
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

    if !missing.is_empty() {
        if let Some(err) = first_pid_error {
            scan.notes.push(err.to_string());
        }
        if unreadable > 0 {
            scan.notes.push(format!(
                "cannot read the fds of {unreadable} other processes in the namespace (needs CAP_SYS_PTRACE)"
            ));
        }
        if timed_out {
            scan.notes.push("the owner search ran out of time".to_string());
        }
    }
    scan
}

/// Records an owner for each inode of `missing` that `pid` has open.
fn scan_process(
    proc_root: &Path,
    pid: u32,
    missing: &mut HashSet<u64>,
    owners: &mut HashMap<u64, HolderOwner>,
) -> io::Result<()> {
    let process_dir = proc_root.join(pid.to_string());
    let mut comm = None;
    for entry in fs::read_dir(process_dir.join("fd"))? {
        // An fd closed while listing is no owner: skip it.
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = fs::read_link(entry.path()) else { continue };
        let Some(inode) = socket_inode(target.as_os_str()) else { continue };
        if missing.remove(&inode) {
            let comm = comm.get_or_insert_with(|| read_comm(&process_dir).unwrap_or_default());
            owners.insert(inode, HolderOwner { pid, comm: comm.clone(), fd });
            if missing.is_empty() {
                break;
            }
        }
    }
    Ok(())
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
                pid != 20
            },
            later(),
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
                true
            },
            later(),
        );
        assert_eq!(scan.owners.len(), 1);
        assert_eq!(asked, 0, "no other process needed");
    }

    #[test]
    fn vanished_processes_are_skipped_silently() {
        let proc = FakeProc::new("vanished");
        // pid 10 has no directory at all: it exited before the scan.
        proc.process(30, "other", &[(5, "socket:[700]")]);
        let scan = find_owners(&proc.0, 10, &HashSet::from([700, 800]), &mut |_| true, later());
        assert_eq!(scan.owners[&700].pid, 30);
        assert!(!scan.owners.contains_key(&800));
        assert!(scan.notes.is_empty(), "not finding is no error: {:?}", scan.notes);
    }

    #[test]
    fn a_passed_deadline_is_reported_when_owners_are_missing() {
        let proc = FakeProc::new("deadline");
        proc.process(10, "envoy", &[]);
        proc.process(30, "other", &[(5, "socket:[700]")]);
        let scan = find_owners(&proc.0, 10, &HashSet::from([700]), &mut |_| true, Instant::now());
        assert!(scan.owners.is_empty());
        assert_eq!(scan.notes, ["the owner search ran out of time"]);
    }

    #[test]
    fn comm_is_trimmed() {
        let proc = FakeProc::new("comm");
        proc.process(10, "wrk:worker_0", &[]);
        assert_eq!(read_comm(&proc.0.join("10")).as_deref(), Some("wrk:worker_0"));
        assert_eq!(read_comm(&proc.0.join("11")), None);
    }
}
