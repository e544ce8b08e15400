//! Debian packages the build and the suite run programs from.

use std::{process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{
    privileges::is_root,
    process::{describe, find_in_path, run_inherited},
    setup_report::Report,
};

#[derive(Clone, Copy)]
pub struct RequiredCommand {
    command: &'static str,
    package: &'static str,
    needed_for: &'static str,
}

impl RequiredCommand {
    pub const fn new(command: &'static str, package: &'static str, needed_for: &'static str) -> Self {
        Self { command, package, needed_for }
    }

    pub fn command(&self) -> &'static str {
        self.command
    }

    /// A command on PATH, or for an absolute path (a package that installs no program,
    /// such as C headers), that file.
    fn is_present(&self) -> bool {
        if self.command.starts_with('/') {
            std::path::Path::new(self.command).exists()
        } else {
            find_in_path(self.command).is_some()
        }
    }
}

/// The one list of system programs xtask relies on; add a line when a test starts one.
const REQUIRED_COMMANDS: &[RequiredCommand] = &[
    RequiredCommand {
        command: "cc",
        package: "gcc",
        needed_for: "linking sockerr, its build scripts and bpf-linker",
    },
    RequiredCommand {
        command: "musl-gcc",
        package: "musl-tools",
        needed_for: "the static build: ring's C code for the musl target",
    },
    RequiredCommand {
        command: "python3",
        package: "python3-venv",
        needed_for: "validating deploy/kubernetes with kubernetes-validate (PyPI) in a virtualenv, and the \
                     prometheus stage's refused setsockopt()",
    },
];

/// What the `prometheus` stage of `cargo xtask test` runs: the server and promtool.
pub const PROMETHEUS_COMMANDS: &[RequiredCommand] = &[
    RequiredCommand {
        command: "prometheus",
        package: "prometheus",
        needed_for: "the prometheus stage: a real server evaluating deploy/prometheus and deploy/grafana",
    },
    RequiredCommand {
        command: "promtool",
        package: "prometheus",
        needed_for: "checking and unit-testing the alerting rules in deploy/prometheus",
    },
];

/// What `cargo xtask bench` compares sockerr with.
pub const BENCH_COMMANDS: &[RequiredCommand] = &[
    RequiredCommand {
        command: "bpftrace",
        package: "bpftrace",
        needed_for: "the bpftrace configuration of the benchmark",
    },
    RequiredCommand {
        command: "strace",
        package: "strace",
        needed_for: "the strace configuration of the benchmark",
    },
    RequiredCommand { command: "bpftool", package: "bpftool", needed_for: "the soak's map sizes" },
    RequiredCommand {
        command: "taskset",
        package: "util-linux",
        needed_for: "the daemon confined to the CPUs the loops do not use",
    },
];

pub fn ensure(report: &mut Report) -> Result<()> {
    ensure_commands(REQUIRED_COMMANDS, report)
}

pub fn ensure_commands(required: &[RequiredCommand], report: &mut Report) -> Result<()> {
    let missing: Vec<&RequiredCommand> = required.iter().filter(|required| !required.is_present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|required| required.package).collect();
    packages.sort_unstable();
    packages.dedup();
    let why: Vec<String> = missing
        .iter()
        .map(|required| format!("`{}` from {} ({})", required.command, required.package, required.needed_for))
        .collect();
    let why = why.join(", ");
    let fix = format!("apt-get install -y --no-install-recommends {}", packages.join(" "));
    if find_in_path("apt-get").is_none() {
        bail!("missing {why}, and apt-get is not available: install them with the system's package manager");
    }
    if !is_root()? {
        bail!("missing {why}: install with `sudo {fix}`, or run xtask as root once");
    }

    let started = Instant::now();
    eprintln!("setup: installing {} for {why}", packages.join(" "));
    if apt_install(&packages).is_err() {
        // A fresh machine often has no package lists yet; refresh them only when needed,
        // as it takes far longer than an install from a current list.
        run_inherited(apt_get().arg("update")).context("apt-get update failed")?;
        apt_install(&packages).with_context(|| format!("missing {why}; installing failed: try `{fix}`"))?;
    }
    for required in &missing {
        if !required.is_present() {
            bail!("installed {} but `{}` is still not on PATH", required.package, required.command);
        }
    }
    report.did(format!("installed {}", packages.join(" ")), started.elapsed());
    Ok(())
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    // CI has no stdin: a package that asks a question must take its default instead.
    command.env("DEBIAN_FRONTEND", "noninteractive").stdin(std::process::Stdio::null());
    command
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let mut command = apt_get();
    command.args(["install", "-y", "--no-install-recommends"]).args(packages);
    run_inherited(&mut command).with_context(|| format!("`{}` failed", describe(&command)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// For the lists other modules keep (image, vm): a name or an absolute path, a
    /// package and a reason.
    pub(crate) fn assert_well_formed(required: &[RequiredCommand]) {
        for required in required {
            let command = required.command;
            assert!(!command.is_empty(), "a required command without a name");
            assert!(
                !command.contains('/') || command.starts_with('/'),
                "{command}: a name or an absolute path"
            );
            assert!(!required.package.is_empty(), "{} has no package", required.command);
            assert!(!required.needed_for.is_empty(), "{} has no reason", required.command);
        }
    }

    #[test]
    fn required_commands_name_a_package_and_a_reason() {
        for list in [REQUIRED_COMMANDS, PROMETHEUS_COMMANDS, BENCH_COMMANDS] {
            assert_well_formed(list);
        }
    }
}
