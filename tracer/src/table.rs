//! The socket table: what sockerr knows about each socket of the traced processes,
//! keyed by (pid, fd) with a generation that changes whenever the fd stops naming the
//! socket it named (close, or an fd number handed out again).
//!
//! The kernel reports the close of tracked fds only (options set; without `--all` only
//! those a failure record named, the ones with an entry here): a failed connect on an
//! untracked fd leaves its entry behind when the fd is closed and handed out again. So an
//! entry is also retired when an event shows that the fd names another socket (another
//! `struct sock`, another peer, a second bind), and a reset takes the table's facts only
//! for the very socket they were learnt on: a record never carries facts of another
//! socket.
//!
//! Pure: fed with decoded events, no system access. Bounded: when full, the sockets
//! seen least recently are forgotten, and so are the generations of closed sockets
//! beyond the same capacity; both are counted ([`Forgotten`]).

use std::{collections::HashMap, net::SocketAddr};

use tracer_common::SockOpts;

pub use crate::last_error::{LastError, Operation};
use crate::{
    event::{KernelEvent, Payload},
    reset::ResetSeen,
};

/// Where a socket's connection stands, as far as traced events tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Options set or bound, no connect seen.
    Open,
    /// connect() returned EINPROGRESS or is under way.
    Connecting,
    Established,
    /// The last connect or bind failed.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub pid: u32,
    pub fd: i32,
    /// Counts the sockets this (pid, fd) has named since sockerr started.
    pub generation: u32,
    pub opts: SockOpts,
    /// Address passed to a successful bind().
    pub bound: Option<SocketAddr>,
    /// Local address of the last connect (the tuple the kernel tried).
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub phase: Phase,
    pub last_error: Option<LastError>,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// The kernel's `struct sock` address, once an event named it (0: not yet).
    pub sk: u64,
}

/// What the table dropped to stay within its capacity, as running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Live sockets forgotten because the table was full (the least recently seen):
    /// their later records lack the options, bound address and last error they had.
    pub sockets: u64,
    /// Generation counts of closed sockets forgotten while their process may live:
    /// the next socket on that (pid, fd) restarts at generation 0.
    pub generations: u64,
}

/// The generation the next socket on a (pid, fd) gets, and when the last one closed.
#[derive(Clone, Copy, Debug)]
struct Closed {
    next: u32,
    ts_ns: u64,
}

pub struct SocketTable {
    sockets: HashMap<(u32, i32), Socket>,
    /// Kept after the socket is gone, until its process exits or the map is full.
    next_generation: HashMap<(u32, i32), Closed>,
    capacity: usize,
    forgotten: Forgotten,
}

