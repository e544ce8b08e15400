//! Where the workspace, its build output and cargo's home are.

use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// xtask is always built from the workspace it serves (`cargo xtask` compiles it there),
/// so its manifest directory at compile time names the workspace.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ sits inside the workspace root")
}

/// Honours the same overrides cargo does, so the binary is found where cargo put it.
pub fn target_dir() -> PathBuf {
    let configured = env::var_os("CARGO_TARGET_DIR").or_else(|| env::var_os("CARGO_BUILD_TARGET_DIR"));
    match configured {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            // cargo resolves a relative override against its working directory, which for
            // the commands xtask starts is the workspace root.
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        None => workspace_root().join("target"),
    }
}

pub fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME").context(
        "neither CARGO_HOME nor HOME is set: set CARGO_HOME to cargo's directory (usually ~/.cargo)",
    )?;
    Ok(PathBuf::from(home).join(".cargo"))
}
