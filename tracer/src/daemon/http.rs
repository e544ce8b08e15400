//! The daemon's HTTP endpoints (axum): /metrics, /healthz, /readyz, /v1/sockets.
//!
//! No handler holds a lock across an await: /metrics encodes the counters (atomics and
//! short read locks inside prometheus-client), /v1/sockets asks the processing task with
//! an [`Inspection`] and awaits the answer on a oneshot channel.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    metrics::{self, Metrics},
    sockets::{self, Selector},
};
use crate::trace::Inspection;

/// How long /v1/sockets waits for the processing task, which answers between two
/// events: at worst after one holder lookup.
const INSPECTION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// Set once the programs are attached; cleared when the daemon stops.
    pub ready: Arc<AtomicBool>,
    pub inspections: mpsc::Sender<Inspection>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/sockets", get(sockets))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.encode()).into_response()
}

/// The process serves: a panic anywhere would have ended it (see `fatal`).
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready: programs attached\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: programs not attached (loading, or stopping)\n")
    }
}

async fn sockets(State(state): State<AppState>, Query(pairs): Query<Vec<(String, String)>>) -> Response {
    let selector = match Selector::from_query(&pairs) {
        Ok(selector) => selector,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if !state.ready.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not tracing yet (or any more)".into());
    }
    let (reply, answer) = oneshot::channel();
    let inspection: Inspection = Box::new(move |processor| {
        // The client may have given up: nobody to answer then.
        let _ = reply.send(sockets::view(processor, &selector));
    });
    if state.inspections.send(inspection).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the tracer has stopped".into());
    }
    match tokio::time::timeout(INSPECTION_TIMEOUT, answer).await {
        Ok(Ok(view)) => Json(view).into_response(),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "the tracer stopped before answering".into()),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the tracer did not answer within {} s", INSPECTION_TIMEOUT.as_secs()),
        ),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        clock::Clock,
        daemon::metrics::{BuildInfo, MAX_LABEL_SETS, MetricsOptions},
        event::{Header, KernelEvent, Payload},
        table::SocketTable,
        testing::{FakeState, addr, cilium_incident},
    };

    fn state(ready: bool) -> (AppState, mpsc::Receiver<Inspection>) {
        let build = BuildInfo { version: "0.1.0".into(), git_sha: "unknown".into(), kernel: "6.18.0".into() };
        let metrics =
            Metrics::new(MetricsOptions { dst_labels: false, max_label_sets: MAX_LABEL_SETS }, build);
        metrics.observe(&cilium_incident());
        let (inspections, receiver) = mpsc::channel(4);
        let state =
            AppState { metrics: Arc::new(metrics), ready: Arc::new(AtomicBool::new(ready)), inspections };
        (state, receiver)
    }

    /// Answers inspections like the run loop does, until the senders are gone, from a
    /// table with one socket of pid 401 ("envoy").
    fn serve_inspections(mut receiver: mpsc::Receiver<Inspection>) {
        let mut table = SocketTable::new(8);
        let bind = Payload::Bind {
            fd: 3,
            addr: Some(addr("127.0.0.1:8080")),
            opts: Default::default(),
            origin: None,
        };
        let header = Header { ts_ns: 1, pid: 401, tid: 401, cgroup_id: 1, thread: "envoy".into(), errno: 0 };
        table.apply(&KernelEvent { header, payload: bind });
        let mut state = FakeState { table, clock: Clock::from_offset_ns(0), names: vec![(401, "envoy")] };
        tokio::spawn(async move {
            while let Some(inspect) = receiver.recv().await {
                inspect(&mut state);
            }
        });
    }

    async fn get(state: AppState, uri: &str) -> (StatusCode, Option<String>, String) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let (state, _receiver) = state(true);
        let (status, content_type, body) = get(state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(metrics::CONTENT_TYPE));
        assert!(body.contains(r#"sockerr_connect_errors_total{errno="EADDRNOTAVAIL",cause="tuple_in_use",comm="envoy",pod_namespace=""} 1"#), "{body}");
    }

    #[tokio::test]
    async fn health_always_readiness_once_attached() {
        let (loading, _receiver) = state(false);
        assert_eq!(get(loading.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(loading.clone(), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        loading.ready.store(true, Ordering::Release);
        let (status, _, body) = get(loading, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready: programs attached\n"));
    }

    #[tokio::test]
    async fn sockets_are_answered_by_the_processing_task() {
        let (state, receiver) = state(true);
        serve_inspections(receiver);
        let (status, content_type, body) = get(state.clone(), "/v1/sockets?comm=envoy").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let view: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(view["processes"][0]["pid"], 401);
        assert_eq!(view["processes"][0]["sockets"][0]["bound"], "127.0.0.1:8080");
        let (status, _, body) = get(state, "/v1/sockets?pid=402").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"processes":[]}"#));
    }

    #[tokio::test]
    async fn bad_socket_queries_and_a_stopped_tracer_are_errors() {
        let (state, receiver) = state(true);
        let (status, _, body) = get(state.clone(), "/v1/sockets?pid=abc").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("is not a process id"), "{body}");
        drop(receiver);
        let (status, _, body) = get(state.clone(), "/v1/sockets?pid=401").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("the tracer has stopped"), "{body}");
        state.ready.store(false, Ordering::Release);
        assert_eq!(get(state, "/v1/sockets?pid=401").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
