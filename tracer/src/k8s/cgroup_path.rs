//! Pod UID and container id from a process's cgroup path (`/proc/PID/cgroup`), as the
//! kubelet and the container runtime name the directories.
//!
//! The kubelet puts each pod in a cgroup named after its UID, below a QoS class:
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/`, `/kubepods/besteffort/pod<uid>/`,
//!   and `/kubepods/pod<uid>/` for guaranteed pods
//!   (kubernetes pkg/kubelet/cm/pod_container_manager_linux.go: `GetPodContainerName`);
//! - systemd driver: the same tree as slices, with the UID's dashes turned into
//!   underscores because `-` separates slice levels:
//!   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/`
//!   (pkg/kubelet/cm/cgroup_manager_linux.go: `ToSystemd`, `escapeSystemdCgroupName`).
//!
//! The runtime then names the container's cgroup after its 64-hex id: a bare `<id>`
//! directory with cgroupfs (containerd, Docker), `crio-<id>` for CRI-O, and with systemd a
//! scope: `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`. CRI-O also
//! runs its monitor in `crio-conmon-<id>.scope`, which is no container.
//!
//! Paths are relative to the reader's cgroup namespace: from inside a pod with its own
//! cgroup namespace, another pod reads `0::/../../kubepods-besteffort-pod<uid>.slice/...`.
//! The parser therefore looks for the pod and container segments anywhere in the path
//! rather than for a fixed prefix.
//!
//! Hand-written: the format is a handful of naming conventions, no crate parses it, and
//! procfs crates stop at splitting the lines (which is three `split`s).

/// What a cgroup path says about the pod and container of a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerIds {
    /// Pod UID as the API shows it (`metadata.uid`, with dashes).
    pub pod_uid: Option<String>,
    /// 64 hex digits, without the runtime's `containerd://` prefix.
    pub container_id: Option<String>,
}

impl ContainerIds {
    fn known(&self) -> usize {
        usize::from(self.pod_uid.is_some()) + usize::from(self.container_id.is_some())
    }
}

/// Reads the text of `/proc/PID/cgroup`: one `hierarchy-ID:controllers:path` line per
/// hierarchy (cgroup v1), and `0::path` for the v2 hierarchy (proc(7), cgroups(7)).
///
/// On a hybrid host the v2 line may name a systemd unit while the kubelet placed the pod
/// in the v1 hierarchies (or the other way round): every line is read and the one that
/// tells the most wins, the v2 line on a tie. `None` when no line names a pod or container.
pub fn from_proc_cgroup(text: &str) -> Option<ContainerIds> {
    let mut lines: Vec<(bool, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (hierarchy, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some((hierarchy == "0" && controllers.is_empty(), path))
        })
        .collect();
    // Stable: v1 lines keep their order after the v2 line.
    lines.sort_by_key(|&(is_v2, _)| !is_v2);
    let mut best: Option<ContainerIds> = None;
    for (_, path) in lines {
        let ids = from_path(path);
        if ids.known() > best.as_ref().map_or(0, ContainerIds::known) {
            best = Some(ids);
        }
    }
    best
}

/// The pod and container named by one cgroup path.
pub fn from_path(path: &str) -> ContainerIds {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let pod_at = segments.iter().rposition(|s| pod_uid_of(s).is_some());
    let pod_uid = pod_at.and_then(|at| pod_uid_of(segments[at]));
    // The container is below its pod; CRI-O with crun may add a `container` level below
    // the scope, so the first match after the pod is the one.
    let after_pod = pod_at.map_or(0, |at| at + 1);
    let container_id = segments[after_pod..].iter().find_map(|s| container_id_of(s));
    ContainerIds { pod_uid, container_id }
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(segment: &str) -> Option<String> {
    let uid = if let Some(slice) = segment.strip_suffix(".slice") {
        let (prefix, uid) = slice.rsplit_once("-pod")?;
        if !prefix.starts_with("kubepods") {
            return None;
        }
        uid.replace('_', "-")
    } else {
        segment.strip_prefix("pod")?.to_owned()
    };
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (API-created pods), or 32 hex digits: static pods' UIDs are an md5 of their
/// manifest (pkg/kubelet/config/common.go: `generatePodName`/`applyDefaults`).
fn is_pod_uid(uid: &str) -> bool {
    let bytes = uid.as_bytes();
    match bytes.len() {
        32 => bytes.iter().all(|&b| is_lower_hex(b)),
        36 => bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => is_lower_hex(b),
        }),
        _ => false,
    }
}

