//! Socket dumps and lookups over NETLINK_SOCK_DIAG (sock_diag(7)) in the calling thread's network
//! namespace: a netlink socket answers for the namespace it was created in, which is
//! why `Enricher` opens it on a thread that entered the failing process's namespace.

use std::{
    io,
    net::{IpAddr, SocketAddr, SocketAddrV6},
    num::NonZeroI32,
    os::fd::AsFd,
};

use netlink_packet_core::{
    DecodeError, ErrorMessage, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, Timer, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};
use nix::sys::{
    socket::{setsockopt, sockopt::ReceiveTimeout},
    time::TimeVal,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SockDiagError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket")]
    Open {
        #[source]
        source: io::Error,
    },
    #[error("cannot send the dump request")]
    Send {
        #[source]
        source: io::Error,
    },
    #[error("cannot receive the dump{}", timed_out(source))]
    Receive {
        #[source]
        source: io::Error,
    },
    #[error("the kernel sent a sock_diag message that does not decode")]
    Decode {
        #[source]
        source: DecodeError,
    },
    #[error("the kernel refused the dump request")]
    Kernel {
        #[source]
        source: io::Error,
    },
}

impl SockDiagError {
    /// EPERM/EACCES. inet_diag dumps check no capability, in any namespace (CAP_NET_ADMIN
    /// only adds the socket mark and class id, which sockerr does not ask for): such a
    /// refusal comes from an LSM policy (SELinux, AppArmor) that no capability lifts.
    pub fn is_refused(&self) -> bool {
        match self {
            Self::Open { source }
            | Self::Send { source }
            | Self::Receive { source }
            | Self::Kernel { source } => source.kind() == io::ErrorKind::PermissionDenied,
            Self::Decode { .. } => false,
        }
    }

    /// ENOENT: the kernel has no sock_diag handler for this protocol (e.g. built without
    /// CONFIG_INET_UDP_DIAG); see inet_diag_lock_handler in net/ipv4/inet_diag.c.
    pub(crate) fn is_unsupported_protocol(&self) -> bool {
        matches!(self, Self::Kernel { source } if source.raw_os_error() == Some(libc::ENOENT))
    }
}

fn timed_out(err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::WouldBlock {
        format!(" within {RECEIVE_TIMEOUT_SECS} s")
    } else {
        String::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn ipproto(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }
}

/// One socket as sock_diag reports it; what `matching` works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DiagSocket {
    pub transport: Transport,
    /// idiag_state: a TCP state number (include/net/tcp_states.h); UDP sockets reuse
    /// TCP_CLOSE (unconnected) and TCP_ESTABLISHED (connected).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// IPV6_V6ONLY: such a `[::]` socket does not hold the IPv4 port.
    pub v6_only: bool,
    /// 0 for TIME_WAIT and request sockets: they have no file.
    pub inode: u64,
    pub timer_ms: Option<u64>,
}

/// Which sockets the kernel should report; the ports are filtered in the kernel
/// (tcp_diag_dump and udp_dump compare idiag_sport/idiag_dport), which keeps a dump of a
/// busy node's namespace small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DumpFilter {
    pub local_port: Option<u16>,
    pub remote_port: Option<u16>,
    pub tables: Tables,
}

/// Which of the kernel's TCP socket tables a dump reads, by the states it asks for
/// (inet_diag_dump_icsk walks the listening hash, the established hash and, Linux 6.7+,
/// the bind hash for bound sockets in CLOSE, each only when a state of it is asked for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Tables {
    /// All three: whatever holds a port.
    #[default]
    All,
    /// The established hash only: the sockets that hold a 4-tuple. The bind hash's part
    /// of a dump picks a socket while it is in CLOSE and reads its state and addresses
    /// later, without the lock: another connect() of the same tuple caught half-way
    /// there shows as SYN_SENT with that tuple although it never entered the
    /// established hash (it fails next with EADDRNOTAVAIL itself).
    EstablishedHash,
    /// The listening and bind hashes: the sockets that hold a port for every destination
    /// (LISTEN, CLOSE, BOUND_INACTIVE), what [`Tables::EstablishedHash`] leaves out. The
    /// kernel still walks the established hash for CLOSE, but sends none of its sockets.
    ListeningAndBind,
}

