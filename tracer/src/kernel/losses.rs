//! What the kernel side lost, by reason: the programs' own `LOSSES` counters, and the
//! runs of our programs that the kernel itself skipped.
//!
//! The kernel runs at most one kprobe or tracepoint BPF program per CPU at a time
//! (`bpf_prog_active`, kernel/trace/bpf_trace.c `trace_call_bpf()`): a program whose
//! hook fires while another one runs on that CPU, or while a bpf() map call of any
//! process holds the counter there, is not run, and only the program's
//! `recursion_misses` says so (`bpf_prog_info`, Linux 5.12+; for tracepoint and kprobe
//! programs only from 6.7, [`counts_guarded_skips`]). Nothing of ours runs to count it,
//! so user space reads it from each program's `/proc/self/fdinfo` entry, by program.
//!
//! `TRACKED` evicts without a word (an LRU map): user space works its evictions out
//! (`tracer_common::tracked_churn`) from the programs' insert and remove counts and,
//! only once the map may be full, the entries left in it. It also removes the entries of
//! processes that exited, which no close(2) took out.

use std::{
    collections::BTreeMap,
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
    programs::ProgramFd,
};
use thiserror::Error;
use tracer_common::{Loss, options::Tracked, tracked_churn};
use tracing::{info, warn};

use crate::proc_root::ProcRoot;

#[derive(Debug, Error)]
pub enum LossReadError {
    #[error("cannot read the LOSSES map")]
    Counters(#[source] aya::maps::MapError),
    #[error("cannot read the TRACKED_CHURN map")]
    Churn(#[source] aya::maps::MapError),
    #[error("cannot count the entries of the TRACKED map")]
    TrackedEntries(#[source] aya::maps::MapError),
    #[error("cannot read {}", path.display())]
    ProgramInfo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} has no recursion_misses line (Linux 5.12+ writes one for every program)", path.display())]
    NoMissCount { path: PathBuf },
}

/// Running totals of [`Loss`] reasons, indexed by `Loss::index`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Losses(pub [u64; Loss::COUNT]);

impl Losses {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn of(&self, reason: Loss) -> u64 {
        self.0[reason.index() as usize]
    }

    /// Each reason with its count, in index order.
    pub fn by_reason(&self) -> impl Iterator<Item = (Loss, u64)> + '_ {
        Loss::ALL.into_iter().map(|reason| (reason, self.of(reason)))
    }
}

/// How often at most the entries of a half-full `TRACKED` are walked, except for the last
/// reading at exit: a map of live sockets can stay that full, and walking its entries
/// (262,144 by default) is one bpf() call each, which the 1 s tick would pay every
/// second.
pub const EVICTION_COUNT_EVERY: Duration = Duration::from_secs(30);

/// Whether the entries are counted now: never counted yet, counted long enough ago, or
/// the last reading.
fn count_due(last: Option<Instant>, now: Instant, last_reading: bool) -> bool {
    last_reading || last.is_none_or(|last| now.saturating_duration_since(last) >= EVICTION_COUNT_EVERY)
}

/// `TRACKED` (only its entries are counted here) and what the programs put into it and
/// took out.
pub struct OptionsTable {
    churn: PerCpuArray<MapData, u64>,
    tracked: HashMap<MapData, u64, Tracked>,
    capacity: u32,
    /// The host's procfs, where a key's tgid is looked for; `None` when it does not show
    /// the host's pids (then no entry is removed: an absent pid proves nothing).
    proc_root: Option<ProcRoot>,
    /// Entries of exited processes removed here: the programs never saw their fds closed.
    swept: u64,
    /// When the entries were last counted.
    counted_at: Option<Instant>,
}

impl OptionsTable {
    pub fn new(
        churn: PerCpuArray<MapData, u64>,
        tracked: HashMap<MapData, u64, Tracked>,
        capacity: u32,
        proc_root: ProcRoot,
    ) -> Self {
        let proc_root = if proc_root.shows_host_pids() {
            Some(proc_root)
        } else {
            warn!(
                "{} does not show the host's pids (pid 2 is no kthreadd): the recorded options of processes \
                 that exit are not removed, and evicted once the table is full (options_evicted); pass \
                 --host-proc with the host's /proc",
                proc_root.display()
            );
            None
        };
        Self { churn, tracked, capacity, proc_root, swept: 0, counted_at: None }
    }

