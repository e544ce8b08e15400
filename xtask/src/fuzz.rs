//! `cargo xtask fuzz`: the fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer, nightly), one per
//! source of data sockerr does not control; `cargo xtask test` runs each briefly.
//!
//! cargo-fuzz builds the targets (installed here when missing); xtask then runs each binary
//! itself, so that it can bound the run, keep the committed seeds (`fuzz/seeds/<target>`)
//! apart from the corpus the run grows (`target/fuzz/corpus/<target>`), and tell how many
//! inputs ran.

use std::{
    fs,
    io::{BufRead, BufReader},
    num::NonZeroUsize,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use crate::{
    paths::{target_dir, workspace_root},
    process::{describe, find_in_path, run_inherited, stdout_of},
    setup,
};

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Per target in `cargo xtask test`: nine targets, two at a time on two CPUs, run in
/// under a minute after the build.
pub const STAGE_SECONDS_PER_TARGET: u64 = 10;

/// The stage's fixed libFuzzer seed: the suite's verdict should depend on the commit, not on
/// the dice (a random seed once failed CI on a bug no commit of that run touched). Finding
/// new inputs is `cargo xtask fuzz`'s job, with a fresh seed each run.
const STAGE_SEED: u64 = 1;

/// Fewer inputs than this in a run means the target hardly ran (too slow, or it stopped).
const MIN_RUNS: u64 = 1_000;

/// One input running this long is a hang, reported like a crash.
const INPUT_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long = "time", value_name = "S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// One target (see fuzz/fuzz_targets); all of them when left out.
    pub target: Option<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    setup::ensure()?;
    let outcomes = fuzz(args.target.as_deref(), Duration::from_secs(args.seconds), None)?;
    verdict(&outcomes)
}

/// The `fuzz` stage of `cargo xtask test`: every target, briefly. Returns how many
/// targets ran clean, for the suite's count.
pub fn stage() -> Result<u64> {
    let outcomes = fuzz(None, Duration::from_secs(STAGE_SECONDS_PER_TARGET), Some(STAGE_SEED))?;
    verdict(&outcomes)?;
    Ok(outcomes.len() as u64)
}