impl SocketTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            sockets: HashMap::new(),
            next_generation: HashMap::new(),
            capacity: capacity.max(1),
            forgotten: Forgotten::default(),
        }
    }

    /// What the table dropped so far to stay bounded.
    pub fn forgotten(&self) -> Forgotten {
        self.forgotten
    }

    /// Folds `event` into the table and returns the socket as it stands after it
    /// (`None` for a close, whose socket is gone).
    pub fn apply(&mut self, event: &KernelEvent) -> Option<&Socket> {
        let key = (event.header.pid, event.fd());
        let ts = event.header.ts_ns;
        // A reset is reported with what the table knows of its own socket; it does not
        // create an entry.
        if let Payload::Listening(_) = event.payload {
            return self.sockets.get(&key);
        }
        if let Payload::Reset(seen) = &event.payload {
            return match self.sockets.get(&key).map(|socket| identity(socket, seen)) {
                Some(Identity::Same) => self.sockets.get(&key),
                Some(Identity::Other) => {
                    // The fd names the reset's socket now: the entry is of an earlier one.
                    self.retire(key, ts);
                    None
                }
                Some(Identity::Unknown) | None => None,
            };
        }
        if let Payload::Close { .. } = event.payload {
            self.retire(key, ts);
            return None;
        }
        if self.sockets.get(&key).is_some_and(|known| names_another_socket(known, event)) {
            self.retire(key, ts);
        }
        if !self.sockets.contains_key(&key) && self.sockets.len() >= self.capacity {
            self.evict();
        }
        let generation = self.next_generation.get(&key).map_or(0, |closed| closed.next);
        let socket = self.sockets.entry(key).or_insert_with(|| Socket {
            pid: key.0,
            fd: key.1,
            generation,
            opts: SockOpts::default(),
            bound: None,
            local: None,
            peer: None,
            phase: Phase::Open,
            last_error: None,
            first_seen_ns: ts,
            last_seen_ns: ts,
            sk: 0,
        });
        socket.last_seen_ns = socket.last_seen_ns.max(ts);
        if let Some(sk) = event_sk(event).filter(|&sk| sk != 0) {
            socket.sk = sk;
        }
        let errno = event.header.errno;
        let failed = |operation| Some(LastError { operation, errno, ts_ns: ts });
        match &event.payload {
            Payload::Sockopt { opts, .. } => {
                socket.opts = *opts;
                if errno != 0 {
                    socket.last_error = failed(Operation::Setsockopt);
                }
            }
            Payload::Bind { addr, opts, .. } => {
                merge_opts(&mut socket.opts, opts);
                if errno == 0 {
                    socket.bound = *addr;
                } else {
                    socket.phase = Phase::Failed;
                    socket.last_error = failed(Operation::Bind);
                }
            }
            Payload::Connect { dst, src, opts, .. } => {
                merge_opts(&mut socket.opts, opts);
                socket.peer = *dst;
                socket.local = src.or(socket.bound);
                if errno == 0 {
                    socket.phase = Phase::Established;
                } else {
                    socket.phase = Phase::Failed;
                    socket.last_error = failed(Operation::Connect);
                }
            }
            Payload::ConnectAsyncError { src, dst, opts, .. } => {
                merge_opts(&mut socket.opts, opts);
                socket.peer = *dst;
                socket.local = *src;
                socket.phase = Phase::Failed;
                socket.last_error = failed(Operation::Connect);
            }
            Payload::Established { src, dst, opts, .. } => {
                merge_opts(&mut socket.opts, opts);
                socket.peer = *dst;
                socket.local = *src;
                socket.phase = Phase::Established;
            }
            Payload::Close { .. } | Payload::Reset(_) | Payload::Listening(_) => {
                unreachable!("handled above")
            }
        }
        Some(socket)
    }

    pub fn get(&self, pid: u32, fd: i32) -> Option<&Socket> {
        self.sockets.get(&(pid, fd))
    }

    /// The sockets of one process, by fd.
    pub fn of_pid(&self, pid: u32) -> Vec<&Socket> {
        let mut sockets: Vec<_> = self.sockets.values().filter(|s| s.pid == pid).collect();
        sockets.sort_by_key(|s| s.fd);
        sockets
    }

    /// The processes with a socket in the table.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<_> = self.sockets.keys().map(|&(pid, _)| pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The processes the table remembers anything of: sockets, or generations of closed
    /// ones. What pruning checks, so that a process that closed every socket and exited
    /// leaves nothing behind.
    pub fn remembered_pids(&self) -> Vec<u32> {
        let mut pids: Vec<_> =
            self.sockets.keys().chain(self.next_generation.keys()).map(|&(pid, _)| pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Drops everything about a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        self.forget_pids(&std::collections::HashSet::from([pid]));
    }

    /// Drops everything about processes that exited, in one pass over the table.
    pub fn forget_pids(&mut self, pids: &std::collections::HashSet<u32>) {
        if pids.is_empty() {
            return;
        }
        self.sockets.retain(|(p, _), _| !pids.contains(p));
        self.next_generation.retain(|(p, _), _| !pids.contains(p));
    }

    /// Gives memory back after a prune emptied much of the table: a burst of
    /// short-lived processes must not leave its peak allocation behind.
    pub fn compact(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > 1024 && map.len() * 4 < map.capacity() {
                map.shrink_to(map.len() * 2);
            }
        }
        shrink(&mut self.sockets);
        shrink(&mut self.next_generation);
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Entries of every kind the table holds (sockets and the generations of closed
    /// ones): what its memory grows with.
    pub fn remembered(&self) -> usize {
        self.sockets.len() + self.next_generation.len()
    }

    /// The socket on `key` is gone: the next one gets the following generation.
    fn retire(&mut self, key: (u32, i32), ts_ns: u64) {
        self.sockets.remove(&key);
        let closed = self.next_generation.entry(key).or_insert(Closed { next: 0, ts_ns });
        closed.next += 1;
        closed.ts_ns = closed.ts_ns.max(ts_ns);
        if self.next_generation.len() > self.capacity {
            self.forget_oldest_generations();
        }
    }

    /// Forgets the least recently seen eighth of the table: one O(n) pass per
    /// capacity/8 insertions instead of LRU bookkeeping on every event.
    fn evict(&mut self) {
        let mut ages: Vec<_> = self.sockets.iter().map(|(k, s)| (s.last_seen_ns, *k)).collect();
        ages.sort_unstable();
        let drop = (self.capacity / 8).max(1);
        for (_, key) in ages.into_iter().take(drop) {
            self.sockets.remove(&key);
            self.forgotten.sockets += 1;
        }
    }

    /// Keeps the generations within the capacity: first those of processes without a
    /// socket in the table (short-lived ones, mostly gone), oldest close first.
    fn forget_oldest_generations(&mut self) {
        let live: std::collections::HashSet<u32> = self.sockets.keys().map(|&(p, _)| p).collect();
        let mut ages: Vec<_> = self
            .next_generation
            .iter()
            .map(|(key, closed)| (live.contains(&key.0), closed.ts_ns, *key))
            .collect();
        ages.sort_unstable();
        let drop = (self.capacity / 8).max(1);
        for (_, _, key) in ages.into_iter().take(drop) {
            self.next_generation.remove(&key);
            self.forgotten.generations += 1;
        }
    }
}

/// Whether a reset's socket is the one the table knows on its fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// The kernel socket or the tuple match, and nothing contradicts.
    Same,
    /// The kernel socket or the tuple differ: the fd was reused.
    Other,
    /// Too little known to tell: the table's facts are not used.
    Unknown,
}

