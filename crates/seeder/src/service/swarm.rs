//! The production [`Backend`]: resolve through a [`Source`], ingest each blob once into
//! the seeder agent's chunk store, sign the release and hand it to the agent, which
//! serves it to the swarm.

use std::sync::Arc;
use std::time::Duration;

use blobswarm_core::ReleaseId;
use blobswarm_peer::{AgentHandle, LocalBlob, Metrics};
use libp2p_identity::Keypair;

use super::{Backend, Resolution, SeedError, unix_ms};
use crate::source::{ResolvedImage, Source, SourceOptions};
use crate::{IngestedBlob, ingest, sign_release};

/// Shows the progress of one ingest (bytes read and hashed). The CLI draws a bar on a
/// terminal and logs lines otherwise; the service itself does not care which.
pub trait IngestProgress: Send + Sync {
    /// Bytes of one more buffer read and hashed.
    fn add(&self, bytes: u64);
    /// The ingest is over (successfully).
    fn finish(&self);
}

/// Starts an [`IngestProgress`] for one ingest of `reference` (`total` bytes).
pub type ProgressFactory = dyn Fn(&str, u64) -> Box<dyn IngestProgress> + Send + Sync;

/// Progress nobody watches (the default).
struct Silent;

impl IngestProgress for Silent {
    fn add(&self, _bytes: u64) {}
    fn finish(&self) {}
}

fn silent(_reference: &str, _total: u64) -> Box<dyn IngestProgress> {
    Box::new(Silent)
}

/// Everything the seeder needs to seed one more image into the swarm.
pub struct SwarmBackend {
    agent: AgentHandle,
    metrics: Arc<Metrics>,
    key: Keypair,
    options: SourceOptions,
    chunk_size: u32,
    ttl: Option<Duration>,
    progress: Box<ProgressFactory>,
}

/// What [`SwarmBackend::resolve`] found, carried to [`SwarmBackend::publish`].
#[derive(Debug)]
pub struct Plan {
    source: Source,
    image: ResolvedImage,
}

impl SwarmBackend {
    /// Seeds into `agent`'s store and swarm, signing with `key` (the agent's identity,
    /// which agents trust); releases expire after `ttl` when given.
    pub fn new(
        agent: AgentHandle,
        metrics: Arc<Metrics>,
        key: Keypair,
        options: SourceOptions,
        chunk_size: u32,
        ttl: Option<Duration>,
    ) -> Self {
        Self {
            agent,
            metrics,
            key,
            options,
            chunk_size,
            ttl,
            progress: Box::new(silent),
        }
    }

    /// Shows each ingest's progress through `progress` (default: nothing shown).
    #[must_use]
    pub fn with_progress(mut self, progress: Box<ProgressFactory>) -> Self {
        self.progress = progress;
        self
    }
}

impl Backend for SwarmBackend {
    type Plan = Plan;

    async fn resolve(&self, image: &str) -> Result<Resolution<Plan>, SeedError> {
        let source =
            Source::parse(image, self.options.clone()).map_err(|source| SeedError::Parse {
                image: image.to_owned(),
                source,
            })?;
        let resolved = source
            .resolve()
            .await
            .map_err(|source| SeedError::Resolve {
                image: image.to_owned(),
                source,
            })?;
        Ok(Resolution {
            reference: resolved.reference.clone(),
            root: resolved.root.digest,
            total_bytes: resolved.blobs.iter().map(|b| b.size).sum(),
            blobs: resolved.blobs.len(),
            plan: Plan {
                source,
                image: resolved,
            },
        })
    }

    fn banned(&self) -> Vec<blobswarm_peer::Ban> {
        self.agent.status().borrow().banned.clone()
    }

    async fn publish(&self, plan: Plan) -> Result<ReleaseId, SeedError> {
        let Plan { source, image } = plan;
        let reference = image.reference.clone();
        let total = image.blobs.iter().map(|b| b.size).sum();
        let store = Arc::clone(self.agent.store());
        let progress = (self.progress)(&reference, total);
        let blobs = ingest(&source, &image, &store, self.chunk_size, &|n| {
            progress.add(n);
        })
        .await
        .map_err(|source| SeedError::Ingest {
            reference: reference.clone(),
            source,
        })?;
        progress.finish();
        for b in &blobs {
            if b.bytes_read > 0 {
                self.metrics.registry_blob_read(b.bytes_read);
            }
        }
        let signed =
            sign_release(&image, &blobs, &self.key, unix_ms(), self.ttl).map_err(|source| {
                SeedError::Sign {
                    reference: reference.clone(),
                    source,
                }
            })?;
        let id = self
            .agent
            .publish(local_blobs(blobs), signed)
            .await
            .map_err(|e| SeedError::Publish {
                reference,
                source: e.into(),
            })?;
        self.metrics.release_published(total);
        Ok(id)
    }
}

/// What the seeder ingested, in the form its agent serves from.
pub fn local_blobs(blobs: Vec<IngestedBlob>) -> Vec<LocalBlob> {
    blobs
        .into_iter()
        .map(|b| LocalBlob {
            map: b.map,
            media_type: b.media_type,
        })
        .collect()
}
