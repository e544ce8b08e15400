//! What the two reset hooks share: finding the socket's owner and writing the record,
//! with the `--http-peek` bytes when there are any. The owner is found first
//! (`attribute`), before the hooks read the rest of the record, so that with a filter a
//! reset on a socket nobody traces costs two lookups and no reads.

use core::ptr;

use aya_ebpf::{helpers::generated::bpf_probe_read_kernel, macros::map, maps::PerCpuArray};
use tracer_common::{
    PeekCopy, ResetEvent, ResetPeekEvent, SockAddr, SockOpts,
    config::{FILTER_CGROUP, FILTER_PROCESS},
    kind,
    reset::{ATTRIBUTED_CLOSE, ATTRIBUTED_NONE, ATTRIBUTED_SOCKET, PEEK_BYTES, RESET_RECEIVED, RESET_SENT},
};

use crate::{
    emit::{emit, kernel_header, owner_header},
    maps::{Owner, SK_OWNERS, fd_key, global},
    peek::{PEEKS, PeekBuffers, RECENT_RX},
    sockets::{SOCK_OWNERS, closing_opts, closing_owner},
};

/// A reset as one of the tracepoints saw it.
#[repr(C)]
pub struct Seen {
    pub direction: u32,
    pub sk: u64,
    /// No incoming segment caused it (tcp_send_active_reset() passes skb NULL).
    pub active: bool,
    pub state: i32,
    pub reason: u32,
    pub cookie: u64,
    pub local: SockAddr,
    pub peer: SockAddr,
    /// `ATTRIBUTED_*`: how `owner` was found (`ATTRIBUTED_NONE`: it was not, and
    /// `owner` is stale).
    pub attributed: u32,
    pub owner: Owner,
}

/// Where the tracepoints build the [`Seen`] they report. On the stack, it and the record
/// built from it overflow the 512 bytes that 6.1 and 6.12 allow a chain of calls (6.13
/// gave tracing programs a private stack, so newer kernels accepted it). A slot per
/// program and CPU: the kernel never runs a program inside itself on one CPU (the inner
/// run is skipped and counted as `program_skipped`), but the two can run inside each
/// other. `tcp_receive_reset` is BTF-typed, so the classic `tcp_send_reset` does not keep
/// it out, and a socket's backlog is processed in process context with softirqs enabled
/// (`__release_sock()`, net/core/sock.c): the softirq that interrupts one may handle
/// another socket's RST on the same CPU.
#[map]
static SEEN: PerCpuArray<Seen> = PerCpuArray::with_max_entries(2, 0);

/// `SEEN`'s slot of each program.
pub const SENT_SLOT: u32 = 0;
pub const RECEIVED_SLOT: u32 = 1;

/// This CPU's scratch [`Seen`] for the program of `slot` ([`SENT_SLOT`] or
/// [`RECEIVED_SLOT`]).
pub fn seen_slot(slot: u32) -> Option<&'static mut Seen> {
    // SAFETY: per-CPU slot of one program, used from entry to report() within one run.
    SEEN.get_ptr_mut(slot).map(|slot| unsafe { &mut *slot })
}

/// Finds who the reset on `seen.sk` belongs to (`direction`, `sk` and `active` set):
/// `false` when it is not to be reported, because a filter leaves out a socket no traced
/// process owns, or because it is the RST that refused a traced connect (reported as
/// that connect's error).
pub fn attribute(seen: &mut Seen) -> bool {
    // SAFETY: copied out at once.
    if let Some(owner) = unsafe { SOCK_OWNERS.get(seen.sk) } {
        seen.owner = *owner;
        seen.attributed = ATTRIBUTED_SOCKET;
        // Sent inside the close() of this very socket: the options its fd carried then
        // are newer than those recorded at connect() or accept().
        if seen.direction == RESET_SENT
            && seen.active
            && let Some(opts) = closing_opts(seen.sk)
        {
            seen.owner.opts = opts;
        }
        return true;
    }
    if seen.direction == RESET_SENT
        && seen.active
        && let Some(owner) = closing_owner(seen.sk)
    {
        seen.owner = owner;
        seen.attributed = ATTRIBUTED_CLOSE;
        return true;
    }
    seen.attributed = ATTRIBUTED_NONE;
    // With a process or cgroup filter, only the selected processes' sockets count.
    if global!(FILTERS.flags) & (FILTER_PROCESS | FILTER_CGROUP) != 0 {
        return false;
    }
    // SAFETY: only presence is read.
    !(seen.direction == RESET_RECEIVED && unsafe { SK_OWNERS.get(seen.sk) }.is_some())
}

