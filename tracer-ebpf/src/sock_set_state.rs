//! `sock:inet_sock_set_state` for TCP, BTF-typed (`tp_btf`): binds a `struct sock` to
//! the traced connect() that moved it to SYN_SENT, and sees the connect's outcome when it
//! leaves SYN_SENT.
//!
//! Emitted from inet_sk_state_store() (include/net/inet_sock.h) via tcp_set_state()
//! in net/ipv4/tcp.c. tcp_v4_connect()/tcp_v6_connect() move the socket to SYN_SENT
//! *before* inet_hash_connect() picks the source port, and back to CLOSE on failure,
//! so a synchronous EADDRNOTAVAIL shows as CLOSE -> SYN_SENT -> CLOSE inside the call,
//! with the conflicting source port on the second transition.
//!
//! Not a classic tracepoint: it fires about ten times per TCP connection on the
//! whole node, and a BTF-typed one is handed the prototype's arguments as they are, where a
//! classic one first fills a record (both addresses in v4 and v6 form) that the program
//! then reads field by field. The tuple comes from the socket at BTF offsets instead.
//! A BTF-typed tracepoint also guards against recursion per program, not with the per-CPU
//! `bpf_prog_active` that every classic tracepoint and kprobe program shares, so a
//! socket transition in a softirq that interrupts another agent's program still runs.
//!
//! match-proto: TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
//! (include/trace/events/sock.h, unchanged from 4.16 to 6.18).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{
    Loss, SockAddr, SockEvent,
    config::FILTER_EMIT_ALL,
    kind,
    pairing::{self, replacing_loses},
};

use crate::{
    emit::{emit, owner_header},
    filter::current_task,
    listen,
    maps::{
        CONNECTS, PENDING_CLOSE, PENDING_ERROR, PendingClose, SK_OWNERS, count_loss, global, other_half,
        remember_connecting,
    },
    sk_error_report::{report_async_failure, sock_error},
    sock_tuple::{is_tcp, read_record_tuple},
    sockets,
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    // Half of a connection's transitions (FIN_WAIT1, CLOSE_WAIT, ...) matter to none of
    // the branches below: they cost only this test, before any read of the socket.
    let watched = |state| state == TCP_SYN_SENT || state == TCP_LISTEN;
    if !(watched(old) || watched(new) || new == TCP_CLOSE) || !is_tcp(sk) {
        return 0;
    }
    if new == TCP_SYN_SENT {
        entered_syn_sent(sk);
    } else if old == TCP_SYN_SENT {
        left_syn_sent(sk, new);
    } else if new == TCP_LISTEN {
        entered_listen(sk);
    }
    if new == TCP_CLOSE {
        sockets::entered_close(sk);
    }
    if old == TCP_LISTEN {
        listen::left_listen(sk);
    }
    0
}

/// `sk` entered LISTEN. A frame of its own, as `left_syn_sent`.
#[inline(never)]
fn entered_listen(sk: u64) {
    let (mut local, mut peer) = (SockAddr::default(), SockAddr::default());
    read_record_tuple(sk, &mut local, &mut peer);
    listen::entered_listen(sk, &local);
}

/// In the connecting thread: remember who owns `sk`. A frame of its own, as
/// `left_syn_sent`.
#[inline(never)]
fn entered_syn_sent(sk: u64) {
    let task = current_task();
    let Some(call) = CONNECTS.get_ptr_mut(task.tid) else {
        return; // not a traced connect()
    };
    // SAFETY: the in-flight entry belongs to this thread.
    let call = unsafe { &mut *call };
    call.sk = sk;
    let (mut src, mut dst) = (SockAddr::default(), SockAddr::default());
    read_record_tuple(sk, &mut src, &mut dst);
    call.src = src; // port 0 unless the socket was bound
    remember_connecting(sk, &sockets::owner_of(&task, call.fd, call.opts));
}

/// In any context: the connect on `sk` ended, in ESTABLISHED or CLOSE. A frame of its
/// own: inlined, its locals and the other branches' share one frame that passes the
/// 512 bytes 6.1 allows (`kernel::stack_budget`).
#[inline(never)]
fn left_syn_sent(sk: u64, new: i32) {
    // SAFETY: copied out before removal.
    let Some(mut owner) = (unsafe { SK_OWNERS.get(sk) }).copied() else {
        return;
    };
    let _ = SK_OWNERS.remove(sk);
    let (mut src, mut dst) = (SockAddr::default(), SockAddr::default());
    read_record_tuple(sk, &mut src, &mut dst);
    if let Some(call) = CONNECTS.get_ptr_mut(owner.tid) {
        // SAFETY: the owner's in-flight entry; the owner is inside connect() on this
        // socket, holding its lock, so this is the only writer.
        let call = unsafe { &mut *call };
        if call.sk == sk {
            call.src = src;
        }
    }
    if new == TCP_ESTABLISHED {
        sockets::register(&mut owner, sk, &src, &dst);
        // A connection that worked is news only with --all; the owner (with the
        // options) is kept for the socket's resets either way.
        if global!(FILTERS.flags) & FILTER_EMIT_ALL != 0 {
            emit::<SockEvent, { kind::ESTABLISHED }>(|r| {
                r.header = owner_header(0, &owner);
                r.payload = SockEvent { fd: owner.fd, _pad: 0, src, dst, opts: owner.opts, sk };
            });
        }
        return;
    }
    if new != TCP_CLOSE {
        return;
    }
    // SAFETY: helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(pending) = PENDING_ERROR.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; softirq and process context on one CPU do not interleave
        // inside these tracepoints (the socket lock is held).
        let pending = unsafe { &mut *pending };
        let outcome = pairing::pair(&pending.waiting(), now, &src, &dst);
        if other_half(outcome, &mut pending.ts_ns) {
            report_async_failure(&owner, sk, &src, &dst, pending.error);
            return;
        }
    }
    // Every kernel since 6.9 (and every kernel for RST) reports the error after this
    // transition: leave the socket for sk_error_report to pick up. It is kept even when
    // it holds no error (a process may read and clear sk_err with SO_ERROR meanwhile);
    // then no report is due, and replacing it or outliving it loses nothing.
    let expects_partner = holds_error(sk);
    if let Some(slot) = PENDING_CLOSE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, as above.
        let slot = unsafe { &mut *slot };
        if replacing_loses(&slot.waiting(), slot.sk, now, sk) {
            count_loss(Loss::AsyncHalfOverwritten);
        }
        *slot = PendingClose {
            ts_ns: now,
            sk,
            src,
            dst,
            owner,
            expects_partner: u32::from(expects_partner),
            _pad: 0,
        };
    }
}

/// Whether `sk` holds an error (`sk_err`): the kernel sets it before moving a failed
/// connect to CLOSE (tcp_done_with_error() since 6.9, tcp_reset(), tcp_write_err()), and a
/// socket closed, shut down or refused inside connect() leaves SYN_SENT without one.
/// Unreadable: assume an error, so a loss is still counted.
fn holds_error(sk: u64) -> bool {
    sock_error(sk) != Ok(0)
}
