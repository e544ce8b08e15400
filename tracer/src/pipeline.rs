//! From decoded kernel events to finished records: socket table, attribution,
//! lookup of what the kernel does not say, classification.
//!
//! The system is reached only through [`SystemView`], so the whole chain runs in unit
//! tests on synthetic events with a fake system.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    classify::{self, Lookup},
    clock::Clock,
    correlate::{self, Attribution, Context},
    enrich::{Findings, Query},
    event::KernelEvent,
    record::{Backend, PodIdentity, Record},
    table::SocketTable,
    ttl_cache::TtlCache,
};

/// What the processor needs to know about the running system.
pub trait SystemView: Send + Sync + 'static {
    /// Process name (the leader's comm) and network namespace inode, when it lives.
    fn process(&self, pid: u32) -> ProcessInfo;
    /// Blocking lookup inside the network namespace of `pid`.
    fn lookup(&self, pid: u32, query: &Query) -> Result<Findings, String>;
    fn is_alive(&self, pid: u32) -> bool;
    /// Pod and container of `pid`, from caches only (never waits on the API server).
    fn pod(&self, _pid: u32) -> Option<PodIdentity> {
        None
    }
    /// Drops what the system keeps for lookups past its time; called every few seconds.
    fn forget_stale(&self) {}
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub name: Option<String>,
    pub netns: Option<u64>,
}

/// How long a looked-up process name and netns are trusted: an exec renames a process.
const PROCESS_TTL: Duration = Duration::from_secs(2);
/// Retries of one failure (Envoy retries within milliseconds) share one lookup.
const LOOKUP_TTL: Duration = Duration::from_millis(500);
/// A lookup slower than this holds up the records behind it long enough to say so.
const SLOW_LOOKUP: Duration = Duration::from_secs(1);
const MAX_CACHED: usize = 4096;
const TABLE_CAPACITY: usize = 65536;

pub struct Processor<S: SystemView> {
    system: Arc<S>,
    clock: Clock,
    table: SocketTable,
    processes: TtlCache<u32, ProcessInfo>,
    /// Keyed by network namespace and query: a lookup's answer or why it failed.
    lookups: TtlCache<(Option<u64>, Query), Result<Findings, String>>,
    last_prune: Instant,
    /// `enum sk_rst_reason` names of the running kernel.
    reset_reasons: BTreeMap<u32, String>,
    backend: Backend,
}

impl<S: SystemView> Processor<S> {
    pub fn new(system: Arc<S>, clock: Clock) -> Self {
        Self {
            system,
            clock,
            table: SocketTable::new(TABLE_CAPACITY),
            processes: TtlCache::new(PROCESS_TTL, MAX_CACHED),
            lookups: TtlCache::new(LOOKUP_TTL, MAX_CACHED),
            last_prune: Instant::now(),
            reset_reasons: BTreeMap::new(),
            backend: Backend::default(),
        }
    }

    /// Names for the kernel's reset reasons (from tracefs); numbers stay numbers without.
    pub fn set_reset_reasons(&mut self, reasons: BTreeMap<u32, String>) {
        self.reset_reasons = reasons;
    }

    /// The backend the records are stamped with (`backend` in JSON).
    pub fn set_backend(&mut self, backend: Backend) {
        self.backend = backend;
    }

    /// The finished record for `event`, if it makes one.
    pub async fn process(&mut self, event: &KernelEvent) -> Option<Record> {
        let socket = self.table.apply(event).cloned();
        // pid 0: a reset no traced process owns.
        let info =
            if event.header.pid == 0 { ProcessInfo::default() } else { self.process_info(event.header.pid) };
        let context = Context {
            who: Attribution {
                time: self.clock.wall_time(event.header.ts_ns),
                comm: info.name.unwrap_or_else(|| event.header.thread.clone()),
                netns: info.netns,
            },
            pod: self.system.pod(event.header.pid),
            backend: self.backend,
            reset_reasons: &self.reset_reasons,
        };
        let mut record = correlate::record(event, socket.as_ref(), context)?;
        let lookup = match classify::query_for(&record) {
            Some(query) => Some(self.lookup(record.pid, record.netns, &query).await),
            None => None,
        };
        classify::classify(&record, Lookup::from(lookup)).apply(&mut record);
        Some(record)
    }

