//! Why a containerd import failed, phrased so an operator knows what to fix.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use blobswarm_core::Digest;

/// Why connecting to containerd or importing an image failed.
///
/// Each variant is one line naming the socket, snapshotter, digest or file involved,
/// because an agent log line is usually all an operator sees.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// A [`super::ContainerdConfig`] field is unusable.
    #[error("invalid containerd config: {0}")]
    InvalidConfig(String),
    /// Nothing exists at the socket path: containerd is not installed or uses another path.
    #[error(
        "containerd socket {path} does not exist (is containerd running? is --containerd-socket right?)"
    )]
    SocketMissing {
        /// The configured socket path.
        path: PathBuf,
    },
    /// The socket path exists but is not a unix socket.
    #[error("{path} is not a unix socket (wrong --containerd-socket?)")]
    NotASocket {
        /// The configured socket path.
        path: PathBuf,
    },
    /// The socket exists but this process may not connect to it.
    #[error(
        "permission denied connecting to containerd socket {path} (run as root or in the socket's group)"
    )]
    PermissionDenied {
        /// The configured socket path.
        path: PathBuf,
    },
    /// The socket file exists but nobody listens: containerd died and left it behind.
    #[error(
        "connection refused on containerd socket {path} (stale socket; is containerd running?)"
    )]
    Refused {
        /// The configured socket path.
        path: PathBuf,
    },
    /// containerd accepted the connection or request but did not answer in time.
    #[error("containerd at {path} did not answer {op} within {timeout:?}")]
    NotAnswering {
        /// The configured socket path.
        path: PathBuf,
        /// The request that timed out.
        op: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// The connection to containerd broke during a request (containerd restarted or died).
    #[error("lost connection to containerd at {path} during {op} {subject}: {message}")]
    Disconnected {
        /// The configured socket path.
        path: PathBuf,
        /// The request.
        op: &'static str,
        /// What it was about (digest, snapshot, name).
        subject: String,
        /// The transport's message.
        message: String,
    },
    /// The configured snapshotter is not loaded in this containerd.
    #[error("snapshotter {name:?} is not available in containerd ({reason}); available: {}", available.join(", "))]
    SnapshotterUnavailable {
        /// The configured snapshotter.
        name: String,
        /// What containerd says (not loaded, or its init error).
        reason: String,
        /// Snapshotters that loaded without error.
        available: Vec<String>,
    },
    /// containerd re-hashed written content and it does not match the digest.
    #[error("containerd refused {digest}: the written bytes hash to {actual}")]
    DigestMismatch {
        /// The digest the blob was supposed to have.
        digest: Digest,
        /// What containerd computed (as containerd reported it).
        actual: String,
    },
    /// containerd counted a different size than the descriptor says.
    #[error("containerd refused {digest}: {actual} bytes written, descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Descriptor size.
        expected: u64,
        /// What containerd counted.
        actual: String,
    },
    /// Applying a layer produced a different uncompressed digest than the config's diff_id.
    #[error("layer {layer} unpacked to {actual}, but the image config says diff_id {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The config's diff_id.
        expected: String,
        /// What containerd's differ computed.
        actual: String,
    },
    /// A layer of the platform manifest cannot be imported (foreign, non-distributable or
    /// unknown media type). Reported before anything is written.
    #[error("layer {layer} of manifest {manifest} has media type {media_type}: {reason}")]
    UnsupportedLayer {
        /// The layer blob.
        layer: Digest,
        /// Its manifest.
        manifest: Digest,
        /// Its media type.
        media_type: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A document (index, manifest or config) has a media type this importer cannot read.
    #[error("{what} {digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// Which document.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// An index, manifest or config does not parse or does not match its digest.
    #[error("{what} {digest} is unusable: {reason}")]
    BadDocument {
        /// Which document.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// A blob the image needs is not on disk.
    #[error("blob {digest} is missing: {path} does not exist")]
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A blob file on disk does not have the descriptor's size.
    #[error("blob {digest} at {path} has {actual} bytes, descriptor says {expected}")]
    BlobSize {
        /// The blob.
        digest: Digest,
        /// The file.
        path: PathBuf,
        /// Descriptor size.
        expected: u64,
        /// File size.
        actual: u64,
    },
    /// The image reference cannot be recorded.
    #[error("image reference {reference:?} is invalid: {reason}")]
    BadReference {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The OCI layout cannot be read as an image.
    #[error("OCI layout {path}: {reason}")]
    Layout {
        /// The layout directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// containerd answered a request with an error not covered above.
    #[error("containerd {op} {subject} failed: {code}: {message}")]
    Rpc {
        /// The request.
        op: &'static str,
        /// What it was about (digest, snapshot, name).
        subject: String,
        /// The gRPC status code.
        code: String,
        /// containerd's message.
        message: String,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> ContainerdError + 'a {
    move |source| ContainerdError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
