//! The TCP sockets of traced processes and their owners, by `struct sock`.
//!
//! Resets are mostly seen in softirq context, where the current task is whoever the
//! interrupt hit: the owner must come from a map filled in process context. Connected
//! sockets are recorded when `sock_set_state` sees them reach ESTABLISHED (the owner
//! is known from the traced connect()); accepted sockets when a traced accept() returns
//! them (`accept`, through the caller's fd table). The (tgid, fd) side is `peek::FD_SOCKS`, which tells
//! `--http-peek` which fds are TCP sockets worth copying, so file reads are never copied.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_probe_read_kernel},
    macros::map,
    maps::HashMap,
};
use tracer_common::{Loss, SockAddr, SockOpts, SocketFd, limits::OWNER_TABLE_ENTRIES};

use crate::{
    filter::{Task, current_task},
    maps::{Closing, NO_PREALLOC, Owner, count_loss, global, tracked_opts},
    peek, task_state,
};

/// Owner of each TCP socket a traced process connected or accepted, by `struct sock`
/// address. Removed when the kernel destroys the socket (`destroy_sock`), so a reused
/// address never inherits an owner, and so a plain hash map: a full one refuses (and
/// counts) a new owner instead of evicting an old one unseen.
#[map]
pub static SOCK_OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(OWNER_TABLE_ENTRIES, NO_PREALLOC);

/// The fd of a traced process holding each socket of `SOCK_OWNERS`, by the socket's
/// inode number: where user space finds a failure's holder (`tracer_common::SocketFd`).
/// Inserted and removed with the `SOCK_OWNERS` entry, so a plain hash map as that one.
#[map]
pub static SOCKET_FDS: HashMap<u64, SocketFd> = HashMap::with_max_entries(OWNER_TABLE_ENTRIES, NO_PREALLOC);

/// `owner` now holds `sk`, with this tuple. Sets `owner.inode` (the caller's copy: one
/// with it made here would cost the stack 6.1 has no room for below `left_syn_sent`).
pub fn register(owner: &mut Owner, sk: u64, local: &SockAddr, peer: &SockAddr) {
    owner.inode = sock_inode(sk).unwrap_or(0);
    let owner: &Owner = owner; // inserted by reference, not copied to the stack
    if SOCK_OWNERS.insert(sk, owner, 0).is_err() {
        count_loss(Loss::OwnerTableFull);
    } else if owner.inode != 0 {
        let at = SocketFd { tgid: owner.tgid, fd: owner.fd };
        if SOCKET_FDS.insert(u64::from(owner.inode), at, 0).is_err() {
            count_loss(Loss::OwnerTableFull);
        }
    }
    peek::fd_names_socket(owner.tgid, owner.fd, sk, local, peer);
}

/// The kernel frees `sk`: forget its owner and the fd that held it.
pub fn destroyed(sk: u64) {
    // SAFETY: copied out before removal.
    let Some(inode) = (unsafe { SOCK_OWNERS.get(sk) }).map(|owner| owner.inode) else {
        return;
    };
    let _ = SOCK_OWNERS.remove(sk);
    if inode != 0 {
        let _ = SOCKET_FDS.remove(u64::from(inode));
    }
}

/// The inode number of `sk`'s file (`SOCK_INODE(sk->sk_socket)->i_ino`), what
/// /proc/PID/fd links and sock_diag name it by. `None` when the socket has no file (an
/// orphan) or the number does not fit 32 bits (socket inodes come from get_next_ino(),
/// an `unsigned int`).
fn sock_inode(sk: u64) -> Option<u32> {
    let socket_at = sk + u64::from(global!(TASK_FD_OFFSETS.sock_socket));
    // SAFETY: bpf_probe_read_kernel faults safely; offsets from BTF, `sk` a live socket.
    let socket = unsafe { bpf_probe_read_kernel(socket_at as *const u64) }.ok().filter(|&at| at != 0)?;
    let ino_at = socket
        + u64::from(global!(TASK_FD_OFFSETS.socket_inode))
        + u64::from(global!(TASK_FD_OFFSETS.inode_ino));
    // SAFETY: as above; the inode is allocated with the socket.
    let ino = unsafe { bpf_probe_read_kernel(ino_at as *const u64) }.ok()?;
    u32::try_from(ino).ok().filter(|&ino| ino != 0)
}

/// sys_enter_close of `fd`: the fd no longer names the socket (no more peeking), and a
/// reset sent inside this call belongs to the caller.
/// The caller checked that `task` is selected.
pub fn close_started(task: &Task, fd: i32, opts: SockOpts) {
    peek::fd_closed(task.tgid, fd);
    if let Some(state) = task_state::for_call() {
        // Not cleared at the exit: it only matches a reset of the very socket this
        // close() moved to CLOSE, so a stale one is harmless.
        state.closing = Closing { fd, _pad: 0, sk: 0, opts };
        state.closing_set = 1;
    }
}

/// A socket moved to CLOSE. The first such transition inside a traced close() is the
/// closed socket: __tcp_close() and tcp_disconnect() (net/ipv4/tcp.c, 6.1 to 6.18) call
/// tcp_set_state(sk, TCP_CLOSE) before tcp_send_active_reset(). Later ones are other
/// sockets handled in softirq on this task's stack: on loopback the peer processes the
/// RST (and moves to CLOSE) before tcp_send_reset fires at the end of
/// tcp_send_active_reset().
pub fn entered_close(sk: u64) {
    if let Some(closing) = task_state::last_close()
        && closing.sk == 0
    {
        closing.sk = sk;
    }
}

/// The current task's traced close() of `sk`, when this runs inside it.
fn closing_of(sk: u64) -> Option<Closing> {
    let closing = *task_state::last_close()?;
    (closing.sk == sk && sk != 0).then_some(closing)
}

/// The traced task whose close() sent a reset on `sk`, when this runs inside it.
pub fn closing_owner(sk: u64) -> Option<Owner> {
    let closing = closing_of(sk)?;
    Some(owner_of(&current_task(), closing.fd, closing.opts))
}

/// The options `sk`'s fd carried when the current task's close() of it began, when
/// this runs inside that close().
pub fn closing_opts(sk: u64) -> Option<SockOpts> {
    closing_of(sk).map(|closing| closing.opts)
}

/// `task` as the owner of its `fd`, with the options it set on the socket so far.
pub fn current_owner(task: &Task, fd: i32) -> Owner {
    owner_of(task, fd, tracked_opts(task.tgid, fd))
}

/// `task` (the current one) as the owner of `fd`, whose options are `opts`.
pub fn owner_of(task: &Task, fd: i32, opts: SockOpts) -> Owner {
    Owner {
        tgid: task.tgid,
        tid: task.tid,
        fd,
        inode: 0,
        // SAFETY: helper call without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
        opts,
    }
}
