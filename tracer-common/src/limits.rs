//! Sizes both sides must agree on: the kernel programs size their maps with them and
//! the daemon checks its input against them.

/// Bytes of the `EVENTS` ring buffer.
pub const RING_BYTES: u32 = 1 << 20;
/// The programs submit records without waking the reader (it polls on a timer:
/// waking it per record costs more than the rest of the tracing); once this much is
/// pending they wake it so a burst cannot fill the ring.
pub const WAKEUP_THRESHOLD: u64 = 256 * 1024;
/// Entries of `FILTER_PIDS`: `--pid` values plus the tgids `--comm` learns.
pub const MAX_FILTER_PIDS: u32 = 4096;
/// Entries of `FILTER_COMMS`: `--comm` values.
pub const MAX_FILTER_COMMS: u32 = 64;
/// Entries of the owner tables (`SOCK_OWNERS`, `SK_OWNERS`): sockets of traced
/// processes at once. Plain hash maps: a full table refuses (and counts) a new owner
/// instead of silently evicting an old one.
pub const OWNER_TABLE_ENTRIES: u32 = 65536;
/// Entries of `LISTENERS`: listening sockets of traced processes at once.
pub const LISTENER_TABLE_ENTRIES: u32 = 4096;
/// Entries of `SOCKET_DROPS`: (traced socket, drop reason) pairs with a running total.
pub const DROP_TABLE_ENTRIES: u32 = 4096;
