//! Where the fields that lead from the current task to the `struct sock` behind one of
//! its fds are: `task_struct.files` -> `files_struct.fdt` -> `fdtable.fd[fd]` (a
//! `struct file`) -> `file.private_data` (the `struct socket` of a socket file) ->
//! `socket.sk`. Byte offsets found in the kernel's BTF at start-up, like
//! [`crate::SockOffsets`]: `sys_exit_accept` finds the accepted socket by its new fd.

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
}

const _: () = assert!(size_of::<TaskFdOffsets>() == 6 * 4);
