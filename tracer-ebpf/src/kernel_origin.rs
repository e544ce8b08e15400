//! Shared by the kprobe backend's programs: remember the socket at a probed function's
//! entry, and at its return, if it failed inside a traced bind()/connect(), record the
//! function and the socket's fields in that call's in-flight entry. The syscall exit
//! (connect.rs, bind.rs) puts them into the event.
//!
//! Only the first failure of a call is kept: kretprobes of nested functions fire
//! innermost first, so it is the function that refused (`inet_csk_get_port` rather than
//! `__inet_bind`, which turns its refusal into EADDRINUSE).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::KernelOrigin;

use crate::{
    filter::current_task,
    maps::{CONNECTS, PROBED_SOCKS, global},
    sock_tuple::read_sock_tuple,
    task_state::in_bind,
};

/// Which in-flight syscall a probed function belongs to.
#[derive(Clone, Copy)]
pub enum Call {
    Connect,
    Bind,
}

/// At a probed function's entry: keeps `sk` if the thread is inside a traced call.
#[inline(always)]
pub fn remember_sock(call: Call, sk: u64) {
    let tid = current_task().tid;
    let traced = match call {
        // SAFETY: only the presence of the entry is read.
        Call::Connect => unsafe { CONNECTS.get(tid) }.is_some(),
        Call::Bind => in_bind().is_some(),
    };
    if traced {
        let _ = PROBED_SOCKS.insert(tid, sk, 0);
    }
}

/// At a probed function's return: records `function` as the origin of the call's
/// failure when `failed`. `outermost` functions release the remembered socket.
#[inline(always)]
pub fn record_return(call: Call, function: u32, ret: i32, failed: bool, outermost: bool) {
    let tid = current_task().tid;
    // SAFETY: copied out at once.
    let Some(sk) = (unsafe { PROBED_SOCKS.get(tid) }).copied() else {
        return;
    };
    if outermost {
        let _ = PROBED_SOCKS.remove(tid);
    }
    if !failed {
        return;
    }
    let slot = match call {
        Call::Connect => CONNECTS.get_ptr_mut(tid).map(|c| {
            // SAFETY: the thread's own in-flight entry; only this thread writes it while
            // the call runs (softirq writers touch `src`/`async_errno`, never `origin`).
            unsafe { &mut (*c).origin }
        }),
        Call::Bind => in_bind().map(|state| &mut state.bind.origin),
    };
    let Some(origin) = slot else { return };
    if origin.function != 0 {
        return; // an inner function already refused
    }
    *origin = read_sock(sk, function, ret);
}

/// Reads `struct sock` fields at the offsets BTF gave the daemon. A field that cannot be
/// read stays zero: the record then lacks it rather than the whole origin.
#[inline(always)]
fn read_sock(sk: u64, function: u32, ret: i32) -> KernelOrigin {
    let base = sk as *const u8;
    let at = |offset: u32| base.wrapping_add(offset as usize);
    // SAFETY: bpf_probe_read_kernel faults safely; the offsets are BTF member offsets
    // of `struct sock`, and `sk` is the socket the probed function was called with.
    unsafe {
        let bits = |byte: u32, shift: u32, width: u32| -> u8 {
            let value: u8 = bpf_probe_read_kernel(at(byte)).unwrap_or(0);
            (value >> (shift & 7)) & ((1u16 << (width & 7)) as u8).wrapping_sub(1)
        };
        let (src, dst) = read_sock_tuple(sk);
        KernelOrigin {
            function,
            ret,
            state: bpf_probe_read_kernel(at(global!(SOCK_OFFSETS.state))).unwrap_or(0),
            reuse: bits(
                global!(SOCK_OFFSETS.reuse_byte),
                global!(SOCK_OFFSETS.reuse_shift),
                global!(SOCK_OFFSETS.reuse_bits),
            ),
            reuseport: bits(
                global!(SOCK_OFFSETS.reuseport_byte),
                global!(SOCK_OFFSETS.reuseport_shift),
                global!(SOCK_OFFSETS.reuseport_bits),
            ),
            _pad: 0,
            mark: bpf_probe_read_kernel(at(global!(SOCK_OFFSETS.mark)).cast()).unwrap_or(0),
            src,
            dst,
        }
    }
}
