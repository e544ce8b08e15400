//! The daemon's HTTP endpoints (axum): /metrics, /healthz, /readyz on the scrape port;
//! /v1/sockets on the socket table's own listener, and on the scrape port only behind the
//! bearer token check of `--expose-api` ([`access`](super::access)).
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
    extract::{Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{mpsc, oneshot};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use super::{
    access::{self, Authorizer, Decision, Outcome},
    http_metrics::HttpMetrics,
    metrics::{self, Metrics},
    sockets::{self, Selector},
};
use crate::trace::Inspection;

/// How long /v1/sockets waits for the processing task, which answers between two
/// events: at worst after one holder lookup.
const INSPECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Every endpoint is a GET: a body is never read, and a large one is refused (413).
pub const MAX_BODY_BYTES: usize = 1024;
/// Bound on any handler (the token check and the inspection have tighter bounds of their
/// own): 503 beyond.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The ClusterRole of deploy/kubernetes that grants reading the socket table.
const READER_ROLE: &str = "sockerr-socket-reader";

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// Set once the programs are attached; cleared when the daemon stops.
    pub ready: Arc<AtomicBool>,
    pub inspections: mpsc::Sender<Inspection>,
}

/// What `--expose-api` needs on the scrape port.
#[derive(Clone)]
pub struct ApiAccess {
    pub authorizer: Arc<Authorizer>,
    pub metrics: HttpMetrics,
}

/// The scrape port: metrics and probes for anyone who reaches it; the socket table only
/// with `access`, to permitted bearer tokens.
pub fn scrape_router(state: AppState, access: Option<ApiAccess>) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let router = match access {
        Some(access) => router
            .merge(api_routes().route_layer(middleware::from_fn_with_state(access, require_permitted_token))),
        None => router.route("/v1/{*rest}", get(not_on_this_port)),
    };
    hardened(router.with_state(state))
}

/// The socket table's own listener (loopback or a unix socket): no token asked.
pub fn api_router(state: AppState) -> Router {
    hardened(api_routes().with_state(state))
}

fn api_routes() -> Router<AppState> {
    Router::new().route("/v1/sockets", get(sockets))
}

/// Bounds on what a request may cost: its body and its handler's time.
fn hardened(router: Router) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
}

async fn not_on_this_port() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "the socket table is not served on this port: it is on the daemon's --api-listen address \
         (loopback or a unix socket); --expose-api serves it here to permitted Kubernetes bearer tokens"
            .into(),
    )
}

