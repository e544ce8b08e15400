//! The pods of this node as the API server describes them, reduced to what attribution
//! needs: pod UID -> name and namespace, container id -> container name.
//!
//! The watcher task writes it; the event path only reads it (a map lookup under a
//! read lock that the writer holds for one map update at a time), so a slow or absent API
//! server never delays a record.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock, RwLockWriteGuard},
};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::watcher::Event;

use super::cgroup_path::ContainerIds;

/// A node runs at most a few hundred pods (kubelet `--max-pods`, 110 by default); past
/// this, new pods are left out rather than letting a misbehaving API grow the map.
pub const MAX_PODS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEntry {
    pub name: String,
    pub namespace: String,
    /// (container id without the runtime prefix, container name).
    pub containers: Vec<(String, String)>,
}

/// Names the API gave for a process's pod and container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNames {
    pub pod_uid: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub container: Option<String>,
}

#[derive(Debug, Default)]
pub struct Directory {
    pods: HashMap<String, PodEntry>,
    /// container id -> pod UID.
    containers: HashMap<String, String>,
}

impl Directory {
    /// Adds or replaces a pod; false when the directory is full and the pod is new.
    pub fn upsert(&mut self, pod: &Pod) -> bool {
        let Some((uid, entry)) = entry_of(pod) else { return true };
        if self.pods.len() >= MAX_PODS && !self.pods.contains_key(&uid) {
            return false;
        }
        self.forget(&uid);
        for (id, _) in &entry.containers {
            self.containers.insert(id.clone(), uid.clone());
        }
        self.pods.insert(uid, entry);
        true
    }

    pub fn remove(&mut self, pod: &Pod) {
        if let Some(uid) = pod.metadata.uid.as_deref() {
            self.forget(uid);
        }
    }