impl Tables {
    fn states(self) -> u32 {
        match self {
            Tables::All => ALL_STATES,
            Tables::EstablishedHash => ESTABLISHED_HASH_STATES,
            Tables::ListeningAndBind => ALL_STATES & !ESTABLISHED_HASH_STATES,
        }
    }
}

/// TCP_ESTABLISHED (1) through TCP_BOUND_INACTIVE (13), include/net/tcp_states.h.
/// The crate's `StateFlags` stops at TCP_CLOSING; NEW_SYN_RECV is implied by SYN_RECV
/// (tcp_diag_dump), and BOUND_INACTIVE (Linux 6.7+) makes the kernel also list sockets
/// that are bound but neither listening nor connected: they hold ports too. Older
/// kernels ignore bits they do not know.
const ALL_STATES: u32 = ((1 << 14) - 1) & !1;

/// [`ALL_STATES`] but LISTEN (10), CLOSE (7) and BOUND_INACTIVE (13): no socket in the
/// established hash is in those, and asking for none of them skips the other tables.
const ESTABLISHED_HASH_STATES: u32 = ALL_STATES & !(1 << 10 | 1 << 7 | 1 << 13);

/// Bounds a dump that would otherwise wait forever on a kernel that never answers.
const RECEIVE_TIMEOUT_SECS: i64 = 2;

/// A dump datagram is at most 32 KiB (netlink_dump in net/netlink/af_netlink.c sizes
/// it from the receiver's past reads, capped there); this is room for the largest.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// Offset of idiag_expires in struct inet_diag_msg (include/uapi/linux/inet_diag.h):
/// family, state, timer, retrans (1 byte each), then the 48-byte inet_diag_sockid.
const IDIAG_EXPIRES_OFFSET: usize = 4 + 48;

const NETLINK_HEADER_LEN: usize = 16;

/// A NETLINK_SOCK_DIAG socket of the namespace the calling thread is in.
pub(crate) struct SockDiag {
    socket: Socket,
    sequence: u32,
}

impl SockDiag {
    pub fn open() -> Result<Self, SockDiagError> {
        let open_err = |source| SockDiagError::Open { source };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(open_err)?;
        socket.bind_auto().map_err(open_err)?;
        socket.connect(&NetlinkAddr::new(0, 0)).map_err(open_err)?;
        let timeout = TimeVal::new(RECEIVE_TIMEOUT_SECS, 0);
        setsockopt(&socket.as_fd(), ReceiveTimeout, &timeout)
            .map_err(|errno| open_err(io::Error::from(errno)))?;
        Ok(Self { socket, sequence: 0 })
    }

    /// Dumps the `transport` sockets of both address families, calling `visit` for each.
    pub fn dump_ipv4_and_ipv6(
        &mut self,
        transport: Transport,
        filter: DumpFilter,
        visit: &mut dyn FnMut(DiagSocket),
    ) -> Result<(), SockDiagError> {
        self.dump(AF_INET, transport, filter, visit)?;
        self.dump(AF_INET6, transport, filter, visit)
    }

    /// Dumps the `transport` sockets of one address family, calling `visit` for each.
    fn dump(
        &mut self,
        family: u8,
        transport: Transport,
        filter: DumpFilter,
        visit: &mut dyn FnMut(DiagSocket),
    ) -> Result<(), SockDiagError> {
        let query = Query::sockets(transport, filter);
        self.exchange(family, &query, &mut |response, raw| visit(diag_socket(transport, response, raw)))
    }

