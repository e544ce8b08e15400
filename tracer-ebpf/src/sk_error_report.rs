//! `sock:inet_sk_error_report` for TCP, BTF-typed (`tp_btf`): the errno of a connect that
//! failed after connect() returned (ECONNREFUSED on RST, ETIMEDOUT, EHOSTUNREACH from
//! ICMP).
//!
//! Emitted by sk_error_report() (net/core/sock.c). For a socket leaving SYN_SENT,
//! tcp_reset() (net/ipv4/tcp_input.c) calls tcp_done() first and sk_error_report()
//! second; tcp_write_err() and tcp_v4_err() did the reverse before 6.9's
//! tcp_done_with_error(). The errno is joined with the SYN_SENT -> CLOSE transition
//! that carries the owner.
//!
//! Not a classic tracepoint: it fires for every socket error on the node (each
//! refused connect, each reset of an established connection), and a BTF-typed one gets the
//! socket before any record is filled. Only two sockets can be a traced connect's: the
//! one whose CLOSE waits in `PENDING_CLOSE` (RST, and every kernel since 6.9), and one
//! still in SYN_SENT with an owner in `SK_OWNERS` (timeouts and ICMP before 6.9). Any
//! other returns after those two lookups, before a read of the socket. The errno is
//! `sk_err` and the tuple the socket's, as the classic record has them.
//!
//! match-proto: TP_PROTO(const struct sock *sk) (include/trace/events/sock.h, 5.15 to
//! 6.18).

use core::ptr;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{
    Loss, SockAddr, SockEvent, kind,
    pairing::{self, replacing_loses},
};

use crate::{
    emit::{emit, owner_header},
    maps::{
        CONNECTS, Owner, PENDING_CLOSE, PENDING_ERROR, PendingClose, PendingError, SK_OWNERS, count_loss,
        failure_reported, global, other_half,
    },
    sock_tuple::read_record_tuple,
};

#[btf_tracepoint(function = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: BtfTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let Some(pending) = PENDING_CLOSE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU slot (see sock_set_state).
    let pending = unsafe { &mut *pending };
    // SAFETY: only presence is read.
    if !waits_for(pending, sk) && unsafe { SK_OWNERS.get(sk) }.is_none() {
        return 0; // no traced connect's socket
    }
    let error = match sock_error(sk) {
        Ok(error) if error != 0 && pairing::may_end_a_connect(error) => error,
        _ => return 0,
    };
    let (mut src, mut dst) = (SockAddr::default(), SockAddr::default());
    read_record_tuple(sk, &mut src, &mut dst);
    // SAFETY: helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if waits_for(pending, sk) {
        let outcome = pairing::pair(&pending.waiting(), now, &src, &dst);
        if other_half(outcome, &mut pending.ts_ns) {
            report_async_failure(&pending.owner, pending.sk, &src, &dst, error);
            return 0;
        }
    }
    // Error first (kernels before 6.9 on timeouts and ICMP): the transition follows.
    // Only a traced connect's error waits here, so replacing one that still waits for
    // its transition loses that failure.
    if let Some(slot) = PENDING_ERROR.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        let slot = unsafe { &mut *slot };
        if replacing_loses(&slot.waiting(), slot.sk, now, sk) {
            count_loss(Loss::AsyncHalfOverwritten);
        }
        *slot = PendingError { ts_ns: now, sk, error, _pad: 0, src, dst };
    }
    0
}

/// Whether the CLOSE waiting in `pending` is `sk`'s. Asked twice, and read from the map
/// each time: 6.1's verifier mis-handled a flag kept in a register across the calls in
/// between. It took the states where the flag was 0 and 1 for the same, explored only
/// the first, and wired the second branch out of the program (`bpftool prog dump xlated`
/// in the 6.1 guest showed the jump gone), so no refused non-blocking connect was
/// reported there. A comparison with values loaded from the map cannot be decided ahead.
#[inline(always)]
fn waits_for(pending: &PendingClose, sk: u64) -> bool {
    // SAFETY: volatile reads of the per-CPU slot the caller holds.
    unsafe {
        ptr::read_volatile(&raw const pending.ts_ns) != 0 && ptr::read_volatile(&raw const pending.sk) == sk
    }
}

/// `sk_err` of `sk`: the errno the kernel set before it reported the error (what the
/// classic record's `error` holds), or the one a failed connect left before its CLOSE.
pub fn sock_error(sk: u64) -> Result<i32, i32> {
    let at = sk + u64::from(global!(SOCK_OFFSETS.err));
    // SAFETY: bpf_probe_read_kernel faults safely; the offset is struct sock.sk_err from BTF.
    unsafe { bpf_probe_read_kernel(at as *const i32) }
}

/// Reports a connect that failed after SYN_SENT, unless its connect() is still running:
/// then the call's exit reports it, as an error if the call returns one, or as this
/// asynchronous failure if it returns EINPROGRESS.
pub fn report_async_failure(owner: &Owner, sk: u64, src: &SockAddr, dst: &SockAddr, error: i32) {
    if let Some(call) = CONNECTS.get_ptr_mut(owner.tid) {
        // SAFETY: the owner is inside connect() on this socket (same sk), so its
        // in-flight entry has no other writer.
        let call = unsafe { &mut *call };
        if call.sk == sk {
            call.async_errno = error;
            return;
        }
    }
    failure_reported(owner.tgid, owner.fd);
    emit::<SockEvent, { kind::CONNECT_ASYNC_ERROR }>(|r| {
        r.header = owner_header(error, owner);
        r.payload = SockEvent { fd: owner.fd, _pad: 0, src: *src, dst: *dst, opts: owner.opts, sk };
    });
}
