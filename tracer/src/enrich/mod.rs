//! Facts about a failure that only the live system knows, looked up right after the
//! failure, inside the failing process's network namespace: who holds the tuple or
//! port, how many ephemeral ports are taken, whether an address is local.
//!
//! Every lookup blocks (netlink, /proc), so callers run it off the event path
//! (`tokio::task::spawn_blocking`).

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

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
}

#[derive(Debug, Error)]
pub enum EnrichError {
    #[error("process {pid} exited before its network namespace could be read")]
    ProcessGone { pid: u32 },
    #[error("cannot enter the network namespace of pid {pid} (needs CAP_SYS_ADMIN)")]
    Setns {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("sock_diag query failed (needs CAP_NET_ADMIN for other namespaces)")]
    SockDiag(#[source] std::io::Error),
    #[error("cannot read {path}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
