//! `sockerr trace`: load the programs, read events until told to stop, print records.

use std::{
    future::Future,
    io::{self, Write},
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::{
    cli::{OutputFormat, TraceArgs},
    clock::{Clock, ClockError},
    enrich::{Enricher, Findings, Query},
    event::KernelEvent,
    k8s::Attributor,
    kernel::{
        loader::{self, LoadError, Loaded, LostCounter, Selection},
        reader::Reader,
    },
    output::{Folder, Renderer},
    pipeline::{ProcessInfo, Processor, SystemView},
    record::{PodIdentity, Record},
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

/// How `trace` prints.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    pub format: OutputFormat,
    pub fold: Duration,
    /// Print only failures with one of these errnos (empty: everything).
    pub errnos: Vec<i32>,
    /// Text prints failures only unless this is set; JSON prints every record.
    pub text_successes: bool,
}

/// What a run saw, for the closing log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub failures: u64,
    pub lost: u64,
    pub undecodable: u64,
}

pub async fn run(args: TraceArgs) -> Result<Summary, TraceError> {
    let selection = Selection {
        pids: args.pids.clone(),
        comms: args.comms.clone(),
        cgroup: args.cgroup.clone(),
        all: args.all,
        proc_root: args.attribution.host_proc.clone(),
    };
    let output = OutputOptions {
        format: args.output,
        fold: args.fold,
        errnos: args.errnos.clone(),
        text_successes: args.all,
    };
    let attributor = crate::k8s::attributor(&args.attribution).await?;
    let tracer = Tracer::start(&selection, output)?.with_attributor(attributor);
    let stop = stop_signal(args.duration)?;
    tracer.run_until(stop).await
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
    output: OutputOptions,
    clock: Clock,
    /// Pod and container of each record's process; reads the selection's procfs.
    attributor: Attributor,
}

impl Tracer {
    /// Loads and attaches the programs; events are buffered in the kernel from here on.
    pub fn start(selection: &Selection, output: OutputOptions) -> Result<Self, TraceError> {
        let clock = Clock::now()?;
        let loaded = loader::load(selection)?;
        // The end-to-end tests and `demo` wait for this line.
        tracing::info!(
            "tracing started: {} programs attached{}",
            loaded.attached,
            describe(selection, loaded.cgroup.as_ref().map(|c| c.id))
        );
        Ok(Self { loaded, output, clock, attributor: Attributor::new(selection.proc_root.clone()) })
    }

    /// Attribution beyond cgroup ids (`--kubernetes`): see [`crate::k8s::attributor`].
    pub fn with_attributor(mut self, attributor: Attributor) -> Self {
        self.attributor = attributor;
        self
    }

    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<Summary, TraceError> {
        let Tracer { loaded, output, clock, attributor } = self;
        let Loaded { events, lost, .. } = loaded;
        let reader = Reader::new(events).map_err(TraceError::Reader)?;
        let (batches, mut incoming) = mpsc::channel::<Vec<KernelEvent>>(256);
        let (stop_reader, reader_stopped) = oneshot::channel();
        let reader_task = tokio::spawn(read_ring(reader, batches, reader_stopped));

        let enricher = Enricher::new(attributor.proc_root().to_path_buf());
        let system = Arc::new(LiveSystem { enricher, pods: attributor });
        let mut processor = Processor::new(system, clock);
        let mut sink = Sink::new(&output);
        let mut summary = Summary::default();
        let mut losses = LossWatch::new(lost);
        let mut stop = pin!(stop);
        let mut stop_reader = Some(stop_reader);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));

        loop {
            let deadline = sink.deadline();
            tokio::select! {
                batch = incoming.recv() => {
                    let Some(batch) = batch else { break };
                    for event in &batch {
                        summary.events += 1;
                        if let Some(record) = processor.process(event).await {
                            summary.failures += u64::from(record.event.is_failure());
                            sink.accept(record)?;
                        }
                    }
                    sink.flush()?;
                }
                () = sleep_until(deadline) => sink.flush_due()?,
                () = &mut stop, if stop_reader.is_some() => {
                    if let Some(tx) = stop_reader.take() {
                        let _ = tx.send(());
                    }
                }
                _ = ticker.tick() => {
                    losses.check();
                    processor.prune();
                }
            }
        }
        summary.undecodable = reader_task.await.unwrap_or(Ok(0)).map_err(TraceError::Reader)?;
        summary.lost = losses.check();
        sink.finish()?;
        tracing::info!(
            "stopped: {} events, {} failures, {} lost in the kernel, {} undecodable",
            summary.events,
            summary.failures,
            summary.lost,
            summary.undecodable
        );
        Ok(summary)
    }
}

