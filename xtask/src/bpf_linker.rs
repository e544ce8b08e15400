//! bpf-linker links the eBPF crate's LLVM bitcode; it must use the same LLVM major as the
//! nightly rustc that emitted the bitcode.
//!
//! `cargo install bpf-linker` alone fails on these machines (0.13.0 defaults to LLVM 23 and
//! finds Debian's LLVM 14 `llvm-config`), and there is no system LLVM 22. The nightly
//! toolchain ships its own shared libLLVM, so bpf-linker is linked against that one.

use std::{
    env,
    ffi::OsString,
    fs, io,
    ops::RangeInclusive,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    paths::cargo_home,
    process::{describe, find_in_path, run_inherited},
    setup_report::Report,
    toolchain::Nightly,
};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The `llvm-N` features bpf-linker 0.13.0 offers.
const SUPPORTED_LLVM_MAJORS: RangeInclusive<u32> = 21..=23;

/// `cargo install` puts bpf-linker here; rustc finds its `-C linker=bpf-linker` through PATH,
/// which may not contain this directory (e.g. a CI shell that calls cargo by full path).
fn install_root() -> Result<PathBuf> {
    match env::var_os("CARGO_INSTALL_ROOT") {
        Some(root) => Ok(PathBuf::from(root)),
        None => cargo_home(),
    }
}

/// Makes the bpf-linker that `ensure` installs the one that every later command finds,
/// ahead of any stale copy elsewhere on PATH.
pub fn put_install_dir_first_on_path() -> Result<()> {
    let bin = install_root()?.join("bin");
    let current = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&current).next().as_deref() == Some(bin.as_path()) {
        return Ok(());
    }
    let path = env::join_paths(std::iter::once(bin).chain(env::split_paths(&current)))
        .context("PATH contains a directory with a `:` in its name")?;
    // SAFETY: called from main before xtask starts any thread, so nothing reads the
    // environment concurrently.
    unsafe { env::set_var("PATH", path) };
    Ok(())
}

pub fn ensure(nightly: &Nightly, report: &mut Report) -> Result<()> {
    let why_install = match find_in_path("bpf-linker") {
        None => "not found on PATH".to_string(),
        Some(path) => match check_usable(&path, nightly.llvm_major) {
            Ok(()) => return Ok(()),
            Err(problem) => format!("{} {problem}", path.display()),
        },
    };
    let started = Instant::now();
    eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} ({why_install}); this takes about a minute");
    install(nightly)?;

    let installed = install_root()?.join("bin/bpf-linker");
    check_usable(&installed, nightly.llvm_major)
        .map_err(|problem| anyhow::anyhow!("the freshly installed {} {problem}", installed.display()))?;
    if find_in_path("bpf-linker").as_deref() != Some(installed.as_path()) {
        bail!(
            "bpf-linker was installed as {} but PATH resolves `bpf-linker` to another file: \
             remove that one or put {} first on PATH",
            installed.display(),
            installed.parent().unwrap_or(&installed).display()
        );
    }
    report.did(
        format!("installed bpf-linker {BPF_LINKER_VERSION} for LLVM {}", nightly.llvm_major),
        started.elapsed(),
    );
    Ok(())
}

/// `Err` says what is wrong with the binary, to follow its path in a message.
fn check_usable(bpf_linker: &Path, llvm_major: u32) -> Result<(), String> {
    // Without rustup's LD_LIBRARY_PATH, as rustc may start it from anywhere: a binary that
    // finds its libLLVM only through that variable is not usable.
    let output = Command::new(bpf_linker)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot be started: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("does not start ({}): {}", output.status, stderr.trim()));
    }
    // A statically linked bpf-linker lists no libLLVM; nothing to compare then.
    let ldd = Command::new("ldd").arg(bpf_linker).env_remove("LD_LIBRARY_PATH").stdin(Stdio::null()).output();
    if let Ok(ldd) = ldd
        && let Some(linked_major) = linked_llvm_major(&String::from_utf8_lossy(&ldd.stdout))
        && linked_major != llvm_major
    {
        return Err(format!(
            "is linked against LLVM {linked_major}, but the nightly rustc emits LLVM {llvm_major} bitcode"
        ));
    }
    Ok(())
}

fn install(nightly: &Nightly) -> Result<()> {
    let major = nightly.llvm_major;
    if !SUPPORTED_LLVM_MAJORS.contains(&major) {
        bail!(
            "the nightly toolchain uses LLVM {major}, but bpf-linker {BPF_LINKER_VERSION} supports LLVM {}-{}: \
             set BPF_LINKER_VERSION in xtask/src/bpf_linker.rs to a release with an `llvm-{major}` feature",
            SUPPORTED_LLVM_MAJORS.start(),
            SUPPORTED_LLVM_MAJORS.end()
        );
    }
    let toolchain_lib = nightly.sysroot.join("lib");
    let names = file_names(&toolchain_lib)?;
    let libllvm_name = pick_libllvm(&names, major).with_context(|| {
        format!("cannot link bpf-linker against the nightly's LLVM in {}", toolchain_lib.display())
    })?;
    let prefix = expose_libllvm(&toolchain_lib.join(libllvm_name))?;

    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force"])
        .args(["--no-default-features", "--features", &format!("llvm-{major}")])
        .arg("--root")
        .arg(install_root()?)
        .env("LLVM_PREFIX", &prefix)
        .stdin(Stdio::null());
    run_inherited(&mut command)
        .with_context(|| format!("installing bpf-linker failed; the command was `{}`", describe(&command)))
}

