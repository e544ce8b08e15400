//! Rust toolchains: the active one builds userspace, `nightly` builds the eBPF crate
//! (aya-build runs `rustup run nightly cargo build -Z build-std=core`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    process::{find_in_path, run_inherited, stdout_of},
    setup_report::Report,
};

/// What the rest of setup needs to know about the nightly toolchain.
pub struct Nightly {
    pub sysroot: PathBuf,
    pub llvm_major: u32,
}

pub fn ensure_nightly(report: &mut Report) -> Result<Nightly> {
    if find_in_path("rustup").is_none() {
        bail!(
            "rustup is not on PATH: the eBPF programs are built with rustup's `nightly` toolchain. \
             Install rustup (https://rustup.rs) and run `cargo xtask setup` again"
        );
    }
    let list = stdout_of(Command::new("rustup").args(["toolchain", "list"]))?;
    if !lists_nightly_channel(&list) {
        let started = Instant::now();
        eprintln!("setup: installing the nightly toolchain");
        run_inherited(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))
        .context(
            "the nightly toolchain is missing and could not be installed; it builds the eBPF programs. \
             Install it with `rustup toolchain install nightly --profile minimal --component rust-src,clippy,rustfmt` \
             and run `cargo xtask setup` again",
        )?;
        report.did("installed the nightly toolchain", started.elapsed());
    }

    let version = stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_major = llvm_major(&version)?;
    let sysroot = sysroot(Some("+nightly"))?;
    // build-std compiles `core` from these sources.
    let core_sources = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    ensure_component(report, "nightly", "rust-src", &core_sources)?;
    ensure_component(report, "nightly", "clippy", &sysroot.join("bin/cargo-clippy"))?;
    // The fmt stage groups imports, an option only the nightly's rustfmt accepts.
    ensure_component(report, "nightly", "rustfmt", &sysroot.join("bin/cargo-fmt"))?;
    Ok(Nightly { sysroot, llvm_major })
}

/// The active toolchain (stable here) lints and formats the userspace crates.
pub fn ensure_active_lint_tools(report: &mut Report) -> Result<()> {
    let sysroot = sysroot(None)?;
    let toolchain =
        sysroot.file_name().map(|name| name.to_string_lossy().into_owned()).with_context(|| {
            format!("the active toolchain's sysroot {} has no directory name", sysroot.display())
        })?;
    ensure_component(report, &toolchain, "clippy", &sysroot.join("bin/cargo-clippy"))?;
    ensure_component(report, &toolchain, "rustfmt", &sysroot.join("bin/cargo-fmt"))
}

/// A static (musl) target for the active toolchain: the VM's init, the image's binaries,
/// everything an arm64 guest runs.
pub fn ensure_static_target(report: &mut Report, target: &str) -> Result<()> {
    let sysroot = sysroot(None)?;
    let installed = sysroot.join("lib/rustlib").join(target).join("lib");
    if installed.is_dir() {
        return Ok(());
    }
    let started = Instant::now();
    run_inherited(Command::new("rustup").args(["target", "add", target])).with_context(|| {
        format!("the {target} target (static builds) could not be added: run `rustup target add {target}`")
    })?;
    report.did(format!("added the {target} target"), started.elapsed());
    Ok(())
}

fn sysroot(toolchain_override: Option<&str>) -> Result<PathBuf> {
    let mut command = Command::new("rustc");
    command.args(toolchain_override).args(["--print", "sysroot"]);
    Ok(PathBuf::from(stdout_of(&mut command)?.trim()))
}

/// Checks for a file the component ships instead of asking rustup: much faster, and it is
/// the file that is actually used.
fn ensure_component(
    report: &mut Report,
    toolchain: &str,
    component: &str,
    shipped_file: &Path,
) -> Result<()> {
    if shipped_file.exists() {
        return Ok(());
    }
    let started = Instant::now();
    run_inherited(Command::new("rustup").args(["component", "add", component, "--toolchain", toolchain]))
        .with_context(|| {
            format!(
                "{} is missing and could not be installed: run `rustup component add {component} \
                 --toolchain {toolchain}`",
                shipped_file.display()
            )
        })?;
    report.did(format!("added {component} to {toolchain}"), started.elapsed());
    Ok(())
}

/// True when `rustup toolchain list` has the floating `nightly` channel, which is what
/// `+nightly` and aya-build's `rustup run nightly` resolve; dated nightlies do not count.
fn lists_nightly_channel(toolchain_list: &str) -> bool {
    toolchain_list.lines().filter_map(|line| line.split_whitespace().next()).any(|name| {
        name == "nightly"
            || name
                .strip_prefix("nightly-")
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// The LLVM major version from `rustc -vV` (`LLVM version: 22.1.4` gives 22).
pub fn llvm_major(rustc_version_verbose: &str) -> Result<u32> {
    let version = rustc_version_verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .context("`rustc +nightly -vV` printed no `LLVM version:` line: is `nightly` a rustup toolchain?")?
        .trim();
    let major = version.split('.').next().unwrap_or_default();
    major
        .parse()
        .with_context(|| format!("`rustc +nightly -vV` printed an unreadable LLVM version `{version}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIGHTLY_VERBOSE: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
        commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\ncommit-date: 2026-05-19\n\
        host: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";

    #[test]
    fn llvm_major_comes_from_the_llvm_line() {
        assert_eq!(llvm_major(NIGHTLY_VERBOSE).unwrap(), 22);
        assert_eq!(llvm_major("LLVM version: 23.0.0\n").unwrap(), 23);
        assert_eq!(llvm_major("LLVM version: 9\n").unwrap(), 9);
    }

    #[test]
    fn llvm_major_errors_name_the_problem() {
        let err = llvm_major("rustc 1.97.0-nightly\nrelease: 1.97.0-nightly\n").unwrap_err();
        assert!(err.to_string().contains("no `LLVM version:` line"), "{err}");
        let err = llvm_major("LLVM version: x.1\n").unwrap_err();
        assert!(err.to_string().contains("unreadable LLVM version `x.1`"), "{err}");
    }

    #[test]
    fn nightly_channel_is_found_with_or_without_markers() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n";
        assert!(lists_nightly_channel(list));
        assert!(lists_nightly_channel("nightly-x86_64-unknown-linux-gnu (active)\n"));
        assert!(lists_nightly_channel("nightly\n"));
    }

    #[test]
    fn dated_or_absent_nightly_does_not_count() {
        assert!(!lists_nightly_channel("stable-x86_64-unknown-linux-gnu (default)\n"));
        assert!(!lists_nightly_channel("nightly-2026-05-19-x86_64-unknown-linux-gnu\n"));
        assert!(!lists_nightly_channel("no installed toolchains\n"));
        assert!(!lists_nightly_channel(""));
    }
}
