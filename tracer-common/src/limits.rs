//! Sizes both sides must agree on: the kernel programs size their maps with them and
//! the daemon checks its input against them.

/// Bytes of the `EVENTS` ring buffer.
pub const RING_BYTES: u32 = 1 << 20;
/// The programs submit records without waking the reader (it polls on a timer:
/// waking it per record costs more than the rest of the tracing); once this much is
/// pending they wake it so a burst cannot fill the ring.
///
/// Every record above the threshold wakes, not only the one that crosses it: tried
/// (2026-11-29), waking once per 256 KiB crossed cut the interrupts of a 300k/s
/// bind-failure loop from 1,700 to 57 a second, but the reader, woken onto the busy
/// CPU, then waited there for the loop's time slice and the ring overflowed (66,120
/// `ring_full` in 5 s, none before). The repeated interrupts are what lets it run.
pub const WAKEUP_THRESHOLD: u64 = 256 * 1024;
/// Entries of `FILTER_PIDS`: `--pid` values plus the tgids `--comm` learns.
pub const MAX_FILTER_PIDS: u32 = 4096;
/// Entries of `FILTER_COMMS`: `--comm` values.
pub const MAX_FILTER_COMMS: u32 = 64;
/// Entries of the owner tables (`SOCK_OWNERS`, `SK_OWNERS`): sockets of traced
/// processes at once. Plain hash maps: a full table refuses (and counts) a new owner
/// instead of silently evicting an old one. Allocated per entry (`BPF_F_NO_PREALLOC`):
/// at rest the bound costs only the bucket array (16 bytes an entry, 8.4 MB a table
/// here against 7.9 MB for today's 65,536 preallocated entries), and entries cost
/// memory as sockets are tracked (about 112 bytes each). The busy-node bench (200,000
/// loopback connections, 400,000 sockets) records 200,000 owners; 512 Ki would hold
/// every socket of it with a quarter to spare.
pub const OWNER_TABLE_ENTRIES: u32 = 1 << 19;
/// Entries of `TRACKED`: sockets with recorded options at once, by (tgid, fd). An LRU
/// map (an exited process never closes its fds through close(2), so its entries must
/// be reclaimable), and LRU maps are always preallocated: 88 bytes an entry up
/// front. 256 Ki covers the busy node's 200,000 option-carrying client sockets with a
/// third to spare; an eviction is counted (`Loss::OptionsEvicted`).
pub const TRACKED_ENTRIES: u32 = 1 << 18;
/// Entries of `LISTENERS`: listening sockets of traced processes at once.
pub const LISTENER_TABLE_ENTRIES: u32 = 4096;
/// Entries of `SOCKET_DROPS`: (traced socket, drop reason) pairs with a running total.
pub const DROP_TABLE_ENTRIES: u32 = 4096;
