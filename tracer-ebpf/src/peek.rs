//! `--http-peek`: the first bytes of each traced TCP socket's current exchange.
//!
//! An exchange is a run of data one way and the answer the other way (a request and
//! its response, whichever side speaks first); the next data in the direction that
//! opened it starts a new one. Per socket, keyed like `TRACKED`, the first PEEK_BYTES
//! sent and received in the exchange are kept, for a later reset to carry. Only fds
//! in `FD_SOCKS` (TCP sockets a traced process connected or accepted) are
//! copied: never a file. The programs are attached only with `--http-peek`; the daemon
//! sizes `PEEKS` to one entry otherwise.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_probe_read_user as probe_read_user},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use tracer_common::{
    SockAddr,
    config::FILTER_HTTP_PEEK,
    reset::{PEEK_BYTES, PEEK_RECEIVED, PEEK_SENT},
};

use crate::{
    filter::current_task,
    maps::{fd_key, global},
};

/// A traced TCP socket as its fd names it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockRef {
    pub sk: u64,
    pub local: SockAddr,
    pub peer: SockAddr,
}

/// The TCP sockets traced processes connected or accepted, by `tgid << 32 | fd`;
/// removed at close() and fd reuse.
#[map]
pub static FD_SOCKS: LruHashMap<u64, SockRef> = LruHashMap::with_max_entries(65536, 0);

/// How a syscall passes its data.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Shape {
    /// read, write, recvfrom, sendto: (fd, buf, len).
    Buffer = 1,
    /// readv, writev: (fd, const struct iovec *, vlen).
    Iovec = 2,
    /// recvmsg, sendmsg: (fd, struct user_msghdr *, flags).
    Msghdr = 3,
}

/// A peeked syscall between entry and exit, by thread id.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PeekCall {
    pub fd: i32,
    pub direction: u8,
    pub shape: u8,
    pub _pad: u16,
    pub ptr: u64,
    pub count: u64,
}

#[map]
static PEEK_CALLS: LruHashMap<u32, PeekCall> = LruHashMap::with_max_entries(16384, 0);

/// One socket's exchange. The buffers are twice PEEK_BYTES so the verifier can accept
/// a copy of up to PEEK_BYTES at any offset below PEEK_BYTES; only the first PEEK_BYTES
/// are ever filled.
#[repr(C)]
pub struct PeekBuffers {
    /// Direction of the exchange's first bytes, and of the last ones (0: none yet).
    pub first: u8,
    pub last: u8,
    pub _pad: [u8; 2],
    pub sent_len: u32,
    pub received_len: u32,
    pub _pad2: u32,
    pub sent_total: u64,
    pub received_total: u64,
    pub received_ns: u64,
    pub local: SockAddr,
    pub peer: SockAddr,
    pub sent: [u8; 2 * PEEK_BYTES],
    pub received: [u8; 2 * PEEK_BYTES],
}

/// The daemon sets the size (1 without `--http-peek`).
#[map]
pub static PEEKS: LruHashMap<u64, PeekBuffers> = LruHashMap::with_max_entries(1, 0);

/// Room to build a new `PEEKS` value: it is larger than the 512-byte stack.
#[map]
static PEEK_SCRATCH: PerCpuArray<PeekBuffers> = PerCpuArray::with_max_entries(1, 0);

/// The socket of a process that received data last: a proxy resets its client after
/// a bad answer from the upstream, and that answer is on another socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Recent {
    pub fd: i32,
    pub _pad: u32,
}

/// By tgid.
#[map]
pub static RECENT_RX: LruHashMap<u32, Recent> = LruHashMap::with_max_entries(4096, 0);

/// iovecs followed per call: Envoy's reads and writes use a handful of slices.
const MAX_IOVECS: usize = 4;

/// `struct iovec` (include/uapi/linux/uio.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// `struct user_msghdr` (include/linux/socket.h), 64-bit layout: msg_name,
/// msg_namelen (padded), msg_iov, msg_iovlen, ...
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;

/// `tgid`'s `fd` now names the TCP socket `sk`, with this tuple: its bytes may be
/// copied, and what the fd carried before belongs to another socket.
pub fn fd_names_socket(tgid: u32, fd: i32, sk: u64, local: &SockAddr, peer: &SockAddr) {
    if !peeking() {
        return;
    }
    let key = fd_key(tgid, fd);
    let _ = FD_SOCKS.insert(key, SockRef { sk, local: *local, peer: *peer }, 0);
    let _ = PEEKS.remove(key);
}

/// `tgid`'s `fd` no longer names the socket (close(), or the number handed out again).
pub fn fd_closed(tgid: u32, fd: i32) {
    if peeking() {
        let _ = FD_SOCKS.remove(fd_key(tgid, fd));
    }
}

/// `FD_SOCKS` only serves `--http-peek`: without it no hook touches the map.
#[inline(always)]
fn peeking() -> bool {
    global!(FILTERS.flags) & FILTER_HTTP_PEEK != 0
}

/// Syscall entry: remember where the data is, for TCP sockets of traced processes.
pub fn enter(ctx: &TracePointContext, direction: u8, shape: Shape) {
    // SAFETY: reads inside the tracepoint record at offsets tracefs gave the daemon.
    let args = unsafe {
        (
            ctx.read_at::<u64>(global!(RESET_OFFSETS.peek_fd) as usize),
            ctx.read_at::<u64>(global!(RESET_OFFSETS.peek_buf) as usize),
            ctx.read_at::<u64>(global!(RESET_OFFSETS.peek_len) as usize),
        )
    };
    let (Ok(fd), Ok(ptr), Ok(count)) = args else {
        return;
    };
    let task = current_task();
    let fd = fd as i32;
    // SAFETY: only presence is read.
    if unsafe { FD_SOCKS.get(fd_key(task.tgid, fd)) }.is_none() {
        return;
    }
    let call = PeekCall { fd, direction, shape: shape as u8, _pad: 0, ptr, count };
    let _ = PEEK_CALLS.insert(task.tid, call, 0);
}

