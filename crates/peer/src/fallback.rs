//! The registry as the source of last resort for the herd guard.
//!
//! The agent crate does not speak the registry protocol itself (the seeder crate
//! does, and depends on nothing of the agent): whoever builds the agent plugs in a
//! reader, so tests can also count or fail its reads.

use std::ops::Range;

use blobswarm_core::Digest;
use bytes::Bytes;
use futures::future::BoxFuture;

/// A registry read for the herd guard failed; names the image and blob it was for.
#[derive(Debug, thiserror::Error)]
#[error("{reference} {blob}: {source}")]
pub struct FallbackError {
    /// The release's image reference.
    pub reference: String,
    /// The blob read.
    pub blob: Digest,
    /// What the registry client said.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Reads a byte range of a blob from the registry a release's image came from.
///
/// Called only when the core's herd guard chose this node to re-inject a chunk that
/// no peer holds after the seeder went silent; the agent verifies the bytes against
/// the chunk map before storing them, exactly as for a chunk from a peer.
pub trait RegistryFallback: std::fmt::Debug + Send + Sync + 'static {
    /// `reference` is the release's image reference.
    fn read_range(
        &self,
        reference: String,
        blob: Digest,
        range: Range<u64>,
    ) -> BoxFuture<'static, Result<Bytes, FallbackError>>;
}
