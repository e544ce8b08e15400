//! The HTTP/1 server of both listeners, with the limits `axum::serve` leaves unset (it
//! gives hyper no timer, so no header read timeout, and admits any number of connections):
//!
//! - a request head must arrive within [`HEADER_READ_TIMEOUT`]; hyper restarts that clock
//!   while a keep-alive connection waits for its next request, so idle connections go too;
//! - a request head holds at most [`MAX_HEAD_BYTES`] in [`MAX_HEADERS`] fields (431);
//! - at most [`MAX_CONNECTIONS`] connections, [`MAX_CONNECTIONS_PER_CLIENT`] per client
//!   address (`limits`); beyond, a connection is closed at once;
//! - a connection lives at most [`MAX_CONNECTION_AGE`], then gets [`CLOSE_GRACE`] to finish
//!   (a client that reads its answer slowly cannot hold a slot for good).
//!
//! Request bodies and handler time are bounded by tower-http layers (`http::hardened`).
//! Every connection turned away or cut short is counted ([`HttpMetrics`]). The server
//! shares the runtime with tracing but never blocks it: each connection is a task that
//! only awaits I/O.

use std::{
    future::Future,
    io,
    pin::{Pin, pin},
    sync::Arc,
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::watch,
    task::JoinSet,
};

use super::{
    http_metrics::{Aborted, HttpMetrics, Listener},
    limits::{Admitted, Client, ConnectionLimits, Refusal},
};

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's read buffer, which bounds the request head (8 KiB is its minimum).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 32;
pub const MAX_CONNECTIONS: usize = 128;
/// A Prometheus pair, the kubelet's probes and a few readers fit many times over.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 16;
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A listening socket the server accepts from.
pub enum Incoming {
    Tcp(TcpListener),
    /// Served to processes of this user only (SO_PEERCRED).
    Unix(UnixListener),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Incoming {
    /// The next connection and who it is from (or why it is refused before any limit).
    async fn accept(&self) -> io::Result<(Box<dyn Io>, Result<Client, Refusal>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Box::new(stream), Ok(Client::Ip(peer.ip()))))
            }
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let own = nix::unistd::geteuid().as_raw();
                let client = match stream.peer_cred() {
                    Ok(cred) if cred.uid() == own => Ok(Client::Local),
                    _ => Err(Refusal::ForeignUser),
                };
                Ok((Box::new(stream), client))
            }
        }
    }
}

/// The settings and counters of one listener.
#[derive(Clone)]
pub struct ServeOptions {
    pub listener: Listener,
    pub limits: Arc<ConnectionLimits>,
    pub metrics: HttpMetrics,
    pub header_read_timeout: Duration,
    pub max_age: Duration,
}

impl ServeOptions {
    pub fn new(listener: Listener, metrics: HttpMetrics) -> Self {
        Self {
            listener,
            limits: ConnectionLimits::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT),
            metrics,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_age: MAX_CONNECTION_AGE,
        }
    }
}

/// Serves `router` on `incoming` until `shutdown` completes, then lets open connections
/// finish their request (the caller bounds that wait).
pub async fn serve(
    incoming: Incoming,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reaps finished connection tasks so the set stays as small as the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = incoming.accept() => {
                let (io, client) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        accept_failed(&err).await;
                        continue;
                    }
                };
                let admitted = match client.and_then(|client| options.limits.admit(client)) {
                    Ok(admitted) => admitted,
                    Err(refusal) => {
                        tracing::debug!(listener = options.listener.label(), reason = refusal.label(), "HTTP connection refused");
                        options.metrics.refused(options.listener, refusal);
                        continue;
                    }
                };
                let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router.clone()));
                connections.spawn(run_connection(connection, admitted, options.clone(), stopping.clone()));
            }
        }
    }
    drop(incoming);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

type Connection = http1::Connection<TokioIo<Box<dyn Io>>, TowerToHyperService<Router>>;

async fn run_connection(
    connection: Connection,
    _admitted: Admitted,
    options: ServeOptions,
    mut stopping: watch::Receiver<bool>,
) {
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(options.max_age) => {
            match close(connection.as_mut()).await {
                Some(result) => result,
                None => {
                    options.metrics.aborted(options.listener, Aborted::MaxAge);
                    return;
                }
            }
        }
        // The guard `wait_for` returns is dropped here, not held across the close.
        () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
            let _ = close(connection.as_mut()).await;
            return;
        }
    };
    if let Err(err) = result
        && let Some(aborted) = classify(&err)
    {
        tracing::debug!(listener = options.listener.label(), reason = aborted.label(), %err, "HTTP connection ended by the server");
        options.metrics.aborted(options.listener, aborted);
    }
}

/// Asks the connection to end after its current request; `None` if that took too long.
async fn close(mut connection: Pin<&mut Connection>) -> Option<hyper::Result<()>> {
    connection.as_mut().graceful_shutdown();
    tokio::time::timeout(CLOSE_GRACE, connection).await.ok()
}