    fn forget(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for (id, _) in old.containers {
                self.containers.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The container id finds pod and container; the pod UID alone still finds the pod
    /// (a container whose id the kubelet has not reported yet, a pod's sandbox).
    pub fn lookup(&self, ids: &ContainerIds) -> PodNames {
        let by_container = ids.container_id.as_ref().and_then(|id| Some((id, self.containers.get(id)?)));
        let uid = by_container.map(|(_, uid)| uid).or(ids.pod_uid.as_ref());
        let Some((uid, pod)) = uid.and_then(|uid| Some((uid, self.pods.get(uid)?))) else {
            return PodNames::default();
        };
        let container = by_container.and_then(|(id, _)| {
            pod.containers.iter().find(|(known, _)| known == id).map(|(_, name)| name.clone())
        });
        PodNames {
            pod_uid: Some(uid.clone()),
            pod: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            container,
        }
    }
}

/// A pod's UID and entry; `None` for a pod without UID or name (the API always sets both).
fn entry_of(pod: &Pod) -> Option<(String, PodEntry)> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone()?;
    let name = meta.name.clone()?;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let statuses = pod.status.iter().flat_map(|status| {
        [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses]
            .into_iter()
            .flatten()
            .flatten()
    });
    let containers = statuses.filter_map(container_of).collect();
    Some((uid, PodEntry { name, namespace, containers }))
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` -> (id, name).
fn container_of(status: &ContainerStatus) -> Option<(String, String)> {
    let full = status.container_id.as_deref()?;
    let id = full.split_once("://").map_or(full, |(_, id)| id);
    (!id.is_empty()).then(|| (id.to_owned(), status.name.clone()))
}

/// The directory shared between the watcher task (writer) and the event path (readers).
#[derive(Clone, Debug, Default)]
pub struct PodDirectory {
    shared: Arc<RwLock<Directory>>,
}

impl PodDirectory {
    fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        // Nothing panics while the lock is held; a poisoned lock still holds a whole map.
        self.shared.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn lookup(&self, ids: &ContainerIds) -> PodNames {
        self.shared.read().unwrap_or_else(PoisonError::into_inner).lookup(ids)
    }

    pub fn len(&self) -> usize {
        self.shared.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What applying a watch event changed, for the watcher's log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Part of a (re)list or a single change.
    Updated,
    /// A (re)list finished: the directory now holds this many pods.
    Synced(usize),
    /// The directory is full ([`MAX_PODS`]); this pod was left out.
    Full,
}

/// Keeps a [`PodDirectory`] in step with a watch stream. A (re)list is collected aside and
/// swapped in whole at its end, so readers never see a half-listed node.
pub struct Mirror {
    directory: PodDirectory,
    relisting: Option<Directory>,
}

impl Mirror {
    pub fn new(directory: PodDirectory) -> Self {
        Self { directory, relisting: None }
    }

    pub fn apply(&mut self, event: Event<Pod>) -> Applied {
        match event {
            Event::Init => {
                self.relisting = Some(Directory::default());
                Applied::Updated
            }
            Event::InitApply(pod) => {
                let fits = self.relisting.get_or_insert_with(Directory::default).upsert(&pod);
                if fits { Applied::Updated } else { Applied::Full }
            }
            Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                let count = fresh.len();
                *self.directory.write() = fresh;
                Applied::Synced(count)
            }
            Event::Apply(pod) => {
                if self.directory.write().upsert(&pod) {
                    Applied::Updated
                } else {
                    Applied::Full
                }
            }
            Event::Delete(pod) => {
                self.directory.write().remove(&pod);
                Applied::Updated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8b9f4a3e-2c1d-4e5f-9a7b-6c5d4e3f2a1b";
    const ENVOY: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const APP: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const INIT: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// A pod as the API server returns it (trimmed to the fields attribution reads and
    /// the ones the schema requires).
    fn pod(uid: &str, name: &str, runtime: &str, containers: &[(&str, &str)]) -> Pod {
        let statuses: Vec<serde_json::Value> = containers
            .iter()
            .map(|(id, name)| {
                serde_json::json!({
                    "name": name, "containerID": format!("{runtime}://{id}"), "image": "envoyproxy/envoy:v1.31",
                    "imageID": "docker.io/envoyproxy/envoy@sha256:00", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-11-23T18:00:00Z"}}
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "1"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": statuses,
                "initContainerStatuses": [{
                    "name": "istio-init", "containerID": format!("{runtime}://{INIT}"), "image": "i",
                    "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0}}
                }]
            }
        }))
        .expect("a valid pod")
    }

    fn ids(uid: Option<&str>, id: Option<&str>) -> ContainerIds {
        ContainerIds { pod_uid: uid.map(Into::into), container_id: id.map(Into::into) }
    }

    #[test]
    fn container_id_names_pod_and_container() {
        let mut directory = Directory::default();
        assert!(directory.upsert(&pod(
            UID,
            "web-7d9f",
            "containerd",
            &[(APP, "app"), (ENVOY, "istio-proxy")]
        )));
        let names = directory.lookup(&ids(Some(UID), Some(ENVOY)));
        assert_eq!(
            names,
            PodNames {
                pod_uid: Some(UID.into()),
                pod: Some("web-7d9f".into()),
                namespace: Some("shop".into()),
                container: Some("istio-proxy".into()),
            }
        );
        // The container id alone is enough (a reader whose cgroup path lacks the pod level).
        assert_eq!(directory.lookup(&ids(None, Some(ENVOY))), names);
        assert_eq!(directory.lookup(&ids(None, Some(INIT))).container.as_deref(), Some("istio-init"));
    }

    #[test]
    fn every_runtime_prefix_is_stripped() {
        for runtime in ["containerd", "cri-o", "docker"] {
            let mut directory = Directory::default();
            directory.upsert(&pod(UID, "web", runtime, &[(APP, "app")]));
            assert_eq!(
                directory.lookup(&ids(None, Some(APP))).container.as_deref(),
                Some("app"),
                "{runtime}"
            );
        }
    }

    #[test]
    fn unknown_container_still_finds_the_pod_by_uid() {
        let mut directory = Directory::default();
        directory.upsert(&pod(UID, "web", "containerd", &[(APP, "app")]));
        let names = directory.lookup(&ids(Some(UID), Some(ENVOY)));
        assert_eq!((names.pod.as_deref(), names.container), (Some("web"), None));
        assert_eq!(directory.lookup(&ids(Some("0000"), None)), PodNames::default());
        assert_eq!(directory.lookup(&ids(None, None)), PodNames::default());
    }

    #[test]
    fn pending_pod_without_container_ids() {
        let mut pending = pod(UID, "web", "containerd", &[]);
        pending.status.as_mut().unwrap().init_container_statuses = None;
        let mut directory = Directory::default();
        directory.upsert(&pending);
        assert_eq!(directory.lookup(&ids(Some(UID), None)).pod.as_deref(), Some("web"));
    }

    #[test]
    fn update_replaces_containers_and_delete_forgets() {
        let mut directory = Directory::default();
        directory.upsert(&pod(UID, "web", "containerd", &[(APP, "app")]));
        // The container restarted under a new id.
        directory.upsert(&pod(UID, "web", "containerd", &[(ENVOY, "app")]));
        assert_eq!(directory.lookup(&ids(None, Some(APP))), PodNames::default());
        assert_eq!(directory.lookup(&ids(None, Some(ENVOY))).container.as_deref(), Some("app"));
        directory.remove(&pod(UID, "web", "containerd", &[]));
        assert!(directory.is_empty());
        assert_eq!(directory.lookup(&ids(None, Some(ENVOY))), PodNames::default());
    }

    #[test]
    fn stays_bounded() {
        let mut directory = Directory::default();
        for i in 0..MAX_PODS {
            assert!(directory.upsert(&pod(&format!("uid-{i}"), "p", "containerd", &[])));
        }
        assert!(!directory.upsert(&pod("one-too-many", "p", "containerd", &[])));
        // Known pods still update.
        assert!(directory.upsert(&pod("uid-0", "renamed", "containerd", &[])));
        assert_eq!(directory.len(), MAX_PODS);
    }

    #[test]
    fn relist_is_swapped_in_whole() {
        let directory = PodDirectory::default();
        let mut mirror = Mirror::new(directory.clone());
        let web = pod(UID, "web", "containerd", &[(APP, "app")]);
        assert_eq!(mirror.apply(Event::Init), Applied::Updated);
        assert_eq!(mirror.apply(Event::InitApply(web.clone())), Applied::Updated);
        assert!(directory.is_empty(), "half a list is not visible");
        assert_eq!(mirror.apply(Event::InitDone), Applied::Synced(1));
        assert_eq!(directory.lookup(&ids(None, Some(APP))).pod.as_deref(), Some("web"));

        let other_uid = "11111111-2222-3333-4444-555555555555";
        mirror.apply(Event::Apply(pod(other_uid, "db", "containerd", &[(ENVOY, "db")])));
        assert_eq!(directory.len(), 2);
        mirror.apply(Event::Delete(web));
        assert_eq!(directory.lookup(&ids(None, Some(APP))), PodNames::default());

        // A relist after a watch error drops pods deleted in the meantime.
        mirror.apply(Event::Init);
        assert_eq!(mirror.apply(Event::InitDone), Applied::Synced(0));
        assert!(directory.is_empty());
    }
}
