//! The flags of Kubernetes attribution, shared by `trace` and `daemon`.

use clap::Args;
use thiserror::Error;

use crate::proc_root::ProcRoot;

#[derive(Debug, Clone, Default, Args)]
pub struct AttributionArgs {
    /// Where the host's /proc is mounted: the kernel reports host pids, which only the
    /// host's procfs shows (in a DaemonSet: --host-proc /host/proc).
    #[arg(long, value_name = "PATH", default_value_t)]
    pub host_proc: ProcRoot,
    /// Name pods, namespaces and containers through the Kubernetes API (in-cluster service
    /// account, or KUBECONFIG), watching the pods of this node. Without it, records of
    /// processes in pods carry pod_uid and container_id from their cgroups.
    #[arg(long)]
    pub kubernetes: bool,
    /// This node's name, for --kubernetes (default: $NODE_NAME, set from the downward API
    /// in the DaemonSet).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error(
        "--kubernetes needs this node's name to watch only its pods: pass --node-name NAME or set NODE_NAME \
         (in a pod: env NODE_NAME from fieldRef spec.nodeName)"
    )]
    NoNodeName,
}

impl AttributionArgs {
    /// `--node-name`, else `NODE_NAME` (`env` is its value, passed in for tests).
    pub fn node_name(&self, env: Option<String>) -> Result<String, ArgsError> {
        let name = self.node_name.clone().or(env).map(|name| name.trim().to_owned());
        name.filter(|name| !name.is_empty()).ok_or(ArgsError::NoNodeName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_from_flag_then_env() {
        let flag = AttributionArgs { node_name: Some("node-a".into()), ..Default::default() };
        assert_eq!(flag.node_name(Some("node-b".into())), Ok("node-a".into()));
        let none = AttributionArgs::default();
        assert_eq!(none.node_name(Some("node-b".into())), Ok("node-b".into()));
        assert_eq!(none.node_name(None), Err(ArgsError::NoNodeName));
        assert_eq!(none.node_name(Some("  ".into())), Err(ArgsError::NoNodeName));
        assert!(ArgsError::NoNodeName.to_string().contains("--node-name"));
    }
}
