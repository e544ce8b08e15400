//! `tracer::enrich` against a real kernel: every test makes its own network namespace
//! (needs root: unshare(CLONE_NEWNET), setns), opens sockets on loopback there, and asks
//! the Enricher about them through that namespace, as sockerr asks about a failing
//! process. No packet leaves the namespace; other addresses are only values compared.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::{
    fs,
    io::{self, Read},
    mem,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process,
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use nix::{
    sched::{CloneFlags, unshare},
    sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, bind,
        getsockname, listen, setsockopt, socket, sockopt,
    },
};
use tracer::{
    enrich::{Enricher, Findings, Netns, Query},
    record::{Holder, HolderOwner, TcpState},
};

/// How long one step inside the namespace thread may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace of the test's own, held by a helper thread that unshared it:
/// sockets made by closures it runs live in that namespace, and the Enricher reaches it
/// through /proc/<pid>/task/<tid>/ns/net. Dropping it ends the thread.
struct TestNetns {
    tid: u32,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl TestNetns {
    fn new() -> Self {
        let (jobs, job_queue) = mpsc::channel::<Job>();
        let (ready, is_ready) = mpsc::channel::<Result<u32, String>>();
        let thread = thread::Builder::new()
            .name("test-netns".into())
            .spawn(move || {
                let setup = unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| format!("unshare(CLONE_NEWNET): {errno} (run as root)"))
                    .and_then(|()| bring_loopback_up().map_err(|err| format!("bringing lo up: {err}")))
                    .map(|()| nix::unistd::gettid().as_raw().cast_unsigned());
                let failed = setup.is_err();
                let _ = ready.send(setup);
                if failed {
                    return;
                }
                while let Ok(job) = job_queue.recv() {
                    job();
                }
            })
            .expect("spawn the namespace thread");
        let mut netns = Self { tid: 0, jobs: Some(jobs), thread: Some(thread) };
        netns.tid = is_ready
            .recv_timeout(STEP_TIMEOUT)
            .expect("namespace thread answers")
            .unwrap_or_else(|err| panic!("cannot make a network namespace: {err}"));
        netns
    }

    /// Runs `work` on the namespace thread and returns its result.
    fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.as_ref().expect("thread running").send(job).expect("namespace thread alive");
        result.recv_timeout(STEP_TIMEOUT).expect("namespace job finished in time")
    }

    fn netns(&self, enricher: &Enricher) -> Netns {
        enricher.netns_of_thread(process::id(), self.tid)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// SIOCSIFFLAGS IFF_UP on lo: a new namespace's loopback starts down, without addresses.
fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let control = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        if libc::ioctl(control.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(control.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn enricher() -> Enricher {
    Enricher::new(PathBuf::from("/proc"))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// What the Enricher should name as owner of an fd of this process.
fn own(fd: &impl AsRawFd) -> HolderOwner {
    let comm = fs::read_to_string("/proc/self/comm").unwrap().trim_end().to_string();
    HolderOwner { pid: process::id(), comm, fd: fd.as_raw_fd() }
}

/// The socket inode behind an fd, as sock_diag reports it.
fn inode(fd: &impl AsRawFd) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().ino()
}

/// listener on `at`, a client connected to it, and the accepted side.
fn connection(at: &'static str) -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind(at).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (listener, client, server)
}

/// A TCP socket bound to `at`, listening or not, with IPV6_V6ONLY as asked (std sets
/// neither choice).
fn tcp_socket(at: SocketAddr, v6_only: bool, listening: bool) -> (OwnedFd, SocketAddr) {
    let family = if at.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    match at {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap(),
        SocketAddr::V6(v6) => {
            setsockopt(&fd.as_fd(), sockopt::Ipv6V6Only, &v6_only).unwrap();
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6)).unwrap();
        }
    }
    if listening {
        listen(&fd, Backlog::new(8).unwrap()).unwrap();
    }
    let local: SockaddrStorage = getsockname(fd.as_raw_fd()).unwrap();
    let port =
        local.as_sockaddr_in().map(|a| a.port()).or(local.as_sockaddr_in6().map(|a| a.port())).unwrap();
    (fd, SocketAddr::new(at.ip(), port))
}

/// Whether the kernel itself lets a new TCP socket bind `at` in the namespace.
fn kernel_allows_bind(netns: &TestNetns, at: SocketAddr) -> bool {
    netns.run(move || match TcpListener::bind(at) {
        Ok(_) => true,
        Err(err) if matches!(err.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable) => false,
        Err(err) => panic!("bind {at}: {err}"),
    })
}

fn lookup(enricher: &Enricher, netns: &TestNetns, query: Query) -> Findings {
    enricher.lookup_in(&netns.netns(enricher), &query).unwrap_or_else(|err| panic!("{query:?}: {err}"))
}

#[test]
fn established_tuple_holder_is_named_with_its_owning_fd() {
    let netns = TestNetns::new();
    let enricher = enricher();
    let (listener, client, _server) = netns.run(|| connection("127.0.0.1:0"));
    let src = client.local_addr().unwrap();
    let dst = listener.local_addr().unwrap();

    let findings = lookup(&enricher, &netns, Query::TupleHolders { src, dst });

    assert_eq!(findings.holders.len(), 1, "only the client side has this tuple: {findings:?}");
    let holder = &findings.holders[0];
    assert_eq!(holder.state, TcpState::Established);
    assert_eq!((holder.src, holder.dst), (src, Some(dst)));
    assert_eq!(holder.inode, inode(&client));
    assert_eq!(holder.owner, Some(own(&client)));
    assert_eq!(findings.note, None);

    // The same question in this process's own namespace finds nothing: the lookup
    // really ran in the test's namespace.
    let elsewhere = enricher.lookup(process::id(), &Query::TupleHolders { src, dst }).unwrap();
    assert!(elsewhere.holders.is_empty(), "{elsewhere:?}");
}

#[test]
fn ipv6_socket_with_a_v4_mapped_tuple_holds_the_ipv4_tuple() {
    let netns = TestNetns::new();
    let enricher = enricher();
    let (listener, client) = netns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // An AF_INET6 socket reaching an IPv4 peer, as a dual-stack proxy does.
        let client = TcpStream::connect(SocketAddr::new(ip("::ffff:127.0.0.1"), port)).unwrap();
        (listener, client)
    });
    let mapped_src = client.local_addr().unwrap();
    assert!(mapped_src.is_ipv6(), "{mapped_src}");
    let src = SocketAddr::new(mapped_src.ip().to_canonical(), mapped_src.port());
    let dst = listener.local_addr().unwrap();

    let findings = lookup(&enricher, &netns, Query::TupleHolders { src, dst });

    assert_eq!(findings.holders.len(), 1, "{findings:?}");
    assert_eq!(findings.holders[0].src, mapped_src, "reported as the kernel has it");
    assert_eq!(findings.holders[0].owner, Some(own(&client)));
}

