//! `cargo xtask image`: the container image, for amd64 and arm64 in one OCI index, built
//! offline with buildah from the static binaries (no base image, no registry) and written
//! as an OCI archive under target/image/.
//!
//! buildah works in a storage of its own under target/, removed afterwards: the machine's
//! container storage is never touched. The archive loads with `podman load`, `skopeo copy
//! oci-archive:... docker://registry/...` pushes it with both architectures.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    arch::Arch,
    paths::target_dir,
    process::stdout_of,
    setup,
    setup_report::Report,
    static_build::{self, Flavour},
    system_packages::{self, RequiredCommand},
};

/// The image's name and tag, as the DaemonSet refers to it.
pub const IMAGE_NAME: &str = "sockerr";
pub const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");
/// The binary's path inside the image, and what the container runs by default: the
/// same as the Dockerfile's ENTRYPOINT and CMD (a unit test keeps them equal).
pub const ENTRYPOINT: &[&str] = &["/sockerr"];
pub const CMD: &[&str] = &["daemon", "--host-proc", "/host/proc", "--kubernetes", "--listen", "0.0.0.0:9966"];

pub const IMAGE_COMMANDS: &[RequiredCommand] = &[
    RequiredCommand::new("buildah", "buildah", "building the container image (cargo xtask image)"),
    RequiredCommand::new("skopeo", "skopeo", "checking the image's platforms (cargo xtask image)"),
];

/// What stage `image` of `cargo xtask test` runs the image with.
pub const PODMAN_COMMANDS: &[RequiredCommand] = &[
    RequiredCommand::new("podman", "podman", "running the image as the DaemonSet's pod (stage image)"),
    RequiredCommand::new(
        "runc",
        "runc",
        "podman's runtime in stage image (crun refuses hybrid cgroup layouts)",
    ),
    RequiredCommand::new("ip", "iproute2", "the pod's network namespace in stage image"),
];

/// `target/image/sockerr-<version>.oci.tar`.
pub fn archive_path() -> PathBuf {
    target_dir().join("image").join(format!("{IMAGE_NAME}-{IMAGE_TAG}.oci.tar"))
}

/// Builds both binaries and the image; returns the archive's path.
pub fn build() -> Result<PathBuf> {
    setup::ensure()?;
    let mut report = Report::default();
    system_packages::ensure_commands(IMAGE_COMMANDS, &mut report)?;
    let mut binaries = Vec::new();
    for arch in Arch::ALL {
        binaries.push((arch, static_build::build_musl(arch, Flavour::Shipped)?));
    }
    let started = Instant::now();
    let archive = archive_path();
    let work = target_dir().join("image").join("buildah");
    let buildah = Buildah::new(&work)?;
    let result = buildah.build_index(&binaries, &archive);
    let cleaned = buildah.remove_everything();
    result?;
    cleaned?;
    let platforms = archive_platforms(&archive)?;
    check_platforms(&platforms)?;
    let size = fs::metadata(&archive).with_context(|| format!("reading {}", archive.display()))?.len();
    eprintln!(
        "image: {} ({}, {:.1} MB) built in {:.1} s",
        archive.display(),
        platforms.iter().cloned().collect::<Vec<_>>().join(", "),
        size as f64 / 1_000_000.0,
        started.elapsed().as_secs_f64()
    );
    Ok(archive)
}

