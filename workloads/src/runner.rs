//! The runner's side of the actors: spawning them, one request at a time with a bounded
//! wait for each answer, and reaping them on every path (the [`Actor`] guard).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;

use super::protocol::{Reply, Request, SockOpt};
use super::report::{ActorFacts, Attempt, Call, Connection, Gate, GateActors, ScenarioReport};
use super::{Addrs, CommonArgs, Error, netns};

/// Margin on top of what a request may block for: pipe round trip and scheduling.
const REPLY_MARGIN: Duration = Duration::from_secs(5);
/// How long an actor gets to exit once its stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `--gate` waits for its caller.
const GATE_TIMEOUT: Duration = Duration::from_secs(60);

/// One actor process. Dropping it kills and reaps the process if [`Actor::finish`] did
/// not, so every error path of a scenario leaves no process behind.
pub struct Actor {
    pub role: &'static str,
    pub pid: u32,
    pub comm: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    pending: Vec<u8>,
    reaped: bool,
}

impl Actor {
    /// Re-executes this binary as `sockerr scenario actor <comm>` and waits for its hello.
    pub fn spawn(role: &'static str, comm: &str) -> Result<Self, Error> {
        let exe = std::env::current_exe().map_err(|source| Error::Spawn {
            comm: comm.into(),
            exe: "/proc/self/exe".into(),
            source,
        })?;
        let mut child = Command::new(&exe)
            .args(["scenario", "actor", comm, "--parent", &std::process::id().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Spawn { comm: comm.into(), exe: exe.display().to_string(), source })?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let stdout = stdout.expect("stdout is piped");
        let mut actor = Self {
            role,
            pid: child.id(),
            comm: comm.into(),
            child,
            stdin,
            stdout,
            pending: Vec::new(),
            reaped: false,
        };
        match actor.receive("hello", REPLY_MARGIN)? {
            Reply::Hello { pid, comm: actual, netns } => {
                let ours = super::netns::current_inode()?;
                if pid != actor.pid || actual != actor.comm || netns != ours {
                    return Err(actor.fail(format!(
                        "says it is {actual}[{pid}] in netns {netns}, expected {}[{}] in {ours}",
                        actor.comm, actor.pid
                    )));
                }
                Ok(actor)
            }
            other => Err(actor.fail(format!("greeted with {other:?}"))),
        }
    }

    pub fn facts(&self) -> ActorFacts {
        ActorFacts { role: self.role.into(), pid: self.pid, comm: self.comm.clone() }
    }

    fn fail(&self, what: String) -> Error {
        Error::Actor { comm: self.comm.clone(), pid: self.pid, what }
    }

    fn unexpected(&self, op: &str, errno: i32) -> Error {
        Error::Unexpected {
            comm: self.comm.clone(),
            pid: self.pid,
            op: op.into(),
            errno: Errno::from_raw(errno),
        }
    }

    /// Sends one request and waits (bounded) for its reply.
    fn call(&mut self, request: &Request) -> Result<Reply, Error> {
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::Actor {
            comm: self.comm.clone(),
            pid: self.pid,
            what: "already finished".into(),
        })?;
        stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).map_err(Error::Pipe)?;
        let timeout = Duration::from_millis(request.blocks_for_ms()) + REPLY_MARGIN;
        match self.receive(request.name(), timeout)? {
            Reply::Refused { message } => Err(self.fail(format!("{}: {message}", request.name()))),
            reply => Ok(reply),
        }
    }

    fn receive(&mut self, op: &str, timeout: Duration) -> Result<Reply, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                return serde_json::from_str(&line).map_err(|source| Error::Protocol { line, source });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let timed_out =
                || Error::ActorTimeout { comm: self.comm.clone(), pid: self.pid, op: op.into(), timeout };
            if left.is_zero() {
                return Err(timed_out());
            }
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => return Err(timed_out()),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::Pipe(e.into())),
            }
            let mut chunk = [0u8; 4096];
            match self.stdout.read(&mut chunk) {
                Ok(0) => {
                    let status = self.child.try_wait().ok().flatten();
                    let status = status.map_or("still running".to_owned(), |s| s.to_string());
                    return Err(self.fail(format!("closed its stdout while {op} was pending ({status})")));
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Pipe(e)),
            }
        }
    }

    /// A call whose failure is part of the story: returns the errno instead of failing.
    fn try_call(&mut self, request: &Request) -> Result<Option<Errno>, Error> {
        match self.call(request)? {
            Reply::Done => Ok(None),
            Reply::Errno { errno } => Ok(Some(Errno::from_raw(errno))),
            other => Err(self.fail(format!("{}: unexpected reply {other:?}", request.name()))),
        }
    }

    /// A call that must succeed.
    fn must(&mut self, request: &Request) -> Result<(), Error> {
        match self.try_call(request)? {
            None => Ok(()),
            Some(errno) => Err(self.unexpected(request.name(), errno as i32)),
        }
    }

    pub fn socket(&mut self, ipv6: bool, nonblocking: bool) -> Result<(i32, u64), Error> {
        match self.call(&Request::Socket { ipv6, nonblocking })? {
            Reply::Socket { fd, inode } => Ok((fd, inode)),
            Reply::Errno { errno } => Err(self.unexpected("socket", errno)),
            other => Err(self.fail(format!("socket: unexpected reply {other:?}"))),
        }
    }

    pub fn set_opt(&mut self, fd: i32, opt: SockOpt) -> Result<(), Error> {
        self.must(&Request::SetOpt { fd, opt })
    }

    pub fn bind(&mut self, fd: i32, addr: SocketAddr) -> Result<Option<Errno>, Error> {
        self.try_call(&Request::Bind { fd, addr })
    }

    /// A listening socket on `addr`: (fd, inode).
    pub fn listen_on(&mut self, addr: SocketAddr, backlog: i32) -> Result<(i32, u64), Error> {
        let (fd, inode) = self.socket(addr.is_ipv6(), false)?;
        self.bind_ok(fd, addr)?;
        self.listen(fd, backlog)?;
        Ok((fd, inode))
    }

    /// A bind that is set-up, not part of the failure.
    pub fn bind_ok(&mut self, fd: i32, addr: SocketAddr) -> Result<(), Error> {
        match self.bind(fd, addr)? {
            None => Ok(()),
            Some(errno) => Err(self.unexpected(&format!("bind {addr}"), errno as i32)),
        }
    }

    /// A (blocking) connect that is set-up, not part of the failure.
    pub fn connect_ok(&mut self, fd: i32, addr: SocketAddr) -> Result<(), Error> {
        match self.connect(fd, addr)? {
            None => Ok(()),
            Some(errno) => Err(self.unexpected(&format!("connect {addr}"), errno as i32)),
        }
    }

    pub fn listen(&mut self, fd: i32, backlog: i32) -> Result<(), Error> {
        self.must(&Request::Listen { fd, backlog })
    }

    pub fn connect(&mut self, fd: i32, addr: SocketAddr) -> Result<Option<Errno>, Error> {
        self.try_call(&Request::Connect { fd, addr })
    }

    /// Outcome of a non-blocking connect: SO_ERROR once writable (None: connected).
    pub fn await_connect(&mut self, fd: i32, timeout: Duration) -> Result<Option<Errno>, Error> {
        let timeout_ms = timeout.as_millis() as u64;
        match self.call(&Request::AwaitConnect { fd, timeout_ms })? {
            Reply::Completed { errno } => Ok(errno.map(Errno::from_raw)),
            Reply::TimedOut => {
                Err(self.fail(format!("connect on fd {fd} did not complete within {timeout_ms} ms")))
            }
            Reply::Errno { errno } => Err(self.unexpected("poll", errno)),
            other => Err(self.fail(format!("await-connect: unexpected reply {other:?}"))),
        }
    }

    pub fn accept(&mut self, fd: i32, timeout: Duration) -> Result<Accepted, Error> {
        self.accept_with(fd, timeout, false)
    }

    /// accept(); `anonymous`: without asking for the peer's address.
    pub fn accept_with(&mut self, fd: i32, timeout: Duration, anonymous: bool) -> Result<Accepted, Error> {
        let timeout_ms = timeout.as_millis() as u64;
        match self.call(&Request::Accept { fd, timeout_ms, anonymous })? {
            Reply::Accepted { fd, inode: _, local, peer } => Ok(Accepted { fd, local, peer }),
            Reply::TimedOut => Err(self.fail(format!("no connection to accept within {timeout_ms} ms"))),
            Reply::Errno { errno } => Err(self.unexpected("accept", errno)),
            other => Err(self.fail(format!("accept: unexpected reply {other:?}"))),
        }
    }

    /// Waits until the peer closed its side (read returns 0).
    pub fn await_eof(&mut self, fd: i32, timeout: Duration) -> Result<(), Error> {
        let timeout_ms = timeout.as_millis() as u64;
        match self.call(&Request::AwaitEof { fd, timeout_ms })? {
            Reply::Done => Ok(()),
            Reply::TimedOut => Err(self.fail(format!("no FIN on fd {fd} within {timeout_ms} ms"))),
            Reply::Errno { errno } => Err(self.unexpected("read", errno)),
            other => Err(self.fail(format!("await-eof: unexpected reply {other:?}"))),
        }
    }

    /// getsockname(); None while the socket has no port (unbound, or released again).
    pub fn local_addr(&mut self, fd: i32) -> Result<Option<SocketAddr>, Error> {
        match self.call(&Request::LocalAddr { fd })? {
            Reply::Addr { addr } => Ok((addr.port() != 0).then_some(addr)),
            Reply::Errno { errno } => Err(self.unexpected("getsockname", errno)),
            other => Err(self.fail(format!("getsockname: unexpected reply {other:?}"))),
        }
    }

    pub fn close(&mut self, fd: i32) -> Result<(), Error> {
        self.must(&Request::Close { fd })
    }

    pub fn send(&mut self, fd: i32, data: &str) -> Result<(), Error> {
        self.must(&Request::Send { fd, data: data.into() })
    }

    /// Reads until `until` arrived; returns the data and the error that ended it, if any.
    pub fn recv_until(
        &mut self,
        fd: i32,
        until: &str,
        timeout: Duration,
    ) -> Result<(String, Option<Errno>), Error> {
        let timeout_ms = timeout.as_millis() as u64;
        match self.call(&Request::Recv { fd, until: until.into(), max: 64 * 1024, timeout_ms })? {
            Reply::Received { data, errno } => Ok((data, errno.map(Errno::from_raw))),
            Reply::TimedOut => {
                Err(self.fail(format!("{until:?} did not arrive on fd {fd} within {timeout_ms} ms")))
            }
            Reply::Errno { errno } => Err(self.unexpected("read", errno)),
            other => Err(self.fail(format!("recv: unexpected reply {other:?}"))),
        }
    }

    /// SO_LINGER {on, 0}: the next close() resets the connection.
    pub fn linger_zero(&mut self, fd: i32) -> Result<(), Error> {
        self.must(&Request::LingerZero { fd })
    }

    /// Socket, options, bind, connect (and, when non-blocking, the wait for its outcome),
    /// the way a proxy opens an upstream connection. Stops at the first failing call.
    pub fn open(&mut self, plan: &Plan) -> Result<Opened, Error> {
        let (fd, _) = self.socket(plan.ipv6, plan.nonblocking)?;
        for &opt in &plan.opts {
            self.set_opt(fd, opt)?;
        }
        let mut opened = Opened { fd, failure: None, src: None, dst: plan.connect };
        if let Some(addr) = plan.bind
            && let Some(errno) = self.bind(fd, addr)?
        {
            opened.src = Some(addr);
            opened.failure = Some(Failure { call: Call::Bind, errno, returned: errno, is_async: false });
            return Ok(opened);
        }
        let Some(dst) = plan.connect else {
            opened.src = self.local_addr(fd)?;
            return Ok(opened);
        };
        let returned = self.connect(fd, dst)?;
        // Right after connect() returned EINPROGRESS the socket still has the source the
        // kernel picked. After a synchronous failure the kernel has reset an implicitly
        // chosen address (0.0.0.0/::, inet_bhash2_reset_saddr()) and maybe the port.
        opened.src = self.local_addr(fd)?;
        opened.failure =
            match returned {
                None => None,
                Some(Errno::EINPROGRESS) => self.await_connect(fd, plan.await_timeout)?.map(|errno| {
                    Failure { call: Call::Connect, errno, returned: Errno::EINPROGRESS, is_async: true }
                }),
                Some(errno) => Some(Failure { call: Call::Connect, errno, returned: errno, is_async: false }),
            };
        Ok(opened)
    }

    /// Closes stdin (the actor exits), waits (bounded) for the exit and reaps it.
    pub fn finish(mut self) -> Result<(), Error> {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        // stdout reaches EOF when the actor exits; anything it still says is a bug.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => {
                    return Err(self.fail(format!(
                        "still running {} ms after its stdin closed",
                        EXIT_TIMEOUT.as_millis()
                    )));
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::Pipe(e.into())),
                Ok(_) => {}
            }
            let mut chunk = [0u8; 4096];
            match self.stdout.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Pipe(e)),
            }
        }
        let status = self.child.wait().map_err(Error::Pipe)?;
        self.reaped = true;
        if !status.success() {
            return Err(self.fail(format!("exited with {status}")));
        }
        if !self.pending.is_empty() {
            let extra = String::from_utf8_lossy(&self.pending).into_owned();
            return Err(self.fail(format!("said more than asked: {extra:?}")));
        }
        Ok(())
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        if !self.reaped {
            // Errors here mean the process is already gone, which is what we want.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How to open one socket: see [`Actor::open`].
#[derive(Clone, Debug)]
pub struct Plan {
    pub ipv6: bool,
    pub nonblocking: bool,
    pub opts: Vec<SockOpt>,
    pub bind: Option<SocketAddr>,
    pub connect: Option<SocketAddr>,
    /// Bound on the wait for a non-blocking connect's outcome.
    pub await_timeout: Duration,
}

impl Plan {
    pub fn new(ipv6: bool) -> Self {
        Self {
            ipv6,
            nonblocking: true,
            opts: Vec::new(),
            bind: None,
            connect: None,
            await_timeout: Duration::from_secs(3),
        }
    }

    pub fn sockopts(&self) -> BTreeMap<String, serde_json::Value> {
        self.opts.iter().map(|opt| (opt.name().to_owned(), opt.json_value())).collect()
    }
}

#[derive(Clone, Debug)]
pub struct Opened {
    pub fd: i32,
    pub failure: Option<Failure>,
    /// For a failed bind the wanted address, else the socket's own (getsockname).
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub call: Call,
    pub errno: Errno,
    /// What the call itself returned (EINPROGRESS for asynchronous failures).
    pub returned: Errno,
    pub is_async: bool,
}

impl Opened {
    /// The report entry for a failed open; None when everything succeeded.
    pub fn attempt(&self, actor: &Actor, plan: &Plan, at: Duration) -> Option<Attempt> {
        let failure = self.failure?;
        Some(Attempt {
            pid: actor.pid,
            comm: actor.comm.clone(),
            fd: self.fd,
            call: failure.call,
            event: match failure.call {
                Call::Connect => "connect_error",
                Call::Bind => "bind_error",
            }
            .into(),
            nonblocking: plan.nonblocking,
            sockopts: plan.sockopts(),
            src: self.src.filter(|src| !src.ip().is_unspecified()),
            src_port: self.src.map(|src| src.port()),
            dst: match failure.call {
                Call::Connect => self.dst,
                Call::Bind => None,
            },
            errno: failure.errno as i32,
            error: errno_name(failure.errno),
            is_async: failure.is_async,
            returned: errno_name(failure.returned),
            at_ms: (at.as_secs_f64() * 1e6).round() / 1e3,
        })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    pub fd: i32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// "EADDRNOTAVAIL" for 99.
pub fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

/// One compact JSON document and a newline on stdout.
pub fn print_line(value: &impl Serialize) -> Result<(), Error> {
    let mut line = serde_json::to_string(value).expect("reports serialize");
    line.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).and_then(|()| out.flush()).map_err(Error::Pipe)
}

/// The upstream, client and proxy of the scenarios with a client connection, started
/// in that order in a new network namespace (its inode first), and gated.
pub fn upstream_client_proxy(common: &CommonArgs) -> Result<(u64, [Actor; 3]), Error> {
    let netns = netns::enter_new()?;
    let upstream = Actor::spawn("upstream", "demo-upstream")?;
    let client = Actor::spawn("client", "demo-client")?;
    let proxy = Actor::spawn("proxy", "demo-proxy")?;
    gate(common, netns, &[&upstream, &client, &proxy])?;
    Ok((netns, [upstream, client, proxy]))
}

/// The client's connection to the upstream, made from `local` with `opts` set before
/// bind(), and the upstream's end of it.
pub struct ClientConnection {
    pub fd: i32,
    pub inode: u64,
    pub local: SocketAddr,
    pub accepted: Accepted,
}

impl ClientConnection {
    /// The upstream listens on its address and `client` connects to it from `local`.
    pub fn open(
        upstream: &mut Actor,
        client: &mut Actor,
        addrs: &Addrs,
        local: SocketAddr,
        opts: &[SockOpt],
    ) -> Result<Self, Error> {
        let (listener, _) = upstream.listen_on(addrs.upstream(), 16)?;
        let (fd, inode) = client.socket(addrs.ipv6, false)?;
        for &opt in opts {
            client.set_opt(fd, opt)?;
        }
        client.bind_ok(fd, local)?;
        client.connect_ok(fd, addrs.upstream())?;
        let accepted = upstream.accept(listener, Duration::from_secs(2))?;
        Ok(Self { fd, inode, local, accepted })
    }

    /// For the report: `client`'s connection as the upstream accepted it.
    pub fn facts(&self, client: &Actor) -> Connection {
        Connection::of(&client.facts(), self.fd, self.local, self.accepted.local)
    }
}

/// `--gate`: tell the caller who the actors are, then wait for its go.
pub fn gate(common: &CommonArgs, netns: u64, actors: &[&Actor]) -> Result<(), Error> {
    if !common.gate {
        return Ok(());
    }
    let actors = actors.iter().map(|actor| actor.facts()).collect();
    print_line(&Gate { gate: GateActors { netns, actors } })?;
    wait_for_line(GATE_TIMEOUT)
}

/// Waits for a line (or EOF) on stdin, at most `timeout`.
pub fn wait_for_line(timeout: Duration) -> Result<(), Error> {
    let stdin = std::io::stdin();
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
            Ok(0) => return Err(Error::GateTimeout { timeout }),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::Pipe(e.into())),
            Ok(_) => {}
        }
        // A raw read: std's buffered Stdin could hide the newline from the next poll().
        // EOF opens the gate too.
        match nix::unistd::read(stdin.as_fd(), &mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) if chunk[..n].contains(&b'\n') => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::Pipe(e.into())),
        }
    }
}

/// The end of every scenario. Unless the kernel did what the scenario exists to show
/// (`expected` says what that is), a `NotReproduced` error carrying the report; else
/// everything stays alive for `--hold-ms` (a tracer looks the holders up meanwhile),
/// every actor exits, and the report gets the run's wall time.
pub fn finish<R: ScenarioReport>(
    common: &CommonArgs,
    started: Instant,
    actors: Vec<Actor>,
    mut report: R,
    reproduced: bool,
    expected: &str,
) -> Result<R, Error> {
    if !reproduced {
        return Err(crate::not_reproduced(expected, &report));
    }
    hold_and_finish(common, actors)?;
    *report.elapsed_ms_mut() = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn hold_and_finish(common: &CommonArgs, actors: Vec<Actor>) -> Result<(), Error> {
    std::thread::sleep(Duration::from_millis(common.hold_ms));
    let mut first_error = None;
    for actor in actors {
        if let Err(error) = actor.finish() {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}
