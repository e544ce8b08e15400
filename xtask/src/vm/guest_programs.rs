//! Debian's own programs for guests of another architecture than the host's.
//!
//! The guests run the host's root over 9p. Some e2e tests start Debian programs from it
//! (python3, sh, ip, ss, unshare, nsenter), which an arm64 guest cannot execute when the
//! host is amd64. So xtask downloads the arm64 builds of those packages and of every
//! arm64 package they depend on (bookworm, with apt), unpacks them into
//! `target/vm-cache/<arch>-programs/` with a merged /usr, and vm-init binds that tree's
//! `usr` over the guest's /usr. The host's root is merged-/usr (/bin, /lib, /sbin are
//! links into /usr), so the guest's /bin/sh, /usr/bin/python3 and the dynamic loader
//! /lib/ld-linux-aarch64.so.1 are all arm64 ones, at the paths the tests use.
//!
//! The tree is rebuilt only when the package versions apt resolves change: the sorted
//! list of .deb file names (which carry the versions) is its key, kept in `.complete`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use super::kernel::{self, apt_name};
use crate::{
    arch::Arch,
    process::{describe, find_in_path, run_inherited, stdout_of},
};

/// What the e2e tests start from the root they run in, and the packages that ship them;
/// the packages' arm64 dependencies come along.
const ROOT_PACKAGES: &[&str] = &[
    // /usr/bin/python3, the interpreter and the minimal standard library.
    "python3-minimal",
    // The rest of the standard library: http.server, ctypes, json, subprocess.
    "libpython3.11-stdlib",
    // ip, ss.
    "iproute2",
    // unshare, nsenter.
    "util-linux",
    // /bin/sh.
    "dash",
];

/// Files the tests need in the tree, checked after unpacking (a package that moved or
/// dropped one fails here, by name, rather than as a test's "No such file" in the guest).
const NEEDED_FILES: &[&str] =
    &["usr/bin/python3", "usr/bin/sh", "usr/bin/ip", "usr/bin/ss", "usr/bin/unshare", "usr/bin/nsenter"];

/// Top-level directories of Debian packages that a merged-/usr root links into /usr.
const MERGED_DIRS: &[&str] = &["bin", "sbin", "lib"];

const COMPLETE: &str = ".complete";

/// The `usr` directory of the tree for `arch`, downloaded and unpacked unless cached.
pub fn prepare(arch: Arch, cache: &Path) -> Result<PathBuf> {
    require_merged_usr_host()?;
    let root = cache.join(format!("{arch}-programs"));
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let files = match resolve(arch) {
        Ok(files) => files,
        Err(error) => {
            // No mirror or no lists: a tree built before still serves.
            if root.join(COMPLETE).is_file() {
                eprintln!("vm-test: {error:#}; using the {arch} programs cached in {}", root.display());
                return Ok(root.join("usr"));
            }
            return Err(error.context(format!("no cached {arch} programs either")));
        }
    };
    let key = files.join("\n");
    if fs::read_to_string(root.join(COMPLETE)).is_ok_and(|cached| cached == key) {
        return Ok(root.join("usr"));
    }
    let started = Instant::now();
    download_missing(&files, arch, &debs)?;
    let partial = cache.join(format!("{arch}-programs.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    for file in &files {
        let deb = debs.join(file);
        run_inherited(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))
            .with_context(|| format!("unpacking {}", deb.display()))?;
    }
    for dir in MERGED_DIRS {
        merge_into(&partial.join(dir), &partial.join("usr").join(dir))?;
    }
    let missing: Vec<&str> = NEEDED_FILES
        .iter()
        .chain(std::iter::once(&loader(arch)))
        .copied()
        .filter(|file| fs::symlink_metadata(partial.join(file)).is_err())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the {arch} packages {} unpacked into {} lack {}: did a package move them? (ROOT_PACKAGES in {})",
            ROOT_PACKAGES.join(", "),
            partial.display(),
            missing.join(", "),
            file!()
        );
    }
    compile_python(&partial)?;
    fs::write(partial.join(COMPLETE), &key)?;
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    fs::rename(&partial, &root)
        .with_context(|| format!("renaming {} to {}", partial.display(), root.display()))?;
    eprintln!(
        "vm-test: unpacked {} {arch} packages into {} in {:.1} s",
        files.len(),
        root.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(root.join("usr"))
}

