//! Folding of repeated records for text output.
//!
//! A proxy in a retry loop fails the same way hundreds of times a second; one line
//! with a count says as much and keeps the terminal readable. A group opens with the
//! first record of its key and closes `window` later; at close the first record is
//! emitted once, with the group's count. Time is passed in, so this is deterministic.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::record::{Cause, EventName, Record};

/// Open groups beyond this many flush the oldest early, so a storm of distinct
/// failures cannot grow memory without bound.
pub const DEFAULT_MAX_OPEN_GROUPS: usize = 4096;

/// What makes two records "the same" for a reader.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FoldKey {
    /// Same failure of the same call: the source port matters (it is what is in use).
    /// A synchronous and an asynchronous error are told apart since the line shows it.
    Failure {
        pid: u32,
        event: EventName,
        errno: Option<i32>,
        asynchronous: bool,
        src: Option<SocketAddr>,
        dst: Option<SocketAddr>,
        cause: Option<Cause>,
    },
    Sockopt {
        pid: u32,
        option: Option<(u32, Option<u32>)>,
        errno: Option<i32>,
    },
    /// Successful connects differ in their ephemeral source port; the address asked
    /// for (a connect's destination, a bind's local address) and the options say which
    /// pattern repeats.
    Success {
        pid: u32,
        event: EventName,
        target: Option<SocketAddr>,
        sockopts: (u32, u32),
    },
}

impl FoldKey {
    fn of(record: &Record) -> Self {
        let pid = record.pid;
        match record.event {
            event if event.is_failure() => Self::Failure {
                pid,
                event,
                errno: record.errno,
                asynchronous: record.asynchronous,
                src: record.src,
                dst: record.dst,
                cause: record.cause,
            },
            EventName::Sockopt => Self::Sockopt {
                pid,
                option: record.sockopt.map(|call| (call.flag, call.value)),
                errno: record.errno,
            },
            event => Self::Success {
                pid,
                event,
                target: if event == EventName::Bind { record.src } else { record.dst },
                sockopts: (record.sockopts.flags, record.sockopts.mark),
            },
        }
    }
}

struct Group {
    /// Position in open order; groups leave only from the front, so a group's index
    /// is its sequence number minus the front's.
    sequence: u64,
    key: FoldKey,
    first: Record,
    count: u32,
    closes_at: Instant,
}

impl Group {
    fn into_record(self) -> Record {
        Record { count: self.count, ..self.first }
    }
}

/// Folds repeats within a window. `now` must not go backwards between calls
/// (an `Instant` from the caller's clock).
pub struct Folder {
    window: Duration,
    max_open_groups: usize,
    /// Open groups, oldest first; since all share one window, also by closing time.
    groups: VecDeque<Group>,
    open: HashMap<FoldKey, u64>,
    next_sequence: u64,
}

impl Folder {
    /// A zero `window` folds nothing: every record passes through at once.
    pub fn new(window: Duration) -> Self {
        Self::with_max_open_groups(window, DEFAULT_MAX_OPEN_GROUPS)
    }

    pub fn with_max_open_groups(window: Duration, max_open_groups: usize) -> Self {
        Self {
            window,
            max_open_groups: max_open_groups.max(1),
            groups: VecDeque::new(),
            open: HashMap::new(),
            next_sequence: 0,
        }
    }

    /// Takes a record seen at `now`; returns the records to print now, in order.
    pub fn push(&mut self, record: Record, now: Instant) -> Vec<Record> {
        if self.window.is_zero() {
            return vec![record];
        }
        let mut ready = self.flush_due(now);
        let key = FoldKey::of(&record);
        if let Some(&sequence) = self.open.get(&key) {
            let front = self.groups.front().map_or(sequence, |group| group.sequence);
            if let Some(group) = self.groups.get_mut((sequence - front) as usize) {
                group.count = group.count.saturating_add(record.count.max(1));
                return ready;
            }
        }
        if self.groups.len() >= self.max_open_groups {
            ready.extend(self.pop_oldest());
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.open.insert(key.clone(), sequence);
        let count = record.count.max(1);
        self.groups.push_back(Group { sequence, key, first: record, count, closes_at: now + self.window });
        ready
    }

    /// When the oldest open group closes, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.groups.front().map(|group| group.closes_at)
    }

