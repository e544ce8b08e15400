//! The ground truth a scenario prints: what each actor did and what the kernel answered.
//! Field names and value formats follow sockerr's JSON records (docs/design.md) where the
//! two describe the same thing, so that tests compare them field by field.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::CommonArgs;
use crate::procnet::{TIME_WAIT, TcpEntry};

/// What every scenario's report begins with: which run, in which namespace, by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFacts {
    /// Scenario name as on the command line, e.g. "cilium".
    pub scenario: String,
    pub ipv6: bool,
    /// Inode of the scenario's network namespace (all actors share it).
    pub netns: u64,
    pub hold_ms: u64,
    /// Wall time of the whole run, hold included.
    pub elapsed_ms: u64,
    pub actors: Vec<ActorFacts>,
}

impl RunFacts {
    /// A run of `scenario` before anything failed: its actors, no time yet.
    pub(crate) fn new(scenario: &str, common: &CommonArgs, netns: u64, actors: Vec<ActorFacts>) -> Self {
        Self {
            scenario: scenario.into(),
            ipv6: common.ipv6,
            netns,
            hold_ms: common.hold_ms,
            elapsed_ms: 0,
            actors,
        }
    }

    pub fn actor(&self, role: &str) -> Option<&ActorFacts> {
        self.actors.iter().find(|actor| actor.role == role)
    }
}

/// A report `runner::finish` can close: it sets the run's wall time last.
pub trait ScenarioReport: Serialize {
    fn elapsed_ms_mut(&mut self) -> &mut u64;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Flattened: the JSON keeps these fields at the top level.
    #[serde(flatten)]
    pub run: RunFacts,
    /// Every failing call, in the order they happened.
    pub attempts: Vec<Attempt>,
    /// Sockets that held what the failing calls wanted, as the kernel listed them while
    /// the failures happened (empty when nothing holds anything, e.g. `refused`).
    pub holders: Vec<HolderFacts>,
    /// Connections that succeeded before the failure (`exhaustion`), or that set up the
    /// conflict (the client's connection in `cilium`).
    pub connections: Vec<Connection>,
    /// `exhaustion`: the namespace's ip_local_port_range and the ports in use.
    pub ports: Option<PortFacts>,
    /// `cilium`: how the SO_MARK value was built (Cilium's proxy mark layout).
    pub mark: Option<CiliumMark>,
}

impl Report {
    /// The report of `scenario` before anything failed: its actors, nothing else yet.
    pub(crate) fn new(scenario: &str, common: &CommonArgs, netns: u64, actors: Vec<ActorFacts>) -> Self {
        Self {
            run: RunFacts::new(scenario, common, netns, actors),
            attempts: Vec::new(),
            holders: Vec::new(),
            connections: Vec::new(),
            ports: None,
            mark: None,
        }
    }

    pub fn actor(&self, role: &str) -> Option<&ActorFacts> {
        self.run.actor(role)
    }