#[test]
fn time_wait_holder_has_no_owner_and_the_time_it_has_left() {
    let netns = TestNetns::new();
    let enricher = enricher();
    let (listener, client, mut server) = netns.run(|| connection("127.0.0.1:0"));
    let src = client.local_addr().unwrap();
    let dst = listener.local_addr().unwrap();

    // Active close by the client, then the server's FIN: the client's side of the
    // tuple lingers in TIME_WAIT.
    drop(client);
    server.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    assert_eq!(server.read(&mut [0; 16]).unwrap(), 0, "client's FIN");
    drop(server);

    let deadline = Instant::now() + STEP_TIMEOUT;
    let holder = loop {
        let findings = lookup(&enricher, &netns, Query::TupleHolders { src, dst });
        if let Some(holder) = findings.holders.iter().find(|h| h.state == TcpState::TimeWait) {
            break holder.clone();
        }
        assert!(Instant::now() < deadline, "no TIME_WAIT holder: {findings:?}");
        thread::sleep(Duration::from_millis(50));
    };

    assert_eq!((holder.src, holder.dst), (src, Some(dst)));
    assert_eq!(holder.inode, 0);
    assert_eq!(holder.owner, None);
    let left = holder.timer_ms.expect("TIME_WAIT reports its timer");
    assert!(left > 0 && left <= 60_000, "TCP_TIMEWAIT_LEN is 60 s, got {left} ms");
}

#[test]
fn a_listener_holds_its_port_on_its_own_address_only() {
    let netns = TestNetns::new();
    let enricher = enricher();
    let listener = netns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let local = listener.local_addr().unwrap();

    let findings = lookup(&enricher, &netns, Query::PortHolders { local });
    assert_eq!(
        findings.holders,
        [Holder {
            state: TcpState::Listen,
            src: local,
            dst: None,
            inode: inode(&listener),
            owner: Some(own(&listener)),
            timer_ms: None,
        }]
    );
    assert!(!kernel_allows_bind(&netns, local));

    let other = SocketAddr::new(ip("127.0.0.2"), local.port());
    let findings = lookup(&enricher, &netns, Query::PortHolders { local: other });
    assert!(findings.holders.is_empty(), "{findings:?}");
    assert!(kernel_allows_bind(&netns, other), "the kernel agrees: no conflict");

    let wildcard = SocketAddr::new(ip("0.0.0.0"), local.port());
    let findings = lookup(&enricher, &netns, Query::PortHolders { local: wildcard });
    assert_eq!(findings.holders.len(), 1, "{findings:?}");
    assert!(!kernel_allows_bind(&netns, wildcard));
}

