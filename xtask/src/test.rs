//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run`).

use std::{
    ffi::OsString,
    fmt,
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    alerts,
    arch::Arch,
    fuzz, image, manifests,
    paths::{target_dir, workspace_root},
    privileges::is_root,
    process::{describe, run_inherited},
    rustfmt, setup, setup_report,
    static_build::{self, Flavour},
    system_packages,
    vm::{self, KernelSpec, Series},
};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip the VM kernels (Debian 6.1 and 6.12 under qemu), for quick local runs.
    #[arg(long)]
    pub no_vm: bool,
    /// Skip the end-to-end tests, which need root.
    #[arg(long)]
    pub skip_e2e: bool,
    /// How many end-to-end tests run at once.
    // Each test traces only the processes it starts in its own network namespace, so
    // parallel tests cannot see each other's events; 2 matches the cores of the project's
    // machines, and more threads only add scheduling delays to tests that wait for events.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub e2e_threads: u16,
    /// Skip the arm64 guests (Debian 6.1 and 6.12 under qemu's aarch64 emulation, with
    /// Debian's arm64 programs), which take about 10 of the suite's minutes.
    #[arg(long)]
    pub no_arm64_guests: bool,
    /// Run only these stages (repeatable), besides setup and release-build which the
    /// others build on; e.g. `--only image --only prometheus`. A guests' stage (vm-amd64,
    /// vm-arm64) needs its vm-build stage named too (vm-build, vm-build-arm64).
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Passed to the end-to-end test harness, e.g. a test name filter.
    #[arg(last = true, value_name = "E2E_ARGS")]
    pub e2e_args: Vec<OsString>,
}

pub fn run_suite(args: &TestArgs) -> Result<()> {
    // Checked first, not after minutes of building.
    if !args.skip_e2e && !is_root()? {
        bail!(
            "the end-to-end tests load eBPF programs and create network namespaces, so they need root: \
             run `sudo -E cargo xtask test`, or `cargo xtask test --skip-e2e` for everything else"
        );
    }
    let mut suite = Suite { only: args.only.clone(), ..Suite::default() };
    let outcome = run_stages(&mut suite, args);
    eprintln!("\n{}", format_stage_table(&suite.stages));
    // Last line of the run, in the plain `N passed, N failed` form CI reads.
    println!("{}", suite.counts.closing_line());
    outcome
}

