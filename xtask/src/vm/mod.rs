//! `cargo xtask vm-test`: the privileged end-to-end tests inside Debian kernels booted
//! with qemu, the host's root shared read-only over 9p (README: "Kernels").
//!
//! Per kernel: resolve and cache the package (kernel.rs), pick the modules the guest
//! needs (modules.rs), pack vm-init, its plan and the modules into an initramfs
//! (initramfs.rs), boot it with a time limit and read the exit statuses (qemu.rs).

mod guest_programs;
mod initramfs;
pub mod kernel;
mod modules;
mod qemu;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
pub use kernel::{KernelSpec, Series};
use qemu::Accel;
use vm_init::{Plan, Run, Status};

use crate::{
    arch::Arch,
    paths::{target_dir, workspace_root},
    privileges::is_root,
    process::{describe, run_inherited},
    setup,
    setup_report::Report,
    static_build::{self, Flavour},
    system_packages::{self, RequiredCommand},
};

/// The e2e test targets run inside the VMs: the incident scenarios (Cilium's EADDRNOTAVAIL
/// family and Istio's resets, whose tracepoints differ by kernel) and the backend
/// comparison, and `kernel_losses` (the loss counters, whose pairing of the asynchronous
/// halves depends on the kernel's order) with `skipped_runs` (the runs the kernel skipped,
/// which it counts for tracepoint programs only from Linux 6.7). `enrich` (netns unit-style tests of the lookup
/// code, which does not depend on the tracing kernel), `errors` (argument and environment
/// errors) and `daemon` (HTTP and metrics over the same records) stay on the host.
pub const VM_TEST_TARGETS: &[&str] = &[
    "cilium",
    "bind",
    "refused",
    "exhaustion",
    "filters",
    "backends",
    "resets",
    "listen",
    "drops",
    "ports",
    "kernel_losses",
    "skipped_runs",
];

/// Run in the guests of another architecture than the host's, besides the e2e targets:
/// the unit test proving the embedded eBPF object was built for that architecture (on
/// the host architecture it runs with the other unit tests).
const OBJECT_ARCH_TEST: &str =
    "kernel::object_arch::tests::embedded_object_reads_this_architectures_registers";
/// Modest: the guest runs the tests and nothing else; the machine is shared.
const GUEST_MEMORY_MIB: u32 = 1536;
const GUEST_CPUS: u32 = 2;
/// Per kernel: boot and tests took 7.5-11 min under TCG on the slow 2-vCPU hosts (6.12
/// arm64 guests passed 600 s twice on 2026-11-30, the second time at 653.6 s with every
/// test passing); a hung guest is still killed before CI's 90 minutes run out.
pub const DEFAULT_TIME_LIMIT_SECS: u64 = 900;
/// How long a KVM probe boot may take before KVM counts as unusable.
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM when a probe boot with it succeeds, else TCG.
    Auto,
    Tcg,
    Kvm,
}

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// The guests' architecture: the host's, or arm64 under emulation (qemu `virt` board,
    /// TCG), with every program the guest runs built static for it.
    #[arg(long, value_enum, default_value_t = Arch::host())]
    pub arch: Arch,
    /// Kernel to test on (repeatable): a Debian series, or a kernel .deb or vmlinuz file.
    #[arg(long = "kernel", value_name = "6.1|6.12|PATH", default_values_t = [KernelSpec::Series(Series::V6_1), KernelSpec::Series(Series::V6_12)])]
    pub kernels: Vec<KernelSpec>,
    /// Accelerator: software emulation (tcg) works everywhere; kvm needs a working /dev/kvm.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Time limit of one kernel's boot and tests, in seconds (a hung guest is killed).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIME_LIMIT_SECS)]
    pub time_limit: u64,
    /// How many tests of one target run at once inside the guest.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub test_threads: u16,
    /// Passed to every test binary in the guest, e.g. a test name filter.
    #[arg(last = true, value_name = "TEST_ARGS")]
    pub test_args: Vec<String>,
}

/// Guests booted at once: under single-threaded TCG each is one busy host thread, and
/// the machine the suite is sized for has two CPUs.
const CONCURRENT_GUESTS: usize = 2;

/// Boots of one kernel when the first panics before the guest is ready (see
/// [`qemu::panicked_while_booting`]); a panic after that fails at once.
const BOOT_ATTEMPTS: u32 = 2;

