//! `sockerr bench-floor` (hidden): the floor of `cargo xtask bench`. Attaches a program
//! that returns at once to every tracepoint `sockerr trace` would attach with the same
//! filters (`kernel::floor`), logs `tracing started` like `trace`, and waits for SIGINT,
//! SIGTERM or `--duration`. It records nothing and prints nothing on stdout.

use thiserror::Error;

use crate::{
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
}

pub async fn run(args: FloorArgs) -> Result<(), FloorError> {
    let selection = Selection::from(&args.filters);
    let stop = stop_signal(args.duration)?;
    let floor = floor::load(&selection)?;
    // The benchmark waits for this line and checks the count against `trace`'s.
    tracing::info!("tracing started: {} programs attached (floor: every program returns at once)", floor.attached);
    stop.await;
    drop(floor);
    Ok(())
}
