//! Maps and load-time globals. Every map whose keys can leak (a task dies inside a
//! syscall, a socket is never closed) is an LRU map, so nothing grows without bound.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    Filters, KernelOrigin, Loss, ResetOffsets, SockAddr, SockOffsets, SockOpts, TaskFdOffsets,
    TracepointOffsets,
    limits::{MAX_FILTER_COMMS, MAX_FILTER_PIDS, OWNER_TABLE_ENTRIES, RING_BYTES, TRACKED_ENTRIES},
    options::Tracked,
    pairing::{Pairing, Waiting},
    tracked_churn,
};

/// `BPF_F_NO_PREALLOC` (include/uapi/linux/bpf.h): a hash map that allocates each entry
/// when it is inserted instead of all of them at creation.
pub const NO_PREALLOC: u32 = 1;
/// `BPF_NOEXIST`: an insert that fails when the key is already there.
const NOEXIST: u64 = 1;

/// Set by the daemon before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
// SAFETY: plain integers, for which all zeroes is a valid value.
pub static OFFSETS: TracepointOffsets = unsafe { core::mem::zeroed() };
/// Set by the daemon before load.
#[unsafe(no_mangle)]
// SAFETY: plain integers, for which all zeroes is a valid value.
pub static FILTERS: Filters = unsafe { core::mem::zeroed() };
/// Set by the daemon before load: offsets for the reset and `--http-peek` programs.
#[unsafe(no_mangle)]
// SAFETY: plain integers, for which all zeroes is a valid value.
pub static RESET_OFFSETS: ResetOffsets = unsafe { core::mem::zeroed() };
/// `struct sock` field offsets from BTF, set by the daemon before load (every backend:
/// the kprobe programs read the refusing socket, `kfree_skb` the tuple, and
/// `sock_set_state` `sk_err`).
#[unsafe(no_mangle)]
// SAFETY: plain integers, for which all zeroes is a valid value.
pub static SOCK_OFFSETS: SockOffsets = unsafe { core::mem::zeroed() };
/// Task -> fd table -> file -> socket -> sock offsets from BTF, set by the daemon before
/// load: `accept` finds the accepted socket by the fd accept() returned.
#[unsafe(no_mangle)]
// SAFETY: plain integers, for which all zeroes is a valid value.
pub static TASK_FD_OFFSETS: TaskFdOffsets = unsafe { core::mem::zeroed() };

/// Reads a load-time global; volatile so the compiler cannot fold the zero initialiser.
macro_rules! global {
    ($static:ident . $field:ident) => {
        $crate::maps::read_global(&raw const $crate::maps::$static.$field)
    };
}
pub(crate) use global;

#[inline(always)]
pub fn read_global<T: Copy>(field: *const T) -> T {
    // SAFETY: `field` points into one of the statics above, which the loader rewrote
    // before load and nothing writes afterwards.
    unsafe { core::ptr::read_volatile(field) }
}

/// Events to the daemon.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// What the programs dropped or degraded, by reason (`tracer_common::Loss`).
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(Loss::COUNT as u32, 0);

/// Counts one loss of `reason` on this CPU; the first one on the CPU also logs a warning
/// naming the reason (the counter going 0 -> 1 is the only test on the counting path).
#[inline(always)]
pub fn count_loss(reason: Loss) {
    if let Some(counter) = LOSSES.get_ptr_mut(reason.index()) {
        // SAFETY: per-CPU slot; a program runs to completion on its CPU, and the
        // softirq that may interrupt it only ever adds (a lost increment would
        // under-count by one, never invent a loss).
        let count = unsafe {
            *counter += 1;
            *counter
        };
        if count == 1 {
            crate::diagnostics::first_loss(reason);
        }
    }
}

/// tgids to trace (filled by the daemon, and learned from `FILTER_COMMS`).
#[map]
pub static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FILTER_PIDS, 0);

/// Thread names to trace, NUL padded to 16 bytes.
#[map]
pub static FILTER_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_FILTER_COMMS, 0);

/// The traced process behind a socket, as recorded when it called connect().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Owner {
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// In `SOCK_OWNERS`: the socket's inode number, the key of its `SOCKET_FDS` entry
    /// (`sockets::register`). 0 elsewhere, and when it could not be read.
    pub inode: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    pub opts: SockOpts,
}

