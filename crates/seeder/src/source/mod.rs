//! Image sources: turn an image reference into immutable digests and stream each blob.
//!
//! A [`Source`] is either a registry reference (`registry/repo:tag`,
//! `registry/repo@sha256:…`) or an OCI image layout on disk
//! (`oci-layout:DIR[:tag]`). [`Source::resolve`] fetches the manifest or index the
//! reference names, verifies every document against the digest it was asked for
//! (for a tag, the digest of the bytes becomes the immutable identity), and lists
//! the blobs (configs and layers) once each. [`Source::open_blob`] then streams
//! one blob's raw bytes.
//!
//! Everything read here is untrusted: documents are bounded to
//! [`MAX_DOCUMENT_BYTES`] before they are buffered, the number of manifests and
//! blobs is capped, and each document is hashed and checked. Blob streams are
//! *not* hashed here — the caller hashes each blob exactly once — but they are
//! cut off with an error if they run longer or shorter than the descriptor says.

mod cred_helper;
mod credentials;
mod error;
mod layout;
mod ranges;
mod registry;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use blobswarm_core::Digest;
use blobswarm_core::oci::{self, Body, Descriptor, Index, ParseError, Parsed};
use futures::{Stream, StreamExt as _};

pub(crate) use blobswarm_core::oci::Platform;
pub use cred_helper::{
    CredentialHelpers, HELPER_CACHE_TTL, HELPER_TIMEOUT, HelperError, MAX_HELPER_OUTPUT,
};
pub use error::SourceError;
pub use layout::LayoutSource;
pub use ranges::RegistryRanges;
pub use registry::{ATTEMPTS as REGISTRY_ATTEMPTS, RegistrySource};

pub use blobswarm_core::oci::MAX_DOCUMENT_BYTES;
/// Most image manifests one resolved image may consist of.
pub const MAX_MANIFESTS: usize = 64;
/// Most distinct blobs (configs and layers) one resolved image may consist of.
pub const MAX_BLOBS: usize = 10_000;

/// A manifest or index whose bytes have been checked against its digest (the type
/// releases embed, so publishing needs no conversion).
pub use blobswarm_core::Document;
/// Media types of the documents a source understands (the shared table).
pub use blobswarm_core::oci::media_type;

/// A config or layer blob an image needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobDescriptor {
    /// sha256 of the blob's bytes.
    pub digest: Digest,
    /// Size in bytes, as the manifest declares it.
    pub size: u64,
    /// Media type, as the manifest declares it.
    pub media_type: String,
}

/// What a reference resolved to: immutable documents and the blobs they need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Canonical name to record, e.g. `127.0.0.1:5000/test/img:v1` or
    /// `…@sha256:…` for digest references; the tag for OCI layout sources.
    pub reference: String,
    /// What the reference resolves to: an image index, or an image manifest (also
    /// when a platform was selected from an index).
    pub root: Document,
    /// When `root` is an index: each child manifest, verified against its
    /// descriptor, in index order. Empty when `root` is a manifest.
    pub manifests: Vec<Document>,
    /// Configs and layers of all selected manifests, deduplicated by digest, each
    /// manifest's config before its layers, in manifest order.
    pub blobs: Vec<BlobDescriptor>,
}

/// Raw bytes of one blob. Not hashed by the source: the caller verifies them.
pub type BlobStream =
    Pin<Box<dyn Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static>>;

/// How to reach an image.
#[derive(Clone, Default)]
pub struct SourceOptions {
    /// Select one platform (`os/arch[/variant]`, e.g. `linux/arm64/v8`) from an index.
    pub platform: Option<String>,
    /// Registries (`host:port`, as written in references) reached over plain http.
    pub insecure_registries: Vec<String>,
    /// Registry user name (HTTP basic, or sent to the token endpoint).
    pub username: Option<String>,
    /// Registry password; never printed.
    pub password: Option<String>,
    /// The registry (`host:port` as written in references) that `username` and
    /// `password` belong to: they are never sent to another registry, which then gets
    /// the docker config's or auth file's credentials for it, or none. None sends them
    /// to whichever registry a reference names (one-shot use, where the operator names
    /// the image); a seeder triggered over its API must set it.
    pub credentials_for: Option<String>,
    /// Credentials file used instead of the docker config when no username and
    /// password are given: a docker `config.json` or a Kubernetes image pull secret
    /// (see `credentials::from_auth_file`).
    pub auth_file: Option<PathBuf>,
    /// Longest silence while waiting for or reading a registry response (None: 60 s).
    /// A stalled request counts as a transient failure: it is retried with back-off.
    pub read_timeout: Option<std::time::Duration>,
    /// Runs the credential helpers a docker config names (`credHelpers`, `credsStore`)
    /// and caches their answers; sources built from clones of these options share it.
    pub credential_helpers: CredentialHelpers,
}

