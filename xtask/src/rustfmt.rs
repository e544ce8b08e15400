//! Formatting: rustfmt.toml holds what stable rustfmt understands; import grouping (std,
//! external crates, then this crate) is still unstable, so it is passed to the nightly's
//! rustfmt here. The nightly is installed anyway (it builds the eBPF programs), and both
//! rustfmt versions format everything else the same way.

use std::process::Command;

use crate::paths::workspace_root;

/// The options stable rustfmt rejects in rustfmt.toml (it warns once per file there).
const UNSTABLE_OPTIONS: &str = "group_imports=StdExternalCrate";

/// `cargo +nightly fmt --all` with the unstable options; `check` only reports differences.
pub fn command(check: bool) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root()).args(["+nightly", "fmt", "--all", "--"]);
    if check {
        command.arg("--check");
    }
    command.args(["--config", UNSTABLE_OPTIONS]);
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::describe;

    #[test]
    fn imports_are_grouped_by_the_nightly_rustfmt() {
        let check = describe(&command(true));
        assert!(
            check.contains("cargo +nightly fmt --all -- --check --config group_imports=StdExternalCrate"),
            "{check}"
        );
        assert!(!describe(&command(false)).contains("--check"));
    }
}
