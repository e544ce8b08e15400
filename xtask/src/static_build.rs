//! The static (musl) sockerr the container image ships, and the check that it needs
//! nothing from the filesystem it runs in (the image is `FROM scratch`).
//!
//! No container engine runs where the suite runs, so the check does what the image does:
//! it runs the binary in an empty root (`chroot` into a fresh directory holding only the
//! binary). A dynamically linked binary fails there at once: its ELF interpreter is missing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    arch::Arch,
    paths::{target_dir, workspace_root},
    process::{find_in_path, run_inherited, stdout_of},
    setup_report::Report,
    system_packages,
};

/// `x86_64-unknown-linux-musl` on x86-64: musl links into a static executable.
pub fn musl_target() -> String {
    Arch::host().musl_target()
}

/// Which build of sockerr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// What the image ships: without default features, so the workloads (`sockerr demo`,
    /// `sockerr scenario`) stay out.
    Shipped,
    /// With the workloads, for the end-to-end tests (on the host and in the guests).
    WithWorkloads,
}

impl Flavour {
    /// Where the build is kept: cargo links both flavours to the same
    /// `target/<musl target>/release/sockerr`, so the suite, which builds one after the
    /// other, keeps the test one under a name of its own.
    fn binary_name(self) -> &'static str {
        match self {
            Self::Shipped => "sockerr",
            Self::WithWorkloads => "sockerr-with-workloads",
        }
    }
}

/// Builds `target/<musl target>/release/sockerr` for the host, as the image ships it. Run
/// setup first (nightly and bpf-linker for the eBPF object, the musl target, musl-gcc).
pub fn build_static() -> Result<PathBuf> {
    build_musl(Arch::host(), Flavour::Shipped)
}

/// Builds `target/<musl target of arch>/release/sockerr` (kept as `sockerr-with-workloads`
/// for the tests), installing the target and the cross compiler when missing. aya-build
/// compiles the eBPF object for the same architecture (its `bpf_target_arch` follows the
/// target), so each binary embeds programs that read that architecture's registers.
pub fn build_musl(arch: Arch, flavour: Flavour) -> Result<PathBuf> {
    ensure_musl_toolchain(arch)?;
    let target = arch.musl_target();
    let mut command = musl_cargo(arch, &["build", "--release", "--package", "tracer"]);
    if flavour == Flavour::Shipped {
        command.arg("--no-default-features");
    }
    run_inherited(&mut command)?;
    let release = target_dir().join(&target).join("release");
    let built = release.join("sockerr");
    if !built.is_file() {
        bail!("cargo built tracer for {target} but {} does not exist", built.display());
    }
    let binary = release.join(flavour.binary_name());
    if binary != built {
        fs::copy(&built, &binary)
            .with_context(|| format!("copying {} to {}", built.display(), binary.display()))?;
    }
    Ok(binary)
}

/// `cargo <args> --target <musl target of arch>` with the C compiler and linker it needs.
pub fn musl_cargo(arch: Arch, args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root()).args(args).args(["--target", &arch.musl_target()]);
    command.envs(arch.cargo_env(|program| find_in_path(program).is_some()).into_iter().filter(
        // A value the user set wins.
        |(name, _)| std::env::var_os(name).is_none(),
    ));
    command
}

/// The musl target of `arch` and, for another architecture, Debian's cross compiler.
pub fn ensure_musl_toolchain(arch: Arch) -> Result<()> {
    let mut report = Report::default();
    if arch != Arch::host() {
        system_packages::ensure_commands(&arch.cross_packages(), &mut report)?;
    }
    crate::toolchain::ensure_static_target(&mut report, &arch.musl_target())
}