/// Forwards ring-buffer batches until told to stop, then drains once more.
async fn read_ring(
    mut reader: Reader,
    batches: mpsc::Sender<Vec<KernelEvent>>,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<u64> {
    loop {
        let mut batch = Vec::new();
        let stopping = tokio::select! {
            result = reader.next_batch(&mut batch) => { result?; false }
            _ = &mut stop => { reader.drain_now(&mut batch); true }
        };
        if !batch.is_empty() && batches.send(batch).await.is_err() {
            break;
        }
        if stopping {
            break;
        }
    }
    Ok(reader.decode_errors())
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

/// Warns when the kernel side dropped records since the last check.
struct LossWatch {
    counter: LostCounter,
    reported: u64,
}

impl LossWatch {
    fn new(counter: LostCounter) -> Self {
        Self { counter, reported: 0 }
    }

    fn check(&mut self) -> u64 {
        let total = self.counter.total();
        if total > self.reported {
            tracing::warn!(
                "{} events lost: the ring buffer was full (sockerr fell behind)",
                total - self.reported
            );
            self.reported = total;
        }
        total
    }
}

/// Records to stdout: rendered, filtered by errno, folded for text.
struct Sink {
    renderer: Renderer,
    folder: Folder,
    errnos: Vec<i32>,
    failures_only: bool,
    out: io::BufWriter<io::Stdout>,
}

impl Sink {
    fn new(options: &OutputOptions) -> Self {
        let renderer = match options.format {
            OutputFormat::Json => Renderer::Json,
            OutputFormat::Text => Renderer::text(options.fold),
        };
        let folder = renderer.folder();
        // A person reads text: one line per failure. Programs get every event as JSON.
        let failures_only = options.format == OutputFormat::Text && !options.text_successes;
        Self {
            renderer,
            folder,
            errnos: options.errnos.clone(),
            failures_only,
            out: io::BufWriter::new(io::stdout()),
        }
    }

    fn accept(&mut self, record: Record) -> Result<(), TraceError> {
        if !self.wanted(&record) {
            return Ok(());
        }
        let ready = self.folder.push(record, Instant::now());
        self.write_all(&ready)
    }

    fn wanted(&self, record: &Record) -> bool {
        if !self.errnos.is_empty() {
            return record.errno.is_some_and(|e| self.errnos.contains(&e));
        }
        !self.failures_only || record.errno.is_some()
    }

    fn deadline(&self) -> Option<Instant> {
        self.folder.next_deadline()
    }

    fn flush_due(&mut self) -> Result<(), TraceError> {
        let due = self.folder.flush_due(Instant::now());
        self.write_all(&due)?;
        self.flush()
    }

    fn finish(&mut self) -> Result<(), TraceError> {
        let rest = self.folder.flush_all();
        self.write_all(&rest)?;
        self.flush()
    }

    fn write_all(&mut self, records: &[Record]) -> Result<(), TraceError> {
        for record in records {
            writeln!(self.out, "{}", self.renderer.render(record)).map_err(TraceError::Output)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(TraceError::Output)
    }
}

/// The running system, seen through /proc and the network namespaces of processes.
struct LiveSystem {
    enricher: Enricher,
    pods: Attributor,
}

impl SystemView for LiveSystem {
    fn process(&self, pid: u32) -> ProcessInfo {
        ProcessInfo { name: self.enricher.process_name(pid), netns: self.enricher.netns_inode(pid).ok() }
    }

    fn lookup(&self, pid: u32, query: &Query) -> Result<Findings, String> {
        self.enricher.lookup(pid, query).map_err(|err| error_chain(&err))
    }

    fn is_alive(&self, pid: u32) -> bool {
        self.enricher.proc_root().join(pid.to_string()).exists()
    }

    fn pod(&self, pid: u32) -> Option<PodIdentity> {
        self.pods.identify(pid)
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
