//! `syscalls:sys_enter_accept{,4}` / `sys_exit_accept{,4}`: the owner of an accepted
//! socket. accept() returns an fd, not a `struct sock`; the peer address it writes to
//! the caller's buffer finds the socket `sock_set_state` saw complete its handshake
//! (`sockets::PASSIVE`). A caller that passes no address buffer (accept(fd, NULL, NULL))
//! leaves the socket unrecorded; resets it sends from close() are still attributed.
//! SYSCALL_DEFINE4(accept4, int, fd, struct sockaddr __user *, upeer_sockaddr,
//! int __user *, upeer_addrlen, int, flags) and accept (the same first three) in
//! net/socket.c; the address comes from inet_getname() (net/ipv4/af_inet.c).

use aya_ebpf::{macros::map, macros::tracepoint, maps::LruHashMap, programs::TracePointContext};

use crate::{
    filter::{current_task, selected},
    maps::global,
    sockaddr::read_user_sockaddr,
    sockets::{PASSIVE, current_owner, peer_key, register},
};

/// accept() between entry and exit, by thread id: the caller's address buffer.
#[map]
static ACCEPTS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// The largest address accept() writes for TCP: `struct sockaddr_in6`.
const MAX_ADDR_LEN: u64 = 28;

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    let task = current_task();
    if !selected(&task) {
        return 0;
    }
    // SAFETY: reads inside the tracepoint record at an offset tracefs gave the daemon.
    let Ok(addr) = (unsafe { ctx.read_at::<u64>(global!(RESET_OFFSETS.accept_addr) as usize) }) else {
        return 0;
    };
    if addr != 0 {
        let _ = ACCEPTS.insert(task.tid, addr, 0);
    }
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let task = current_task();
    // SAFETY: copied out before removal.
    let Some(addr) = (unsafe { ACCEPTS.get(task.tid) }).copied() else {
        return 0;
    };
    let _ = ACCEPTS.remove(task.tid);
    // SAFETY: as above.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(global!(OFFSETS.sys_exit_ret) as usize) }) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let Some(peer) = read_user_sockaddr(addr, MAX_ADDR_LEN) else {
        return 0;
    };
    let key = peer_key(&peer);
    // SAFETY: copied out before removal.
    let Some(passive) = (unsafe { PASSIVE.get(key) }).copied() else {
        return 0;
    };
    let _ = PASSIVE.remove(key);
    register(&current_owner(&task, ret as i32), passive.sk, &passive.local, &peer);
    0
}
