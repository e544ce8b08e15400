//! The kprobe backend's attachments: which program goes on which kernel function. Each
//! probed function has an entry kprobe (remembers the socket) and a kretprobe (records
//! the failure); see tracer-ebpf/src/kprobe_*.rs for the kernel sources they follow.
//! Attached after the tracepoints (kernel/loader.rs), which open the in-flight entries
//! these programs fill.

use aya::{
    Ebpf,
    programs::{KProbe, ProgramError},
};
use thiserror::Error;

/// (program, kernel function).
pub const ATTACHMENTS: &[(&str, &str)] = &[
    ("inet_hash_connect_return", "__inet_hash_connect"),
    ("inet_csk_get_port_return", "inet_csk_get_port"),
    ("inet_bind_return", "__inet_bind"),
    ("inet6_bind_return", "__inet6_bind"),
    // Entries after returns, like the tracepoints: no entry without its return.
    ("inet_hash_connect_entry", "__inet_hash_connect"),
    ("inet_csk_get_port_entry", "inet_csk_get_port"),
    ("inet_bind_entry", "__inet_bind"),
    ("inet6_bind_entry", "__inet6_bind"),
];

#[derive(Debug, Error)]
pub enum KprobeError {
    #[error("the eBPF object has no program {0} (daemon and kernel programs out of sync?)")]
    Missing(&'static str),
    #[error("loading program {program} (the verifier log tells why)")]
    Load {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching {program} to kernel function {function} (kernel {kernel}; is it in /proc/kallsyms?)")]
    Attach {
        program: &'static str,
        function: &'static str,
        kernel: String,
        #[source]
        source: Box<ProgramError>,
    },
}

/// The probed functions `kallsyms` (the text of /proc/kallsyms) does not list: inlined or
/// renamed in this kernel's build. Their failures then get no `kernel_fn`.
pub fn missing_functions(kallsyms: &str) -> Vec<&'static str> {
    let wanted: std::collections::BTreeSet<&'static str> = ATTACHMENTS.iter().map(|&(_, f)| f).collect();
    let present: std::collections::HashSet<&str> = kallsyms
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter(|name| wanted.contains(name))
        .collect();
    wanted.into_iter().filter(|function| !present.contains(function)).collect()
}

/// Loads and attaches every program of [`ATTACHMENTS`] whose function this kernel has;
/// returns how many were attached.
pub fn attach_all(ebpf: &mut Ebpf, kernel: &str) -> Result<usize, KprobeError> {
    let missing = match std::fs::read_to_string("/proc/kallsyms") {
        Ok(kallsyms) => missing_functions(&kallsyms),
        // Attaching will say which function is missing.
        Err(_) => Vec::new(),
    };
    for function in &missing {
        tracing::warn!("kernel {kernel} has no function {function} to probe: its failures get no kernel_fn");
    }
    let mut attached = 0;
    for &(program, function) in ATTACHMENTS.iter().filter(|(_, f)| !missing.contains(f)) {
        let probe: &mut KProbe = ebpf
            .program_mut(program)
            .ok_or(KprobeError::Missing(program))?
            .try_into()
            .map_err(|source| KprobeError::Load { program, source: Box::new(source) })?;
        if probe.fd().is_err() {
            probe.load().map_err(|source| KprobeError::Load { program, source: Box::new(source) })?;
        }
        probe.attach(function, 0).map_err(|source| KprobeError::Attach {
            program,
            function,
            kernel: kernel.into(),
            source: Box::new(source),
        })?;
        attached += 1;
    }
    Ok(attached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_missing_from_kallsyms_are_named() {
        let kallsyms = "\
ffffffffab683270 T __inet_hash_connect
ffffffffab687530 T inet_csk_get_port
ffffffffab6caf60 T __inet_bind
ffffffffab71ac70 t __inet6_bind_helper
ffffffffc0a01000 t some_module_fn\t[nf_tables]
";
        assert_eq!(missing_functions(kallsyms), ["__inet6_bind"]);
        assert_eq!(
            missing_functions(""),
            ["__inet6_bind", "__inet_bind", "__inet_hash_connect", "inet_csk_get_port"]
        );
    }

    #[test]
    fn every_probed_function_has_an_entry_and_a_return_program() {
        let functions: std::collections::BTreeSet<&str> = ATTACHMENTS.iter().map(|(_, f)| *f).collect();
        for function in functions {
            let programs: Vec<&str> =
                ATTACHMENTS.iter().filter(|(_, f)| *f == function).map(|(p, _)| *p).collect();
            assert!(programs.iter().any(|p| p.ends_with("_entry")), "{function}: {programs:?}");
            assert!(programs.iter().any(|p| p.ends_with("_return")), "{function}: {programs:?}");
        }
    }
}