    /// Entries evicted so far, or None when not worked out now. The entries are only
    /// walked once the map is half full (a bpf() call per entry; each removal holds the
    /// CPU's `bpf_prog_active`, so a program of ours that fires there meanwhile is skipped
    /// and counted), and then at most every [`EVICTION_COUNT_EVERY`] until the last
    /// reading. Each walk first removes the entries of processes that exited
    /// (their fds were closed without close(2)): left in, the LRU map would evict them
    /// once full, which would count as lost options of live sockets.
    fn evicted(&mut self, last_reading: bool) -> Result<Option<u64>, LossReadError> {
        let total = |index| -> Result<u64, LossReadError> {
            Ok(self.churn.get(&index, 0).map_err(LossReadError::Churn)?.iter().sum())
        };
        let inserted = total(tracked_churn::INSERTED)?;
        let removed = total(tracked_churn::REMOVED)?.saturating_add(self.swept);
        let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
        let capacity = u64::from(self.capacity);
        let may_have_evicted = tracked_churn::may_have_evicted(inserted, removed, capacity, cpus);
        let worth_sweeping = tracked_churn::worth_sweeping(inserted, removed, capacity);
        if !walk_needed(may_have_evicted, worth_sweeping, self.proc_root.is_some()) {
            return Ok(None);
        }
        let now = Instant::now();
        if !count_due(self.counted_at, now, last_reading) {
            return Ok(None);
        }
        self.counted_at = Some(now);
        let (present, swept) = self.sweep()?;
        self.swept = self.swept.saturating_add(swept);
        if swept > 0 {
            info!(
                "removed {swept} recorded-options entries of processes that exited without closing their sockets"
            );
        }
        let removed = removed.saturating_add(swept);
        Ok(may_have_evicted.then(|| tracked_churn::evicted(inserted, removed, present.min(capacity))))
    }

    /// Walks the keys, removes those of exited processes; returns the entries left and
    /// the entries removed.
    fn sweep(&mut self) -> Result<(u64, u64), LossReadError> {
        let mut present = 0u64;
        let mut keys = Vec::new();
        // Bounded: keys removed while they are walked make the walk start over.
        for key in self.tracked.keys().take(2 * self.capacity as usize) {
            keys.push(key.map_err(LossReadError::TrackedEntries)?);
            present += 1;
        }
        let Some(proc_root) = &self.proc_root else { return Ok((present, 0)) };
        let exited = of_exited_processes(&keys, |tgid| proc_root.pid_dir(tgid).exists());
        drop(keys);
        let mut swept = 0u64;
        for key in exited {
            // Gone meanwhile (evicted, or the fd number reused and closed): not ours to count.
            if self.tracked.remove(&key).is_ok() {
                swept += 1;
            }
        }
        Ok((present.saturating_sub(swept), swept))
    }
}

/// Whether `TRACKED`'s keys must be walked: to count evictions when there may be some, or
/// to sweep a half-full map, which only a procfs that shows the host's pids (`can_sweep`)
/// can do; without it that walk would remove nothing.
fn walk_needed(may_have_evicted: bool, worth_sweeping: bool, can_sweep: bool) -> bool {
    may_have_evicted || (worth_sweeping && can_sweep)
}

/// The keys (`tgid << 32 | fd`) whose process is gone, asking `is_alive` once per tgid.
fn of_exited_processes(keys: &[u64], mut is_alive: impl FnMut(u32) -> bool) -> Vec<u64> {
    let mut alive = std::collections::HashMap::new();
    keys.iter()
        .copied()
        .filter(|&key| {
            let tgid = (key >> 32) as u32;
            !*alive.entry(tgid).or_insert_with(|| is_alive(tgid))
        })
        .collect()
}

/// Reads [`Losses`]: `LOSSES` for the reasons our programs count, the programs'
/// `recursion_misses` for [`Loss::ProgramSkipped`], `TRACKED`'s churn for
/// [`Loss::OptionsEvicted`].
pub struct LostCounter {
    counters: PerCpuArray<MapData, u64>,
    options: OptionsTable,
    /// The most evictions worked out so far: a later reading may come out lower (entries
    /// removed since), never the count.
    evicted: u64,
    /// Each loaded program's name and fd: the name says which hook's runs were skipped.
    programs: Vec<(String, ProgramFd)>,
    /// Skipped runs by program name, as of the last successful read.
    skipped: BTreeMap<String, u64>,
}

impl LostCounter {
    /// `ebpf`'s loaded programs are the ones whose skipped runs count.
    pub fn new(counters: PerCpuArray<MapData, u64>, options: OptionsTable, ebpf: &Ebpf) -> Self {
        let programs = ebpf
            .programs()
            .filter_map(|(name, program)| Some((name.to_owned(), program.fd().ok()?.try_clone().ok()?)))
            .collect();
        Self { counters, options, evicted: 0, programs, skipped: BTreeMap::new() }
    }