/// Builds an LLVM prefix whose lib/ holds the nightly's libLLVM under two names, and
/// returns the prefix.
///
/// - `libLLVM.so`: bpf-linker's build script links with `-lLLVM -L<prefix>/lib`, and the
///   toolchain ships no file of that name (only the versioned one and a linker script).
/// - the library's own file name: the linker records its SONAME
///   (`libLLVM.so.22.1-rust-1.97.0-nightly`) as DT_NEEDED and the build script sets
///   RUNPATH to `<prefix>/lib`, so at run time the loader looks for that exact name there.
///   Without it bpf-linker starts only where LD_LIBRARY_PATH holds the toolchain's lib/,
///   i.e. under rustup's proxies, and `bpf-linker --version` from a shell fails.
///
/// The prefix lives in cargo's home, beside the bpf-linker that needs it, rather than in
/// /opt: a developer's non-root install must work, and one `rm -rf ~/.cargo` removes both.
/// The links are absolute: when a toolchain update removes the library, the links dangle,
/// bpf-linker stops starting, and the next `setup` notices and reinstalls.
fn expose_libllvm(libllvm: &Path) -> Result<PathBuf> {
    let prefix = cargo_home()?.join("bpf-linker-llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for stale in file_names(&lib)?.iter().filter(|name| name.to_string_lossy().starts_with("libLLVM")) {
        let stale = lib.join(stale);
        fs::remove_file(&stale).with_context(|| format!("cannot remove the old link {}", stale.display()))?;
    }
    let real_name = libllvm.file_name().context("libLLVM path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(real_name)] {
        symlink(libllvm, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), libllvm.display()))?;
    }
    Ok(prefix)
}

fn file_names(dir: &Path) -> Result<Vec<OsString>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    entries
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))
}

/// The shared library among a toolchain's lib/ files, e.g.
/// `libLLVM.so.22.1-rust-1.97.0-nightly` (its neighbour `libLLVM-22-rust-1.97.0-nightly.so`
/// is a linker script that ld would accept but the loader cannot use).
fn pick_libllvm(file_names: &[OsString], llvm_major: u32) -> Result<String> {
    let mut candidates: Vec<String> = file_names
        .iter()
        .filter_map(|name| name.to_str())
        .filter(|name| name.starts_with("libLLVM.so.") && llvm_major_of_library(name) == Some(llvm_major))
        .map(str::to_owned)
        .collect();
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => {
            let present: Vec<_> = file_names.iter().map(|name| name.to_string_lossy()).collect();
            bail!(
                "no libLLVM.so.{llvm_major}.* among [{}]: reinstall the toolchain with \
                 `rustup toolchain install nightly --force`",
                present.join(", ")
            )
        }
        _ => bail!(
            "several LLVM {llvm_major} libraries ({}); remove the stray ones from the toolchain",
            candidates.join(", ")
        ),
    }
}

/// The libLLVM major version an `ldd` listing names, if any.
fn linked_llvm_major(ldd_output: &str) -> Option<u32> {
    ldd_output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .find(|name| name.starts_with("libLLVM"))
        .and_then(llvm_major_of_library)
}

/// Reads the major from the naming schemes in use: rustup's `libLLVM.so.22.1-rust-…`,
/// Debian's `libLLVM-14.so.1`, upstream's `libLLVM.so.18.1`.
fn llvm_major_of_library(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix("libLLVM")?;
    let rest = rest.strip_prefix(".so.").or_else(|| rest.strip_prefix('-'))?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn picks_the_shared_library_not_the_linker_script() {
        let lib = names(&[
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
            "rustlib",
        ]);
        assert_eq!(pick_libllvm(&lib, 22).unwrap(), "libLLVM.so.22.1-rust-1.97.0-nightly");
    }

    #[test]
    fn missing_or_ambiguous_libllvm_is_an_error_that_says_so() {
        let err = pick_libllvm(&names(&["libLLVM.so.21.1-rust-1.90.0-nightly", "rustlib"]), 22).unwrap_err();
        assert!(err.to_string().contains("no libLLVM.so.22.* among [libLLVM.so.21.1"), "{err}");
        let two = names(&["libLLVM.so.22.1-rust-1.97.0-nightly", "libLLVM.so.22.1-rust-1.97.0-nightly.bak"]);
        let err = pick_libllvm(&two, 22).unwrap_err();
        assert!(err.to_string().contains("several LLVM 22 libraries"), "{err}");
    }

    #[test]
    fn library_names_give_their_llvm_major() {
        assert_eq!(llvm_major_of_library("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major_of_library("libLLVM-22-rust-1.97.0-nightly.so"), Some(22));
        assert_eq!(llvm_major_of_library("libLLVM-14.so.1"), Some(14));
        assert_eq!(llvm_major_of_library("libLLVM.so.18.1"), Some(18));
        assert_eq!(llvm_major_of_library("libLLVM.so"), None);
        assert_eq!(llvm_major_of_library("libclang.so.14"), None);
    }

    #[test]
    fn ldd_listing_gives_the_linked_llvm() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibLLVM.so.22.1-rust-1.97.0-nightly => /root/.cargo/bpf-linker-llvm/lib/libLLVM.so.22.1-rust-1.97.0-nightly (0x7f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n";
        assert_eq!(linked_llvm_major(ldd), Some(22));
        assert_eq!(linked_llvm_major("\tlibLLVM-21.so.1 => not found\n"), Some(21));
        assert_eq!(linked_llvm_major("\tnot a dynamic executable\n"), None);
    }

    #[test]
    fn unstartable_binary_is_reported_unusable() {
        let problem = check_usable(Path::new("/nonexistent/bpf-linker"), 22).unwrap_err();
        assert!(problem.contains("cannot be started"), "{problem}");
        let problem = check_usable(Path::new("/bin/false"), 22).unwrap_err();
        assert!(problem.contains("does not start"), "{problem}");
    }
}
