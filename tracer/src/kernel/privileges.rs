//! Checking, before anything is loaded, that this process may do what sockerr does,
//! so a missing capability is named instead of surfacing as a bare EPERM.

use std::fs;

use thiserror::Error;

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error(
        "missing {missing}: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); \
         run as root (sudo) or grant them (e.g. `setcap cap_sys_admin,cap_sys_ptrace,cap_dac_read_search+ep sockerr`)"
    )]
    Missing { missing: String },
    #[error("cannot read this process's capabilities from /proc/self/status")]
    Unreadable(#[source] std::io::Error),
}

/// Capabilities that only degrade what sockerr can say (holder lookup), with why.
#[derive(Debug)]
pub struct Degradation {
    pub capability: &'static str,
    pub consequence: &'static str,
}

/// Fails when programs cannot be loaded; returns what else is missing.
pub fn check() -> Result<Vec<Degradation>, PrivilegeError> {
    let status = fs::read_to_string("/proc/self/status").map_err(PrivilegeError::Unreadable)?;
    check_effective(effective_caps(&status))
}

/// Whether this process holds `capability` (e.g. "CAP_SYS_PTRACE", one of those sockerr
/// names) in its effective set, read once; `false` when the set cannot be read.
pub fn holds(capability: &str) -> bool {
    static EFFECTIVE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let caps =
        *EFFECTIVE.get_or_init(|| fs::read_to_string("/proc/self/status").map_or(0, |s| effective_caps(&s)));
    named(capability).is_some_and(|cap| caps & (1 << cap) != 0)
}

fn named(capability: &str) -> Option<u32> {
    [
        ("CAP_DAC_READ_SEARCH", CAP_DAC_READ_SEARCH),
        ("CAP_SYS_PTRACE", CAP_SYS_PTRACE),
        ("CAP_SYS_ADMIN", CAP_SYS_ADMIN),
        ("CAP_PERFMON", CAP_PERFMON),
        ("CAP_BPF", CAP_BPF),
    ]
    .into_iter()
    .find_map(|(name, cap)| (name == capability).then_some(cap))
}

fn effective_caps(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

fn check_effective(caps: u64) -> Result<Vec<Degradation>, PrivilegeError> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    // Kernels before 5.8 know only CAP_SYS_ADMIN for this (kernel/bpf/syscall.c).
    if !has(CAP_SYS_ADMIN) {
        let missing: Vec<_> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|(cap, _)| !has(*cap))
            .map(|(_, name)| name)
            .collect();
        if !missing.is_empty() {
            return Err(PrivilegeError::Missing { missing: missing.join(" and ") });
        }
    }
    let mut degraded = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        degraded.push(Degradation {
            capability: "CAP_SYS_ADMIN",
            consequence: "cannot enter other network namespaces (setns): holders in pods are not looked up",
        });
    }
    if !has(CAP_SYS_PTRACE) {
        degraded.push(Degradation {
            capability: "CAP_SYS_PTRACE",
            consequence: "cannot read /proc/PID/ns/net and fd links of other users' processes (ptrace access \
                          check): holders are not looked up in their namespaces, or shown without their process",
        });
    }
    // /proc/PID/fd is a mode 0500 directory of the process's user (fs/proc/fd.c:
    // proc_fd_permission falls back to generic_permission): root needs this to list it.
    if !has(CAP_DAC_READ_SEARCH) {
        degraded.push(Degradation {
            capability: "CAP_DAC_READ_SEARCH",
            consequence: "cannot list other users' /proc/PID/fd: holders are shown without their process",
        });
    }
    Ok(degraded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert!(check_effective(effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n")).unwrap().is_empty());
    }

    #[test]
    fn unprivileged_names_both_capabilities() {
        let err = check_effective(effective_caps("CapEff:\t0000000000000000\n")).unwrap_err().to_string();
        assert!(err.contains("CAP_BPF and CAP_PERFMON"), "{err}");
    }

    #[test]
    fn bpf_and_perfmon_alone_load_but_degrade() {
        let caps = (1u64 << CAP_BPF) | (1 << CAP_PERFMON);
        let degraded = check_effective(caps).unwrap();
        let names: Vec<_> = degraded.iter().map(|d| d.capability).collect();
        assert_eq!(names, ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]);
    }

    /// The DaemonSet's set: CAP_SYS_ADMIN covers bpf() and perf_event_open() (bpf_capable
    /// and perfmon_capable accept it), and sock_diag dumps need no CAP_NET_ADMIN.
    #[test]
    fn sys_admin_ptrace_and_dac_read_search_are_everything() {
        let caps = (1u64 << CAP_SYS_ADMIN) | (1 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH);
        assert!(check_effective(caps).unwrap().is_empty());
    }

    #[test]
    fn capabilities_are_known_by_name() {
        assert_eq!(named("CAP_SYS_PTRACE"), Some(CAP_SYS_PTRACE));
        assert_eq!(named("CAP_NET_RAW"), None);
        assert!(!holds("CAP_NET_RAW"), "an unknown name is never held");
    }

    #[test]
    fn missing_perfmon_only() {
        let err = check_effective(1 << CAP_BPF).unwrap_err().to_string();
        assert!(err.contains("missing CAP_PERFMON:"), "{err}");
    }
}