    /// Sums every CPU's counters and every program's skipped runs. A failed read is an
    /// error: a count of 0 would claim nothing was lost. `last_reading`: the totals at
    /// exit, which count `TRACKED`'s entries whenever it may have evicted.
    pub fn read(&mut self, last_reading: bool) -> Result<Losses, LossReadError> {
        let mut losses = Losses::default();
        for reason in Loss::ALL.into_iter().filter(|reason| reason.counted_by_programs()) {
            let per_cpu = self.counters.get(&reason.index(), 0).map_err(LossReadError::Counters)?;
            losses.0[reason.index() as usize] = per_cpu.iter().sum();
        }
        let mut skipped = BTreeMap::new();
        for (name, program) in &self.programs {
            let path = PathBuf::from(format!("/proc/self/fdinfo/{}", program.as_fd().as_raw_fd()));
            let info = fs::read_to_string(&path)
                .map_err(|source| LossReadError::ProgramInfo { path: path.clone(), source })?;
            let misses = recursion_misses(&info).ok_or(LossReadError::NoMissCount { path })?;
            if misses > 0 {
                skipped.insert(name.clone(), misses);
            }
        }
        losses.0[Loss::ProgramSkipped.index() as usize] += skipped.values().sum::<u64>();
        self.skipped = skipped;
        if let Some(evicted) = self.options.evicted(last_reading)? {
            self.evicted = self.evicted.max(evicted);
        }
        losses.0[Loss::OptionsEvicted.index() as usize] = self.evicted;
        Ok(losses)
    }

