//! sockerr's daemon: loads the kernel programs, reads their events, ties them to the
//! sockets of the traced processes, and says what failed and why.
//!
//! Pure logic (decode, table, correlate, classify, output) is unit-tested on synthetic
//! events; only `kernel`, `enrich` and `live_system` touch the running system. See
//! docs/design.md.
//!
//! Modules are crate-private unless the binary (src/main.rs) or the end-to-end tests
//! use them: the public ones are this library's API.

pub(crate) mod backend;
pub mod bench_floor;
pub(crate) mod capability;
pub(crate) mod classify;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod correlate;
pub mod daemon;
pub(crate) mod decode;
#[cfg(feature = "demo")]
pub mod demo;
pub(crate) mod drops;
pub mod enrich;
pub(crate) mod errno;
pub(crate) mod event;
pub mod fatal;
/// Entry points for the fuzz targets of `fuzz/`; not part of sockerr's API.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub(crate) mod heap;
pub(crate) mod http_anomaly;
pub mod k8s;
pub mod kernel;
pub(crate) mod last_error;
pub(crate) mod listen;
pub(crate) mod live_system;
pub(crate) mod mark;
pub(crate) mod output;
pub(crate) mod pipeline;
pub(crate) mod ports;
pub(crate) mod proc_root;
pub mod record;
pub(crate) mod reset;
pub(crate) mod sink;
pub(crate) mod table;
pub(crate) mod tcp_state;
#[cfg(test)]
mod testing;
pub mod trace;
pub(crate) mod ttl_cache;

// Used by src/main.rs only (a package's binary cannot have dependencies of its own).
use anyhow as _;