    /// Drops what the table knows about processes that exited; cheap enough to call often.
    pub fn prune(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_prune) < Duration::from_secs(5) {
            return;
        }
        self.last_prune = now;
        self.forget_exited();
        self.system.forget_stale();
    }

    /// What [`Processor::prune`] does, without its rate limit.
    pub fn forget_exited(&mut self) {
        let exited: std::collections::HashSet<u32> =
            self.table.remembered_pids().into_iter().filter(|&pid| !self.system.is_alive(pid)).collect();
        self.table.forget_pids(&exited);
        self.table.compact();
    }

    fn process_info(&mut self, pid: u32) -> ProcessInfo {
        let now = Instant::now();
        if let Some(info) = self.processes.get(&pid, now) {
            return info;
        }
        let info = self.system.process(pid);
        self.processes.insert(pid, info.clone(), now);
        info
    }

    async fn lookup(&mut self, pid: u32, netns: Option<u64>, query: &Query) -> Result<Findings, String> {
        let key = (netns, query.clone());
        let now = Instant::now();
        if let Some(cached) = self.lookups.get(&key, now) {
            return cached;
        }
        let system = Arc::clone(&self.system);
        let owned = query.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || system.lookup(pid, &owned))
            .await
            .unwrap_or_else(|join| Err(format!("lookup task failed: {join}")));
        let took = started.elapsed();
        if took > SLOW_LOOKUP {
            // Records are written in order: every record behind this one waited as long.
            tracing::warn!(
                pid,
                ?query,
                "a socket lookup took {} ms: the records after it waited",
                took.as_millis()
            );
        }
        // From when the answer is known: a lookup slower than the TTL would otherwise be
        // stale on arrival, and every retry behind it would pay for its own.
        self.lookups.insert(key, result.clone(), Instant::now());
        result
    }
}

/// The processor's state as seen from outside the run loop (the daemon's /v1/sockets):
/// a trait, so that the run loop's inspections do not depend on the system it reads.
pub trait Inspect {
    fn table(&self) -> &SocketTable;
    /// Turns the table's kernel timestamps into wall-clock time.
    fn clock(&self) -> Clock;
    /// The process's name as records give it (cached like theirs).
    fn process_name(&mut self, pid: u32) -> Option<String>;
}

impl<S: SystemView> Inspect for Processor<S> {
    fn table(&self) -> &SocketTable {
        &self.table
    }

    fn clock(&self) -> Clock {
        self.clock
    }

    fn process_name(&mut self, pid: u32) -> Option<String> {
        self.process_info(pid).name
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Mutex};

    use tracer_common::{
        SockOpts,
        options::{FLAG_IP_TRANSPARENT, FLAG_SO_MARK, FLAG_SO_REUSEADDR},
    };

    use super::*;
    use crate::{
        event::{Header, Payload},
        record::{Cause, EventName, Holder, HolderOwner, TcpState},
    };

    /// A system where pid 401 is "envoy" and 77 holds 10.0.1.7:40312 -> 52.216.8.19:443.
    #[derive(Default)]
    struct FakeSystem {
        lookups: Mutex<Vec<Query>>,
        /// How long each lookup takes.
        lookup_time: Duration,
    }

    impl SystemView for FakeSystem {
        fn process(&self, pid: u32) -> ProcessInfo {
            match pid {
                401 => ProcessInfo { name: Some("envoy".into()), netns: Some(4026531993) },
                _ => ProcessInfo::default(),
            }
        }