/// The dynamic loader of `arch`'s Debian programs, below the tree's root.
fn loader(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "usr/lib64/ld-linux-x86-64.so.2",
        Arch::Arm64 => "usr/lib/ld-linux-aarch64.so.1",
    }
}

/// Binding one tree over /usr replaces /bin, /lib and /sbin only when they link into it.
fn require_merged_usr_host() -> Result<()> {
    for dir in MERGED_DIRS {
        let link = Path::new("/").join(dir);
        let target = fs::read_link(&link).ok();
        let expected = Path::new("usr").join(dir);
        if target.as_deref() != Some(expected.as_path()) && target != Some(Path::new("/").join(&expected)) {
            bail!(
                "{} is not a link to {}: the guests of another architecture replace the host's /usr, \
                 which needs a merged-/usr root (Debian 12's default; `apt-get install usrmerge`)",
                link.display(),
                expected.display()
            );
        }
    }
    Ok(())
}

/// The .deb file names (sorted) of [`ROOT_PACKAGES`] and their `arch` dependencies at the
/// versions apt would download now; refreshes apt's lists once when they fail.
fn resolve(arch: Arch) -> Result<Vec<String>> {
    kernel::ensure_foreign_architecture(arch)?;
    let lookup = || -> Result<Vec<String>> {
        let roots: Vec<String> = ROOT_PACKAGES.iter().map(|package| apt_name(package, arch)).collect();
        let depends = stdout_of(
            Command::new("apt-cache")
                .args(["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts"])
                .args(["--no-breaks", "--no-replaces", "--no-enhances"])
                .args(&roots),
        )?;
        let packages = closure_of(&depends, &roots, arch);
        if packages.is_empty() {
            bail!("`apt-cache depends` named no {arch} package for {}", roots.join(" "));
        }
        let qualified: Vec<String> = packages.iter().map(|package| format!("{package}:{arch}")).collect();
        let mut command = Command::new("apt-get");
        command.args(["download", "--print-uris", "-q"]).args(&qualified);
        let uris = stdout_of(&mut command)?;
        let mut files = deb_file_names(&uris);
        if files.len() != packages.len() {
            bail!("`{}` named {} files for {} packages", describe(&command), files.len(), packages.len());
        }
        files.sort();
        Ok(files)
    };
    lookup().or_else(|first| {
        eprintln!("vm-test: {first:#}; refreshing the package lists");
        run_inherited(Command::new("apt-get").args(["update", "-q"])).context("apt-get update")?;
        lookup()
    })
}

/// The packages of `arch` that `roots` need, from `apt-cache depends --recurse` output:
/// one unindented line per package reached, then its `Depends:`/`PreDepends:` lines.
/// Of alternatives (`|Depends: a` then `Depends: b`) the first is taken, as apt would;
/// the indented lines under a dependency name other packages that satisfy it (libelogind0
/// for libsystemd0), which apt does not need. Dependencies apt satisfies from the host's
/// own architecture (Multi-Arch: foreign, such as debconf or perl-base) and virtual
/// packages (`<...>`) are left out: the guest needs only what it executes or loads.
fn closure_of(output: &str, roots: &[String], arch: Arch) -> Vec<String> {
    let suffix = format!(":{arch}");
    let mut depends: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut current = None;
    let mut after_alternative = false;
    for line in output.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = Some(line.trim());
            after_alternative = false;
            continue;
        }
        let trimmed = line.trim_start();
        let (alternative, field) = match trimmed.strip_prefix('|') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let Some(name) = field.strip_prefix("Depends:").or_else(|| field.strip_prefix("PreDepends:")) else {
            continue;
        };
        if !after_alternative && let Some(package) = current {
            depends.entry(package).or_default().push(name.trim());
        }
        after_alternative = alternative;
    }
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut queue: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(package) = queue.pop() {
        if package.starts_with('<') || !package.ends_with(&suffix) || !reached.insert(package) {
            continue;
        }
        queue.extend(depends.get(package).into_iter().flatten());
    }
    reached.into_iter().filter_map(|package| package.strip_suffix(&suffix)).map(str::to_string).collect()
}

