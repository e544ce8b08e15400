//! Builds the eBPF object (tracer-ebpf) with the nightly toolchain and bpf-linker and
//! leaves it in OUT_DIR, where `src/loader.rs` embeds it. `cargo xtask build` installs
//! what this needs; `AYA_BUILD_SKIP=1` skips it (clippy of the userspace alone).
//!
//! It also names the commit being built (`sockerr_build_info{git_sha=...}`).
use std::{path::Path, process::Command};

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
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
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
