//! Loading the embedded eBPF object, configuring its filters and attaching its
//! programs.

use std::{collections::BTreeSet, fs, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{Program, ProgramError},
};
use thiserror::Error;
use tracer_common::{
    Filters, ListenOffsets, SocketFd,
    config::{FILTER_CGROUP, FILTER_EMIT_ALL, FILTER_HTTP_PEEK, FILTER_LEARN_PIDS, FILTER_PROCESS},
    limits::MAX_FILTER_COMMS,
    names,
};

pub use super::losses::{Losses, LostCounter, skipped_since};
use super::{
    Attachment,
    cgroup::{self, Cgroup, CgroupError},
    drop_offsets,
    drop_totals::DropMaps,
    features,
    kernel_log::{self, KernelLog, KernelLogError},
    kprobes::{self, KprobeError},
    listen_offsets,
    losses::{self, OptionsTable},
    offsets::{self, OffsetsError},
    privileges::{self, PrivilegeError},
    reset_offsets::{ResetOffsetsError, ResetReasons},
    resets,
    sock_offsets::{self, SockOffsetsError},
    tables::TableSizes,
    task_fd_offsets::{self, TaskFdOffsetsError},
    tracefs::{self, TracefsError},
};
use crate::{
    backend::{self, Backend, BackendChoice, BackendError},
    capability::{Capabilities, Off},
};

