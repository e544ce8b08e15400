//! Pid -> [`PodIdentity`]: ids from the process's cgroup path (always), names from the
//! API's pod directory (with `--kubernetes`).

use std::{
    fs,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::task::AbortHandle;

use super::{
    cgroup_path::{self, ContainerIds},
    directory::PodDirectory,
};
use crate::{proc_root::ProcRoot, record::PodIdentity, ttl_cache::TtlCache};

/// A process keeps its cgroup for life (runtimes place it before exec); the TTL only
/// bounds the damage of a reused pid.
const IDS_TTL: Duration = Duration::from_secs(10);
const IDS_CACHE_SIZE: usize = 8192;

pub struct Attributor {
    proc_root: ProcRoot,
    /// `None`: the process is in no container (or was gone when asked).
    ids: Mutex<TtlCache<u32, Option<ContainerIds>>>,
    directory: Option<PodDirectory>,
    /// The task that keeps `directory` current; it stops with the attributor.
    watcher: Option<AbortHandle>,
}

impl Attributor {
    /// Ids from cgroup paths only.
    pub fn new(proc_root: ProcRoot) -> Self {
        let ids = Mutex::new(TtlCache::new(IDS_TTL, IDS_CACHE_SIZE));
        Self { proc_root, ids, directory: None, watcher: None }
    }

    /// Names pods and containers from `directory` too, which `watcher` keeps current.
    pub fn with_directory(mut self, directory: PodDirectory, watcher: Option<AbortHandle>) -> Self {
        self.directory = Some(directory);
        self.watcher = watcher;
        self
    }

    pub fn proc_root(&self) -> &ProcRoot {
        &self.proc_root
    }

    /// Who `pid` is in Kubernetes terms; `None` outside containers. One procfs read per
    /// pid and TTL, then a map lookup: cheap enough for the event path.
    pub fn identify(&self, pid: u32) -> Option<PodIdentity> {
        let ids = self.ids_of(pid)?;
        let names = self.directory.as_ref().map(|directory| directory.lookup(&ids)).unwrap_or_default();
        Some(PodIdentity {
            // The API knows the pod of a container id even when the cgroup path, read from
            // inside a cgroup namespace, stops above the pod level.
            pod_uid: ids.pod_uid.or(names.pod_uid),
            container_id: ids.container_id,
            pod: names.pod,
            namespace: names.namespace,
            container: names.container,
        })
    }

    fn ids_of(&self, pid: u32) -> Option<ContainerIds> {
        // The event path is one task: the lock is never contended, and holding it over
        // the read keeps one procfs read per pid.
        let now = Instant::now();
        let mut cache = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ids) = cache.get(&pid, now) {
            return ids;
        }
        let path = self.proc_root.pid_dir(pid).join("cgroup");
        let ids = match fs::read_to_string(&path) {
            Ok(text) => cgroup_path::from_proc_cgroup(&text),
            Err(err) => {
                tracing::debug!(path = %path.display(), %err, "no cgroup for attribution");
                None
            }
        };
        cache.insert(pid, ids.clone(), now);
        ids
    }
}

impl Drop for Attributor {
    fn drop(&mut self) {
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8b9f4a3e-2c1d-4e5f-9a7b-6c5d4e3f2a1b";
    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    /// A fake procfs with pid 401 in a pod and pid 402 on the host.
    fn proc_root(dir: &std::path::Path) -> ProcRoot {
        let write = |pid: u32, text: String| {
            fs::create_dir_all(dir.join(pid.to_string())).unwrap();
            fs::write(dir.join(pid.to_string()).join("cgroup"), text).unwrap();
        };
        write(401, format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"));
        write(402, "0::/user.slice/user-0.slice/session-1.scope\n".into());
        ProcRoot::new(dir)
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sockerr-attributor-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn ids_from_the_given_proc_root() {
        let dir = scratch("ids");
        let attributor = Attributor::new(proc_root(&dir));
        let identity = attributor.identify(401).unwrap();
        assert_eq!(identity.pod_uid.as_deref(), Some(UID));
        assert_eq!(identity.container_id.as_deref(), Some(ID));
        assert_eq!((identity.pod, identity.namespace, identity.container), (None, None, None));
        assert_eq!(attributor.identify(402), None, "host process");
        assert_eq!(attributor.identify(403), None, "no such process");
        // Cached: the process may exit before its last records are processed.
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(attributor.identify(401).unwrap().container_id.as_deref(), Some(ID));
    }

    #[test]
    fn names_from_the_directory() {
        let dir = scratch("names");
        let directory = PodDirectory::default();
        let mut mirror = super::super::directory::Mirror::new(directory.clone());
        let pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": UID},
            "status": {"containerStatuses": [{"name": "envoy", "containerID": format!("containerd://{ID}"),
                "image": "e", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        mirror.apply(kube::runtime::watcher::Event::Apply(pod));
        let attributor = Attributor::new(proc_root(&dir)).with_directory(directory, None);
        let identity = attributor.identify(401).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            identity,
            PodIdentity {
                pod_uid: Some(UID.into()),
                container_id: Some(ID.into()),
                pod: Some("web-0".into()),
                namespace: Some("shop".into()),
                container: Some("envoy".into()),
            }
        );
    }
}
