//! `sockerr daemon`: `trace --output json` on stdout, plus HTTP endpoints for Prometheus,
//! health checks and the live socket table (see README, "Daemon").
//!
//! Two listeners: the scrape port (`--listen`: /metrics, /healthz, /readyz, and /v1/*
//! to permitted bearer tokens with `--expose-api`) and the socket table's own
//! (`--api-listen`: loopback or a unix socket, no token). See docs/design.md, "Threat model".
//!
//! Start-up order: the HTTP addresses are bound first, so a taken port fails in
//! milliseconds, before any program is loaded; /healthz answers while the programs load,
//! /readyz once they are attached. Stop (SIGTERM, SIGINT): the run loop drains the ring,
//! flushes stdout and detaches the programs, then the server gets a short grace period.
//! A panic anywhere ends the process (`fatal`), so there is no half-alive daemon.

pub mod access;
pub mod http;
pub mod http_metrics;
pub mod limits;
pub mod listeners;
pub mod metrics;
pub mod serve;
pub mod sockets;

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinError,
};

use self::{
    access::{
        Authorizer,
        review::{KubeReview, ReviewError},
    },
    http::{ApiAccess, AppState},
    http_metrics::{HttpMetrics, Listener},
    listeners::{ApiListener, ListenError},
    metrics::{BuildInfo, MAX_LABEL_SETS, Metrics, MetricsOptions, MetricsSink},
    serve::{Incoming, ServeOptions},
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
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    ApiAccess(#[from] ReviewError),
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
    let scrape = listeners::bind_scrape(args.listen).await?;
    let api = listeners::bind_api(&args.api_listen).await?;
    let address = scrape.local_addr().map_err(|source| listen_error(args.listen, source))?;
    // The end-to-end tests read the addresses (port 0 picks one) from these lines.
    let exposed = if args.expose_api { "; /v1/* to permitted Kubernetes bearer tokens" } else { "" };
    tracing::info!("HTTP endpoints listening on http://{address} (/metrics, /healthz, /readyz{exposed})");
    let api = match api {
        Some(ApiListener::Tcp(listener)) => {
            let address =
                listener.local_addr().map_or_else(|_| args.api_listen.to_string(), |a| a.to_string());
            tracing::info!(
                "socket table listening on http://{address} (/v1/sockets, no token: loopback only)"
            );
            Some(Incoming::Tcp(listener))
        }
        Some(ApiListener::Unix(listener)) => {
            tracing::info!(
                "socket table listening on {} (/v1/sockets, no token: this user only)",
                args.api_listen
            );
            Some(Incoming::Unix(listener))
        }
        None => None,
    };

    let options = MetricsOptions { dst_labels: args.metrics_dst_labels, max_label_sets: MAX_LABEL_SETS };
    let mut metrics = Metrics::new(options, BuildInfo::current());
    let http_metrics = HttpMetrics::register(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let access = if args.expose_api {
        let authorizer = Arc::new(Authorizer::new(Box::new(KubeReview::infer().await?)));
        Some(ApiAccess { authorizer, metrics: http_metrics.clone() })
    } else {
        None
    };
    let ready = Arc::new(AtomicBool::new(false));
    let (inspect, inspections) = mpsc::channel(INSPECTION_QUEUE);
    let state = AppState { metrics: Arc::clone(&metrics), ready: Arc::clone(&ready), inspections: inspect };
    let (shutdown, shutdown_requested) = watch::channel(false);
    let stopped = move || {
        let mut requested = shutdown_requested.clone();
        async move {
            let _ = requested.wait_for(|stop| *stop).await;
        }
    };
    // Dropped when the server task ends, for whatever reason: that stops the tracing.
    let (alive, server_gone) = oneshot::channel::<()>();
    let scrape_server = serve::serve(
        Incoming::Tcp(scrape),
        http::scrape_router(state.clone(), access),
        ServeOptions::new(Listener::Scrape, http_metrics.clone()),
        stopped(),
    );
    let api_server = api.map(|incoming| {
        serve::serve(
            incoming,
            http::api_router(state),
            ServeOptions::new(Listener::Api, http_metrics),
            stopped(),
        )
    });
    let mut server = tokio::spawn(async move {
        let _alive = alive;
        match api_server {
            Some(api_server) => tokio::try_join!(scrape_server, api_server).map(drop),
            None => scrape_server.await,
        }
    });

    let selection = Selection::from(&args.filters);
    let attributor = crate::k8s::attributor(&args.filters.attribution).await.map_err(TraceError::from)?;
    // Loading takes a while and blocks: off the runtime's workers, so /healthz answers.
    let tracer = tokio::task::spawn_blocking(move || Tracer::start(&selection))
        .await
        .map_err(DaemonError::LoaderTask)??
        .with_attributor(attributor);
    metrics.set_capabilities(&tracer.capabilities());
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
    let _ = shutdown.send(true);
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

/// `local_addr` of a socket just bound fails only in theory; named like a bind error.
fn listen_error(addr: std::net::SocketAddr, source: io::Error) -> DaemonError {
    let fix = "choose another address".to_owned();
    DaemonError::Listen(ListenError::Tcp { addr, what: "the HTTP endpoints", fix, source })
}
