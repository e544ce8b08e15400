//! `skb:kfree_skb`: packets the kernel dropped, with its reason, on sockets of traced
//! processes, added up per (socket, reason) in the kernel.
//!
//! Fires once per dropped packet in every context for every socket of the node, so it
//! returns after one lookup for a socket nobody traces, and never writes the ring: the
//! daemon reads `SOCKET_DROPS` once a second (see tracer-common/src/drops.rs).
//! The socket comes from `rx_sk` (Linux 6.11+: the receiving socket, which the skb does
//! not hold yet) or else from `skb->sk` (packets being sent), at the BTF offset.
//! include/trace/events/skb.h; the reasons are include/net/dropreason-core.h's, named at
//! start-up from the tracepoint's print format because their values differ per kernel.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    DropKey, DropOffsets, DropTotal, Loss, SockAddr,
    drops::{DROP_ROLE_CONNECTION, DROP_ROLE_LISTENER},
    limits::DROP_TABLE_ENTRIES,
    reset::OFFSET_ABSENT,
};

use crate::{
    diagnostics::{BtfField, btf_read_failed},
    listen::LISTENERS,
    maps::{Owner, count_loss, read_global},
    sock_tuple::read_sock_tuple,
    sockets::SOCK_OWNERS,
};

/// Set by the daemon before load.
#[unsafe(no_mangle)]
// SAFETY: plain integers, for which all zeroes is a valid value.
pub static DROP_OFFSETS: DropOffsets = unsafe { core::mem::zeroed() };

/// Running totals per (traced socket, reason), one slot per CPU: drops of one socket
/// run on several CPUs at once and this target has no 64-bit atomic add; the daemon
/// adds the slots up. Not LRU: a full map must be counted (`Loss::DropTableFull`), not
/// make older totals vanish. The daemon removes totals that stopped growing.
#[map]
pub static SOCKET_DROPS: PerCpuHashMap<DropKey, DropTotal> =
    PerCpuHashMap::with_max_entries(DROP_TABLE_ENTRIES, 0);

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let offsets = read_global(&raw const DROP_OFFSETS);
    let sk = dropping_socket(&ctx, &offsets);
    if sk == 0 {
        return 0;
    }
    let Some(owner) = traced_owner(sk) else {
        return 0;
    };
    // SAFETY: read inside the tracepoint record at an offset tracefs gave the daemon.
    let Ok(reason) = (unsafe { ctx.read_at::<u32>(offsets.reason as usize) }) else {
        return 0;
    };
    // SAFETY: helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = DropKey { sk, reason, _pad: 0 };
    let fresh = DropTotal { total: 1, first_ns: now, last_ns: now, ..owner };
    if let Some(slot) = SOCKET_DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of an entry that stays mapped while the program runs
        // (RCU); nothing else writes this CPU's slot meanwhile.
        let slot = unsafe { &mut *slot };
        if slot.total != 0 && slot.tgid == owner.tgid && slot.fd == owner.fd {
            slot.total += 1;
            slot.last_ns = now;
        } else {
            // First drop on this CPU, or the address was reused by another traced
            // socket: this slot starts over (the daemon keeps the newest owner's slots).
            *slot = fresh;
        }
        return 0;
    }
    // From BPF, an insert fills this CPU's slot and zeroes the others.
    if SOCKET_DROPS.insert(key, fresh, 0).is_err() {
        count_loss(Loss::DropTableFull);
    }
    0
}

/// The socket the dropped packet belonged to, 0 when none.
fn dropping_socket(ctx: &TracePointContext, offsets: &DropOffsets) -> u64 {
    if offsets.rx_sk != OFFSET_ABSENT {
        // SAFETY: read inside the tracepoint record at an offset tracefs gave the daemon.
        if let Ok(sk) = unsafe { ctx.read_at::<u64>(offsets.rx_sk as usize) }
            && sk != 0
        {
            return sk;
        }
    }
    if offsets.skb_sk == OFFSET_ABSENT {
        return 0;
    }
    // SAFETY: as above.
    let Ok(skb) = (unsafe { ctx.read_at::<u64>(offsets.skbaddr as usize) }) else {
        return 0;
    };
    if skb == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel faults safely; the offset is sk_buff.sk from BTF.
    unsafe { bpf_probe_read_kernel((skb + u64::from(offsets.skb_sk)) as *const u64) }.unwrap_or_else(|_| {
        // The record's skb is live: a failed read means the BTF offset is wrong.
        btf_read_failed(BtfField::SkbSock);
        0
    })
}

/// The owner of `sk` when a traced process connected, accepted or listens on it, as a
/// total of zero drops.
fn traced_owner(sk: u64) -> Option<DropTotal> {
    // SAFETY: copied out at once.
    if let Some(owner) = unsafe { SOCK_OWNERS.get(sk) }.copied() {
        let (local, peer) = read_sock_tuple(sk);
        return Some(no_drops_yet(&owner, DROP_ROLE_CONNECTION, local, peer));
    }
    // SAFETY: as above.
    let listener = unsafe { LISTENERS.get(sk) }.copied()?;
    Some(no_drops_yet(&listener.owner, DROP_ROLE_LISTENER, listener.local, SockAddr::default()))
}

fn no_drops_yet(owner: &Owner, role: u32, local: SockAddr, peer: SockAddr) -> DropTotal {
    DropTotal {
        tgid: owner.tgid,
        tid: owner.tid,
        fd: owner.fd,
        role,
        cgroup_id: owner.cgroup_id,
        comm: owner.comm,
        local,
        peer,
        ..DropTotal::default()
    }
}