/// File names in `apt-get download --print-uris` output: `'<uri>' <file> <size> <hash>`.
fn deb_file_names(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| line.starts_with('\''))
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|file| file.ends_with(".deb"))
        .map(str::to_string)
        .collect()
}

/// `<package>:<arch>=<version>` of a file apt-get download names
/// `<package>_<version, ':' as %3a>_<arch>.deb`.
fn apt_request(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".deb")?;
    let mut parts = stem.splitn(3, '_');
    let (package, version, arch) = (parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{package}:{arch}={}", version.replace("%3a", ":")))
}

fn download_missing(files: &[String], arch: Arch, debs: &Path) -> Result<()> {
    let missing: Vec<&String> = files.iter().filter(|file| !debs.join(file).is_file()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let requests = missing
        .iter()
        .map(|file| {
            apt_request(file)
                .with_context(|| format!("apt named a file `{file}` not of the form name_version_arch.deb"))
        })
        .collect::<Result<Vec<String>>>()?;
    let started = Instant::now();
    eprintln!("vm-test: downloading {} {arch} packages into {}", requests.len(), debs.display());
    run_inherited(Command::new("apt-get").current_dir(debs).args(["download", "-q"]).args(&requests))
        .context("downloading the guests' programs")?;
    if let Some(absent) = missing.iter().find(|file| !debs.join(file).is_file()) {
        bail!("apt-get download did not write {}", debs.join(absent).display());
    }
    eprintln!("vm-test: downloaded them in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Moves everything under `from` into `to` (a package's /lib into /usr/lib), merging
/// directories; two different files at one path are an error.
fn merge_into(from: &Path, to: &Path) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(from) else { return Ok(()) };
    if !meta.is_dir() {
        bail!("{} is not a directory: cannot merge it into {}", from.display(), to.display());
    }
    if fs::symlink_metadata(to).is_err() {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        return fs::rename(from, to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()));
    }
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let source_meta = fs::symlink_metadata(&source)?;
        match fs::symlink_metadata(&target) {
            Err(_) => fs::rename(&source, &target)
                .with_context(|| format!("moving {} to {}", source.display(), target.display()))?,
            Ok(target_meta) if source_meta.is_dir() && target_meta.is_dir() => merge_into(&source, &target)?,
            Ok(_) if same_link(&source, &target) => fs::remove_file(&source)?,
            Ok(_) => bail!(
                "{} and {} both exist: the packages disagree on a merged-/usr path",
                source.display(),
                target.display()
            ),
        }
    }
    fs::remove_dir(from).with_context(|| format!("removing {}", from.display()))
}

fn same_link(a: &Path, b: &Path) -> bool {
    matches!((fs::read_link(a), fs::read_link(b)), (Ok(x), Ok(y)) if x == y)
}

