//! `sockerr bench-floor` (hidden): the floor of `cargo xtask bench`. Attaches a program
//! that returns at once to every tracepoint `sockerr trace` would attach with the same
//! filters (`kernel::floor`), logs `tracing started` like `trace`, and waits for SIGINT,
//! SIGTERM or `--duration`. It records nothing and prints nothing on stdout.
//!
//! The floor mirrors the tracepoint backend only: the benchmark compares it with
//! `sockerr trace --backend tracepoint`, and `--backend kprobe` is refused here.

use thiserror::Error;

use crate::{
    backend::BackendChoice,
    cli::FloorArgs,
    kernel::{
        floor,
        loader::{LoadError, Selection},
    },
    trace::{TraceError, stop_signal},
};

#[derive(Debug, Error)]
pub enum FloorError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(
        "the floor mirrors the tracepoint backend only: run bench-floor with --backend tracepoint \
         (or auto) and compare it with `sockerr trace --backend tracepoint`"
    )]
    KprobeFloor,
}

pub async fn run(args: FloorArgs) -> Result<(), FloorError> {
    let selection = Selection::from(&args.filters);
    if selection.backend == BackendChoice::Kprobe {
        return Err(FloorError::KprobeFloor);
    }
    let stop = stop_signal(args.duration)?;
    let floor = floor::load(&selection)?;
    // The benchmark waits for this line and checks the count against `trace`'s.
    tracing::info!(
        "tracing started: {} programs attached (floor: every program returns at once)",
        floor.attached
    );
    stop.await;
    drop(floor);
    Ok(())
}