pub fn run(args: &VmTestArgs) -> Result<()> {
    if !is_root()? {
        bail!(
            "vm-test installs qemu and kernels with apt and shares / with the guests: run \
             `sudo -E cargo xtask vm-test`"
        );
    }
    let mut prepared = Prepared::new(args)?;
    let outcome = prepared.test_kernels(&args.kernels, &|_| {});
    eprintln!("\n{}", prepared.summary());
    outcome.context("vm-test failed")
}

#[derive(Debug, Args)]
pub struct VmRunArgs {
    /// The guest's architecture (see vm-test).
    #[arg(long, value_enum, default_value_t = Arch::host())]
    pub arch: Arch,
    /// Kernel to boot: a Debian series, or a kernel .deb or vmlinuz file.
    #[arg(long = "kernel", value_name = "6.1|6.12|PATH", default_value_t = KernelSpec::Series(Series::V6_12))]
    pub kernel: KernelSpec,
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Time limit of the boot and the command, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIME_LIMIT_SECS)]
    pub time_limit: u64,
    /// The command, run as root in the guest from the workspace root; `sockerr` is the
    /// release binary just built.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `cargo xtask vm-run`: one command of the host inside a test kernel, e.g. to see what
/// sockerr prints there.
pub fn run_one(args: &VmRunArgs) -> Result<()> {
    if !is_root()? {
        bail!("vm-run installs qemu and kernels with apt and shares / with the guest: run it as root");
    }
    let test_args = VmTestArgs {
        arch: args.arch,
        kernels: vec![args.kernel.clone()],
        accel: args.accel,
        time_limit: args.time_limit,
        test_threads: 1,
        test_args: Vec::new(),
    };
    let mut prepared = Prepared::build(&test_args, false)?;
    let mut argv = args.command.clone();
    if argv[0] == "sockerr" {
        argv[0] = prepared.sockerr.display().to_string();
    }
    prepared.run_command(&args.kernel, argv)
}

/// Everything built once for all kernels.
pub struct Prepared {
    arch: Arch,
    init: PathBuf,
    /// The tracer crate's unit tests, built for a guest of another architecture.
    unit_tests: Option<PathBuf>,
    /// For a guest of another architecture: the /usr with Debian's programs built for it
    /// (guest_programs.rs), bound over the host's.
    guest_usr: Option<PathBuf>,
    tests: BTreeMap<String, PathBuf>,
    sockerr: PathBuf,
    accel_choice: AccelChoice,
    accel: Option<Accel>,
    time_limit: Duration,
    test_threads: u16,
    test_args: Vec<String>,
    results: Vec<KernelResult>,
}

/// A boot ready to start (see [`Prepared::stage_boot`]).
struct StagedBoot {
    kernel: kernel::Kernel,
    work: PathBuf,
    initramfs: PathBuf,
    shares: Vec<vm_init::Share>,
    planned: Vec<String>,
    accel: Accel,
    prepare: Duration,
    /// A console line the boot must show (a test run by exact name passes when it is gone).
    required_line: Option<String>,
}

/// How a boot ended.
struct Booted {
    ended: qemu::Ended,
    required_seen: bool,
}

struct KernelResult {
    kernel: String,
    accel: Accel,
    prepare: Duration,
    boot_and_tests: Duration,
    passed: bool,
}

/// What `cargo xtask vm-test` (and `test` without --no-vm) runs besides the build, for
/// guests of `arch`.
fn vm_commands(arch: Arch) -> Vec<RequiredCommand> {
    let qemu = match arch {
        Arch::Amd64 => {
            RequiredCommand::new("qemu-system-x86_64", "qemu-system-x86", "booting the amd64 test kernels")
        }
        Arch::Arm64 => {
            RequiredCommand::new("qemu-system-aarch64", "qemu-system-arm", "booting the arm64 test kernels")
        }
    };
    let mut commands = vec![qemu];
    commands.extend_from_slice(VM_TOOLS);
    commands
}

const VM_TOOLS: &[RequiredCommand] = &[
    RequiredCommand::new("depmod", "kmod", "indexing the test kernels' modules"),
    RequiredCommand::new("dpkg-deb", "dpkg", "unpacking the test kernels' packages"),
];

impl Prepared {
    /// Installs what is missing, builds sockerr, the test binaries and vm-init.
    pub fn new(args: &VmTestArgs) -> Result<Self> {
        Self::build(args, true)
    }

