//! `cargo xtask bench`: what sockerr costs a node against no tracing, the floor (the same
//! hooks with programs that return at once), bpftrace and strace, on a successful
//! connection cycle and on failing calls; throughput without loss; a busy node (hundreds
//! of thousands of held connections); start-up; and with `--soak`, a million failures
//! under `sockerr daemon`. Every part writes its figures to target/bench/results.json
//! (keeping the other parts' figures), then BENCHMARKS.md is written whole from that file
//! with the targets of issue 11 met or not. Never part of `cargo xtask test`.

mod busy;
pub mod daemon;
mod machine;
mod profile;
mod records;
mod report;
mod results;
pub mod running;
mod soak;
mod stats;
mod targets;
mod throughput;
pub mod tracers;

use std::{fs, path::Path, time::Instant};

use anyhow::{Context, Result, bail};
use busy::BusyPlan;
use clap::Args;
use results::{Hooks, MicroLoops, PlanFacts, Recorded, Results, Slot};
use serde_json::Value;
use tracers::{Config, Traced};

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
    /// A short run (under 3 minutes): fewer rounds and samples, a shorter throughput search,
    /// fewer busy-node failures (still 200,000 held connections).
    #[arg(long)]
    pub quick: bool,
    /// Run only the soak: 1,000,000 failing connects under `sockerr daemon`.
    #[arg(long)]
    pub soak: bool,
    /// Run only the busy node (as in the full run; --quick: fewer failures), keeping the
    /// other figures of the last run.
    #[arg(long, conflicts_with = "soak")]
    pub busy_node: bool,
    /// Failing connects of the soak.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub soak_count: u64,
    /// Measure nothing: decide the targets again and write BENCHMARKS.md whole from the
    /// last run's target/bench/results.json (after a change to the report or the targets).
    #[arg(long, conflicts_with_all = ["soak", "busy_node", "quick"])]
    pub rewrite: bool,
}

/// What the workloads call themselves (`sockerr scenario bench-loop`, `flood`, `busy-node`).
pub const COMM: &str = "sockerr-bench";
/// The successful connection cycle.
pub const SUCCESS_LOOP: &str = "success-cycle";
/// The micro-loops (`sockerr scenario bench-loop --loop`), in table order.
pub const LOOPS: &[&str] =
    &[SUCCESS_LOOP, "refused-connect", "addr-not-avail", "bind", "so-mark", "so-keepalive"];
/// The loops of the "failing loop" targets (so-mark: a recorded option, not a failure).
pub const FAILING_LOOPS: &[&str] = &["refused-connect", "addr-not-avail", "bind", "so-mark"];

