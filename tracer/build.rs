//! Builds the eBPF object (tracer-ebpf) with the nightly toolchain and bpf-linker and
//! leaves it in OUT_DIR, where `src/loader.rs` embeds it. `cargo xtask build` installs
//! what this needs; `AYA_BUILD_SKIP=1` skips it (clippy of the userspace alone).
use std::path::Path;

// Not used here: the build-dependency only makes cargo rerun this script when the eBPF
// crate's library side changes (see Cargo.toml).
use tracer_ebpf as _;

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
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}
