//! Facts about a failure that only the live system knows, looked up right after the
//! failure, inside the failing process's network namespace: who holds the tuple or
//! port, how many ephemeral ports are taken, whether an address is local.
//!
//! Every lookup blocks (netlink, /proc), so callers run it off the event path
//! (`tokio::task::spawn_blocking`).
//!
//! Layout: [`Enricher`] answers a [`Query`]; `netns` runs `answer` on a short-lived
//! thread that entered the namespace, where `sock_diag` dumps sockets, `matching`
//! decides which of them hold what the call wanted, and `port_range` and `interfaces`
//! read the namespace's settings; back outside, `procfs` names the owning processes, with `fd_index` remembering what
//! it read for the next search.

mod answer;
mod enricher;
mod fd_index;
pub(crate) mod interfaces;
mod matching;
mod netns;
pub(crate) mod port_range;
pub(crate) mod procfs;
pub(crate) mod sock_diag;

use std::{
    io,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use thiserror::Error;

pub(crate) use self::fd_index::FdRef;
pub use self::sock_diag::ListenerDiag;
pub(crate) use self::sock_diag::SockDiag;
pub use self::{enricher::Enricher, netns::Netns, sock_diag::SockDiagError};
use crate::record::{Holder, PortUsage};

/// What to find out about one failure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Query {
    /// connect() with an explicit source: sockets with exactly this 4-tuple.
    TupleHolders { src: SocketAddr, dst: SocketAddr },
    /// bind(): sockets holding `local`'s port on the same address or a wildcard
    /// (either side), of either address family.
    PortHolders { local: SocketAddr },
    /// connect() without a source port: the namespace's ip_local_port_range and the
    /// sockets to `dst` (from `src_ip` unless unspecified) with a port in it.
    PortUsage { src_ip: IpAddr, dst: SocketAddr },
    /// bind() EADDRNOTAVAIL: is `addr` configured on an interface of the namespace?
    AddressIsLocal { addr: IpAddr },
}

/// Answers to a [`Query`]; fields a query does not ask about stay empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub holders: Vec<Holder>,
    pub ports: Option<PortUsage>,
    pub address_is_local: Option<bool>,
    /// Why the answer is incomplete: holders left out, or owners that could not be
    /// looked for (a missing capability, the scan's time budget). Feeds `Record::note`.
    pub note: Option<String>,
}

#[derive(Debug, Error)]
pub enum EnrichError {
    #[error("process {pid} exited before its network namespace could be read")]
    ProcessGone { pid: u32 },
    #[error("cannot enter the network namespace {}{}", path.display(), needs(source, "CAP_SYS_ADMIN"))]
    Setns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sock_diag query failed{}", if source.is_refused() { " (refused: an LSM policy such as SELinux or AppArmor forbids NETLINK_SOCK_DIAG; no capability lifts that)" } else { "" })]
    SockDiag {
        #[source]
        source: SockDiagError,
    },
    /// /proc/PID/fd/N links and /proc/PID/ns of another user's process need ptrace access
    /// (PTRACE_MODE_READ, see proc(5)), hence the capability named on EACCES/EPERM.
    #[error("cannot read {}{}", path.display(), needs(source, "CAP_SYS_PTRACE"))]
    Proc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Listing /proc/PID/fd, a mode 0500 directory owned by the process's user, is a
    /// permission check on the directory, not a ptrace one: root needs CAP_DAC_READ_SEARCH.
    #[error("cannot list {}{}", path.display(), needs(source, "CAP_DAC_READ_SEARCH"))]
    FdList {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} holds {text:?}, not two port numbers", path.display())]
    PortRange { path: PathBuf, text: String },
    #[error("cannot list the interface addresses of the network namespace")]
    Interfaces {
        #[source]
        source: io::Error,
    },
    #[error("cannot start the thread that enters the network namespace")]
    WorkerSpawn {
        #[source]
        source: io::Error,
    },
    #[error("the thread that entered the network namespace panicked")]
    WorkerPanicked,
}

impl EnrichError {
    /// The capability whose absence caused this error, so a daemon can say once at
    /// start-up what its DaemonSet lacks instead of repeating it on every record.
    pub fn missing_capability(&self) -> Option<&'static str> {
        let denied = |err: &io::Error| err.kind() == io::ErrorKind::PermissionDenied;
        match self {
            Self::Setns { source, .. } if denied(source) => Some("CAP_SYS_ADMIN"),
            Self::Proc { source, .. } if denied(source) => Some("CAP_SYS_PTRACE"),
            Self::FdList { source, .. } if denied(source) => Some("CAP_DAC_READ_SEARCH"),
            _ => None,
        }
    }
}

/// " (needs CAP_X)" when `err` is EPERM/EACCES (both map to `PermissionDenied`).
fn needs(err: &io::Error, capability: &str) -> String {
    if err.kind() == io::ErrorKind::PermissionDenied {
        format!(" (needs {capability})")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_name_the_missing_capability() {
        let eperm = || io::Error::from_raw_os_error(libc::EPERM);
        let setns = EnrichError::Setns { path: "/proc/7/ns/net".into(), source: eperm() };
        assert_eq!(
            setns.to_string(),
            "cannot enter the network namespace /proc/7/ns/net (needs CAP_SYS_ADMIN)"
        );
        assert_eq!(setns.missing_capability(), Some("CAP_SYS_ADMIN"));

        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        let proc = EnrichError::Proc { path: "/proc/7/fd".into(), source: eacces };
        assert_eq!(proc.to_string(), "cannot read /proc/7/fd (needs CAP_SYS_PTRACE)");
        assert_eq!(proc.missing_capability(), Some("CAP_SYS_PTRACE"));

        let list = EnrichError::FdList {
            path: "/proc/7/fd".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(list.to_string(), "cannot list /proc/7/fd (needs CAP_DAC_READ_SEARCH)");
        assert_eq!(list.missing_capability(), Some("CAP_DAC_READ_SEARCH"));

        // Dumps check no capability: a refusal is a policy's, and is said so.
        let diag = EnrichError::SockDiag { source: SockDiagError::Kernel { source: eperm() } };
        assert!(diag.to_string().starts_with("sock_diag query failed (refused: an LSM policy"), "{diag}");
        assert_eq!(diag.missing_capability(), None);
    }

    #[test]
    fn other_errors_name_no_capability() {
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        let setns = EnrichError::Setns { path: "/proc/7/ns/net".into(), source: einval };
        assert_eq!(setns.to_string(), "cannot enter the network namespace /proc/7/ns/net");
        assert_eq!(setns.missing_capability(), None);

        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        let diag = EnrichError::SockDiag { source: SockDiagError::Kernel { source: enoent } };
        assert_eq!(diag.to_string(), "sock_diag query failed");
        assert_eq!(diag.missing_capability(), None);
    }
}
