//! A panic anywhere ends the process.
//!
//! tokio turns a panic in a spawned task into a `JoinError` and keeps the runtime going:
//! a panicking ring reader or processing task would leave a daemon that still answers
//! /healthz but reports nothing, and a panicking lookup thread a tracer that silently
//! lost a feature. With this hook the first panic, on whichever thread, is logged and
//! the process exits with Rust's panic status (101) before anything can catch it: the
//! process is whole or gone, and its supervisor (systemd, the kubelet) restarts it. The
//! kernel detaches the programs when the process's file descriptors close.

use std::backtrace::{Backtrace, BacktraceStatus};

/// The exit status after a panic: the one Rust uses when `main` panics.
pub const PANIC_EXIT_STATUS: i32 = 101;

/// Installs the hook; call once, after logging is set up.
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        // RUST_BACKTRACE=1 asks for one, as with Rust's own hook.
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            tracing::error!("panic in thread {name}: {info}; exiting\n{backtrace}");
        } else {
            tracing::error!("panic in thread {name}: {info}; exiting (RUST_BACKTRACE=1 shows where)");
        }
        std::process::exit(PANIC_EXIT_STATUS);
    }));
}
