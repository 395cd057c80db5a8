//! The API's errors and their one mapping to an HTTP status and a JSON body
//! (`{"error": "…"}`, which the CLI client prints).

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::MIN_TOKEN_LEN;
use crate::service::SeedError;

/// Why a request was refused or failed; [`IntoResponse`] maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer …` header, or not the configured token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// `POST /v1/releases` with a body that is not `{"image": "REF"}`.
    #[error("body must be {{\"image\": \"REF\"}}: {0}")]
    BadTrigger(serde_json::Error),
    /// `POST /v1/notifications` with a body that is not a registry envelope.
    #[error("not a notification: {0}")]
    BadNotification(serde_json::Error),
    /// `?offset=&limit=` that are not numbers.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// No job has this release id or image.
    #[error("no release or image {0}")]
    NotFound(String),
    /// `POST /v1/releases` named a registry not on the allow-list, or a local path.
    #[error("not seeding {image} over the API: {reason}")]
    NotAllowed {
        /// The image as asked.
        image: String,
        /// Why it was refused.
        reason: String,
    },
    /// A notification arrived but no registry to seed from was configured.
    #[error("auto-seeding is off (no --notify-registry)")]
    AutoSeedOff,
    /// Seeding was asked for and failed (registry, layout, store or agent); boxed, as
    /// it is much larger than the other variants.
    #[error("{}", .0.chain())]
    Seed(Box<SeedError>),
    /// The job of a release just published is gone (the job list overflowed meanwhile).
    #[error("release {0} vanished")]
    Vanished(String),
}

impl From<SeedError> for ApiError {
    fn from(e: SeedError) -> Self {
        Self::Seed(Box::new(e))
    }
}

impl ApiError {
    /// The HTTP status each error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::BadTrigger(_) | Self::BadNotification(_) | Self::BadQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::NotFound(_) | Self::AutoSeedOff => StatusCode::NOT_FOUND,
            Self::Seed(_) => StatusCode::BAD_GATEWAY,
            Self::Vanished(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// The configured API token is too short to be a secret.
#[derive(Debug, thiserror::Error)]
#[error(
    "API token is {len} characters; at least {MIN_TOKEN_LEN} are required (e.g. openssl rand -hex 32)"
)]
pub struct TokenTooShort {
    /// Characters (bytes) of the token given.
    pub len: usize,
}

/// Why the API could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error("cannot listen for the API on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The bound socket has no local address.
    #[error("reading the API listener's address")]
    LocalAddr(#[source] std::io::Error),
}
