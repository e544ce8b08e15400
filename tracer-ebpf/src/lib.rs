#![no_std]

// Gives the crate a library target so `tracer` can name it as a build dependency.

// The programs (src/main.rs) use the dependencies; this target only stands in for them.
use aya_ebpf as _;
use aya_log_ebpf as _;
use tracer_common as _;
