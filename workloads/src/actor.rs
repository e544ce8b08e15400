//! The actor process: a socket puppet with its own pid and comm. Performs one syscall per
//! request line, answers with one line, exits when stdin closes.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::Error;
use super::protocol::{Reply, Request, SockOpt};

#[derive(Debug, Clone, clap::Args)]
pub struct ActorArgs {
    /// Process name to take (at most 15 bytes).
    pub comm: String,
    /// The runner's pid: the actor exits at once if its parent is already gone.
    #[arg(long)]
    pub parent: u32,
}

pub fn run(args: ActorArgs) -> Result<(), Error> {
    let side = |what: String| Error::ActorSide { comm: args.comm.clone(), what };
    // The namespace must die with the runner, even on SIGKILL: no actor may outlive it.
    // The check after the prctl closes the race with a runner that died before it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| side(format!("PR_SET_PDEATHSIG: {e}")))?;
    if nix::unistd::getppid().as_raw() as u32 != args.parent {
        return Err(side("the runner is gone".into()));
    }
    let comm = CString::new(args.comm.clone()).map_err(|_| side("comm contains NUL".into()))?;
    if args.comm.len() > 15 {
        return Err(side("comm is longer than 15 bytes".into()));
    }
    nix::sys::prctl::set_name(&comm).map_err(|source| Error::SetName { comm: args.comm.clone(), source })?;
    let comm = nix::sys::prctl::get_name()
        .map_err(|source| Error::SetName { comm: args.comm.clone(), source })?
        .to_string_lossy()
        .into_owned();

    let mut out = std::io::stdout().lock();
    let netns = super::netns::current_inode()?;
    send(&mut out, &Reply::Hello { pid: std::process::id(), comm, netns })?;

    let mut sockets: HashMap<i32, Socket> = HashMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(Error::Pipe)?;
        let request: Request =
            serde_json::from_str(&line).map_err(|source| Error::Protocol { line: line.clone(), source })?;
        send(&mut out, &serve(&mut sockets, request))?;
    }
    Ok(())
}

fn send(out: &mut impl Write, reply: &Reply) -> Result<(), Error> {
    let mut line = serde_json::to_string(reply).expect("replies serialize");
    line.push('\n');
    out.write_all(line.as_bytes()).and_then(|()| out.flush()).map_err(Error::Pipe)
}

fn serve(sockets: &mut HashMap<i32, Socket>, request: Request) -> Reply {
    let outcome = match request {
        Request::Socket { ipv6, nonblocking } => {
            let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
            // SOCK_NONBLOCK at creation, as Envoy does.
            let ty = if nonblocking { Type::STREAM.nonblocking() } else { Type::STREAM };
            Socket::new(domain, ty, Some(Protocol::TCP)).map_err(errno).and_then(|socket| {
                let fd = socket.as_raw_fd();
                let inode = inode(&socket)?;
                sockets.insert(fd, socket);
                Ok(Reply::Socket { fd, inode })
            })
        }
        Request::SetOpt { fd, opt } => socket(sockets, fd).and_then(|socket| {
            match opt {
                SockOpt::Mark(mark) => socket.set_mark(mark),
                SockOpt::ReuseAddr => socket.set_reuse_address(true),
                SockOpt::IpTransparent => socket.set_ip_transparent_v4(true),
                SockOpt::Ipv6Transparent => socket.set_ip_transparent_v6(true),
            }
            .map(|()| Reply::Done)
            .map_err(errno)
        }),
        Request::Bind { fd, addr } => socket(sockets, fd)
            .and_then(|s| s.bind(&SockAddr::from(addr)).map(|()| Reply::Done).map_err(errno)),
        Request::Listen { fd, backlog } => {
            socket(sockets, fd).and_then(|s| s.listen(backlog).map(|()| Reply::Done).map_err(errno))
        }
        Request::Connect { fd, addr } => socket(sockets, fd)
            .and_then(|s| s.connect(&SockAddr::from(addr)).map(|()| Reply::Done).map_err(errno)),
        Request::AwaitConnect { fd, timeout_ms } => socket(sockets, fd).and_then(|s| {
            if !wait_for(s, PollFlags::POLLOUT, Duration::from_millis(timeout_ms))? {
                return Ok(Reply::TimedOut);
            }
            let error = s.take_error().map_err(errno)?;
            Ok(Reply::Completed { errno: error.and_then(|e| e.raw_os_error()) })
        }),
        Request::Accept { fd, timeout_ms, anonymous } => {
            accept(sockets, fd, Duration::from_millis(timeout_ms), anonymous)
        }
        Request::Send { fd, data } => socket(sockets, fd).and_then(|s| send_all(s, data.as_bytes())),
        Request::Recv { fd, until, max, timeout_ms } => socket(sockets, fd)
            .and_then(|s| receive(s, until.as_bytes(), max, Duration::from_millis(timeout_ms))),
        Request::LingerZero { fd } => socket(sockets, fd)
            .and_then(|s| s.set_linger(Some(Duration::ZERO)).map(|()| Reply::Done).map_err(errno)),
        Request::AwaitEof { fd, timeout_ms } => {
            socket(sockets, fd).and_then(|s| read_to_eof(s, Duration::from_millis(timeout_ms)))
        }
        Request::LocalAddr { fd } => socket(sockets, fd)
            .and_then(|s| Ok(Reply::Addr { addr: address(s.local_addr().map_err(errno)?)? })),
        Request::Close { fd } => match sockets.remove(&fd) {
            // Dropping the socket is the close(2).
            Some(socket) => {
                drop(socket);
                Ok(Reply::Done)
            }
            None => Err(refuse(format!("fd {fd} is not an actor socket"))),
        },
    };
    outcome.unwrap_or_else(|reply| reply)
}

