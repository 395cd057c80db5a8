//! Why a source could not be parsed, resolved or read.

use std::path::PathBuf;

use blobswarm_core::Digest;

/// Why a source could not be parsed, resolved or read. Each variant names what
/// was wrong and where, and never contains a password.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The reference string is not a valid image reference or layout spec.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The platform string is not `os/arch[/variant]`.
    #[error("invalid platform {platform:?}: expected os/arch[/variant], e.g. linux/amd64")]
    BadPlatform {
        /// The platform as given.
        platform: String,
    },
    /// Credentials could not be determined (e.g. unreadable docker config).
    #[error("registry credentials: {reason}")]
    Credentials {
        /// What was wrong.
        reason: String,
    },
    /// The credential helper the docker config names for the registry failed.
    #[error(transparent)]
    CredentialHelper(#[from] super::HelperError),
    /// The registry could not be reached (connection refused, DNS, TLS, timeout).
    #[error("registry {registry} is unreachable: {cause}")]
    Unreachable {
        /// `host[:port]` of the registry.
        registry: String,
        /// The underlying error.
        cause: String,
    },
    /// The registry refused the credentials or denied access.
    #[error("authentication to registry {registry} failed: {cause}")]
    AuthFailed {
        /// `host[:port]` of the registry.
        registry: String,
        /// What the registry said.
        cause: String,
    },
    /// The registry answered in a way that is not allowed or not understood.
    #[error("registry {registry}: {cause}")]
    Registry {
        /// `host[:port]` of the registry.
        registry: String,
        /// What went wrong.
        cause: String,
    },
    /// The tag or digest does not exist.
    #[error("manifest {reference} not found")]
    NotFound {
        /// What was looked up.
        reference: String,
    },
    /// A manifest or index is larger than [`MAX_DOCUMENT_BYTES`].
    #[error(
        "manifest {reference} is too large: {} (limit {limit} bytes)",
        .size.map_or_else(|| "more than the limit".to_owned(), |s| format!("{s} bytes"))
    )]
    ManifestTooLarge {
        /// What was being fetched.
        reference: String,
        /// The limit in bytes.
        limit: u64,
        /// The size, when it was declared.
        size: Option<u64>,
    },
    /// A manifest or index does not hash to the digest it was requested by.
    #[error("manifest digest mismatch: expected {expected}, content hashes to {actual}")]
    ManifestDigestMismatch {
        /// The digest it was requested by (or the registry announced).
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A manifest or index does not have the size its descriptor declares.
    #[error("manifest {digest} is {actual} bytes but its descriptor says {expected}")]
    DocumentSizeMismatch {
        /// The document's digest.
        digest: Digest,
        /// Declared size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A document (or a descriptor in it) has a media type that is not supported.
    #[error("{digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// Digest of the document or descriptor.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A document is not a well-formed manifest or index.
    #[error("invalid manifest {digest}: {reason}")]
    InvalidDocument {
        /// Digest of the document.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// No manifest in the index matches the wanted platform.
    #[error(
        "platform {wanted} not found in the image index; available: {}",
        if .available.is_empty() { "none (no entry names a platform)".to_owned() } else { .available.join(", ") }
    )]
    PlatformNotFound {
        /// The platform asked for.
        wanted: String,
        /// The platforms the index offers.
        available: Vec<String>,
    },
    /// The index lists more manifests than [`MAX_MANIFESTS`].
    #[error("image index lists {count} manifests, more than the limit of {limit}")]
    TooManyManifests {
        /// How many it lists.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The image needs more blobs than [`MAX_BLOBS`].
    #[error("image has more than {limit} blobs")]
    TooManyBlobs {
        /// The limit.
        limit: usize,
    },
    /// The same blob digest is declared with two different sizes.
    #[error("blob {digest} is declared with size {first} and with size {second}")]
    InconsistentBlobSize {
        /// The blob.
        digest: Digest,
        /// Size first seen.
        first: u64,
        /// Conflicting size.
        second: u64,
    },
    /// A blob is missing from the registry or layout.
    #[error("blob {digest} not found in {location}")]
    BlobNotFound {
        /// The blob.
        digest: Digest,
        /// Repository or layout path.
        location: String,
    },
    /// A blob's stored or announced size differs from its descriptor.
    #[error("blob {digest} is {actual} bytes but its descriptor says {expected}")]
    BlobSizeMismatch {
        /// The blob.
        digest: Digest,
        /// Declared size.
        expected: u64,
        /// Stored or announced size.
        actual: u64,
    },
    /// The OCI layout is malformed or does not contain what was asked for.
    #[error("OCI layout {}: {reason}", .path.display())]
    Layout {
        /// The file or directory concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tag is not in the OCI layout.
    #[error(
        "OCI layout {}: no image tagged {tag:?}; tags present: {}",
        .path.display(),
        if .available.is_empty() { "none".to_owned() } else { .available.join(", ") }
    )]
    LayoutRefNotFound {
        /// The layout directory.
        path: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags the layout has.
        available: Vec<String>,
    },
    /// No tag was given and the layout holds more than one image.
    #[error(
        "OCI layout {} holds {} images; name one as oci-layout:DIR:TAG (tags: {})",
        .path.display(), .available.len(), .available.join(", ")
    )]
    LayoutAmbiguous {
        /// The layout directory.
        path: PathBuf,
        /// The tags (or digests of untagged entries) the layout has.
        available: Vec<String>,
    },
    /// Reading a file of the OCI layout failed.
    #[error("OCI layout: reading {} failed: {source}", .path.display())]
    LayoutIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
