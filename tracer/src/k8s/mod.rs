//! Kubernetes attribution: which pod and container a traced process belongs to.
//!
//! Ids come from the process's cgroup path, with no API access (`cgroup_path`); names
//! come from the pods of this node, listed and watched through the API by a task of their
//! own (`watch`, `directory`). The event path only reads caches (`attributor`).

pub mod args;
pub mod attributor;
pub mod cgroup_path;
pub mod directory;
pub mod watch;

use thiserror::Error;

pub use args::AttributionArgs;
pub use attributor::Attributor;

#[derive(Debug, Error)]
pub enum K8sError {
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
}

/// The attributor the flags ask for; with `--kubernetes` this starts the pod watcher
/// (a task on the current runtime, running until the runtime stops).
pub async fn attributor(args: &AttributionArgs) -> Result<Attributor, K8sError> {
    let attributor = Attributor::new(args.host_proc.clone());
    if !args.kubernetes {
        return Ok(attributor);
    }
    let node = args.node_name(std::env::var("NODE_NAME").ok())?;
    let directory = directory::PodDirectory::default();
    watch::start(&node, directory.clone()).await?;
    Ok(attributor.with_directory(directory))
}
