//! The offsets of the links between a task's fds and its sockets
//! (`tracer_common::TaskFdOffsets`), from this kernel's BTF.

use thiserror::Error;
use tracer_common::TaskFdOffsets;

use super::btf::{Btf, BtfError, MemberOffset};

#[derive(Debug, Error)]
pub enum TaskFdOffsetsError {
    #[error("kernel {kernel}: reading its BTF for the accepted sockets' fd walk")]
    Btf {
        kernel: String,
        #[source]
        source: BtfError,
    },
    /// The programs step back from a `struct socket` to its inode inside the
    /// `socket_alloc` that holds both, so the socket must come first.
    #[error(
        "kernel {kernel}: struct socket_alloc has its vfs_inode (byte {inode}) before its socket (byte \
         {socket}), so sockerr cannot step from a socket to its inode. Every kernel from 6.1 to 6.18 puts \
         socket first: run sockerr on one of those, and report this kernel's version"
    )]
    InodeBeforeSocket { kernel: String, socket: u32, inode: u32 },
}

/// The fields, by their names in include/linux/sched.h, include/linux/fdtable.h,
/// include/linux/fs.h, include/linux/net.h and include/net/sock.h (6.1 to 6.18).
pub fn from_btf(btf: &Btf, kernel: &str) -> Result<TaskFdOffsets, TaskFdOffsetsError> {
    let byte = |strukt: &str, member: &str| {
        btf.member_offset(strukt, member)
            .map(MemberOffset::byte_offset)
            .map_err(|source| TaskFdOffsetsError::Btf { kernel: kernel.into(), source })
    };
    // The programs hold the `struct socket`, not the `socket_alloc` around it.
    let (socket, inode) = (byte("socket_alloc", "socket")?, byte("socket_alloc", "vfs_inode")?);
    let socket_inode = inode.checked_sub(socket).ok_or_else(|| TaskFdOffsetsError::InodeBeforeSocket {
        kernel: kernel.into(),
        socket,
        inode,
    })?;
    Ok(TaskFdOffsets {
        task_files: byte("task_struct", "files")?,
        files_fdt: byte("files_struct", "fdt")?,
        fdt_max_fds: byte("fdtable", "max_fds")?,
        fdt_fd: byte("fdtable", "fd")?,
        file_private_data: byte("file", "private_data")?,
        socket_sk: byte("socket", "sk")?,
        sock_socket: byte("sock", "sk_socket")?,
        socket_inode,
        inode_ino: byte("inode", "i_ino")?,
        socket_file: byte("socket", "file")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::build::BtfBuilder;

    /// Where `socket_alloc` keeps its two members, or `None` to leave the struct out.
    #[derive(Clone, Copy)]
    enum SocketAlloc {
        SocketFirst,
        InodeFirst,
        None,
    }

    /// The five structs with the members read, at offsets unlike one another, and around
    /// them members that are not read.
    fn task_fd_btf(socket_alloc: SocketAlloc) -> Vec<u8> {
        let mut b = BtfBuilder::new();
        let u32_ = b.int("unsigned int", 4);
        let u64_ = b.int("long unsigned int", 8);
        b.composite(false, "task_struct", 4096, &[("pid", u32_, 0, 0), ("files", u64_, 14_720, 0)]);
        b.composite(false, "files_struct", 704, &[("count", u32_, 0, 0), ("fdt", u64_, 256, 0)]);
        b.composite(false, "fdtable", 48, &[("max_fds", u32_, 0, 0), ("fd", u64_, 64, 0)]);
        b.composite(false, "file", 232, &[("f_mode", u32_, 0, 0), ("private_data", u64_, 1_536, 0)]);
        let socket = b.composite(
            false,
            "socket",
            128,
            &[("state", u32_, 0, 0), ("file", u64_, 128, 0), ("sk", u64_, 192, 0)],
        );
        let inode = b.composite(false, "inode", 600, &[("i_mode", u32_, 0, 0), ("i_ino", u64_, 512, 0)]);
        // Bit offsets of `socket` and `vfs_inode`.
        let layout = match socket_alloc {
            SocketAlloc::SocketFirst => Some((0, 1_024)),
            SocketAlloc::InodeFirst => Some((4_800, 0)),
            SocketAlloc::None => None,
        };
        if let Some((socket_bits, inode_bits)) = layout {
            b.composite(
                false,
                "socket_alloc",
                728,
                &[("socket", socket, socket_bits, 0), ("vfs_inode", inode, inode_bits, 0)],
            );
        }
        b.composite(false, "sock", 760, &[("sk_err", u32_, 0, 0), ("sk_socket", u64_, 4_416, 0)]);
        b.finish()
    }

    #[test]
    fn offsets_of_the_fields_the_fd_walk_reads() {
        let btf = Btf::parse(&task_fd_btf(SocketAlloc::SocketFirst)).unwrap();
        assert_eq!(
            from_btf(&btf, "test").unwrap(),
            TaskFdOffsets {
                task_files: 1_840,
                files_fdt: 32,
                fdt_max_fds: 0,
                fdt_fd: 8,
                file_private_data: 192,
                socket_sk: 24,
                sock_socket: 552,
                socket_inode: 128,
                inode_ino: 64,
                socket_file: 16,
            }
        );
    }

    #[test]
    fn a_missing_struct_names_the_kernel_and_the_struct() {
        let btf = Btf::parse(&task_fd_btf(SocketAlloc::None)).unwrap();
        let error = from_btf(&btf, "6.99-test").unwrap_err();
        let TaskFdOffsetsError::Btf { source, .. } = &error else { panic!("{error}") };
        let chain = format!("{error}: {source}");
        assert!(chain.contains("6.99-test") && chain.contains("socket_alloc"), "{chain}");
    }

    /// A layout with the inode first would put the inode before the socket the programs
    /// hold: refused by name, not read at offset 0 of the socket.
    #[test]
    fn an_inode_before_its_socket_is_refused() {
        let btf = Btf::parse(&task_fd_btf(SocketAlloc::InodeFirst)).unwrap();
        let error = from_btf(&btf, "6.99-test").unwrap_err();
        assert!(
            matches!(error, TaskFdOffsetsError::InodeBeforeSocket { socket: 600, inode: 0, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("6.99-test"), "{error}");
    }
}
