//! Validating the Kubernetes manifests in deploy/kubernetes with `kubernetes-validate`
//! (PyPI), which checks them offline against the API schemas of a Kubernetes version.
//!
//! The tool lives in a virtualenv under target/, made once and kept while its pinned
//! version stays the same.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    paths::{target_dir, workspace_root},
    process::{find_in_path, run_inherited},
};

/// The current Kubernetes release; the validator's version follows it.
pub const KUBERNETES_VERSION: &str = "1.37.0";
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

pub fn validate() -> Result<()> {
    let manifests = manifests_in(&workspace_root().join("deploy/kubernetes"))?;
    let validator = ensure_validator()?;
    let mut command = Command::new(validator);
    command.args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"]).args(&manifests);
    run_inherited(&mut command).context("a manifest in deploy/kubernetes is not valid (see above)")
}

/// The YAML files of `dir`, sorted; none is an error (the stage would prove nothing).
fn manifests_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut manifests: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    manifests.sort();
    if manifests.is_empty() {
        bail!("no manifests (*.yaml) in {}", dir.display());
    }
    Ok(manifests)
}

/// `target/kubernetes-validate/bin/kubernetes-validate`, installed when missing.
fn ensure_validator() -> Result<PathBuf> {
    let venv = target_dir().join("kubernetes-validate");
    let validator = venv.join("bin/kubernetes-validate");
    let marker = venv.join("installed");
    if validator.is_file() && fs::read_to_string(&marker).is_ok_and(|installed| installed == VALIDATOR) {
        return Ok(validator);
    }
    let python = find_in_path("python3").context(
        "python3 is not on PATH: the manifest check installs kubernetes-validate into a virtualenv; \
         install python3 and python3-venv (cargo xtask setup does as root)",
    )?;
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    eprintln!("manifests: installing {VALIDATOR} into {}", venv.display());
    run_inherited(Command::new(python).args(["-m", "venv"]).arg(&venv))
        .context("creating the virtualenv failed: on Debian, install python3-venv")?;
    run_inherited(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        VALIDATOR,
    ]))
    .with_context(|| format!("installing {VALIDATOR} from PyPI failed"))?;
    fs::write(&marker, VALIDATOR).with_context(|| format!("writing {}", marker.display()))?;
    Ok(validator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_has_manifests_to_validate() {
        let manifests = manifests_in(&workspace_root().join("deploy/kubernetes")).unwrap();
        let names: Vec<String> =
            manifests.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert!(names.iter().any(|n| n.contains("daemonset")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("clusterrole")), "{names:?}");
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let dir = std::env::temp_dir().join(format!("xtask-manifests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("README.md"), "not a manifest").unwrap();
        let err = manifests_in(&dir).unwrap_err().to_string();
        fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("no manifests"), "{err}");
    }
}
