//! Builds the eBPF object (tracer-ebpf) with the nightly toolchain and bpf-linker and
//! leaves it in OUT_DIR, where `src/loader.rs` embeds it. `cargo xtask build` installs
//! what this needs; `AYA_BUILD_SKIP=1` skips it (clippy of the userspace alone).
//!
//! It also names the commit being built (`sockerr_build_info{git_sha=...}`).
use std::{
    env,
    fs::{self, File},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
// Not used here: the build-dependency only makes cargo rerun this script when the eBPF
// crate's library side changes (see Cargo.toml).
use tracer_ebpf as _;

fn main() -> anyhow::Result<()> {
    record_git_sha();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tracer sits in the workspace root")
        .join("tracer-ebpf");
    let root = root.to_str().expect("workspace path is UTF-8");
    let package = aya_build::Package { name: "tracer-ebpf", root_dir: root, ..Default::default() };
    // aya-build relays every stderr line of the nested cargo as a cargo:warning, and cargo
    // replays those on every later build: without this, each `cargo` command prints ~35
    // "Compiling ..." warnings that bury real ones. Compiler diagnostics still come through.
    // SAFETY: build scripts are single-threaded; the nested cargo inherits the variable.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    build_ebpf_shared(package)
}

/// The object `src/kernel/loader.rs` embeds from OUT_DIR: the eBPF crate's one binary.
const EBPF_OBJECT: &str = "tracer";

/// Builds the eBPF object in a directory shared by every build of this crate for one
/// target and profile, then copies it into this build's OUT_DIR.
///
/// aya-build puts its nested cargo's target directory under OUT_DIR, and cargo gives each
/// feature set of this crate an OUT_DIR of its own, so each feature set (the shipped binary,
/// the one with the workloads, the e2e tests' and the unit tests' builds) compiled the
/// same object again, core included: about 50 s each, some six times in `cargo xtask test`.
/// The object depends on the target (its architecture and endianness select
/// `bpf_target_arch` and bpfel/bpfeb), which the shared directory's place keeps apart, and
/// on nothing of this crate's features. The nested cargo's own fingerprints still decide
/// what to rebuild; a file lock keeps two builds of this crate from copying a half-written
/// object (the nested cargo already waits for its target directory's lock).
fn build_ebpf_shared(package: aya_build::Package<'_>) -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skipped = env::var_os("AYA_BUILD_SKIP").is_some();
    let Some(shared) = shared_dir(&out_dir).filter(|_| !skipped) else {
        return aya_build::build_ebpf([package], aya_build::Toolchain::Nightly);
    };
    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    let lock_path = shared.join(".lock");
    let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    // aya-build reads OUT_DIR for where to build and copy; it is this script's own
    // variable, restored before anything else reads it.
    // SAFETY: build scripts are single-threaded.
    unsafe { env::set_var("OUT_DIR", &shared) };
    let built = aya_build::build_ebpf([package], aya_build::Toolchain::Nightly);
    // SAFETY: as above.
    unsafe { env::set_var("OUT_DIR", &out_dir) };
    built?;
    let (from, to) = (shared.join(EBPF_OBJECT), out_dir.join(EBPF_OBJECT));
    fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// `<profile dir>/aya-build-shared` for an OUT_DIR of cargo's layout
/// (`<profile dir>/build/<crate>-<hash>/out`, where the profile directory is already
/// per target triple); `None` for any other layout, which then builds in OUT_DIR as
/// aya-build does.
fn shared_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    (out_dir.file_name()? == "out" && build.file_name()? == "build")
        .then(|| build.parent().map(|profile| profile.join("aya-build-shared")))
        .flatten()
}

/// Hands the checkout's commit to the crate as SOCKERR_BUILD_GIT_SHA (`SOCKERR_GIT_SHA`
/// in the environment wins, for builds outside a checkout such as the container image's).
/// The crate is rebuilt when HEAD moves: a binary must not name a commit it was not
/// built from.
fn record_git_sha() {
    println!("cargo:rerun-if-env-changed=SOCKERR_GIT_SHA");
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git").args(args).current_dir(manifest_dir).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let Some(sha) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    // HEAD names the branch; the branch's ref (loose or packed) names the commit. A
    // watched path that does not exist makes cargo rerun this script (and rebuild the
    // crate) on every build, so only existing files are watched: the loose ref when there
    // is one (it wins over packed-refs), else packed-refs and the directory where a
    // commit would create the loose ref.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = git(&["rev-parse", "--git-path", &branch]).map(|path| Path::new(manifest_dir).join(path));
        match loose {
            Some(loose) if loose.is_file() => watched.push(Some(loose.display().to_string())),
            loose => {
                watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
                watched.push(loose.and_then(|path| Some(path.parent()?.display().to_string())));
            }
        }
    }
    for path in watched.into_iter().flatten() {
        let path = Path::new(manifest_dir).join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rustc-env=SOCKERR_BUILD_GIT_SHA={sha}");
}
