//! What the VM's init is told to do ([`Plan`]) and what it answers ([`Status`]): the
//! contract between `cargo xtask vm-test` (host) and `vm-init` (PID 1 in the guest).
//!
//! The plan travels as `/plan.json` inside the initramfs; the answers as one JSON object
//! per line on the guest's second serial port, which qemu writes to a file on the host.
//! Both sides use these types, so they cannot drift apart.

// Used by src/main.rs only (a package's binary cannot have dependencies of its own).
use libc as _;
use nix as _;
use serde::{Deserialize, Serialize};
use thiserror as _;

/// Where the plan sits in the initramfs.
pub const PLAN_PATH: &str = "/plan.json";
/// Where the modules sit in the initramfs (file names in [`Plan::modules`]).
pub const MODULES_DIR: &str = "/modules";
/// The guest device of the status port on x86-64: the second 16550 UART (qemu's second
/// `-serial`).
pub const STATUS_DEVICE: &str = "/dev/ttyS1";
/// The name of the status port where the board has no second UART (arm64's `virt`): a
/// virtio-serial port (qemu `-device virtserialport,name=...`), found by this name under
/// /sys/class/virtio-ports once virtio_console is loaded.
pub const STATUS_PORT_NAME: &str = "org.sockerr.status";
/// Where the host root is mounted before init changes root into it.
pub const HOST_ROOT_MOUNT: &str = "/host";
/// Host directories the guest covers with a tmpfs (the shared root is read-only, and the
/// tests write there). A [`Share`] keeps a host path below them visible.
pub const GUEST_TMPFS: [&str; 3] = ["/tmp", "/run", "/var/tmp"];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Module files under [`MODULES_DIR`], in load order (dependencies first).
    pub modules: Vec<String>,
    /// 9p mount tag of the host root (qemu `-virtfs ...,mount_tag=`).
    pub root_tag: String,
    /// Working directory of the runs, a path of the host.
    pub cwd: String,
    /// The whole environment of the runs (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// Programs of the host to run one after the other, whatever the previous returned.
    pub runs: Vec<Run>,
    /// Host directories exported on their own, mounted at their own path after the
    /// tmpfs of [`GUEST_TMPFS`] (a workspace under /tmp would be hidden otherwise).
    #[serde(default)]
    pub shares: Vec<Share>,
    /// Directories bound over others once the shares are mounted, before init changes
    /// root: an arm64 guest's /usr with Debian's arm64 programs over the amd64 host's.
    #[serde(default)]
    pub binds: Vec<Bind>,
}

/// A bind mount in the guest, both paths as the host root names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: String,
    pub target: String,
}

/// A host directory exported over 9p with its own tag (qemu `-virtfs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub tag: String,
    /// Absolute host path, mounted read-only at the same path in the guest.
    pub path: String,
}

/// The paths of `needed` that a guest tmpfs would hide, without those inside another one.
pub fn hidden_paths(needed: &[&str]) -> Vec<String> {
    let under =
        |path: &str, dir: &str| path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')));
    let mut hidden: Vec<String> = needed
        .iter()
        .filter(|path| GUEST_TMPFS.iter().any(|tmpfs| under(path, tmpfs)))
        .map(|path| path.to_string())
        .collect();
    hidden.sort();
    hidden.dedup();
    let all = hidden.clone();
    hidden.retain(|path| !all.iter().any(|other| other != path && under(path, other)));
    hidden
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Short name for reports (e.g. the test target).
    pub name: String,
    /// Program (absolute host path) and arguments.
    pub argv: Vec<String>,
}

/// One line on the status port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// The host root is mounted and the runs start.
    Ready { kernel: String },
    /// A run ended: its exit code, or the signal that killed it.
    Finished { name: String, code: Option<i32>, signal: Option<i32> },
    /// A step of the set-up failed; nothing runs after it.
    SetupFailed { step: String, error: String },
    /// Every run ended; the guest powers off next.
    Done,
}

impl Status {
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("status values always serialize");
        line.push('\n');
        line
    }

    /// `None` for a line that is not a status (a torn last line of a dying guest).
    pub fn parse_line(line: &str) -> Option<Status> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        for status in [
            Status::Ready { kernel: "6.1.0-56-amd64".into() },
            Status::Finished { name: "cilium".into(), code: Some(0), signal: None },
            Status::Finished { name: "bind".into(), code: None, signal: Some(9) },
            Status::SetupFailed { step: "mount 9p".into(), error: "ENODEV".into() },
            Status::Done,
        ] {
            let line = status.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'), "{line:?}");
            assert_eq!(Status::parse_line(&line), Some(status));
        }
    }

    #[test]
    fn torn_or_foreign_lines_are_not_statuses() {
        assert_eq!(Status::parse_line("{\"status\":\"fini"), None);
        assert_eq!(Status::parse_line("[    1.234] random kernel message"), None);
        assert_eq!(Status::parse_line(""), None);
    }

    #[test]
    fn only_paths_under_a_guest_tmpfs_need_their_own_share() {
        assert_eq!(hidden_paths(&["/work/sockerr", "/work/sockerr/target"]), Vec::<String>::new());
        assert_eq!(hidden_paths(&["/tmp/ci/sockerr", "/tmp/ci/sockerr/target"]), ["/tmp/ci/sockerr"]);
        assert_eq!(hidden_paths(&["/work/s", "/var/tmp/target", "/run"]), ["/run", "/var/tmp/target"]);
        assert_eq!(hidden_paths(&["/tmpfoo/s"]), Vec::<String>::new(), "a sibling, not below /tmp");
    }

    #[test]
    fn plan_round_trips_through_json() {
        let plan = Plan {
            modules: vec!["01-virtio.ko".into(), "02-9p.ko.xz".into()],
            root_tag: "hostroot".into(),
            cwd: "/work".into(),
            env: vec![("SOCKERR_BIN".into(), "/work/target/release/sockerr".into())],
            runs: vec![Run {
                name: "cilium".into(),
                argv: vec!["/work/t".into(), "--test-threads=2".into()],
            }],
            shares: vec![Share { tag: "share0".into(), path: "/tmp/clone".into() }],
            binds: vec![Bind { source: "/tmp/clone/target/usr".into(), target: "/usr".into() }],
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
    }
}
