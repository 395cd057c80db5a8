//! The one OCI image model every crate shares: documents, media types, platforms and a
//! bounded manifest/index parser.
//!
//! The seeder (reading registries and layouts), the containerd importer and the OCI
//! layout target all judge images through this module, so a platform, a media type or a
//! malformed manifest is treated the same way whether an image is being seeded or
//! imported. Nothing here does I/O: callers read bytes (bounded) and hand them in.
//!
//! Why not `oci-spec`'s types: every descriptor must name a [`Digest`](crate::Digest) (sha256 only, as
//! the store and the swarm address blobs), Docker v2 documents go through the same path
//! as OCI ones, a document's exact bytes are kept (its digest is over them), and every
//! refusal is a typed [`ParseError`] naming the document's digest. `oci-spec`'s serde
//! types would need a second conversion pass with its own, untyped failure modes, and
//! they require fields (a config's `os`/`architecture`) the importer never reads.

mod document;
pub mod media_type;
mod parse;
mod platform;

pub use document::Document;
pub use parse::{Body, Descriptor, Index, Limits, Manifest, ParseError, Parsed, parse};
pub use platform::{Platform, PlatformError};

/// Largest manifest or index accepted, in bytes (the limit registries enforce).
pub const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Most layers one image manifest may list.
pub const MAX_LAYERS: usize = 10_000;

/// The annotation OCI tools look an image up by (`skopeo oci:DIR:REF`, `umoci --image DIR:REF`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (`ctr export`, buildkit) names images by in a layout's index.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
