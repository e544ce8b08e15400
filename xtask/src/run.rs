//! `cargo xtask run`: build, then become sockerr.

use std::{ffi::OsString, os::unix::process::CommandExt, process::Command};

use anyhow::{Context, Result, anyhow};

use crate::{
    build::{Profile, build_sockerr},
    privileges::is_root,
    process::{describe, find_in_path},
    setup,
};

pub fn run(profile: Profile, sockerr_args: &[OsString]) -> Result<()> {
    setup::ensure()?;
    let binary = build_sockerr(profile)?;
    let mut command = if is_root()? {
        Command::new(&binary)
    } else {
        let sudo = find_in_path("sudo").ok_or_else(|| {
            anyhow!(
                "sockerr loads eBPF programs and must run as root, and sudo is not installed: \
                 run `cargo xtask run` as root, or run {} as root yourself",
                binary.display()
            )
        })?;
        eprintln!("xtask: not root, running sockerr through sudo -E");
        let mut through_sudo = Command::new(sudo);
        through_sudo.arg("-E").arg(&binary);
        through_sudo
    };
    command.args(sockerr_args);
    // exec rather than spawn: Ctrl-C, SIGTERM and the exit status reach and come from
    // sockerr itself, with no xtask process in between to forward them.
    let error = command.exec();
    Err(error).with_context(|| format!("could not start `{}`", describe(&command)))
}