fn identity(socket: &Socket, seen: &ResetSeen) -> Identity {
    let sk_known = socket.sk != 0 && seen.sk != 0;
    let peers_known = socket.peer.is_some() && seen.peer.is_some();
    let local_ports_known =
        socket.local.is_some_and(|a| a.port() != 0) && seen.local.is_some_and(|a| a.port() != 0);
    let differs = (sk_known && socket.sk != seen.sk)
        || (peers_known && socket.peer != seen.peer)
        || (local_ports_known && socket.local != seen.local);
    if differs {
        Identity::Other
    } else if sk_known || peers_known {
        Identity::Same
    } else {
        Identity::Unknown
    }
}

/// An event on a (pid, fd) the table knows that cannot be of the socket it knows there:
/// the fd was closed and handed out again without an event (untracked fds).
fn names_another_socket(known: &Socket, event: &KernelEvent) -> bool {
    match &event.payload {
        // One socket binds at most once, and never once connected.
        Payload::Bind { .. } => {
            event.header.errno == 0 && (known.bound.is_some() || known.phase == Phase::Established)
        }
        _ => event_sk(event).is_some_and(|sk| sk != 0 && known.sk != 0 && sk != known.sk),
    }
}

fn event_sk(event: &KernelEvent) -> Option<u64> {
    match event.payload {
        Payload::Connect { sk, .. }
        | Payload::ConnectAsyncError { sk, .. }
        | Payload::Established { sk, .. } => Some(sk),
        _ => None,
    }
}

