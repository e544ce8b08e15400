//! Reading socket addresses: from user memory (syscall arguments) and from the
//! `tcp:*` reset records (offsets from tracefs).

use aya_ebpf::{helpers::bpf_probe_read_user, programs::TracePointContext};
use tracer_common::{
    Loss,
    sockaddr::{AF_INET, AF_INET6, SockAddr, is_routine_non_ip},
};

use crate::{
    diagnostics,
    maps::{count_loss, read_global},
};

/// `struct sockaddr_in` (include/uapi/linux/in.h).
#[repr(C)]
struct SockaddrIn {
    family: u16,
    port_be: u16,
    addr: [u8; 4],
    _zero: [u8; 8],
}

/// `struct sockaddr_in6` (include/uapi/linux/in6.h).
#[repr(C)]
struct SockaddrIn6 {
    family: u16,
    port_be: u16,
    flowinfo: u32,
    addr: [u8; 16],
    scope_id: u32,
}

/// Copies an IPv4/IPv6 sockaddr the caller passed; `None` for other families
/// (AF_UNIX, AF_UNSPEC, ...), for lengths the kernel itself would reject, and for a
/// buffer that cannot be read (counted as [`Loss::UserReadFault`]). A family that is
/// neither IP nor routine, or a truncated IP address, gets a debug line.
pub fn read_user_sockaddr(ptr: u64, len: u64) -> Option<SockAddr> {
    let ptr = ptr as *const u8;
    // SAFETY: bpf_probe_read_user faults safely on bad user pointers.
    let Ok(family) = (unsafe { bpf_probe_read_user::<u16>(ptr.cast()) }) else {
        count_loss(Loss::UserReadFault);
        return None;
    };
    let mut out = SockAddr::default();
    match family {
        AF_INET if len >= size_of::<SockaddrIn>() as u64 => {
            // SAFETY: as above.
            let sin: SockaddrIn = unsafe { bpf_probe_read_user(ptr.cast()) }.ok().or_else(fault)?;
            out.family = AF_INET;
            out.port = u16::from_be(sin.port_be);
            out.addr[..4].copy_from_slice(&sin.addr);
        }
        AF_INET6 if len >= size_of::<SockaddrIn6>() as u64 => {
            // SAFETY: as above.
            let sin6: SockaddrIn6 = unsafe { bpf_probe_read_user(ptr.cast()) }.ok().or_else(fault)?;
            out.family = AF_INET6;
            out.port = u16::from_be(sin6.port_be);
            out.scope_id = sin6.scope_id;
            out.addr = sin6.addr;
        }
        _ => {
            if !is_routine_non_ip(family) {
                diagnostics::unexpected_family(family, len);
            }
            return None;
        }
    }
    Some(out)
}

/// Counts an unreadable user buffer; `None` for the caller's `?`.
fn fault<T>() -> Option<T> {
    count_loss(Loss::UserReadFault);
    None
}

pub use tracer_common::sockaddr::TupleOffsets;

/// The tuple offsets in a load-time global (`&raw const OFFSETS.state_tuple`), each field
/// read as `maps::read_global` reads one: the compiler cannot fold the zero initialiser.
#[inline(always)]
pub fn tuple_offsets(global: *const TupleOffsets) -> TupleOffsets {
    // SAFETY: `global` points into one of the load-time statics (maps.rs), which are
    // always mapped; the field places are only taken, then read by read_global.
    unsafe {
        TupleOffsets {
            family: read_global(&raw const (*global).family),
            sport: read_global(&raw const (*global).sport),
            dport: read_global(&raw const (*global).dport),
            saddr: read_global(&raw const (*global).saddr),
            daddr: read_global(&raw const (*global).daddr),
            saddr_v6: read_global(&raw const (*global).saddr_v6),
            daddr_v6: read_global(&raw const (*global).daddr_v6),
        }
    }
}

/// Source and destination of a `tcp:*` reset record, into places the caller owns (a
/// per-CPU scratch slot: the stack is short there); on `false` they are partly written
/// and must not be used. The tracepoints store ports in host order and addresses as
/// network-order bytes, with both v4 and v6 copies (include/trace/events/tcp.h,
/// TP_STORE_ADDRS).
pub fn read_tuple_into(
    ctx: &TracePointContext,
    off: &TupleOffsets,
    src: &mut SockAddr,
    dst: &mut SockAddr,
) -> bool {
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    unsafe {
        let (Ok(family), Ok(sport), Ok(dport)) = (
            ctx.read_at::<u16>(off.family as usize),
            ctx.read_at::<u16>(off.sport as usize),
            ctx.read_at::<u16>(off.dport as usize),
        ) else {
            return false;
        };
        *src = SockAddr { family, port: sport, ..Default::default() };
        *dst = SockAddr { family, port: dport, ..Default::default() };
        match family {
            AF_INET => {
                let (Ok(s), Ok(d)) =
                    (ctx.read_at::<[u8; 4]>(off.saddr as usize), ctx.read_at::<[u8; 4]>(off.daddr as usize))
                else {
                    return false;
                };
                src.addr[..4].copy_from_slice(&s);
                dst.addr[..4].copy_from_slice(&d);
            }
            AF_INET6 => {
                let (Ok(s), Ok(d)) = (
                    ctx.read_at::<[u8; 16]>(off.saddr_v6 as usize),
                    ctx.read_at::<[u8; 16]>(off.daddr_v6 as usize),
                ) else {
                    return false;
                };
                src.addr = s;
                dst.addr = d;
            }
            _ => return false,
        }
        true
    }
}
