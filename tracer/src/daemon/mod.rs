//! `sockerr daemon`: `trace --output json` on stdout, plus HTTP endpoints for Prometheus,
//! health checks and the live socket table (see README, "Daemon").
//!
//! Start-up order: the HTTP address is bound first, so a taken port fails in
//! milliseconds, before any program is loaded; /healthz answers while the programs load,
//! /readyz once they are attached. Stop (SIGTERM, SIGINT): the run loop drains the ring,
//! flushes stdout and detaches the programs, then the server gets a short grace period.
//! A panic anywhere ends the process (`fatal`), so there is no half-alive daemon.

pub mod http;
pub mod metrics;
pub mod sockets;

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use thiserror::Error;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinError,
};

use self::{
    http::AppState,
    metrics::{BuildInfo, MAX_LABEL_SETS, Metrics, MetricsOptions, MetricsSink},
};
use crate::{
    cli::{DaemonArgs, OutputFormat},
    kernel::loader::Selection,
    output::{OutputOptions, StdoutSink},
    trace::{self, Summary, TraceError, Tracer},
};

/// /v1/sockets requests waiting for the processing task; more wait in the handlers.
const INSPECTION_QUEUE: usize = 16;
/// How long open HTTP connections may delay the exit once tracing stopped.
const SERVER_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr} for the HTTP endpoints: {fix}")]
    Listen {
        addr: SocketAddr,
        fix: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the program loader task failed")]
    LoaderTask(#[source] JoinError),
    #[error("the HTTP server failed")]
    Serve(#[source] io::Error),
    #[error("the HTTP server stopped on its own")]
    ServerEnded,
    #[error("the HTTP server task failed")]
    ServerTask(#[source] JoinError),
}

pub async fn run(args: DaemonArgs) -> Result<Summary, DaemonError> {
    // First: from here on SIGTERM stops the daemon cleanly, even while it loads.
    let signal = trace::stop_signal(None)?;
    let listener =
        TcpListener::bind(args.listen).await.map_err(|source| listen_error(args.listen, source))?;
    let address = listener.local_addr().map_err(|source| listen_error(args.listen, source))?;
    // The end-to-end tests read the address (port 0 picks one) from this line.
    tracing::info!("HTTP endpoints listening on http://{address} (/metrics, /healthz, /readyz, /v1/sockets)");

    let options = MetricsOptions { dst_labels: args.metrics_dst_labels, max_label_sets: MAX_LABEL_SETS };
    let metrics = Arc::new(Metrics::new(options, BuildInfo::current()));
    let ready = Arc::new(AtomicBool::new(false));
    let (inspect, inspections) = mpsc::channel(INSPECTION_QUEUE);
    let state = AppState { metrics: Arc::clone(&metrics), ready: Arc::clone(&ready), inspections: inspect };
    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    // Dropped when the server task ends, for whatever reason: that stops the tracing.
    let (alive, server_gone) = oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        let _alive = alive;
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(async {
                let _ = shutdown_requested.await;
            })
            .await
    });

    let selection = Selection::from(&args.filters);
    let attributor = crate::k8s::attributor(&args.filters.attribution).await.map_err(TraceError::from)?;
    // Loading takes a while and blocks: off the runtime's workers, so /healthz answers.
    let tracer = tokio::task::spawn_blocking(move || Tracer::start(&selection))
        .await
        .map_err(DaemonError::LoaderTask)??
        .with_attributor(attributor);
    ready.store(true, Ordering::Release);
    // After the store: whoever reads this line (the end-to-end tests) finds /readyz at 200.
    tracing::info!("ready: /readyz answers 200");

    let stop = async move {
        tokio::select! {
            () = signal => {}
            _ = server_gone => tracing::error!("the HTTP server stopped: stopping"),
        }
    };
    let output = OutputOptions {
        format: OutputFormat::Json,
        fold: Duration::ZERO,
        errnos: args.filters.errnos.clone(),
        text_successes: false,
    };
    let mut sinks = (MetricsSink(metrics), StdoutSink::new(&output));
    let traced = tracer.run_until(stop, &mut sinks, Some(inspections)).await;
    ready.store(false, Ordering::Release);

    let server_ended_first = server.is_finished();
    let _ = shutdown.send(());
    let served = match tokio::time::timeout(SERVER_GRACE, &mut server).await {
        Ok(joined) => joined,
        Err(_) => {
            tracing::info!("closing HTTP connections still open after {} ms", SERVER_GRACE.as_millis());
            server.abort();
            Ok(Ok(()))
        }
    };
    let summary = traced?;
    match served {
        Ok(Ok(())) if !server_ended_first => Ok(summary),
        Ok(Ok(())) => Err(DaemonError::ServerEnded),
        Ok(Err(err)) => Err(DaemonError::Serve(err)),
        Err(join) => Err(DaemonError::ServerTask(join)),
    }
}

fn listen_error(addr: SocketAddr, source: io::Error) -> DaemonError {
    let fix = match source.kind() {
        io::ErrorKind::AddrInUse => {
            "the port is taken (another sockerr daemon?): stop that process or choose a free port with --listen ADDR"
        }
        io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that address: choose one it has with --listen ADDR (default 127.0.0.1:9966)"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need CAP_NET_BIND_SERVICE: choose a higher port with --listen ADDR"
        }
        _ => "choose another address with --listen ADDR",
    };
    DaemonError::Listen { addr, fix, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_names_the_address_and_the_fix() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = TcpListener::bind(addr).await.map_err(|source| listen_error(addr, source)).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(&format!("cannot listen on {addr} for the HTTP endpoints")), "{message}");
        assert!(message.contains("--listen ADDR"), "{message}");
        assert!(
            matches!(err, DaemonError::Listen { ref source, .. } if source.kind() == io::ErrorKind::AddrInUse)
        );
    }
}