fn run_stages(suite: &mut Suite, args: &TestArgs) -> Result<()> {
    suite.stage("setup", |_| setup::ensure())?;
    suite.stage("fmt", |_| run_inherited(&mut rustfmt::command(true)))?;
    suite.stage("clippy", |_| {
        run_inherited(
            cargo()
                .args(["clippy", "--workspace", "--exclude", "tracer-ebpf", "--all-targets"])
                .args(["--", "-D", "warnings"]),
        )
    })?;
    suite.stage("clippy-ebpf", |_| run_inherited(&mut clippy_ebpf()))?;
    suite.stage("unit-tests", |counts| {
        let mut command = cargo();
        // --no-fail-fast: one run shows every failing test, not just the first crate's.
        command.args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--exclude",
            "sockerr-e2e",
        ]);
        run_counting_tests(&mut command, counts, &mut io::stdout())
    })?;
    suite.stage("fuzz", |counts| {
        // Each target that ran clean counts as a passed test.
        counts.add(&TestCounts { passed: fuzz::stage()?, failed: 0, ignored: 0 });
        Ok(())
    })?;
    let mut sockerr = PathBuf::new();
    suite.stage("release-build", |_| {
        sockerr = static_build::build_musl(Arch::host(), Flavour::WithWorkloads)?;
        Ok(())
    })?;
    suite.stage("manifests", |_| manifests::validate())?;
    if args.skip_e2e {
        suite.skip("static-binary", "--skip-e2e (chroot needs root)");
    } else {
        suite
            .stage("static-binary", |_| static_build::check_in_empty_root(&static_build::build_static()?))?;
    }
    if args.skip_e2e {
        suite.skip("image", "--skip-e2e (buildah and podman need root)");
    } else {
        suite.stage("image", |counts| {
            let archive = image::build()?;
            system_packages::ensure_commands(image::PODMAN_COMMANDS, &mut setup_report::Report::default())?;
            run_counting_tests(&mut image_test(&sockerr, &archive), counts, &mut io::stdout())
        })?;
    }
    if args.skip_e2e {
        suite.skip("e2e", "--skip-e2e");
    } else {
        suite.stage("e2e", |counts| {
            run_counting_tests(&mut end_to_end_tests(&sockerr, args), counts, &mut io::stdout())
        })?;
    }
    if args.skip_e2e {
        suite.skip("prometheus", "--skip-e2e (the daemon needs root)");
    } else {
        suite.stage("prometheus", |_| alerts::check(&sockerr))?;
    }
    if args.no_vm || args.skip_e2e {
        suite.skip("vm-test", if args.no_vm { "--no-vm" } else { "--skip-e2e" });
        return Ok(());
    }
    // The host's architecture first (the cheaper guests), then arm64 under emulation.
    let mut arches = vec![Arch::host()];
    if Arch::host() != Arch::Arm64 {
        if args.no_arm64_guests {
            suite.skip("vm-arm64", "--no-arm64-guests");
        } else {
            arches.push(Arch::Arm64);
        }
    }
    for arch in arches {
        let vm_args = vm::VmTestArgs {
            arch,
            kernels: Series::ALL.iter().map(|series| KernelSpec::Series(*series)).collect(),
            accel: vm::AccelChoice::Auto,
            time_limit: vm::DEFAULT_TIME_LIMIT_SECS,
            test_threads: args.e2e_threads,
            test_args: args.e2e_args.iter().map(|arg| arg.to_string_lossy().into_owned()).collect(),
        };
        let mut prepared = None;
        let build_stage = if arch == Arch::Arm64 { "vm-build-arm64" } else { "vm-build" };
        suite.stage(build_stage, |_| {
            prepared = Some(vm::Prepared::new(&vm_args)?);
            Ok(())
        })?;
        let guests_stage = if arch == Arch::Arm64 { "vm-arm64" } else { "vm-amd64" };
        // Only `--only` skips a vm-build stage without failing it.
        let Some(mut prepared) = prepared else {
            suite.skip(guests_stage, "its vm-build stage did not run");
            continue;
        };
        // Both kernels at once (vm::CONCURRENT_GUESTS); the summary below has each one's time.
        let outcome = suite.stage(guests_stage, |counts| {
            let seen = Mutex::new(TestCounts::default());
            let outcome = prepared.test_kernels(&vm_args.kernels, &|line| {
                if let Some(result) = parse_test_result(line) {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).add(&result);
                }
            });
            counts.add(&seen.into_inner().unwrap_or_else(PoisonError::into_inner));
            outcome
        });
        eprintln!("\n{}", prepared.summary());
        outcome?;
    }
    Ok(())
}

fn cargo() -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root());
    command
}

/// Lints the kernel crate the way aya-build compiles it: nightly, the bpf target, core
/// built from source, release (so `debug_assertions` code is linted as it ships) and the
/// same `bpf_target_arch` cfg, which selects aya-ebpf's per-architecture code.
fn clippy_ebpf() -> Command {
    let target = if cfg!(target_endian = "big") { "bpfeb-unknown-none" } else { "bpfel-unknown-none" };
    let rustflags = format!("--cfg=bpf_target_arch=\"{}\"\x1f-Cdebuginfo=2", std::env::consts::ARCH);
    let mut command = cargo();
    command
        .args(["+nightly", "clippy", "--package", "tracer-ebpf", "--target", target, "-Z", "build-std=core"])
        .args(["--bins", "--lib", "--release"])
        // Apart from the stable userspace build, like aya-build's own target dir: the two
        // share no artifact.
        .arg("--target-dir")
        .arg(target_dir().join("ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    command
}

/// Every release build of the suite is static (musl), the host's included: the image
/// ships one, the arm64 guests need them, and one dependency tree per architecture
/// compiles in half the time of a glibc and a musl one side by side.
fn end_to_end_tests(sockerr: &Path, args: &TestArgs) -> Command {
    let mut command = static_build::musl_cargo(
        Arch::host(),
        &["test", "--no-fail-fast", "--release", "--package", "sockerr-e2e"],
    );
    command
        .arg("--")
        .arg(format!("--test-threads={}", args.e2e_threads))
        .args(&args.e2e_args)
        .env("SOCKERR_BIN", sockerr);
    command
}

/// The `image` test target (feature `image` of the e2e crate): the archive under podman.
/// SOCKERR_BIN is the suite's release build (static, with the workloads), which runs the
/// scenarios.
fn image_test(sockerr: &Path, archive: &Path) -> Command {
    let mut command = static_build::musl_cargo(
        Arch::host(),
        &["test", "--release", "--package", "sockerr-e2e", "--features", "image", "--test", "image"],
    );
    command.env("SOCKERR_BIN", sockerr).env("SOCKERR_IMAGE_ARCHIVE", archive);
    command
}

/// Runs a `cargo test` command, echoing its stdout to `echo` while adding up its
/// `test result:` lines.
fn run_counting_tests(command: &mut Command, counts: &mut TestCounts, echo: &mut impl Write) -> Result<()> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(command)))?;
    let mut reader = BufReader::new(child.stdout.take().context("child stdout was not captured")?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).context("reading the test output")? == 0 {
            break;
        }
        echo.write_all(&line).context("writing the test output")?;
        if let Some(result) = parse_test_result(&String::from_utf8_lossy(&line)) {
            counts.add(&result);
        }
    }
    let status = child.wait().with_context(|| format!("waiting for `{}`", describe(command)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(command));
    }
    Ok(())
}