    /// The TCP socket whose local and remote ends are exactly `local` and `remote`, if
    /// the namespace has one: one lookup in the established hash
    /// (inet_diag_find_one_icsk, net/ipv4/inet_diag.c), where a dump reads the whole hash
    /// (some 0.1 s with 400,000 sockets). The lookup falls back to a listener on `local`,
    /// and misses a socket bound to a device (it asks for no interface): callers check
    /// the answer and dump when it is not the tuple's.
    pub fn find_tcp(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Option<DiagSocket>, SockDiagError> {
        let Some(request) = exact_request(local, remote, self.next_sequence()) else {
            return Ok(None);
        };
        self.socket.send(&request, 0).map_err(|source| SockDiagError::Send { source })?;
        let mut buffer = Vec::with_capacity(RECEIVE_BUFFER);
        let received =
            self.socket.recv(&mut buffer, 0).map_err(|source| SockDiagError::Receive { source })?;
        read_exact_answer(&buffer[..received.min(buffer.len())], self.sequence)
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    /// Sends one dump request and reads its answer to the end, calling `visit` for each
    /// response with its raw inet_diag_msg.
    fn exchange(
        &mut self,
        family: u8,
        query: &Query,
        visit: &mut dyn FnMut(&InetResponse, &[u8]),
    ) -> Result<(), SockDiagError> {
        let sequence = self.next_sequence();
        let request = query.request(family, sequence);
        self.socket.send(&request, 0).map_err(|source| SockDiagError::Send { source })?;

        let mut buffer = Vec::with_capacity(RECEIVE_BUFFER);
        loop {
            buffer.clear();
            let received =
                self.socket.recv(&mut buffer, 0).map_err(|source| SockDiagError::Receive { source })?;
            let datagram = &buffer[..received.min(buffer.len())];
            if read_responses(datagram, self.sequence, visit)? == Datagram::Done {
                return Ok(());
            }
        }
    }
}

/// A listening TCP socket's accept queue and drop counter, as inet_diag reports them for
/// TCP_LISTEN (tcp_diag_get_info in net/ipv4/tcp_diag.c: idiag_rqueue is sk_ack_backlog,
/// idiag_wqueue sk_max_ack_backlog) with INET_DIAG_SKMEMINFO (SK_MEMINFO_DROPS is
/// sk_drops, which tcp_listendrop() bumps for every handshake the listener drops).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerDiag {
    pub local: SocketAddr,
    pub inode: u64,
    /// Connections waiting for accept().
    pub queued: u32,
    /// The backlog in force (listen()'s, capped at net.core.somaxconn).
    pub backlog: u32,
    /// `None` when the kernel sent no INET_DIAG_SKMEMINFO.
    pub drops: Option<u32>,
}

const TCP_LISTEN_STATE: u32 = 1 << 10;

impl SockDiag {
    /// Dumps the TCP listeners on `local_port` (both families) with their queues and drops.
    pub fn dump_tcp_listeners(
        &mut self,
        local_port: u16,
        visit: &mut dyn FnMut(ListenerDiag),
    ) -> Result<(), SockDiagError> {
        let query = Query::listeners(local_port);
        for family in [AF_INET, AF_INET6] {
            self.exchange(family, &query, &mut |response, _| visit(listener_diag(response)))?;
        }
        Ok(())
    }
}

fn listener_diag(response: &InetResponse) -> ListenerDiag {
    let header = &response.header;
    let id = &header.socket_id;
    let drops = response.nlas.iter().find_map(|nla| match nla {
        Nla::MemInfo(info) => Some(info.drops),
        _ => None,
    });
    ListenerDiag {
        local: socket_addr(id.source_address, id.source_port, id.interface_id),
        inode: u64::from(header.inode),
        queued: header.recv_queue,
        backlog: header.send_queue,
        drops,
    }
}

/// What one dump asks for, in either address family.
struct Query {
    protocol: u8,
    extensions: ExtensionFlags,
    /// `1 << state` for each TCP state wanted.
    states: u32,
    filter: DumpFilter,
}

impl Query {
    /// Every socket of `transport` in any state, on the filtered ports.
    fn sockets(transport: Transport, filter: DumpFilter) -> Self {
        Self {
            protocol: transport.ipproto(),
            extensions: ExtensionFlags::empty(),
            states: filter.tables.states(),
            filter,
        }
    }

