//! A `struct sock`'s local and peer addresses, read at the BTF offsets the daemon put in
//! `SOCK_OFFSETS` (include/net/sock.h, `struct sock_common`): for the kprobe backend's
//! kernel origin, for the drops of a traced socket, which arrive in softirq with nothing
//! but the socket, and for the BTF-typed hooks, which get the socket instead of a
//! record.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use tracer_common::{
    SockAddr,
    sockaddr::{AF_INET, AF_INET6},
};

use crate::{
    diagnostics::{BtfField, btf_read_failed},
    maps::global,
};

const IPPROTO_TCP: u16 = 6;

/// Whether `sk` is a TCP socket (MPTCP and SCTP sockets move through the TCP states too,
/// and `tcp:tcp_destroy_sock`, which forgets an owner, never fires for them).
#[inline(always)]
pub fn is_tcp(sk: u64) -> bool {
    let at = sk + u64::from(global!(SOCK_OFFSETS.protocol));
    // SAFETY: bpf_probe_read_kernel faults safely; the offset is struct sock.sk_protocol
    // from BTF.
    let protocol = unsafe { bpf_probe_read_kernel(at as *const u16) };
    protocol == Ok(IPPROTO_TCP)
}

/// (local, peer) of `sk`; a field that cannot be read stays zero, so the record lacks
/// that address rather than the whole tuple.
#[inline(always)]
pub fn read_sock_tuple(sk: u64) -> (SockAddr, SockAddr) {
    let (mut local, mut peer) = (SockAddr::default(), SockAddr::default());
    read_sock_tuple_into(sk, &mut local, &mut peer);
    (local, peer)
}

/// [`read_sock_tuple`] into places the caller owns, which must be zeroed: the addresses
/// are read straight into them, with no temporaries on a stack that is short where
/// `sock_set_state` calls this.
#[inline(always)]
pub fn read_sock_tuple_into(sk: u64, local: &mut SockAddr, peer: &mut SockAddr) {
    let base = sk as *const u8;
    let at = |offset: u32| base.wrapping_add(offset as usize);
    // SAFETY: bpf_probe_read_kernel faults safely; the offsets are BTF member offsets
    // of `struct sock`, and `sk` is a socket address the kernel handed the program.
    unsafe {
        // `sk` is a live socket the kernel handed over: a failed read here means the
        // offset, not the pointer, is wrong. The other fields sit next to it.
        let family: u16 =
            bpf_probe_read_kernel(at(global!(SOCK_OFFSETS.family)).cast()).unwrap_or_else(|_| {
                btf_read_failed(BtfField::SockFamily);
                0
            });
        // skc_num is in host order, skc_dport in network order (include/net/sock.h).
        let sport: u16 = bpf_probe_read_kernel(at(global!(SOCK_OFFSETS.num)).cast()).unwrap_or(0);
        let dport: u16 = bpf_probe_read_kernel(at(global!(SOCK_OFFSETS.dport)).cast()).unwrap_or(0);
        local.family = family;
        local.port = sport;
        peer.family = family;
        peer.port = u16::from_be(dport);
        // A failed read leaves that address zero (the helper clears its destination).
        let (local_at, peer_at, len) = match family {
            AF_INET => (global!(SOCK_OFFSETS.rcv_saddr), global!(SOCK_OFFSETS.daddr), 4),
            AF_INET6 => (global!(SOCK_OFFSETS.v6_rcv_saddr), global!(SOCK_OFFSETS.v6_daddr), 16),
            _ => return,
        };
        let _ = bpf_probe_read_kernel_buf(at(local_at), &mut local.addr[..len]);
        let _ = bpf_probe_read_kernel_buf(at(peer_at), &mut peer.addr[..len]);
    }
}

/// (local, peer) of `sk` as the `sock:*` records give it, into zeroed places: the local
/// port is `inet_sport`, which outlives the port's release at CLOSE
/// (`SockOffsets::sport`). A frame of its own that writes into its caller's places:
/// inlined, or returning the tuple, its temporaries pass the 512 bytes 6.1 allows for
/// the deepest chain (`kernel::stack_budget`).
#[inline(never)]
pub fn read_record_tuple(sk: u64, local: &mut SockAddr, peer: &mut SockAddr) {
    read_sock_tuple_into(sk, local, peer);
    let at = sk + u64::from(global!(SOCK_OFFSETS.sport));
    // SAFETY: bpf_probe_read_kernel faults safely; the offset is inet_sock.inet_sport
    // from BTF, and the `sock:*` hooks fire for inet sockets only.
    if let Ok(sport) = unsafe { bpf_probe_read_kernel(at as *const u16) } {
        local.port = u16::from_be(sport);
    }
}
