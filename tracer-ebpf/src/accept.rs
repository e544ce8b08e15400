//! `syscalls:sys_enter_accept{,4}` / `sys_exit_accept{,4}`: the owner of an accepted
//! socket. accept() returns an fd, not a `struct sock`: the exit follows the caller's fd
//! table to it (`task_struct.files` -> `fdtable.fd[fd]` -> `file.private_data` ->
//! `socket.sk`, at offsets from BTF), in process context, for selected tasks only, so a
//! passive connection of a process nobody traces costs nothing. The fd can name
//! something else only if another thread closed the accepted socket before this exit
//! ran, so the walk checks what it found: the peer address accept() wrote to the
//! caller's buffer must be the socket's own peer; without a buffer (accept(fd, NULL,
//! NULL), what libuv, and so Node.js, always passes) the socket must point back to the
//! file it came from (`socket.file`) and be TCP over IPv4 or IPv6. A failed first read
//! (`task_struct.files`) is an offset wrong for this kernel and is warned of
//! (`diagnostics::btf_read_failed`).
//! SYSCALL_DEFINE4(accept4, int, fd, struct sockaddr __user *, upeer_sockaddr,
//! int __user *, upeer_addrlen, int, flags) and accept (the same first three) in
//! net/socket.c; the address comes from inet_getname() (net/ipv4/af_inet.c).

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    SockAddr,
    sockaddr::{AF_INET, AF_INET6},
};

use crate::{
    diagnostics::{BtfField, btf_read_failed},
    filter::{Task, current_task, selected},
    maps::global,
    sock_tuple::{is_tcp, read_sock_tuple},
    sockaddr::read_user_sockaddr,
    sockets::{current_owner, register},
    task_state,
};

/// The largest address accept() writes for TCP: `struct sockaddr_in6`.
const MAX_ADDR_LEN: u64 = 28;

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    if !selected() {
        return 0;
    }
    // SAFETY: reads inside the tracepoint record at an offset tracefs gave the daemon.
    let Ok(addr) = (unsafe { ctx.read_at::<u64>(global!(RESET_OFFSETS.accept_addr) as usize) }) else {
        return 0;
    };
    let Some(state) = task_state::for_call() else {
        return 0;
    };
    state.accept_addr = addr;
    state.accept_active = 1;
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let Some(state) = task_state::in_accept() else {
        return 0;
    };
    state.accept_active = 0;
    let addr = state.accept_addr;
    let task = current_task();
    // SAFETY: as in sys_enter_accept.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(global!(OFFSETS.sys_exit_ret) as usize) }) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let peer = if addr == 0 {
        None
    } else {
        let Some(peer) = read_user_sockaddr(addr, MAX_ADDR_LEN) else {
            return 0; // not an IPv4/IPv6 peer: a unix socket
        };
        Some(peer)
    };
    claim(&task, ret as i32, peer.as_ref());
    0
}

/// Registers the socket behind `fd` as `task`'s when it is the one accept() returned: its
/// peer is `peer`, the address accept() wrote; without one (no buffer), it is TCP over
/// IPv4 or IPv6 (a unix socket has no TCP teardown to forget its owner at). A frame of
/// its own: inlined, it and `read_user_sockaddr` below the exit pass the 512 bytes of
/// stack 6.1 allows (`kernel::stack_budget`).
#[inline(never)]
fn claim(task: &Task, fd: i32, peer: Option<&SockAddr>) {
    let Some(sk) = sock_of_fd(fd as u32) else {
        return;
    };
    let (local, sock_peer) = read_sock_tuple(sk);
    let accepted = match peer {
        Some(peer) => sock_peer.same_endpoint(peer),
        None => matches!(local.family, AF_INET | AF_INET6) && is_tcp(sk),
    };
    if accepted {
        register(&mut current_owner(task, fd), sk, &local, peer.unwrap_or(&sock_peer));
    }
}

/// The `struct sock` behind `fd` of the current task, when `fd` is a socket (accept()
/// just returned it, unless another thread closed it meanwhile). The task and its fd
/// table are live; a failed read of the first link means the offset is wrong for this
/// kernel, and is warned of.
fn sock_of_fd(fd: u32) -> Option<u64> {
    let read = |at: u64| -> Option<u64> {
        // SAFETY: bpf_probe_read_kernel faults safely; `at` is a kernel address built
        // from a pointer the previous read returned and a BTF member offset.
        unsafe { bpf_probe_read_kernel(at as *const u64) }.ok().filter(|&value| value != 0)
    };
    // SAFETY: helper call without arguments; the current task.
    let task = unsafe { bpf_get_current_task() };
    let Some(files) = read(task + u64::from(global!(TASK_FD_OFFSETS.task_files))) else {
        btf_read_failed(BtfField::TaskFiles);
        return None;
    };
    let fdt = read(files + u64::from(global!(TASK_FD_OFFSETS.files_fdt)))?;
    let max_fds_at = fdt + u64::from(global!(TASK_FD_OFFSETS.fdt_max_fds));
    // SAFETY: as in `read`.
    let max_fds = unsafe { bpf_probe_read_kernel(max_fds_at as *const u32) }.ok()?;
    if fd >= max_fds {
        return None;
    }
    let fds = read(fdt + u64::from(global!(TASK_FD_OFFSETS.fdt_fd)))?;
    let file = read(fds + u64::from(fd) * 8)?;
    let socket = read(file + u64::from(global!(TASK_FD_OFFSETS.file_private_data)))?;
    // Any file has private data: only a socket's points back to its file.
    if read(socket + u64::from(global!(TASK_FD_OFFSETS.socket_file)))? != file {
        return None;
    }
    read(socket + u64::from(global!(TASK_FD_OFFSETS.socket_sk)))
}
