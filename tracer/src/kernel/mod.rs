//! Everything that touches the kernel's tracing interfaces: tracefs, privileges,
//! loading and attaching the programs, and reading the ring buffer.

pub mod cgroup;
pub mod floor;
pub mod loader;
pub mod offsets;
pub mod print_fmt;
pub mod privileges;
pub mod reader;
pub mod reset_offsets;
pub mod resets;
pub mod tracefs;
