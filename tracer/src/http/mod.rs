//! HTTP/1.x in the bytes `--http-peek` kept: what kind of message they start, and what
//! a strict proxy (Envoy, Istio's sidecar) would reject in it.

mod anomaly;

pub use anomaly::{Analysis, Anomaly, AnomalyKind, MessageKind, analyze};
