//! Globals the daemon writes into the eBPF object before loading it.

/// Byte offsets of tracepoint fields, read from tracefs `format` files at start-up,
/// so no kernel layout is compiled into the programs.
///
/// Syscall tracepoints (`syscalls:sys_enter_*`) share one argument layout per kernel,
/// but each field is still read from its own format file and checked. The `sock:*`
/// hooks are BTF-typed tracepoints: they read the socket at BTF offsets (`SockOffsets`), no
/// record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub connect_fd: u32,
    pub connect_addr: u32,
    pub connect_addrlen: u32,
    pub bind_fd: u32,
    pub bind_addr: u32,
    pub bind_addrlen: u32,
    pub setsockopt_fd: u32,
    pub setsockopt_level: u32,
    pub setsockopt_optname: u32,
    pub setsockopt_optval: u32,
    pub setsockopt_optlen: u32,
    pub close_fd: u32,
    /// `ret` of every `syscalls:sys_exit_*` tracepoint sockerr uses.
    pub sys_exit_ret: u32,
}

const _: () = assert!(size_of::<TracepointOffsets>() == 13 * 4);

/// In-kernel filters, fixed at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// `FILTER_*` bits.
    pub flags: u32,
    /// Depth of `cgroup_id` below the cgroup v2 root (root is 0).
    pub cgroup_level: u32,
    /// cgroup v2 id the task must be in or below (with `FILTER_CGROUP`).
    pub cgroup_id: u64,
}

/// Only tasks whose tgid is in `FILTER_PIDS` or whose thread name is in
/// `FILTER_COMMS` (either set may be empty) are traced.
pub const FILTER_PROCESS: u32 = 1 << 0;
/// Only tasks in or below `Filters::cgroup_id` are traced.
pub const FILTER_CGROUP: u32 = 1 << 1;
/// Report successes too (setsockopt of a recorded option, bind, connect, and the close of
/// a socket with options); without it only failures and resets are, a socket's options
/// travel with them, and only the close of a socket a failure was reported on is a record.
pub const FILTER_EMIT_ALL: u32 = 1 << 2;
/// A process whose thread name matches `FILTER_COMMS` adds its tgid to `FILTER_PIDS`,
/// so its renamed threads (Envoy's `wrk:worker_N`) stay traced.
pub const FILTER_LEARN_PIDS: u32 = 1 << 3;

/// `--http-peek`: keep the fd -> socket map its copies need (untouched otherwise).
pub const FILTER_HTTP_PEEK: u32 = 1 << 4;

const _: () = assert!(size_of::<Filters>() == 16);
