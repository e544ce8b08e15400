//! Building the sockerr binary; tracer's build script builds and embeds the eBPF object.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::{
    paths::{target_dir, workspace_root},
    process::run_inherited,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    pub fn from_debug_flag(debug: bool) -> Self {
        if debug { Self::Debug } else { Self::Release }
    }

    /// cargo's output directory for the profile.
    fn dir_name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Debug => "debug",
        }
    }
}

/// Builds `target/<profile>/sockerr` and returns its absolute path. Run setup first:
/// the build needs the nightly toolchain and bpf-linker.
pub fn build_sockerr(profile: Profile) -> Result<PathBuf> {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root()).args(["build", "--package", "tracer"]);
    if profile == Profile::Release {
        command.arg("--release");
    }
    run_inherited(&mut command)?;
    let binary = target_dir().join(profile.dir_name()).join("sockerr");
    if !binary.is_file() {
        bail!(
            "cargo built tracer but {} does not exist: is the binary still named `sockerr` in tracer/Cargo.toml?",
            binary.display()
        );
    }
    Ok(binary)
}
