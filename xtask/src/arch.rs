//! The CPU architectures sockerr ships for, named as Docker, Kubernetes (kubernetes.io/arch)
//! and Debian name them, and what building for each takes on this machine.

use std::fmt;

use clap::ValueEnum;

use crate::system_packages::RequiredCommand;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// AArch64 (64-bit Arm).
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The machine xtask runs on.
    pub fn host() -> Arch {
        match std::env::consts::ARCH {
            "aarch64" => Arch::Arm64,
            _ => Arch::Amd64,
        }
    }

    /// `amd64`, `arm64`: the OCI platform, Docker's TARGETARCH, kubernetes.io/arch and
    /// Debian's architecture all use these names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Rust's (and the GNU toolchain's) name of the CPU.
    pub fn cpu(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The static (musl) target: the image's binary, vm-init, and everything an arm64
    /// guest runs.
    pub fn musl_target(self) -> String {
        format!("{}-unknown-linux-musl", self.cpu())
    }

    /// Debian's cross compiler for this architecture, which compiles ring's C code and links
    /// (musl's start files and libc come with Rust's musl target); None when building for
    /// the host, where musl-gcc does both.
    pub fn cross_compiler(self) -> Option<RequiredCommand> {
        if self == Arch::host() {
            return None;
        }
        Some(match self {
            Arch::Amd64 => RequiredCommand::new(
                "x86_64-linux-gnu-gcc",
                "gcc-x86-64-linux-gnu",
                "building sockerr for amd64 on another architecture",
            ),
            Arch::Arm64 => RequiredCommand::new(
                "aarch64-linux-gnu-gcc",
                "gcc-aarch64-linux-gnu",
                "building sockerr for arm64: ring's C code and the link",
            ),
        })
    }

    /// The cross compiler and the C library headers it compiles ring against (a
    /// recommendation of the compiler's package, which `--no-install-recommends` leaves out).
    pub fn cross_packages(self) -> Vec<RequiredCommand> {
        let headers = match self {
            Arch::Amd64 => RequiredCommand::new(
                "/usr/x86_64-linux-gnu/include/stdint.h",
                "libc6-dev-amd64-cross",
                "the C headers ring's code includes, for amd64",
            ),
            Arch::Arm64 => RequiredCommand::new(
                "/usr/aarch64-linux-gnu/include/stdint.h",
                "libc6-dev-arm64-cross",
                "the C headers ring's code includes, for arm64",
            ),
        };
        self.cross_compiler().into_iter().chain([headers]).collect()
    }

    /// Environment for `cargo build --target <musl target>`: the C compiler cc-rs uses for
    /// ring and, across architectures, the linker. `have` tells whether a program is on PATH.
    pub fn cargo_env(self, have: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let target = self.musl_target();
        let underscored = target.replace('-', "_");
        match self.cross_compiler() {
            Some(compiler) => vec![
                (format!("CC_{underscored}"), compiler.command().to_owned()),
                (format!("AR_{underscored}"), format!("{}-linux-gnu-ar", self.cpu())),
                (
                    format!("CARGO_TARGET_{}_LINKER", underscored.to_uppercase()),
                    compiler.command().to_owned(),
                ),
            ],
            // cc-rs looks for `<cpu>-linux-musl-gcc`; Debian's musl-tools installs it as
            // `musl-gcc`.
            None if !have(&format!("{}-linux-musl-gcc", self.cpu())) => {
                vec![(format!("CC_{underscored}"), "musl-gcc".to_owned())]
            }
            None => Vec::new(),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_and_rust() {
        assert_eq!(Arch::Arm64.musl_target(), "aarch64-unknown-linux-musl");
        assert_eq!(Arch::Amd64.musl_target(), "x86_64-unknown-linux-musl");
        assert_eq!(Arch::from_str("arm64", true), Ok(Arch::Arm64));
        assert_eq!(Arch::Amd64.to_string(), "amd64");
        assert!(Arch::host().musl_target().starts_with(std::env::consts::ARCH));
    }

    #[test]
    fn the_host_builds_with_musl_gcc_the_other_with_debians_cross_compiler() {
        let host = Arch::host();
        assert_eq!(
            host.cargo_env(|_| false),
            [(format!("CC_{}_unknown_linux_musl", host.cpu()), "musl-gcc".to_owned())]
        );
        assert!(host.cargo_env(|_| true).is_empty(), "a musl cross gcc on PATH is found by cc-rs");
        let other = if host == Arch::Amd64 { Arch::Arm64 } else { Arch::Amd64 };
        let env = other.cargo_env(|_| true);
        let gcc = format!("{}-linux-gnu-gcc", other.cpu());
        let upper = other.musl_target().replace('-', "_").to_uppercase();
        assert!(env.contains(&(format!("CARGO_TARGET_{upper}_LINKER"), gcc.clone())), "{env:?}");
        assert!(env.iter().any(|(k, v)| k.starts_with("CC_") && *v == gcc), "{env:?}");
    }
}