    fn build(args: &VmTestArgs, with_tests: bool) -> Result<Self> {
        let started = Instant::now();
        let arch = args.arch;
        let mut report = Report::default();
        system_packages::ensure_commands(&vm_commands(arch), &mut report)?;
        setup::ensure()?;
        static_build::ensure_musl_toolchain(arch)?;
        // The guest runs the host's root: the host's own programs where it shares the
        // host's architecture, static ones built for it otherwise. Ours are static either
        // way (the suite's release builds all are).
        let foreign = arch != Arch::host();
        let sockerr = static_build::build_musl(arch, Flavour::WithWorkloads)?;
        let init = build_init(arch)?;
        let tests = if with_tests { build_tests(arch)? } else { BTreeMap::new() };
        let unit_tests = if with_tests && foreign { Some(build_unit_tests(arch)?) } else { None };
        let guest_usr =
            if foreign { Some(guest_programs::prepare(arch, &target_dir().join("vm-cache"))?) } else { None };
        for name in VM_TEST_TARGETS.iter().filter(|_| with_tests) {
            if !tests.contains_key(*name) {
                bail!("the e2e crate has no test target `{name}` (VM_TEST_TARGETS in xtask/src/vm/mod.rs)");
            }
        }
        eprintln!("vm-test: built for the guests in {:.1} s", started.elapsed().as_secs_f64());
        Ok(Self {
            arch,
            init,
            unit_tests,
            guest_usr,
            tests,
            sockerr,
            accel_choice: args.accel,
            accel: None,
            time_limit: Duration::from_secs(args.time_limit),
            test_threads: args.test_threads,
            test_args: args.test_args.clone(),
            results: Vec::new(),
        })
    }

