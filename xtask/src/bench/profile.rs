//! Where sockerr's time in the kernel goes: each program's run count and run time, from
//! the kernel's own BPF statistics (`kernel.bpf_stats_enabled`; `bpftool prog show`
//! prints them as `run_cnt` and `run_time_ns`), while each micro-loop runs alone under
//! `sockerr trace`. `bpftool prog profile` would need fentry, which the host kernel
//! refuses; the statistics need nothing but the sysctl, and cost two clock reads per run
//! while enabled (so they are on only here, never during the timed loops).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    LOOPS, Plan, daemon,
    tracers::{Config, Traced, loop_command},
};
use crate::process::{describe, stdout_of};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One program's share of one loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramCost {
    pub loop_name: String,
    pub program: String,
    pub runs: u64,
    pub run_time_ns: u64,
    /// Loop iterations while the statistics ran (warm-up and batches).
    pub iterations: u64,
}

impl ProgramCost {
    pub fn ns_per_run(&self) -> f64 {
        self.run_time_ns as f64 / self.runs.max(1) as f64
    }

    pub fn ns_per_iteration(&self) -> f64 {
        self.run_time_ns as f64 / self.iterations.max(1) as f64
    }
}

/// Turns the statistics on for its lifetime and restores the previous setting.
struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}: this kernel has no BPF run-time statistics"))?;
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("enabling {STATS_SYSCTL}"))?;
        Ok(Self { previous: previous.trim().to_owned() })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = fs::write(STATS_SYSCTL, &self.previous);
    }
}

/// Runs every loop once under `sockerr daemon` (node-wide, as in the timed loops) with
/// the statistics on. Node-wide, the programs also run for the other processes of the
/// machine: on a busy machine their runs inflate the per-iteration figures.
pub fn run(sockerr: &Path, scratch: &Path, plan: &Plan) -> Result<Vec<ProgramCost>> {
    let _stats = StatsEnabled::enable()?;
    let mut traced =
        Traced::start(Config::Daemon, sockerr, scratch)?.context("sockerr daemon did not start")?;
    let tracer = &mut traced.running;
    let programs: Vec<u64> = daemon::bpf_ids_of(tracer.pid(), "prog_id:")?.into_iter().collect();
    if programs.is_empty() {
        bail!("sockerr daemon (pid {}) holds no BPF program fd", tracer.pid());
    }
    let mut costs = Vec::new();
    for &loop_name in LOOPS {
        let before = program_stats(&programs)?;
        let mut command =
            loop_command(Config::Daemon, sockerr, &[loop_name], plan.batches, plan.batch_ms, None);
        let output = command.output().with_context(|| format!("could not start `{}`", describe(&command)))?;
        if !output.status.success() {
            bail!("`{}` failed: {}", describe(&command), String::from_utf8_lossy(&output.stderr));
        }
        let after = program_stats(&programs)?;
        let report: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("`{}` printed no JSON report", describe(&command)))?;
        let iterations = iterations_of(&report)?;
        costs.extend(differences(loop_name, &before, &after, iterations));
    }
    tracer.stop();
    Ok(costs)
}

/// Iterations one bench-loop run made, its warm-up included.
fn iterations_of(report: &Value) -> Result<u64> {
    report["loops"][0]["iterations"].as_u64().context("bench-loop report without iterations")
}

/// The programs whose run count moved, most time first.
fn differences(
    loop_name: &str,
    before: &BTreeMap<u64, (String, u64, u64)>,
    after: &BTreeMap<u64, (String, u64, u64)>,
    iterations: u64,
) -> Vec<ProgramCost> {
    let mut costs: Vec<ProgramCost> = after
        .iter()
        .filter_map(|(id, (name, runs, time))| {
            let (_, runs_before, time_before) = before.get(id)?;
            let runs = runs.checked_sub(*runs_before)?;
            (runs > 0).then(|| ProgramCost {
                loop_name: loop_name.to_owned(),
                program: name.clone(),
                runs,
                run_time_ns: time.saturating_sub(*time_before),
                iterations,
            })
        })
        .collect();
    costs.sort_by_key(|cost| std::cmp::Reverse(cost.run_time_ns));
    costs
}

