//! target/bench/results.json: every figure of the last run of each part of the bench (the
//! micro-loops, throughput, the busy node, the soak), read back and rewritten by each run,
//! so that BENCHMARKS.md is always written whole from it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{
    busy::BusyNode,
    machine::Machine,
    profile::ProgramCost,
    soak::Soak,
    stats::Estimate,
    throughput::{Startup, Throughput},
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub machine: Option<Machine>,
    pub plan: Option<PlanFacts>,
    pub micro_loops: Option<MicroLoops>,
    pub startup: Option<Startup>,
    pub throughput: Option<Throughput>,
    #[serde(default)]
    pub program_costs: Vec<ProgramCost>,
    pub busy_node: Option<BusyNode>,
    /// Why the busy-node run failed, when it did (the other parts are still written).
    #[serde(default)]
    pub busy_node_error: Option<String>,
    pub soak: Option<Soak>,
    /// Computed from the sections above (targets::evaluate) whenever one changes.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Wall time of the last `cargo xtask bench` (without --soak).
    pub duration_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanFacts {
    pub rounds: u32,
    pub batches: u32,
    pub batch_ms: u32,
    pub quick: bool,
}

/// The micro-loops: samples, and what each traced configuration recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MicroLoops {
    pub cells: Vec<Cell>,
    pub slots: Vec<Slot>,
    /// What each configuration attached, from its first slot.
    pub hooks: BTreeMap<String, Hooks>,
    /// The backend sockerr reported (`backend ...:` in its log).
    pub backend: Option<String>,
}

/// Samples of one loop under one configuration: per round, ns per iteration of each batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub config: String,
    #[serde(rename = "loop")]
    pub loop_name: String,
    pub rounds_ns_per_iteration: Vec<Vec<f64>>,
}

/// One configuration in one round: where its records went and how many it made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Slot {
    pub config: String,
    pub round: u32,
    pub loop_pid: u32,
    /// Where the tracer's records went ("-" for none).
    pub output: String,
    /// Failing loop -> (records of its failures from the loop process, its iterations).
    pub failures: BTreeMap<String, Recorded>,
    /// Records of the loop process under a configuration that excludes it (must be 0).
    pub excluded_records: Option<u64>,
    /// Records of the canary process the excluding filter selects (must be > 0).
    pub canary_records: Option<u64>,
    /// Events the tracer said it lost; None where it does not say (or said it unreadably).
    pub lost: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub records: u64,
    pub iterations: u64,
}

/// What one configuration attached: its own count and the kinds of its BPF programs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hooks {
    /// `tracing started: N programs attached` / bpftrace's `Attaching N probes`.
    pub attached: Option<u64>,
    /// BPF program type -> programs of the tracer's process, from bpftool.
    pub program_types: BTreeMap<String, u64>,
    /// The names of those programs (bpftool's `name`); empty in the results of a bench
    /// that did not record them.
    #[serde(default)]
    pub programs: BTreeSet<String>,
}

impl MicroLoops {
    /// Every sample of `loop_name` under `config`, all rounds.
    pub fn all(&self, config: &str, loop_name: &str) -> Vec<f64> {
        self.cells
            .iter()
            .filter(|cell| cell.config == config && cell.loop_name == loop_name)
            .flat_map(|cell| cell.rounds_ns_per_iteration.iter().flatten().copied())
            .collect()
    }

    pub fn push(&mut self, config: &str, loop_name: &str, round: Vec<f64>) {
        match self.cells.iter_mut().find(|cell| cell.config == config && cell.loop_name == loop_name) {
            Some(cell) => cell.rounds_ns_per_iteration.push(round),
            None => self.cells.push(Cell {
                config: config.to_owned(),
                loop_name: loop_name.to_owned(),
                rounds_ns_per_iteration: vec![round],
            }),
        }
    }
}

/// The previous results, if any: a run of one part keeps the others' figures. A file an
/// older bench wrote (another shape) is set aside with a message, not silently merged.
pub fn load(path: &Path) -> Results {
    let Ok(text) = fs::read_to_string(path) else { return Results::default() };
    match serde_json::from_str(&text) {
        Ok(results) => results,
        Err(err) => {
            eprintln!(
                "bench: {} is from an older bench ({err}): its figures are not carried over",
                path.display()
            );
            Results::default()
        }
    }
}

