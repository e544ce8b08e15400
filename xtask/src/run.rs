//! `cargo xtask run`: build, then become sockerr.

use std::{ffi::OsString, os::unix::process::CommandExt, path::Path, process::Command};

use anyhow::{Context, Result, anyhow};

use crate::{
    build::{Profile, build_sockerr},
    privileges::is_root,
    process::{describe, find_in_path},
    setup,
};

pub fn run(profile: Profile, sockerr_args: &[OsString]) -> Result<()> {
    // Decided before building, so a machine without root or sudo fails at once.
    let sudo = if is_root()? {
        None
    } else {
        let sudo = find_in_path("sudo").ok_or_else(|| {
            anyhow!(
                "sockerr loads eBPF programs and must run as root, and sudo is not installed: \
                 run `cargo xtask run` as root, or `cargo xtask build` and start the binary as root"
            )
        })?;
        Some(sudo)
    };
    setup::ensure()?;
    let binary = build_sockerr(profile)?;
    let mut command = launch(&binary, sudo.as_deref());
    command.args(sockerr_args);
    // exec rather than spawn: Ctrl-C, SIGTERM and the exit status reach and come from
    // sockerr itself, with no xtask process in between to forward them.
    let error = command.exec();
    Err(error).with_context(|| format!("could not start `{}`", describe(&command)))
}

fn launch(binary: &Path, sudo: Option<&Path>) -> Command {
    match sudo {
        None => Command::new(binary),
        Some(sudo) => {
            eprintln!("xtask: not root, running sockerr through sudo -E");
            // -E keeps RUST_LOG and the like, which the user set for sockerr.
            let mut through_sudo = Command::new(sudo);
            through_sudo.arg("-E").arg(binary);
            through_sudo
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn root_runs_the_binary_itself_others_go_through_sudo() {
        let binary = PathBuf::from("/w/target/release/sockerr");
        assert_eq!(describe(&launch(&binary, None)), "/w/target/release/sockerr");
        assert_eq!(
            describe(&launch(&binary, Some(Path::new("/usr/bin/sudo")))),
            "/usr/bin/sudo -E /w/target/release/sockerr"
        );
    }
}
