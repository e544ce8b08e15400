//! Everything that touches the kernel's tracing interfaces: tracefs, privileges,
//! loading and attaching the programs, and reading the ring buffer.

pub mod btf;
pub mod cgroup;
mod contract;
pub mod drop_offsets;
pub mod drop_totals;
pub mod features;
pub mod floor;
pub mod kernel_log;
pub mod kprobes;
pub mod listen_offsets;
pub mod loader;
mod log_record;
pub mod losses;
mod object_arch;
pub mod offsets;
pub mod print_fmt;
pub mod privileges;
pub mod reader;
pub mod reset_offsets;
pub mod resets;
pub mod sock_offsets;
mod stack_budget;
pub mod tables;
pub mod task_fd_offsets;
pub mod tracefs;

/// A program and the tracepoint it goes to: (program, category, tracepoint).
pub type Attachment = (&'static str, &'static str, &'static str);