    /// The groups closed by `now`, oldest first.
    pub fn flush_due(&mut self, now: Instant) -> Vec<Record> {
        let mut due = Vec::new();
        while self.groups.front().is_some_and(|group| group.closes_at <= now) {
            due.extend(self.pop_oldest());
        }
        due
    }

    /// Every open group, oldest first (at exit).
    pub fn flush_all(&mut self) -> Vec<Record> {
        self.open.clear();
        self.groups.drain(..).map(Group::into_record).collect()
    }

    fn pop_oldest(&mut self) -> Option<Record> {
        let group = self.groups.pop_front()?;
        self.open.remove(&group.key);
        Some(group.into_record())
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::SockOpts;
    use tracer_common::options::{FLAG_SO_MARK, FLAG_SO_REUSEADDR};

    use super::*;
    use crate::record::SockoptCall;
    use crate::testing::{addr, cilium_incident, record};

    const WINDOW: Duration = Duration::from_millis(500);

    fn ms(start: Instant, offset: u64) -> Instant {
        start + Duration::from_millis(offset)
    }

    fn counts(records: &[Record]) -> Vec<(u32, u32)> {
        records.iter().map(|record| (record.pid, record.count)).collect()
    }

    fn failure_of(pid: u32) -> Record {
        Record { pid, ..cilium_incident() }
    }

    #[test]
    fn zero_window_passes_everything_through() {
        let mut folder = Folder::new(Duration::ZERO);
        let start = Instant::now();
        assert_eq!(counts(&folder.push(cilium_incident(), start)), [(401, 1)]);
        assert_eq!(counts(&folder.push(cilium_incident(), start)), [(401, 1)]);
        assert_eq!(folder.next_deadline(), None);
        assert!(folder.flush_all().is_empty());
    }

    #[test]
    fn repeats_within_the_window_become_one_record_with_a_count() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        for offset in [0, 100, 200, 499] {
            assert!(folder.push(cilium_incident(), ms(start, offset)).is_empty());
        }
        assert_eq!(folder.next_deadline(), Some(ms(start, 500)));
        assert!(folder.flush_due(ms(start, 499)).is_empty());
        let folded = folder.flush_due(ms(start, 500));
        assert_eq!(folded, [Record { count: 4, ..cilium_incident() }]);
        assert_eq!(folder.next_deadline(), None);
    }