fn container_id_of(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    is_container_id(id).then(|| id.to_owned())
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8b9f4a3e-2c1d-4e5f-9a7b-6c5d4e3f2a1b";
    const UID_SYSTEMD: &str = "8b9f4a3e_2c1d_4e5f_9a7b_6c5d4e3f2a1b";
    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn ids(pod_uid: Option<&str>, container_id: Option<&str>) -> Option<ContainerIds> {
        Some(ContainerIds { pod_uid: pod_uid.map(Into::into), container_id: container_id.map(Into::into) })
    }

    #[test]
    fn cgroup_v2_systemd_containerd() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(from_proc_cgroup(&text), ids(Some(UID), Some(ID)));
    }

    #[test]
    fn cgroup_v2_systemd_guaranteed_and_besteffort() {
        let guaranteed =
            format!("0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(from_proc_cgroup(&guaranteed), ids(Some(UID), Some(ID)));
        let besteffort = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/docker-{ID}.scope\n"
        );
        assert_eq!(from_proc_cgroup(&besteffort), ids(Some(UID), Some(ID)));
    }

    /// Docker with the cgroupfs driver on a cgroup v1 host, as /proc/PID/cgroup lists it.
    #[test]
    fn cgroup_v1_cgroupfs_every_controller() {
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        let text = format!(
            "12:hugetlb:{path}\n11:pids:{path}\n10:net_cls,net_prio:{path}\n9:memory:{path}\n\
             8:cpuset:{path}\n7:devices:{path}\n6:freezer:{path}\n5:perf_event:{path}\n\
             4:blkio:{path}\n3:cpu,cpuacct:{path}\n2:rdma:/\n1:name=systemd:{path}\n0::/\n"
        );
        assert_eq!(from_proc_cgroup(&text), ids(Some(UID), Some(ID)));
    }

    #[test]
    fn cgroupfs_guaranteed_pod_has_no_qos_level() {
        assert_eq!(from_path(&format!("/kubepods/pod{UID}/{ID}")), ids(Some(UID), Some(ID)).unwrap());
    }

    #[test]
    fn crio_systemd_and_cgroupfs() {
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-{ID}.scope\n"
        );
        assert_eq!(from_proc_cgroup(&systemd), ids(Some(UID), Some(ID)));
        // crun puts the container's processes one level below the scope.
        let nested = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope/container\n"
        );
        assert_eq!(from_proc_cgroup(&nested), ids(Some(UID), Some(ID)));
        let cgroupfs = format!("4:memory:/kubepods/besteffort/pod{UID}/crio-{ID}\n0::/\n");
        assert_eq!(from_proc_cgroup(&cgroupfs), ids(Some(UID), Some(ID)));
    }

    #[test]
    fn crio_conmon_is_not_a_container() {
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope\n"
        );
        assert_eq!(from_proc_cgroup(&systemd), ids(Some(UID), None));
        let cgroupfs = format!("0::/kubepods/burstable/pod{UID}/crio-conmon-{ID}\n");
        assert_eq!(from_proc_cgroup(&cgroupfs), ids(Some(UID), None));
    }

    /// Hybrid host: the v2 line names containerd's own unit, the v1 lines the pod.
    #[test]
    fn hybrid_host_takes_the_lines_that_name_the_pod() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        let text = format!(
            "13:misc:/\n12:cpu,cpuacct:{path}\n11:memory:{path}\n2:pids:{path}\n\
             1:name=systemd:{path}\n0::/system.slice/containerd.service\n"
        );
        assert_eq!(from_proc_cgroup(&text), ids(Some(UID), Some(ID)));
    }

    #[test]
    fn v2_line_wins_a_tie() {
        let other = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let text =
            format!("1:name=systemd:/kubepods/pod{UID}/{other}\n0::/kubepods/burstable/pod{UID}/{ID}\n");
        assert_eq!(from_proc_cgroup(&text), ids(Some(UID), Some(ID)));
    }

    /// Read from inside a pod with a private cgroup namespace.
    #[test]
    fn paths_relative_to_another_cgroup_namespace() {
        let text = format!(
            "0::/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(from_proc_cgroup(&text), ids(Some(UID), Some(ID)));
        // A sibling container of the reader's own pod: the pod level is above the root.
        assert_eq!(from_proc_cgroup(&format!("0::/../cri-containerd-{ID}.scope\n")), ids(None, Some(ID)));
    }

    #[test]
    fn static_pod_uid_is_32_hex() {
        let uid = "5f2b0c9d8e7a6b5c4d3e2f1a0b9c8d7e";
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(from_proc_cgroup(&text), ids(Some(uid), Some(ID)));
    }

    #[test]
    fn pod_sandbox_without_container_level() {
        assert_eq!(from_proc_cgroup(&format!("0::/kubepods/besteffort/pod{UID}\n")), ids(Some(UID), None));
    }

    #[test]
    fn docker_outside_kubernetes_has_a_container_only() {
        assert_eq!(from_proc_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n")), ids(None, Some(ID)));
        assert_eq!(from_proc_cgroup(&format!("4:memory:/docker/{ID}\n0::/\n")), ids(None, Some(ID)));
    }

    #[test]
    fn processes_outside_containers() {
        let host = "12:memory:/user.slice/user-0.slice/session-3.scope\n0::/user.slice/user-0.slice/session-3.scope\n";
        assert_eq!(from_proc_cgroup(host), None);
        assert_eq!(from_proc_cgroup("0::/\n"), None);
        assert_eq!(from_proc_cgroup("0::/kubepods.slice/kubepods-burstable.slice\n"), None);
        assert_eq!(from_proc_cgroup(""), None);
        assert_eq!(from_proc_cgroup("garbage without colons\n"), None);
    }

    #[test]
    fn lookalikes_are_rejected() {
        // Not a UUID, wrong slice family, uppercase or short ids.
        assert_eq!(from_path("/kubepods/burstable/podcast/x"), ContainerIds::default());
        assert_eq!(
            from_path(&format!("/system.slice/system-pod{UID_SYSTEMD}.slice")),
            ContainerIds::default()
        );
        assert_eq!(
            from_path(&format!("/x/cri-containerd-{}.scope", ID.to_uppercase())),
            ContainerIds::default()
        );
        assert_eq!(from_path("/kubepods/burstable/cri-containerd-3f4e5d6c.scope"), ContainerIds::default());
        let dashed_wrong = "8b9f4a3e2-c1d-4e5f-9a7b-6c5d4e3f2a1b";
        assert_eq!(from_path(&format!("/kubepods/pod{dashed_wrong}")), ContainerIds::default());
    }

    /// A path with a `:` in a directory name stays whole (only the first two colons split).
    #[test]
    fn colons_in_paths() {
        let text = format!("0::/kubepods/besteffort/pod{UID}/{ID}/odd:name\n");
        assert_eq!(from_proc_cgroup(&text), ids(Some(UID), Some(ID)));
    }
}