/// A connect() between its entry and exit, keyed by thread id.
#[repr(C)]
pub struct ConnectInFlight {
    pub fd: i32,
    /// Error the socket reported while connect() was still running (a loopback RST
    /// processed at release_sock): the call itself returns EINPROGRESS.
    pub async_errno: i32,
    pub dst: SockAddr,
    pub src: SockAddr,
    pub opts: SockOpts,
    pub sk: u64,
    /// Filled by the kprobe backend's kretprobes when the kernel refuses the call.
    pub origin: KernelOrigin,
}

#[map]
pub static CONNECTS: LruHashMap<u32, ConnectInFlight> = LruHashMap::with_max_entries(16384, 0);

/// A bind() between its entry and exit (`task_state::TaskState::bind`).
#[repr(C)]
pub struct BindInFlight {
    pub fd: i32,
    pub _pad: u32,
    pub addr: SockAddr,
    /// Filled by the kprobe backend's kretprobes when the kernel refuses the call.
    pub origin: KernelOrigin,
}

/// A traced task inside close(fd) (`task_state::TaskState::closing`): the fd, the socket
/// the call moved to CLOSE, and the options the fd carried (`TRACKED` forgets them when
/// close() begins).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Closing {
    pub fd: i32,
    pub _pad: u32,
    pub sk: u64,
    pub opts: SockOpts,
}

/// A selected task's listen() between entry and exit (`task_state::TaskState::listen`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ListenCall {
    pub fd: i32,
    pub backlog: u32,
}

/// A setsockopt() of a recorded option between entry and exit
/// (`task_state::TaskState::sockopt`).
#[repr(C)]
pub struct SockoptInFlight {
    pub fd: i32,
    pub level: i32,
    pub optname: i32,
    pub optlen: i32,
    pub value: u32,
    pub flag: u32,
    /// 1 when `value` could not be read from the caller's buffer.
    pub value_unread: u32,
}

/// Options set on a socket, keyed by `tgid << 32 | fd`: the state its failure and reset
/// records carry (successful setsockopt() calls are no record without `--all`).
#[map]
pub static TRACKED: LruHashMap<u64, Tracked> = LruHashMap::with_max_entries(TRACKED_ENTRIES, 0);

/// Entries `TRACKED` gained and lost through the programs, per CPU, indexed by
/// `tracer_common::tracked_churn`: an LRU map evicts without a word, so user space
/// works evictions out from these and the entries left (`Loss::OptionsEvicted`).
#[map]
pub static TRACKED_CHURN: PerCpuArray<u64> = PerCpuArray::with_max_entries(tracked_churn::COUNT, 0);

#[inline(always)]
fn count_churn(index: u32) {
    if let Some(counter) = TRACKED_CHURN.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, as in `count_loss`.
        unsafe { *counter += 1 };
    }
}

/// Applies a successful setsockopt() of `flag` (its value `None`: unreadable) to the
/// options of `key`, and returns them. An fd that has options already is changed in
/// place: rewriting an LRU entry by insert links a fresh element and unlinks the old one,
/// about 0.3 µs of the exit's 0.5 (measured in docs/design.md).
#[inline(always)]
pub fn apply_option(key: u64, flag: u32, value: Option<u32>) -> SockOpts {
    if let Some(tracked) = TRACKED.get_ptr_mut(key) {
        // SAFETY: a plain update of the map's value. A racing writer is the same fd's
        // setsockopt() on another thread, as with a read-and-insert; an element the LRU
        // recycles under this pointer (only when the table is full, which is counted as
        // `options_evicted`) may take the option for its own fd.
        let tracked = unsafe { &mut *tracked };
        tracked.opts.apply(flag, value);
        return tracked.opts;
    }
    let mut tracked = Tracked::default();
    tracked.opts.apply(flag, value);
    if TRACKED.insert(key, tracked, NOEXIST).is_ok() {
        count_churn(tracked_churn::INSERTED);
    } else {
        // Another thread of the process inserted it in between: this call's options
        // replace those, the last of two threads setting options on one fd at once.
        let _ = TRACKED.insert(key, tracked, 0);
    }
    tracked.opts
}

/// Removes `key` from `TRACKED`, counting it when it was there.
#[inline(always)]
pub fn forget_tracked(key: u64) {
    if TRACKED.remove(key).is_ok() {
        count_churn(tracked_churn::REMOVED);
    }
}