#[derive(Debug, Default, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    fn add(&mut self, other: &TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    fn closing_line(&self) -> String {
        format!("tests: {} passed, {} failed, {} skipped", self.passed, self.failed, self.ignored)
    }
}

/// libtest's summary: `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; …`.
fn parse_test_result(line: &str) -> Option<TestCounts> {
    let (_verdict, counts) = line.trim().strip_prefix("test result: ")?.split_once(". ")?;
    let mut result = TestCounts::default();
    let mut saw_passed = false;
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(what)) = (words.next(), words.next()) else { continue };
        let Ok(number) = number.parse::<u64>() else { continue };
        match what {
            "passed" => {
                result.passed = number;
                saw_passed = true;
            }
            "failed" => result.failed = number,
            "ignored" => result.ignored = number,
            _ => {}
        }
    }
    saw_passed.then_some(result)
}

#[derive(Default)]
struct Suite {
    stages: Vec<StageResult>,
    counts: TestCounts,
    /// `--only`: the stages to run; empty for all.
    only: Vec<String>,
}

/// Stages every other one builds on: they run whatever `--only` says.
const FOUNDATION_STAGES: [&str; 2] = ["setup", "release-build"];

impl Suite {
    fn stage(&mut self, name: &'static str, body: impl FnOnce(&mut TestCounts) -> Result<()>) -> Result<()> {
        if !self.only.is_empty() && !FOUNDATION_STAGES.contains(&name) && !self.only.iter().any(|o| o == name)
        {
            self.skip(name, "not in --only");
            return Ok(());
        }
        eprintln!("\n==> {name}");
        let started = Instant::now();
        let result = body(&mut self.counts);
        let outcome = if result.is_ok() { Outcome::Passed } else { Outcome::Failed };
        self.stages.push(StageResult { name, outcome, elapsed: started.elapsed() });
        result.with_context(|| format!("stage `{name}` failed"))
    }

    fn skip(&mut self, name: &'static str, why: &'static str) {
        self.stages.push(StageResult { name, outcome: Outcome::Skipped(why), elapsed: Duration::ZERO });
    }
}

struct StageResult {
    name: &'static str,
    outcome: Outcome,
    elapsed: Duration,
}

enum Outcome {
    Passed,
    Failed,
    Skipped(&'static str),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str("ok"),
            Outcome::Failed => f.write_str("FAILED"),
            Outcome::Skipped(why) => write!(f, "skipped ({why})"),
        }
    }
}