/// How much of everything one run measures.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rounds: u32,
    pub batches: u32,
    pub batch_ms: u32,
    /// Untimed iterations before each loop's batches (a fifth under strace).
    pub warmup: u32,
    /// Seconds per rate of the throughput search.
    pub rate_secs: u32,
    pub busy: BusyPlan,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                rounds: 3,
                batches: 3,
                batch_ms: 25,
                warmup: 300,
                rate_secs: 2,
                busy: BusyPlan { connections: 200_000, failures: 5_000, rate: 5_000 },
            }
        } else {
            Plan {
                rounds: 8,
                batches: 5,
                batch_ms: 40,
                warmup: 1_000,
                rate_secs: 4,
                busy: BusyPlan { connections: 200_000, failures: 20_000, rate: 5_000 },
            }
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    // Before the root check: rewriting loads nothing and only writes files.
    if args.rewrite {
        let json_path = tracers::scratch_dir(&target_dir()).join("results.json");
        let mut results = results::load(&json_path);
        if results.micro_loops.is_none() && results.busy_node.is_none() && results.soak.is_none() {
            bail!("{} holds no results to write: run `sudo -E cargo xtask bench` first", json_path.display());
        }
        return write(&json_path, &mut results);
    }
    if !is_root()? {
        bail!(
            "the benchmark loads eBPF programs and creates network namespaces: run `sudo -E cargo xtask bench`"
        );
    }
    setup::ensure()?;
    system_packages::ensure_commands(BENCH_COMMANDS, &mut setup_report::Report::default())?;
    let sockerr = build_sockerr(Profile::Release)?;
    ensure_tracefs()?;
    let scratch = tracers::scratch_dir(&target_dir());
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let json_path = scratch.join("results.json");
    let mut results = results::load(&json_path);
    let started = Instant::now();
    let machine = machine::describe()?;
    if args.soak {
        let soak = soak::run(&sockerr, &scratch, args.soak_count, machine.date.clone())?;
        let problems = soak.problems.clone();
        results.soak = Some(soak);
        write(&json_path, &mut results)?;
        if !problems.is_empty() {
            bail!("soak failed: {}", problems.join("; "));
        }
        return Ok(());
    }
    let plan = Plan::new(args.quick);
    if args.busy_node {
        return busy_node_only(&sockerr, &scratch, &plan, &json_path, &mut results);
    }
    eprintln!("bench: micro-loops, {} rounds of {} configurations", plan.rounds, Config::ALL.len());
    let loops = micro_loops(&sockerr, &scratch, &plan)?;
    eprintln!("bench: start-up and throughput");
    let startup = throughput::startup(&sockerr)?;
    let throughput = throughput::search(&sockerr, &scratch, &plan)?;
    eprintln!("bench: per-program cost (BPF run-time statistics)");
    let program_costs = profile::run(&sockerr, &scratch, &plan)?;
    eprintln!("bench: busy node, {} connections, {} failures", plan.busy.connections, plan.busy.failures);
    let busy_node = busy::run(&sockerr, &scratch, plan.busy).map_err(|err| format!("{err:#}"));
    let busy_node_error = busy_node.as_ref().err().cloned();
    results = Results {
        machine: Some(machine),
        plan: Some(PlanFacts {
            rounds: plan.rounds,
            batches: plan.batches,
            batch_ms: plan.batch_ms,
            quick: args.quick,
        }),
        micro_loops: Some(loops),
        startup: Some(startup),
        throughput: Some(throughput),
        program_costs,
        busy_node: busy_node.ok(),
        busy_node_error: busy_node_error.clone(),
        // The soak is its own run: its last figures stay.
        soak: results.soak.take(),
        targets: Vec::new(),
        duration_secs: Some(started.elapsed().as_secs_f64()),
    };
    write(&json_path, &mut results)?;
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    match busy_node_error {
        Some(err) => bail!("the busy-node run failed (the other figures are written): {err}"),
        None => Ok(()),
    }
}

/// `--busy-node`: the busy node alone, in the last run's results.
fn busy_node_only(
    sockerr: &Path,
    scratch: &Path,
    plan: &Plan,
    json_path: &Path,
    results: &mut Results,
) -> Result<()> {
    eprintln!("bench: busy node, {} connections, {} failures", plan.busy.connections, plan.busy.failures);
    let busy_node = busy::run(sockerr, scratch, plan.busy).map_err(|err| format!("{err:#}"));
    results.busy_node_error = busy_node.as_ref().err().cloned();
    results.busy_node = busy_node.ok();
    write(json_path, results)?;
    match &results.busy_node_error {
        Some(err) => bail!("the busy-node run failed: {err}"),
        None => Ok(()),
    }
}

/// Evaluates the targets, saves results.json and writes BENCHMARKS.md whole from it.
fn write(json_path: &Path, results: &mut Results) -> Result<()> {
    results.targets = targets::evaluate(results);
    results::save(json_path, results)?;
    let md_path = workspace_root().join("BENCHMARKS.md");
    fs::write(&md_path, report::render(results)).with_context(|| format!("writing {}", md_path.display()))?;
    let met = results.targets.iter().filter(|t| t.met == Some(true)).count();
    eprintln!(
        "bench: wrote {} and {} ({met} of {} targets met)",
        md_path.display(),
        json_path.display(),
        results.targets.len()
    );
    Ok(())
}

