//! The run loop's side of the watch: registers listeners as the kernel reports them
//! and samples them once a second off the event path.

use std::{path::PathBuf, sync::Arc, time::Instant};

use super::{ListenOverflow, ListenWatch, ListenerOwner, Unwatched, Watched, sample, socket_inode};
use crate::{
    event::{Header, Listening},
    record::PodIdentity,
};

pub struct Watcher {
    watch: ListenWatch,
    proc_root: Arc<PathBuf>,
}

impl Watcher {
    pub fn new(proc_root: PathBuf) -> Self {
        Self { watch: ListenWatch::new(), proc_root: Arc::new(proc_root) }
    }

    pub fn watch(&self) -> &ListenWatch {
        &self.watch
    }

    /// A traced task's listen() made `listening`. `name` is the process name (else the
    /// thread's), `netns` its namespace inode, `pod` its pod, as the pipeline found them.
    pub fn listening(
        &mut self,
        header: &Header,
        listening: &Listening,
        name: Option<String>,
        netns: Option<u64>,
        pod: Option<PodIdentity>,
    ) {
        let (Some(local), Some(inode)) =
            (listening.local, socket_inode(&self.proc_root, header.pid, listening.fd))
        else {
            self.watch.count_unwatched(Unwatched::NoInode);
            return;
        };
        let owner = ListenerOwner {
            pid: header.pid,
            tid: header.tid,
            comm: name.unwrap_or_else(|| header.thread.clone()),
            fd: listening.fd,
            cgroup_id: header.cgroup_id,
            netns,
            pod,
        };
        self.watch.register(Watched { owner, local, inode, drops_before: 0, sampled_at: Instant::now() });
    }

    /// Samples every watched listener (one sock_diag round per namespace, on a blocking
    /// thread) and returns the overflows since the previous sample.
    pub async fn sample(&mut self) -> Vec<ListenOverflow> {
        let targets = self.watch.targets();
        if targets.is_empty() {
            return Vec::new();
        }
        let proc_root = Arc::clone(&self.proc_root);
        let work = targets.clone();
        let samples = tokio::task::spawn_blocking(move || {
            work.iter().map(|target| sample(&proc_root, target)).collect::<Vec<_>>()
        })
        .await;
        let Ok(samples) = samples else {
            tracing::warn!("the listener sampling thread panicked: no listener sampled this round");
            return Vec::new();
        };
        let (now, time) = (Instant::now(), jiff::Timestamp::now());
        let mut overflows = Vec::new();
        for (target, sample) in targets.iter().zip(samples) {
            let sample = sample.map_err(|err| {
                tracing::debug!(pid = target.pid, %err, "listeners not sampled: their namespace is gone");
            });
            overflows.extend(self.watch.observe(target, sample.as_deref().map_err(|_| ()), now, time));
        }
        overflows
    }
}
