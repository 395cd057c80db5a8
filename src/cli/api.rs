//! The seeder's HTTP API (`seed --serve --api-listen`): trigger seeding, read progress,
//! take the distribution registry's push notifications, serve the dashboard. Every `/v1`
//! route needs the bearer token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::seeder_service::SeederService;

/// Shortest token accepted: guessing must be hopeless, and placeholders are refused.
pub(crate) const MIN_TOKEN_LEN: usize = 32;
/// Largest request body (a notification envelope holds a few events).
const MAX_BODY: usize = 1 << 20;

/// Which pushes the notification endpoint seeds.
#[derive(Debug, Clone, Default)]
pub(crate) struct AutoSeed {
    /// Registry `host:port` the pushes went to, as agents and the seeder reach it.
    pub(crate) registry: Option<String>,
    /// Repositories to seed (`team/app`, or a prefix ending in `*`).
    pub(crate) repos: Vec<String>,
}

impl AutoSeed {
    fn allows(&self, repo: &str) -> bool {
        self.repos.iter().any(|r| match r.strip_suffix('*') {
            Some(prefix) => repo.starts_with(prefix),
            None => r == repo,
        })
    }
}

#[derive(Clone)]
struct ApiState {
    service: Arc<SeederService>,
    token: Arc<str>,
    auto: Arc<AutoSeed>,
}

/// Binds and serves the API; returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    service: Arc<SeederService>,
    token: String,
    auto: AutoSeed,
) -> anyhow::Result<SocketAddr> {
    if token.len() < MIN_TOKEN_LEN {
        anyhow::bail!(
            "API token is {} characters; at least {MIN_TOKEN_LEN} are required (e.g. openssl rand -hex 32)",
            token.len()
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the API on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/releases", post(trigger).get(list))
        .route("/v1/releases/{id}", get(one))
        .route("/v1/notifications", post(notification))
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ApiState {
            service,
            token: token.into(),
            auto: Arc::new(auto),
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "API stopped");
        }
    });
    Ok(bound)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

/// Constant-time comparison of the presented bearer token; the 401 answer when it fails.
fn unauthorized(s: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (presented.as_bytes(), s.token.as_bytes());
    let diff = a
        .iter()
        .zip(b)
        .fold(u8::from(a.len() != b.len()), |acc, (x, y)| acc | (x ^ y));
    (diff != 0).then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

#[derive(Deserialize)]
struct TriggerBody {
    image: String,
}

async fn trigger(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let req: TriggerBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"image\": \"REF\"}}: {e}"),
            );
        }
    };
    match s.service.seed(&req.image).await {
        Ok(id) => match s.service.release(&id) {
            Some(v) => (StatusCode::CREATED, axum::Json(v)).into_response(),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "release vanished"),
        },
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    }
}

async fn list(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    axum::Json(s.service.swarm()).into_response()
}

async fn one(State(s): State<ApiState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    match s.service.release(&id) {
        Some(v) => axum::Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no release or image {id}")),
    }
}

/// The registry's notification envelope (only the fields used).
#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    action: String,
    target: Target,
}

#[derive(Deserialize)]
struct Target {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    repository: String,
    #[serde(default)]
    tag: Option<String>,
}

/// Manifest pushes (not blob pushes) with a tag are what a `docker push` / `skopeo copy`
/// of an image ends with; those of allow-listed repositories are seeded in the background.
async fn notification(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let env: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a notification: {e}")),
    };
    let Some(registry) = s.auto.registry.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "auto-seeding is off (no --notify-registry)",
        );
    };
    let mut seeded = Vec::new();
    for ev in env.events {
        let Some(tag) = ev.target.tag.filter(|t| !t.is_empty()) else {
            continue;
        };
        if ev.action != "push"
            || !ev.target.media_type.contains("manifest")
                && !ev.target.media_type.contains("image.index")
        {
            continue;
        }
        if !s.auto.allows(&ev.target.repository) {
            tracing::info!(repository = %ev.target.repository, "push of a repository not allow-listed; not seeding");
            continue;
        }
        let image = format!("{registry}/{}:{tag}", ev.target.repository);
        if s.service.in_flight(&image) {
            continue;
        }
        tracing::info!(%image, "registry push notification: seeding");
        seeded.push(image.clone());
        let service = s.service.clone();
        tokio::spawn(async move {
            let _ = service.seed(&image).await;
        });
    }
    axum::Json(serde_json::json!({ "seeding": seeded })).into_response()
}

async fn dashboard() -> impl IntoResponse {
    Html(include_str!("dashboard.html"))
}
