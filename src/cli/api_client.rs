//! Client of the seeder API, for `blobswarm status` and `seed --api`: a CI job needs only
//! the CLI, the seeder's URL and the token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use blobswarm_seeder::rollout::{ReleaseView, SwarmView};

/// `--api` / `--api-token-file` as both commands take them.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiArgs {
    /// Seeder API base URL, e.g. http://blobswarm-seeder.blobswarm:8080.
    #[arg(long = "api", env = "BLOBSWARM_SEEDER_URL")]
    pub(crate) url: Option<String>,
    /// File holding the API bearer token (else BLOBSWARM_API_TOKEN).
    #[arg(long)]
    pub(crate) api_token_file: Option<PathBuf>,
}

/// Reads the token from `file`, else from `BLOBSWARM_API_TOKEN`.
pub(crate) fn token(file: Option<&PathBuf>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading API token file {}", path.display()))?;
        return Ok(t.trim().to_owned());
    }
    std::env::var("BLOBSWARM_API_TOKEN")
        .map(|t| t.trim().to_owned())
        .map_err(|_| {
            anyhow::anyhow!("no API token: pass --api-token-file or set BLOBSWARM_API_TOKEN")
        })
}

/// A connected client.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let base = args
            .url
            .clone()
            .context("no seeder API URL: pass --api or set BLOBSWARM_SEEDER_URL")?;
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            token: token(args.api_token_file.as_ref())?,
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<T> {
        let res = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach the seeder at {}", self.base))?;
        let status = res.status();
        let body = res
            .bytes()
            .await
            .with_context(|| format!("{what}: reading the answer"))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{what}: seeder answered {status}: {msg}");
        }
        serde_json::from_slice(&body).with_context(|| format!("{what}: unexpected answer"))
    }

    /// `POST /v1/releases`: seeds `image` and returns once it is published.
    pub(crate) async fn seed(&self, image: &str) -> anyhow::Result<ReleaseView> {
        let body = serde_json::json!({ "image": image }).to_string();
        self.call(
            self.http
                .post(format!("{}/v1/releases", self.base))
                .header("content-type", "application/json")
                .body(body),
            "seeding",
        )
        .await
    }

    /// `GET /v1/releases/ID`.
    pub(crate) async fn release(&self, id: &str) -> anyhow::Result<ReleaseView> {
        self.call(
            self.http.get(format!("{}/v1/releases/{id}", self.base)),
            "reading the release",
        )
        .await
    }

    /// `GET /v1/releases`.
    pub(crate) async fn swarm(&self) -> anyhow::Result<SwarmView> {
        self.call(
            self.http.get(format!("{}/v1/releases", self.base)),
            "reading releases",
        )
        .await
    }
}