impl fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceOptions")
            .field("platform", &self.platform)
            .field("insecure_registries", &self.insecure_registries)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("credentials_for", &self.credentials_for)
            .field("auth_file", &self.auth_file)
            .field("read_timeout", &self.read_timeout)
            .field("credential_helpers", &self.credential_helpers)
            .finish()
    }
}

/// Where an image comes from. Cheap to clone, so blob streams can be opened from
/// several tasks.
#[derive(Debug, Clone)]
pub enum Source {
    /// A registry reached over the OCI distribution API.
    Registry(RegistrySource),
    /// An OCI image layout directory.
    Layout(LayoutSource),
}

/// The registry a reference names (`host:port` as written, `docker.io` when none is),
/// or None for an `oci-layout:` path or a reference that does not parse: what an
/// allow-list of registries and scoped credentials are checked against.
pub fn registry_of(spec: &str) -> Option<String> {
    if spec.starts_with("oci-layout:") || spec.is_empty() {
        return None;
    }
    let reference: oci_client::Reference = spec.parse().ok()?;
    Some(reference.registry().to_owned())
}

impl Source {
    /// Parses `oci-layout:DIR[:TAG]` (split at the first `:` after the prefix, like
    /// skopeo's `oci:` transport; TAG may be left out when the layout holds one
    /// image) or else a registry reference such as `registry:5000/repo:tag` or
    /// `repo@sha256:…`. Does no I/O apart from reading the docker config for
    /// registry credentials.
    pub fn parse(spec: &str, opts: SourceOptions) -> Result<Self, SourceError> {
        let platform = opts
            .platform
            .as_deref()
            .map(Platform::parse)
            .transpose()
            .map_err(|e| SourceError::BadPlatform {
                platform: e.platform,
            })?;
        if let Some(rest) = spec.strip_prefix("oci-layout:") {
            Ok(Self::Layout(LayoutSource::new(spec, rest, platform)?))
        } else {
            Ok(Self::Registry(RegistrySource::new(spec, platform, opts)?))
        }
    }

    /// Fetches and verifies the documents the reference names and lists the blobs.
    pub async fn resolve(&self) -> Result<ResolvedImage, SourceError> {
        match self {
            Self::Registry(s) => s.resolve().await,
            Self::Layout(s) => s.resolve().await,
        }
    }

    /// Streams the raw bytes of `blob`. The stream fails if it carries more or fewer
    /// bytes than `blob.size`; the content itself is not hashed here.
    pub async fn open_blob(&self, blob: &BlobDescriptor) -> Result<BlobStream, SourceError> {
        match self {
            Self::Registry(s) => s.open_blob(blob).await,
            Self::Layout(s) => s.open_blob(blob).await,
        }
    }
}

/// Parses a manifest or index with the shared bounded parser, phrasing its refusals
/// as the source errors callers (and tests) match on.
fn parse_document(
    digest: &Digest,
    bytes: &[u8],
    hint: Option<&str>,
) -> Result<Parsed, SourceError> {
    let limits = oci::Limits {
        max_bytes: MAX_DOCUMENT_BYTES,
        max_layers: MAX_BLOBS,
    };
    oci::parse(digest, bytes, hint, limits).map_err(|e| match e {
        ParseError::TooLarge { limit, read, .. } => SourceError::ManifestTooLarge {
            reference: digest.to_string(),
            limit,
            size: Some(read),
        },
        ParseError::Schema1 { .. } => SourceError::UnsupportedMediaType {
            digest: *digest,
            media_type: media_type::DOCKER_SCHEMA1.to_owned(),
        },
        ParseError::UnsupportedMediaType { media_type, .. } => SourceError::UnsupportedMediaType {
            digest: *digest,
            media_type,
        },
        ParseError::TooManyLayers { .. } => SourceError::TooManyBlobs { limit: MAX_BLOBS },
        other => SourceError::InvalidDocument {
            digest: *digest,
            reason: other.to_string(),
        },
    })
}

