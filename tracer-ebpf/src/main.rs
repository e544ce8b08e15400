//! sockerr's kernel programs: one file per hook.
//!
//! Process-context hooks (syscall tracepoints) decide whether a task is traced and
//! record what it asked for; `sock:*` hooks see the kernel's outcome, often in
//! softirq context, and attribute it through the socket's recorded owner.
#![no_std]
#![no_main]

// The library target only lets tracer name this crate as a build dependency.
use tracer_ebpf as _;

mod accept;
mod bind;
mod close;
mod connect;
mod destroy_sock;
mod diagnostics;
mod emit;
mod filter;
mod floor;
mod kernel_origin;
mod kfree_skb;
mod kprobe_inet6_bind;
mod kprobe_inet_bind;
mod kprobe_inet_csk_get_port;
mod kprobe_inet_hash_connect;
mod listen;
mod maps;
mod peek;
mod peek_enter;
mod peek_exit;
mod process;
mod receive_reset;
mod reset_report;
mod send_reset;
mod setsockopt;
mod sk_error_report;
mod sock_set_state;
mod sock_tuple;
mod sockaddr;
mod sockets;
mod task_state;
mod task_verdict;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
