//! `sockerr daemon` under test: started on ports the kernel picks (`--listen
//! 127.0.0.1:0 --api-listen 127.0.0.1:0`), found through the addresses it logs, queried
//! over HTTP on loopback: the scrape port, and the socket table's own listener.

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{READY_TIMEOUT, Stopped, Tracer};

/// The daemon's log line naming the scrape port: `... listening on http://127.0.0.1:PORT (...)`.
const LISTEN_MARKER: &str = "HTTP endpoints listening on http://";
/// The line naming the socket table's listener.
const API_LISTEN_MARKER: &str = "socket table listening on http://";
/// Logged once /readyz answers 200 (a moment after `tracing started`).
const DAEMON_READY_MARKER: &str = "/readyz answers 200";
/// Bound on one HTTP request to the daemon.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `sockerr daemon`; derefs to [`Tracer`] for its stdout records. Dropping it
/// kills it.
pub struct Daemon {
    tracer: Tracer,
    addr: SocketAddr,
    api_addr: Option<SocketAddr>,
    agent: ureq::Agent,
}

/// One answer of the daemon.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

impl Daemon {
    /// `sockerr daemon --listen 127.0.0.1:0 --api-listen 127.0.0.1:0 <args>`, once it is ready.
    pub fn start(args: &[&str]) -> Self {
        let all: Vec<&str> =
            ["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"].iter().chain(args).copied().collect();
        Self::start_under(&[], &all, &[])
    }

    /// `<wrapper> sockerr daemon <args>` with `env`, once it is ready: `args` name the
    /// addresses (port 0 is fine).
    pub fn start_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let tracer = Tracer::start_command(wrapper, "daemon", args, env);
        let ready = tracer.process.shared.wait_until(READY_TIMEOUT, |output| {
            output.stderr_closed || output.stderr.iter().any(|line| line.contains(DAEMON_READY_MARKER))
        });
        let stderr = tracer.process.stderr();
        assert!(
            ready && stderr.contains(DAEMON_READY_MARKER),
            "the daemon did not log `{DAEMON_READY_MARKER}`: stderr:\n{stderr}"
        );
        let logged = |marker: &str| -> Option<SocketAddr> {
            stderr
                .lines()
                .find_map(|line| line.split_once(marker))
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok())
        };
        let addr = logged(LISTEN_MARKER)
            .unwrap_or_else(|| panic!("the daemon logged no `{LISTEN_MARKER}ADDR` line: stderr:\n{stderr}"));
        let api_addr = logged(API_LISTEN_MARKER);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            // Loopback only: an http_proxy of the environment must not see these requests.
            .proxy(None)
            .build()
            .new_agent();
        Self { tracer, addr, api_addr, agent }
    }

    /// The scrape port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET `path` where the daemon serves it without a token: /v1/* on the socket table's
    /// listener, the rest on the scrape port.
    pub fn get(&self, path: &str) -> HttpResponse {
        let addr = if path.starts_with("/v1/") {
            self.api_addr
                .unwrap_or_else(|| panic!("GET {path}: the daemon logged no `{API_LISTEN_MARKER}ADDR`"))
        } else {
            self.addr
        };
        self.request(addr, path, None)
    }

    /// GET `path` on the scrape port, with `Authorization: Bearer <token>` if given.
    pub fn get_on_scrape_port(&self, path: &str, token: Option<&str>) -> HttpResponse {
        self.request(self.addr, path, token)
    }

    fn request(&self, addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
        let url = format!("http://{addr}{path}");
        let mut request = self.agent.get(&url);
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
        HttpResponse { status: response.status().as_u16(), content_type, body }
    }

    /// The samples of /metrics: `name{labels}` exactly as exposed, and the value.
    ///
    /// Not a full OpenMetrics parser: sockerr exposes plain counters and an info metric,
    /// whose sample lines are `series value` (no timestamps, no exemplars).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "{response:?}");
        response
            .body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) =
                    line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line}"));
                let value = value.parse().unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
                (series.to_owned(), value)
            })
            .collect()
    }

    /// SIGTERM, then a bounded wait for the exit.
    pub fn terminate(self) -> Stopped {
        self.tracer.stop_with(Signal::SIGTERM)
    }
}

impl Deref for Daemon {
    type Target = Tracer;

    fn deref(&self) -> &Tracer {
        &self.tracer
    }
}
