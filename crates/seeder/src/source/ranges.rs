//! Chunk-sized byte ranges of blobs, read from the registry by agents.
//!
//! The herd guard makes exactly one node fetch a chunk that no peer holds once the
//! seeder is gone. Agents only ever talk to registries an operator allowed
//! (`agent --registry-fallback`), so a release naming another registry (or an OCI
//! layout tag, which parses as a Docker Hub name) never makes a node reach out.

use std::collections::HashMap;
use std::ops::Range;

use blobswarm_core::Digest;
use tokio::sync::Mutex;

use super::registry::RegistrySource;
use super::{SourceError, SourceOptions};

/// Registry connections kept for reuse (token and HTTP pool); a bound, not a cache policy.
const MAX_SOURCES: usize = 64;

/// Reads blob ranges from allow-listed registries, reusing each repository's
/// negotiated authorization.
pub struct RegistryRanges {
    allowed: Vec<String>,
    opts: SourceOptions,
    sources: Mutex<HashMap<String, RegistrySource>>,
}

impl std::fmt::Debug for RegistryRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryRanges")
            .field("allowed", &self.allowed)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl RegistryRanges {
    /// `allowed`: registries (`host[:port]` as written in references) that may be read.
    pub fn new(allowed: Vec<String>, opts: SourceOptions) -> Self {
        Self {
            allowed,
            opts,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `range` of `blob` from the registry and repository of `reference` (a release's
    /// image reference). The bytes are unverified: the caller checks them like any chunk.
    ///
    /// # Errors
    /// [`SourceError::BadReference`] when the reference's registry is not allowed, and
    /// any error of [`RegistrySource::read_range`].
    pub async fn fetch(
        &self,
        reference: &str,
        blob: &Digest,
        range: Range<u64>,
    ) -> Result<bytes::Bytes, SourceError> {
        let source = self.source(reference).await?;
        source.read_range(blob, range).await
    }

    async fn source(&self, reference: &str) -> Result<RegistrySource, SourceError> {
        let mut sources = self.sources.lock().await;
        if let Some(s) = sources.get(reference) {
            return Ok(s.clone());
        }
        let source = RegistrySource::new(reference, None, self.opts.clone())?;
        if !self.allowed.iter().any(|r| r == source.registry()) {
            return Err(SourceError::BadReference {
                reference: reference.to_owned(),
                reason: format!(
                    "registry {} is not allowed for fallback reads (agent --registry-fallback)",
                    source.registry()
                ),
            });
        }
        if sources.len() >= MAX_SOURCES {
            sources.clear();
        }
        sources.insert(reference.to_owned(), source.clone());
        Ok(source)
    }
}