fn socket(sockets: &HashMap<i32, Socket>, fd: i32) -> Result<&Socket, Reply> {
    sockets.get(&fd).ok_or_else(|| refuse(format!("fd {fd} is not an actor socket")))
}

fn accept(
    sockets: &mut HashMap<i32, Socket>,
    fd: i32,
    timeout: Duration,
    anonymous: bool,
) -> Result<Reply, Reply> {
    let listener = socket(sockets, fd)?;
    if !wait_for(listener, PollFlags::POLLIN, timeout)? {
        return Ok(Reply::TimedOut);
    }
    let (conn, peer) = if anonymous {
        let conn = accept_without_address(listener)?;
        let peer = conn.peer_addr().map_err(errno)?;
        (conn, peer)
    } else {
        listener.accept().map_err(errno)?
    };
    let local = address(conn.local_addr().map_err(errno)?)?;
    let peer = address(peer)?;
    let fd = conn.as_raw_fd();
    let inode = inode(&conn)?;
    sockets.insert(fd, conn);
    Ok(Reply::Accepted { fd, inode, local, peer })
}

fn errno(error: std::io::Error) -> Reply {
    match error.raw_os_error() {
        Some(errno) => Reply::Errno { errno },
        None => refuse(error.to_string()),
    }
}

fn refuse(message: String) -> Reply {
    Reply::Refused { message }
}

fn inode(socket: &Socket) -> Result<u64, Reply> {
    nix::sys::stat::fstat(socket.as_fd())
        .map(|stat| stat.st_ino)
        .map_err(|e| Reply::Errno { errno: e as i32 })
}

fn address(addr: SockAddr) -> Result<SocketAddr, Reply> {
    addr.as_socket().ok_or_else(|| refuse(format!("not an inet address: {addr:?}")))
}

/// poll() for `events`, restarting on EINTR, never longer than `timeout` in total.
fn wait_for(socket: &Socket, events: PollFlags, timeout: Duration) -> Result<bool, Reply> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(socket.as_fd(), events)];
        let left = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, left) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) if Instant::now() < deadline => continue,
            Err(e) => return Err(Reply::Errno { errno: e as i32 }),
        }
    }
}

fn read_to_eof(mut socket: &Socket, timeout: Duration) -> Result<Reply, Reply> {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !wait_for(socket, PollFlags::POLLIN, left)? {
            return Ok(Reply::TimedOut);
        }
        match socket.read(&mut buffer) {
            Ok(0) => return Ok(Reply::Done),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// accept4(fd, NULL, NULL, SOCK_CLOEXEC): the kernel writes no peer address.
fn accept_without_address(listener: &Socket) -> Result<Socket, Reply> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall on a listening socket we own; null address pointers are allowed.
    let fd = unsafe {
        libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
    };
    if fd < 0 {
        return Err(errno(std::io::Error::last_os_error()));
    }
    // SAFETY: accept4 returned a new fd that nothing else owns.
    Ok(unsafe { Socket::from_raw_fd(fd) })
}

/// Short writes are retried a bounded number of times.
fn send_all(mut socket: &Socket, mut data: &[u8]) -> Result<Reply, Reply> {
    for _ in 0..64 {
        if data.is_empty() {
            return Ok(Reply::Done);
        }
        match socket.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(errno(e)),
        }
    }
    Err(refuse("write made no progress in 64 calls".into()))
}

fn receive(mut socket: &Socket, until: &[u8], max: usize, timeout: Duration) -> Result<Reply, Reply> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let done = |data: &[u8]| !until.is_empty() && data.windows(until.len()).any(|w| w == until);
    while !done(&data) && data.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !wait_for(socket, PollFlags::POLLIN, left)? {
            return Ok(Reply::TimedOut);
        }
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let data = String::from_utf8_lossy(&data).into_owned();
                return Ok(Reply::Received { data, errno: e.raw_os_error() });
            }
        }
    }
    Ok(Reply::Received { data: String::from_utf8_lossy(&data).into_owned(), errno: None })
}
