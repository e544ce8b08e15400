//! `sockerr trace`: load the programs, read events until told to stop, print records.
//!
//! The run loop here is shared: `trace` and `demo` give it the stdout sink, `daemon`
//! adds metrics and lets its HTTP handlers inspect the socket table. The system it reads
//! (/proc, namespaces, pods) is behind `live_system`.

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracer_common::Loss;

use crate::{
    capability::Capabilities,
    cli::{FilterArgs, TraceArgs},
    clock::{Clock, ClockError},
    drops::DropFold,
    enrich::{Enricher, FdRef},
    event::{KernelEvent, Payload},
    heap,
    k8s::Attributor,
    kernel::{
        drop_totals::DropMaps,
        loader::{self, LoadError, Loaded, Losses, LostCounter, Selection, skipped_since},
        reader::Reader,
    },
    listen,
    live_system::LiveSystem,
    output::{OutputOptions, StdoutSink},
    pipeline::{Inspect, Processor, SystemView},
    ports,
    sink::{Sink, Totals},
};

#[derive(Debug, Error)]
pub enum TraceError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Clock(#[from] ClockError),
    #[error("reading the ring buffer")]
    Reader(#[source] io::Error),
    #[error("installing the SIGINT/SIGTERM handlers")]
    Signals(#[source] io::Error),
    #[error("writing records to stdout")]
    Output(#[source] io::Error),
    #[error(transparent)]
    Kubernetes(#[from] crate::k8s::K8sError),
}

/// What a run saw, for the closing log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub failures: u64,
    pub lost: Losses,
    pub undecodable: u64,
}

/// A look at the processor's state (the socket table), run on the processing task
/// between two events: nothing else touches the processor, so nothing needs a lock.
pub type Inspection = Box<dyn FnOnce(&mut dyn Inspect) + Send>;

pub async fn run(args: TraceArgs) -> Result<Summary, TraceError> {
    let output = OutputOptions {
        format: args.output,
        fold: args.fold,
        errnos: args.filters.errnos.clone(),
        text_successes: args.filters.all,
    };
    let attributor = crate::k8s::attributor(&args.filters.attribution).await?;
    let tracer = Tracer::start(&Selection::from(&args.filters))?.with_attributor(attributor);
    let stop = stop_signal(args.duration)?;
    tracer.run_until(stop, &mut StdoutSink::new(&output), None).await
}

impl From<&FilterArgs> for Selection {
    fn from(filters: &FilterArgs) -> Self {
        Selection {
            pids: filters.pids.clone(),
            comms: filters.comms.clone(),
            cgroup: filters.cgroup.clone(),
            all: filters.all,
            http_peek: filters.http_peek,
            backend: filters.backend,
            no_drop_hooks: filters.no_drop_hooks,
            proc_root: filters.attribution.host_proc.clone(),
            tables: (&filters.tables).into(),
        }
    }
}

/// Resolves on SIGINT, SIGTERM, or after `duration`.
pub fn stop_signal(duration: Option<Duration>) -> Result<impl Future<Output = ()>, TraceError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(TraceError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(TraceError::Signals)?;
    Ok(async move {
        let timeout = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            () = timeout => tracing::info!("--duration elapsed: stopping"),
        }
    })
}

/// Programs loaded and attached, not yet read.
pub struct Tracer {
    loaded: Loaded,
    clock: Clock,
    /// Pod and container of each record's process; reads the selection's procfs.
    attributor: Attributor,
}

impl Tracer {
    /// Loads and attaches the programs; events are buffered in the kernel from here on.
    pub fn start(selection: &Selection) -> Result<Self, TraceError> {
        let clock = Clock::now()?;
        let loaded = loader::load(selection)?;
        tracing::info!("backend {}: {}", loaded.backend, loaded.backend_reason);
        // The end-to-end tests and `demo` wait for this line.
        tracing::info!(
            "tracing started: {} programs attached{}",
            loaded.attached,
            describe(selection, loaded.cgroup.as_ref().map(|c| c.id))
        );
        if let Some(line) = loaded.capabilities.switched_off_line() {
            tracing::info!("{line}");
        }
        Ok(Self { loaded, clock, attributor: Attributor::new(selection.proc_root.clone()) })
    }

    /// Which records this run can make (the daemon exports it).
    pub(crate) fn capabilities(&self) -> Capabilities {
        self.loaded.capabilities
    }

    /// Attribution beyond cgroup ids (`--kubernetes`): see [`crate::k8s::attributor`].
    pub fn with_attributor(mut self, attributor: Attributor) -> Self {
        self.attributor = attributor;
        self
    }

    /// Reads and processes events until `stop` resolves (then drains the ring once
    /// more); every record goes to `sink`. `inspections`, when given, are run between
    /// events for as long as their senders live.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()>,
        sink: &mut impl Sink,
        mut inspections: Option<mpsc::Receiver<Inspection>>,
    ) -> Result<Summary, TraceError> {
        let Tracer { loaded, clock, attributor } = self;
        let Loaded {
            events,
            lost,
            reset_reasons,
            backend,
            drops,
            selected,
            capabilities,
            kernel_log,
            socket_fds,
            ..
        } = loaded;
        let mut drops = drops.map(DropReader::new);
        let reader = Reader::new(events).map_err(TraceError::Reader)?;
        // Few batches in flight: a backlog waits in the ring, not here (see `reader::MAX_BATCH`).
        let (batches, mut incoming) = mpsc::channel::<Batch>(4);
        let (stop_reader, reader_stopped) = oneshot::channel();
        let reader_task = tokio::spawn(read_ring(reader, batches, reader_stopped));

        let enricher =
            Enricher::new(attributor.proc_root().to_path_buf()).with_known_holders(Box::new(move |inode| {
                socket_fds.holder(inode).map(|at| FdRef { pid: at.tgid, fd: at.fd })
            }));
        // Without the listen hooks no listener is ever named: no watch, so no
        // sockerr_listen_unwatched series of zeros either.
        let mut listeners = capabilities
            .listen_overflow
            .is_none()
            .then(|| listen::Watcher::new(attributor.proc_root().to_path_buf()));
        let processes = match selected {
            Some(selected) => ports::Processes::Selected(Box::new(move || selected.read())),
            None => ports::Processes::Node,
        };
        let sampler = ports::Sampler::new(attributor.proc_root().to_path_buf(), processes);
        let system = Arc::new(LiveSystem::new(enricher, attributor));
        let (rounds_tx, mut rounds) = mpsc::channel::<ports::Round>(1);
        let port_task = tokio::spawn(ports::sample_every_period(sampler, Arc::clone(&system), rounds_tx));
        let heap_task = tokio::spawn(heap::release_every(heap::RELEASE_PERIOD));
        let mut processor = Processor::new(Arc::clone(&system), clock);
        processor.set_reset_reasons(reset_reasons);
        processor.set_backend(backend);
        let mut totals = Totals::default();
        let mut failures = 0;
        let mut losses = LossWatch::new(lost);
        let mut stop = pin!(stop);
        let mut stop_reader = Some(stop_reader);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let output = TraceError::Output;

        loop {
            let deadline = sink.deadline();
            tokio::select! {
                batch = incoming.recv() => {
                    let Some(batch) = batch else { break };
                    for event in &batch.events {
                        totals.events += 1;
                        if let Payload::Listening(listening) = &event.payload {
                            if let Some(listeners) = listeners.as_mut() {
                                let pid = event.header.pid;
                                let process = system.process(pid);
                                listeners.listening(&event.header, listening, process.name, process.netns, system.pod(pid));
                            }
                            continue;
                        }
                        if let Some(record) = processor.process(event).await {
                            failures += u64::from(record.event.is_failure());
                            sink.record(&record).map_err(output)?;
                        }
                    }
                    totals.undecodable = batch.undecodable;
                    totals.table_forgotten = processor.table().forgotten();
                    sink.progress(&totals).map_err(output)?;
                }
                () = sleep_until(deadline) => sink.flush_due(Instant::now()).map_err(output)?,
                () = &mut stop, if stop_reader.is_some() => {
                    if let Some(tx) = stop_reader.take() {
                        let _ = tx.send(());
                    }
                }
                inspection = next_inspection(&mut inspections) => match inspection {
                    Some(inspect) => inspect(&mut processor),
                    // Nobody can ask any more (the HTTP server is gone): stop listening.
                    None => inspections = None,
                },
                _ = ticker.tick() => {
                    (totals.lost, totals.loss_read_errors) = losses.check(false);
                    totals.kernel_log_unreadable = kernel_log.unreadable();
                    sink.progress(&totals).map_err(output)?;
                    processor.prune();
                    sample_listeners(&mut listeners, sink).await.map_err(output)?;
                    if let Some(drops) = drops.as_mut() {
                        drops.sample(&system, sink).map_err(output)?;
                    }
                }
                Some(round) = rounds.recv() => sink.port_round(&round).map_err(output)?,
            }
        }
        port_task.abort();
        heap_task.abort();
        // Drops since the last tick, while the listeners may still be there.
        sample_listeners(&mut listeners, sink).await.map_err(output)?;
        if let Some(drops) = drops.as_mut() {
            drops.sample(&system, sink).map_err(output)?;
        }
        totals.undecodable =
            reader_task.await.unwrap_or(Ok(totals.undecodable)).map_err(TraceError::Reader)?;
        // The programs' last log lines, like the event ring's last records above.
        totals.kernel_log_unreadable = kernel_log.stop().await;
        (totals.lost, totals.loss_read_errors) = losses.check(true);
        sink.finish(&totals).map_err(output)?;
        let summary =
            Summary { events: totals.events, failures, lost: totals.lost, undecodable: totals.undecodable };
        let unreadable = match totals.loss_read_errors {
            0 => String::new(),
            n => format!(" (at least: {n} reads of the loss counter failed)"),
        };
        let forgotten = totals.table_forgotten;
        let kernel_log_unreadable = match totals.kernel_log_unreadable {
            0 => String::new(),
            n => format!(", {n} kernel log records unreadable"),
        };
        tracing::info!(
            "stopped: {} events, {} failures, {} lost in the kernel{}{unreadable}, {} undecodable, \
             {} sockets and {} generations forgotten by the full socket table{kernel_log_unreadable}",
            summary.events,
            summary.failures,
            summary.lost.total(),
            loss_breakdown(&summary.lost),
            summary.undecodable,
            forgotten.sockets,
            forgotten.generations
        );
        Ok(summary)
    }
}

/// Hands the listeners' new drops to the sink (see `listen`).
async fn sample_listeners(listeners: &mut Option<listen::Watcher>, sink: &mut impl Sink) -> io::Result<()> {
    let Some(listeners) = listeners else { return Ok(()) };
    for overflow in listeners.sample().await {
        sink.listen_overflow(&overflow)?;
    }
    sink.listen_watch(listeners.watch());
    Ok(())
}

/// The kernel's per-socket drop totals, read once a second (see `drops`).
struct DropReader {
    maps: DropMaps,
    fold: DropFold,
    last: Instant,
}

impl DropReader {
    fn new(maps: DropMaps) -> Self {
        Self { maps, fold: DropFold::new(), last: Instant::now() }
    }

    fn sample(&mut self, system: &LiveSystem, sink: &mut impl Sink) -> io::Result<()> {
        let now = Instant::now();
        let interval = now.saturating_duration_since(self.last);
        self.last = now;
        let totals = self.maps.read();
        let (drops, stale) =
            self.fold.observe(&totals, self.maps.reasons(), now, jiff::Timestamp::now(), interval);
        self.maps.remove(&stale);
        for mut drop in drops {
            drop.pod = system.pod(drop.pid);
            sink.socket_drop(&drop)?;
        }
        Ok(())
    }
}

/// What one drain of the ring buffer gave.
struct Batch {
    events: Vec<KernelEvent>,
    /// Undecodable records since the start (a running total).
    undecodable: u64,
}

/// Forwards ring-buffer batches until told to stop, then drains once more.
async fn read_ring(
    mut reader: Reader,
    batches: mpsc::Sender<Batch>,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<u64> {
    loop {
        let mut events = Vec::new();
        let undecodable_before = reader.decode_errors();
        let stopping = tokio::select! {
            result = reader.next_batch(&mut events) => { result?; false }
            _ = &mut stop => { reader.drain_now(&mut events); true }
        };
        let undecodable = reader.decode_errors();
        let news = !events.is_empty() || undecodable != undecodable_before;
        if news && batches.send(Batch { events, undecodable }).await.is_err() {
            break;
        }
        if stopping {
            break;
        }
    }
    Ok(reader.decode_errors())
}

async fn next_inspection(inspections: &mut Option<mpsc::Receiver<Inspection>>) -> Option<Inspection> {
    match inspections {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn describe(selection: &Selection, cgroup_id: Option<u64>) -> String {
    let mut parts = Vec::new();
    if !selection.pids.is_empty() {
        parts.push(format!("pid {:?}", selection.pids));
    }
    if !selection.comms.is_empty() {
        parts.push(format!("comm {:?}", selection.comms));
    }
    if let (Some(path), Some(id)) = (&selection.cgroup, cgroup_id) {
        parts.push(format!("cgroup {} (id {id})", path.display()));
    }
    if parts.is_empty() { " (all processes)".into() } else { format!(" ({})", parts.join(", ")) }
}

/// ` (reason=n, ...)` of the reasons that counted anything; empty when none did.
fn loss_breakdown(losses: &Losses) -> String {
    let counted: Vec<String> = losses
        .by_reason()
        .filter(|&(_, count)| count > 0)
        .map(|(reason, count)| format!("{}={count}", reason.name()))
        .collect();
    if counted.is_empty() { String::new() } else { format!(" ({})", counted.join(", ")) }
}

/// What each loss reason means for the user, for the warning.
fn loss_consequence(reason: Loss) -> &'static str {
    match reason {
        Loss::RingFull => "records dropped: the ring buffer was full (sockerr fell behind)",
        Loss::AsyncHalfOverwritten => {
            "asynchronous connect failures dropped: another failure on the same CPU replaced the first half"
        }
        Loss::AsyncHalfTooOld => {
            "asynchronous connect failures dropped: their two kernel events came too far apart"
        }
        Loss::UserReadFault => {
            "syscall arguments unreadable (user memory fault): calls not reported, or option values shown as ?"
        }
        Loss::FilterMapFull => {
            "--comm processes not learned (pid filter map full): renamed threads not followed; raise \
             --filter-table-entries"
        }
        Loss::OwnerTableFull => {
            "socket owners not recorded (owner or listener table full): their resets, late connect failures \
             and drops not reported; raise --owner-table-entries or --listener-table-entries"
        }
        Loss::DropTableFull => {
            "packet drops of traced sockets not added up (drop table full): socket_drop counts short; raise \
             --drop-table-entries"
        }
        Loss::OptionsEvicted => {
            "socket options evicted (options table full): those sockets' failures come out without their \
             options; raise --options-table-entries"
        }
        Loss::TaskStorageUnavailable => {
            "traced bind(), setsockopt() and close() calls not followed (the kernel refused task-local \
             storage, e.g. under memory pressure): their failures, recorded options or the owner of a reset \
             sent inside close() are missing"
        }
        Loss::ProgramSkipped => {
            "hooks fired but the kernel did not run sockerr's program (another BPF program was running on \
             that CPU): whatever those runs would have seen is missing"
        }
    }
}

/// Warns when the kernel side dropped or degraded data since the last check.
struct LossWatch {
    counter: LostCounter,
    reported: Losses,
    /// Skipped runs by program as of `reported`, to name the programs of a new count.
    reported_skips: BTreeMap<String, u64>,
    read_errors: u64,
}

impl LossWatch {
    fn new(counter: LostCounter) -> Self {
        Self { counter, reported: Losses::default(), reported_skips: BTreeMap::new(), read_errors: 0 }
    }

    /// (losses so far by reason, failed reads of the counter so far). A failed read
    /// keeps the last totals read: they are a lower bound, and say so in the log and
    /// metrics (the daemon keeps tracing; stopping would lose more than it saves).
    fn check(&mut self, last_reading: bool) -> (Losses, u64) {
        match self.counter.read(last_reading) {
            Ok(now) => {
                for (reason, count) in now.by_reason() {
                    let before = self.reported.of(reason);
                    if count <= before {
                        continue;
                    }
                    let (grown, name, consequence) =
                        (count - before, reason.name(), loss_consequence(reason));
                    if reason == Loss::ProgramSkipped {
                        let programs = skipped_since(&self.reported_skips, self.counter.skipped_runs());
                        tracing::warn!("{grown} {name}: {consequence} (runs skipped: {programs})");
                    } else {
                        tracing::warn!("{grown} {name}: {consequence}");
                    }
                }
                self.reported = now;
                self.reported_skips.clone_from(self.counter.skipped_runs());
            }
            Err(err) => {
                self.read_errors += 1;
                // Once, then every 60th failure: the cause does not change between ticks.
                if self.read_errors % 60 == 1 {
                    tracing::error!(
                        "cannot read the kernel's loss counters ({err}): sockerr_events_lost_total stays at \
                         {} and may be short; {} failed reads so far (sockerr_loss_counter_read_errors_total)",
                        self.reported.total(),
                        self.read_errors
                    );
                }
            }
        }
        (self.reported, self.read_errors)
    }
}