/// The check of `--expose-api`, before any /v1 handler runs (a caller without permission
/// learns nothing, not even whether the query was well-formed).
async fn require_permitted_token(State(access): State<ApiAccess>, request: Request, next: Next) -> Response {
    let verb = access::verb(request.method());
    let path = request.uri().path().to_owned();
    let decision = access.authorizer.decide(request.headers(), &path, verb).await;
    let outcome = decision.as_ref().map_or(Outcome::ReviewFailed, Decision::outcome);
    access.metrics.api_access(outcome);
    match decision {
        Ok(Decision::Allowed { user }) => {
            tracing::debug!(user, path, "socket table read with a permitted token");
            next.run(request).await
        }
        Ok(Decision::NoToken) => unauthorized(format!(
            "{path} needs a Kubernetes bearer token (Authorization: Bearer <token>, e.g. from `kubectl create \
             token NAME`) whose user may {verb} {path}"
        )),
        Ok(Decision::Unauthenticated { error }) => unauthorized(format!(
            "the Kubernetes API server does not accept this bearer token{}",
            error.map(|e| format!(" ({e})")).unwrap_or_default()
        )),
        Ok(Decision::Forbidden { user, reason }) => {
            tracing::debug!(user, path, "socket table refused to a token without permission");
            let reason = reason.map(|r| format!(" ({r})")).unwrap_or_default();
            error(
                StatusCode::FORBIDDEN,
                format!(
                    "user {user} may not {verb} {path}{reason}: bind it to a ClusterRole with nonResourceURLs \
                     [\"{path}\"] and verbs [\"{verb}\"] (deploy/kubernetes has one: {READER_ROLE})"
                ),
            )
        }
        Err(err) => {
            let message = error_chain(&err);
            tracing::warn!("/v1 on the scrape port: {message}");
            error(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

fn unauthorized(message: String) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sockerr\""));
    response
}

/// `err: its source: ...`, as the daemon prints errors.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
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
    use k8s_openapi::api::{
        authentication::v1::{TokenReviewStatus, UserInfo},
        authorization::v1::{SubjectAccessReviewSpec, SubjectAccessReviewStatus},
    };
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

    /// GET `uri` where the daemon serves it without a token: /v1 on the socket table's
    /// listener, the rest on the scrape port.
    async fn get(state: AppState, uri: &str) -> (StatusCode, Option<String>, String) {
        let router = if uri.starts_with("/v1") { api_router(state) } else { scrape_router(state, None) };
        send(router, Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn send(router: Router, request: Request<Body>) -> (StatusCode, Option<String>, String) {
        let response = router.oneshot(request).await.unwrap();
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

    /// Token `permitted` may get /v1/sockets, `unpermitted` is a known user who may not;
    /// any other token is unknown.
    struct OneReader;

    impl access::review::Review for OneReader {
        fn token_review(
            &self,
            token: String,
        ) -> futures::future::BoxFuture<'_, Result<TokenReviewStatus, access::review::ReviewError>> {
            Box::pin(async move {
                let known = ["permitted", "unpermitted"].contains(&token.as_str());
                Ok(TokenReviewStatus {
                    authenticated: Some(known),
                    user: known
                        .then(|| UserInfo { username: Some(format!("user-{token}")), ..Default::default() }),
                    ..Default::default()
                })
            })
        }

        fn access_review(
            &self,
            spec: SubjectAccessReviewSpec,
        ) -> futures::future::BoxFuture<'_, Result<SubjectAccessReviewStatus, access::review::ReviewError>>
        {
            Box::pin(async move {
                Ok(SubjectAccessReviewStatus {
                    allowed: spec.user.as_deref() == Some("user-permitted"),
                    ..Default::default()
                })
            })
        }
    }

    fn exposed(state: AppState) -> (Router, HttpMetrics) {
        let metrics = HttpMetrics::register(&mut prometheus_client::registry::Registry::default());
        let access = ApiAccess {
            authorizer: Arc::new(Authorizer::new(Box::new(OneReader))),
            metrics: metrics.clone(),
        };
        (scrape_router(state, Some(access)), metrics)
    }

    fn with_token(uri: &str, token: Option<&str>) -> Request<Body> {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn the_scrape_port_keeps_the_socket_table_unless_exposed() {
        let (state, receiver) = state(true);
        serve_inspections(receiver);
        let (status, _, body) = get(state.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let closed = scrape_router(state.clone(), None);
        let (status, _, body) = send(closed, with_token("/v1/sockets?pid=401", Some("permitted"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("--api-listen") && body.contains("--expose-api"), "{body}");
        assert!(!body.contains("envoy"), "{body}");
    }

    #[tokio::test]
    async fn exposed_socket_table_needs_a_permitted_token() {
        let (state, receiver) = state(true);
        serve_inspections(receiver);
        let (router, _metrics) = exposed(state);
        let (status, _, body) = send(router.clone(), with_token("/v1/sockets?pid=401", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("Authorization: Bearer") && !body.contains("envoy"), "{body}");
        let (status, _, body) = send(router.clone(), with_token("/v1/sockets?pid=401", Some("forged"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, _, body) =
            send(router.clone(), with_token("/v1/sockets?pid=401", Some("unpermitted"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body.contains("user-unpermitted may not get /v1/sockets") && body.contains(READER_ROLE),
            "{body}"
        );
        // Not even a malformed query is answered before the check.
        let (status, _, _) = send(router.clone(), with_token("/v1/sockets?pid=abc", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, body) =
            send(router.clone(), with_token("/v1/sockets?pid=401", Some("permitted"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("envoy"), "{body}");
        // Metrics and probes ask for nothing.
        let (status, _, _) = send(router, with_token("/metrics", None)).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn unauthorized_answers_say_how_to_authenticate() {
        let (state, _receiver) = state(true);
        let (router, _metrics) = exposed(state);
        let response = router.oneshot(with_token("/v1/sockets", None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer realm=\"sockerr\"");
    }

    #[tokio::test]
    async fn a_request_body_is_refused() {
        let (state, _receiver) = state(true);
        let request = Request::get("/metrics")
            .header(header::CONTENT_LENGTH, MAX_BODY_BYTES + 1)
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
            .unwrap();
        let (status, _, _) = send(scrape_router(state, None), request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
