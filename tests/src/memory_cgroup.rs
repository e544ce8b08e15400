//! A memory cgroup made for one test, on whichever hierarchy holds the memory
//! controller: cgroup v1's `memory` mount (the 6.18 host's hybrid layout, where cgroup v2
//! has no controller but hugetlb) or cgroup v2 (the guests, whose init mounts it alone).
//!
//! The kernel charges a BPF map's memory, including every element it allocates later
//! (task-local storage among them), to the memory cgroup of the process that created the
//! map. A limit on a cgroup that held sockerr while it loaded, and no longer holds it,
//! therefore starves the maps and nothing else.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The two layouts differ only in file names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn usage_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.usage_in_bytes",
            Self::V2 => "memory.current",
        }
    }

    fn limit_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.limit_in_bytes",
            Self::V2 => "memory.max",
        }
    }
}

/// `<memory controller's mount>/sockerr-e2e-<pid>-<tag>`, removed when dropped (once
/// its processes are gone: rmdir of a populated cgroup fails with EBUSY, so it is
/// retried briefly). Charges still held by the maps do not keep it: the kernel keeps an
/// offline cgroup's accounting until they are freed.
pub struct MemoryCgroup {
    path: PathBuf,
    /// Where [`MemoryCgroup::move_out`] puts a process: the hierarchy's root.
    root: PathBuf,
    version: Version,
}

impl MemoryCgroup {
    pub fn create(tag: &str) -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
        let (root, version) = memory_hierarchy(&mountinfo, controllers_offered)
            .unwrap_or_else(|| panic!("no memory cgroup controller is mounted:\n{mountinfo}"));
        if version == Version::V2 {
            // The root may enable a controller for its children while it holds processes.
            let control = root.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "memory") {
                fs::write(&control, "+memory")
                    .unwrap_or_else(|e| panic!("cannot enable memory in {}: {e}", control.display()));
            }
        }
        let path = root.join(format!("sockerr-e2e-{}-{tag}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self { path, root, version }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes charged to the cgroup now.
    pub fn usage(&self) -> u64 {
        let file = self.path.join(self.version.usage_file());
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        text.trim().parse().unwrap_or_else(|e| panic!("{}: {e}: {text:?}", file.display()))
    }

    /// Caps what may be charged to the cgroup.
    pub fn limit(&self, bytes: u64) {
        let file = self.path.join(self.version.limit_file());
        fs::write(&file, bytes.to_string()).unwrap_or_else(|e| panic!("{} = {bytes}: {e}", file.display()));
    }

    /// Moves process `pid` (all its threads) to the hierarchy's root: what it allocates
    /// from now on is charged there, what was charged here stays here.
    pub fn move_out(&self, pid: u32) {
        let procs = self.root.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).unwrap_or_else(|e| panic!("{pid} to {}: {e}", procs.display()));
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(&self.path).is_err() && self.path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The controllers a cgroup v2 mount offers (its root's `cgroup.controllers`).
fn controllers_offered(mount: &Path) -> String {
    fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default()
}

/// The mount of the hierarchy that holds the memory controller: a cgroup v1 mount with
/// the `memory` option, else a cgroup v2 mount that offers `memory`. A hand-read field
/// split, as in `tracer::kernel::cgroup`: mountinfo lines are `id parent major:minor root
/// mountpoint options ... - fstype source superoptions` (proc(5)).
fn memory_hierarchy(mountinfo: &str, offered: impl Fn(&Path) -> String) -> Option<(PathBuf, Version)> {
    let mounts: Vec<(&str, PathBuf, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let (fstype, options) = (right.next()?, right.nth(1).unwrap_or(""));
            let mount_point = left.split_whitespace().nth(4)?.replace("\\040", " ");
            Some((fstype, PathBuf::from(mount_point), options))
        })
        .collect();
    let has_memory = |list: &str, separator: char| list.split(separator).any(|item| item.trim() == "memory");
    let v1 = mounts.iter().find(|(fstype, _, options)| *fstype == "cgroup" && has_memory(options, ','));
    let v2 =
        || mounts.iter().find(|(fstype, mount, _)| *fstype == "cgroup2" && has_memory(&offered(mount), ' '));
    match v1 {
        Some((_, mount, _)) => Some((mount.clone(), Version::V1)),
        None => v2().map(|(_, mount, _)| (mount.clone(), Version::V2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu
38 35 0:33 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
";

    #[test]
    fn finds_the_hierarchy_that_holds_memory() {
        let hugetlb_only = |_: &Path| "hugetlb\n".to_owned();
        let all = |_: &Path| "cpuset cpu io memory hugetlb pids\n".to_owned();
        let found = |mountinfo: &str, offered: &dyn Fn(&Path) -> String| memory_hierarchy(mountinfo, offered);
        // Hybrid: memory is on v1, even when v2 would offer it too.
        assert_eq!(found(HYBRID, &all), Some((PathBuf::from("/sys/fs/cgroup/memory"), Version::V1)));
        // v1 without memory: v2 only if it offers memory.
        let no_v1_memory = HYBRID.replace("rw,memory", "rw,pids");
        assert_eq!(found(&no_v1_memory, &all), Some((PathBuf::from("/sys/fs/cgroup/unified"), Version::V2)));
        assert_eq!(found(&no_v1_memory, &hugetlb_only), None);
    }
}
