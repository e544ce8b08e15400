//! Counters of what the HTTP side turned away: connections refused or cut short, and
//! requests for /v1/* on the scrape port by the access decision. Every label set exists
//! from the start, so a 0 is a count, not a missing series.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{access::Outcome, limits::Refusal};

type Labels = Vec<(&'static str, &'static str)>;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Scrape,
    Api,
}

impl Listener {
    pub fn label(self) -> &'static str {
        match self {
            Self::Scrape => "scrape",
            Self::Api => "api",
        }
    }
}

/// Why the server ended a connection it had admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aborted {
    /// The request head did not arrive within the header read timeout (also: an idle
    /// keep-alive connection that sent no new request).
    HeaderTimeout,
    /// The request head was larger than the read buffer (answered 431).
    HeadTooLarge,
    /// The bytes were no HTTP/1 request.
    Malformed,
    /// Still open at the connection's maximum age, and not done within the grace period.
    MaxAge,
}

impl Aborted {
    pub const ALL: [Aborted; 4] = [Self::HeaderTimeout, Self::HeadTooLarge, Self::Malformed, Self::MaxAge];

    pub fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::HeadTooLarge => "head_too_large",
            Self::Malformed => "malformed",
            Self::MaxAge => "max_age",
        }
    }
}

#[derive(Clone)]
pub struct HttpMetrics {
    refused: Family<Labels, Counter>,
    aborted: Family<Labels, Counter>,
    api_access: Family<Labels, Counter>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics =
            Self { refused: Family::default(), aborted: Family::default(), api_access: Family::default() };
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once, by listener and reason (connection or per-client limit, unix socket peer of another user)",
            metrics.refused.clone(),
        );
        registry.register(
            "http_connections_aborted",
            "HTTP connections the server ended, by listener and reason (header read timeout, oversized head, malformed request, maximum age)",
            metrics.aborted.clone(),
        );
        registry.register(
            "http_api_access",
            "Requests for /v1/* on the scrape port by outcome of the bearer token check (allowed, no_token, unauthenticated, forbidden, review_failed)",
            metrics.api_access.clone(),
        );
        for listener in [Listener::Scrape, Listener::Api] {
            for refusal in Refusal::ALL {
                let _ = metrics.refused.get_or_create(&Self::labels(listener, refusal.label()));
            }
            for aborted in Aborted::ALL {
                let _ = metrics.aborted.get_or_create(&Self::labels(listener, aborted.label()));
            }
        }
        for outcome in Outcome::ALL {
            let _ = metrics.api_access.get_or_create(&vec![("outcome", outcome.label())]);
        }
        metrics
    }

    fn labels(listener: Listener, reason: &'static str) -> Labels {
        vec![("listener", listener.label()), ("reason", reason)]
    }

    pub fn refused(&self, listener: Listener, refusal: Refusal) {
        self.refused.get_or_create(&Self::labels(listener, refusal.label())).inc();
    }

    pub fn aborted(&self, listener: Listener, aborted: Aborted) {
        self.aborted.get_or_create(&Self::labels(listener, aborted.label())).inc();
    }

    pub fn api_access(&self, outcome: Outcome) {
        self.api_access.get_or_create(&vec![("outcome", outcome.label())]).inc();
    }
}
