//! `sockerr daemon` under test: started on a port the kernel picks (`--listen
//! 127.0.0.1:0`), found through the address it logs, queried over HTTP on loopback.

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{READY_TIMEOUT, Stopped, Tracer};

/// The daemon's log line naming its address: `... listening on http://127.0.0.1:PORT (...)`.
const LISTEN_MARKER: &str = "listening on http://";
/// Logged once /readyz answers 200 (a moment after `tracing started`).
const DAEMON_READY_MARKER: &str = "/readyz answers 200";
/// Bound on one HTTP request to the daemon.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `sockerr daemon`; derefs to [`Tracer`] for its stdout records. Dropping it
/// kills it.
pub struct Daemon {
    tracer: Tracer,
    addr: SocketAddr,
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
    /// `sockerr daemon --listen 127.0.0.1:0 <args>`, once it is ready.
    pub fn start(args: &[&str]) -> Self {
        let all: Vec<&str> = ["--listen", "127.0.0.1:0"].iter().chain(args).copied().collect();
        let tracer = Tracer::start_command("daemon", &all);
        let ready = tracer.process.shared.wait_until(READY_TIMEOUT, |output| {
            output.stderr_closed || output.stderr.iter().any(|line| line.contains(DAEMON_READY_MARKER))
        });
        let stderr = tracer.process.stderr();
        assert!(
            ready && stderr.contains(DAEMON_READY_MARKER),
            "the daemon did not log `{DAEMON_READY_MARKER}`: stderr:\n{stderr}"
        );
        let addr = stderr
            .lines()
            .find_map(|line| line.split_once(LISTEN_MARKER))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("the daemon logged no `{LISTEN_MARKER}ADDR` line: stderr:\n{stderr}"));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            // Loopback only: an http_proxy of the environment must not see these requests.
            .proxy(None)
            .build()
            .new_agent();
        Self { tracer, addr, agent }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET `path` (e.g. "/metrics").
    pub fn get(&self, path: &str) -> HttpResponse {
        let url = format!("http://{}{path}", self.addr);
        let mut response = self.agent.get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
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
