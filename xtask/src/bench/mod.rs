//! `cargo xtask bench`: what sockerr costs against no tracing, the floor (the same
//! tracepoints with programs that return at once), bpftrace and strace; throughput
//! without loss; start-up; and with `--soak`, a million failures under `sockerr daemon`.
//! Writes BENCHMARKS.md and target/bench/results.json. Never part of `cargo xtask test`.

pub mod daemon;
mod machine;
mod profile;
mod report;
mod soak;
mod stats;
mod throughput;
pub mod tracers;

use std::{collections::BTreeMap, fs, path::Path, time::Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use tracers::{Config, Running};

use crate::{
    build::{Profile, build_sockerr},
    paths::{target_dir, workspace_root},
    privileges::is_root,
    process::describe,
    setup, setup_report,
    system_packages::{self, BENCH_COMMANDS},
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A short run (a few minutes): fewer rounds and samples, a shorter throughput search.
    #[arg(long)]
    pub quick: bool,
    /// Run only the soak: 1,000,000 failing connects under `sockerr daemon`.
    #[arg(long)]
    pub soak: bool,
    /// Failing connects of the soak.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub soak_count: u64,
}

/// The micro-loops (`sockerr scenario bench-loop --loop`), in table order.
pub const LOOPS: &[&str] = &["refused-connect", "addr-not-avail", "bind", "so-mark", "so-keepalive"];
/// The refused connect of a process `--comm` excludes: its row in the table.
pub const EXCLUDED_LOOP: &str = "excluded-connect";

/// How much of everything one run measures.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rounds: u32,
    pub batches: u32,
    pub batch_ms: u32,
    /// Seconds per rate of the throughput search.
    pub rate_secs: u32,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan { rounds: 3, batches: 3, batch_ms: 25, rate_secs: 2 }
        } else {
            Plan { rounds: 8, batches: 5, batch_ms: 40, rate_secs: 4 }
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if !is_root()? {
        bail!(
            "the benchmark loads eBPF programs and creates network namespaces: run `sudo -E cargo xtask bench`"
        );
    }
    setup::ensure()?;
    system_packages::ensure_commands(BENCH_COMMANDS, &mut setup_report::Report::default())?;
    let sockerr = build_sockerr(Profile::Release)?;
    let scratch = tracers::scratch_dir(&target_dir());
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    if args.soak {
        return soak::run(&sockerr, &scratch, args.soak_count);
    }
    let plan = Plan::new(args.quick);
    let started = Instant::now();
    let machine = machine::describe()?;
    eprintln!("bench: micro-loops, {} rounds of {} configurations", plan.rounds, Config::ALL.len());
    let samples = micro_loops(&sockerr, &scratch, &plan)?;
    eprintln!("bench: start-up and throughput");
    let startup = throughput::startup(&sockerr)?;
    let throughput = throughput::search(&sockerr, &scratch, &plan)?;
    eprintln!("bench: per-program cost (BPF run-time statistics)");
    let profile = profile::run(&sockerr, &scratch, &plan)?;
    let results = json!({
        "machine": machine.to_json(),
        "plan": { "rounds": plan.rounds, "batches": plan.batches, "batch_ms": plan.batch_ms, "quick": args.quick },
        "micro_loops": samples.to_json(),
        "startup": startup.to_json(),
        "throughput": throughput.to_json(),
        "program_costs": profile.iter().map(profile::ProgramCost::to_json).collect::<Vec<_>>(),
        "duration_secs": started.elapsed().as_secs_f64(),
    });
    let json_path = scratch.join("results.json");
    fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let markdown = report::render(&machine, &plan, args.quick, &samples, &startup, &throughput)
        + &profile::render(&profile);
    let md_path = workspace_root().join("BENCHMARKS.md");
    fs::write(&md_path, markdown).with_context(|| format!("writing {}", md_path.display()))?;
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        md_path.display(),
        json_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Raw samples: (configuration, loop) -> per-round lists of ns/iteration.
#[derive(Debug, Default)]
pub struct Samples {
    pub by_cell: BTreeMap<(String, String), Vec<Vec<f64>>>,
    /// Kernel-side losses sockerr reported on stopping, per configuration.
    pub lost: BTreeMap<String, u64>,
}

impl Samples {
    pub fn all(&self, config: Config, loop_name: &str) -> Vec<f64> {
        self.by_cell
            .get(&(config.name().to_owned(), loop_name.to_owned()))
            .map(|rounds| rounds.iter().flatten().copied().collect())
            .unwrap_or_default()
    }

    fn to_json(&self) -> Value {
        let cells: Vec<Value> = self
            .by_cell
            .iter()
            .map(|((config, loop_name), rounds)| json!({ "config": config, "loop": loop_name, "rounds_ns_per_iteration": rounds }))
            .collect();
        json!({ "cells": cells, "lost_by_config": self.lost })
    }
}

fn micro_loops(sockerr: &Path, scratch: &Path, plan: &Plan) -> Result<Samples> {
    let mut samples = Samples::default();
    let configs = Config::ALL;
    for round in 0..plan.rounds {
        // Rotated each round, so that no configuration always follows the same one.
        for offset in 0..configs.len() {
            let config = configs[(offset + round as usize) % configs.len()];
            let started = Instant::now();
            let mut tracer = Running::start(config, sockerr, scratch)?;
            let loops: &[&str] = if config.excluded() { &["refused-connect"] } else { LOOPS };
            let mut command = tracers::loop_command(config, sockerr, loops, plan.batches, plan.batch_ms);
            let output =
                command.output().with_context(|| format!("could not start `{}`", describe(&command)))?;
            let log = tracer.as_mut().map(|t| t.stop()).unwrap_or_default();
            if !output.status.success() {
                bail!("`{}` failed: {}", describe(&command), String::from_utf8_lossy(&output.stderr));
            }
            let report: Value = serde_json::from_slice(&output.stdout)
                .with_context(|| format!("`{}` printed no JSON report", describe(&command)))?;
            record(&mut samples, config, &report)?;
            if let Some(lost) = log.iter().rev().find_map(|line| stopped_lost(line)) {
                *samples.lost.entry(config.name().to_owned()).or_default() += lost;
            }
            eprintln!(
                "bench: round {}/{} {:<22} {:.1} s",
                round + 1,
                plan.rounds,
                config.name(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(samples)
}

fn record(samples: &mut Samples, config: Config, report: &Value) -> Result<()> {
    let loops = report["loops"].as_array().context("bench-loop report without loops")?;
    for entry in loops {
        let name = entry["loop"].as_str().context("loop without a name")?;
        let name = if config.excluded() { EXCLUDED_LOOP } else { name };
        let values: Vec<f64> = entry["ns_per_iteration"]
            .as_array()
            .context("loop without samples")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        samples.by_cell.entry((config.name().to_owned(), name.to_owned())).or_default().push(values);
    }
    Ok(())
}

/// `N lost in the kernel` from sockerr's `stopped:` line.
fn stopped_lost(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("stopped:")?;
    let before = rest.split(" lost in the kernel").next()?;
    before.rsplit(", ").next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_count_comes_from_the_stopped_line() {
        let line =
            "2026-11-23T20:44:59Z  INFO stopped: 10 events, 4 failures, 3 lost in the kernel, 0 undecodable";
        assert_eq!(stopped_lost(line), Some(3));
        assert_eq!(stopped_lost("INFO tracing started: 19 programs attached"), None);
    }

    #[test]
    fn excluded_configurations_fill_their_own_row() {
        let mut samples = Samples::default();
        let report = json!({ "loops": [{ "loop": "refused-connect", "ns_per_iteration": [1.0, 2.0] }] });
        record(&mut samples, Config::TraceExcluded, &report).unwrap();
        record(&mut samples, Config::Untraced, &report).unwrap();
        assert_eq!(samples.all(Config::TraceExcluded, EXCLUDED_LOOP), [1.0, 2.0]);
        assert_eq!(samples.all(Config::Untraced, "refused-connect"), [1.0, 2.0]);
        assert!(samples.all(Config::TraceExcluded, "refused-connect").is_empty());
    }
}