pub fn save(path: &Path, results: &Results) -> Result<()> {
    fs::write(path, serde_json::to_string_pretty(results)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    AtMost,
    Below,
    AtLeast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A ratio of added costs.
    Times,
    Percent,
    Count,
    MiB,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub what: String,
    pub comparison: Comparison,
    pub limit: f64,
    pub unit: Unit,
    pub measured: Option<f64>,
    /// What the measurement may be, given the spreads of the medians it comes from
    /// (`stats::Estimate`): the verdict holds only when all of it is on one side of the
    /// limit. `None`: an exact figure (a count, a size).
    #[serde(default)]
    pub range: Option<(f64, f64)>,
    /// Why there is no measurement.
    pub unmeasured: Option<String>,
    /// `None`: not measured, or the range straddles the limit.
    pub met: Option<bool>,
}

impl Target {
    pub(super) fn new(
        what: String,
        comparison: Comparison,
        limit: f64,
        unit: Unit,
        measured: Result<f64, String>,
    ) -> Self {
        Self::estimated(what, comparison, limit, unit, measured.map(Estimate::exact))
    }

    /// A target whose measurement carries the noise of its medians.
    pub(super) fn estimated(
        what: String,
        comparison: Comparison,
        limit: f64,
        unit: Unit,
        measured: Result<Estimate, String>,
    ) -> Self {
        let (estimate, unmeasured) = match measured {
            Ok(estimate) => (Some(estimate), None),
            Err(why) => (None, Some(why)),
        };
        let holds = |m: f64| match comparison {
            Comparison::AtMost => m <= limit,
            Comparison::Below => m < limit,
            Comparison::AtLeast => m >= limit,
        };
        // Met only if the whole range is, not met only if none of it is.
        let met = estimate.and_then(|e| match (holds(e.low), holds(e.high)) {
            (true, true) => Some(true),
            (false, false) => Some(false),
            _ => None,
        });
        Target {
            what,
            comparison,
            limit,
            unit,
            measured: estimate.map(|e| e.value),
            range: estimate.filter(|e| e.low != e.high).map(|e| (e.low, e.high)),
            unmeasured,
            met,
        }
    }

    pub fn verdict(&self) -> String {
        match (self.met, &self.unmeasured, self.range) {
            (Some(true), _, _) => "met".into(),
            (Some(false), _, _) => "**not met**".into(),
            (None, Some(why), _) => format!("not measured: {why}"),
            (None, None, Some((low, high))) => format!(
                "within noise: the spreads allow {} to {}, on both sides of the limit",
                Self::format_value(self.unit, low),
                Self::format_value(self.unit, high)
            ),
            (None, None, None) => "not measured".into(),
        }
    }

    pub fn format_value(unit: Unit, value: f64) -> String {
        match unit {
            Unit::Times => format!("{value:.2}×"),
            Unit::Percent => format!("{value:.1} %"),
            Unit::Count => format!("{value:.0}"),
            Unit::MiB => format!("{value:.1} MiB"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_collect_rounds_per_configuration_and_loop() {
        let mut loops = MicroLoops::default();
        loops.push("daemon", "bind", vec![1.0, 2.0]);
        loops.push("daemon", "bind", vec![3.0]);
        loops.push("floor", "bind", vec![9.0]);
        assert_eq!(loops.all("daemon", "bind"), [1.0, 2.0, 3.0]);
        assert_eq!(loops.all("floor", "bind"), [9.0]);
        assert!(loops.all("floor", "so-mark").is_empty());
    }

    #[test]
    fn results_survive_a_round_trip_and_old_files_are_set_aside() {
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.json");
        let mut results = Results { duration_secs: Some(12.5), ..Results::default() };
        results.micro_loops = Some(MicroLoops::default());
        save(&path, &results).unwrap();
        let back = load(&path);
        assert_eq!(back.duration_secs, Some(12.5));
        assert!(back.micro_loops.is_some());
        fs::write(&path, r#"{"micro_loops": {"cells": 3}}"#).unwrap();
        assert!(load(&path).micro_loops.is_none());
        assert!(load(&dir.join("absent.json")).soak.is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