/// buildah with a storage of its own (root and run root under `work`).
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    fn new(work: &Path) -> Result<Self> {
        if work.exists() {
            // A previous run that died: its storage holds nothing worth keeping.
            Self { root: work.join("root"), runroot: work.join("run") }.remove_everything()?;
        }
        let buildah = Self { root: work.join("root"), runroot: work.join("run") };
        fs::create_dir_all(&buildah.root).with_context(|| format!("creating {}", buildah.root.display()))?;
        Ok(buildah)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "overlay"]);
        command
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        Ok(stdout_of(self.command().args(args))?.trim().to_owned())
    }

    fn build_index(&self, binaries: &[(Arch, PathBuf)], archive: &Path) -> Result<()> {
        let list = format!("{IMAGE_NAME}-index");
        self.run(&["manifest", "create", &list])?;
        for (arch, binary) in binaries {
            let container = self.run(&["from", "--arch", arch.name(), "--os", "linux", "scratch"])?;
            let binary = binary.to_str().context("the binary's path is not UTF-8")?;
            self.run(&["copy", "--chmod", "0755", &container, binary, ENTRYPOINT[0]])?;
            let entrypoint = serde_json::to_string(ENTRYPOINT)?;
            let cmd = serde_json::to_string(CMD)?;
            self.run(&[
                "config",
                "--arch",
                arch.name(),
                "--os",
                "linux",
                "--entrypoint",
                &entrypoint,
                "--cmd",
                &cmd,
                "--label",
                &format!("org.opencontainers.image.title={IMAGE_NAME}"),
                "--label",
                &format!("org.opencontainers.image.version={IMAGE_TAG}"),
                "--label",
                "org.opencontainers.image.description=eBPF tracer that explains socket errors",
                &container,
            ])?;
            let image =
                self.run(&["commit", "--quiet", "--rm", &container, &format!("{IMAGE_NAME}-{arch}")])?;
            self.run(&["manifest", "add", &list, &image])?;
        }
        if let Some(dir) = archive.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _ = fs::remove_file(archive);
        let destination = format!("oci-archive:{}:{IMAGE_NAME}:{IMAGE_TAG}", archive.display());
        self.run(&["manifest", "push", "--quiet", "--all", &list, &destination])?;
        Ok(())
    }

    /// Removes every container and image of this storage, then the storage itself.
    fn remove_everything(&self) -> Result<()> {
        if self.root.exists() {
            // Containers of a failed build first: their overlay mounts block the removal.
            let _ = self.run(&["rm", "--all"]);
            self.run(&["rmi", "--all", "--force"]).or_else(|error| {
                // An empty storage answers with an error on some versions: not a failure.
                if self.run(&["images", "--quiet"])?.is_empty() { Ok(String::new()) } else { Err(error) }
            })?;
        }
        for dir in [&self.root, &self.runroot] {
            if dir.exists() {
                fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        if let Some(work) = self.root.parent()
            && work.exists()
        {
            fs::remove_dir(work).with_context(|| format!("removing {}", work.display()))?;
        }
        Ok(())
    }
}

/// `os/architecture` of every manifest in the archive's index, as skopeo reads it.
pub fn archive_platforms(archive: &Path) -> Result<BTreeSet<String>> {
    let raw = stdout_of(
        Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci-archive:{}", archive.display())),
    )?;
    index_platforms(&raw)
}

pub fn index_platforms(raw: &str) -> Result<BTreeSet<String>> {
    let index: Value = serde_json::from_str(raw).context("skopeo inspect --raw printed no JSON")?;
    if index["mediaType"] != "application/vnd.oci.image.index.v1+json" {
        bail!("the archive holds no OCI index (one architecture only?): {raw}");
    }
    let manifests = index["manifests"].as_array().context("the index lists no manifests")?;
    manifests
        .iter()
        .map(|manifest| {
            let platform = &manifest["platform"];
            match (platform["os"].as_str(), platform["architecture"].as_str()) {
                (Some(os), Some(arch)) => Ok(format!("{os}/{arch}")),
                _ => bail!("a manifest of the index has no platform: {manifest}"),
            }
        })
        .collect()
}

/// Exactly linux/amd64 and linux/arm64.
pub fn check_platforms(platforms: &BTreeSet<String>) -> Result<()> {
    let expected: BTreeSet<String> = Arch::ALL.iter().map(|arch| format!("linux/{arch}")).collect();
    if *platforms != expected {
        bail!("the image's index lists {platforms:?}, expected {expected:?}");
    }
    Ok(())
}

/// `cargo xtask image`: builds, checks and prints the archive's path.
pub fn run() -> Result<()> {
    let archive = build()?;
    // stdout carries only the path, as `cargo xtask build` does.
    println!("{}", archive.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Dockerfile's last `instruction` (ENTRYPOINT, CMD) in exec form.
    fn dockerfile_exec_form(dockerfile: &str, instruction: &str) -> Option<Vec<String>> {
        let line = dockerfile.lines().rfind(|line| line.starts_with(&format!("{instruction} ")))?;
        serde_json::from_str(line[instruction.len()..].trim()).ok()
    }

    const TWO: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:7c","size":502,"platform":{"architecture":"amd64","os":"linux"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:c1","size":502,"platform":{"architecture":"arm64","os":"linux"}}]}"#;

    #[test]
    fn an_index_of_both_architectures_passes() {
        let platforms = index_platforms(TWO).unwrap();
        assert_eq!(platforms.iter().map(String::as_str).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
        check_platforms(&platforms).unwrap();
    }

    #[test]
    fn one_architecture_or_a_bare_manifest_fails() {
        let amd64_only = TWO.replace("\"arm64\"", "\"amd64\"");
        let err = check_platforms(&index_platforms(&amd64_only).unwrap()).unwrap_err().to_string();
        assert!(err.contains("expected"), "{err}");
        let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        assert!(index_platforms(manifest).unwrap_err().to_string().contains("no OCI index"));
    }

    #[test]
    fn the_dockerfile_runs_what_the_offline_image_runs() {
        let dockerfile = fs::read_to_string(crate::paths::workspace_root().join("Dockerfile")).unwrap();
        assert_eq!(dockerfile_exec_form(&dockerfile, "ENTRYPOINT").unwrap(), ENTRYPOINT);
        assert_eq!(dockerfile_exec_form(&dockerfile, "CMD").unwrap(), CMD);
        // Built for the platform asked for, not a fixed one.
        assert!(dockerfile.contains("--arch \"$TARGETARCH\""), "{dockerfile}");
        assert!(!dockerfile.contains("x86_64-unknown-linux-musl"), "{dockerfile}");
    }
}
