//! HTTP/1.x in the bytes `--http-peek` kept: what kind of message they start, and what
//! a strict proxy (Envoy, Istio's sidecar) would reject in it.

mod anomaly;

#[cfg(test)]
pub(crate) use anomaly::AnomalyKind;
pub(crate) use anomaly::{Anomaly, MessageKind, analyze};
