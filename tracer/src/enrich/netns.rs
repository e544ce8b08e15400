//! Running work inside another network namespace without moving the daemon there.
//!
//! setns(CLONE_NEWNET) changes only the calling thread's namespace (setns(2)), so the
//! work runs on a thread of its own that enters the namespace, opens its sockets there,
//! and exits; no thread of the daemon ever changes namespace.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    thread,
};

use nix::sched::{CloneFlags, setns};

use super::EnrichError;

/// A network namespace to look things up in: the one a process (or one of its threads)
/// is in, named by its nsfs file under /proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    pid: u32,
    path: PathBuf,
}

impl Netns {
    /// `<proc_root>/<pid>/ns/net`
    pub fn of_process(proc_root: &Path, pid: u32) -> Self {
        Self { pid, path: proc_root.join(pid.to_string()).join("ns/net") }
    }

    /// `<proc_root>/<pid>/task/<tid>/ns/net`: a thread may have entered a namespace of
    /// its own (as tests do to get one without a child process).
    pub fn of_thread(proc_root: &Path, pid: u32, tid: u32) -> Self {
        let path = proc_root.join(pid.to_string()).join("task").join(tid.to_string()).join("ns/net");
        Self { pid, path }
    }

    /// The process whose descriptors are searched first for owners of holders.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on a new thread that entered this namespace, and waits for it.
    pub(crate) fn run<T, F>(&self, work: F) -> Result<T, EnrichError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, EnrichError> + Send + 'static,
    {
        let namespace = File::open(&self.path).map_err(|source| self.open_error(source))?;
        let path = self.path.clone();
        let worker = thread::Builder::new()
            .name("sockerr-netns".into())
            .spawn(move || {
                setns(&namespace, CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| EnrichError::Setns { path, source: io::Error::from(errno) })?;
                drop(namespace);
                work()
            })
            .map_err(|source| EnrichError::WorkerSpawn { source })?;
        worker.join().map_err(|_| EnrichError::WorkerPanicked)?
    }

    pub(crate) fn open_error(&self, source: io::Error) -> EnrichError {
        if is_gone(&source) {
            EnrichError::ProcessGone { pid: self.pid }
        } else {
            EnrichError::Proc { path: self.path.clone(), source }
        }
    }
}

/// ENOENT or ESRCH under /proc: the process (or thread) exited meanwhile.
pub(crate) fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_process_or_the_thread() {
        let root = Path::new("/host/proc");
        assert_eq!(Netns::of_process(root, 42).path(), Path::new("/host/proc/42/ns/net"));
        let thread = Netns::of_thread(root, 42, 43);
        assert_eq!(thread.path(), Path::new("/host/proc/42/task/43/ns/net"));
        assert_eq!(thread.pid(), 42);
    }

    #[test]
    fn a_missing_namespace_file_means_the_process_is_gone() {
        let netns = Netns::of_process(Path::new("/nonexistent-proc"), 42);
        let err = netns.run(|| Ok(())).unwrap_err();
        assert!(matches!(err, EnrichError::ProcessGone { pid: 42 }), "{err:?}");
    }

    #[test]
    fn a_file_that_is_no_namespace_is_refused_by_setns() {
        // /proc/self/ns/net would work only as root; /dev/null fails setns for anyone.
        let netns = Netns { pid: 1, path: PathBuf::from("/dev/null") };
        let err = netns.run(|| Ok(())).unwrap_err();
        assert!(matches!(err, EnrichError::Setns { .. }), "{err:?}");
    }
}
