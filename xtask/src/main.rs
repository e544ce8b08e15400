//! sockerr's developer tasks: `cargo xtask <command>` (the alias is in .cargo/config.toml).
//!
//! Everything a fresh machine lacks (nightly rust-src, bpf-linker, system tools) is
//! installed by `setup`, which every other command runs first.

mod alerts;
mod arch;
mod bench;
mod bpf_linker;
mod build;
mod fuzz;
mod image;
mod manifests;
#[cfg(test)]
mod module_cycles;
mod paths;
mod privileges;
mod process;
mod run;
mod rustfmt;
mod setup;
mod setup_report;
mod static_build;
mod system_packages;
mod test;
mod toolchain;
mod vm;

use std::{ffi::OsString, process::ExitCode};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, run and test sockerr; installs what the machine lacks first"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what building and testing need (nightly rust-src and clippy, bpf-linker,
    /// system tools). Checks only, when everything is present.
    Setup,
    /// Build sockerr with its eBPF programs embedded and print the binary's path.
    Build(BuildArgs),
    /// Build the container image for amd64 and arm64 (one OCI index) offline with buildah
    /// and write it to target/image/ as an OCI archive; prints its path.
    #[command(after_help = "Load it with `podman load -i ARCHIVE`, or push both architectures with \
                            `skopeo copy --all oci-archive:ARCHIVE docker://REGISTRY/sockerr:TAG`")]
    Image,
    /// Build sockerr and run it as root (through `sudo -E` when not root).
    #[command(after_help = "Example: cargo xtask run -- trace --comm envoy --output json")]
    Run(RunArgs),
    /// Format the workspace as the suite's fmt stage checks it (nightly rustfmt: import
    /// grouping is still unstable).
    Fmt,
    /// Run the whole suite: setup, fmt, clippy (userspace and eBPF), unit tests, fuzzing,
    /// release build, end-to-end tests (as root). Stops at the first failing stage.
    Test(test::TestArgs),
    /// Run the privileged end-to-end tests inside Debian kernels booted with qemu
    /// (kernels downloaded once and cached under target/vm-cache).
    #[command(after_help = "Example: cargo xtask vm-test --kernel 6.12 -- cilium")]
    VmTest(vm::VmTestArgs),
    /// Boot one test kernel and run a command in it (as root, the host's root shared).
    #[command(after_help = "Example: cargo xtask vm-run --kernel 6.1 -- sockerr demo cilium")]
    VmRun(vm::VmRunArgs),
    /// Measure sockerr against no tracing, the floor, bpftrace and strace; throughput,
    /// start-up, and with --soak a million failures under the daemon. Writes BENCHMARKS.md
    /// and target/bench/results.json (as root).
    Bench(bench::BenchArgs),
    /// Fuzz the decoders of data from the kernel or a peer (cargo-fuzz on nightly,
    /// installed when missing); crashes land in target/fuzz/artifacts/TARGET.
    #[command(after_help = "Example: cargo xtask fuzz --time 600 btf")]
    Fuzz(fuzz::FuzzArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Build the debug profile instead of release.
    #[arg(long)]
    debug: bool,
    /// Build a static binary (musl, release), as the container image ships it.
    #[arg(long = "static", conflicts_with = "debug")]
    static_binary: bool,
    /// With --static: the architecture to build for (another one cross-compiles with
    /// Debian's gcc for it). Docker's TARGETARCH names.
    #[arg(long, value_enum, requires = "static_binary")]
    arch: Option<arch::Arch>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Build and run the debug profile instead of release.
    #[arg(long)]
    debug: bool,
    /// Arguments for sockerr, after `--`.
    #[arg(last = true, value_name = "SOCKERR_ARGS")]
    sockerr_args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain without anyhow's backtrace: these are messages for the user,
            // even where RUST_BACKTRACE is set for the sake of tests.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    bpf_linker::put_install_dir_first_on_path()?;
    match cli.command {
        Command::Setup => setup::ensure(),
        Command::Build(args) => {
            setup::ensure()?;
            let binary = if args.static_binary {
                let arch = args.arch.unwrap_or_else(arch::Arch::host);
                static_build::build_musl(arch, static_build::Flavour::Shipped)?
            } else {
                build::build_sockerr(build::Profile::from_debug_flag(args.debug))?
            };
            // stdout carries only the path, so `$(cargo xtask build)` works.
            println!("{}", binary.display());
            Ok(())
        }
        Command::Image => {
            if !privileges::is_root()? {
                anyhow::bail!("buildah's overlay storage needs root: run `sudo -E cargo xtask image`");
            }
            image::run()
        }
        Command::Run(args) => run::run(build::Profile::from_debug_flag(args.debug), &args.sockerr_args),
        Command::Fmt => process::run_inherited(&mut rustfmt::command(false)),
        Command::Test(args) => test::run_suite(&args),
        Command::VmTest(args) => vm::run(&args),
        Command::VmRun(args) => vm::run_one(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_passes_everything_after_the_separator_to_sockerr() {
        let cli =
            Cli::try_parse_from(["xtask", "run", "--debug", "--", "trace", "--help", "--debug"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert!(args.debug);
        assert_eq!(args.sockerr_args, ["trace", "--help", "--debug"]);
    }

    #[test]
    fn vm_flags_parse() {
        let cli =
            Cli::try_parse_from(["xtask", "vm-test", "--kernel", "6.1", "--accel", "tcg", "--", "cilium"])
                .unwrap();
        let Command::VmTest(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert_eq!(args.kernels, [vm::KernelSpec::Series(vm::Series::V6_1)]);
        assert_eq!(args.accel, vm::AccelChoice::Tcg);
        assert_eq!(args.test_args, ["cilium"]);
        let cli = Cli::try_parse_from(["xtask", "vm-test"]).unwrap();
        let Command::VmTest(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert_eq!(args.kernels.len(), 2, "both series by default");
        assert!(Cli::try_parse_from(["xtask", "vm-test", "--kernel", "5.10"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "vm-run"]).is_err(), "vm-run needs a command");
    }

    #[test]
    fn build_static_is_release_only() {
        let cli = Cli::try_parse_from(["xtask", "build", "--static"]).unwrap();
        let Command::Build(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert!(args.static_binary && !args.debug);
        assert!(Cli::try_parse_from(["xtask", "build", "--static", "--debug"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "build", "--static", "--arch", "arm64"]).unwrap();
        let Command::Build(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert_eq!(args.arch, Some(arch::Arch::Arm64));
        assert!(Cli::try_parse_from(["xtask", "build", "--arch", "arm64"]).is_err(), "--arch needs --static");
        assert!(Cli::try_parse_from(["xtask", "build", "--static", "--arch", "riscv64"]).is_err());
    }

    #[test]
    fn fuzz_flags_parse() {
        let cli = Cli::try_parse_from(["xtask", "fuzz", "--time", "30", "btf"]).unwrap();
        let Command::Fuzz(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert_eq!((args.seconds, args.target.as_deref()), (30, Some("btf")));
        let cli = Cli::try_parse_from(["xtask", "fuzz"]).unwrap();
        let Command::Fuzz(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert_eq!((args.seconds, args.target), (60, None), "every target, a minute each");
        assert!(Cli::try_parse_from(["xtask", "fuzz", "--time", "0"]).is_err());
    }

    #[test]
    fn test_flags_parse() {
        let cli = Cli::try_parse_from(["xtask", "test", "--no-vm", "--skip-e2e"]).unwrap();
        let Command::Test(args) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert!(args.no_vm);
        assert!(args.skip_e2e);
        assert_eq!(args.e2e_threads, 2);
        assert!(Cli::try_parse_from(["xtask", "test", "--e2e-threads", "0"]).is_err());
    }
}
