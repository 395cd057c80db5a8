//! The seeder's HTTP API (`seed --serve --api-listen`): trigger seeding, read progress,
//! take the distribution registry's push notifications, serve the dashboard. Every `/v1`
//! route needs the bearer token.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/releases` `{"image": REF}` | 201 + [`ReleaseView`] once published; 400 bad body; 502 seeding failed |
//! | `GET /v1/releases[?offset=&limit=]` | [`SwarmView`](crate::rollout::SwarmView); each release lists `limit` nodes (default [`LIST_NODES`](crate::service::LIST_NODES), at most [`MAX_LIST_NODES`](crate::service::MAX_LIST_NODES)) |
//! | `GET /v1/releases/{id}[?offset=&limit=]` | [`ReleaseView`] by release id or image, `limit` nodes (default and at most [`MAX_PAGE_NODES`](crate::service::MAX_PAGE_NODES)); 404 unknown |
//! | `POST /v1/notifications` | `{"seeding": [images]}`; 404 when auto-seeding is off |
//! | `GET /`, `GET /dashboard` | the dashboard page (no token: it asks for one) |
//!
//! Errors are `{"error": "…"}` with the status of [`ApiError::status`]; 401 for a
//! missing or wrong token; 413 for a body over 1 MiB; 400 for a bad query.
//!
//! What one answer holds is bounded whatever reported (issue #18, finding 5): node lists
//! are pages in name order, while the per-state `counts` of each release always cover
//! every node the seeder holds (at most [`crate::MAX_TRACKED_NODES`]); at most
//! [`crate::service::MAX_JOBS`] releases, [`crate::MAX_IGNORED`] ignored reports and
//! [`crate::MAX_RATE_SAMPLES`] throughput samples.

mod error;
mod notify;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::rollout::ReleaseView;
use crate::service::{Backend, Page, Service};

pub use error::{ApiError, ServeError, TokenTooShort};
pub use notify::AutoSeed;

/// Shortest token accepted: guessing must be hopeless, and placeholders are refused.
pub const MIN_TOKEN_LEN: usize = 32;
/// Largest request body (a notification envelope holds a few events).
const MAX_BODY: usize = 1 << 20;

/// The API's bearer token, checked to be long enough when made.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// Accepts `token` if it has at least [`MIN_TOKEN_LEN`] characters.
    ///
    /// # Errors
    /// [`TokenTooShort`] otherwise.
    pub fn new(token: String) -> Result<Self, TokenTooShort> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenTooShort { len: token.len() });
        }
        Ok(Self(token.into()))
    }

    /// Constant-time comparison of the presented bearer token.
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let (a, b) = (presented.as_bytes(), self.0.as_bytes());
        let diff = a
            .iter()
            .zip(b)
            .fold(u8::from(a.len() != b.len()), |acc, (x, y)| acc | (x ^ y));
        if diff == 0 {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// What every handler sees.
struct ApiState<B> {
    service: Arc<Service<B>>,
    token: Token,
    auto: Arc<AutoSeed>,
}

impl<B> Clone for ApiState<B> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            token: self.token.clone(),
            auto: Arc::clone(&self.auto),
        }
    }
}

/// The API's routes over `service`; [`serve`] puts them on a socket, tests call them
/// directly.
pub fn router<B: Backend>(service: Arc<Service<B>>, token: Token, auto: AutoSeed) -> Router {
    Router::new()
        .route("/v1/releases", post(trigger::<B>).get(list::<B>))
        .route("/v1/releases/{id}", get(one::<B>))
        .route("/v1/notifications", post(notify::notification::<B>))
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(nosniff))
        .with_state(ApiState {
            service,
            token,
            auto: Arc::new(auto),
        })
}

/// Every answer carries `X-Content-Type-Options: nosniff`: the JSON holds strings nodes
/// chose (names, reasons), and a browser must never guess it is a page and run them.
async fn nosniff(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    res
}

/// Binds `addr` and serves `router` in a background task; returns the bound address.
///
/// # Errors
/// [`ServeError`] when the address cannot be bound.
pub async fn serve(addr: SocketAddr, router: Router) -> Result<SocketAddr, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(ServeError::LocalAddr)?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "API stopped");
        }
    });
    Ok(bound)
}

/// `?offset=&limit=` of the node lists.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// The query, or [`ApiError::BadQuery`].
fn page_query(q: Result<Query<PageQuery>, QueryRejection>) -> Result<PageQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadQuery(e.body_text()))
}

#[derive(Deserialize)]
struct TriggerBody {
    image: String,
}

async fn trigger<B: Backend>(
    State(s): State<ApiState<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.token.check(&headers)?;
    let req: TriggerBody = serde_json::from_slice(&body).map_err(ApiError::BadTrigger)?;
    s.auto.check_trigger(&req.image)?;
    let id = s.service.seed(&req.image).await?;
    let view: ReleaseView = s.service.release(&id).ok_or(ApiError::Vanished(id))?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

async fn list<B: Backend>(
    State(s): State<ApiState<B>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    s.token.check(&headers)?;
    let q = page_query(query)?;
    let view = s.service.swarm_page(Page::list(q.offset, q.limit));
    Ok(axum::Json(view).into_response())
}

async fn one<B: Backend>(
    State(s): State<ApiState<B>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    s.token.check(&headers)?;
    let q = page_query(query)?;
    let view = s
        .service
        .release_page(&id, Page::release(q.offset, q.limit))
        .ok_or(ApiError::NotFound(id))?;
    Ok(axum::Json(view).into_response())
}

/// The dashboard page: one HTML file with its script and style inline.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The dashboard's Content-Security-Policy: only its own inline script runs (pinned by
/// its SHA-256, so an injected script would not), it may fetch only from this origin,
/// loads nothing else, and no other site may frame it.
fn dashboard_csp() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let script = DASHBOARD
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(script, _)| script);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    })
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_SECURITY_POLICY, dashboard_csp()),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (axum::http::header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(DASHBOARD),
    )
}

#[cfg(test)]
mod tests;
