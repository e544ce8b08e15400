//! What `cargo xtask setup` installed, for its one summary line. Its own module, so that
//! setup and the installers it calls each depend on it and not on one another.

use std::time::Duration;

/// What setup installed, for the one summary line.
#[derive(Default)]
pub struct Report {
    actions: Vec<(String, Duration)>,
}

impl Report {
    pub fn did(&mut self, what: impl Into<String>, took: Duration) {
        self.actions.push((what.into(), took));
    }

    pub fn summary(&self, total: Duration) -> String {
        if self.actions.is_empty() {
            return format!("setup: everything present ({:.2} s)", total.as_secs_f64());
        }
        let actions: Vec<String> =
            self.actions.iter().map(|(what, took)| format!("{what} ({:.1} s)", took.as_secs_f64())).collect();
        format!("setup: {}; {:.1} s in all", actions.join("; "), total.as_secs_f64())
    }
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
