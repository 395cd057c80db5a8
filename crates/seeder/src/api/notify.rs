//! `POST /v1/notifications`: the distribution registry's push webhook. Manifest pushes of
//! allow-listed repositories are seeded in the background.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use blobswarm_core::escape::Printable;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::service::Backend;

/// What the API may seed: the pushes the notification endpoint seeds, and the registries
/// `POST /v1/releases` may name.
#[derive(Debug, Clone, Default)]
pub struct AutoSeed {
    /// Registry `host:port` the pushes went to, as agents and the seeder reach it
    /// (`None`: notifications are refused). Always allowed for `POST /v1/releases`.
    pub registry: Option<String>,
    /// Repositories to seed (`team/app`, or a prefix ending in `*`).
    pub repos: Vec<String>,
    /// Further registries (`host:port` as written in references) `POST /v1/releases`
    /// may seed from (`seed --allow-registry`). Anything else, and every `oci-layout:`
    /// path, is refused: a client of the API must not make the seeder reach arbitrary
    /// hosts from inside the cluster, nor read its local files.
    pub allowed_registries: Vec<String>,
}

impl AutoSeed {
    /// Whether `POST /v1/releases` may seed `image`.
    ///
    /// # Errors
    /// [`ApiError::NotAllowed`] naming the image and why.
    pub(super) fn check_trigger(&self, image: &str) -> Result<(), ApiError> {
        let refuse = |reason: String| ApiError::NotAllowed {
            image: image.to_owned(),
            reason,
        };
        let Some(registry) = crate::source::registry_of(image) else {
            return Err(refuse(
                "only registry references are seeded over the API (no oci-layout: paths)".into(),
            ));
        };
        let allowed = self.registry.as_deref() == Some(registry.as_str())
            || self.allowed_registries.contains(&registry);
        if allowed {
            Ok(())
        } else {
            Err(refuse(format!(
                "registry {registry} is not allowed (seed --allow-registry)"
            )))
        }
    }

    fn allows(&self, repo: &str) -> bool {
        self.repos.iter().any(|r| match r.strip_suffix('*') {
            Some(prefix) => repo.starts_with(prefix),
            None => r == repo,
        })
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

impl Event {
    /// The repository and tag of a tagged manifest (or index) push: what a `docker push`
    /// / `skopeo copy` of an image ends with. Blob pushes and untagged pushes are `None`.
    fn tagged_manifest_push(self) -> Option<(String, String)> {
        let tag = self.target.tag.filter(|t| !t.is_empty())?;
        let manifest = self.target.media_type.contains("manifest")
            || self.target.media_type.contains("image.index");
        (self.action == "push" && manifest).then_some((self.target.repository, tag))
    }
}

/// Seeds the tagged manifest pushes of allow-listed repositories in the background;
/// answers with the images it started.
pub(super) async fn notification<B: Backend>(
    State(s): State<ApiState<B>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.token.check(&headers)?;
    let env: Envelope = serde_json::from_slice(&body).map_err(ApiError::BadNotification)?;
    let registry = s.auto.registry.as_deref().ok_or(ApiError::AutoSeedOff)?;
    let mut seeded = Vec::new();
    for (repository, tag) in env
        .events
        .into_iter()
        .filter_map(Event::tagged_manifest_push)
    {
        if !s.auto.allows(&repository) {
            tracing::info!(repository = %Printable(&repository), "push of a repository not allow-listed; not seeding");
            continue;
        }
        let image = format!("{registry}/{repository}:{tag}");
        if s.service.in_flight(&image) {
            continue;
        }
        tracing::info!(image = %Printable(&image), "registry push notification: seeding");
        seeded.push(image.clone());
        let service = Arc::clone(&s.service);
        tokio::spawn(async move {
            let _ = service.seed(&image).await;
        });
    }
    Ok(axum::Json(serde_json::json!({ "seeding": seeded })).into_response())
}