/// Runs `sockerr --version` and `sockerr trace --help` in an empty root and checks what
/// they print. Needs root (chroot).
pub fn check_in_empty_root(binary: &Path) -> Result<()> {
    let root = target_dir().join("static-root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    fs::copy(binary, root.join("sockerr"))
        .with_context(|| format!("copying {} into {}", binary.display(), root.display()))?;
    let result = run_checks(&root);
    fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    result
}

fn run_checks(root: &Path) -> Result<()> {
    let entries: Vec<_> = fs::read_dir(root)?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    if entries != ["sockerr"] {
        bail!("{} should hold only the binary, holds {entries:?}", root.display());
    }
    let chroot = find_in_path("chroot").context("`chroot` (coreutils) is not on PATH")?;
    let version = stdout_of(&mut chrooted(&chroot, root, &["--version"]))?;
    check_version(&version)?;
    let help = stdout_of(&mut chrooted(&chroot, root, &["trace", "--help"]))?;
    check_trace_help(&help)?;
    let commands = stdout_of(&mut chrooted(&chroot, root, &["help"]))?;
    check_no_workloads(&commands)?;
    eprintln!(
        "static-binary: `{}`, `help` (no workloads) and `trace --help` run in an empty root",
        version.trim()
    );
    Ok(())
}

/// `chroot ROOT /sockerr ARGS` with an empty environment: nothing from the host leaks in
/// (`chroot` is given by its path: without PATH it could not be found).
fn chrooted(chroot: &Path, root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(chroot);
    command.arg(root).arg("/sockerr").args(args).env_clear();
    command
}

fn check_version(output: &str) -> Result<()> {
    let expected = format!("sockerr {}", env!("CARGO_PKG_VERSION"));
    if output.trim() != expected {
        bail!("`sockerr --version` printed {:?}, expected {expected:?}", output.trim());
    }
    Ok(())
}

fn check_trace_help(output: &str) -> Result<()> {
    for expected in ["Usage: sockerr trace", "--comm <NAME>", "--host-proc <PATH>", "--kubernetes"] {
        if !output.contains(expected) {
            bail!("`sockerr trace --help` lacks {expected:?}:\n{output}");
        }
    }
    Ok(())
}

/// The shipped binary lists no `demo` command: the workloads (feature `demo`) stay out.
fn check_no_workloads(help: &str) -> Result<()> {
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    if !commands.contains(&"trace") {
        bail!("`sockerr help` lists no `trace` command:\n{help}");
    }
    if commands.contains(&"demo") {
        bail!("the static binary was built with the `demo` feature (it lists `demo`):\n{help}");
    }
    Ok(())
}

/// Adds the musl target to the active toolchain when its standard library is missing.
pub fn ensure_target(report: &mut Report) -> Result<()> {
    let target = musl_target();
    let sysroot = stdout_of(Command::new("rustc").args(["--print", "sysroot"]))?;
    if Path::new(sysroot.trim()).join("lib/rustlib").join(&target).join("lib").is_dir() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    run_inherited(Command::new("rustup").args(["target", "add", &target])).with_context(|| {
        format!("the static build needs the {target} target: run `rustup target add {target}`")
    })?;
    report.did(format!("added the {target} target"), started.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::describe;

    #[test]
    fn musl_target_follows_the_architecture() {
        assert!(musl_target().ends_with("-unknown-linux-musl"));
        assert!(musl_target().starts_with(std::env::consts::ARCH));
    }

    #[test]
    fn version_must_match_exactly() {
        check_version(&format!("sockerr {}\n", env!("CARGO_PKG_VERSION"))).unwrap();
        let err = check_version("").unwrap_err().to_string();
        assert!(err.contains("expected \"sockerr "), "{err}");
        assert!(check_version("sockerr 0.0.0-other").is_err());
    }

    #[test]
    fn help_must_list_the_flags() {
        let help = "Usage: sockerr trace [OPTIONS]\n  --comm <NAME>\n  --host-proc <PATH>\n  --kubernetes\n";
        check_trace_help(help).unwrap();
        let err = check_trace_help("Usage: sockerr trace\n--comm <NAME>\n").unwrap_err().to_string();
        assert!(err.contains("--host-proc"), "{err}");
    }

    #[test]
    fn the_shipped_binary_must_not_list_demo() {
        let product = "Usage: sockerr <COMMAND>\n\nCommands:\n  trace   Trace\n  daemon  Serve\n  help  Print\n\nOptions:\n";
        check_no_workloads(product).unwrap();
        let with_demo = product.replace("  daemon", "  demo    Reproduce\n  daemon");
        let err = check_no_workloads(&with_demo).unwrap_err().to_string();
        assert!(err.contains("`demo` feature"), "{err}");
        assert!(check_no_workloads("Usage: sockerr\n").is_err(), "no command list at all");
    }

    #[test]
    fn the_check_runs_the_binary_at_the_new_root_with_no_environment() {
        let command = chrooted(Path::new("/usr/sbin/chroot"), Path::new("/tmp/r"), &["--version"]);
        assert_eq!(describe(&command), "/usr/sbin/chroot /tmp/r /sockerr --version");
        assert!(command.get_envs().all(|(_, value)| value.is_none()), "env_clear");
    }
}