    /// Boots every kernel of `specs` and runs the VM test targets in it, up to
    /// [`CONCURRENT_GUESTS`] at once; `on_line` sees every guest's console. Every kernel
    /// runs even when one fails; the error names each that failed.
    pub fn test_kernels(&mut self, specs: &[KernelSpec], on_line: &(dyn Fn(&str) + Sync)) -> Result<()> {
        let mut failures = Vec::new();
        for batch in specs.chunks(CONCURRENT_GUESTS) {
            let mut staged = Vec::new();
            for spec in batch {
                let (runs, required_line) = self.test_runs();
                match self.stage_boot(spec, runs, &workspace_root().join("tests"), required_line) {
                    Ok(boot) => staged.push(boot),
                    Err(error) => failures.push(format!("{spec}: {error:#}")),
                }
            }
            let booted = self.boot_all(&staged, on_line);
            for (boot, booted) in staged.iter().zip(booted) {
                if let Err(error) = self.finish(boot, booted) {
                    failures.push(format!("{error:#}"));
                }
            }
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("\n\n"));
        }
        Ok(())
    }

    /// The runs of one kernel's boot, and the console line that must show up among them.
    fn test_runs(&self) -> (Vec<Run>, Option<String>) {
        let mut runs: Vec<Run> = VM_TEST_TARGETS
            .iter()
            .map(|name| {
                let mut argv = vec![self.tests[*name].display().to_string()];
                argv.push(format!("--test-threads={}", self.test_threads));
                argv.extend(self.test_args.iter().cloned());
                Run { name: name.to_string(), argv }
            })
            .collect();
        let Some(unit_tests) = &self.unit_tests else {
            return (runs, None);
        };
        runs.push(Run {
            name: "object-arch".into(),
            argv: vec![unit_tests.display().to_string(), "--exact".into(), OBJECT_ARCH_TEST.into()],
        });
        // `--exact` with a name that no longer exists runs nothing and passes: the line
        // of the test itself must show up.
        (runs, Some(format!("test {OBJECT_ARCH_TEST} ... ok")))
    }

    /// Boots `spec` and runs one command of the host in it, from the workspace root.
    pub fn run_command(&mut self, spec: &KernelSpec, argv: Vec<String>) -> Result<()> {
        let runs = vec![Run { name: "command".into(), argv }];
        let boot = self.stage_boot(spec, runs, workspace_root(), None)?;
        let booted =
            self.boot_all(std::slice::from_ref(&boot), &|_| {}).pop().context("no boot was attempted")?;
        self.finish(&boot, booted)
    }

    /// Everything a boot needs written before qemu starts: the kernel (downloaded and
    /// unpacked once), its modules, the plan and the initramfs.
    fn stage_boot(
        &mut self,
        spec: &KernelSpec,
        runs: Vec<Run>,
        cwd: &Path,
        required_line: Option<String>,
    ) -> Result<StagedBoot> {
        let started = Instant::now();
        let cache = target_dir().join("vm-cache");
        let kernel =
            kernel::prepare(spec, self.arch, &cache).with_context(|| format!("preparing kernel {spec}"))?;
        let work = target_dir().join("vm-run").join(&kernel.release);
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let module_files = self.module_files(&kernel)?;
        let modules: Vec<(String, &Path)> =
            module_files.iter().map(|(name, path)| (name.clone(), path.as_path())).collect();
        let accel = self.accel(&kernel, &work, &modules)?;
        let planned: Vec<String> = runs.iter().map(|run| run.name.clone()).collect();
        let plan = self.plan(spec, &module_files, runs, cwd, accel);
        let shares = plan.shares.clone();
        let initramfs = work.join("initramfs.cpio");
        initramfs::write(&initramfs, &self.init, &plan, &modules)?;
        Ok(StagedBoot {
            kernel,
            work,
            initramfs,
            shares,
            planned,
            accel,
            prepare: started.elapsed(),
            required_line,
        })
    }

    /// Boots the staged kernels at once, each on a thread of its own; their outcomes in
    /// the same order.
    fn boot_all(&self, staged: &[StagedBoot], on_line: &(dyn Fn(&str) + Sync)) -> Vec<Result<Booted>> {
        thread::scope(|scope| {
            let handles: Vec<_> =
                staged.iter().map(|boot| scope.spawn(move || self.boot_staged(boot, on_line))).collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| Err(anyhow!("the thread running a guest panicked")))
                })
                .collect()
        })
    }

    fn boot_staged(&self, staged: &StagedBoot, on_line: &(dyn Fn(&str) + Sync)) -> Result<Booted> {
        let release = &staged.kernel.release;
        let boot = qemu::Boot {
            arch: self.arch,
            image: &staged.kernel.image,
            initramfs: &staged.initramfs,
            accel: staged.accel,
            memory_mib: GUEST_MEMORY_MIB,
            cpus: GUEST_CPUS,
            status_file: staged.work.join("status"),
            time_limit: self.time_limit,
            shares: &staged.shares,
        };
        let mut required_seen = false;
        let mut ended = None;
        for attempt in 1..=BOOT_ATTEMPTS {
            eprintln!("vm-test: booting {release} ({}) with {}", staged.kernel.image.display(), staged.accel);
            let this = qemu::boot(&boot, |line| {
                println!("[{release}] {line}");
                required_seen |= staged.required_line.as_deref() == Some(line.trim_end());
                on_line(line);
            })?;
            let again = attempt < BOOT_ATTEMPTS && qemu::panicked_while_booting(&this);
            ended = Some(this);
            if !again {
                break;
            }
            eprintln!(
                "vm-test: {release} panicked while booting, before its init was ready (nothing of ours ran): \
                 booting it again"
            );
        }
        let ended = ended.context("no boot was attempted")?;
        Ok(Booted { ended, required_seen })
    }

    /// Records a boot's result; its verdict as an error when anything failed.
    fn finish(&mut self, staged: &StagedBoot, booted: Result<Booted>) -> Result<()> {
        let release = &staged.kernel.release;
        let Booted { ended, required_seen } = booted.with_context(|| format!("booting {release}"))?;
        let planned: Vec<&str> = staged.planned.iter().map(String::as_str).collect();
        let verdict = qemu::verdict(&ended, &planned, self.time_limit).or_else(|| {
            let required = staged.required_line.as_ref().filter(|_| !required_seen)?;
            Some(format!("the guest did not report `{required}`: is the test still named so?"))
        });
        self.results.push(KernelResult {
            kernel: release.clone(),
            accel: staged.accel,
            prepare: staged.prepare,
            boot_and_tests: ended.elapsed,
            passed: verdict.is_none(),
        });
        if let Some(verdict) = verdict {
            bail!(
                "{release}: {verdict}\nlast {} console lines:\n{}",
                ended.console_tail.len(),
                ended.console_tail.join("\n")
            );
        }
        Ok(())
    }

    /// Module files by their name in the initramfs: load order as a number prefix.
    fn module_files(&self, kernel: &kernel::Kernel) -> Result<Vec<(String, PathBuf)>> {
        let Some(dir) = &kernel.modules_dir else { return Ok(Vec::new()) };
        let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
        let index = modules::ModuleIndex::parse(&read("modules.dep"), &read("modules.builtin"));
        let order = index.load_order(&modules::guest_modules(self.arch))?;
        Ok(order
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let file = path.rsplit('/').next().unwrap_or(path);
                (format!("{:02}-{file}", i + 1), dir.join(path))
            })
            .collect())
    }

    fn plan(
        &self,
        spec: &KernelSpec,
        modules: &[(String, PathBuf)],
        runs: Vec<Run>,
        cwd: &Path,
        accel: Accel,
    ) -> Plan {
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
            ("HOME".to_string(), "/tmp".to_string()),
            ("RUST_BACKTRACE".to_string(), "1".to_string()),
            ("SOCKERR_BIN".to_string(), self.sockerr.display().to_string()),
        ];
        // Debian's kernels have kprobes: the backend tests must exercise them there
        // rather than accept their absence.
        if matches!(spec, KernelSpec::Series(_)) {
            env.push(("SOCKERR_E2E_KPROBES".to_string(), "required".to_string()));
        }
        let scale = time_scale(self.arch, accel);
        if scale > 1 {
            env.push(("SOCKERR_E2E_TIME_SCALE".to_string(), scale.to_string()));
        }
        Plan {
            modules: modules.iter().map(|(name, _)| name.clone()).collect(),
            root_tag: qemu::ROOT_TAG.to_string(),
            cwd: cwd.display().to_string(),
            env,
            runs,
            shares: shares(),
            binds: self
                .guest_usr
                .iter()
                .map(|usr| vm_init::Bind { source: usr.display().to_string(), target: "/usr".into() })
                .collect(),
        }
    }

    /// The accelerator, decided once: KVM only when a probe boot with it completes.
    fn accel(&mut self, kernel: &kernel::Kernel, work: &Path, modules: &[(String, &Path)]) -> Result<Accel> {
        if let Some(accel) = self.accel {
            return Ok(accel);
        }
        let accel = match self.accel_choice {
            // KVM runs guests of the host's architecture only.
            _ if self.arch != Arch::host() => Accel::Tcg,
            AccelChoice::Tcg => Accel::Tcg,
            AccelChoice::Kvm => Accel::Kvm,
            AccelChoice::Auto => {
                let why_not = self.probe_kvm(kernel, work, modules)?;
                match why_not {
                    None => {
                        eprintln!("vm-test: a probe boot with KVM worked: using KVM");
                        Accel::Kvm
                    }
                    Some(why) => {
                        eprintln!("vm-test: using TCG (software emulation): {why}");
                        Accel::Tcg
                    }
                }
            }
        };
        self.accel = Some(accel);
        Ok(accel)
    }

    /// Why KVM cannot be used, or `None` when a boot with it ran an empty plan to the end.
    fn probe_kvm(
        &self,
        kernel: &kernel::Kernel,
        work: &Path,
        modules: &[(String, &Path)],
    ) -> Result<Option<String>> {
        if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
            return Ok(Some("/dev/kvm cannot be opened".into()));
        }
        let plan = Plan {
            modules: modules.iter().map(|(name, _)| name.clone()).collect(),
            root_tag: qemu::ROOT_TAG.to_string(),
            cwd: "/".into(),
            env: Vec::new(),
            runs: Vec::new(),
            shares: Vec::new(),
            binds: Vec::new(),
        };
        let initramfs = work.join("kvm-probe.cpio");
        initramfs::write(&initramfs, &self.init, &plan, modules)?;
        let boot = qemu::Boot {
            arch: self.arch,
            image: &kernel.image,
            initramfs: &initramfs,
            accel: Accel::Kvm,
            memory_mib: GUEST_MEMORY_MIB,
            cpus: GUEST_CPUS,
            status_file: work.join("kvm-probe.status"),
            time_limit: KVM_PROBE_LIMIT,
            shares: &[],
        };
        let ended = qemu::boot(&boot, |_| {})?;
        if ended.statuses.contains(&Status::Done) {
            return Ok(None);
        }
        let last = ended.console_tail.last().cloned().unwrap_or_default();
        Ok(Some(format!("a probe boot with KVM failed ({last})")))
    }

    pub fn summary(&self) -> String {
        let mut lines =
            vec![format!("{:<24} {:>5} {:>10} {:>15}  result", "kernel", "accel", "prepare", "boot + tests")];
        for result in &self.results {
            lines.push(format!(
                "{:<24} {:>5} {:>8.1} s {:>13.1} s  {}",
                result.kernel,
                result.accel.to_string(),
                result.prepare.as_secs_f64(),
                result.boot_and_tests.as_secs_f64(),
                if result.passed { "ok" } else { "FAILED" }
            ));
        }
        lines.join("\n")
    }
}

