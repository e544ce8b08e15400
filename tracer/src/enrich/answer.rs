//! Answers a [`Query`] from inside the network namespace: runs on the thread that
//! entered it, so every socket and sysctl file opened here is the namespace's own.

use std::{net::IpAddr, path::Path};

use tracing::debug;

use super::{
    EnrichError, Findings, Query,
    interfaces::{configured_addresses, is_local},
    matching::{MAX_HOLDERS, best_holders, holds_port, holds_tuple, uses_ephemeral_port},
    port_range,
    sock_diag::{DiagSocket, DumpFilter, SockDiag, Tables, Transport},
};
use crate::record::PortUsage;

/// Holders come back without owners: naming them reads /proc, which needs no namespace.
pub(crate) fn answer_in_namespace(proc_root: &Path, query: &Query) -> Result<Findings, EnrichError> {
    match *query {
        Query::TupleHolders { src, dst } => {
            let mut diag = SockDiag::open().map_err(|source| EnrichError::SockDiag { source })?;
            let found = diag.find_tcp(src, dst).map_err(|source| EnrichError::SockDiag { source })?;
            if let Some(socket) = found.filter(|socket| holds_tuple(socket, src, dst)) {
                return Ok(holder_findings(vec![socket], src.ip()));
            }
            // Nothing found (a socket bound to a device escapes a lookup that names no
            // interface), or not the tuple's socket (a listener on `src`): dump.
            let filter = DumpFilter {
                local_port: Some(src.port()),
                remote_port: Some(dst.port()),
                tables: Tables::EstablishedHash,
            };
            let mut matched = Vec::new();
            dump(&[Transport::Tcp], filter, &mut |socket| {
                if holds_tuple(&socket, src, dst) {
                    matched.push(socket);
                }
            })?;
            Ok(holder_findings(matched, src.ip()))
        }
        Query::PortHolders { local } => {
            if local.port() == 0 {
                return Ok(Findings::default());
            }
            let filter =
                DumpFilter { local_port: Some(local.port()), remote_port: None, tables: Tables::All };
            let mut matched = Vec::new();
            // Nothing says whether the failed bind() was TCP or UDP: both are listed,
            // and a UDP holder shows as such (TcpState::Other).
            dump(&[Transport::Tcp, Transport::Udp], filter, &mut |socket| {
                if holds_port(&socket, local) {
                    matched.push(socket);
                }
            })?;
            Ok(holder_findings(matched, local.ip()))
        }
        Query::PortUsage { src_ip, dst } => {
            let range = port_range::read(proc_root)?;
            let filter = DumpFilter { local_port: None, remote_port: Some(dst.port()), tables: Tables::All };
            let mut in_use = 0u32;
            dump(&[Transport::Tcp], filter, &mut |socket| {
                if uses_ephemeral_port(&socket, src_ip, dst, range) {
                    in_use = in_use.saturating_add(1);
                }
            })?;
            Ok(Findings { ports: Some(PortUsage { range, in_use }), ..Findings::default() })
        }
        Query::AddressIsLocal { addr } => {
            let is_local = is_local(addr, &configured_addresses()?);
            Ok(Findings { address_is_local: Some(is_local), ..Findings::default() })
        }
    }
}

fn dump(
    transports: &[Transport],
    filter: DumpFilter,
    visit: &mut dyn FnMut(DiagSocket),
) -> Result<(), EnrichError> {
    let mut diag = SockDiag::open().map_err(|source| EnrichError::SockDiag { source })?;
    for &transport in transports {
        match diag.dump_ipv4_and_ipv6(transport, filter, visit) {
            Ok(()) => {}
            Err(err) if transport == Transport::Udp && err.is_unsupported_protocol() => {
                debug!("this kernel has no UDP sock_diag: UDP holders are not looked for");
            }
            Err(source) => return Err(EnrichError::SockDiag { source }),
        }
    }
    Ok(())
}

fn holder_findings(matched: Vec<DiagSocket>, wanted_ip: IpAddr) -> Findings {
    let (holders, left_out) = best_holders(matched, wanted_ip);
    let note = (left_out > 0)
        .then(|| format!("{left_out} more sockets hold it; the first {MAX_HOLDERS} are listed"));
    Findings { holders, note, ..Findings::default() }
}