/// Options the kernel saw at the call, over what the table knew: the kernel's view
/// wins when it knows of options (set before sockerr started), the table's otherwise.
fn merge_opts(known: &mut SockOpts, at_call: &SockOpts) {
    if at_call.flags != 0 {
        *known = *at_call;
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::options::{FLAG_SO_MARK, FLAG_SO_REUSEADDR};

    use super::*;
    use crate::event::Header;

    fn event(pid: u32, ts: u64, errno: i32, payload: Payload) -> KernelEvent {
        KernelEvent {
            header: Header { ts_ns: ts, pid, tid: pid, cgroup_id: 1, thread: "t".into(), errno },
            payload,
        }
    }

    fn sockopt(fd: i32, flags: u32, mark: u32) -> Payload {
        Payload::Sockopt {
            fd,
            level: 1,
            optname: 36,
            optlen: 4,
            value: Some(mark),
            ret: 0,
            opts: SockOpts { flags, mark },
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// With --all: the successful setsockopt() and bind() calls are records too.
    #[test]
    fn records_options_bind_and_failed_connect() {
        let mut table = SocketTable::new(16);
        table.apply(&event(7, 1, 0, sockopt(5, FLAG_SO_MARK, 0x32030b00)));
        table.apply(&event(7, 2, 0, sockopt(5, FLAG_SO_MARK | FLAG_SO_REUSEADDR, 0x32030b00)));
        table.apply(&event(
            7,
            3,
            0,
            Payload::Bind { fd: 5, addr: addr("10.0.1.7:40312"), opts: SockOpts::default(), origin: None },
        ));
        let connect = Payload::Connect {
            fd: 5,
            dst: addr("52.216.8.19:443"),
            src: None,
            opts: SockOpts::default(),
            sk: 1,
            origin: None,
        };
        let s = table.apply(&event(7, 4, 99, connect)).unwrap();
        assert_eq!(s.opts, SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEADDR, mark: 0x32030b00 });
        assert_eq!(s.bound, addr("10.0.1.7:40312"));
        assert_eq!(s.local, addr("10.0.1.7:40312"), "local falls back to the bound address");
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.last_error, Some(LastError { operation: Operation::Connect, errno: 99, ts_ns: 4 }));
        assert_eq!((s.first_seen_ns, s.last_seen_ns), (1, 4));
    }

    /// Without --all the kernel reports no success: a socket enters the table with its
    /// first failure, which carries its options and the source the kernel tried; the
    /// successful bind() before it is unknown.
    #[test]
    fn without_all_a_socket_enters_with_its_failure() {
        let mut table = SocketTable::new(16);
        let opts = SockOpts { flags: FLAG_SO_MARK | FLAG_SO_REUSEADDR, mark: 0x32030b00 };
        let connect = Payload::Connect {
            fd: 5,
            dst: addr("127.0.0.19:443"),
            src: addr("127.0.0.7:40312"),
            opts,
            sk: 0xa000,
            origin: None,
        };
        let s = table.apply(&event(7, 4, 99, connect)).unwrap();
        assert_eq!((s.opts, s.phase, s.generation), (opts, Phase::Failed, 0));
        assert_eq!((s.bound, s.local), (None, addr("127.0.0.7:40312")));
        assert_eq!(s.last_error, Some(LastError { operation: Operation::Connect, errno: 99, ts_ns: 4 }));
    }

    #[test]
    fn fd_reuse_starts_a_new_generation_without_old_options() {
        let mut table = SocketTable::new(16);
        table.apply(&event(7, 1, 0, sockopt(5, FLAG_SO_MARK, 1)));
        assert_eq!(table.get(7, 5).unwrap().generation, 0);
        assert!(table.apply(&event(7, 2, 0, Payload::Close { fd: 5, reused: false })).is_none());
        assert!(table.get(7, 5).is_none());
        let bind =
            Payload::Bind { fd: 5, addr: addr("127.0.0.1:80"), opts: SockOpts::default(), origin: None };
        let s = table.apply(&event(7, 3, 98, bind)).unwrap();
        assert_eq!(s.generation, 1);
        assert_eq!(s.opts, SockOpts::default(), "options of the closed socket must not leak");
        table.apply(&event(7, 4, 0, Payload::Close { fd: 5, reused: true }));
        table.apply(&event(7, 5, 0, sockopt(5, FLAG_SO_REUSEADDR, 0)));
        assert_eq!(table.get(7, 5).unwrap().generation, 2);
        // Another process's fd 5 is another socket.
        table.apply(&event(8, 6, 0, sockopt(5, FLAG_SO_REUSEADDR, 0)));
        assert_eq!(table.get(8, 5).unwrap().generation, 0);
    }

    #[test]
    fn async_error_and_established() {
        let mut table = SocketTable::new(16);
        let est = Payload::Established {
            fd: 3,
            src: addr("127.0.0.1:40000"),
            dst: addr("127.0.0.1:80"),
            opts: SockOpts { flags: FLAG_SO_MARK, mark: 5 },
            sk: 9,
        };
        let s = table.apply(&event(1, 1, 0, est)).unwrap();
        assert_eq!(
            (s.phase, s.local, s.peer),
            (Phase::Established, addr("127.0.0.1:40000"), addr("127.0.0.1:80"))
        );
        let err = Payload::ConnectAsyncError {
            fd: 4,
            src: addr("127.0.0.1:40001"),
            dst: addr("127.0.0.1:81"),
            opts: SockOpts::default(),
            sk: 10,
        };
        let s = table.apply(&event(1, 2, 111, err)).unwrap();
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.last_error.unwrap().errno, 111);
        assert_eq!(table.of_pid(1).iter().map(|s| s.fd).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn stays_bounded_and_evicts_oldest() {
        let mut table = SocketTable::new(8);
        for fd in 0..100 {
            table.apply(&event(1, fd as u64, 0, sockopt(fd, FLAG_SO_MARK, 1)));
            assert!(table.len() <= 8);
        }
        assert!(table.get(1, 99).is_some());
        assert!(table.get(1, 0).is_none());
    }

    fn reset(fd: i32, sk: u64, local: &str, peer: &str) -> Payload {
        use crate::reset::{ResetDirection, ResetOwner, ResetSeen};
        Payload::Reset(Box::new(ResetSeen {
            direction: ResetDirection::Received,
            owner: ResetOwner::Socket,
            fd,
            has_socket: true,
            sk,
            state: None,
            reason: None,
            active: false,
            cookie: None,
            local: addr(local),
            peer: addr(peer),
            opts: SockOpts::default(),
            exchanges: Vec::new(),
        }))
    }

    fn connect(fd: i32, dst: &str, src: Option<&str>, sk: u64) -> Payload {
        Payload::Connect {
            fd,
            dst: addr(dst),
            src: src.and_then(addr),
            opts: SockOpts::default(),
            sk,
            origin: None,
        }
    }

    /// Issue 12, "wrong attribution across fd reuse": a proxy's upstream connect fails
    /// with EADDRNOTAVAIL on fd 5 (an fd the kernel does not track, so its close makes no
    /// event); accept() hands out fd 5 again; the RST later received on the accepted
    /// socket must not carry the earlier socket's error.
    #[test]
    fn wrong_attribution_across_fd_reuse_a_reset_on_the_accepted_socket() {
        let mut table = SocketTable::new(16);
        let failed = table.apply(&event(7, 1, 99, connect(5, "127.0.0.19:443", None, 0xa000))).unwrap();
        assert_eq!(failed.last_error.map(|e| e.errno), Some(99));
        let on_accepted = table.apply(&event(7, 2, 0, reset(5, 0xb000, "127.0.0.1:8080", "127.0.0.1:50000")));
        assert_eq!(on_accepted, None, "the reset's socket is not the one the table knew on fd 5");
        assert!(table.get(7, 5).is_none(), "the fd names another socket now: the old one is forgotten");
        let next = table.apply(&event(7, 3, 0, sockopt(5, FLAG_SO_MARK, 1))).unwrap();
        assert_eq!((next.generation, next.last_error), (1, None));

        // Without a kernel socket address, the tuple tells them apart.
        table.apply(&event(7, 4, 99, connect(6, "127.0.0.19:443", None, 0)));
        assert_eq!(table.apply(&event(7, 5, 0, reset(6, 0, "127.0.0.1:8080", "127.0.0.1:50001"))), None);
        // The socket's own reset keeps its facts.
        table.apply(&event(7, 6, 111, connect(8, "127.0.0.1:444", Some("127.0.0.1:4000"), 0xc000)));
        let own = table.apply(&event(7, 7, 0, reset(8, 0xc000, "127.0.0.1:4000", "127.0.0.1:444"))).unwrap();
        assert_eq!(own.last_error.map(|e| e.errno), Some(111));
    }

    /// The same finding when the next socket on the fd connects: a different kernel
    /// socket, or a second successful bind, is another socket.
    #[test]
    fn wrong_attribution_across_fd_reuse_a_new_socket_starts_clean() {
        let mut table = SocketTable::new(16);
        table.apply(&event(7, 1, 99, connect(5, "127.0.0.19:443", None, 0xa000)));
        let est = Payload::Established {
            fd: 5,
            src: addr("127.0.0.1:40000"),
            dst: addr("127.0.0.1:80"),
            opts: SockOpts::default(),
            sk: 0xb000,
        };
        let s = table.apply(&event(7, 2, 0, est)).unwrap();
        assert_eq!((s.generation, s.last_error, s.phase), (1, None, Phase::Established));
        let bind = |a: &str| Payload::Bind { fd: 9, addr: addr(a), opts: SockOpts::default(), origin: None };
        table.apply(&event(7, 3, 0, bind("127.0.0.1:7000")));
        let s = table.apply(&event(7, 4, 0, bind("127.0.0.1:7001"))).unwrap();
        assert_eq!((s.generation, s.bound), (1, addr("127.0.0.1:7001")));
    }

    /// Issue 12, "unbounded growth": 100,000 short-lived processes each close a tracked
    /// socket; what the table remembers stays within its capacity.
    #[test]
    fn unbounded_growth_of_next_generation_100000_short_lived_processes() {
        let capacity = 1024;
        let mut table = SocketTable::new(capacity);
        for pid in 1..=100_000u32 {
            table.apply(&event(pid, u64::from(pid) * 2, 0, sockopt(3, FLAG_SO_MARK, 1)));
            table.apply(&event(pid, u64::from(pid) * 2 + 1, 0, Payload::Close { fd: 3, reused: false }));
            assert!(table.remembered() <= capacity, "pid {pid}: {} entries", table.remembered());
        }
        assert!(table.is_empty());
    }

    #[test]
    fn forget_pid() {
        let mut table = SocketTable::new(8);
        table.apply(&event(1, 1, 0, sockopt(3, FLAG_SO_MARK, 1)));
        table.apply(&event(2, 1, 0, sockopt(3, FLAG_SO_MARK, 1)));
        assert_eq!(table.pids(), [1, 2]);
        table.forget_pid(1);
        assert_eq!(table.pids(), [2]);
    }
}