    /// TCP listeners on `local_port`, with their memory counters (SK_MEMINFO_DROPS).
    fn listeners(local_port: u16) -> Self {
        let filter = DumpFilter { local_port: Some(local_port), remote_port: None, tables: Tables::All };
        Self {
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::SKMEMINFO,
            states: TCP_LISTEN_STATE,
            filter,
        }
    }

    fn request(&self, family: u8, sequence: u32) -> Vec<u8> {
        let mut socket_id = if family == AF_INET6 { SocketId::new_v6() } else { SocketId::new_v4() };
        socket_id.source_port = self.filter.local_port.unwrap_or(0);
        socket_id.destination_port = self.filter.remote_port.unwrap_or(0);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = sequence;
        let request = InetRequest {
            family,
            protocol: self.protocol,
            extensions: self.extensions.clone(),
            states: StateFlags::from_bits_retain(self.states),
            socket_id,
        };
        serialize(header, SockDiagMessage::InetRequest(request).into())
    }
}

/// A request for the one TCP socket of a 4-tuple: no NLM_F_DUMP, both addresses and
/// ports, and no cookie (all ones, INET_DIAG_NOCOOKIE). `None` when the two ends are of
/// different families (no such socket).
fn exact_request(local: SocketAddr, remote: SocketAddr, sequence: u32) -> Option<Vec<u8>> {
    if local.is_ipv4() != remote.is_ipv4() {
        return None;
    }
    let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
    let socket_id = SocketId {
        source_port: local.port(),
        destination_port: remote.port(),
        source_address: local.ip(),
        destination_address: remote.ip(),
        interface_id: 0,
        cookie: [0xff; 8],
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = sequence;
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::from_bits_retain(ALL_STATES),
        socket_id,
    };
    Some(serialize(header, SockDiagMessage::InetRequest(request).into()))
}

/// The answer to [`exact_request`]: one response, or an error, ENOENT when the kernel
/// found no socket (no NLMSG_DONE either way).
fn read_exact_answer(datagram: &[u8], sequence: u32) -> Result<Option<DiagSocket>, SockDiagError> {
    let mut found = None;
    let read = read_responses(datagram, sequence, &mut |response, raw| {
        found.get_or_insert_with(|| diag_socket(Transport::Tcp, response, raw));
    });
    match read {
        Ok(_) => Ok(found),
        Err(SockDiagError::Kernel { source }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(err) => Err(err),
    }
}

fn serialize(header: NetlinkHeader, payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
    let mut message = NetlinkMessage::new(header, payload);
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Datagram {
    More,
    Done,
}

/// [`read_responses`] as a socket dump reads them: for the tests and the fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn read_datagram(
    datagram: &[u8],
    sequence: u32,
    transport: Transport,
    visit: &mut dyn FnMut(DiagSocket),
) -> Result<Datagram, SockDiagError> {
    read_responses(datagram, sequence, &mut |response, raw| visit(diag_socket(transport, response, raw)))
}

/// Walks the netlink messages of one received datagram, each response with its raw
/// inet_diag_msg. Messages of another request (left over from a dump abandoned on error)
/// are skipped.
fn read_responses(
    datagram: &[u8],
    sequence: u32,
    visit: &mut dyn FnMut(&InetResponse, &[u8]),
) -> Result<Datagram, SockDiagError> {
    let mut offset = 0;
    while offset + NETLINK_HEADER_LEN <= datagram.len() {
        let bytes = &datagram[offset..];
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|source| SockDiagError::Decode { source })?;
        let length = message.header.length as usize;
        let ours = message.header.sequence_number == sequence;
        match message.payload {
            _ if !ours => {}
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                let inet_diag_msg = bytes.get(NETLINK_HEADER_LEN..length).unwrap_or_default();
                visit(&response, inet_diag_msg);
            }
            NetlinkPayload::Done(_) => return Ok(Datagram::Done),
            NetlinkPayload::Error(ErrorMessage { code: Some(code), .. }) => {
                return Err(SockDiagError::Kernel { source: kernel_errno(code) });
            }
            _ => {}
        }
        if length < NETLINK_HEADER_LEN {
            break;
        }
        // Messages in a datagram start on 4-byte boundaries (NLMSG_ALIGN).
        offset += (length + 3) & !3;
    }
    Ok(Datagram::More)
}

