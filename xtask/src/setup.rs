//! `cargo xtask setup`: installs only what is missing, so it can run before every command.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{bpf_linker, static_build, system_packages, toolchain};

/// What setup installed, for the one summary line.
#[derive(Default)]
pub struct Report {
    actions: Vec<(String, Duration)>,
}

impl Report {
    pub fn did(&mut self, what: impl Into<String>, took: Duration) {
        self.actions.push((what.into(), took));
    }

    fn summary(&self, total: Duration) -> String {
        if self.actions.is_empty() {
            return format!("setup: everything present ({:.2} s)", total.as_secs_f64());
        }
        let actions: Vec<String> =
            self.actions.iter().map(|(what, took)| format!("{what} ({:.1} s)", took.as_secs_f64())).collect();
        format!("setup: {}; {:.1} s in all", actions.join("; "), total.as_secs_f64())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_done_is_one_short_line() {
        let summary = Report::default().summary(Duration::from_millis(213));
        assert_eq!(summary, "setup: everything present (0.21 s)");
    }

    #[test]
    fn actions_are_listed_with_their_times() {
        let mut report = Report::default();
        report.did("added rust-src to nightly", Duration::from_millis(1200));
        report.did("installed bpf-linker 0.13.0 for LLVM 22", Duration::from_secs(43));
        assert_eq!(
            report.summary(Duration::from_millis(44_500)),
            "setup: added rust-src to nightly (1.2 s); installed bpf-linker 0.13.0 for LLVM 22 (43.0 s); \
             44.5 s in all"
        );
    }
}