/// The server's reasons to end a connection; a client that went away is none.
fn classify(err: &hyper::Error) -> Option<Aborted> {
    if err.is_timeout() {
        Some(Aborted::HeaderTimeout)
    } else if err.is_parse_too_large() {
        Some(Aborted::HeadTooLarge)
    } else if err.is_parse() {
        Some(Aborted::Malformed)
    } else {
        None
    }
}

/// Connection errors (the client left before accept) need nothing; running out of file
/// descriptors does: wait a moment instead of spinning on it.
async fn accept_failed(err: &io::Error) {
    use io::ErrorKind::*;
    if matches!(err.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    tracing::warn!("cannot accept an HTTP connection: {err}; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use prometheus_client::{encoding::text::encode, registry::Registry};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpSocket, TcpStream},
    };

    use super::*;

    struct Running {
        addr: SocketAddr,
        registry: Registry,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Running {
        async fn start(limits: Arc<ConnectionLimits>, header_read_timeout: Duration) -> Self {
            let mut registry = Registry::with_prefix("sockerr");
            let metrics = HttpMetrics::register(&mut registry);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let options = ServeOptions {
                listener: Listener::Scrape,
                limits,
                metrics,
                header_read_timeout,
                max_age: MAX_CONNECTION_AGE,
            };
            let router = Router::new().route("/metrics", get(|| async { "counters\n" }));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(serve(Incoming::Tcp(listener), router, options, async {
                let _ = stopped.await;
            }));
            Self { addr, registry, stop: Some(stop) }
        }

        fn counter(&self, series: &str) -> f64 {
            let mut text = String::new();
            encode(&mut text, &self.registry).unwrap();
            let line = text
                .lines()
                .find(|line| line.starts_with(series))
                .unwrap_or_else(|| panic!("{series}: {text}"));
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.stop.take().map(|stop| stop.send(()));
        }
    }

    async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Reads until the server closes; `Err` if it does not within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
        let mut received = Vec::new();
        tokio::time::timeout(within, async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .map_err(drop)?;
        Ok(received)
    }

    async fn scrape(source: &str, addr: SocketAddr) -> String {
        let mut stream = connect_from(source, addr).await;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let answer = closed_within(&mut stream, Duration::from_secs(5)).await.expect("an answer");
        String::from_utf8_lossy(&answer).into_owned()
    }

    const SLOW: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn slow_heads_and_idle_connections_are_cut_at_the_header_timeout() {
        let server = Running::start(ConnectionLimits::new(8, 8), SLOW).await;
        let mut slowloris = connect_from("127.0.0.1", server.addr).await;
        slowloris.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        let mut idle = connect_from("127.0.0.1", server.addr).await;
        idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let started = std::time::Instant::now();
        assert!(closed_within(&mut slowloris, 10 * SLOW).await.is_ok(), "the slow head was not cut");
        let answered =
            closed_within(&mut idle, 10 * SLOW).await.expect("the idle keep-alive connection stays open");
        assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"), "answered first");
        assert!(started.elapsed() >= SLOW, "cut before the timeout: {:?}", started.elapsed());
        assert!(
            server.counter(
                r#"sockerr_http_connections_aborted_total{listener="scrape",reason="header_timeout"}"#
            ) >= 1.0
        );
    }

    #[tokio::test]
    async fn one_client_cannot_take_every_connection() {
        let server = Running::start(ConnectionLimits::new(8, 2), Duration::from_secs(30)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = connect_from("127.0.0.1", server.addr).await;
            stream.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
            held.push(stream);
        }
        let mut third = connect_from("127.0.0.1", server.addr).await;
        let refused = closed_within(&mut third, Duration::from_secs(5)).await.expect("closed at once");
        assert!(refused.is_empty(), "{refused:?}");
        // Another address still gets in while the first holds its share.
        let answer = scrape("127.0.0.2", server.addr).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("counters\n"), "{answer}");
        assert_eq!(
            server.counter(
                r#"sockerr_http_connections_refused_total{listener="scrape",reason="client_limit"}"#
            ),
            1.0
        );
        assert_eq!(
            server.counter(
                r#"sockerr_http_connections_refused_total{listener="scrape",reason="connection_limit"}"#
            ),
            0.0
        );
        drop(held);
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_with_431() {
        let server = Running::start(ConnectionLimits::new(8, 8), Duration::from_secs(30)).await;
        let mut stream = connect_from("127.0.0.1", server.addr).await;
        let huge =
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(2 * MAX_HEAD_BYTES));
        // The server may close before everything is written: the answer is what counts.
        let _ = stream.write_all(huge.as_bytes()).await;
        let answer = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed");
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            server.counter(
                r#"sockerr_http_connections_aborted_total{listener="scrape",reason="head_too_large"}"#
            ),
            1.0
        );
        let mut many = String::from("GET /metrics HTTP/1.1\r\n");
        for field in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{field}: 1\r\n"));
        }
        many.push_str("\r\n");
        let mut stream = connect_from("127.0.0.1", server.addr).await;
        let _ = stream.write_all(many.as_bytes()).await;
        let answer = closed_within(&mut stream, Duration::from_secs(5)).await.expect("closed");
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}