    /// The attempts made by the actor playing `role`.
    pub fn attempts_of(&self, role: &str) -> Vec<&Attempt> {
        match self.actor(role) {
            Some(actor) => self.attempts.iter().filter(|attempt| attempt.pid == actor.pid).collect(),
            None => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorFacts {
    /// proxy, client, upstream, other.
    pub role: String,
    pub pid: u32,
    /// As read back with PR_GET_NAME.
    pub comm: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Connect,
    Bind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    /// The call that failed.
    pub call: Call,
    /// sockerr's `event` for it: connect_error or bind_error.
    pub event: String,
    pub nonblocking: bool,
    /// Options set on the socket before the call, as sockerr renders them.
    pub sockopts: BTreeMap<String, serde_json::Value>,
    /// The socket's address: bind(): the wanted address; connect(): getsockname() right
    /// after the call. None when the kernel had already cleared the address again
    /// (a blocking connect that failed keeps only the port: see `src_port`).
    pub src: Option<SocketAddr>,
    /// The source port the call used, when known.
    pub src_port: Option<u16>,
    /// connect(): the destination; bind(): None.
    pub dst: Option<SocketAddr>,
    /// The failure as a positive errno and its name.
    pub errno: i32,
    pub error: String,
    /// True when the call itself returned `returned` (EINPROGRESS) and the error came
    /// later through SO_ERROR.
    #[serde(rename = "async")]
    pub is_async: bool,
    /// What the call itself returned: the error, or EINPROGRESS for `async` ones.
    pub returned: String,
    /// Milliseconds since the first attempt of this actor.
    pub at_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderFacts {
    /// Owner; all None when no process owns the socket (TIME_WAIT).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub fd: Option<i32>,
    /// Socket inode; 0 when no file refers to it (TIME_WAIT).
    pub inode: u64,
    /// TCP state as /proc/net/tcp showed it, named as sockerr names it.
    pub state: String,
    pub src: SocketAddr,
    pub dst: Option<SocketAddr>,
    /// Time left on the socket's timer when it was checked (TIME_WAIT).
    pub timer_ms: Option<u64>,
}

impl HolderFacts {
    /// The holder as /proc/net/tcp lists it, owned by `owner`'s fd (None: no process, as
    /// for TIME_WAIT). A listener has no peer; only TIME_WAIT reports its timer.
    pub(crate) fn from_tcp_entry(entry: &TcpEntry, owner: Option<(&ActorFacts, i32)>) -> Self {
        let listening = entry.remote.port() == 0 && entry.remote.ip().is_unspecified();
        Self {
            pid: owner.map(|(actor, _)| actor.pid),
            comm: owner.map(|(actor, _)| actor.comm.clone()),
            fd: owner.map(|(_, fd)| fd),
            inode: entry.inode,
            state: entry.state_name().into(),
            src: entry.local,
            dst: (!listening).then_some(entry.remote),
            timer_ms: if entry.state == TIME_WAIT { entry.timer_ms } else { None },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl Connection {
    /// `actor`'s connection on `fd` from `src` to `dst`.
    pub(crate) fn of(actor: &ActorFacts, fd: i32, src: SocketAddr, dst: SocketAddr) -> Self {
        Self { pid: actor.pid, comm: actor.comm.clone(), fd, src, dst }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortFacts {
    /// ip_local_port_range as read back from the namespace.
    pub range: [u16; 2],
    /// Ports to the destination held when connect() failed.
    pub in_use: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiliumMark {
    /// "0x32030b00"
    pub value: String,
    /// Low 16 bits: 0x0b00 marks egress traffic of Cilium's proxy.
    pub magic: String,
    /// Security identity in bits 16..32.
    pub identity: u32,
    pub cluster: u32,
}

/// What `--gate` prints before anything fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub gate: GateActors,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateActors {
    pub netns: u64,
    pub actors: Vec<ActorFacts>,
}

/// What `proxy-reset` prints: who reset which connection, and the HTTP exchange that
/// made the proxy do it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResetReport {
    #[serde(flatten)]
    pub run: RunFacts,
    /// Every RST of the run, as the actors saw their sockets: sent ones by the proxy in
    /// the order it closed them, then the received ones.
    pub resets: Vec<ResetFacts>,
    pub exchange: HttpExchange,
    /// The proxy accepted without asking for the client's address.
    pub anonymous_accept: bool,
}

impl ResetReport {
    pub fn actor(&self, role: &str) -> Option<&ActorFacts> {
        self.run.actor(role)
    }

    /// The reset of `direction` ("sent" or "received") on `role`'s socket to `peer_role`.
    pub fn reset(&self, direction: &str, role: &str, peer_role: &str) -> Option<&ResetFacts> {
        self.resets.iter().find(|r| r.direction == direction && r.role == role && r.peer_role == peer_role)
    }
}

/// What `fd-reuse` prints: the upstream connect that failed on an fd, and the reset later
/// received on the accepted socket that got the same fd number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdReuseReport {
    #[serde(flatten)]
    pub run: RunFacts,
    /// The failed connect (EADDRNOTAVAIL) on the fd, closed right after.
    pub attempt: Attempt,
    /// The reset the proxy received on the accepted socket that reused the fd number.
    pub reset: ResetFacts,
}

impl ScenarioReport for Report {
    fn elapsed_ms_mut(&mut self) -> &mut u64 {
        &mut self.run.elapsed_ms
    }
}

impl ScenarioReport for ResetReport {
    fn elapsed_ms_mut(&mut self) -> &mut u64 {
        &mut self.run.elapsed_ms
    }
}

impl ScenarioReport for FdReuseReport {
    fn elapsed_ms_mut(&mut self) -> &mut u64 {
        &mut self.run.elapsed_ms
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetFacts {
    /// sent, received: as sockerr's `rst_sent` / `rst_received`.
    pub direction: String,
    pub role: String,
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    /// The socket's own address and its peer's (getsockname/getpeername before the RST).
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Role of the actor at the other end.
    pub peer_role: String,
    /// What the actor's next read returned, for received resets ("ECONNRESET").
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpExchange {
    pub request: String,
    pub response: String,
    /// The upstream the response came from.
    pub upstream: SocketAddr,
    /// Values of the response's Transfer-Encoding fields, in order, as the proxy found
    /// them before rejecting the response.
    pub transfer_encoding: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run's facts are flattened: a report reads and prints with them at the top
    /// level, in the order the scenarios always printed them.
    #[test]
    fn run_facts_stay_at_the_top_of_the_json() {
        let line = concat!(
            r#"{"scenario":"refused","ipv6":false,"netns":4026532177,"hold_ms":1500,"elapsed_ms":1561,"#,
            r#""actors":[{"role":"proxy","pid":29945,"comm":"demo-proxy"}],"attempts":[],"holders":[],"#,
            r#""connections":[],"ports":null,"mark":null}"#
        );
        let report: Report = serde_json::from_str(line).unwrap();
        assert_eq!(report.run.elapsed_ms, 1561);
        assert_eq!(report.actor("proxy").map(|a| a.pid), Some(29945));
        assert_eq!(serde_json::to_string(&report).unwrap(), line);
    }
}
