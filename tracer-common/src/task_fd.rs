//! The links between a task's fds and its sockets, both ways.
//!
//! From the current task to the `struct sock` behind one of its fds:
//! `task_struct.files` -> `files_struct.fdt` -> `fdtable.fd[fd]` (a `struct file`) ->
//! `file.private_data` (the `struct socket` of a socket file) -> `socket.sk`:
//! `sys_exit_accept` finds the accepted socket by its new fd. From a `struct sock` to
//! the inode number its fd links to (`socket:[INODE]` in /proc/PID/fd, what sock_diag
//! reports): `sock.sk_socket` -> the `struct socket_alloc` around it -> `vfs_inode.i_ino`:
//! the programs record which fd of a traced process holds each socket ([`SocketFd`]).
//! Byte offsets found in the kernel's BTF at start-up, like [`crate::SockOffsets`].

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFdOffsets {
    /// `task_struct.files` (`struct files_struct *`).
    pub task_files: u32,
    /// `files_struct.fdt` (`struct fdtable *`).
    pub files_fdt: u32,
    /// `fdtable.max_fds`: an fd at or beyond it is not in this table.
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (`struct file **`).
    pub fdt_fd: u32,
    /// `file.private_data`: the `struct socket *` of a socket file.
    pub file_private_data: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.sk_socket` (`struct socket *`; NULL once the socket is orphaned).
    pub sock_socket: u32,
    /// `socket_alloc.vfs_inode`, from its `socket` (sock_alloc_inode() in net/socket.c
    /// allocates the two together; `SOCK_INODE()` in include/net/sock.h is this step).
    pub socket_inode: u32,
    /// `inode.i_ino` (an `unsigned long`).
    pub inode_ino: u32,
    /// `socket.file`: the file a socket belongs to, which the fd walk checks against the
    /// file it came from when accept() gave no peer address to check the socket by.
    pub socket_file: u32,
}

const _: () = assert!(size_of::<TaskFdOffsets>() == 10 * 4);

/// The fd of a traced process that holds a connected or accepted TCP socket, by the
/// socket's inode number (`names::SOCKET_FDS`): user space names a failure's holder from
/// it with one lookup, where reading every fd link of a busy node takes seconds. A hint:
/// the fd may have been closed or passed on since, so its link is checked before use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketFd {
    pub tgid: u32,
    pub fd: i32,
}
