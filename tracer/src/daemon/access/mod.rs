//! Who may read /v1/* on the scrape port (`--expose-api`), decided as kube-rbac-proxy
//! does: the request's bearer token is authenticated by the API server (TokenReview), and
//! the user it names must be allowed the request's verb on its path as a non-resource URL
//! (SubjectAccessReview), i.e. be bound to a rule such as
//! `nonResourceURLs: ["/v1/sockets"], verbs: ["get"]`.
//!
//! Decisions (not errors) are cached for [`DECISION_TTL`], keyed by token, path and verb,
//! in a bounded map: a revoked binding or a deleted service account takes effect within
//! that time. Reviews run at most [`MAX_CONCURRENT_REVIEWS`] at once and each within
//! [`REVIEW_TIMEOUT`], so a flood of made-up tokens costs the API server a bounded rate.

pub mod review;

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, Method, header};
use k8s_openapi::api::{
    authentication::v1::{TokenReviewStatus, UserInfo},
    authorization::v1::{NonResourceAttributes, SubjectAccessReviewSpec, SubjectAccessReviewStatus},
};
use thiserror::Error;
use tokio::sync::Semaphore;

use self::review::{Review, ReviewError};
use crate::ttl_cache::TtlCache;

pub const DECISION_TTL: Duration = Duration::from_secs(10);
/// Decisions remembered at most (tokens are a few KiB at most: a few MiB in all).
pub const MAX_CACHED_DECISIONS: usize = 1024;
pub const MAX_CONCURRENT_REVIEWS: usize = 4;
/// Bound on waiting for a review slot plus both reviews.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// What the check said about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        user: String,
    },
    /// No `Authorization: Bearer <token>` header.
    NoToken,
    /// The API server does not accept the token (unknown, expired, another audience).
    Unauthenticated {
        error: Option<String>,
    },
    /// The token's user may not do this.
    Forbidden {
        user: String,
        reason: Option<String>,
    },
}

/// The outcome of a request for the `sockerr_http_api_access_total` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    NoToken,
    Unauthenticated,
    Forbidden,
    ReviewFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Self::Allowed, Self::NoToken, Self::Unauthenticated, Self::Forbidden, Self::ReviewFailed];

    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::NoToken => "no_token",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::ReviewFailed => "review_failed",
        }
    }
}

impl Decision {
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Allowed { .. } => Outcome::Allowed,
            Self::NoToken => Outcome::NoToken,
            Self::Unauthenticated { .. } => Outcome::Unauthenticated,
            Self::Forbidden { .. } => Outcome::Forbidden,
        }
    }
}