/// The object tracer-ebpf's `tracer` binary compiles to (see build.rs).
pub(super) static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Which tasks to trace.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub cgroup: Option<PathBuf>,
    /// Report successes of sockets without recorded options too.
    pub all: bool,
    /// Copy the first bytes of each exchange on the selected processes' TCP sockets.
    pub http_peek: bool,
    /// Which hooks to use (`--backend`).
    pub backend: BackendChoice,
    /// `--no-drop-hooks`: leave `skb:kfree_skb` and the listen() tracepoints unattached.
    pub no_drop_hooks: bool,
    /// The host's procfs, where `--comm` processes are looked for.
    pub proc_root: crate::proc_root::ProcRoot,
    /// Entries of the kernel's tables (`--owner-table-entries` and the like).
    pub tables: TableSizes,
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    #[error(transparent)]
    ResetOffsets(#[from] ResetOffsetsError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(
        "--http-peek copies payload bytes of the traced processes: name them with --pid, --comm or \
         --cgroup (it never applies to every process)"
    )]
    PeekWithoutFilter,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    SockOffsets(#[from] SockOffsetsError),
    #[error(transparent)]
    TaskFdOffsets(#[from] TaskFdOffsetsError),
    #[error(transparent)]
    Kprobe(#[from] KprobeError),
    #[error(transparent)]
    KernelLog(#[from] KernelLogError),
    #[error("--comm {0:?} must be 1 to 15 bytes long: the kernel keeps 15 bytes of a task name")]
    CommLength(String),
    #[error("too many --{flag} values: {given}, at most {max} (the size of the kernel's filter map{hint})")]
    TooManyFilters { flag: &'static str, given: usize, max: u32, hint: &'static str },
    // Boxed: aya's errors carry verifier logs and would make every Result huge.
    #[error("the kernel rejected sockerr's eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no {0} (daemon and kernel programs out of sync?)")]
    Missing(&'static str),
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("loading program {program} (the verifier log tells why)")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "reading the kernel's BTF (/sys/kernel/btf/vmlinux), which the BTF-typed programs need (a kernel built with CONFIG_DEBUG_INFO_BTF)"
    )]
    KernelBtf(#[source] Box<aya::BtfError>),
    #[error("attaching {program} to tracepoint {category}:{tracepoint}")]
    Attach {
        program: &'static str,
        category: &'static str,
        tracepoint: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
}

/// The loaded programs; dropping it detaches them.
pub struct Loaded {
    /// Owns programs and links.
    _ebpf: Ebpf,
    /// Forwards the programs' aya-log lines to this process's log until stopped.
    pub kernel_log: KernelLog,
    pub events: RingBuf<MapData>,
    pub lost: LostCounter,
    pub attached: usize,
    pub cgroup: Option<Cgroup>,
    /// `enum sk_rst_reason` names of this kernel (empty when it has no reasons).
    pub reset_reasons: ResetReasons,
    pub backend: Backend,
    /// Why this backend, for the start-up log.
    pub backend_reason: String,
    /// Per-socket drop totals (`None` when switched off or the kernel has no drop reasons).
    pub drops: Option<DropMaps>,
    /// Which records the hooks left out (or the kernel's lack) make impossible.
    pub capabilities: Capabilities,
    /// The processes the kernel filter selects (`None` when no `--pid` or `--comm`).
    pub selected: Option<SelectedPids>,
    /// Which traced fd holds a socket, by inode: the enricher's first answer for a holder.
    pub socket_fds: SocketFds,
}

/// `SOCKET_FDS`: where the programs saw each connected or accepted socket of a traced
/// process held, by inode number.
pub struct SocketFds(HashMap<MapData, u64, SocketFd>);

impl SocketFds {
    /// The (tgid, fd) recorded for socket `inode`: a hint, whose link is to be checked.
    pub fn holder(&self, inode: u64) -> Option<SocketFd> {
        self.0.get(&inode, 0).ok()
    }
}

/// `FILTER_PIDS`: the `--pid` values and the tgids `--comm` learned.
pub struct SelectedPids(HashMap<MapData, u32, u8>);

impl SelectedPids {
    /// The pids now (an entry removed meanwhile is skipped: the process left).
    pub fn read(&self) -> Vec<u32> {
        self.0.keys().filter_map(Result::ok).collect()
    }
}

/// `given` values of `--flag` fit in a filter map of `max` entries.
fn check_filter_count(flag: &'static str, given: usize, max: u32) -> Result<(), LoadError> {
    if given > max as usize {
        let hint = if flag == "pid" { "; raise --filter-table-entries" } else { "" };
        return Err(LoadError::TooManyFilters { flag, given, max, hint });
    }
    Ok(())
}

/// (program, category, tracepoint), in attach order: exits before entries so no
/// entry records a call whose exit would be missed.
const ATTACHMENTS: &[Attachment] = &[
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_exit_bind", "syscalls", "sys_exit_bind"),
    ("sys_exit_setsockopt", "syscalls", "sys_exit_setsockopt"),
    ("sys_exit_new_fd", "syscalls", "sys_exit_socket"),
    ("sys_exit_new_fd", "syscalls", "sys_exit_accept"),
    ("sys_exit_new_fd", "syscalls", "sys_exit_accept4"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("inet_sk_error_report", "sock", "inet_sk_error_report"),
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_enter_bind", "syscalls", "sys_enter_bind"),
    ("sys_enter_setsockopt", "syscalls", "sys_enter_setsockopt"),
];

/// The programs of the attachment plan (`ATTACHMENTS`, `resets::RESET_ATTACHMENTS`) that
/// are BTF-typed tracepoint programs (`tp_btf`, bound to their tracepoint at load); every
/// other is a classic tracepoint program. These are the hooks that fire for every TCP
/// socket of the node, in softirq as often as not: the kernel only keeps such a program
/// from running inside itself, and counts that skip, where it skips a classic one
/// whenever another classic or kprobe program runs on the CPU
/// (tracer-ebpf/src/receive_reset.rs). They are handed the socket as a typed pointer,
/// which socket-local storage needs.
pub const BTF_TRACEPOINT_PROGRAMS: &[&str] =
    &["inet_sock_set_state", "inet_sk_error_report", "tcp_destroy_sock", "tcp_receive_reset"];

/// How a program of the attachment plan hooks its tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    Classic,
    Btf,
}

impl HookKind {
    /// The kind of a program of the attachment plan, from the list above (the contract
    /// test checks it against the object's sections).
    pub fn of(program: &str) -> HookKind {
        if BTF_TRACEPOINT_PROGRAMS.contains(&program) { HookKind::Btf } else { HookKind::Classic }
    }
}

/// Only needed to follow `--comm` processes across exec, exit and renames.
const COMM_ATTACHMENTS: &[Attachment] = &[
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("task_rename", "task", "task_rename"),
];

/// Every tracepoint `load` attaches for `selection`, in order; `resets`: whether this
/// kernel has the reset tracepoints (`resets::prepare`), `drops`: whether it has
/// `skb:kfree_skb` with a reason (`drop_offsets::discover`). The benchmark's floor
/// (`kernel::floor`) attaches its empty program to exactly these.
pub fn attachment_plan(selection: &Selection, resets: bool, drops: bool) -> Vec<Attachment> {
    let comm: &[Attachment] = if selection.comms.is_empty() { &[] } else { COMM_ATTACHMENTS };
    let mut plan: Vec<Attachment> = ATTACHMENTS.iter().chain(comm).copied().collect();
    if !selection.no_drop_hooks {
        plan.extend_from_slice(listen_offsets::LISTEN_ATTACHMENTS);
    }
    if resets {
        plan.extend_from_slice(resets::RESET_ATTACHMENTS);
    }
    // Without --http-peek these programs are not attached at all: no cost, no bytes.
    if selection.http_peek {
        plan.extend_from_slice(resets::PEEK_ATTACHMENTS);
    }
    if drops && !selection.no_drop_hooks {
        plan.push(drop_offsets::DROP_ATTACHMENT);
    }
    plan
}

pub fn load(selection: &Selection) -> Result<Loaded, LoadError> {
    for degraded in privileges::check()? {
        tracing::warn!("no {}: {}", degraded.capability, degraded.consequence);
    }
    raise_memlock_limit();
    let kernel = tracefs::kernel_release();
    let tracefs = tracefs::find_or_mount()?;
    let offsets = offsets::discover(&tracefs, &kernel)?;
    // Parsed once: the kprobe programs and kfree_skb read `struct sock` fields, and
    // sys_exit_accept follows the caller's fd table to the accepted socket.
    let btf = sock_offsets::read_btf(std::path::Path::new(sock_offsets::VMLINUX_BTF), &kernel)?;
    // Switched off: nothing of these hooks is looked for (their globals stay zero, and no
    // program reads them).
    let (listen_offsets, drop_setup) = if selection.no_drop_hooks {
        (ListenOffsets::default(), None)
    } else {
        (listen_offsets::discover(&tracefs, &kernel)?, drop_offsets::discover(&tracefs, &kernel, Some(&btf))?)
    };
    let capabilities = Capabilities::new(selection.no_drop_hooks, drop_setup.is_some());
    if selection.http_peek
        && selection.pids.is_empty()
        && selection.comms.is_empty()
        && selection.cgroup.is_none()
    {
        return Err(LoadError::PeekWithoutFilter);
    }
    let reset_setup = resets::prepare(&tracefs, &kernel, selection.http_peek, offsets.sys_exit_ret)?;
    let reset_offsets = reset_setup.as_ref().map(|setup| setup.offsets).unwrap_or_default();
    if reset_setup.is_some() {
        for gap in resets::gaps(&reset_offsets) {
            tracing::info!("TCP resets on kernel {kernel}: {gap}");
        }
    }
    let peek_sockets = if selection.http_peek { resets::PEEK_SOCKETS } else { 1 };
    // FD_SOCKS (an LRU map: preallocated) only tells --http-peek which fds to copy.
    let fd_sockets = if selection.http_peek { resets::PEEK_FD_SOCKETS } else { 1 };
    let (backend, backend_reason) = backend::choose(selection.backend, &features::detect())?;
    // Both backends: the kprobe one reads the refusing socket's fields, and kfree_skb
    // the tuple of a traced socket's dropped packet.
    let sock_offsets = sock_offsets::from_btf(&btf, &kernel)?;
    let task_fd_offsets = task_fd_offsets::from_btf(&btf, &kernel)?;
    drop(btf);

    let comms = selection.comms.iter().map(|c| comm_key(c)).collect::<Result<Vec<_>, _>>()?;
    let pids = initial_pids(selection);
    let tables = selection.tables;
    check_filter_count("pid", pids.len(), tables.filter_pids)?;
    check_filter_count("comm", comms.len(), MAX_FILTER_COMMS)?;
    let cgroup = selection.cgroup.as_deref().map(cgroup::resolve).transpose()?;
    let filters = filters(selection, cgroup.as_ref());

    let kernel_btf = kernel_btf()?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&kernel_btf))
        // TASK_STATE (task storage): aya 0.14 creates it but has no userspace type
        // for it, which is fine: only the programs use it.
        .allow_unsupported_maps()
        .override_global(names::OFFSETS, &offsets, true)
        .override_global(names::FILTERS, &filters, true)
        .override_global(names::RESET_OFFSETS, &reset_offsets, true)
        // Levels the log filter would drop are never formatted in the kernel.
        .override_global(aya_log::LEVEL, &kernel_log::load_time_level(), true)
        .map_max_entries(names::PEEKS, peek_sockets)
        .map_max_entries(names::FD_SOCKS, fd_sockets)
        .map_max_entries(names::TRACKED, tables.options)
        .map_max_entries(names::SK_OWNERS, tables.owners)
        .map_max_entries(names::SOCK_OWNERS, tables.owners)
        .map_max_entries(names::SOCKET_FDS, tables.owners)
        .map_max_entries(names::LISTENERS, tables.listeners)
        .map_max_entries(names::SOCKET_DROPS, tables.drops)
        .map_max_entries(names::FILTER_PIDS, tables.filter_pids)
        .override_global(names::SOCK_OFFSETS, &sock_offsets, true)
        .override_global(names::TASK_FD_OFFSETS, &task_fd_offsets, true)
        .override_global(names::LISTEN_OFFSETS, &listen_offsets, true)
        .override_global(
            names::DROP_OFFSETS,
            &drop_setup.as_ref().map(|s| s.offsets).unwrap_or_default(),
            true,
        )
        .load(PROGRAMS)
        .map_err(|err| LoadError::Load(Box::new(err)))?;
    // Before attaching, so the reader runs from the programs' first line on.
    let kernel_log = kernel_log::start(&mut ebpf)?;

    fill_filter_maps(&mut ebpf, &pids, &comms)?;
    let plan = attachment_plan(selection, reset_setup.is_some(), drop_setup.is_some());
    for &(program, category, tracepoint) in &plan {
        attach(&mut ebpf, &kernel_btf, program, category, tracepoint)?;
    }
    drop(kernel_btf);
    let mut attached = plan.len();
    let drops = match drop_setup {
        Some(setup) => {
            for gap in drop_offsets::gaps(&setup.offsets) {
                tracing::info!("packet drops on kernel {kernel}: {gap}");
            }
            let totals = take_map(&mut ebpf, names::SOCKET_DROPS)?;
            let maps = DropMaps::new(totals, setup.reasons)
                .map_err(|source| LoadError::Map { name: names::SOCKET_DROPS, source })?;
            Some(maps)
        }
        None => {
            if capabilities.socket_drop == Some(Off::Kernel) {
                tracing::info!(
                    "kernel {kernel} has no skb:kfree_skb with a reason (5.17+): packet drops are not reported"
                );
            }
            None
        }
    };
    if backend == Backend::Kprobe {
        attached += kprobes::attach_all(&mut ebpf, &kernel)?;
    }

    let events: RingBuf<_> = take_typed_map(&mut ebpf, names::EVENTS)?;
    let lost: PerCpuArray<_, u64> = take_typed_map(&mut ebpf, names::LOSSES)?;
    let reset_reasons = reset_setup.map(|setup| setup.reasons).unwrap_or_default();
    let selected = if selection.pids.is_empty() && selection.comms.is_empty() {
        None
    } else {
        Some(SelectedPids(take_typed_map(&mut ebpf, names::FILTER_PIDS)?))
    };
    let options = OptionsTable::new(
        take_typed_map(&mut ebpf, names::TRACKED_CHURN)?,
        take_typed_map(&mut ebpf, names::TRACKED)?,
        tables.options,
        selection.proc_root.clone(),
    );
    let socket_fds = SocketFds(take_typed_map(&mut ebpf, names::SOCKET_FDS)?);
    let guarded = ebpf
        .programs()
        .filter(|(_, program)| program.fd().is_ok() && !matches!(program, Program::BtfTracePoint(_)))
        .count();
    if let Some(gap) = losses::uncounted_skips(&kernel, losses::counts_guarded_skips(&kernel), guarded) {
        tracing::warn!("{gap}");
    }
    let lost = LostCounter::new(lost, options, &ebpf);
    Ok(Loaded {
        _ebpf: ebpf,
        kernel_log,
        events,
        lost,
        attached,
        cgroup,
        reset_reasons,
        backend,
        backend_reason,
        drops,
        capabilities,
        selected,
        socket_fds,
    })
}

fn filters(selection: &Selection, cgroup: Option<&Cgroup>) -> Filters {
    let mut flags = 0;
    if !selection.pids.is_empty() || !selection.comms.is_empty() {
        flags |= FILTER_PROCESS;
    }
    if !selection.comms.is_empty() {
        flags |= FILTER_LEARN_PIDS;
    }
    if selection.all {
        flags |= FILTER_EMIT_ALL;
    }
    if selection.http_peek {
        flags |= FILTER_HTTP_PEEK;
    }
    let (cgroup_id, cgroup_level) = match cgroup {
        Some(cg) => {
            flags |= FILTER_CGROUP;
            (cg.id, cg.level)
        }
        None => (0, 0),
    };
    Filters { flags, cgroup_level, cgroup_id }
}

/// `--pid` values, plus the processes that already carry a `--comm` name: their
/// threads may have been renamed since (Envoy's workers), which the kernel's
/// thread-name check would miss.
fn initial_pids(selection: &Selection) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for &pid in &selection.pids {
        if !selection.proc_root.pid_dir(pid).exists() {
            tracing::warn!("no process with pid {pid} is running now; tracing it if it appears");
        }
        pids.insert(pid);
    }
    for comm in &selection.comms {
        let found = processes_named(&selection.proc_root, comm);
        if found.is_empty() {
            tracing::warn!("no process named {comm:?} is running now; tracing those that start later");
        }
        pids.extend(found);
    }
    pids
}

fn processes_named(proc_root: &crate::proc_root::ProcRoot, comm: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(proc_root) else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            fs::read_to_string(proc_root.pid_dir(pid).join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// A task name as the kernel stores it: at most 15 bytes and a NUL.
fn comm_key(comm: &str) -> Result<[u8; 16], LoadError> {
    let bytes = comm.as_bytes();
    if bytes.len() > 15 || bytes.is_empty() {
        return Err(LoadError::CommLength(comm.into()));
    }
    let mut key = [0u8; 16];
    key[..bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

fn fill_filter_maps(ebpf: &mut Ebpf, pids: &BTreeSet<u32>, comms: &[[u8; 16]]) -> Result<(), LoadError> {
    let map = ebpf.map_mut(names::FILTER_PIDS).ok_or(LoadError::Missing(names::FILTER_PIDS))?;
    let mut pid_map: HashMap<_, u32, u8> =
        HashMap::try_from(map).map_err(|source| LoadError::Map { name: names::FILTER_PIDS, source })?;
    for &pid in pids {
        pid_map.insert(pid, 1, 0).map_err(|source| LoadError::Map { name: names::FILTER_PIDS, source })?;
    }
    let map = ebpf.map_mut(names::FILTER_COMMS).ok_or(LoadError::Missing(names::FILTER_COMMS))?;
    let mut comm_map: HashMap<_, [u8; 16], u8> =
        HashMap::try_from(map).map_err(|source| LoadError::Map { name: names::FILTER_COMMS, source })?;
    for comm in comms {
        comm_map
            .insert(*comm, 1, 0)
            .map_err(|source| LoadError::Map { name: names::FILTER_COMMS, source })?;
    }
    Ok(())
}

/// aya's own reading of the kernel's BTF, parsed once for `EbpfLoader::btf` and for
/// each BTF-typed program's load (aya parses it again for each otherwise).
pub(super) fn kernel_btf() -> Result<aya::Btf, LoadError> {
    aya::Btf::from_sys_fs().map_err(|source| LoadError::KernelBtf(Box::new(source)))
}

pub(super) fn attach(
    ebpf: &mut Ebpf,
    kernel_btf: &aya::Btf,
    program: &'static str,
    category: &'static str,
    tracepoint: &'static str,
) -> Result<(), LoadError> {
    let failed = |source| LoadError::Program { program, source: Box::new(source) };
    let attached = match ebpf.program_mut(program).ok_or(LoadError::Missing(program))? {
        Program::TracePoint(prog) => {
            // A program attached to several tracepoints is loaded once.
            if prog.fd().is_err() {
                prog.load().map_err(failed)?;
            }
            prog.attach(category, tracepoint).map(drop)
        }
        // Bound to one tracepoint at load, so never attached twice.
        Program::BtfTracePoint(prog) => {
            prog.load(tracepoint, kernel_btf).map_err(failed)?;
            prog.attach().map(drop)
        }
        _ => return Err(failed(ProgramError::UnexpectedProgramType)),
    };
    attached.map_err(|source| LoadError::Attach { program, category, tracepoint, source: Box::new(source) })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::Missing(name))
}

/// [`take_map`] as the map type the programs declared it with.
fn take_typed_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    T::try_from(take_map(ebpf, name)?).map_err(|source| LoadError::Map { name, source })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones ignore it.
pub(super) fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::limits::MAX_FILTER_PIDS;

    use super::*;

    #[test]
    fn filter_limits_are_the_map_sizes_and_name_the_flag() {
        check_filter_count("pid", MAX_FILTER_PIDS as usize, MAX_FILTER_PIDS).unwrap();
        check_filter_count("comm", MAX_FILTER_COMMS as usize, MAX_FILTER_COMMS).unwrap();
        let err = check_filter_count("pid", 4097, MAX_FILTER_PIDS).unwrap_err().to_string();
        assert_eq!(
            err,
            "too many --pid values: 4097, at most 4096 (the size of the kernel's filter map; raise \
             --filter-table-entries)"
        );
        let err = check_filter_count("pid", 3, 2).unwrap_err().to_string();
        assert!(err.contains("--pid values: 3, at most 2"), "a smaller --filter-table-entries: {err}");
        let err = check_filter_count("comm", 65, MAX_FILTER_COMMS).unwrap_err().to_string();
        assert!(err.starts_with("too many --comm values: 65, at most 64"), "{err}");
    }

    #[test]
    fn comm_keys() {
        assert_eq!(&comm_key("envoy").unwrap()[..6], b"envoy\0");
        assert!(comm_key("a-name-longer-than-15").is_err());
        assert!(comm_key("").is_err());
    }

    /// `--comm` looks in the host's procfs (`--host-proc`), not in this process's /proc.
    #[test]
    fn processes_are_found_under_the_given_proc_root() {
        let dir = std::env::temp_dir().join(format!("sockerr-loader-proc-{}", std::process::id()));
        for (entry, comm) in [("123", "envoy\n"), ("456", "nginx\n"), ("self", "envoy\n")] {
            fs::create_dir_all(dir.join(entry)).unwrap();
            fs::write(dir.join(entry).join("comm"), comm).unwrap();
        }
        let root = crate::proc_root::ProcRoot::new(&dir);
        let found = processes_named(&root, "envoy");
        let selection = Selection { pids: vec![456], proc_root: root, ..Default::default() };
        let pids = initial_pids(&Selection { comms: vec!["envoy".into()], ..selection });
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, [123]);
        assert_eq!(pids.into_iter().collect::<Vec<_>>(), [123, 456]);
    }

    #[test]
    fn attachment_plan_follows_the_selection() {
        let all = Selection::default();
        let base: Vec<Attachment> =
            ATTACHMENTS.iter().chain(listen_offsets::LISTEN_ATTACHMENTS).copied().collect();
        assert_eq!(attachment_plan(&all, false, false), base);
        let with_resets = attachment_plan(&all, true, false);
        assert_eq!(with_resets.len(), base.len() + resets::RESET_ATTACHMENTS.len());
        assert_eq!(&with_resets[base.len()..], resets::RESET_ATTACHMENTS);
        let comm = Selection { comms: vec!["envoy".into()], http_peek: true, ..Default::default() };
        let plan = attachment_plan(&comm, true, false);
        let expected = base.len()
            + COMM_ATTACHMENTS.len()
            + resets::RESET_ATTACHMENTS.len()
            + resets::PEEK_ATTACHMENTS.len();
        assert_eq!(plan.len(), expected);
        assert!(plan.contains(&("sched_process_exec", "sched", "sched_process_exec")));
        assert_eq!(plan.last(), resets::PEEK_ATTACHMENTS.last());
        // The drop hook comes last, where the kernel has it.
        let with_drops = attachment_plan(&comm, true, true);
        assert_eq!(with_drops[..plan.len()], plan[..]);
        assert_eq!(with_drops[plan.len()..], [drop_offsets::DROP_ATTACHMENT]);
    }

    #[test]
    fn no_drop_hooks_leaves_the_listen_and_drop_tracepoints_out() {
        let plan = attachment_plan(&Selection::default(), true, true);
        let without = attachment_plan(&Selection { no_drop_hooks: true, ..Default::default() }, true, true);
        assert_eq!(without.len() + listen_offsets::LISTEN_ATTACHMENTS.len() + 1, plan.len());
        assert!(
            plan.contains(&drop_offsets::DROP_ATTACHMENT)
                && !without.contains(&drop_offsets::DROP_ATTACHMENT)
        );
        for listen in listen_offsets::LISTEN_ATTACHMENTS {
            assert!(plan.contains(listen) && !without.contains(listen), "{listen:?}");
        }
        // Everything else stays, in the same order.
        let others: Vec<_> = plan
            .iter()
            .filter(|&&a| {
                !listen_offsets::LISTEN_ATTACHMENTS.contains(&a) && a != drop_offsets::DROP_ATTACHMENT
            })
            .copied()
            .collect();
        assert_eq!(without, others);
    }

    #[test]
    fn filter_flags() {
        let none = filters(&Selection::default(), None);
        assert_eq!(none.flags, 0);
        let sel = Selection { comms: vec!["envoy".into()], all: true, ..Default::default() };
        let f = filters(&sel, None);
        assert_eq!(f.flags, FILTER_PROCESS | FILTER_LEARN_PIDS | FILTER_EMIT_ALL);
        let sel = Selection { pids: vec![1], ..Default::default() };
        let cg = Cgroup { path: "/x".into(), id: 42, level: 2 };
        let f = filters(&sel, Some(&cg));
        assert_eq!(f.flags, FILTER_PROCESS | FILTER_CGROUP);
        assert_eq!((f.cgroup_id, f.cgroup_level), (42, 2));
    }
}