fn format_stage_table(stages: &[StageResult]) -> String {
    let row = |name: &str, time: &str, result: &str| {
        format!("{name:<14} {time:>9}  {result}").trim_end().to_string()
    };
    let seconds = |elapsed: Duration| format!("{:.1} s", elapsed.as_secs_f64());
    let mut lines = vec![row("stage", "time", "result")];
    for stage in stages {
        let time = match stage.outcome {
            Outcome::Skipped(_) => "-".to_string(),
            Outcome::Passed | Outcome::Failed => seconds(stage.elapsed),
        };
        lines.push(row(stage.name, &time, &stage.outcome.to_string()));
    }
    lines.push(row("total", &seconds(stages.iter().map(|stage| stage.elapsed).sum()), ""));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries_are_counted() {
        let ok =
            "test result: ok. 12 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(parse_test_result(ok), Some(TestCounts { passed: 12, failed: 0, ignored: 2 }));
        let failed = "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.20s\n";
        assert_eq!(parse_test_result(failed), Some(TestCounts { passed: 3, failed: 1, ignored: 0 }));
    }

    #[test]
    fn other_lines_are_not_counted() {
        assert_eq!(parse_test_result("test decode::tests::header ... ok"), None);
        assert_eq!(parse_test_result("running 12 tests"), None);
        assert_eq!(parse_test_result("test result: garbled"), None);
    }

    #[test]
    fn counts_add_up_into_the_closing_line() {
        let mut total = TestCounts::default();
        total.add(&TestCounts { passed: 40, failed: 0, ignored: 1 });
        total.add(&TestCounts { passed: 3, failed: 1, ignored: 0 });
        assert_eq!(total.closing_line(), "tests: 43 passed, 1 failed, 1 skipped");
    }

    #[test]
    fn stage_table_shows_times_results_and_total() {
        let stages = [
            StageResult { name: "setup", outcome: Outcome::Passed, elapsed: Duration::from_millis(230) },
            StageResult { name: "clippy", outcome: Outcome::Failed, elapsed: Duration::from_millis(61_340) },
            StageResult { name: "vm-test", outcome: Outcome::Skipped("--no-vm"), elapsed: Duration::ZERO },
        ];
        let expected = "\
stage               time  result
setup              0.2 s  ok
clippy            61.3 s  FAILED
vm-test                -  skipped (--no-vm)
total             61.6 s";
        assert_eq!(format_stage_table(&stages), expected);
    }

    #[test]
    fn only_skips_the_other_stages_but_not_their_foundation() {
        let mut suite = Suite { only: vec!["image".into()], ..Suite::default() };
        let mut ran = Vec::new();
        for name in ["setup", "clippy", "release-build", "image", "e2e"] {
            suite
                .stage(name, |_| {
                    ran.push(name);
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(ran, ["setup", "release-build", "image"]);
        let skipped: Vec<&str> = suite
            .stages
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Skipped(_)))
            .map(|s| s.name)
            .collect();
        assert_eq!(skipped, ["clippy", "e2e"]);
    }

    #[test]
    fn failing_stage_is_named_and_recorded() {
        let mut suite = Suite::default();
        suite.stage("fmt", |_| Ok(())).unwrap();
        let err = suite.stage("clippy", |_| bail!("lint")).unwrap_err();
        assert_eq!(err.to_string(), "stage `clippy` failed");
        let outcomes: Vec<String> =
            suite.stages.iter().map(|stage| format!("{} {}", stage.name, stage.outcome)).collect();
        assert_eq!(outcomes, ["fmt ok", "clippy FAILED"]);
    }

    #[test]
    fn test_output_is_counted_and_failure_reported() {
        let mut counts = TestCounts::default();
        let mut passing = Command::new("sh");
        passing.args(["-c", "echo 'test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured'"]);
        let mut echoed = Vec::new();
        run_counting_tests(&mut passing, &mut counts, &mut echoed).unwrap();
        let mut failing = Command::new("sh");
        failing.args(["-c", "echo 'test result: FAILED. 1 passed; 1 failed; 0 ignored'; exit 101"]);
        let err = run_counting_tests(&mut failing, &mut counts, &mut echoed).unwrap_err();
        assert!(err.to_string().contains("failed (exit status: 101)"), "{err}");
        assert_eq!(counts, TestCounts { passed: 3, failed: 1, ignored: 0 });
        assert!(String::from_utf8(echoed).unwrap().ends_with("1 failed; 0 ignored\n"));
    }

    #[test]
    fn ebpf_clippy_lints_the_bpf_target_with_aya_build_flags() {
        let command = describe(&clippy_ebpf());
        assert!(command.contains("cargo +nightly clippy --package tracer-ebpf --target bpf"), "{command}");
        assert!(command.contains("-Z build-std=core"), "{command}");
        assert!(command.contains(&format!("bpf_target_arch=\"{}\"", std::env::consts::ARCH)), "{command}");
        assert!(command.ends_with("-- -D warnings"), "{command}");
    }
}