/// Syscall exit: copy what was transferred (`ret` bytes) into the socket's exchange.
pub fn exit(ctx: &TracePointContext) {
    let task = current_task();
    // SAFETY: copied out before removal.
    let Some(call) = (unsafe { PEEK_CALLS.get(task.tid) }).copied() else {
        return;
    };
    let _ = PEEK_CALLS.remove(task.tid);
    // SAFETY: reads inside the tracepoint record at an offset tracefs gave the daemon.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(global!(OFFSETS.sys_exit_ret) as usize) }) else {
        return;
    };
    if ret <= 0 {
        return;
    }
    let key = fd_key(task.tgid, call.fd);
    let Some(peek) = exchange_of(key) else {
        return;
    };
    // SAFETY: the map value stays valid for this program run; concurrent calls on one
    // socket from two threads may interleave their bytes, which only blurs the copy.
    let peek = unsafe { &mut *peek };
    if peek.last != 0 && peek.last != call.direction && call.direction == peek.first {
        peek.sent_len = 0;
        peek.received_len = 0;
        peek.sent_total = 0;
        peek.received_total = 0;
        peek.first = call.direction;
    }
    if peek.first == 0 {
        peek.first = call.direction;
    }
    peek.last = call.direction;
    let ret = ret as u64;
    match Shape::from(call.shape) {
        Some(Shape::Buffer) => append(peek, call.direction, call.ptr, ret),
        Some(Shape::Iovec) => append_iovecs(peek, call.direction, call.ptr, call.count, ret),
        Some(Shape::Msghdr) => {
            // SAFETY: bpf_probe_read_user faults safely on bad user pointers.
            let (iov, count) = unsafe {
                (
                    bpf_probe_read_user((call.ptr + MSGHDR_IOV) as *const u64),
                    bpf_probe_read_user((call.ptr + MSGHDR_IOVLEN) as *const u64),
                )
            };
            if let (Ok(iov), Ok(count)) = (iov, count) {
                append_iovecs(peek, call.direction, iov, count, ret);
            }
        }
        None => {}
    }
    if call.direction == PEEK_RECEIVED {
        // SAFETY: helper call without arguments.
        peek.received_ns = unsafe { bpf_ktime_get_ns() };
        let _ = RECENT_RX.insert(task.tgid, Recent { fd: call.fd, _pad: 0 }, 0);
    }
}

impl Shape {
    fn from(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Buffer),
            2 => Some(Self::Iovec),
            3 => Some(Self::Msghdr),
            _ => None,
        }
    }
}

/// The socket's exchange, created empty on its first bytes.
fn exchange_of(key: u64) -> Option<*mut PeekBuffers> {
    if let Some(peek) = PEEKS.get_ptr_mut(key) {
        return Some(peek);
    }
    // SAFETY: copied out at once.
    let socket = unsafe { FD_SOCKS.get(key) }.copied()?;
    let scratch = PEEK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot; only the header is initialised, the lengths say the
    // buffers are empty.
    let fresh = unsafe { &mut *scratch };
    fresh.first = 0;
    fresh.last = 0;
    fresh.sent_len = 0;
    fresh.received_len = 0;
    fresh.sent_total = 0;
    fresh.received_total = 0;
    fresh.received_ns = 0;
    fresh.local = socket.local;
    fresh.peer = socket.peer;
    PEEKS.insert(key, &*fresh, 0).ok()?;
    PEEKS.get_ptr_mut(key)
}

fn append_iovecs(peek: &mut PeekBuffers, direction: u8, iov: u64, count: u64, mut left: u64) {
    for i in 0..MAX_IOVECS {
        if i as u64 >= count || left == 0 {
            return;
        }
        // SAFETY: bpf_probe_read_user faults safely on bad user pointers.
        let Ok(slice) = (unsafe { bpf_probe_read_user((iov + 16 * i as u64) as *const Iovec) }) else {
            return;
        };
        let take = if slice.len < left { slice.len } else { left };
        append(peek, direction, slice.base, take);
        left -= take;
    }
}

/// Appends up to the room left of `n` bytes at user address `src`.
fn append(peek: &mut PeekBuffers, direction: u8, src: u64, n: u64) {
    let (buffer, len, total) = if direction == PEEK_SENT {
        (peek.sent.as_mut_ptr(), &mut peek.sent_len, &mut peek.sent_total)
    } else {
        (peek.received.as_mut_ptr(), &mut peek.received_len, &mut peek.received_total)
    };
    *total = total.saturating_add(n);
    let have = *len as usize & (2 * PEEK_BYTES - 1);
    if have >= PEEK_BYTES {
        return;
    }
    let room = (PEEK_BYTES - have) as u64;
    let take = if n < room { n } else { room } as u32;
    // Volatile: hides from LLVM that `take <= PEEK_BYTES` already holds, so that the
    // check stays in the program for the verifier (offset < PEEK_BYTES, size <=
    // PEEK_BYTES, buffer 2 * PEEK_BYTES).
    // SAFETY: reads a local through a valid reference.
    let take = unsafe { core::ptr::read_volatile(&take) };
    if take == 0 || take > PEEK_BYTES as u32 {
        return;
    }
    // SAFETY: `have < PEEK_BYTES` and `take <= PEEK_BYTES` stay inside the buffer; the
    // helper faults safely on bad user pointers.
    let ret = unsafe { probe_read_user(buffer.add(have).cast(), take, src as *const _) };
    if ret == 0 {
        *len = (have as u32) + take;
    }
}
