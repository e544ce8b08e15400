//! Where the host's procfs is: `/proc`, or where a DaemonSet mounts the host's `/proc`
//! (`--host-proc /host/proc`).
//!
//! The kernel programs report pids of the initial pid namespace. A procfs shows the pids
//! of the namespace it was mounted from, so every /proc read about a traced pid (its name,
//! network namespace, fds, cgroup) goes through this root, never through a literal `/proc`.

use std::{
    convert::Infallible,
    fmt,
    ops::Deref,
    path::{Path, PathBuf},
    str::FromStr,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRoot(PathBuf);

/// Why a procfs root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProcRootError {
    #[error(
        "--host-proc {path}: cannot read it ({source}): mount the host's /proc there (in a DaemonSet, a hostPath \
         volume of /proc) or pass the path where it is mounted"
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(
        "--host-proc {path}: not a procfs: mount the host's /proc there (in a DaemonSet, a hostPath volume of \
         /proc) or pass the path where it is mounted"
    )]
    NotProcfs { path: PathBuf },
}

impl ProcRoot {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// Checks at start-up that the root is a mounted procfs: without it every pid
    /// lookup would fail quietly, record after record.
    pub fn check(&self) -> Result<(), ProcRootError> {
        let stat = nix::sys::statfs::statfs(&self.0)
            .map_err(|source| ProcRootError::Unreadable { path: self.0.clone(), source })?;
        if stat.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
            return Err(ProcRootError::NotProcfs { path: self.0.clone() });
        }
        Ok(())
    }

    /// Whether this procfs numbers processes as the kernel programs do (the initial pid
    /// namespace): there pid 2 is always kthreadd, the kernel's thread spawner. A procfs
    /// of a container's own pid namespace passes [`ProcRoot::check`] but not this, and
    /// there a host pid that is absent says nothing about whether the process lives.
    pub fn shows_host_pids(&self) -> bool {
        std::fs::read_to_string(self.pid_dir(2).join("comm")).is_ok_and(|comm| comm == "kthreadd\n")
    }

    /// `<root>/<pid>`.
    pub fn pid_dir(&self, pid: u32) -> PathBuf {
        self.0.join(pid.to_string())
    }

    pub fn to_path_buf(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Default for ProcRoot {
    fn default() -> Self {
        Self("/proc".into())
    }
}

impl Deref for ProcRoot {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ProcRoot {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl FromStr for ProcRoot {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Self, Infallible> {
        Ok(Self::new(text))
    }
}

impl fmt::Display for ProcRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_wrong_root_is_a_clear_error() {
        ProcRoot::default().check().expect("/proc is a procfs");
        let missing = ProcRoot::new("/nonexistent/sockerr-host-proc").check().unwrap_err().to_string();
        assert!(
            missing.starts_with("--host-proc /nonexistent/sockerr-host-proc: cannot read it"),
            "{missing}"
        );
        assert!(missing.contains("hostPath volume of /proc"), "{missing}");
        let not_proc = ProcRoot::new("/").check().unwrap_err().to_string();
        assert!(not_proc.contains("not a procfs"), "{not_proc}");
    }

    #[test]
    fn only_a_procfs_with_kthreadd_at_pid_2_shows_host_pids() {
        let root = std::env::temp_dir().join(format!("sockerr-proc-root-{}", std::process::id()));
        std::fs::create_dir_all(root.join("2")).unwrap();
        let fake = ProcRoot::new(&root);
        assert!(!fake.shows_host_pids(), "no comm");
        std::fs::write(root.join("2/comm"), "sh\n").unwrap();
        assert!(!fake.shows_host_pids(), "a container's pid 2");
        std::fs::write(root.join("2/comm"), "kthreadd\n").unwrap();
        assert!(fake.shows_host_pids());
        std::fs::remove_dir_all(&root).unwrap();
        // The test runs on the host, whose /proc is the initial pid namespace's.
        assert!(ProcRoot::default().shows_host_pids());
    }

    #[test]
    fn defaults_to_proc_and_joins_pids() {
        assert_eq!(ProcRoot::default().pid_dir(42), PathBuf::from("/proc/42"));
        let host: ProcRoot = "/host/proc".parse().unwrap();
        assert_eq!(host.pid_dir(7), PathBuf::from("/host/proc/7"));
        assert_eq!(host.to_string(), "/host/proc");
    }
}
