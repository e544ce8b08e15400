//! The running system as the pipeline sees it ([`SystemView`]): process names and
//! namespaces from /proc, holder lookups inside network namespaces, pods from the
//! attributor. The only adapter between the pure pipeline and the live machine.

use crate::{
    enrich::{Enricher, Findings, Query},
    k8s::Attributor,
    pipeline::{ProcessInfo, SystemView},
    record::PodIdentity,
};

/// The running system, seen through /proc and the network namespaces of processes.
pub(crate) struct LiveSystem {
    enricher: Enricher,
    pods: Attributor,
}

impl LiveSystem {
    pub(crate) fn new(enricher: Enricher, pods: Attributor) -> Self {
        Self { enricher, pods }
    }
}

impl SystemView for LiveSystem {
    fn process(&self, pid: u32) -> ProcessInfo {
        ProcessInfo { name: self.enricher.process_name(pid), netns: self.enricher.netns_inode(pid).ok() }
    }

    fn lookup(&self, pid: u32, query: &Query) -> Result<Findings, String> {
        self.enricher.lookup(pid, query).map_err(|err| error_chain(&err))
    }

    fn is_alive(&self, pid: u32) -> bool {
        self.enricher.proc_root().join(pid.to_string()).exists()
    }

    fn pod(&self, pid: u32) -> Option<PodIdentity> {
        self.pods.identify(pid)
    }

    fn forget_stale(&self) {
        self.enricher.forget_stale();
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
