//! `cargo xtask setup`: installs only what is missing, so it can run before every command.

use std::time::Instant;

use anyhow::Result;

use crate::{bpf_linker, setup_report::Report, static_build, system_packages, toolchain};

pub fn ensure() -> Result<()> {
    let started = Instant::now();
    let mut report = Report::default();
    // System tools first: every later install compiles and links.
    system_packages::ensure(&mut report)?;
    let nightly = toolchain::ensure_nightly(&mut report)?;
    toolchain::ensure_active_lint_tools(&mut report)?;
    bpf_linker::ensure(&nightly, &mut report)?;
    static_build::ensure_target(&mut report)?;
    eprintln!("{}", report.summary(started.elapsed()));
    Ok(())
}
