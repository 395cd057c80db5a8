//! Why seeding one image failed: one variant per step, each naming the image or the
//! reference it was working on.

use std::error::Error;

use blobswarm_core::ReleaseError;

use crate::IngestError;
use crate::source::SourceError;

/// Why a seed job failed. The `Display` of each variant names the step and the image;
/// the cause is its [`source`](Error::source). [`SeedError::chain`] joins both the way
/// job entries and the API report them.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The reference is not an image reference or layout spec.
    #[error("parsing image reference {image}")]
    Parse {
        /// The reference as asked for.
        image: String,
        /// What is wrong with it.
        source: SourceError,
    },
    /// The registry or layout could not resolve it.
    #[error("resolving {image}")]
    Resolve {
        /// The reference as asked for.
        image: String,
        /// The registry's or layout's answer.
        source: SourceError,
    },
    /// A blob could not be read into the chunk store.
    #[error("ingesting {reference}")]
    Ingest {
        /// The resolved reference.
        reference: String,
        /// Which blob and why.
        source: IngestError,
    },
    /// The release breaks a structural limit.
    #[error("signing the release of {reference}")]
    Sign {
        /// The resolved reference.
        reference: String,
        /// The broken limit.
        source: ReleaseError,
    },
    /// The seeder's agent did not take the release.
    #[error("publishing {reference} to the swarm")]
    Publish {
        /// The resolved reference.
        reference: String,
        /// The agent's error.
        source: Box<dyn Error + Send + Sync + 'static>,
    },
}

impl SeedError {
    /// The error and its causes, outermost first, joined by `": "` (the form
    /// `anyhow`'s `{:#}` prints, so messages read the same wherever they surface).
    pub fn chain(&self) -> String {
        blobswarm_core::error_chain(self)
    }
}