    /// Skipped runs by program name as of the last successful [`LostCounter::read`]
    /// (programs with none left out): which hooks' data [`Loss::ProgramSkipped`] is.
    pub fn skipped_runs(&self) -> &BTreeMap<String, u64> {
        &self.skipped
    }
}

/// Whether the kernel counts the runs of tracepoint and kprobe programs it skips
/// (`trace_call_bpf()`): from Linux 6.7, commit dd8657894c11 ("bpf: Count missed stats in
/// trace_call_bpf"). Before, only the BTF-typed tracepoints' skipped runs reach
/// `recursion_misses` (`__bpf_trace_run()`). Nothing in BTF or tracefs shows it (the
/// `bpf_link_info` field of the same series was backported to stable kernels alone), so
/// the release decides; `None` when the release does not parse.
pub fn counts_guarded_skips(release: &str) -> Option<bool> {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = numbers.next()?.parse().ok()?;
    let minor: u32 = numbers.next()?.parse().ok()?;
    Some((major, minor) >= (6, 7))
}

/// What the log says at start when `program_skipped` cannot count every program's
/// skipped runs (`counted` from [`counts_guarded_skips`]); `None` when it can.
pub fn uncounted_skips(kernel: &str, counted: Option<bool>, guarded_programs: usize) -> Option<String> {
    let what = format!(
        "the runs the kernel skips of sockerr's {guarded_programs} classic tracepoint and kprobe programs are \
         not counted (Linux 6.7 counts them, commit dd8657894c11): program_skipped counts only the \
         BTF-typed tracepoints'"
    );
    match counted {
        Some(true) => None,
        Some(false) => Some(format!("skipped runs on kernel {kernel}: {what}")),
        None => {
            Some(format!("skipped runs on kernel {kernel} (a release sockerr cannot read): perhaps {what}"))
        }
    }
}

/// `name=n` for each program whose skipped runs grew from `before` to `now`, by name:
/// what a new [`Loss::ProgramSkipped`] count is made of.
pub fn skipped_since(before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) -> String {
    now.iter()
        .filter_map(|(name, &count)| {
            let grown = count.saturating_sub(before.get(name).copied().unwrap_or(0));
            (grown > 0).then(|| format!("{name}={grown}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `recursion_misses:` value of a BPF program's fdinfo (`bpf_prog_show_fdinfo()`,
/// kernel/bpf/syscall.c: one `name:\tvalue` pair per line; no crate parses this file).
fn recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo.lines().find_map(|line| line.strip_prefix("recursion_misses:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_entries_of_exited_processes_are_swept() {
        let key = |tgid: u64, fd: u64| tgid << 32 | fd;
        let keys = [key(10, 3), key(20, 3), key(10, 4), key(30, 9), key(20, 5)];
        let mut asked = Vec::new();
        let exited = of_exited_processes(&keys, |tgid| {
            asked.push(tgid);
            tgid == 20
        });
        assert_eq!(exited, [key(10, 3), key(10, 4), key(30, 9)]);
        assert_eq!(asked, [10, 20, 30], "once per process");
    }

    #[test]
    fn the_keys_are_walked_to_count_or_to_sweep_never_for_a_sweep_that_cannot_remove() {
        assert!(walk_needed(true, false, false), "evictions to count");
        assert!(walk_needed(true, true, false), "evictions to count, even without host pids");
        assert!(walk_needed(false, true, true), "a half-full map to sweep");
        assert!(!walk_needed(false, true, false), "a sweep without host pids removes nothing");
        assert!(!walk_needed(false, false, true), "a map far from full");
    }

    #[test]
    fn a_full_options_table_is_counted_at_most_every_interval_and_at_exit() {
        let start = Instant::now();
        assert!(count_due(None, start, false), "never counted yet");
        let soon = start + EVICTION_COUNT_EVERY / 2;
        assert!(!count_due(Some(start), soon, false));
        assert!(count_due(Some(start), soon, true), "the last reading always counts");
        assert!(count_due(Some(start), start + EVICTION_COUNT_EVERY, false));
    }

    #[test]
    fn reads_the_miss_count_of_a_program_fdinfo() {
        // As Linux 6.1 writes it for a tracepoint program.
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t5\nprog_jited:\t1\n\
                    prog_tag:\t5b2a3b1e5e1e8f2a\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t0\nrun_cnt:\t0\n\
                    recursion_misses:\t7\nverified_insns:\t311\n";
        assert_eq!(recursion_misses(info), Some(7));
    }

    #[test]
    fn skipped_runs_name_the_programs_whose_count_grew() {
        let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|&(name, count)| (name.to_owned(), count)).collect()
        };
        let before = counts(&[("kfree_skb", 2), ("sys_exit_connect", 1)]);
        let now = counts(&[("kfree_skb", 3), ("sys_exit_connect", 1), ("inet_sock_set_state", 4)]);
        assert_eq!(skipped_since(&before, &now), "inet_sock_set_state=4, kfree_skb=1");
        assert_eq!(skipped_since(&now, &now), "", "nothing grew");
    }

    #[test]
    fn skipped_runs_of_guarded_programs_count_from_linux_6_7() {
        for (release, counted) in [
            ("6.1.0-57-amd64", Some(false)),
            ("6.6.63", Some(false)),
            ("5.15.0-1", Some(false)),
            ("6.7.0", Some(true)),
            ("6.12.117+deb12-amd64", Some(true)),
            ("6.18.44-fc-v782", Some(true)),
            ("7.0.1", Some(true)),
            ("unknown", None),
            ("6", None),
        ] {
            assert_eq!(counts_guarded_skips(release), counted, "{release}");
        }
        assert_eq!(uncounted_skips("6.12.117", Some(true), 27), None);
        let line = uncounted_skips("6.1.0-57-amd64", Some(false), 27).expect("a gap before 6.7");
        assert!(
            line.contains("kernel 6.1.0-57-amd64") && line.contains("27 classic tracepoint and kprobe"),
            "{line}"
        );
        assert!(uncounted_skips("?", None, 27).expect("said when unknown").contains("perhaps"));
    }

    #[test]
    fn a_kernel_without_the_line_gives_none_not_zero() {
        assert_eq!(recursion_misses("prog_type:\t5\nrun_cnt:\t3\n"), None);
        assert_eq!(recursion_misses("recursion_misses:\tmany\n"), None);
    }

    #[test]
    fn this_process_reads_a_real_fdinfo_line_format() {
        // Any fd's fdinfo has `pos:` and `flags:`; the parser must find nothing in it
        // rather than a number from another line.
        let own = fs::read_to_string("/proc/self/fdinfo/0").unwrap_or_default();
        assert_eq!(recursion_misses(&own), None, "{own}");
    }
}
