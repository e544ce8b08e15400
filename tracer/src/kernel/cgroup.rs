//! Resolving `--cgroup PATH` to the cgroup v2 id and depth the kernel filter compares
//! with `bpf_get_current_ancestor_cgroup_id(level)`.
//!
//! A cgroup v2 id is the inode number of its directory in cgroupfs (kernfs node id,
//! kernel/cgroup/cgroup.c: cgroup_id()), and the ancestor at `level` is counted from
//! the root at level 0 (include/linux/cgroup.h: cgroup_ancestor()).

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "--cgroup needs cgroup v2, but no cgroup2 filesystem is mounted (see /proc/self/mountinfo); \
         mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoCgroup2,
    #[error("cannot read /proc/self/mountinfo")]
    Mountinfo(#[source] std::io::Error),
    #[error("cgroup {path} does not exist under the cgroup2 mount {mount}")]
    NotFound {
        path: PathBuf,
        mount: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory of the cgroup2 mount {mount}")]
    NotACgroup { path: PathBuf, mount: PathBuf },
}

/// A cgroup v2 directory as the kernel filter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
    /// Depth below the cgroup2 root (the root is 0).
    pub level: u32,
}

pub fn resolve(path: &Path) -> Result<Cgroup, CgroupError> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
    let mount = cgroup2_mount(&mountinfo).ok_or(CgroupError::NoCgroup2)?;
    let relative = relative_to_mount(path, &mount);
    let full = mount.join(&relative);
    let meta = fs::metadata(&full).map_err(|source| CgroupError::NotFound {
        path: full.clone(),
        mount: mount.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(CgroupError::NotACgroup { path: full, mount });
    }
    let level = relative.components().filter(|c| matches!(c, Component::Normal(_))).count() as u32;
    Ok(Cgroup { path: full, id: meta.ino(), level })
}

/// `/sys/fs/cgroup/unified/kubepods` and `/kubepods` both name `kubepods` when the
/// cgroup2 mount is /sys/fs/cgroup/unified.
pub(crate) fn relative_to_mount(path: &Path, mount: &Path) -> PathBuf {
    match path.strip_prefix(mount) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => path.components().filter(|c| matches!(c, Component::Normal(_))).collect(),
    }
}

/// The first cgroup2 mount point in a mountinfo text.
///
/// mountinfo lines are `id parent major:minor root mountpoint options [optional...] -
/// fstype source superoptions` (proc(5)); the mount point has spaces escaped as \040.
/// Parsed by hand: one field of a stable, documented format is not worth a dependency.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point.replace("\\040", " ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,name=systemd
";

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        assert_eq!(cgroup2_mount(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("1 0 0:1 / /sys/fs/cgroup rw - cgroup cgroup rw\n"), None);
    }

    #[test]
    fn unescapes_spaces() {
        let info = "1 0 0:1 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(info), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn paths_inside_and_relative_to_mount() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(relative_to_mount(Path::new("/sys/fs/cgroup/unified/a/b"), mount), PathBuf::from("a/b"));
        assert_eq!(
            relative_to_mount(Path::new("/kubepods.slice/x"), mount),
            PathBuf::from("kubepods.slice/x")
        );
        assert_eq!(relative_to_mount(Path::new("/"), mount), PathBuf::new());
    }

    #[test]
    fn resolves_the_root_of_this_machine() {
        // Every machine that runs the suite has cgroup2 somewhere (hybrid or unified).
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = cgroup2_mount(&mountinfo).expect("test machines mount cgroup2 (hybrid or unified)");
        let root = resolve(Path::new("/")).unwrap();
        assert_eq!(root.level, 0);
        assert_eq!(root.path, mount);
        let err = resolve(Path::new("/no-such-cgroup-sockerr")).unwrap_err().to_string();
        assert!(err.contains("no-such-cgroup-sockerr") && err.contains("does not exist"), "{err}");
    }
}