        fn lookup(&self, _pid: u32, query: &Query) -> Result<Findings, String> {
            self.lookups.lock().unwrap().push(query.clone());
            std::thread::sleep(self.lookup_time);
            match query {
                Query::TupleHolders { src, dst } => Ok(Findings {
                    holders: vec![Holder {
                        state: TcpState::Established,
                        src: *src,
                        dst: Some(*dst),
                        inode: 4242,
                        owner: Some(HolderOwner { pid: 401, comm: "envoy".into(), fd: 77 }),
                        timer_ms: None,
                    }],
                    ..Default::default()
                }),
                _ => Err("not in this fake".into()),
            }
        }

        fn is_alive(&self, pid: u32) -> bool {
            pid == 401
        }

        fn pod(&self, pid: u32) -> Option<PodIdentity> {
            (pid == 401).then(|| PodIdentity {
                pod_uid: Some("8b9f4a3e-2c1d-4e5f-9a7b-6c5d4e3f2a1b".into()),
                pod: Some("web-0".into()),
                ..Default::default()
            })
        }
    }

    fn event(ts: u64, errno: i32, payload: Payload) -> KernelEvent {
        KernelEvent {
            header: Header {
                ts_ns: ts,
                pid: 401,
                tid: 405,
                cgroup_id: 1,
                thread: "wrk:worker_1".into(),
                errno,
            },
            payload,
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// The socket calls of one Envoy attempt in the Cilium incident, on `fd`.
    fn cilium_attempt(fd: i32, ts: u64) -> Vec<KernelEvent> {
        let mark = 0x3203_0b00;
        let mut opts = SockOpts::default();
        let mut calls = Vec::new();
        for (flag, optname, value) in
            [(FLAG_SO_MARK, 36, mark), (FLAG_SO_REUSEADDR, 2, 1), (FLAG_IP_TRANSPARENT, 19, 1)]
        {
            opts.apply(flag, Some(value));
            let level = if flag == FLAG_IP_TRANSPARENT { 0 } else { 1 };
            let value = Some(value);
            calls.push(event(ts, 0, Payload::Sockopt { fd, level, optname, optlen: 4, value, ret: 0, opts }));
        }
        calls.push(event(ts + 1, 0, Payload::Bind { fd, addr: addr("10.0.1.7:40312"), opts, origin: None }));
        calls.push(event(
            ts + 2,
            99,
            Payload::Connect {
                fd,
                dst: addr("52.216.8.19:443"),
                src: addr("10.0.1.7:40312"),
                opts,
                sk: 1,
                origin: None,
            },
        ));
        calls.push(event(ts + 3, 0, Payload::Close { fd, reused: false }));
        calls
    }

    #[tokio::test]
    async fn cilium_retries_become_four_tuple_in_use_records_with_one_lookup() {
        let system = Arc::new(FakeSystem::default());
        let mut processor = Processor::new(Arc::clone(&system), Clock::from_offset_ns(0));
        let mut failures = Vec::new();
        let mut sockopts = 0;
        for (attempt, fd) in [131, 132, 131, 133].into_iter().enumerate() {
            for e in cilium_attempt(fd, attempt as u64 * 10) {
                if let Some(record) = processor.process(&e).await {
                    match record.event {
                        EventName::ConnectError => failures.push(record),
                        EventName::Sockopt => sockopts += 1,
                        EventName::Bind => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }
        assert_eq!(sockopts, 12);
        assert_eq!(failures.len(), 4);
        for (r, fd) in failures.iter().zip([131, 132, 131, 133]) {
            assert_eq!((r.pid, r.tid, r.fd, r.errno), (401, 405, fd, Some(99)));
            assert_eq!(r.comm, "envoy");
            assert_eq!(r.thread, "wrk:worker_1");
            assert_eq!(r.cause, Some(Cause::TupleInUse));
            assert_eq!(r.sockopts.flags, FLAG_SO_MARK | FLAG_SO_REUSEADDR | FLAG_IP_TRANSPARENT);
            assert_eq!(r.sockopts.mark, 0x3203_0b00);
            assert_eq!(r.holders[0].owner, Some(HolderOwner { pid: 401, comm: "envoy".into(), fd: 77 }));
            assert_eq!(r.netns, Some(4026531993));
        }
        assert_eq!(system.lookups.lock().unwrap().len(), 1, "retries share the lookup");
        assert!(failures.iter().all(|r| r.pod.as_ref().and_then(|p| p.pod.as_deref()) == Some("web-0")));
        // The fd was closed after every attempt: the table forgot each socket.
        assert!(processor.table().get(401, 131).is_none());
    }

    /// A search of /proc on a node with 400,000 sockets can outlast the TTL; the retries
    /// behind it must still share its answer.
    #[tokio::test]
    async fn a_lookup_slower_than_its_ttl_still_serves_the_retries_behind_it() {
        let lookup_time = LOOKUP_TTL + Duration::from_millis(100);
        let system = Arc::new(FakeSystem { lookup_time, ..FakeSystem::default() });
        let mut processor = Processor::new(Arc::clone(&system), Clock::from_offset_ns(0));
        let mut failures = 0;
        for (attempt, fd) in [131, 132].into_iter().enumerate() {
            for e in cilium_attempt(fd, attempt as u64 * 10) {
                if let Some(record) = processor.process(&e).await {
                    failures += usize::from(record.event == EventName::ConnectError);
                }
            }
        }
        assert_eq!(failures, 2);
        assert_eq!(system.lookups.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn failed_lookup_gives_unknown_with_note() {
        let system = Arc::new(FakeSystem::default());
        let mut processor = Processor::new(system, Clock::from_offset_ns(0));
        let bind = event(
            1,
            98,
            Payload::Bind { fd: 3, addr: addr("127.0.0.1:80"), opts: SockOpts::default(), origin: None },
        );
        let r = processor.process(&bind).await.unwrap();
        assert_eq!(r.event, EventName::BindError);
        assert_eq!(r.cause, Some(Cause::Unknown));
        assert_eq!(r.note.as_deref(), Some("lookup failed: not in this fake"));
    }

    #[tokio::test]
    async fn resets_get_kernel_reason_names_and_the_sockets_last_error() {
        use crate::reset::{ResetDirection, ResetOwner, ResetSeen};
        let system = Arc::new(FakeSystem::default());
        let mut processor = Processor::new(Arc::clone(&system), Clock::from_offset_ns(0));
        processor.set_reset_reasons(BTreeMap::from([(14, "TCP_STATE".to_string())]));
        let refused = event(
            1,
            111,
            Payload::ConnectAsyncError {
                fd: 7,
                src: addr("127.0.0.1:4000"),
                dst: addr("127.0.0.1:444"),
                opts: SockOpts::default(),
                sk: 0,
            },
        );
        processor.process(&refused).await.unwrap();
        let seen = ResetSeen {
            direction: ResetDirection::Sent,
            owner: ResetOwner::Close,
            fd: 7,
            has_socket: true,
            sk: 0,
            state: Some(TcpState::Close),
            reason: Some(14),
            active: true,
            cookie: None,
            local: addr("127.0.0.1:4000"),
            peer: addr("127.0.0.1:444"),
            opts: SockOpts::default(),
            exchanges: Vec::new(),
        };
        let r = processor.process(&event(2, 0, Payload::Reset(Box::new(seen.clone())))).await.unwrap();
        assert_eq!(r.event, EventName::RstSent);
        assert_eq!((r.pid, r.fd, r.errno, r.comm.as_str()), (401, 7, None, "envoy"));
        let reset = r.reset.as_deref().unwrap();
        assert_eq!(reset.reason_name.as_deref(), Some("TCP_STATE"));
        assert_eq!(reset.last_error.map(|e| e.errno), Some(111));
        assert!(system.lookups.lock().unwrap().is_empty(), "resets need no lookup");

        // No traced owner: pid 0, whose process is never looked up.
        let mut orphan =
            event(3, 0, Payload::Reset(Box::new(ResetSeen { owner: ResetOwner::Kernel, fd: -1, ..seen })));
        orphan.header.pid = 0;
        let r = processor.process(&orphan).await.unwrap();
        assert_eq!((r.pid, r.netns), (0, None));
        assert!(processor.table().get(0, -1).is_none(), "a reset creates no table entry");
    }

    /// Issue 12, "unbounded growth": processes that closed their tracked sockets and
    /// exited leave nothing in the table once it is pruned.
    #[tokio::test]
    async fn unbounded_growth_of_next_generation_exited_processes_are_forgotten() {
        let system = Arc::new(FakeSystem::default());
        let mut processor = Processor::new(system, Clock::from_offset_ns(0));
        for pid in 10_000..12_000u32 {
            for payload in [
                Payload::Sockopt {
                    fd: 3,
                    level: 1,
                    optname: 36,
                    optlen: 4,
                    value: Some(1),
                    ret: 0,
                    opts: SockOpts::default(),
                },
                Payload::Close { fd: 3, reused: false },
            ] {
                let mut e = event(u64::from(pid), 0, payload);
                e.header.pid = pid;
                processor.process(&e).await;
            }
        }
        processor.forget_exited();
        assert_eq!(processor.table().remembered(), 0, "every process exited");
    }

    /// Issue 12, "wrong attribution across fd reuse", through the whole processor: the
    /// reset's record carries no error of the socket fd 7 named before.
    #[tokio::test]
    async fn wrong_attribution_across_fd_reuse_reset_record_has_no_earlier_error() {
        use crate::reset::{ResetDirection, ResetOwner, ResetSeen};
        let system = Arc::new(FakeSystem::default());
        let mut processor = Processor::new(Arc::clone(&system), Clock::from_offset_ns(0));
        let upstream = Payload::Connect {
            fd: 7,
            dst: addr("127.0.0.19:443"),
            src: None,
            opts: SockOpts::default(),
            sk: 0xa000,
            origin: None,
        };
        processor.process(&event(1, 99, upstream)).await.unwrap();
        let seen = ResetSeen {
            direction: ResetDirection::Received,
            owner: ResetOwner::Socket,
            fd: 7,
            has_socket: true,
            sk: 0xb000,
            state: Some(TcpState::Established),
            reason: None,
            active: false,
            cookie: None,
            local: addr("127.0.0.1:8080"),
            peer: addr("127.0.0.1:50000"),
            opts: SockOpts::default(),
            exchanges: Vec::new(),
        };
        let r = processor.process(&event(2, 0, Payload::Reset(Box::new(seen)))).await.unwrap();
        assert_eq!(r.event, EventName::RstReceived);
        assert_eq!(r.reset.as_deref().unwrap().last_error, None, "{r:?}");
    }

    #[tokio::test]
    async fn unknown_process_falls_back_to_thread_name() {
        let system = Arc::new(FakeSystem::default());
        let mut processor = Processor::new(system, Clock::from_offset_ns(0));
        let mut e = event(
            1,
            111,
            Payload::ConnectAsyncError {
                fd: 3,
                src: addr("127.0.0.1:4000"),
                dst: addr("127.0.0.1:444"),
                opts: SockOpts::default(),
                sk: 0,
            },
        );
        e.header.pid = 999;
        let r = processor.process(&e).await.unwrap();
        assert_eq!(r.comm, "wrk:worker_1");
        assert_eq!(r.cause, Some(Cause::ConnectionRefused));
        assert_eq!(r.netns, None);
        assert_eq!(r.pod, None, "a process outside pods has no attribution");
    }
}