fn diag_socket(transport: Transport, response: &InetResponse, inet_diag_msg: &[u8]) -> DiagSocket {
    let header = &response.header;
    let id = &header.socket_id;
    DiagSocket {
        transport,
        state: header.state,
        local: socket_addr(id.source_address, id.source_port, id.interface_id),
        remote: socket_addr(id.destination_address, id.destination_port, id.interface_id),
        v6_only: response.nlas.iter().any(|nla| matches!(nla, Nla::SkV6Only(true))),
        inode: u64::from(header.inode),
        timer_ms: timer_ms(header.timer.as_ref(), inet_diag_msg),
    }
}

/// Link-local IPv6 addresses mean nothing without their interface; keep it as the scope.
fn socket_addr(ip: IpAddr, port: u16, interface: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, interface))
        }
        other => SocketAddr::new(other, port),
    }
}

/// Milliseconds left on the socket's timer.
///
/// The kernel sends `-errno`. Not `ErrorMessage::to_io`: it negates with `abs`, which
/// overflows (a panic in a checked build) on `i32::MIN` from a hostile or corrupt
/// datagram; the fuzz target `sock_diag` found this.
fn kernel_errno(code: NonZeroI32) -> io::Error {
    io::Error::from_raw_os_error(code.get().saturating_neg())
}

