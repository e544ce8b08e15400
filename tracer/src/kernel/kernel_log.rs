//! The kernel programs' diagnostics (tracer-ebpf/src/diagnostics.rs) in this process's
//! log. aya-log reads the programs' `AYA_LOGS` ring and hands each line to the `log`
//! crate; tracing-subscriber installs `tracing-log`'s LogTracer with the subscriber
//! (main.rs), which forwards them to the same stderr output as every other line, under
//! the target `sockerr::kernel`.
//!
//! The programs only write the levels `AYA_LOG_LEVEL` lets through, a read-only global
//! set before load from the subscriber's filter ([`load_time_level`]): with the default
//! `info` filter the kernel's warnings arrive and its debug lines are never formatted.

use std::io;

use aya::Ebpf;
use aya_log::EbpfLogger;
use aya_log_common::Level;
use thiserror::Error;
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::AbortHandle,
};
use tracer_common::names::KERNEL_LOG_TARGET;

#[derive(Debug, Error)]
pub enum KernelLogError {
    #[error("cannot open the kernel programs' log ring (AYA_LOGS)")]
    Open(#[source] aya_log::Error),
    #[error("cannot watch the kernel programs' log ring (AYA_LOGS)")]
    Watch(#[source] io::Error),
}

/// Reads the kernel programs' log lines until dropped.
pub struct KernelLog {
    task: AbortHandle,
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts forwarding the log lines of the loaded programs; must run inside the async
/// runtime (the reader is a task of its own, woken by the ring's epoll readiness: the
/// programs log only on rare branches and wake it per line).
pub fn start(ebpf: &mut Ebpf) -> Result<KernelLog, KernelLogError> {
    let logger = EbpfLogger::init(ebpf).map_err(KernelLogError::Open)?;
    // SAFETY: the logger owns the ring's map fd and keeps it open until it is dropped,
    // which happens only when the AsyncFd is.
    let ring = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|err| KernelLogError::Watch(err.into_parts().1))?;
    let task = tokio::spawn(async move {
        let mut ring = ring;
        loop {
            let mut guard = match ring.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::warn!(
                        "the kernel programs' log reader stopped ({err}): their warnings are no longer \
                         shown (losses are still counted)"
                    );
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(KernelLog { task: task.abort_handle() })
}

/// The value for `AYA_LOG_LEVEL`: the most verbose level the subscriber shows for the
/// kernel's target, so the programs never format a line that would be thrown away.
pub fn load_time_level() -> u8 {
    let enabled = [
        (Level::Trace, tracing::enabled!(target: KERNEL_LOG_TARGET, tracing::Level::TRACE)),
        (Level::Debug, tracing::enabled!(target: KERNEL_LOG_TARGET, tracing::Level::DEBUG)),
        (Level::Info, tracing::enabled!(target: KERNEL_LOG_TARGET, tracing::Level::INFO)),
        (Level::Warn, tracing::enabled!(target: KERNEL_LOG_TARGET, tracing::Level::WARN)),
        (Level::Error, tracing::enabled!(target: KERNEL_LOG_TARGET, tracing::Level::ERROR)),
    ];
    most_verbose(enabled)
}

/// `AYA_LOG_LEVEL` lets through every level whose value is at most its own (aya-log-ebpf's
/// `level_enabled`); 0 switches every line off.
fn most_verbose(enabled: [(Level, bool); 5]) -> u8 {
    enabled.into_iter().filter(|&(_, on)| on).map(|(level, _)| level as u8).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _};

    use super::*;

    fn level_under(filter: &str) -> u8 {
        let subscriber = tracing_subscriber::registry()
            .with(fmt::layer().with_writer(io::sink))
            .with(EnvFilter::new(filter));
        tracing::subscriber::with_default(subscriber, load_time_level)
    }

    #[test]
    fn the_kernel_logs_what_the_filter_shows() {
        assert_eq!(level_under("info"), Level::Info as u8);
        assert_eq!(level_under("warn"), Level::Warn as u8);
        assert_eq!(level_under("debug"), Level::Debug as u8);
        assert_eq!(level_under("info,sockerr::kernel=debug"), Level::Debug as u8);
        assert_eq!(level_under("debug,sockerr::kernel=error"), Level::Error as u8);
        assert_eq!(level_under("off"), 0);
    }

    #[test]
    fn levels_above_the_most_verbose_are_off() {
        let only = |on: [bool; 5]| {
            let levels = [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error];
            most_verbose(std::array::from_fn(|i| (levels[i], on[i])))
        };
        assert_eq!(only([false, false, false, true, true]), 2);
        assert_eq!(only([false; 5]), 0);
        assert_eq!(only([true; 5]), 5);
    }
}