fn blob(d: &Descriptor) -> BlobDescriptor {
    BlobDescriptor {
        digest: d.digest,
        size: d.size,
        media_type: d.media_type.clone(),
    }
}

/// Checks fetched bytes against what they were requested by and parses them.
/// `expected`: the digest the document was requested by (None for a tag: the
/// digest of the bytes becomes its identity). `declared_size`: from a descriptor.
fn verify_document(
    expected: Option<&Digest>,
    declared_size: Option<u64>,
    bytes: Vec<u8>,
    hint: Option<&str>,
) -> Result<(Document, Body), SourceError> {
    let actual = Digest::of(&bytes);
    if let Some(expected) = expected
        && *expected != actual
    {
        return Err(SourceError::ManifestDigestMismatch {
            expected: *expected,
            actual,
        });
    }
    if let Some(size) = declared_size
        && size != bytes.len() as u64
    {
        return Err(SourceError::DocumentSizeMismatch {
            digest: actual,
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    let Parsed { media_type, body } = parse_document(&actual, &bytes, hint)?;
    Ok((
        Document {
            digest: actual,
            media_type,
            bytes,
        },
        body,
    ))
}

/// Something child manifests can be fetched from by digest.
pub(crate) trait DocumentStore {
    /// The bytes stored under `digest` (at most [`MAX_DOCUMENT_BYTES`]) and the
    /// media type the transport announced, if any. Verification is the caller's.
    async fn fetch_document(
        &self,
        digest: &Digest,
    ) -> Result<(Vec<u8>, Option<String>), SourceError>;
}

/// Fetches the document a descriptor (`digest`, `size`, `media_type`) names, refusing
/// one declared over [`MAX_DOCUMENT_BYTES`] before fetching it (reported as `name()`),
/// and verifies it against the descriptor.
async fn fetch_described(
    store: &impl DocumentStore,
    digest: &Digest,
    size: u64,
    media_type: &str,
    name: impl FnOnce() -> String,
) -> Result<(Document, Body), SourceError> {
    if size > MAX_DOCUMENT_BYTES {
        return Err(SourceError::ManifestTooLarge {
            reference: name(),
            limit: MAX_DOCUMENT_BYTES,
            size: Some(size),
        });
    }
    let (bytes, _announced) = store.fetch_document(digest).await?;
    verify_document(Some(digest), Some(size), bytes, Some(media_type))
}

/// Fetches and verifies the child manifest an index entry names.
async fn fetch_child(
    store: &impl DocumentStore,
    entry: &Descriptor,
) -> Result<(Document, BlobDescriptor, Vec<BlobDescriptor>), SourceError> {
    if !media_type::is_manifest(&entry.media_type) {
        // Nested indexes and non-image artifacts are not distributed.
        return Err(SourceError::UnsupportedMediaType {
            digest: entry.digest,
            media_type: entry.media_type.clone(),
        });
    }
    let (doc, parsed) =
        fetch_described(store, &entry.digest, entry.size, &entry.media_type, || {
            entry.digest.to_string()
        })
        .await?;
    match parsed {
        Body::Manifest(m) => Ok((doc, blob(&m.config), m.layers.iter().map(blob).collect())),
        Body::Index(_) => Err(SourceError::InvalidDocument {
            digest: doc.digest,
            reason: format!(
                "its descriptor says {} but the document is an index",
                entry.media_type
            ),
        }),
    }
}

/// Deduplicating, bounded list of blobs in first-seen order.
#[derive(Default)]
struct BlobSet {
    sizes: HashMap<Digest, u64>,
    list: Vec<BlobDescriptor>,
}

impl BlobSet {
    fn add(&mut self, blob: BlobDescriptor) -> Result<(), SourceError> {
        if let Some(&first) = self.sizes.get(&blob.digest) {
            if first != blob.size {
                return Err(SourceError::InconsistentBlobSize {
                    digest: blob.digest,
                    first,
                    second: blob.size,
                });
            }
            return Ok(());
        }
        if self.list.len() >= MAX_BLOBS {
            return Err(SourceError::TooManyBlobs { limit: MAX_BLOBS });
        }
        self.sizes.insert(blob.digest, blob.size);
        self.list.push(blob);
        Ok(())
    }

    fn add_manifest(
        &mut self,
        config: BlobDescriptor,
        layers: Vec<BlobDescriptor>,
    ) -> Result<(), SourceError> {
        self.add(config)?;
        layers.into_iter().try_for_each(|l| self.add(l))
    }
}

/// From a verified root document to a [`ResolvedImage`]: selects a platform or
/// fetches every child manifest, and collects the blobs.
async fn complete(
    store: &impl DocumentStore,
    reference: String,
    root: Document,
    parsed: Body,
    platform: Option<&Platform>,
) -> Result<ResolvedImage, SourceError> {
    let mut blobs = BlobSet::default();
    match parsed {
        Body::Manifest(m) => {
            // A single-platform image: nothing to select (its config names the
            // platform, which is for the runtime to check).
            blobs.add_manifest(blob(&m.config), m.layers.iter().map(blob).collect())?;
            Ok(ResolvedImage {
                reference,
                root,
                manifests: Vec::new(),
                blobs: blobs.list,
            })
        }
        Body::Index(Index { manifests }) => {
            if let Some(wanted) = platform {
                let entry = manifests
                    .iter()
                    .find(|e| e.platform.as_ref().is_some_and(|p| wanted.matches(p)))
                    .ok_or_else(|| {
                        let mut available: Vec<String> = Vec::new();
                        for p in manifests.iter().filter_map(|e| e.platform.as_ref()) {
                            let p = p.to_string();
                            if !available.contains(&p) {
                                available.push(p);
                            }
                        }
                        SourceError::PlatformNotFound {
                            wanted: wanted.to_string(),
                            available,
                        }
                    })?;
                let (doc, config, layers) = fetch_child(store, entry).await?;
                blobs.add_manifest(config, layers)?;
                return Ok(ResolvedImage {
                    reference,
                    root: doc,
                    manifests: Vec::new(),
                    blobs: blobs.list,
                });
            }
            let mut seen = HashSet::new();
            let unique: Vec<&Descriptor> =
                manifests.iter().filter(|e| seen.insert(e.digest)).collect();
            if unique.len() > MAX_MANIFESTS {
                return Err(SourceError::TooManyManifests {
                    count: unique.len(),
                    limit: MAX_MANIFESTS,
                });
            }
            if unique.is_empty() {
                return Err(SourceError::InvalidDocument {
                    digest: root.digest,
                    reason: "the index lists no manifests".to_owned(),
                });
            }
            let mut docs = Vec::with_capacity(unique.len());
            for entry in unique {
                let (doc, config, layers) = fetch_child(store, entry).await?;
                blobs.add_manifest(config, layers)?;
                docs.push(doc);
            }
            Ok(ResolvedImage {
                reference,
                root,
                manifests: docs,
                blobs: blobs.list,
            })
        }
    }
}

/// Wraps a blob's byte stream so that it fails, rather than ends quietly, when the
/// bytes run past or stop short of the declared size.
struct ExactSize {
    inner: BlobStream,
    digest: Digest,
    expected: u64,
    seen: u64,
    done: bool,
}

fn exact_size(inner: BlobStream, blob: &BlobDescriptor) -> BlobStream {
    Box::pin(ExactSize {
        inner,
        digest: blob.digest,
        expected: blob.size,
        seen: 0,
        done: false,
    })
}

impl Stream for ExactSize {
    type Item = Result<bytes::Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.expected {
                    self.done = true;
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "blob {} is longer than the {} bytes its descriptor declares",
                            self.digest, self.expected
                        ),
                    ))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self.seen < self.expected {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "blob {} ended after {} of {} bytes",
                            self.digest, self.seen, self.expected
                        ),
                    ))));
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests;
