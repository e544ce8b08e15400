//! sockerr's daemon: loads the kernel programs, reads their events, ties them to the
//! sockets of the traced processes, and says what failed and why.
//!
//! Pure logic (decode, table, classify, output) is unit-tested on synthetic events;
//! only `kernel` and `enrich` touch the running system. See docs/design.md.

pub mod backend;
pub mod bench_floor;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod correlate;
pub mod daemon;
pub mod decode;
#[cfg(feature = "demo")]
pub mod demo;
pub mod enrich;
pub mod errno;
pub mod event;
pub mod fatal;
/// Entry points for the fuzz targets of `fuzz/`; not part of sockerr's API.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod k8s;
pub mod kernel;
pub mod mark;
pub mod output;
pub mod pipeline;
pub mod proc_root;
pub mod record;
pub mod reset;
pub mod sink;
pub mod table;
#[cfg(test)]
mod testing;
pub mod trace;
pub mod ttl_cache;

// Used by src/main.rs only (a package's binary cannot have dependencies of its own).
use anyhow as _;