#[test]
fn a_dual_stack_wildcard_listener_holds_the_ipv4_port_and_a_v6only_one_does_not() {
    let netns = TestNetns::new();
    let enricher = enricher();
    let (dual, dual_at) = netns.run(|| tcp_socket(addr("[::]:0"), false, true));
    let (v6_only, v6_only_at) = netns.run(|| tcp_socket(addr("[::]:0"), true, true));

    let wanted = SocketAddr::new(ip("127.0.0.1"), dual_at.port());
    let findings = lookup(&enricher, &netns, Query::PortHolders { local: wanted });
    assert_eq!(findings.holders.len(), 1, "{findings:?}");
    assert_eq!(findings.holders[0].state, TcpState::Listen);
    assert_eq!(findings.holders[0].src, dual_at);
    assert_eq!(findings.holders[0].owner, Some(own(&dual)));
    assert!(!kernel_allows_bind(&netns, wanted));

    let wanted = SocketAddr::new(ip("127.0.0.1"), v6_only_at.port());
    let findings = lookup(&enricher, &netns, Query::PortHolders { local: wanted });
    assert!(findings.holders.is_empty(), "{findings:?}");
    assert!(kernel_allows_bind(&netns, wanted), "the kernel agrees: V6ONLY frees the IPv4 port");

    let wanted = SocketAddr::new(ip("::1"), v6_only_at.port());
    let findings = lookup(&enricher, &netns, Query::PortHolders { local: wanted });
    assert_eq!(findings.holders.len(), 1, "{findings:?}");
    assert_eq!(findings.holders[0].owner, Some(own(&v6_only)));
}

#[test]
fn bound_but_idle_tcp_and_udp_sockets_hold_their_ports() {
    let netns = TestNetns::new();
    let enricher = enricher();
    let (bound, bound_at) = netns.run(|| tcp_socket(addr("127.0.0.1:0"), false, false));
    let udp = netns.run(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    let udp_at = udp.local_addr().unwrap();

    // Listed by kernels with TCP_BOUND_INACTIVE in sock_diag (Linux 6.7+).
    let findings = lookup(&enricher, &netns, Query::PortHolders { local: bound_at });
    assert_eq!(findings.holders.len(), 1, "{findings:?}");
    assert_eq!(findings.holders[0].state, TcpState::Close);
    assert_eq!(findings.holders[0].owner, Some(own(&bound)));
    assert!(!kernel_allows_bind(&netns, bound_at));

    let findings = lookup(&enricher, &netns, Query::PortHolders { local: udp_at });
    let udp_holder = findings.holders.iter().find(|h| h.inode == inode(&udp)).expect("UDP holder");
    assert_eq!(udp_holder.state, TcpState::Other(7), "UDP shows as a non-TCP state");
    assert_eq!(udp_holder.owner, Some(own(&udp)));
}

#[test]
fn port_usage_counts_connections_in_the_namespace_port_range() {
    const RANGE: (u16, u16) = (40000, 40009);
    let host_range_before = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let netns = TestNetns::new();
    let enricher = enricher();
    let (target, other) = netns.run(|| {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        // Written from the namespace thread: net sysctls belong to the writer's namespace.
        let range = format!("{} {}", RANGE.0, RANGE.1);
        fs::write("/proc/sys/net/ipv4/ip_local_port_range", range).unwrap();
        (target, other)
    });
    let dst = target.local_addr().unwrap();
    let other_dst = other.local_addr().unwrap();
    let clients = netns.run(move || {
        let to_target: Vec<_> = (0..4).map(|_| TcpStream::connect(dst).unwrap()).collect();
        let to_other = TcpStream::connect(other_dst).unwrap();
        (to_target, to_other)
    });
    for client in clients.0.iter().chain([&clients.1]) {
        let port = client.local_addr().unwrap().port();
        assert!((RANGE.0..=RANGE.1).contains(&port), "port {port} from the narrowed range");
    }

    let usage = |src_ip: &str| {
        let findings = lookup(&enricher, &netns, Query::PortUsage { src_ip: ip(src_ip), dst });
        findings.ports.expect("port usage")
    };
    let any_source = usage("0.0.0.0");
    assert_eq!(any_source.range, RANGE);
    assert_eq!(any_source.in_use, 4);
    assert_eq!(usage("127.0.0.1").in_use, 4);
    assert_eq!(usage("127.0.0.2").in_use, 0);

    let host_range_after = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    assert_eq!(host_range_after, host_range_before, "the host's range is untouched");
}

#[test]
fn addresses_local_to_the_namespace() {
    let netns = TestNetns::new();
    let enricher = enricher();
    let is_local = |addr: &str| {
        let findings = lookup(&enricher, &netns, Query::AddressIsLocal { addr: ip(addr) });
        findings.address_is_local.expect("an answer")
    };

    assert!(is_local("127.0.0.1"));
    assert!(is_local("::1"));
    assert!(is_local("0.0.0.0"));
    // All of 127.0.0.0/8 is local on lo, and the kernel agrees.
    assert!(is_local("127.0.0.2"));
    assert!(kernel_allows_bind(&netns, addr("127.0.0.2:0")));
    // Values only: nothing is sent to these.
    assert!(!is_local("fd00::1"));
    assert!(!is_local("192.0.2.1"));
}

#[test]
fn a_vanished_process_is_reported_as_gone() {
    let enricher = enricher();
    // pid_max is at most 2^22: this pid cannot exist.
    let pid = u32::MAX;
    let query = Query::AddressIsLocal { addr: ip("127.0.0.1") };
    let err = enricher.lookup(pid, &query).unwrap_err();
    assert_eq!(err.to_string(), format!("process {pid} exited before its network namespace could be read"));
}
