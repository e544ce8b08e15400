//! The kernel programs' diagnostics (tracer-ebpf/src/diagnostics.rs) in this process's
//! log. A task reads the programs' `AYA_LOGS` ring (aya-log-ebpf's), decodes each record
//! (`log_record`: aya-log's own reader panics on a malformed one) and hands the line to
//! the `log` crate; tracing-subscriber installs `tracing-log`'s LogTracer with the
//! subscriber (main.rs), which forwards them to the same stderr output as every other
//! line, under the target `sockerr::kernel`. A record that does not decode is counted
//! (`sockerr_kernel_log_records_unreadable_total`, the `stopped:` line), and the ring is
//! drained once more at exit ([`KernelLog::stop`]).
//!
//! The programs only write the levels `AYA_LOG_LEVEL` lets through, a read-only global
//! set before load from the subscriber's filter ([`load_time_level`]): with the default
//! `info` filter the kernel's warnings arrive and its debug lines are never formatted.

use std::{
    io,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{MapError, RingBuf},
};
use aya_log_common::Level;
use thiserror::Error;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::oneshot,
    task::JoinHandle,
};
use tracer_common::names::KERNEL_LOG_TARGET;

use super::{
    log_record::{self, LogLine, LogRecordError},
    reader::RecordSource,
};

/// aya-log-ebpf's ring (its `AYA_LOGS` map; aya-log keeps the name private).
pub const RING: &str = "AYA_LOGS";

/// Most records one wake-up takes: about one ring's worth (128 KiB of records of at
/// least 64 bytes plus their 8-byte headers), so a flood of lines cannot hold the
/// runtime's thread for long; what is left is taken on the next turn.
const MAX_PER_DRAIN: usize = 2048;

/// Longest the drain at shutdown may take: the programs stay attached until it is done
/// and may keep logging, so it stops at this time or at [`MAX_PER_DRAIN`] records.
pub const FINAL_DRAIN_TIME: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum KernelLogError {
    #[error("cannot open the kernel programs' log ring ({RING}): the object has no such ring map")]
    Missing,
    #[error("cannot open the kernel programs' log ring ({RING})")]
    Open(#[source] MapError),
    #[error("cannot watch the kernel programs' log ring ({RING})")]
    Watch(#[source] io::Error),
}

/// Reads the kernel programs' log lines until [`KernelLog::stop`] (or until dropped,
/// without the last drain).
pub struct KernelLog {
    task: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    unreadable: Arc<AtomicU64>,
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl KernelLog {
    /// Records of the ring that did not decode so far (their lines are lost).
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }

    /// Reads what the ring still holds (bounded by [`FINAL_DRAIN_TIME`] and
    /// [`MAX_PER_DRAIN`]), then stops the reader; returns [`KernelLog::unreadable`].
    pub async fn stop(mut self) -> u64 {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // The drain bounds itself; an error here is the task having ended already
            // (its ring failed, said at the time) or a panic, reported by the runtime.
            let _ = task.await;
        }
        self.unreadable()
    }
}

/// Starts forwarding the log lines of the loaded programs; must run inside the async
/// runtime (the reader is a task of its own, woken by the ring's epoll readiness: the
/// programs log only on rare branches and wake it per line).
pub fn start(ebpf: &mut Ebpf) -> Result<KernelLog, KernelLogError> {
    let map = ebpf.take_map(RING).ok_or(KernelLogError::Missing)?;
    let ring = RingBuf::try_from(map).map_err(KernelLogError::Open)?;
    // SAFETY: the RingBuf owns its map fd and keeps it open until it is dropped, which
    // happens only when the AsyncFd is.
    let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| KernelLogError::Watch(err.into_parts().1))?;
    let unreadable = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(read_lines(ring, stopped, Arc::clone(&unreadable), forward));
    Ok(KernelLog { task: Some(task), stop: Some(stop), unreadable })
}

/// The reader task: drains `ring` whenever epoll reports it, and once more when `stop`
/// comes; each decoded line goes to `emit`.
async fn read_lines<R: RecordSource + AsRawFd>(
    mut ring: AsyncFd<R>,
    mut stop: oneshot::Receiver<()>,
    unreadable: Arc<AtomicU64>,
    mut emit: impl FnMut(&LogLine),
) {
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = match guard {
                    Ok(guard) => guard,
                    Err(err) => {
                        tracing::warn!(
                            "the kernel programs' log reader stopped ({err}): their warnings are no longer \
                             shown (losses are still counted)"
                        );
                        return;
                    }
                };
                let drained = drain(guard.get_inner_mut(), MAX_PER_DRAIN, None, &unreadable, &mut emit);
                // Epoll reports the ring again only after a new wake-up: keep the
                // readiness while records are left.
                if drained == Drained::Empty {
                    guard.clear_ready();
                } else {
                    tokio::task::yield_now().await;
                }
            }
            _ = &mut stop => {
                let deadline = Instant::now() + FINAL_DRAIN_TIME;
                if drain(ring.get_mut(), MAX_PER_DRAIN, Some(deadline), &unreadable, &mut emit) != Drained::Empty {
                    tracing::warn!(
                        "kernel programs' log lines may be left unread at exit: the last drain stopped \
                         at its bound ({MAX_PER_DRAIN} lines or {FINAL_DRAIN_TIME:?}) with the programs \
                         still logging"
                    );
                }
                return;
            }
        }
    }
}

/// Why a drain stopped.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// The ring had nothing more.
    Empty,
    /// It took its limit of records: more may be waiting.
    Limit,
    /// Its time was up: more may be waiting.
    Deadline,
}

