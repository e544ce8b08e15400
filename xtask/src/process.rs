//! Running other programs with errors that name the command.

use std::{
    env,
    ffi::OsStr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The command as a user would type it, for messages.
pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    let envs: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.to_string_lossy(), value?.to_string_lossy())))
        .collect();
    if envs.is_empty() { words.join(" ") } else { format!("{} {}", envs.join(" "), words.join(" ")) }
}

/// Runs with the terminal's stdin/stdout/stderr and fails unless it exits 0.
pub fn run_inherited(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("could not start `{}`", describe(command)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(command));
    }
    Ok(())
}

/// Stdout of a command that must succeed; its stderr goes into the error.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8 output", describe(command)))
}

/// The executable `name` would resolve to through PATH.
pub fn find_in_path(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let paths = env::var_os("PATH")?;
    env::split_paths(&paths).map(|dir| dir.join(name.as_ref())).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_env_and_arguments() {
        let mut command = Command::new("cargo");
        command.args(["install", "bpf-linker"]).env("LLVM_PREFIX", "/x");
        assert_eq!(describe(&command), "LLVM_PREFIX=/x cargo install bpf-linker");
    }

    #[test]
    fn failing_command_error_names_it() {
        let err = run_inherited(Command::new("false").arg("--flag")).unwrap_err();
        assert!(err.to_string().contains("`false --flag` failed"), "{err}");
        let err = stdout_of(Command::new("sh").args(["-c", "echo broken >&2; exit 3"])).unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
    }

    #[test]
    fn finds_shell_on_path_but_not_nonsense() {
        assert!(find_in_path("sh").is_some());
        assert_eq!(find_in_path("no-such-program-for-xtask"), None);
    }
}