/// Writes the record of a reset `attribute` kept.
pub fn report(seen: &Seen) {
    if seen.attributed == ATTRIBUTED_NONE {
        emit::<ResetEvent, { kind::RESET }>(|r| {
            r.header = kernel_header();
            fill_event(&mut r.payload, seen, -1, SockOpts::default());
        });
        return;
    }
    let owner = &seen.owner;
    let fd = owner.fd;
    // Null for "none", not `None`: an `Option` of a raw pointer keeps a tag beside the
    // pointer, and LLVM loaded the pointer's stack slot before it checked the tag. On the
    // `None` path that slot was never written, and verifiers that refuse reads of
    // unwritten stack (Debian's 6.1.0-48, Linux 6.1.172) rejected the program for it.
    let own = PEEKS.get_ptr(fd_key(owner.tgid, owner.fd)).unwrap_or(ptr::null());
    // SAFETY: copied out at once.
    let related_fd =
        unsafe { RECENT_RX.get(owner.tgid) }.map(|recent| recent.fd).filter(|&fd| fd != owner.fd);
    let related = related_fd.and_then(|fd| PEEKS.get_ptr(fd_key(owner.tgid, fd))).unwrap_or(ptr::null());
    // Volatile: with two plain null tests LLVM tests `own | related` once, and the
    // verifier refuses arithmetic on pointers.
    // SAFETY: reads a local through a valid reference.
    let no_own = unsafe { ptr::read_volatile(&own.is_null()) };
    if no_own && related.is_null() {
        emit::<ResetEvent, { kind::RESET }>(|r| {
            r.header = owner_header(0, owner);
            fill_event(&mut r.payload, seen, fd, owner.opts);
        });
        return;
    }
    emit::<ResetPeekEvent, { kind::RESET_PEEK }>(|r| {
        r.header = owner_header(0, owner);
        fill_event(&mut r.payload.reset, seen, fd, owner.opts);
        fill(&mut r.payload.own, owner.fd, own);
        fill(&mut r.payload.related, related_fd.unwrap_or(-1), related);
    });
}

/// Writes the reset in place (in the ring buffer): a copy on the stack would cost the
/// bytes 6.1's verifier does not have to spare.
fn fill_event(dst: &mut ResetEvent, seen: &Seen, fd: i32, opts: SockOpts) {
    dst.direction = seen.direction;
    dst.attributed = seen.attributed;
    dst.fd = fd;
    dst.state = seen.state;
    dst.reason = seen.reason;
    dst.active = u32::from(seen.active);
    dst.sk = seen.sk;
    dst.cookie = seen.cookie;
    dst.local = seen.local;
    dst.peer = seen.peer;
    dst.opts = opts;
}

/// Copies one socket's kept exchange into the record (an empty slot for null).
fn fill(dst: &mut PeekCopy, fd: i32, src: *const PeekBuffers) {
    if src.is_null() {
        dst.fd = -1;
        dst.sent_len = 0;
        dst.received_len = 0;
        dst.sent_total = 0;
        dst.received_total = 0;
        dst.received_ns = 0;
        dst.local = SockAddr::default();
        dst.peer = SockAddr::default();
        return;
    }
    // SAFETY: a map value pointer, read field by field; the buffers are copied with the
    // probe helper since they are larger than the stack.
    unsafe {
        dst.fd = fd;
        dst.sent_total = (*src).sent_total;
        dst.received_total = (*src).received_total;
        dst.received_ns = (*src).received_ns;
        dst.local = (*src).local;
        dst.peer = (*src).peer;
        dst.sent_len = copy(dst.sent.as_mut_ptr(), (*src).sent.as_ptr(), (*src).sent_len);
        dst.received_len = copy(dst.received.as_mut_ptr(), (*src).received.as_ptr(), (*src).received_len);
    }
}

/// Copies `len` (at most PEEK_BYTES) bytes; returns how many were copied.
///
/// # Safety
/// `dst` and `src` must have room for PEEK_BYTES bytes.
unsafe fn copy(dst: *mut u8, src: *const u8, len: u32) -> u32 {
    // Volatile: keeps the bound check below in the program for the verifier, which
    // must see `len <= PEEK_BYTES` before it accepts the helper's size argument.
    // SAFETY: reads a local through a valid reference.
    let len = unsafe { core::ptr::read_volatile(&len) };
    if len == 0 || len > PEEK_BYTES as u32 {
        return 0;
    }
    // SAFETY: both sides have PEEK_BYTES bytes (caller's contract).
    let ret = unsafe { bpf_probe_read_kernel(dst.cast(), len, src.cast()) };
    if ret == 0 { len } else { 0 }
}
