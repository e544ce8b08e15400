//! Builds the eBPF object (tracer-ebpf) with the nightly toolchain and bpf-linker and
//! leaves it in OUT_DIR, where `src/loader.rs` embeds it. `cargo xtask build` installs
//! what this needs; `AYA_BUILD_SKIP=1` skips it (clippy of the userspace alone).
//! It also passes the git commit to the build, for the daemon's `sockerr_build_info`.
use std::{path::Path, process::Command};

fn main() -> anyhow::Result<()> {
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
    pass_git_sha();
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}

/// `SOCKERR_GIT_SHA` for `option_env!`, when building in a git checkout (elsewhere, e.g.
/// from a source archive, the variable may come from the environment instead). The
/// script re-runs when HEAD moves; the eBPF build it then repeats is a no-op unless the
/// kernel crate changed.
fn pass_git_sha() {
    let git = |args: &[&str]| {
        let output = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| text.trim().to_owned())
    };
    let Some(sha) = git(&["rev-parse", "--short=12", "HEAD"]) else { return };
    println!("cargo:rustc-env=SOCKERR_GIT_SHA={sha}");
    // HEAD names the branch; the reflog changes with every commit, checkout and reset.
    for file in ["HEAD", "logs/HEAD"] {
        // A path that does not exist would make cargo re-run the script every time.
        let path = git(&["rev-parse", "--path-format=absolute", "--git-path", file]);
        if let Some(path) = path.filter(|path| Path::new(path).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
