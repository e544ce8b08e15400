/// Rebuilds the programs when `bpf-linker` changes: cargo cannot express a dependency
/// on a linker binary (see aya-template's identical build script for the cargo issues).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!(
                "cargo:warning=bpf-linker not found ({err}): run `cargo xtask build`, which installs it"
            );
        }
    }
}