#[derive(Debug, Error)]
pub enum AccessError {
    #[error("cannot check the bearer token")]
    Review(#[source] ReviewError),
    #[error("the API server did not review the bearer token within {} ms", after.as_millis())]
    TimedOut { after: Duration },
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive,
/// RFC 9110 section 11.1); `None` for any other or no Authorization header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The verb of a request, as the API server's authorizer names HTTP methods for
/// non-resource URLs (and kube-rbac-proxy passes them on).
pub fn verb(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// The user a TokenReview vouches for, or why it does not.
pub fn authenticated_user(status: &TokenReviewStatus) -> Result<UserInfo, Decision> {
    let user =
        status.user.as_ref().filter(|user| user.username.as_deref().is_some_and(|name| !name.is_empty()));
    match (status.authenticated, user) {
        (Some(true), Some(user)) => Ok(user.clone()),
        _ => Err(Decision::Unauthenticated { error: status.error.clone().filter(|e| !e.is_empty()) }),
    }
}

/// The SubjectAccessReview of `user` doing `verb` on `path`: every attribute the
/// TokenReview gave (groups, uid, extra) goes along, as RBAC may grant through any of them.
pub fn access_review_spec(user: &UserInfo, path: &str, verb: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: user.username.clone(),
        groups: user.groups.clone(),
        uid: user.uid.clone(),
        extra: user.extra.clone(),
        non_resource_attributes: Some(NonResourceAttributes {
            path: Some(path.to_owned()),
            verb: Some(verb.to_owned()),
        }),
        resource_attributes: None,
    }
}

/// Allowed only when the review says allowed and not denied.
pub fn authorized(user: &UserInfo, status: &SubjectAccessReviewStatus) -> Decision {
    let name = user.username.clone().unwrap_or_default();
    if status.allowed && status.denied != Some(true) {
        return Decision::Allowed { user: name };
    }
    let reason = [status.reason.as_deref(), status.evaluation_error.as_deref()]
        .into_iter()
        .flatten()
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Decision::Forbidden { user: name, reason: (!reason.is_empty()).then_some(reason) }
}

type Key = (String, String, &'static str);

pub struct Authorizer {
    review: Box<dyn Review>,
    decisions: Mutex<TtlCache<Key, Decision>>,
    reviews: Semaphore,
    timeout: Duration,
}

impl Authorizer {
    pub fn new(review: Box<dyn Review>) -> Self {
        Self {
            review,
            decisions: Mutex::new(TtlCache::new(DECISION_TTL, MAX_CACHED_DECISIONS)),
            reviews: Semaphore::new(MAX_CONCURRENT_REVIEWS),
            timeout: REVIEW_TIMEOUT,
        }
    }

    /// Whether the request with these headers may `verb` on `path`.
    pub async fn decide(
        &self,
        headers: &HeaderMap,
        path: &str,
        verb: &'static str,
    ) -> Result<Decision, AccessError> {
        let Some(token) = bearer_token(headers) else {
            return Ok(Decision::NoToken);
        };
        let key = (token.to_owned(), path.to_owned(), verb);
        if let Some(decision) = self.cache().get(&key, Instant::now()) {
            return Ok(decision);
        }
        let decision = tokio::time::timeout(self.timeout, self.review(token, path, verb))
            .await
            .map_err(|_| AccessError::TimedOut { after: self.timeout })??;
        self.cache().insert(key, decision.clone(), Instant::now());
        Ok(decision)
    }

    async fn review(&self, token: &str, path: &str, verb: &'static str) -> Result<Decision, AccessError> {
        // Never closed (acquiring fails only on a closed semaphore): waits, within the timeout.
        let _slot =
            self.reviews.acquire().await.map_err(|_| AccessError::TimedOut { after: self.timeout })?;
        let status = self.review.token_review(token.to_owned()).await.map_err(AccessError::Review)?;
        let user = match authenticated_user(&status) {
            Ok(user) => user,
            Err(decision) => return Ok(decision),
        };
        let spec = access_review_spec(&user, path, verb);
        let status = self.review.access_review(spec).await.map_err(AccessError::Review)?;
        Ok(authorized(&user, &status))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TtlCache<Key, Decision>> {
        self.decisions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use futures::future::BoxFuture;

    use super::*;

    /// Tokens `good` (user reader, group monitoring) and `other` (user stranger); RBAC
    /// allows the group monitoring `get` on /v1/sockets only. `down` makes every review
    /// fail; `stall` makes them hang.
    #[derive(Default)]
    struct FakeReview {
        token_reviews: Arc<AtomicUsize>,
        access_reviews: Arc<Mutex<Vec<SubjectAccessReviewSpec>>>,
        down: bool,
        stall: bool,
    }

    impl Review for FakeReview {
        fn token_review(&self, token: String) -> BoxFuture<'_, Result<TokenReviewStatus, ReviewError>> {
            Box::pin(async move {
                self.token_reviews.fetch_add(1, Ordering::SeqCst);
                if self.stall {
                    std::future::pending::<()>().await;
                }
                if self.down {
                    return Err(ReviewError::NoStatus { kind: "TokenReview" });
                }
                let user = |name: &str, group: &str| UserInfo {
                    username: Some(name.into()),
                    groups: Some(vec![group.into()]),
                    uid: Some(format!("uid-{name}")),
                    extra: Some(BTreeMap::from([("scopes".into(), vec!["a".into()])])),
                };
                Ok(match token.as_str() {
                    "good" => TokenReviewStatus {
                        authenticated: Some(true),
                        user: Some(user("reader", "monitoring")),
                        ..Default::default()
                    },
                    "other" => TokenReviewStatus {
                        authenticated: Some(true),
                        user: Some(user("stranger", "nobody")),
                        ..Default::default()
                    },
                    _ => TokenReviewStatus {
                        authenticated: Some(false),
                        error: Some("token not found".into()),
                        ..Default::default()
                    },
                })
            })
        }

        fn access_review(
            &self,
            spec: SubjectAccessReviewSpec,
        ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, ReviewError>> {
            Box::pin(async move {
                let attributes = spec.non_resource_attributes.clone().unwrap_or_default();
                let allowed = spec.groups.as_deref().unwrap_or_default().contains(&"monitoring".to_owned())
                    && attributes.path.as_deref() == Some("/v1/sockets")
                    && attributes.verb.as_deref() == Some("get");
                self.access_reviews.lock().unwrap().push(spec);
                Ok(SubjectAccessReviewStatus {
                    allowed,
                    reason: (!allowed).then(|| "no RBAC policy matched".to_owned()),
                    ..Default::default()
                })
            })
        }
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_bearer_tokens_count() {
        assert_eq!(bearer_token(&headers(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(&headers(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer_token(&headers(Some("Basic dXNlcjpwYXNz"))), None);
        assert_eq!(bearer_token(&headers(Some("Bearer "))), None);
        assert_eq!(bearer_token(&headers(Some("Bearer"))), None);
        assert_eq!(bearer_token(&headers(None)), None);
    }

    #[test]
    fn verbs_follow_the_api_servers_names() {
        assert_eq!(verb(&Method::GET), "get");
        assert_eq!(verb(&Method::HEAD), "get");
        assert_eq!(verb(&Method::POST), "create");
        assert_eq!(verb(&Method::DELETE), "delete");
    }

    #[test]
    fn a_token_review_must_say_authenticated_and_name_a_user() {
        let named = UserInfo { username: Some("reader".into()), ..Default::default() };
        let ok =
            TokenReviewStatus { authenticated: Some(true), user: Some(named.clone()), ..Default::default() };
        assert_eq!(authenticated_user(&ok), Ok(named.clone()));
        let refused = TokenReviewStatus {
            authenticated: Some(false),
            user: Some(named),
            error: Some("expired".into()),
            ..Default::default()
        };
        assert_eq!(
            authenticated_user(&refused),
            Err(Decision::Unauthenticated { error: Some("expired".into()) })
        );
        // Authenticated but nameless, or silent: no user to authorize.
        let nameless = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo { username: Some(String::new()), ..Default::default() }),
            ..Default::default()
        };
        assert!(authenticated_user(&nameless).is_err());
        assert!(authenticated_user(&TokenReviewStatus::default()).is_err());
    }

    #[test]
    fn allowed_needs_allowed_and_not_denied() {
        let user = UserInfo { username: Some("reader".into()), ..Default::default() };
        let allowed = SubjectAccessReviewStatus { allowed: true, ..Default::default() };
        assert_eq!(authorized(&user, &allowed), Decision::Allowed { user: "reader".into() });
        let contradictory =
            SubjectAccessReviewStatus { allowed: true, denied: Some(true), ..Default::default() };
        assert!(matches!(authorized(&user, &contradictory), Decision::Forbidden { .. }));
        let refused = SubjectAccessReviewStatus {
            allowed: false,
            reason: Some("no rule".into()),
            evaluation_error: Some("webhook down".into()),
            ..Default::default()
        };
        assert_eq!(
            authorized(&user, &refused),
            Decision::Forbidden { user: "reader".into(), reason: Some("no rule; webhook down".into()) }
        );
    }

    #[tokio::test]
    async fn tokens_are_reviewed_then_authorized_for_the_path_and_verb() {
        let fake = FakeReview::default();
        let sent = Arc::clone(&fake.access_reviews);
        let authorizer = Authorizer::new(Box::new(fake));
        let decide = |auth: Option<&'static str>, path: &'static str| {
            let authorizer = &authorizer;
            async move { authorizer.decide(&headers(auth), path, "get").await.unwrap() }
        };
        assert_eq!(
            decide(Some("Bearer good"), "/v1/sockets").await,
            Decision::Allowed { user: "reader".into() }
        );
        assert_eq!(
            decide(Some("Bearer other"), "/v1/sockets").await,
            Decision::Forbidden { user: "stranger".into(), reason: Some("no RBAC policy matched".into()) }
        );
        assert_eq!(
            decide(Some("Bearer made-up"), "/v1/sockets").await,
            Decision::Unauthenticated { error: Some("token not found".into()) }
        );
        assert_eq!(decide(None, "/v1/sockets").await, Decision::NoToken);
        // The permission is per path: a permitted user is not allowed everything.
        assert!(matches!(decide(Some("Bearer good"), "/v1/other").await, Decision::Forbidden { .. }));

        let sent = sent.lock().unwrap();
        let first = &sent[0];
        assert_eq!(first.user.as_deref(), Some("reader"));
        assert_eq!(first.groups.as_deref(), Some(&["monitoring".to_owned()][..]));
        assert_eq!(first.uid.as_deref(), Some("uid-reader"));
        assert!(first.extra.as_ref().is_some_and(|extra| extra.contains_key("scopes")));
        let attributes = first.non_resource_attributes.as_ref().unwrap();
        assert_eq!(
            (attributes.path.as_deref(), attributes.verb.as_deref()),
            (Some("/v1/sockets"), Some("get"))
        );
        assert!(first.resource_attributes.is_none());
    }

    #[tokio::test]
    async fn decisions_are_cached_briefly_and_errors_not_at_all() {
        let fake = FakeReview::default();
        let reviews = Arc::clone(&fake.token_reviews);
        let authorizer = Authorizer::new(Box::new(fake));
        for _ in 0..3 {
            authorizer.decide(&headers(Some("Bearer good")), "/v1/sockets", "get").await.unwrap();
            authorizer.decide(&headers(Some("Bearer made-up")), "/v1/sockets", "get").await.unwrap();
        }
        assert_eq!(reviews.load(Ordering::SeqCst), 2, "one review per token within the TTL");
        // Expired entries are reviewed again.
        let later = Instant::now() + DECISION_TTL;
        let key = ("good".to_owned(), "/v1/sockets".to_owned(), "get");
        assert_eq!(authorizer.cache().get(&key, later), None);

        let down = FakeReview { down: true, ..Default::default() };
        let reviews = Arc::clone(&down.token_reviews);
        let authorizer = Authorizer::new(Box::new(down));
        for _ in 0..2 {
            let err =
                authorizer.decide(&headers(Some("Bearer good")), "/v1/sockets", "get").await.unwrap_err();
            assert!(matches!(err, AccessError::Review(_)), "{err}");
        }
        assert_eq!(reviews.load(Ordering::SeqCst), 2, "a failed review is not remembered");
    }

    #[tokio::test]
    async fn a_hanging_api_server_times_out() {
        let mut authorizer = Authorizer::new(Box::new(FakeReview { stall: true, ..Default::default() }));
        authorizer.timeout = Duration::from_millis(50);
        let err = authorizer.decide(&headers(Some("Bearer good")), "/v1/sockets", "get").await.unwrap_err();
        assert!(matches!(err, AccessError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("within 50 ms"), "{err}");
    }
}
