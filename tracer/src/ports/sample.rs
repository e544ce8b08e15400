//! Reading one network namespace's TCP sockets and port settings, and finding the
//! namespaces of the traced processes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
};

use super::count::{PortHolder, PortSpace, PortTally, Usage, parse_reserved};
use crate::{
    enrich::{
        EnrichError, Netns, SockDiag, port_range,
        sock_diag::{DumpFilter, Tables, Transport},
    },
    tcp_state::TcpState,
};

/// One namespace's ports connect() may use, and how much of them each destination uses.
#[derive(Debug)]
pub struct NamespaceSample {
    pub space: PortSpace,
    /// Busiest first.
    pub usages: Vec<Usage>,
}

/// The usages of the namespace `pid` is in, from its TCP sockets, port range and
/// reserved ports. Blocks: it runs a thread inside that namespace (enrich::Netns),
/// because /proc/sys/net answers for the namespace of the reading thread.
pub fn sample(proc_root: &Path, pid: u32) -> Result<NamespaceSample, EnrichError> {
    let proc_root = proc_root.to_path_buf();
    Netns::of_process(&proc_root, pid).run(move || {
        let (low, high) = port_range::read(&proc_root)?;
        let reserved = read_reserved(&proc_root)?;
        let mut diag = SockDiag::open().map_err(|source| EnrichError::SockDiag { source })?;
        let mut tally = PortTally::default();
        // The sockets that hold a port by bind() first, so that the tally keeps nothing
        // of the connections accepted on those ports (PortTally::add).
        for tables in [Tables::ListeningAndBind, Tables::EstablishedHash] {
            let filter = DumpFilter { tables, ..DumpFilter::default() };
            diag.dump_ipv4_and_ipv6(Transport::Tcp, filter, &mut |socket| {
                tally.add(PortHolder {
                    state: TcpState::from_kernel(socket.state),
                    local: socket.local,
                    remote: socket.remote,
                });
            })
            .map_err(|source| EnrichError::SockDiag { source })?;
        }
        let space = PortSpace { low, high, reserved };
        Ok(NamespaceSample { usages: tally.usages(&space), space })
    })
}

fn read_reserved(proc_root: &Path) -> Result<BTreeSet<u16>, EnrichError> {
    let path = proc_root.join("sys/net/ipv4/ip_local_reserved_ports");
    let text =
        fs::read_to_string(&path).map_err(|source| EnrichError::Proc { path: path.clone(), source })?;
    parse_reserved(&text).ok_or(EnrichError::PortRange { path, text })
}

/// The network namespace (nsfs inode, as `Enricher::netns_inode` reads it) of each of
/// `pids`, with one pid in it (the lowest) to enter it through; processes gone or
/// unreadable are left out.
pub fn namespaces(proc_root: &Path, pids: impl IntoIterator<Item = u32>) -> BTreeMap<u64, u32> {
    let mut found = BTreeMap::new();
    for pid in pids {
        let Ok(metadata) = fs::metadata(Netns::of_process(proc_root, pid).path()) else {
            continue;
        };
        found.entry(metadata.ino()).and_modify(|first: &mut u32| *first = (*first).min(pid)).or_insert(pid);
    }
    found
}

/// Every process of the node: for a selection that names no pid or thread name.
pub fn every_process(proc_root: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn our_namespace_is_sampled_with_our_own_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let proc_root = Path::new("/proc");
        let pid = std::process::id();
        let namespaces = namespaces(proc_root, [pid, u32::MAX]);
        assert_eq!(namespaces.len(), 1, "{namespaces:?}");
        let sample = sample(proc_root, pid).unwrap();
        assert!(sample.space.low <= sample.space.high);
        let client = client.local_addr().unwrap();
        let ours = sample.usages.iter().find(|u| {
            u.destination.local_ip == client.ip() && u.destination.remote == listener.local_addr().unwrap()
        });
        let ours = ours.unwrap_or_else(|| panic!("no usage towards our listener: {:?}", sample.usages));
        // connect() picked our port from the range: a destination is listed only when
        // some port of it is.
        assert!(sample.space.offers(client.port()) && ours.in_use >= 1, "{ours:?}");
        // The accepted end uses the listener's port: it is no destination of its own.
        let accepted = sample.usages.iter().any(|u| u.destination.remote == client);
        assert!(!accepted, "{:?}", sample.usages);
        assert!(every_process(proc_root).contains(&pid));
    }
}