/// How many times longer the e2e tests wait for what they expect in a guest (tests/src/lib.rs
/// `patience`; the pauses of "nothing happens" checks are not scaled, so a larger scale
/// costs nothing while the guest keeps up). Under TCG a guest shares the host's two CPUs
/// with a second guest ([`CONCURRENT_GUESTS`]) and with qemu's 9p server, which serves
/// every file python3 imports: `python3 -m http.server` once took more than 10 s to listen
/// in an amd64 guest beside another. A guest of another architecture also has every
/// instruction translated, several times slower again.
fn time_scale(arch: Arch, accel: Accel) -> u32 {
    match accel {
        Accel::Kvm => 1,
        Accel::Tcg if arch == Arch::host() => 2,
        Accel::Tcg => 4,
    }
}

/// The workspace and the build output, exported on their own when they sit where the
/// guest mounts a tmpfs (a CI clone under /tmp).
fn shares() -> Vec<vm_init::Share> {
    let workspace = workspace_root().display().to_string();
    let target = target_dir().display().to_string();
    vm_init::hidden_paths(&[&workspace, &target])
        .into_iter()
        .enumerate()
        .map(|(i, path)| vm_init::Share { tag: format!("share{i}"), path })
        .collect()
}

/// vm-init, static, for the initramfs.
fn build_init(arch: Arch) -> Result<PathBuf> {
    let mut command =
        static_build::musl_cargo(arch, &["build", "--release", "--package", "vm-init", "--bin", "vm-init"]);
    run_inherited(&mut command)?;
    let init = target_dir().join(arch.musl_target()).join("release").join("vm-init");
    if !init.is_file() {
        bail!("cargo built vm-init but {} does not exist", init.display());
    }
    Ok(init)
}