/// netlink-packet-sock-diag 0.5 decodes idiag_timer 3 as `Timer::TimeWait` and drops
/// idiag_expires (src/inet/response.rs), yet for TIME_WAIT the kernel fills it with the
/// time left before the socket disappears (tcp_twsk_diag_fill in net/ipv4/tcp_diag.c).
/// So that one u32 is read from the message itself, at its fixed offset in the uapi
/// struct inet_diag_msg; every other field comes from the crate.
fn timer_ms(timer: Option<&Timer>, inet_diag_msg: &[u8]) -> Option<u64> {
    match timer? {
        Timer::Retransmit(left, _) | Timer::KeepAlive(left) | Timer::Probe(left) => {
            Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        }
        Timer::TimeWait => {
            let raw = inet_diag_msg.get(IDIAG_EXPIRES_OFFSET..IDIAG_EXPIRES_OFFSET + 4)?;
            Some(u64::from(u32::from_ne_bytes(raw.try_into().ok()?)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use netlink_packet_core::{DoneMessage, Emitable, ErrorMessage, NetlinkBuffer, Parseable};
    use netlink_packet_sock_diag::inet::InetResponseHeader;

    use super::*;

    fn response(state: u8, timer: Option<Timer>, local: SocketAddr, remote: SocketAddr) -> InetResponse {
        InetResponse {
            header: InetResponseHeader {
                family: if local.is_ipv4() { AF_INET } else { AF_INET6 },
                state,
                timer,
                socket_id: SocketId {
                    source_port: local.port(),
                    destination_port: remote.port(),
                    source_address: local.ip(),
                    destination_address: remote.ip(),
                    interface_id: 0,
                    cookie: [0; 8],
                },
                recv_queue: 0,
                send_queue: 0,
                uid: 0,
                inode: 4242,
            },
            nlas: Default::default(),
        }
    }

    fn message(payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        message_of_request(0, payload)
    }

    fn message_of_request(sequence: u32, payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        serialize(header, payload)
    }

    #[test]
    fn request_asks_for_every_state_and_the_filtered_ports() {
        let filter = DumpFilter { local_port: Some(8080), remote_port: None, tables: Tables::All };
        let bytes = Query::sockets(Transport::Udp, filter).request(AF_INET6, 9);
        // Requests and responses share the message type: the crate would decode this
        // as a response, so header and body are read apart.
        let header = NetlinkHeader::parse(&NetlinkBuffer::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(header.sequence_number, 9);
        assert_eq!(header.length as usize, bytes.len());
        let request = InetRequest::parse(&bytes[NETLINK_HEADER_LEN..]).unwrap();
        assert_eq!(request.family, AF_INET6);
        assert_eq!(request.protocol, IPPROTO_UDP);
        // Parsing truncates to the states the crate knows; the bytes sent keep them all
        // (idiag_states sits after family, protocol, ext and a pad byte).
        let states = &bytes[NETLINK_HEADER_LEN + 4..NETLINK_HEADER_LEN + 8];
        assert_eq!(u32::from_ne_bytes(states.try_into().unwrap()), 0x3ffe, "ESTABLISHED..=BOUND_INACTIVE");
        assert_eq!(request.socket_id.source_port, 8080);
        assert_eq!(request.socket_id.destination_port, 0);
    }

    #[test]
    fn tuple_dumps_ask_for_the_established_hash_only() {
        let filter =
            DumpFilter { local_port: Some(40312), remote_port: Some(443), tables: Tables::EstablishedHash };
        let bytes = Query::sockets(Transport::Tcp, filter).request(AF_INET, 1);
        let states = &bytes[NETLINK_HEADER_LEN + 4..NETLINK_HEADER_LEN + 8];
        let states = u32::from_ne_bytes(states.try_into().unwrap());
        // ESTABLISHED, SYN_SENT, SYN_RECV (and NEW_SYN_RECV with it), the closing states
        // and TIME_WAIT; not LISTEN, CLOSE or BOUND_INACTIVE.
        assert_eq!(states, 0b0001_1011_0111_1110, "{states:#b}");
        for absent in [7, 10, 13] {
            assert_eq!(states & 1 << absent, 0, "state {absent} asked for");
        }
    }

    #[test]
    fn an_exact_request_names_the_tuple_and_no_cookie() {
        let local: SocketAddr = "10.0.1.7:40312".parse().unwrap();
        let remote: SocketAddr = "52.216.8.19:443".parse().unwrap();
        let bytes = exact_request(local, remote, 5).unwrap();
        let header = NetlinkHeader::parse(&NetlinkBuffer::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(header.flags, NLM_F_REQUEST, "not a dump");
        assert_eq!(header.sequence_number, 5);
        let request = InetRequest::parse(&bytes[NETLINK_HEADER_LEN..]).unwrap();
        assert_eq!((request.family, request.protocol), (AF_INET, IPPROTO_TCP));
        let id = &request.socket_id;
        assert_eq!(SocketAddr::new(id.source_address, id.source_port), local);
        assert_eq!(SocketAddr::new(id.destination_address, id.destination_port), remote);
        assert_eq!(id.cookie, [0xff; 8], "INET_DIAG_NOCOOKIE");

        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let request = InetRequest::parse(&exact_request(v6, v6, 1).unwrap()[NETLINK_HEADER_LEN..]).unwrap();
        assert_eq!(request.family, AF_INET6);
        assert_eq!(exact_request(local, v6, 1), None, "no socket joins two families");
    }

    /// The running kernel answers an exact lookup on loopback (no privilege needed).
    #[test]
    fn the_kernel_finds_a_loopback_connection_by_its_tuple() {
        use std::{
            net::{TcpListener, TcpStream},
            os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", client.as_raw_fd()))
            .map(|metadata| metadata.ino())
            .unwrap();
        let mut diag = SockDiag::open().unwrap();
        let found = diag.find_tcp(local, remote).unwrap().expect("the client's socket");
        assert_eq!((found.state, found.local, found.remote, found.inode), (1, local, remote, inode));

        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag.find_tcp(nobody, remote).unwrap(), None);
    }

    #[test]
    fn an_exact_answer_is_the_socket_or_none() {
        let local: SocketAddr = "127.1.0.1:35000".parse().unwrap();
        let remote: SocketAddr = "127.0.0.20:8450".parse().unwrap();
        let found = response(1, None, local, remote);
        let datagram = message_of_request(3, SockDiagMessage::InetResponse(Box::new(found)).into());
        let socket = read_exact_answer(&datagram, 3).unwrap().expect("one socket");
        assert_eq!((socket.state, socket.local, socket.remote, socket.inode), (1, local, remote, 4242));

        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::ENOENT);
        let not_found = message_of_request(3, NetlinkPayload::Error(error));
        assert_eq!(read_exact_answer(&not_found, 3).unwrap(), None);

        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::EINVAL);
        let refused = message_of_request(3, NetlinkPayload::Error(error));
        assert!(matches!(read_exact_answer(&refused, 3), Err(SockDiagError::Kernel { .. })));
    }

    #[test]
    fn listening_and_bind_dumps_ask_for_what_the_established_hash_leaves_out() {
        let states = |tables| {
            let filter = DumpFilter { local_port: None, remote_port: None, tables };
            let bytes = Query::sockets(Transport::Tcp, filter).request(AF_INET, 1);
            u32::from_ne_bytes(bytes[NETLINK_HEADER_LEN + 4..NETLINK_HEADER_LEN + 8].try_into().unwrap())
        };
        let bound = states(Tables::ListeningAndBind);
        assert_eq!(bound, 1 << 7 | 1 << 10 | 1 << 13, "CLOSE, LISTEN, BOUND_INACTIVE: {bound:#b}");
        // Together the two dumps ask for every state, each once: a port sample made of
        // both asks for what one dump of all tables did.
        assert_eq!(bound & states(Tables::EstablishedHash), 0);
        assert_eq!(bound | states(Tables::EstablishedHash), states(Tables::All));
    }

    #[test]
    fn time_wait_expiry_is_read_from_the_raw_message() {
        // The crate cannot emit idiag_expires for TIME_WAIT, so patch it in as the
        // kernel would send it.
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let inner = response(6, Some(Timer::TimeWait), local, remote);
        let mut body = vec![0; inner.buffer_len()];
        inner.emit(&mut body);
        body[IDIAG_EXPIRES_OFFSET..IDIAG_EXPIRES_OFFSET + 4].copy_from_slice(&59_123u32.to_ne_bytes());

        let mut seen = Vec::new();
        let mut datagram = message(SockDiagMessage::InetResponse(Box::new(inner)).into());
        datagram[NETLINK_HEADER_LEN..].copy_from_slice(&body);
        datagram.extend(message(NetlinkPayload::Done(DoneMessage::default())));
        let outcome = read_datagram(&datagram, 0, Transport::Tcp, &mut |s| seen.push(s)).unwrap();

        assert_eq!(outcome, Datagram::Done);
        assert_eq!(
            seen,
            [DiagSocket {
                transport: Transport::Tcp,
                state: 6,
                local,
                remote,
                v6_only: false,
                inode: 4242,
                timer_ms: Some(59_123),
            }]
        );
    }

    #[test]
    fn a_listener_reports_its_queue_backlog_and_drops() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut listener = response(10, None, local, "0.0.0.0:0".parse().unwrap());
        listener.header.recv_queue = 3;
        listener.header.send_queue = 2;
        let mut with_memory = listener.clone();
        with_memory.nlas.push(Nla::MemInfo(netlink_packet_sock_diag::inet::nlas::MemInfo {
            receive_queue: 0,
            receive_queue_max: 0,
            send_queue: 0,
            send_queue_max: 0,
            bottom_send_queues: 0,
            cache: 0,
            options: 0,
            backlog_queue_length: 0,
            drops: 26,
        }));
        let diag = |drops| ListenerDiag { local, inode: 4242, queued: 3, backlog: 2, drops };
        assert_eq!(listener_diag(&with_memory), diag(Some(26)));
        assert_eq!(listener_diag(&listener), diag(None), "no SKMEMINFO: unknown, not 0");
        let bytes = Query::listeners(8080).request(AF_INET, 1);
        let request = InetRequest::parse(&bytes[NETLINK_HEADER_LEN..]).unwrap();
        assert_eq!(request.extensions, ExtensionFlags::SKMEMINFO);
        assert_eq!(request.states.bits(), 1 << 10, "LISTEN only");
        assert_eq!(request.socket_id.source_port, 8080);
    }

    #[test]
    fn other_timers_come_from_the_crate() {
        let retransmit = Timer::Retransmit(Duration::from_millis(200), 1);
        assert_eq!(timer_ms(Some(&retransmit), &[]), Some(200));
        assert_eq!(timer_ms(Some(&Timer::KeepAlive(Duration::from_secs(7))), &[]), Some(7000));
        assert_eq!(timer_ms(None, &[0; 72]), None);
        assert_eq!(timer_ms(Some(&Timer::TimeWait), &[0; 10]), None, "truncated message");
    }

    #[test]
    fn several_messages_in_one_datagram_are_all_visited() {
        let local: SocketAddr = "[::]:443".parse().unwrap();
        let remote: SocketAddr = "[::]:0".parse().unwrap();
        let mut listener = response(10, None, local, remote);
        listener.nlas.push(Nla::SkV6Only(true));
        let mut datagram = message(SockDiagMessage::InetResponse(Box::new(listener.clone())).into());
        datagram.extend(message(SockDiagMessage::InetResponse(Box::new(listener)).into()));

        let mut seen = Vec::new();
        let outcome = read_datagram(&datagram, 0, Transport::Tcp, &mut |s| seen.push(s)).unwrap();

        assert_eq!(outcome, Datagram::More, "no NLMSG_DONE yet");
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| s.v6_only && s.state == 10 && s.local == local && s.timer_ms.is_none()));
    }

    #[test]
    fn messages_of_an_earlier_request_are_skipped() {
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let stale = response(10, None, "127.0.0.1:80".parse().unwrap(), any);
        let mut datagram = message_of_request(1, SockDiagMessage::InetResponse(Box::new(stale)).into());
        datagram.extend(message_of_request(1, NetlinkPayload::Done(DoneMessage::default())));
        datagram.extend(message_of_request(2, NetlinkPayload::Done(DoneMessage::default())));

        let mut seen = 0;
        let outcome = read_datagram(&datagram, 2, Transport::Tcp, &mut |_| seen += 1).unwrap();
        assert_eq!((outcome, seen), (Datagram::Done, 0));
    }

    #[test]
    fn a_kernel_error_ends_the_dump_with_its_errno() {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-libc::ENOENT);
        let datagram = message(NetlinkPayload::Error(error));
        let err = read_datagram(&datagram, 0, Transport::Udp, &mut |_| {}).unwrap_err();
        assert!(err.is_unsupported_protocol(), "{err:?}");
        assert!(!err.is_refused());
    }

    #[test]
    fn an_errno_of_i32_min_is_an_error_not_a_panic() {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(i32::MIN);
        let datagram = message(NetlinkPayload::Error(error));
        let err = read_datagram(&datagram, 0, Transport::Tcp, &mut |_| {}).unwrap_err();
        assert!(matches!(err, SockDiagError::Kernel { .. }), "{err:?}");
    }

    #[test]
    fn a_receive_timeout_says_so() {
        let timeout = SockDiagError::Receive { source: io::Error::from_raw_os_error(libc::EAGAIN) };
        assert_eq!(timeout.to_string(), "cannot receive the dump within 2 s");
        let other = SockDiagError::Receive { source: io::Error::from_raw_os_error(libc::ENOBUFS) };
        assert_eq!(other.to_string(), "cannot receive the dump");
    }

    #[test]
    fn link_local_addresses_keep_their_interface() {
        let ip: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(socket_addr(ip, 80, 3).to_string(), "[fe80::1%3]:80");
        let global: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(socket_addr(global, 80, 3).to_string(), "[2001:db8::1]:80");
    }
}
