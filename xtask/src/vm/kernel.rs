//! Debian kernels for the VMs: names resolved from the metapackages, packages fetched
//! with `apt-get download` once and kept (old versions leave the mirror), unpacked with
//! `dpkg-deb` and indexed with `depmod` into `target/vm-cache/<package>_<version>/`.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    arch::Arch,
    process::{run_inherited, stdout_of},
};

/// A kernel to test on, as `--kernel` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSpec {
    /// A Debian series, resolved through its metapackage.
    Series(Series),
    /// A kernel package file (`.deb`).
    Deb(PathBuf),
    /// A bare kernel image: only what it builds in is available (no modules).
    Image(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// bookworm's own kernel.
    V6_1,
    /// bookworm-security's (and bookworm-backports') 6.12.
    V6_12,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    /// The metapackage that depends on the current kernel of the series. Generic
    /// flavour, not cloud: cloud kernels lack 9p, and virtiofs needs a virtiofsd.
    pub fn metapackage(self, arch: Arch) -> String {
        match self {
            Series::V6_1 => format!("linux-image-{arch}"),
            Series::V6_12 => format!("linux-image-6.12-{arch}"),
        }
    }

    /// What the resolved package name must start with (bookworm's `linux-image-amd64`
    /// would follow a point release to another series).
    fn package_prefix(self) -> &'static str {
        match self {
            Series::V6_1 => "linux-image-6.1.",
            Series::V6_12 => "linux-image-6.12.",
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        })
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Series(series) => write!(f, "{series}"),
            KernelSpec::Deb(path) | KernelSpec::Image(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for KernelSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "6.1" => return Ok(KernelSpec::Series(Series::V6_1)),
            "6.12" => return Ok(KernelSpec::Series(Series::V6_12)),
            _ => {}
        }
        let path = PathBuf::from(text);
        if !path.is_file() {
            return Err(format!("`{text}` is neither 6.1, 6.12 nor a kernel .deb or vmlinuz file"));
        }
        let path = path.canonicalize().map_err(|e| format!("{text}: {e}"))?;
        Ok(if text.ends_with(".deb") { KernelSpec::Deb(path) } else { KernelSpec::Image(path) })
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `uname -r` of the kernel (the lib/modules directory name).
    pub release: String,
    pub image: PathBuf,
    /// `lib/modules/<release>` with a modules.dep, when the kernel came with modules.
    pub modules_dir: Option<PathBuf>,
}

/// The `linux-image-*` package a metapackage depends on, from `apt-cache depends` output
/// (without the `:arm64` apt adds to a foreign architecture's names).
pub fn parse_depends(output: &str, prefix: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        let name = name.split(':').next().unwrap_or(name);
        name.starts_with(prefix).then(|| name.to_string())
    })
}

/// How apt names a package of `arch`: qualified when it is not the machine's own.
pub(super) fn apt_name(package: &str, arch: Arch) -> String {
    if arch == Arch::host() { package.to_owned() } else { format!("{package}:{arch}") }
}

/// `Version:` of `apt-cache show --no-all-versions` output.
pub fn parse_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| Some(line.strip_prefix("Version:")?.trim().to_string()))
}

pub fn prepare(spec: &KernelSpec, arch: Arch, cache: &Path) -> Result<Kernel> {
    match spec {
        KernelSpec::Series(series) => {
            let deb = cached_or_downloaded(*series, arch, cache)?;
            unpack(&deb, cache)
        }
        KernelSpec::Deb(deb) => unpack(deb, cache),
        KernelSpec::Image(image) => Ok(Kernel {
            release: image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            image: image.clone(),
            modules_dir: None,
        }),
    }
}

fn debs_dir(cache: &Path) -> PathBuf {
    cache.join("debs")
}