/// `pid`'s BPF programs: how many have each type (bpftool's `type`), and their names.
pub fn programs_of(pid: u32) -> Result<(BTreeMap<String, u64>, BTreeSet<String>)> {
    let (mut types, mut names) = (BTreeMap::new(), BTreeSet::new());
    for id in daemon::bpf_ids_of(pid, "prog_id:")? {
        let shown = show_program(id)?;
        let kind = shown["type"].as_str().unwrap_or("unknown").to_owned();
        *types.entry(kind).or_insert(0) += 1;
        names.insert(shown["name"].as_str().unwrap_or("?").to_owned());
    }
    Ok((types, names))
}

/// id -> (name, run_cnt, run_time_ns) of these programs.
fn program_stats(ids: &[u64]) -> Result<BTreeMap<u64, (String, u64, u64)>> {
    let mut stats = BTreeMap::new();
    for id in ids {
        let shown = show_program(*id)?;
        let name = shown["name"].as_str().unwrap_or("?").to_owned();
        let count = |key: &str| shown[key].as_u64().unwrap_or(0);
        stats.insert(*id, (name, count("run_cnt"), count("run_time_ns")));
    }
    Ok(stats)
}

/// `bpftool prog show id ID -j`: the program's type, name and run statistics.
fn show_program(id: u64) -> Result<Value> {
    let shown = stdout_of(Command::new("bpftool").args(["prog", "show", "id", &id.to_string(), "-j"]))?;
    Ok(serde_json::from_str(&shown)?)
}

/// The markdown section of BENCHMARKS.md.
pub fn render(costs: &[ProgramCost]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n## Where the time in the kernel goes (BPF run-time statistics)\n");
    let _ = writeln!(
        md,
        "Each loop once more under `sockerr daemon` (node-wide: the programs' runs for the machine's other \
         processes are counted too) with `kernel.bpf_stats_enabled=1` (which adds two clock \
         reads to every run, so the timed loops above run without it). ns/run: the program's mean run time; \
         per iteration: its run time divided by the loop's iterations. The floor's programs return at once \
         (tens of ns per run); what a program spends beyond that is its own work: map updates, reading user \
         memory, reserving and filling a ring-buffer record.\n"
    );
    let _ = writeln!(md, "| loop | program | runs | ns/run | ns per iteration |\n|---|---|---:|---:|---:|");
    let mut by_loop: BTreeMap<&str, Vec<&ProgramCost>> = BTreeMap::new();
    for cost in costs {
        by_loop.entry(cost.loop_name.as_str()).or_default().push(cost);
    }
    for (loop_name, costs) in by_loop {
        let total: f64 = costs.iter().map(|c| c.ns_per_iteration()).sum();
        for cost in costs.iter().filter(|c| c.ns_per_iteration() >= 1.0) {
            let _ = writeln!(
                md,
                "| {loop_name} | {} | {} | {:.0} | {:.0} |",
                cost.program,
                cost.runs,
                cost.ns_per_run(),
                cost.ns_per_iteration()
            );
        }
        let _ = writeln!(md, "| {loop_name} | **all programs** | | | **{total:.0}** |");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_keep_programs_that_ran_most_time_first() {
        let before = BTreeMap::from([
            (1, ("sys_enter_setsockopt".to_owned(), 10, 1_000)),
            (2, ("sys_exit_setsockopt".to_owned(), 10, 2_000)),
            (3, ("sys_enter_bind".to_owned(), 5, 500)),
        ]);
        let after = BTreeMap::from([
            (1, ("sys_enter_setsockopt".to_owned(), 110, 61_000)),
            (2, ("sys_exit_setsockopt".to_owned(), 110, 112_000)),
            (3, ("sys_enter_bind".to_owned(), 5, 500)),
            (4, ("appeared_later".to_owned(), 7, 70)),
        ]);
        let costs = differences("so-mark", &before, &after, 100);
        let names: Vec<&str> = costs.iter().map(|c| c.program.as_str()).collect();
        assert_eq!(names, ["sys_exit_setsockopt", "sys_enter_setsockopt"]);
        assert_eq!(costs[0].ns_per_run(), 1_100.0);
        assert_eq!(costs[1].ns_per_iteration(), 600.0);
        let md = render(&costs);
        assert!(md.contains("| so-mark | sys_exit_setsockopt | 100 | 1100 | 1100 |"), "{md}");
        assert!(md.contains("| so-mark | **all programs** | | | **1700** |"), "{md}");
    }
}