fn fuzz(only: Option<&str>, each: Duration, seed: Option<u64>) -> Result<Vec<Outcome>> {
    ensure_cargo_fuzz()?;
    let targets = list_targets()?;
    let targets: Vec<String> = match only {
        None => targets,
        Some(name) if targets.iter().any(|target| target == name) => vec![name.to_string()],
        Some(name) => bail!("no fuzz target `{name}`; the targets are: {}", targets.join(", ")),
    };
    let started = Instant::now();
    run_inherited(&mut build_command(only)).context("building the fuzz targets failed")?;
    eprintln!("fuzz: built {} target(s) in {:.1} s", targets.len(), started.elapsed().as_secs_f64());
    let binaries = binary_dir()?;
    // libFuzzer runs one thread: as many targets at once as there are CPUs.
    let at_once = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let mut outcomes = Vec::new();
    for batch in targets.chunks(at_once) {
        let ran: Vec<Result<Outcome>> = thread::scope(|scope| {
            let binaries = &binaries;
            let handles: Vec<_> = batch
                .iter()
                .map(|target| scope.spawn(move || run_target(&binaries.join(target), target, each, seed)))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("the thread running a fuzz target panicked")))
                })
                .collect()
        });
        for outcome in ran {
            let outcome = outcome?;
            eprintln!("fuzz: {}", outcome.summary());
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

fn verdict(outcomes: &[Outcome]) -> Result<()> {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|outcome| outcome.problem.is_some()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for outcome in &failed {
        eprintln!("\n{}", outcome.report());
    }
    let names: Vec<&str> = failed.iter().map(|outcome| outcome.target.as_str()).collect();
    bail!("fuzz target(s) failed: {}", names.join(", "))
}

/// cargo-fuzz of a pinned version, installed into cargo's bin directory when missing.
fn ensure_cargo_fuzz() -> Result<()> {
    if find_in_path("cargo-fuzz").is_some()
        && let Ok(version) = stdout_of(Command::new("cargo-fuzz").arg("--version"))
        && version.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION)
    {
        return Ok(());
    }
    let started = Instant::now();
    eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}; this takes about a minute");
    run_inherited(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
        .with_context(|| {
            format!("cargo-fuzz builds the fuzz targets: install it with `cargo install cargo-fuzz --locked --version {CARGO_FUZZ_VERSION}`")
        })?;
    eprintln!("fuzz: installed cargo-fuzz in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

fn cargo_fuzz(subcommand: &str) -> Command {
    let mut command = Command::new("cargo");
    command
        .current_dir(workspace_root())
        .args(["+nightly", "fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir());
    command
}

fn list_targets() -> Result<Vec<String>> {
    let listed = stdout_of(&mut cargo_fuzz("list"))?;
    let targets: Vec<String> =
        listed.lines().map(str::trim).filter(|line| !line.is_empty()).map(String::from).collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no target in {}", fuzz_dir().display());
    }
    Ok(targets)
}

/// The dev profile: the targets link all of sockerr (kube, rustls, tokio, axum...), and
/// cargo-fuzz's release build (one codegen unit per crate, sanitizer passes) of that took
/// far longer than the stage's budget; unoptimised, a target still runs thousands of
/// inputs a second. Dev also keeps debug assertions and overflow checks: an overflow on
/// hostile input is a finding, though a release build of sockerr would wrap silently.
///
/// The fuzz crate's dev profile keeps line tables only (fuzz/Cargo.toml): backtraces
/// still name file and line, and the cold build of the nine targets took 550 s of CPU
/// instead of 698 s with full debug info (each binary 64 MB instead of 206 MB).
///
/// AddressSanitizer stays on (cargo-fuzz's default, named here so that it is a choice):
/// `ring_record`'s decoders read records with `unsafe` (`read_pod` in tracer's decode.rs,
/// `read_unaligned` in tracer-common), and an out-of-bounds read there would go unnoticed
/// without it. It costs about a tenth of the build: 498 s of CPU with `--sanitizer none`.
fn build_command(only: Option<&str>) -> Command {
    let mut command = cargo_fuzz("build");
    command.args(["--dev", "--sanitizer", "address"]).arg("--target-dir").arg(fuzz_target_dir());
    command.args(only);
    command
}

fn fuzz_target_dir() -> PathBuf {
    target_dir().join("fuzz")
}

/// Where cargo-fuzz leaves the binaries: it builds for the host triple.
fn binary_dir() -> Result<PathBuf> {
    let verbose = stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let host = verbose
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .context("`rustc +nightly -vV` printed no `host:` line")?;
    Ok(fuzz_target_dir().join(host.trim()).join("debug"))
}

/// How one target's run went.
#[derive(Debug)]
struct Outcome {
    target: String,
    runs: u64,
    seconds: f64,
    /// Why the run failed; `None` when it ran clean and long enough.
    problem: Option<String>,
    /// The end of the fuzzer's output, for the report of a failure.
    tail: Vec<String>,
}

impl Outcome {
    fn summary(&self) -> String {
        let verdict = match &self.problem {
            None => "ok".to_string(),
            Some(problem) => format!("FAILED: {problem}"),
        };
        format!("{}: {} inputs in {:.1} s, {verdict}", self.target, self.runs, self.seconds)
    }

    fn report(&self) -> String {
        let mut lines = vec![format!("==> fuzz target {} failed; the end of its output:", self.target)];
        lines.extend(self.tail.iter().cloned());
        lines.join("\n")
    }
}

fn run_target(binary: &Path, target: &str, each: Duration, seed: Option<u64>) -> Result<Outcome> {
    let corpus = fuzz_target_dir().join("corpus").join(target);
    let artifacts = fuzz_target_dir().join("artifacts").join(target);
    let seeds = fuzz_dir().join("seeds").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut command = Command::new(binary);
    // The first directory takes the new inputs; the committed seeds are only read.
    command
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={}", each.as_secs()))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        // As cargo-fuzz runs them: ASan's ODR check trips on Rust's duplicated symbols.
        .args(seed.map(|seed| format!("-seed={seed}")))
        .env("ASAN_OPTIONS", "detect_odr_violation=0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("could not start `{}`", describe(&command)))?;
    let stderr = child.stderr.take().context("the fuzzer's stderr was not captured")?;
    let mut tail = Vec::new();
    let mut runs = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the fuzzer's output")?;
        if let Some(count) = executed_units(&line) {
            runs = Some(count);
        }
        tail.push(line);
        if tail.len() > TAIL_LINES {
            tail.remove(0);
        }
    }
    let status = child.wait().with_context(|| format!("waiting for `{}`", describe(&command)))?;
    let seconds = started.elapsed().as_secs_f64();
    let runs = runs.unwrap_or(0);
    let problem = if !status.success() {
        let reproduce = format!("reproduce with `{} <input>` (the input is named above)", binary.display());
        Some(format!("the fuzzer stopped ({status}); {reproduce}"))
    } else if runs < MIN_RUNS {
        Some(format!(
            "only {runs} inputs ran (at least {MIN_RUNS} expected): the target is too slow or stopped early"
        ))
    } else {
        None
    };
    Ok(Outcome { target: target.to_string(), runs, seconds, problem, tail })
}

const TAIL_LINES: usize = 60;

/// libFuzzer's `-print_final_stats=1` line `stat::number_of_executed_units: 123456`.
fn executed_units(line: &str) -> Option<u64> {
    line.trim().strip_prefix("stat::number_of_executed_units:")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executed_units_come_from_the_final_stats() {
        assert_eq!(executed_units("stat::number_of_executed_units: 2345678"), Some(2_345_678));
        assert_eq!(executed_units("stat::average_exec_per_sec:     195473"), None);
        assert_eq!(executed_units("#2345678\tDONE   cov: 811 ft: 2870 corp: 412/61Kb"), None);
    }

    #[test]
    fn a_failed_outcome_names_the_target_and_shows_the_tail() {
        let outcome = Outcome {
            target: "btf".into(),
            runs: 1234,
            seconds: 3.25,
            problem: Some("the fuzzer stopped (exit status: 77)".into()),
            tail: vec!["thread '<unnamed>' panicked at tracer/src/kernel/btf.rs:215:27:".into()],
        };
        assert_eq!(
            outcome.summary(),
            "btf: 1234 inputs in 3.2 s, FAILED: the fuzzer stopped (exit status: 77)"
        );
        assert!(
            outcome.report().ends_with("panicked at tracer/src/kernel/btf.rs:215:27:"),
            "{}",
            outcome.report()
        );
        let err = verdict(&[outcome]).unwrap_err();
        assert_eq!(err.to_string(), "fuzz target(s) failed: btf");
    }

    #[test]
    fn clean_outcomes_pass() {
        let outcome =
            Outcome { target: "cgroup".into(), runs: 50_000, seconds: 12.0, problem: None, tail: vec![] };
        assert_eq!(outcome.summary(), "cgroup: 50000 inputs in 12.0 s, ok");
        verdict(&[outcome]).unwrap();
    }

    #[test]
    fn the_build_has_overflow_checks_and_its_own_target_dir() {
        let command = describe(&build_command(Some("btf")));
        assert!(command.starts_with("cargo +nightly fuzz build --fuzz-dir "), "{command}");
        assert!(command.contains(" --dev --sanitizer address --target-dir "), "{command}");
        assert!(command.ends_with("fuzz btf"), "{command}");
    }

    /// What `--dev` builds with: line tables only, and nothing that turns the checks off.
    #[test]
    fn the_fuzz_dev_profile_keeps_line_tables_and_the_checks() {
        let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        let dev = manifest.split("[profile.dev]").nth(1).expect("fuzz/Cargo.toml has a [profile.dev]");
        let dev = dev.split("\n[").next().unwrap();
        assert!(dev.contains("debug = \"line-tables-only\""), "{dev}");
        for check in ["debug-assertions", "overflow-checks"] {
            assert!(!manifest.contains(&format!("{check} = false")), "fuzz/Cargo.toml turns {check} off");
        }
    }
}