/// Byte-compiles the tree's Python library with the host's interpreter of the same
/// version (bytecode does not depend on the CPU): Debian compiles it in the package's
/// postinst, which an unpacked tree never runs, and without it every python3 start in a
/// guest would compile each module it imports, slowly under emulation.
fn compile_python(tree: &Path) -> Result<()> {
    let lib = tree.join("usr/lib");
    let Some(version) = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.strip_prefix("python3.").is_some_and(|minor| minor.parse::<u32>().is_ok()))
    else {
        bail!("{} has no python3.N directory", lib.display());
    };
    let Some(python) = find_in_path(&version) else {
        eprintln!(
            "vm-test: no host {version} to byte-compile the guests' Python library; python3 starts slower there"
        );
        return Ok(());
    };
    let started = Instant::now();
    // -s/-p: the compiled files name the guest's paths, not this build directory's.
    run_inherited(
        Command::new(python)
            .args(["-m", "compileall", "-q", "-j", "0", "-s"])
            .arg(tree)
            .args(["-p", "/"])
            .arg(lib.join(&version)),
    )
    .with_context(|| format!("byte-compiling {}", lib.join(&version).display()))?;
    eprintln!(
        "vm-test: byte-compiled the guests' {version} library in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_follows_first_alternatives_of_the_guest_architecture_only() {
        let output = "python3-minimal:arm64\n  Depends: python3.11-minimal:arm64\n  PreDepends: dpkg:arm64\n\
            util-linux:arm64\n  PreDepends: libsystemd0:arm64\n    libelogind0:arm64\n  Depends: debconf\n\
            python3.11-minimal:arm64\n |Depends: libc6:arm64\n  Depends: musl:arm64\n  Depends: <debconf-2.0:arm64>\n\
            libelogind0:arm64\n  Depends: libc6:arm64\nlibsystemd0:arm64\n  Depends: libc6:arm64\n\
            dpkg:arm64\nlibc6:arm64\n  Depends: libgcc-s1:arm64\nlibgcc-s1:arm64\nmusl:arm64\ndebconf\n  Depends: perl-base\n\
            unrelated:arm64\n  Depends: libc6:arm64\n";
        let roots = ["python3-minimal:arm64".to_string(), "util-linux:arm64".to_string()];
        assert_eq!(
            closure_of(output, &roots, Arch::Arm64),
            [
                "dpkg",
                "libc6",
                "libgcc-s1",
                "libsystemd0",
                "python3-minimal",
                "python3.11-minimal",
                "util-linux"
            ]
        );
    }

    #[test]
    fn print_uris_name_the_files() {
        let output = "Reading package lists...\n\
            'http://deb.debian.org/debian/pool/main/d/dash/dash_0.5.12-2_arm64.deb' dash_0.5.12-2_arm64.deb 101020 SHA256:ab\n\
            'http://deb.debian.org/debian/pool/main/p/pam/libpam0g_1.5.2-6%2bdeb12u1_arm64.deb' libpam0g_1.5.2-6+deb12u1_arm64.deb 67000 SHA256:cd\n";
        assert_eq!(deb_file_names(output), ["dash_0.5.12-2_arm64.deb", "libpam0g_1.5.2-6+deb12u1_arm64.deb"]);
    }

    #[test]
    fn file_names_turn_back_into_requests() {
        assert_eq!(apt_request("dash_0.5.12-2_arm64.deb").as_deref(), Some("dash:arm64=0.5.12-2"));
        assert_eq!(apt_request("libfoo1_1%3a2.0-1_arm64.deb").as_deref(), Some("libfoo1:arm64=1:2.0-1"));
        assert_eq!(apt_request("garbage.deb"), None);
        assert_eq!(apt_request("dash_0.5.12-2_arm64.tar"), None);
    }

    #[test]
    fn lib_merges_into_usr_lib_and_conflicts_are_named() {
        let root = std::env::temp_dir().join(format!("sockerr-merge-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("lib/aarch64-linux-gnu")).unwrap();
        fs::create_dir_all(root.join("usr/lib/aarch64-linux-gnu")).unwrap();
        fs::write(root.join("lib/aarch64-linux-gnu/libc.so.6"), b"c").unwrap();
        fs::write(root.join("usr/lib/aarch64-linux-gnu/libz.so.1"), b"z").unwrap();
        std::os::unix::fs::symlink("aarch64-linux-gnu/ld.so", root.join("lib/ld-linux-aarch64.so.1"))
            .unwrap();
        merge_into(&root.join("lib"), &root.join("usr/lib")).unwrap();
        assert!(!root.join("lib").exists());
        assert!(root.join("usr/lib/aarch64-linux-gnu/libc.so.6").is_file());
        assert!(root.join("usr/lib/aarch64-linux-gnu/libz.so.1").is_file());
        assert!(fs::read_link(root.join("usr/lib/ld-linux-aarch64.so.1")).is_ok());

        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("bin/ip"), b"one").unwrap();
        fs::write(root.join("usr/bin/ip"), b"two").unwrap();
        let err = merge_into(&root.join("bin"), &root.join("usr/bin")).unwrap_err();
        assert!(err.to_string().contains("both exist"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }
}
