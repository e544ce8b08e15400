//! `sock:inet_sk_error_report` for TCP: the errno of a connect that failed after
//! connect() returned (ECONNREFUSED on RST, ETIMEDOUT, EHOSTUNREACH from ICMP).
//!
//! Emitted by sk_error_report() (net/core/sock.c). For a socket leaving SYN_SENT,
//! tcp_reset() (net/ipv4/tcp_input.c) calls tcp_done() first and sk_error_report()
//! second; tcp_write_err() and tcp_v4_err() did the reverse before 6.9's
//! tcp_done_with_error(). The record has the tuple but no socket pointer, so it is
//! joined with the SYN_SENT -> CLOSE transition that carries the socket.
//! Format: /sys/kernel/tracing/events/sock/inet_sk_error_report/format.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    SockAddr, SockEvent, kind,
    pairing::{self, Waiting},
};

use crate::{
    emit::{emit, owner_header},
    maps::{
        CONNECTS, OFFSETS, Owner, PENDING_CLOSE, PENDING_ERROR, PendingError, failure_reported, global,
        other_half,
    },
    sockaddr::{read_tuple, tuple_offsets},
};

const IPPROTO_TCP: u16 = 6;

#[tracepoint(category = "sock", name = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    let fields = unsafe {
        (
            ctx.read_at::<u16>(global!(OFFSETS.error_protocol) as usize),
            ctx.read_at::<i32>(global!(OFFSETS.error_error) as usize),
        )
    };
    let (Ok(protocol), Ok(error)) = fields else {
        return 0;
    };
    if protocol != IPPROTO_TCP || error == 0 || !pairing::may_end_a_connect(error) {
        return 0;
    }
    let offsets = tuple_offsets(&raw const OFFSETS.error_tuple);
    let Some((src, dst)) = read_tuple(&ctx, &offsets) else {
        return 0;
    };
    // SAFETY: helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(pending) = PENDING_CLOSE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot (see sock_set_state).
        let pending = unsafe { &mut *pending };
        let waiting = Waiting {
            ts_ns: pending.ts_ns,
            src: &pending.src,
            dst: &pending.dst,
            expects_partner: pending.expects_partner != 0,
        };
        if other_half(&waiting, &mut pending.ts_ns, now, &src, &dst) {
            report_async_failure(&pending.owner, pending.sk, &src, &dst, error);
            return 0;
        }
    }
    // Error first (kernels before 6.9 on timeouts and ICMP): the transition follows.
    if let Some(slot) = PENDING_ERROR.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        let slot = unsafe { &mut *slot };
        *slot = PendingError { ts_ns: now, error, _pad: 0, src, dst };
    }
    0
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
