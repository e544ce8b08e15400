//! `syscalls:sys_{enter,exit}_listen` and the CLOSE -> LISTEN transition: who owns a
//! listening socket.
//!
//! A full listener drops handshakes in softirq, on whatever task the interrupt hit, so
//! the owner must be known beforehand. inet_listen() (net/ipv4/af_inet.c) calls
//! inet_csk_listen_start(), which moves the socket to LISTEN with
//! inet_sk_state_store() (`sock:inet_sock_set_state`) in the caller's context, inside
//! the listen() call: the transition seen while a selected task is inside listen()
//! belongs to that task's fd. A listen() on a socket already listening (a new backlog)
//! makes no transition and no record.
//! SYSCALL_DEFINE2(listen, int, fd, int, backlog) in net/socket.c.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use tracer_common::{
    ListenEvent, ListenOffsets, Loss, SockAddr, SockOpts, kind, limits::LISTENER_TABLE_ENTRIES,
};

use crate::{
    emit::{emit, owner_header},
    filter::{current_task, selected},
    maps::{ListenCall, Owner, count_loss, read_global},
    sockets, task_state,
};

/// Set by the daemon before load: where fd and backlog are in sys_enter_listen.
#[unsafe(no_mangle)]
// SAFETY: plain integers, for which all zeroes is a valid value.
pub static LISTEN_OFFSETS: ListenOffsets = unsafe { core::mem::zeroed() };

/// A traced task's listening socket, for `kfree_skb`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Listener {
    /// The task that called listen(), as the owner of the listening fd.
    pub owner: Owner,
    pub local: SockAddr,
}

/// By `struct sock` address; removed when the socket leaves LISTEN, so a plain hash
/// map: a full one refuses (and counts) a new listener instead of evicting a live one.
#[map]
pub static LISTENERS: HashMap<u64, Listener> = HashMap::with_max_entries(LISTENER_TABLE_ENTRIES, 0);

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    if !selected() {
        return 0;
    }
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    let args = unsafe {
        (
            ctx.read_at::<i64>(read_global(&raw const LISTEN_OFFSETS.fd) as usize),
            ctx.read_at::<i64>(read_global(&raw const LISTEN_OFFSETS.backlog) as usize),
        )
    };
    let (Ok(fd), Ok(backlog)) = args else {
        return 0;
    };
    let Some(state) = task_state::for_call() else {
        return 0;
    };
    state.listen = ListenCall { fd: fd as i32, backlog: backlog.clamp(0, i64::from(u32::MAX)) as u32 };
    state.listen_active = 1;
    0
}

#[tracepoint]
pub fn sys_exit_listen(_ctx: TracePointContext) -> u32 {
    if let Some(state) = task_state::in_listen() {
        state.listen_active = 0;
    }
    0
}

/// `sock_set_state` saw `sk` enter LISTEN: when this runs inside a selected task's
/// listen(), report the listener with its owner.
pub fn entered_listen(sk: u64, local: &SockAddr) {
    let Some(call) = task_state::in_listen().map(|state| state.listen) else {
        return;
    };
    let task = current_task();
    let local = *local;
    let owner = sockets::owner_of(&task, call.fd, SockOpts::default());
    let header = owner_header(0, &owner);
    emit::<ListenEvent, { kind::LISTENING }>(|r| {
        r.header = header;
        r.payload = ListenEvent { fd: call.fd, backlog: call.backlog, sk, local };
    });
    if LISTENERS.insert(sk, Listener { owner, local }, 0).is_err() {
        count_loss(Loss::OwnerTableFull);
    }
}

/// `sk` left LISTEN (closed, or shut down).
pub fn left_listen(sk: u64) {
    let _ = LISTENERS.remove(sk);
}
