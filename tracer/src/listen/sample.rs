//! Reading watched listeners from the kernel: the socket inode behind an fd, and the
//! queue and drop counter of listeners inside a network namespace.

use std::{fs, path::Path};

use super::Target;
use crate::enrich::{EnrichError, ListenerDiag, Netns, SockDiag, procfs};

/// The socket inode `fd` of `pid` names (`socket:[N]`), `None` once closed or not a socket.
pub fn socket_inode(proc_root: &Path, pid: u32, fd: i32) -> Option<u64> {
    let link = fs::read_link(proc_root.join(pid.to_string()).join("fd").join(fd.to_string())).ok()?;
    procfs::socket_inode(link.as_os_str())
}

/// The TCP listeners on `target.ports` in the network namespace of `target.pid`.
/// Blocks: it runs a thread inside that namespace (enrich::Netns).
pub fn sample(proc_root: &Path, target: &Target) -> Result<Vec<ListenerDiag>, EnrichError> {
    let ports = target.ports.clone();
    Netns::of_process(proc_root, target.pid).run(move || {
        let mut diag = SockDiag::open().map_err(|source| EnrichError::SockDiag { source })?;
        let mut found = Vec::new();
        for port in ports {
            diag.dump_tcp_listeners(port, &mut |listener| found.push(listener))
                .map_err(|source| EnrichError::SockDiag { source })?;
        }
        Ok(found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(procfs::socket_inode(std::ffi::OsStr::new("socket:[4026532]")), Some(4_026_532));
        assert_eq!(procfs::socket_inode(std::ffi::OsStr::new("pipe:[12]")), None);
        assert_eq!(procfs::socket_inode(std::ffi::OsStr::new("/dev/null")), None);
        assert_eq!(procfs::socket_inode(std::ffi::OsStr::new("socket:[x]")), None);
    }

    #[test]
    fn our_own_listener_is_found_with_its_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        use std::os::fd::AsRawFd;
        let proc_root = Path::new("/proc");
        let pid = std::process::id();
        let inode = socket_inode(proc_root, pid, listener.as_raw_fd()).expect("a socket fd");
        let found = sample(proc_root, &Target { pid, ports: vec![port] }).unwrap();
        let ours = found.iter().find(|l| l.inode == inode).unwrap_or_else(|| panic!("{found:?}"));
        assert_eq!(ours.local, listener.local_addr().unwrap());
        assert_eq!(ours.queued, 0);
        // std's TcpListener::bind listens with a backlog of 128 (capped by somaxconn).
        assert!(ours.backlog > 0 && ours.backlog <= 4096, "{ours:?}");
        assert_eq!(ours.drops, Some(0));
    }
}
