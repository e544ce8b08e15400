//! The two questions the daemon asks the Kubernetes API server about a bearer token:
//! who is it (TokenReview), and may that user do this (SubjectAccessReview). A trait, so
//! the decision logic is tested without a server.

use futures::future::BoxFuture;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus},
    authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus},
};
use kube::{Api, Client, Config, api::PostParams};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReviewError {
    #[error(
        "--expose-api: no Kubernetes client configuration: neither KUBECONFIG (or ~/.kube/config) nor the \
         in-cluster service account is usable; run in a pod with a service account, set KUBECONFIG, or drop \
         --expose-api (the socket table stays on --api-listen)"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("--expose-api: cannot build a Kubernetes client from the configuration")]
    Client(#[source] kube::Error),
    #[error("the {kind} request to the API server failed (may the daemon's service account create {kind}s?)")]
    Request {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("the API server answered the {kind} without a status")]
    NoStatus { kind: &'static str },
}

pub trait Review: Send + Sync {
    fn token_review(&self, token: String) -> BoxFuture<'_, Result<TokenReviewStatus, ReviewError>>;
    fn access_review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, ReviewError>>;
}

/// Reviews through the API server the client configuration points at.
pub struct KubeReview {
    client: Client,
}

impl KubeReview {
    pub async fn infer() -> Result<Self, ReviewError> {
        let config = Config::infer().await.map_err(ReviewError::Config)?;
        tracing::info!(
            "--expose-api: bearer tokens are reviewed by the API server at {}",
            config.cluster_url
        );
        Ok(Self { client: Client::try_from(config).map_err(ReviewError::Client)? })
    }
}

impl Review for KubeReview {
    fn token_review(&self, token: String) -> BoxFuture<'_, Result<TokenReviewStatus, ReviewError>> {
        Box::pin(async move {
            const KIND: &str = "TokenReview";
            let review = TokenReview {
                // No audiences: the API server checks the token against its own.
                spec: TokenReviewSpec { token, audiences: None },
                ..Default::default()
            };
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|source| ReviewError::Request { kind: KIND, source })?;
            answer.status.ok_or(ReviewError::NoStatus { kind: KIND })
        })
    }

    fn access_review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, ReviewError>> {
        Box::pin(async move {
            const KIND: &str = "SubjectAccessReview";
            let review = SubjectAccessReview { spec, ..Default::default() };
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|source| ReviewError::Request { kind: KIND, source })?;
            answer.status.ok_or(ReviewError::NoStatus { kind: KIND })
        })
    }
}
