//! Builds the eBPF object (tracer-ebpf) with the nightly toolchain and bpf-linker and
//! leaves it in OUT_DIR, where `src/loader.rs` embeds it. `cargo xtask build` installs
//! what this needs; `AYA_BUILD_SKIP=1` skips it (clippy of the userspace alone).
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tracer sits in the workspace root")
        .join("tracer-ebpf");
    let root = root.to_str().expect("workspace path is UTF-8");
    let package = aya_build::Package { name: "tracer-ebpf", root_dir: root, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}
