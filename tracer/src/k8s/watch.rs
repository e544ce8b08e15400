//! The API side of `--kubernetes`: one task lists and watches the pods of this node
//! (`fieldSelector=spec.nodeName=<node>`) and keeps a [`PodDirectory`] current.
//!
//! It runs apart from the event path: while the API server is unreachable, records carry
//! the ids from cgroups only, one warning says so, and the watch is started again after a
//! backoff (0.8 s doubling to 30 s, as client-go's reflector), from a fresh list: a watch
//! that merely resumes yields no event, so without the list nothing would tell that the
//! API is back, and the next outage would go unreported.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, Config, runtime::watcher};
use thiserror::Error;
use tokio::task::JoinHandle;

use super::directory::{Applied, Mirror, PodDirectory};

#[derive(Debug, Error)]
pub enum WatchError {
    #[error(
        "--kubernetes: no Kubernetes client configuration: neither KUBECONFIG (or ~/.kube/config) nor the \
         in-cluster service account (KUBERNETES_SERVICE_HOST and /var/run/secrets/kubernetes.io/serviceaccount) \
         is usable; run in a pod with a service account, or set KUBECONFIG"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("--kubernetes: cannot build a Kubernetes client from the configuration")]
    Client(#[source] kube::Error),
}

/// Starts watching the pods of `node`; the directory fills once the first list arrives.
pub async fn start(node: &str, directory: PodDirectory) -> Result<JoinHandle<()>, WatchError> {
    let config = Config::infer().await.map_err(WatchError::Config)?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(WatchError::Client)?;
    let pods: Api<Pod> = Api::all(client);
    let selector = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    tracing::info!("--kubernetes: watching the pods of node {node} at {server}");
    let node = node.to_owned();
    Ok(tokio::spawn(async move {
        let mut mirror = Mirror::new(directory);
        let mut health = Health::default();
        let mut backoff = Backoff::default();
        loop {
            let mut events = watcher(pods.clone(), selector.clone()).boxed();
            while let Some(event) = events.next().await {
                let (report, failed) = match event {
                    Ok(event) => {
                        let applied = mirror.apply(event);
                        if matches!(applied, Applied::Synced(_)) {
                            backoff.reset();
                        }
                        (health.applied(applied), false)
                    }
                    Err(err) => (health.failed(&err.to_string()), true),
                };
                match report {
                    Some(Report::Warn(message)) => tracing::warn!("{message}"),
                    Some(Report::Info(message)) => tracing::info!("{message} (node {node})"),
                    None => {}
                }
                if failed {
                    break;
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }))
}

/// Delays between watch restarts: 0.8 s doubling to 30 s, back to 0.8 s after a list.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

const FIRST_RETRY: Duration = Duration::from_millis(800);
const MAX_RETRY: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        delay
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// What the watcher says about itself: a warning when the API becomes unreachable (once
/// per outage, not once per retry), a line when pods are known again.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
    synced_once: bool,
    warned_full: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Report {
    Warn(String),
    Info(String),
}

impl Health {
    fn failed(&mut self, error: &str) -> Option<Report> {
        if self.failing {
            tracing::debug!("Kubernetes API still failing: {error}");
            return None;
        }
        self.failing = true;
        Some(Report::Warn(format!(
            "Kubernetes API unreachable ({error}): records carry pod_uid and container_id from cgroups \
             only, without pod, namespace and container names; retrying in the background"
        )))
    }

    fn applied(&mut self, applied: Applied) -> Option<Report> {
        match applied {
            Applied::Updated => None,
            Applied::Full if !self.warned_full => {
                self.warned_full = true;
                Some(Report::Warn(format!(
                    "more than {} pods on this node: the pods beyond are not named",
                    super::directory::MAX_PODS
                )))
            }
            Applied::Full => None,
            Applied::Synced(count) => {
                let recovered = std::mem::take(&mut self.failing);
                let first = !std::mem::replace(&mut self.synced_once, true);
                (recovered || first).then(|| {
                    let again = if first { "" } else { " again" };
                    Report::Info(format!("Kubernetes API reachable{again}: {count} pods known"))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_outage() {
        let mut health = Health::default();
        let first = health.failed("connection refused");
        let Some(Report::Warn(text)) = first else { panic!("{first:?}") };
        assert!(text.contains("connection refused") && text.contains("pod_uid and container_id"), "{text}");
        assert_eq!(health.failed("connection refused"), None, "retries stay quiet");
        assert_eq!(
            health.applied(Applied::Synced(3)),
            Some(Report::Info("Kubernetes API reachable: 3 pods known".into()))
        );
        assert_eq!(health.applied(Applied::Updated), None);
        // A relist without an outage (watch timeouts) is routine.
        assert_eq!(health.applied(Applied::Synced(3)), None);
        assert!(matches!(health.failed("timed out"), Some(Report::Warn(_))), "a new outage warns again");
        assert_eq!(
            health.applied(Applied::Synced(4)),
            Some(Report::Info("Kubernetes API reachable again: 4 pods known".into()))
        );
    }

    #[test]
    fn restarts_back_off_and_reset_after_a_list() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), FIRST_RETRY);
    }

    #[test]
    fn full_directory_warns_once() {
        let mut health = Health::default();
        assert!(matches!(health.applied(Applied::Full), Some(Report::Warn(_))));
        assert_eq!(health.applied(Applied::Full), None);
    }
}