/// The options `tgid` set on `fd` so far.
#[inline(always)]
pub fn tracked_opts(tgid: u32, fd: i32) -> SockOpts {
    // SAFETY: the value is copied out at once.
    unsafe { TRACKED.get(fd_key(tgid, fd)) }.map(|tracked| tracked.opts).unwrap_or_default()
}

/// A failure record names `fd` of `tgid`: its close must be a record too, so that user
/// space retires the table entry the failure made. Untracked fds (no option set) have no
/// close record at all; the table retires theirs when the fd names another socket.
#[inline(always)]
pub fn failure_reported(tgid: u32, fd: i32) {
    if let Some(tracked) = TRACKED.get_ptr_mut(fd_key(tgid, fd)) {
        // SAFETY: a plain store into the map's value; a racing writer (the same fd's
        // setsockopt() on another thread) only rewrites the options.
        unsafe { (*tracked).failure_reported = 1 };
    }
}

pub const fn fd_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | (fd as u32 as u64)
}

/// Owner of each socket in SYN_SENT, keyed by `struct sock` address. Removed when the
/// socket leaves SYN_SENT (every socket does, to ESTABLISHED or CLOSE), so a plain hash
/// map: a full one refuses and counts instead of evicting an owner unseen.
#[map]
pub static SK_OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(OWNER_TABLE_ENTRIES, NO_PREALLOC);

/// Records `owner` for `sk` in `SK_OWNERS`, counting a full table.
pub fn remember_connecting(sk: u64, owner: &Owner) {
    if SK_OWNERS.insert(sk, owner, 0).is_err() {
        count_loss(Loss::OwnerTableFull);
    }
}

/// The kernel reports an asynchronous connect failure with two tracepoints in a row on
/// the same CPU, in an order that changed between kernels: `inet_sock_set_state`
/// (SYN_SENT -> CLOSE, where the owner is known) and `inet_sk_error_report` (the
/// errno). Whichever comes first waits here for the other.
#[repr(C)]
pub struct PendingClose {
    pub ts_ns: u64,
    pub sk: u64,
    pub src: SockAddr,
    pub dst: SockAddr,
    pub owner: Owner,
    /// 1 when the socket held an error (`sk_err`): an error report is due
    /// (`tracer_common::pairing::Waiting::expects_partner`).
    pub expects_partner: u32,
    pub _pad: u32,
}

#[repr(C)]
pub struct PendingError {
    pub ts_ns: u64,
    /// The socket, so that its own later report replaces it without counting a loss.
    pub sk: u64,
    pub error: i32,
    pub _pad: u32,
    pub src: SockAddr,
    pub dst: SockAddr,
}

impl PendingClose {
    /// The slot as the pairing decision sees it.
    pub fn waiting(&self) -> Waiting<'_> {
        Waiting {
            ts_ns: self.ts_ns,
            src: &self.src,
            dst: &self.dst,
            expects_partner: self.expects_partner != 0,
        }
    }
}

impl PendingError {
    /// The slot as the pairing decision sees it: an error only waits here when it may end
    /// a connect (`pairing::may_end_a_connect`), so its transition is always due.
    pub fn waiting(&self) -> Waiting<'_> {
        Waiting { ts_ns: self.ts_ns, src: &self.src, dst: &self.dst, expects_partner: true }
    }
}

#[map]
pub static PENDING_CLOSE: PerCpuArray<PendingClose> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static PENDING_ERROR: PerCpuArray<PendingError> = PerCpuArray::with_max_entries(1, 0);

/// Whether the half waiting in a slot (stamped `slot_ts`) is the other half of the
/// failure seen now, given `pairing::pair`'s decision `outcome`; one that waited too long
/// for a partner that was due counts as [`Loss::AsyncHalfTooOld`]. Either way the slot is
/// emptied.
pub fn other_half(outcome: Pairing, slot_ts: &mut u64) -> bool {
    match outcome {
        Pairing::Partner => {
            *slot_ts = 0;
            true
        }
        Pairing::TooOld { lost } => {
            if lost {
                count_loss(Loss::AsyncHalfTooOld);
            }
            *slot_ts = 0;
            false
        }
        Pairing::Unrelated => false,
    }
}

/// The `struct sock *` a probed function was called with, keyed by thread id: a
/// kretprobe cannot see the arguments. The probed functions of one syscall all work on
/// the same socket, so nesting (`__inet_bind` -> `inet_csk_get_port`) shares the slot.
#[map]
pub static PROBED_SOCKS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);