    #[test]
    fn the_window_counts_from_the_first_record() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        folder.push(cilium_incident(), start);
        folder.push(cilium_incident(), ms(start, 400));
        // Arrives after the first group closed: that group is printed, a new one opens.
        let printed = folder.push(cilium_incident(), ms(start, 600));
        assert_eq!(counts(&printed), [(401, 2)]);
        assert_eq!(folder.next_deadline(), Some(ms(start, 1100)));
        assert_eq!(counts(&folder.flush_all()), [(401, 1)]);
    }

    #[test]
    fn groups_come_out_in_opening_order() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        folder.push(failure_of(3), start);
        folder.push(failure_of(1), ms(start, 10));
        folder.push(failure_of(2), ms(start, 20));
        folder.push(failure_of(1), ms(start, 30));
        folder.push(failure_of(3), ms(start, 40));
        assert_eq!(counts(&folder.flush_due(ms(start, 515))), [(3, 2), (1, 2)]);
        assert_eq!(counts(&folder.flush_all()), [(2, 1)]);
    }

    #[test]
    fn the_first_records_content_is_kept() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        folder.push(cilium_incident(), start);
        // Same key, other details (another fd, later time).
        folder.push(
            Record { fd: 200, time: "2026-11-23T12:53:26Z".parse().unwrap(), ..cilium_incident() },
            start,
        );
        let folded = folder.flush_all();
        assert_eq!(folded, [Record { count: 2, ..cilium_incident() }]);
    }

    #[test]
    fn failures_differ_by_source_errno_cause_and_asynchrony() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        let base = cilium_incident();
        let variants = [
            base.clone(),
            Record { src: Some(addr("10.0.1.7:40313")), ..base.clone() },
            Record { dst: Some(addr("52.216.8.20:443")), ..base.clone() },
            Record { errno: Some(98), ..base.clone() },
            Record { cause: None, ..base.clone() },
            Record { asynchronous: true, ..base.clone() },
            Record { event: EventName::BindError, ..base.clone() },
            Record { pid: 402, ..base.clone() },
        ];
        for variant in &variants {
            folder.push(variant.clone(), start);
        }
        // Same key despite other options and holders.
        folder.push(Record { sockopts: SockOpts::default(), holders: Vec::new(), ..base }, start);
        let folded = folder.flush_all();
        assert_eq!(folded.len(), variants.len());
        assert_eq!(folded[0].count, 2);
        assert!(folded[1..].iter().all(|record| record.count == 1));
    }

    #[test]
    fn successes_fold_across_source_ports_but_not_options() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        let connected = Record {
            src: Some(addr("10.0.1.7:40001")),
            dst: Some(addr("10.0.2.9:8080")),
            sockopts: SockOpts { flags: FLAG_SO_MARK, mark: 0x0b00 },
            ..record(EventName::Connect)
        };
        folder.push(connected.clone(), start);
        folder.push(Record { src: Some(addr("10.0.1.7:40002")), ..connected.clone() }, start);
        folder.push(
            Record { sockopts: SockOpts { flags: FLAG_SO_REUSEADDR, mark: 0 }, ..connected.clone() },
            start,
        );
        folder.push(Record { dst: Some(addr("10.0.2.9:8081")), ..connected.clone() }, start);
        folder.push(Record { event: EventName::Bind, ..connected }, start);
        let folded: Vec<_> = folder.flush_all().iter().map(|record| record.count).collect();
        assert_eq!(folded, [2, 1, 1, 1]);
    }

    #[test]
    fn binds_fold_by_local_address() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        let bound = Record { src: Some(addr("127.0.0.19:443")), ..record(EventName::Bind) };
        folder.push(bound.clone(), start);
        folder.push(bound.clone(), start);
        folder.push(Record { src: Some(addr("127.0.0.20:443")), ..bound }, start);
        let folded: Vec<_> = folder.flush_all().iter().map(|record| record.count).collect();
        assert_eq!(folded, [2, 1]);
    }

    #[test]
    fn sockopts_fold_by_option_value_and_errno() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        let set = Record {
            sockopt: Some(SockoptCall { flag: FLAG_SO_MARK, value: Some(0x3203_0b00) }),
            ..record(EventName::Sockopt)
        };
        folder.push(set.clone(), start);
        folder.push(Record { fd: 132, ..set.clone() }, start);
        folder.push(
            Record { sockopt: Some(SockoptCall { flag: FLAG_SO_MARK, value: Some(0x0b00) }), ..set.clone() },
            start,
        );
        folder.push(Record { errno: Some(1), ..set }, start);
        let folded: Vec<_> = folder.flush_all().iter().map(|record| record.count).collect();
        assert_eq!(folded, [2, 1, 1]);
    }

    #[test]
    fn a_full_folder_flushes_its_oldest_group() {
        let mut folder = Folder::with_max_open_groups(WINDOW, 2);
        let start = Instant::now();
        assert!(folder.push(failure_of(1), start).is_empty());
        assert!(folder.push(failure_of(1), start).is_empty());
        assert!(folder.push(failure_of(2), ms(start, 1)).is_empty());
        assert_eq!(counts(&folder.push(failure_of(3), ms(start, 2))), [(1, 2)]);
        // pid 1 is no longer open: it starts a new group, pushing out pid 2.
        assert_eq!(counts(&folder.push(failure_of(1), ms(start, 3))), [(2, 1)]);
        assert_eq!(folder.next_deadline(), Some(ms(start, 502)));
        assert_eq!(counts(&folder.flush_all()), [(3, 1), (1, 1)]);
    }

    #[test]
    fn counts_of_prefolded_records_add_up() {
        let mut folder = Folder::new(WINDOW);
        let start = Instant::now();
        folder.push(Record { count: 3, ..cilium_incident() }, start);
        folder.push(cilium_incident(), start);
        assert_eq!(counts(&folder.flush_all()), [(401, 4)]);
    }
}
