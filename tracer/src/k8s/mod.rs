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

pub use args::AttributionArgs;
pub use attributor::Attributor;
use thiserror::Error;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Error)]
pub enum K8sError {
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    #[error(transparent)]
    ProcRoot(#[from] crate::proc_root::ProcRootError),
}

/// kube's client logs every failed request at error level, once per retry; the pod
/// watcher reports an outage once itself. Its logs stay on when `RUST_LOG` names kube.
pub fn quiet_client_logs(filter: EnvFilter, rust_log: Option<&str>) -> EnvFilter {
    if rust_log.is_some_and(|directives| directives.contains("kube")) {
        return filter;
    }
    filter.add_directive("kube_client=off".parse().expect("a constant, valid directive"))
}

/// The attributor the flags ask for; with `--kubernetes` this starts the pod watcher
/// (a task on the current runtime, running until the attributor is dropped).
pub async fn attributor(args: &AttributionArgs) -> Result<Attributor, K8sError> {
    args.host_proc.check()?;
    let attributor = Attributor::new(args.host_proc.clone());
    if !args.kubernetes {
        return Ok(attributor);
    }
    let node = args.node_name(std::env::var("NODE_NAME").ok())?;
    let directory = directory::PodDirectory::default();
    let watcher = watch::start(&node, directory.clone()).await?;
    Ok(attributor.with_directory(directory, Some(watcher.abort_handle())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_client_logs_are_off_unless_asked_for() {
        let quiet = quiet_client_logs(EnvFilter::new("info"), Some("info")).to_string();
        assert!(quiet.contains("kube_client=off"), "{quiet}");
        let asked =
            quiet_client_logs(EnvFilter::new("kube_client=debug"), Some("kube_client=debug")).to_string();
        assert!(!asked.contains("off"), "{asked}");
    }
}