/// The current package of the series, downloaded unless already cached; the newest
/// cached one when apt cannot tell (no package lists, no mirror).
fn cached_or_downloaded(series: Series, arch: Arch, cache: &Path) -> Result<PathBuf> {
    let debs = debs_dir(cache);
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let (package, version) = match resolve(series, arch) {
        Ok(found) => found,
        Err(error) => {
            let cached = newest_cached(&debs, series, arch)?;
            return cached.ok_or(error).with_context(|| format!("no cached {arch} {series} kernel either"));
        }
    };
    // apt-get download names files <package>_<version with ':' as %3a>_<arch>.deb.
    let file = debs.join(format!("{package}_{}_{arch}.deb", version.replace(':', "%3a")));
    if file.is_file() {
        return Ok(file);
    }
    let started = Instant::now();
    eprintln!("vm-test: downloading {package} {version} into {}", debs.display());
    run_inherited(
        Command::new("apt-get")
            .current_dir(&debs)
            .args(["download", "-q"])
            .arg(format!("{}={version}", apt_name(&package, arch))),
    )
    .with_context(|| format!("downloading {package} {version}"))?;
    if !file.is_file() {
        bail!("apt-get download {package}={version} did not write {}", file.display());
    }
    eprintln!("vm-test: downloaded {package} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(file)
}

/// (package, version) of the series' current kernel; refreshes apt's lists once when
/// they do not know the metapackage.
fn resolve(series: Series, arch: Arch) -> Result<(String, String)> {
    if arch != Arch::host() {
        ensure_foreign_architecture(arch)?;
    }
    let metapackage = apt_name(&series.metapackage(arch), arch);
    let lookup = || -> Result<(String, String)> {
        let depends = stdout_of(Command::new("apt-cache").args(["depends", &metapackage]))?;
        let package = parse_depends(&depends, series.package_prefix()).with_context(|| {
            format!("`apt-cache depends {metapackage}` names no {}* package", series.package_prefix())
        })?;
        let show = stdout_of(Command::new("apt-cache").args([
            "show",
            "--no-all-versions",
            &apt_name(&package, arch),
        ]))?;
        let version =
            parse_version(&show).with_context(|| format!("`apt-cache show {package}` has no Version"))?;
        Ok((package, version))
    };
    lookup().or_else(|first| {
        eprintln!("vm-test: {first:#}; refreshing the package lists");
        run_inherited(Command::new("apt-get").args(["update", "-q"])).context("apt-get update")?;
        lookup()
    })
}

/// Lets apt download packages of `arch` (`dpkg --add-architecture`, then fresh lists).
pub(super) fn ensure_foreign_architecture(arch: Arch) -> Result<()> {
    let foreign = stdout_of(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.split_whitespace().any(|known| known == arch.name()) {
        return Ok(());
    }
    eprintln!("vm-test: adding the {arch} architecture to dpkg for the {arch} kernels");
    run_inherited(Command::new("dpkg").args(["--add-architecture", arch.name()]))
        .with_context(|| format!("dpkg --add-architecture {arch}"))?;
    run_inherited(Command::new("apt-get").args(["update", "-q"])).context("apt-get update")
}

fn newest_cached(debs: &Path, series: Series, arch: Arch) -> Result<Option<PathBuf>> {
    let suffix = format!("_{arch}.deb");
    let mut found: Vec<PathBuf> = fs::read_dir(debs)
        .with_context(|| format!("reading {}", debs.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(series.package_prefix()) && n.ends_with(&suffix))
        })
        .collect();
    // Debian kernel ABI numbers and versions sort as text within one series well
    // enough to pick the newest download.
    found.sort();
    Ok(found.pop())
}

/// Unpacks a kernel package once into `<cache>/<deb stem>/` and indexes its modules.
fn unpack(deb: &Path, cache: &Path) -> Result<Kernel> {
    let stem = deb.file_stem().context("kernel package without a file name")?.to_string_lossy().into_owned();
    let root = cache.join(&stem);
    if !root.join(".complete").is_file() {
        let started = Instant::now();
        let partial = cache.join(format!("{stem}.partial"));
        if partial.exists() {
            fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
        }
        fs::create_dir_all(&partial)?;
        run_inherited(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))
            .with_context(|| format!("unpacking {}", deb.display()))?;
        let release = release_of(&partial)?;
        // Debian's postinst runs depmod; the package ships no modules.dep.
        run_inherited(Command::new("depmod").arg("-b").arg(&partial).arg(&release))
            .with_context(|| format!("indexing the modules of {release}"))?;
        fs::write(partial.join(".complete"), b"")?;
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::rename(&partial, &root)?;
        eprintln!("vm-test: unpacked {stem} in {:.1} s", started.elapsed().as_secs_f64());
    }
    let release = release_of(&root)?;
    let image = root.join("boot").join(format!("vmlinuz-{release}"));
    if !image.is_file() {
        bail!("{} has no boot/vmlinuz-{release}: not a kernel image package?", deb.display());
    }
    Ok(Kernel { modules_dir: Some(root.join("lib/modules").join(&release)), image, release })
}

/// The one directory under lib/modules/ (Debian's usrmerge packages may use usr/lib).
fn release_of(root: &Path) -> Result<String> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let dir = root.join(base);
        if let Ok(entries) = fs::read_dir(&dir) {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            match names.as_slice() {
                [one] => return Ok(one.clone()),
                [] => {}
                many => bail!("{} holds several kernels: {many:?}", dir.display()),
            }
        }
    }
    bail!("{} has no lib/modules/<release>: not a kernel image package?", root.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metapackage_dependency_is_the_kernel_package() {
        let output = "linux-image-6.12-amd64\n  Depends: linux-image-6.12.117+deb12-amd64\n";
        assert_eq!(
            parse_depends(output, Series::V6_12.package_prefix()).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        let other = "linux-image-amd64\n  Depends: linux-image-6.12.1-amd64\n";
        assert_eq!(parse_depends(other, Series::V6_1.package_prefix()), None, "another series");
        let foreign = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-56-arm64:arm64\n";
        assert_eq!(
            parse_depends(foreign, Series::V6_1.package_prefix()).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        assert_eq!(Series::V6_12.metapackage(Arch::Arm64), "linux-image-6.12-arm64");
        assert_eq!(Series::V6_1.metapackage(Arch::Amd64), "linux-image-amd64");
    }

    #[test]
    fn version_comes_from_show() {
        let show = "Package: linux-image-6.1.0-56-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\n";
        assert_eq!(parse_version(show).as_deref(), Some("6.1.192-2"));
    }

    #[test]
    fn kernel_specs_parse() {
        assert_eq!("6.1".parse::<KernelSpec>(), Ok(KernelSpec::Series(Series::V6_1)));
        assert_eq!("6.12".parse::<KernelSpec>(), Ok(KernelSpec::Series(Series::V6_12)));
        let err = "5.10".parse::<KernelSpec>().unwrap_err();
        assert!(err.contains("neither 6.1, 6.12"), "{err}");
    }
}
