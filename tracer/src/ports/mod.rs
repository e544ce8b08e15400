//! `port_pressure`: ephemeral ports in use per destination of the traced processes'
//! network namespaces, against what connect() may choose from, before the first
//! EADDRNOTAVAIL.
//!
//! Nothing here runs in the kernel or on the event path: every [`PERIOD`] the run loop
//! asks the [`Sampler`] to dump the TCP sockets of each namespace a traced process is in
//! ([`sample`]), count the ports per destination the way connect() allocates them
//! ([`count`]), and make a record when a destination crosses 80 % ([`watch`]). The
//! busiest destinations become gauges in /metrics.

mod count;
mod sample;
mod watch;

use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Duration};

#[cfg(test)]
pub use self::count::Destination;
pub use self::count::Usage;
use self::watch::PressureWatch;
use crate::{enrich::EnrichError, pipeline::SystemView, record::PodIdentity};

/// How often the namespaces are sampled: a full TCP dump per namespace is cheap, but
/// not free on a node with many connections, and pressure builds over seconds.
pub const PERIOD: Duration = Duration::from_secs(5);

/// Namespaces sampled per round at the most; more are counted as unsampled.
pub const MAX_NAMESPACES: usize = 256;

/// Destinations exported as gauges per round at the most (the busiest).
pub const MAX_GAUGES: usize = 20;

/// A destination that crossed [`watch::ALERT_AT`] of its port space.
#[derive(Clone, Debug, PartialEq)]
pub struct PortPressure {
    pub time: jiff::Timestamp,
    pub usage: NamespaceUsage,
    pub low: u16,
    pub high: u16,
}

/// One destination's usage in one namespace, named for output.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceUsage {
    pub netns: u64,
    /// The traced process the namespace was entered through, and its name.
    pub pid: u32,
    pub comm: Option<String>,
    pub pod: Option<PodIdentity>,
    pub usage: Usage,
}

impl NamespaceUsage {
    fn named(system: &impl SystemView, netns: u64, pid: u32, usage: Usage) -> Self {
        Self { netns, pid, comm: system.process(pid).name, pod: system.pod(pid), usage }
    }
}

/// Why a namespace was not sampled in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unsampled {
    /// More than [`MAX_NAMESPACES`] namespaces held traced processes.
    TooManyNamespaces,
    /// The dump or the port settings could not be read (the process left meanwhile, or
    /// sockerr lacks a capability: see the debug log).
    SampleFailed,
}

impl Unsampled {
    pub const ALL: [Self; 2] = [Self::TooManyNamespaces, Self::SampleFailed];

    pub fn name(self) -> &'static str {
        match self {
            Self::TooManyNamespaces => "too_many_namespaces",
            Self::SampleFailed => "sample_failed",
        }
    }
}

/// What one round found.
#[derive(Debug, Default)]
pub struct Round {
    pub pressures: Vec<PortPressure>,
    /// The busiest destinations of all sampled namespaces, at most [`MAX_GAUGES`].
    pub busiest: Vec<NamespaceUsage>,
    pub unsampled: Vec<Unsampled>,
}

/// Runs `sampler` every [`PERIOD`] (the first round at once) and hands each round to the
/// run loop. Its own task, not the loop's tick: dumping a namespace with 200,000 sockets
/// takes a while, and the loop must keep draining the ring buffer meanwhile. (Moving it
/// here did not change the bench's busy-node losses, which have another cause.) A round
/// waits until the loop took the previous one.
pub async fn sample_every_period(
    mut sampler: Sampler,
    system: Arc<impl SystemView>,
    rounds: tokio::sync::mpsc::Sender<Round>,
) {
    let mut ticker = tokio::time::interval(PERIOD);
    loop {
        ticker.tick().await;
        let round = sampler.round(&*system).await;
        if rounds.send(round).await.is_err() {
            return;
        }
    }
}

/// Where the traced processes are found.
pub enum Processes {
    /// The pids the kernel filter selects (`--pid`, and those `--comm` learned).
    Selected(Box<dyn Fn() -> Vec<u32> + Send>),
    /// Every process of the node (`--cgroup`, `--all`, or no filter).
    Node,
}

/// One round every [`PERIOD`], on a task of its own ([`sample_every_period`]).
pub struct Sampler {
    proc_root: Arc<PathBuf>,
    processes: Processes,
    watch: PressureWatch,
}

impl Sampler {
    pub fn new(proc_root: PathBuf, processes: Processes) -> Self {
        Self { proc_root: Arc::new(proc_root), processes, watch: PressureWatch::default() }
    }

    async fn round(&mut self, system: &impl SystemView) -> Round {
        let pids = match &self.processes {
            Processes::Selected(pids) => pids(),
            Processes::Node => sample::every_process(&self.proc_root),
        };
        let namespaces = sample::namespaces(&self.proc_root, pids);
        // Alert state lives as long as the namespace holds a traced process, sampled this
        // round or not: a namespace skipped once must not alert again for the same crossing.
        let listed: BTreeSet<u64> = namespaces.keys().copied().collect();
        let mut round = Round::default();
        let skipped = namespaces.len().saturating_sub(MAX_NAMESPACES);
        round.unsampled.extend(std::iter::repeat_n(Unsampled::TooManyNamespaces, skipped));
        let targets: Vec<(u64, u32)> = namespaces.into_iter().take(MAX_NAMESPACES).collect();
        let proc_root = Arc::clone(&self.proc_root);
        let work = targets.clone();
        let samples = tokio::task::spawn_blocking(move || {
            work.iter().map(|&(_, pid)| sample::sample(&proc_root, pid)).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|_| {
            tracing::warn!("the port sampling thread panicked: no namespace sampled this round");
            Vec::new()
        });
        let time = jiff::Timestamp::now();
        let mut all = Vec::new();
        for (index, &(netns, pid)) in targets.iter().enumerate() {
            let sample = match samples.get(index) {
                Some(Ok(sample)) => sample,
                // The process left between the listing and the sample: its namespace is
                // sampled through another process next round, if it still has one.
                Some(Err(EnrichError::ProcessGone { .. })) => continue,
                Some(Err(err)) => {
                    tracing::debug!(pid, netns, %err, "ports not sampled");
                    round.unsampled.push(Unsampled::SampleFailed);
                    continue;
                }
                None => {
                    round.unsampled.push(Unsampled::SampleFailed);
                    continue;
                }
            };
            for crossed in self.watch.observe(netns, &sample.usages) {
                let (low, high) = (sample.space.low, sample.space.high);
                let usage = NamespaceUsage::named(system, netns, pid, crossed);
                round.pressures.push(PortPressure { time, usage, low, high });
            }
            all.extend(sample.usages.iter().take(MAX_GAUGES).map(|&usage| (netns, pid, usage)));
        }
        self.watch.retain_namespaces(&listed);
        all.sort_by(|a, b| b.2.ratio().total_cmp(&a.2.ratio()).then(b.2.in_use.cmp(&a.2.in_use)));
        round.busiest = all
            .into_iter()
            .take(MAX_GAUGES)
            .map(|(netns, pid, usage)| NamespaceUsage::named(system, netns, pid, usage))
            .collect();
        round
    }
}