fn micro_loops(sockerr: &Path, scratch: &Path, plan: &Plan) -> Result<MicroLoops> {
    let mut loops = MicroLoops::default();
    let configs = Config::ALL;
    for round in 0..plan.rounds {
        for index in slot_order(configs.len(), round) {
            let config = configs[index];
            let started = Instant::now();
            slot(sockerr, scratch, plan, config, round, &mut loops)?;
            eprintln!(
                "bench: round {}/{} {:<20} {:.1} s",
                round + 1,
                plan.rounds,
                config.name(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(loops)
}

/// The configurations' order in `round`: rotated each round, so that each runs first in
/// one of the first `count` rounds, and reversed every other round, so that none always follows the same one (a
/// tracer's exit, detaching its programs, must not weigh on one neighbour only: `daemon`
/// and `daemon --no-drop-hooks`, compared with each other, run in both orders).
fn slot_order(count: usize, round: u32) -> Vec<usize> {
    let first = round as usize % count;
    let step = |offset: usize| {
        if round.is_multiple_of(2) { (first + offset) % count } else { (first + count - offset) % count }
    };
    (0..count).map(step).collect()
}

/// One configuration in one round: start its tracer, run every loop (and the canary of an
/// excluding filter), stop it, count what it recorded, check it.
fn slot(
    sockerr: &Path,
    scratch: &Path,
    plan: &Plan,
    config: Config,
    round: u32,
    loops: &mut MicroLoops,
) -> Result<()> {
    let mut traced = Traced::start(config, sockerr, scratch)?;
    if let Some(traced) = &traced
        && !loops.hooks.contains_key(config.name())
    {
        let pid = traced.running.pid();
        let (program_types, programs) = profile::programs_of(pid)?;
        loops.hooks.insert(config.name().to_owned(), Hooks { attached: None, program_types, programs });
    }
    let lost_before = match traced.as_ref().and_then(|t| t.metrics) {
        Some(address) => Some(daemon::lost(&daemon::metrics(address)?)?),
        None => None,
    };
    let strace_output = (config == Config::Strace).then(|| config.output(scratch)).flatten();
    let mut command =
        tracers::loop_command(config, sockerr, LOOPS, plan.batches, plan.batch_ms, strace_output.as_deref());
    let warmup = if config == Config::Strace { plan.warmup / 5 } else { plan.warmup };
    command.args(["--warmup", &warmup.to_string()]);
    let report = run_json(&mut command)?;
    let canary = if config.excludes_loops() && config.records() {
        Some(run_json(&mut tracers::canary_command(sockerr))?)
    } else {
        None
    };
    let lost_after = match traced.as_ref().and_then(|t| t.metrics) {
        Some(address) => Some(daemon::lost(&daemon::metrics(address)?)?),
        None => None,
    };
    let log = traced.as_mut().map(|t| t.running.stop()).unwrap_or_default();

    let loop_pid = report["pid"].as_u64().context("bench-loop report without pid")? as u32;
    let mut slot = Slot {
        config: config.name().to_owned(),
        round,
        loop_pid,
        output: config.output(scratch).map_or("-".into(), |p| p.display().to_string()),
        ..Slot::default()
    };
    let entries = report["loops"].as_array().context("bench-loop report without loops")?;
    for entry in entries {
        let name = entry["loop"].as_str().context("loop without a name")?;
        let values: Vec<f64> = entry["ns_per_iteration"]
            .as_array()
            .context("loop without samples")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        loops.push(config.name(), name, values);
    }

    let errors_text =
        traced.as_ref().and_then(|t| t.errors.as_ref()).map(|p| fs::read_to_string(p).unwrap_or_default());
    if config.records() {
        let path = config.output(scratch).context("a recording configuration has an output")?;
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let counts = |pid: u32| match config {
            Config::Bpftrace => records::bpftrace_failures(&text, pid),
            Config::Strace => records::strace_failures(&text),
            _ => records::sockerr_failures(&text, pid),
        };
        let of_loops = counts(loop_pid);
        if let Some(canary) = &canary {
            slot.excluded_records = Some(of_loops.values().sum());
            let canary_pid = canary["pid"].as_u64().context("canary report without pid")? as u32;
            slot.canary_records = Some(counts(canary_pid).values().sum());
        } else {
            for entry in entries {
                let name = entry["loop"].as_str().unwrap_or("?");
                if let Some(error) = records::failure_of(name) {
                    let iterations = entry["iterations"].as_u64().context("loop without iterations")?;
                    let records = of_loops.get(error).copied().unwrap_or(0);
                    slot.failures.insert(name.to_owned(), Recorded { records, iterations });
                }
            }
        }
        if config == Config::Bpftrace
            && let Some(hooks) = loops.hooks.get_mut(config.name())
        {
            hooks.attached = attaching_probes(&text, errors_text.as_deref().unwrap_or(""));
        }
    }
    slot.lost = match config {
        // The daemon lives for this slot only: its `stopped:` line counts every loss of it,
        // those of the last second too, which /metrics (updated once a second) may not
        // show yet when it is read after the loops.
        Config::Daemon | Config::DaemonNoDropHooks | Config::DaemonOtherCpus => records::stopped_lost(&log)
            .or(match (lost_before, lost_after) {
                (Some(before), Some(after)) => Some(after.since(&before).total),
                _ => None,
            }),
        Config::TraceExcluded => records::stopped_lost(&log),
        // bpftrace prints `Lost N events` among its records (stdout) or on stderr, by version.
        Config::Bpftrace => {
            let output = config.output(scratch).and_then(|p| fs::read_to_string(p).ok()).unwrap_or_default();
            Some(records::bpftrace_lost(&(output + errors_text.as_deref().unwrap_or(""))))
        }
        _ => None,
    };
    if let Some(hooks) = loops.hooks.get_mut(config.name())
        && hooks.attached.is_none()
    {
        hooks.attached = programs_attached(&log);
    }
    if loops.backend.is_none() {
        loops.backend = backend_of(&log);
    }
    records::check(&slot)?;
    loops.slots.push(slot);
    Ok(())
}

/// bpftrace finds tracepoints only through a mounted tracefs; sockerr mounts it itself,
/// but bpftrace may come first in a round.
fn ensure_tracefs() -> Result<()> {
    let tracefs = Path::new("/sys/kernel/tracing");
    if tracefs.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(tracefs)
        .status()
        .context("could not run mount")?;
    if !status.success() {
        bail!("tracefs is not mounted and `mount -t tracefs nodev {}` failed ({status})", tracefs.display());
    }
    Ok(())
}

fn run_json(command: &mut std::process::Command) -> Result<Value> {
    let output = command.output().with_context(|| format!("could not start `{}`", describe(command)))?;
    if !output.status.success() {
        bail!("`{}` failed: {}", describe(command), String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("`{}` printed no JSON report", describe(command)))
}

/// N of sockerr's `tracing started: N programs attached`.
fn programs_attached(log: &[String]) -> Option<u64> {
    log.iter().find_map(|line| {
        let rest = line.split_once("tracing started: ")?.1;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The backend sockerr logged (`backend NAME: why`).
fn backend_of(log: &[String]) -> Option<String> {
    log.iter().find_map(|line| {
        let rest = line.split_once(" backend ")?.1;
        let (name, why) = rest.split_once(": ")?;
        (!name.contains(' ')).then(|| format!("{name}: {why}"))
    })
}

/// N of bpftrace's `Attaching N probes...` (stdout or stderr, by version).
fn attaching_probes(stdout: &str, stderr: &str) -> Option<u64> {
    stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|line| line.trim().strip_prefix("Attaching ")?.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_runs_first_and_before_and_after_each_neighbour() {
        let count = Config::ALL.len();
        let rounds: Vec<Vec<usize>> = (0..8).map(|round| slot_order(count, round)).collect();
        for order in &rounds {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..count).collect::<Vec<_>>(), "each once per round: {order:?}");
        }
        let first: std::collections::BTreeSet<usize> = rounds.iter().map(|order| order[0]).collect();
        assert_eq!(first.len(), count.min(8), "{rounds:?}");
        let daemon = Config::ALL.iter().position(|&c| c == Config::Daemon).unwrap();
        let without = Config::ALL.iter().position(|&c| c == Config::DaemonNoDropHooks).unwrap();
        let follows = |a: usize, b: usize| {
            rounds.iter().filter(|order| order.windows(2).any(|pair| pair == [a, b])).count()
        };
        assert!(follows(daemon, without) >= 3 && follows(without, daemon) >= 3, "{rounds:?}");
    }

    #[test]
    fn log_lines_give_attachments_and_backend() {
        let log = vec![
            "2026-11-28T23:00:00Z  INFO backend tracepoint: no kprobes on this kernel".to_owned(),
            "2026-11-28T23:00:00Z  INFO tracing started: 19 programs attached".to_owned(),
        ];
        assert_eq!(programs_attached(&log), Some(19));
        assert_eq!(backend_of(&log).as_deref(), Some("tracepoint: no kprobes on this kernel"));
        assert_eq!(programs_attached(&["INFO SIGINT: stopping".to_owned()]), None);
        assert_eq!(attaching_probes("bench: attached\n", "Attaching 18 probes...\n"), Some(18));
        assert_eq!(attaching_probes("", ""), None);
    }
}