/// The e2e test binaries by target name (cargo's JSON messages name them), static like
/// every release build of the suite (the host's e2e stage built the same ones).
fn build_tests(arch: Arch) -> Result<BTreeMap<String, PathBuf>> {
    test_build(static_build::musl_cargo(arch, &["test", "--release", "--package", "sockerr-e2e", "--no-run"]))
}

/// The tracer crate's unit-test binary, static for `arch`.
fn build_unit_tests(arch: Arch) -> Result<PathBuf> {
    let command =
        static_build::musl_cargo(arch, &["test", "--release", "--package", "tracer", "--lib", "--no-run"]);
    let built = test_build(command)?;
    built.get("tracer").cloned().context("cargo built no unit-test binary of tracer")
}

/// Runs a `cargo test --no-run` command; the test executables it built, by target name.
fn test_build(mut command: Command) -> Result<BTreeMap<String, PathBuf>> {
    command.args(["--message-format", "json-render-diagnostics"]).stderr(Stdio::inherit());
    let output = command.output().with_context(|| format!("could not start `{}`", describe(&command)))?;
    if !output.status.success() {
        bail!("`{}` failed ({})", describe(&command), output.status);
    }
    Ok(test_executables(&String::from_utf8_lossy(&output.stdout)))
}

fn test_executables(messages: &str) -> BTreeMap<String, PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["profile"]["test"] == true)
        .filter_map(|message| {
            let name = message["target"]["name"].as_str()?.to_string();
            let executable = message["executable"].as_str()?;
            Some((name, PathBuf::from(executable)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_commands_name_a_package_and_a_reason() {
        for arch in Arch::ALL {
            crate::system_packages::tests::assert_well_formed(&vm_commands(arch));
        }
    }

    #[test]
    fn test_executables_come_from_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"tracer","kind":["lib"]},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"name":"cilium","kind":["test"]},"profile":{"test":true},"executable":"/w/target/release/deps/cilium-1"}
{"reason":"build-finished","success":true}"#;
        let found = test_executables(messages);
        assert_eq!(found.len(), 1);
        assert_eq!(found["cilium"], PathBuf::from("/w/target/release/deps/cilium-1"));
    }

    #[test]
    fn vm_targets_exist_in_the_e2e_crate() {
        for name in VM_TEST_TARGETS {
            let file = workspace_root().join("tests/tests").join(format!("{name}.rs"));
            assert!(file.is_file(), "{} is missing", file.display());
        }
    }
}