/// Takes up to `limit` records from `source` (until `deadline`, if any), hands each
/// decoded line to `emit`, and counts each record that does not decode in `unreadable`.
fn drain(
    source: &mut impl RecordSource,
    limit: usize,
    deadline: Option<Instant>,
    unreadable: &AtomicU64,
    emit: &mut dyn FnMut(&LogLine),
) -> Drained {
    let mut consume = |bytes: &[u8]| match log_record::decode(bytes) {
        Ok(line) => emit(&line),
        Err(err) => note_unreadable(&err, unreadable),
    };
    for _ in 0..limit {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Drained::Deadline;
        }
        if !source.take_one(&mut consume) {
            return Drained::Empty;
        }
    }
    Drained::Limit
}

fn note_unreadable(err: &LogRecordError, unreadable: &AtomicU64) {
    // The first one says what is wrong; the rest would repeat it, and are counted.
    if unreadable.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::error!(
            "dropping a kernel programs' log record that does not decode ({err}): daemon and programs \
             disagree on aya-log's record format; further ones are only counted \
             (sockerr_kernel_log_records_unreadable_total, the stopped: line)"
        );
    }
}

/// One line into the `log` crate, as aya-log's reader would hand it over: LogTracer
/// (main.rs) passes it on to the tracing output with its own target, file and line.
fn forward(line: &LogLine) {
    log::logger().log(
        &log::Record::builder()
            .args(format_args!("{}", line.message))
            .level(line.level)
            .target(&line.target)
            .module_path(Some(&line.module))
            .file(Some(&line.file))
            .line(Some(line.line))
            .build(),
    );
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
    use std::collections::VecDeque;

    use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _};

    use super::{
        super::log_record::tests::{first_loss_warning, level_at},
        *,
    };

    /// `records` through [`drain`]: (why it stopped, messages emitted, records left, unreadable).
    fn drain_all(
        records: Vec<Vec<u8>>,
        limit: usize,
        deadline: Option<Instant>,
    ) -> (Drained, Vec<String>, usize, u64) {
        let mut ring: VecDeque<Vec<u8>> = records.into();
        let unreadable = AtomicU64::new(0);
        let mut lines = Vec::new();
        let drained =
            drain(&mut ring, limit, deadline, &unreadable, &mut |line| lines.push(line.message.clone()));
        (drained, lines, ring.len(), unreadable.into_inner())
    }

    #[test]
    fn a_malformed_record_is_counted_and_the_lines_around_it_still_come() {
        let good = first_loss_warning();
        // A level byte outside aya-log's range: aya-log 0.3.0 reads it straight into its
        // enum, and a record its decoder refuses makes its flush() panic.
        let mut bad_level = good.clone();
        bad_level[level_at()] = 0;
        let truncated = good[..10].to_vec();
        let (drained, lines, left, unreadable) =
            drain_all(vec![good.clone(), bad_level, truncated, good], MAX_PER_DRAIN, None);
        assert_eq!(drained, Drained::Empty);
        assert_eq!(left, 0);
        assert_eq!(unreadable, 2, "each malformed record counts once");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|line| line.contains("first owner_table_full on this CPU")), "{lines:?}");
    }

    /// Records in memory behind an fd that never becomes readable (a pipe nobody writes
    /// to): only the drain at stop can take them.
    struct SilentRing {
        records: VecDeque<Vec<u8>>,
        fd: std::io::PipeReader,
        _writer: std::io::PipeWriter,
    }

    impl AsRawFd for SilentRing {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            self.fd.as_raw_fd()
        }
    }

    impl RecordSource for SilentRing {
        fn take_one(&mut self, consume: &mut dyn FnMut(&[u8])) -> bool {
            self.records.take_one(consume)
        }
    }

    #[tokio::test]
    async fn stopping_the_reader_drains_what_the_ring_still_holds() {
        let (fd, writer) = std::io::pipe().expect("a pipe");
        let records = vec![first_loss_warning(), first_loss_warning()[..10].to_vec(), first_loss_warning()];
        let ring = SilentRing { records: records.into(), fd, _writer: writer };
        // SAFETY: the pipe's fd lives in the SilentRing, which the AsyncFd owns.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.expect("epoll");
        let (stop, stopped) = oneshot::channel();
        let unreadable = Arc::new(AtomicU64::new(0));
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let emit = move |line: &LogLine| lines_tx.send(line.message.clone()).expect("the test listens");
        let task = tokio::spawn(read_lines(ring, stopped, Arc::clone(&unreadable), emit));
        tokio::task::yield_now().await;
        assert!(lines.try_recv().is_err(), "nothing is read before the stop: the fd is never ready");
        stop.send(()).expect("the reader waits");
        tokio::time::timeout(FINAL_DRAIN_TIME * 4, task).await.expect("the reader ends").expect("no panic");
        let mut drained = Vec::new();
        while let Ok(line) = lines.try_recv() {
            drained.push(line);
        }
        assert_eq!(drained.len(), 2, "{drained:?}");
        assert_eq!(unreadable.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_drain_stops_at_its_limit_and_at_its_deadline() {
        let five = || vec![first_loss_warning(); 5];
        let (drained, lines, left, _) = drain_all(five(), 2, None);
        assert_eq!((drained, lines.len(), left), (Drained::Limit, 2, 3));
        let (drained, lines, left, _) = drain_all(five(), MAX_PER_DRAIN, Some(Instant::now()));
        assert_eq!((drained, lines.len(), left), (Drained::Deadline, 0, 5));
        let later = Instant::now() + Duration::from_secs(60);
        let (drained, lines, left, _) = drain_all(five(), MAX_PER_DRAIN, Some(later));
        assert_eq!((drained, lines.len(), left), (Drained::Empty, 5, 0));
    }

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
