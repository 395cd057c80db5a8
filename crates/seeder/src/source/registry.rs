//! Images in a registry, over the OCI distribution API.
//!
//! `oci-client` does the authentication dance (anonymous, HTTP basic, or a bearer
//! token from the registry's token service). Manifests and blobs are fetched with
//! a plain HTTP client carrying that authorization, because `oci-client` buffers
//! whole manifests without a size bound and hashes every blob it streams; here
//! manifests are bounded before they are buffered and blobs are passed through
//! unhashed for the caller to hash once.
//!
//! Credentials are given (`--username`/`--password`), or come from the docker config or
//! auth file: an `auths` entry, or a credential helper run when the registry is first
//! asked (see `cred_helper`). A bearer token negotiated with the registry's token service
//! is kept by the source and reused until the registry answers 401 (as it does once the
//! token expired), then negotiated again; `oci-client`'s own per-expiry token cache is
//! not consulted, because requests go through this module's HTTP client.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blobswarm_core::Digest;
use futures::TryStreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE};
use tokio::sync::Mutex;

use super::{
    BlobDescriptor, BlobStream, DocumentStore, MAX_DOCUMENT_BYTES, Platform, ResolvedImage,
    SourceError, SourceOptions, complete, credentials, exact_size, media_type, verify_document,
};
use crate::source::cred_helper::CredentialHelpers;
use crate::source::credentials::Credential;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Tries per request before a transient failure (connection, timeout, 5xx, 429, 401)
/// becomes an error.
pub const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubles for each further one (0.2 s, 0.4 s, 0.8 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest silence while reading a response before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("blobswarm/", env!("CARGO_PKG_VERSION"));

/// The authorization negotiated with the registry.
#[derive(Clone)]
enum Authz {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

/// An image in a registry. Cheap to clone: clones share the HTTP connections and
/// the negotiated authorization.
#[derive(Clone)]
pub struct RegistrySource {
    inner: Arc<Inner>,
}

struct Inner {
    reference: Reference,
    /// The registry as written in the reference (`host[:port]`, `docker.io`).
    registry: String,
    /// `scheme://host[:port]/v2/<repository>`.
    base_url: String,
    platform: Option<Platform>,
    /// Where the credentials come from; None reads anonymously.
    credential: Option<Credential>,
    /// Runs `credential`'s helper, if it names one.
    helpers: CredentialHelpers,
    /// Set once the helper has been asked again after a refusal (it is, only once).
    helper_refreshed: AtomicBool,
    /// The user name last logged in as, for messages.
    user: std::sync::Mutex<Option<String>>,
    oci: oci_client::Client,
    http: reqwest::Client,
    authz: Mutex<Option<Authz>>,
}

impl fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrySource")
            .field("reference", &self.inner.reference.whole())
            .field("base_url", &self.inner.base_url)
            .field("platform", &self.inner.platform)
            .field(
                "auth",
                &match &self.inner.credential {
                    None => "anonymous".to_owned(),
                    Some(Credential::Basic(..)) => "basic".to_owned(),
                    Some(Credential::Helper(h)) => format!("helper {}", h.program()),
                },
            )
            .finish_non_exhaustive()
    }
}

/// The error chain of `e`, one cause after the other.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

