//! Which set of kernel hooks sockerr uses (`--backend`), decided from what the running
//! kernel offers. Pure: the kernel's features come in as [`KernelFeatures`]
//! (kernel/features.rs reads them).

use std::fmt;

use clap::ValueEnum;
use thiserror::Error;

/// What `--backend` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The richest backend this kernel supports.
    #[default]
    Auto,
    /// Syscall and sock tracepoints only (stable ABI, every supported kernel).
    Tracepoint,
    /// The tracepoints plus kretprobes on the kernel functions that refuse bind()
    /// and connect(): adds the function (`kernel_fn`) and the socket as the kernel saw it.
    Kprobe,
}

/// The hooks in use, as records name them (`backend` in JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    #[default]
    Tracepoint,
    Kprobe,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Tracepoint => "tracepoint",
            Backend::Kprobe => "kprobe",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the running kernel offers beyond tracepoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    pub release: String,
    /// The kprobe PMU (CONFIG_KPROBES with perf events).
    pub kprobes: bool,
    /// /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF): the kprobe programs read
    /// `struct sock` at offsets found there.
    pub btf: bool,
}

impl KernelFeatures {
    /// Why the kprobe backend cannot run here, naming the kernel options.
    fn kprobe_missing(&self) -> Option<String> {
        let mut missing = Vec::new();
        if !self.kprobes {
            missing.push("CONFIG_KPROBES (no /sys/bus/event_source/devices/kprobe)");
        }
        if !self.btf {
            missing.push("CONFIG_DEBUG_INFO_BTF (no /sys/kernel/btf/vmlinux)");
        }
        (!missing.is_empty()).then(|| missing.join(" and "))
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BackendError {
    #[error(
        "--backend {backend} needs {missing}, which kernel {kernel} lacks; use --backend tracepoint or auto"
    )]
    Unavailable { backend: &'static str, missing: String, kernel: String },
}

/// The backend to use and why, for the start-up log line.
pub fn choose(choice: BackendChoice, kernel: &KernelFeatures) -> Result<(Backend, String), BackendError> {
    let kprobe_missing = kernel.kprobe_missing();
    match (choice, kprobe_missing) {
        (BackendChoice::Tracepoint, _) => Ok((Backend::Tracepoint, "asked for with --backend".into())),
        (BackendChoice::Kprobe, None) => Ok((Backend::Kprobe, "asked for with --backend".into())),
        (BackendChoice::Kprobe, Some(missing)) => {
            Err(BackendError::Unavailable { backend: "kprobe", missing, kernel: kernel.release.clone() })
        }
        (BackendChoice::Auto, None) => Ok((
            Backend::Kprobe,
            format!("kernel {} has kprobes and BTF: the richest backend", kernel.release),
        )),
        (BackendChoice::Auto, Some(missing)) => Ok((
            Backend::Tracepoint,
            format!("kernel {} lacks {missing} for the kprobe backend", kernel.release),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(kprobes: bool, btf: bool) -> KernelFeatures {
        KernelFeatures { release: "6.18.4".into(), kprobes, btf }
    }

    #[test]
    fn auto_takes_kprobes_when_the_kernel_has_them() {
        let (backend, why) = choose(BackendChoice::Auto, &kernel(true, true)).unwrap();
        assert_eq!(backend, Backend::Kprobe);
        assert!(why.contains("richest"), "{why}");
        let (backend, why) = choose(BackendChoice::Auto, &kernel(false, true)).unwrap();
        assert_eq!(backend, Backend::Tracepoint);
        assert!(why.contains("CONFIG_KPROBES"), "{why}");
    }

    #[test]
    fn asking_for_an_unavailable_backend_names_the_missing_options() {
        let err = choose(BackendChoice::Kprobe, &kernel(false, false)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("CONFIG_KPROBES") && text.contains("CONFIG_DEBUG_INFO_BTF"), "{text}");
        assert!(text.contains("6.18.4") && text.contains("--backend tracepoint"), "{text}");
        assert_eq!(choose(BackendChoice::Kprobe, &kernel(true, true)).unwrap().0, Backend::Kprobe);
    }

    #[test]
    fn tracepoints_are_always_available() {
        assert_eq!(choose(BackendChoice::Tracepoint, &kernel(false, false)).unwrap().0, Backend::Tracepoint);
    }
}