impl RegistrySource {
    pub(super) fn new(
        spec: &str,
        platform: Option<Platform>,
        opts: SourceOptions,
    ) -> Result<Self, SourceError> {
        let bad = |reason: String| SourceError::BadReference {
            reference: spec.to_owned(),
            reason,
        };
        if spec.is_empty() {
            return Err(bad("empty reference".to_owned()));
        }
        let reference: Reference = spec.parse().map_err(|e| bad(format!("{e}")))?;
        if let Some(d) = reference.digest() {
            d.parse::<Digest>().map_err(|e| bad(e.to_string()))?;
        }
        let registry = reference.registry().to_owned();
        let host = reference.resolve_registry().to_owned();
        let insecure = opts
            .insecure_registries
            .iter()
            .any(|r| *r == registry || *r == host);
        let scheme = if insecure { "http" } else { "https" };
        let base_url = format!("{scheme}://{host}/v2/{}", reference.repository());

        let read_timeout = opts.read_timeout.unwrap_or(READ_TIMEOUT);
        // Credentials given for one registry are never sent to another.
        let scoped = opts
            .credentials_for
            .as_deref()
            .is_none_or(|r| r == registry || r == host);
        let (username, password) = if scoped {
            (opts.username, opts.password)
        } else {
            tracing::debug!(%registry, "the configured credentials belong to another registry");
            (None, None)
        };
        let credential = match (username, password) {
            (Some(user), Some(password)) => Some(Credential::Basic(user, password)),
            (Some(_), None) | (None, Some(_)) => {
                return Err(SourceError::Credentials {
                    reason: "a username needs a password and a password needs a username"
                        .to_owned(),
                });
            }
            (None, None) => match &opts.auth_file {
                Some(path) => credentials::from_auth_file(path, &registry)?,
                None => credentials::lookup(&registry)?,
            },
        };

        let oci = oci_client::Client::new(ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(read_timeout),
            user_agent: USER_AGENT,
            platform_resolver: None,
            ..ClientConfig::default()
        });
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(read_timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| SourceError::Registry {
                registry: registry.clone(),
                cause: format!("cannot build an HTTP client: {}", chain(&e)),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                reference,
                registry,
                base_url,
                platform,
                credential,
                helpers: opts.credential_helpers,
                helper_refreshed: AtomicBool::new(false),
                user: std::sync::Mutex::new(None),
                oci,
                http,
                authz: Mutex::new(None),
            }),
        })
    }

    /// The parsed reference, canonical form (`registry/repository:tag[@digest]`).
    pub fn reference(&self) -> String {
        self.inner.reference.whole()
    }

    /// The registry as written in the reference.
    pub fn registry(&self) -> &str {
        &self.inner.registry
    }

    fn oci_error(&self, e: OciDistributionError) -> SourceError {
        match e {
            OciDistributionError::RequestError(e) => self.request_error(&e),
            OciDistributionError::AuthenticationFailure(cause) => SourceError::AuthFailed {
                registry: self.inner.registry.clone(),
                cause: format!(
                    "the token service refused the credentials{}: {}",
                    self.whose()
                        .unwrap_or_else(|| format!(" ({})", self.none_given())),
                    excerpt(&cause)
                ),
            },
            OciDistributionError::RegistryTokenDecodeError(cause) => SourceError::AuthFailed {
                registry: self.inner.registry.clone(),
                cause: format!("unreadable token from the token service: {cause}"),
            },
            other => SourceError::Registry {
                registry: self.inner.registry.clone(),
                cause: other.to_string(),
            },
        }
    }

    fn request_error(&self, e: &reqwest::Error) -> SourceError {
        if e.is_connect() || e.is_timeout() {
            SourceError::Unreachable {
                registry: self.inner.registry.clone(),
                cause: chain(e),
            }
        } else {
            SourceError::Registry {
                registry: self.inner.registry.clone(),
                cause: chain(e),
            }
        }
    }

    /// ` of user "NAME"` (and the helper it came from) when logging in as someone.
    fn whose(&self) -> Option<String> {
        let user = self.inner.user.lock().ok()?.clone()?;
        Some(match &self.inner.credential {
            Some(Credential::Helper(h)) => format!(" of user {user:?} from {}", h.program()),
            _ => format!(" of user {user:?}"),
        })
    }

    /// Why no credentials were sent, for messages.
    fn none_given(&self) -> String {
        match &self.inner.credential {
            Some(Credential::Helper(h)) => format!("{} has none for it", h.program()),
            _ => "none were given".to_owned(),
        }
    }

    /// The credentials to log in with, asking the helper if one is configured (again,
    /// once, after the registry refused what it said before: `renew`).
    async fn registry_auth(&self, renew: bool) -> Result<RegistryAuth, SourceError> {
        let (user, password) = match &self.inner.credential {
            None => return Ok(RegistryAuth::Anonymous),
            Some(Credential::Basic(user, password)) => (user.clone(), password.clone()),
            Some(Credential::Helper(helper)) => {
                let refresh = renew && !self.inner.helper_refreshed.swap(true, Ordering::Relaxed);
                match self.inner.helpers.get(helper, refresh).await? {
                    Some(found) => found,
                    None => return Ok(RegistryAuth::Anonymous),
                }
            }
        };
        if let Ok(mut shown) = self.inner.user.lock() {
            *shown = Some(user.clone());
        }
        Ok(RegistryAuth::Basic(user, password))
    }

    /// The authorization to send; negotiated on first use and again when `renew`.
    async fn authz(&self, renew: bool) -> Result<Authz, SourceError> {
        let mut guard = self.inner.authz.lock().await;
        if let (Some(a), false) = (guard.as_ref(), renew) {
            return Ok(a.clone());
        }
        let auth = self.registry_auth(renew).await?;
        let negotiated = match self
            .inner
            .oci
            .auth(&self.inner.reference, &auth, RegistryOperation::Pull)
            .await
        {
            Ok(Some(token)) => Authz::Bearer(token),
            Ok(None) => match auth {
                RegistryAuth::Basic(user, password) => Authz::Basic(user, password),
                _ => Authz::Anonymous,
            },
            Err(e) => return Err(self.oci_error(e)),
        };
        *guard = Some(negotiated.clone());
        Ok(negotiated)
    }

    async fn send(
        &self,
        url: &str,
        headers: &HeaderMap,
        renew: bool,
    ) -> Result<reqwest::Response, SourceError> {
        let authz = self.authz(renew).await?;
        let req = self.inner.http.get(url).headers(headers.clone());
        let req = match &authz {
            Authz::Anonymous => req,
            Authz::Basic(user, password) => req.basic_auth(user, Some(password)),
            Authz::Bearer(token) => req.bearer_auth(token),
        };
        req.send().await.map_err(|e| self.request_error(&e))
    }

    /// GET with authorization and retries; see [`RegistrySource::authorized_get`].
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, SourceError> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept
            && let Ok(value) = HeaderValue::from_str(accept)
        {
            headers.insert(ACCEPT, value);
        }
        self.authorized_get(url, headers).await
    }

    /// GETs `url` (under this source's registry) with `headers` and the negotiated
    /// authorization — anonymous, HTTP basic, or a bearer token from the registry's
    /// token service — so other fetchers (e.g. ranged blob reads) share the
    /// credentials and tokens of this source.
    ///
    /// Connection failures, timeouts, 5xx and 429 answers are retried with back-off,
    /// and so is 401 (after negotiating the authorization again: tokens expire), up
    /// to [`ATTEMPTS`] attempts; each retry logs a warning naming the registry and the
    /// cause, never the credentials. Other statuses (404, 403, 2xx) are returned as they
    /// are; the response after the last attempt is returned too, whatever its status.
    ///
    /// # Errors
    /// [`SourceError::Unreachable`] or [`SourceError::AuthFailed`] (negotiation with the
    /// token service) when the last attempt failed that way.
    pub async fn authorized_get(
        &self,
        url: &str,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, SourceError> {
        let mut backoff = FIRST_BACKOFF;
        let mut renew = false;
        let mut attempt = 1;
        loop {
            let outcome = self.send(url, &headers, renew).await;
            let retry = match &outcome {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    renew = true;
                    Some(resp.status().to_string())
                }
                Ok(resp)
                    if resp.status().is_server_error()
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    Some(resp.status().to_string())
                }
                Ok(_) => None,
                Err(e @ SourceError::AuthFailed { .. }) => {
                    renew = true;
                    Some(e.to_string())
                }
                Err(e @ SourceError::Unreachable { .. }) => Some(e.to_string()),
                Err(_) => None,
            };
            match retry {
                Some(cause) if attempt < ATTEMPTS => {
                    tracing::warn!(
                        registry = %self.inner.registry,
                        path = %url_path(url),
                        attempt,
                        attempts = ATTEMPTS,
                        retry_in_ms = backoff.as_millis() as u64,
                        cause = %cause,
                        "registry request failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Some(_) => return outcome.map_err(|e| after_attempts(e, attempt)),
                None => return outcome,
            }
        }
    }

    /// [`Self::get`] with an optional Range header.
    async fn get_with(
        &self,
        url: &str,
        accept: Option<&str>,
        range: Option<&str>,
    ) -> Result<reqwest::Response, SourceError> {
        let mut headers = HeaderMap::new();
        for (name, value) in [(ACCEPT, accept), (RANGE, range)] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        }
        self.authorized_get(url, headers).await
    }

    /// Maps a non-success status to an error; `what` names the object for 404.
    async fn check_status(
        &self,
        resp: reqwest::Response,
        not_found: impl FnOnce() -> SourceError,
    ) -> Result<reqwest::Response, SourceError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let url = resp.url().clone();
        let body = read_excerpt(resp).await;
        let retried = if status == StatusCode::UNAUTHORIZED
            || status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            format!(" (after {ATTEMPTS} attempts)")
        } else {
            String::new()
        };
        Err(match status {
            StatusCode::NOT_FOUND => not_found(),
            StatusCode::UNAUTHORIZED => SourceError::AuthFailed {
                registry: self.inner.registry.clone(),
                cause: match self.whose() {
                    Some(whose) => format!(
                        "the registry refused the credentials{whose}: {status} for {url}{retried}: {body}"
                    ),
                    None => format!(
                        "the registry needs credentials and {} \
                         (--username/--password, --registry-auth-file or docker config.json): \
                         {status} for {url}{retried}: {body}",
                        self.none_given()
                    ),
                },
            },
            StatusCode::FORBIDDEN => SourceError::AuthFailed {
                registry: self.inner.registry.clone(),
                cause: format!("access denied: {status} for {url}: {body}"),
            },
            _ => SourceError::Registry {
                registry: self.inner.registry.clone(),
                cause: format!("unexpected {status} for {url}{retried}: {body}"),
            },
        })
    }

    /// Fetches the manifest or index `reference` (a tag or a digest), reading at most
    /// [`MAX_DOCUMENT_BYTES`]. Returns the bytes and the response headers.
    async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, HeaderMap), SourceError> {
        let url = format!("{}/manifests/{reference}", self.inner.base_url);
        let shown = format!(
            "{}/{}",
            self.inner.registry,
            self.inner.reference.repository()
        );
        let named = || {
            if reference.starts_with("sha256:") {
                format!("{shown}@{reference}")
            } else {
                format!("{shown}:{reference}")
            }
        };
        let resp = self.get(&url, Some(&media_type::accept_header())).await?;
        let mut resp = self
            .check_status(resp, || SourceError::NotFound { reference: named() })
            .await?;
        let too_large = |size| SourceError::ManifestTooLarge {
            reference: named(),
            limit: MAX_DOCUMENT_BYTES,
            size,
        };
        if let Some(len) = resp.content_length()
            && len > MAX_DOCUMENT_BYTES
        {
            return Err(too_large(Some(len)));
        }
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.request_error(&e))? {
            if (body.len() + chunk.len()) as u64 > MAX_DOCUMENT_BYTES {
                return Err(too_large(None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, headers))
    }

    pub(super) async fn resolve(&self) -> Result<ResolvedImage, SourceError> {
        let (bytes, headers, expected) = if let Some(digest) = self.inner.reference.digest() {
            let expected: Digest = digest.parse().map_err(|e| SourceError::BadReference {
                reference: self.inner.reference.whole(),
                reason: format!("{e}"),
            })?;
            let (bytes, headers) = self.fetch_manifest(digest).await?;
            (bytes, headers, Some(expected))
        } else {
            let tag = self.inner.reference.tag().unwrap_or("latest");
            let (bytes, headers) = self.fetch_manifest(tag).await?;
            // For a tag the bytes are the identity; a registry that announces a
            // different digest for them is lying or broken.
            let announced = headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            (bytes, headers, announced)
        };
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (root, parsed) =
            verify_document(expected.as_ref(), None, bytes, content_type.as_deref())?;
        complete(
            self,
            self.inner.reference.whole(),
            root,
            parsed,
            self.inner.platform.as_ref(),
        )
        .await
    }

    pub(super) async fn open_blob(&self, blob: &BlobDescriptor) -> Result<BlobStream, SourceError> {
        let url = format!("{}/blobs/{}", self.inner.base_url, blob.digest);
        let resp = self.get(&url, None).await?;
        let resp = self
            .check_status(resp, || SourceError::BlobNotFound {
                digest: blob.digest,
                location: format!(
                    "{}/{}",
                    self.inner.registry,
                    self.inner.reference.repository()
                ),
            })
            .await?;
        if let Some(len) = resp.content_length()
            && len != blob.size
        {
            return Err(SourceError::BlobSizeMismatch {
                digest: blob.digest,
                expected: blob.size,
                actual: len,
            });
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(exact_size(Box::pin(stream), blob))
    }
}

impl DocumentStore for RegistrySource {
    async fn fetch_document(
        &self,
        digest: &Digest,
    ) -> Result<(Vec<u8>, Option<String>), SourceError> {
        let (bytes, headers) = self.fetch_manifest(&digest.to_string()).await?;
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((bytes, content_type))
    }
}

mod errors;
mod range_read;
#[cfg(test)]
mod tests;

use errors::{after_attempts, excerpt, read_excerpt, url_path};
