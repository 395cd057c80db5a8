//! The seeder: turns a container image (in a registry or an OCI layout) into
//! immutable digests and streams each of its blobs exactly once.
//!
//! The seeder is a peer with a different starting point, not a second network stack:
//! it ingests the image into its chunk store ([`ingest`]), signs a release
//! ([`sign_release`]) and hands both to an agent, which serves chunks like any peer.
//!
//! As a long-running service ([`service::Service`]) it seeds on request, tracks each
//! release's rollout across the nodes ([`rollout`]) and answers over an HTTP API
//! ([`api`]) that CI, `blobswarm status` and the dashboard use. The nodes' progress
//! reports reach it through the seeder's agent, which hands them to the [`Aggregator`]
//! (`reports`), which counts only enrolled nodes (`admission`).

mod admission;
pub mod api;
mod ingest;
mod publish;
mod reports;
pub mod rollout;
pub mod service;
pub mod source;

#[cfg(test)]
mod fake;

pub use admission::{IgnoredReport, MAX_IGNORED};
pub use ingest::{IngestError, IngestedBlob, ingest};
pub use publish::sign_release;
pub use reports::{
    Aggregator, DROP_AFTER_MS, LOST_AFTER_MS, MAX_RATE_SAMPLES, MAX_TRACKED_NODES, NodeRelease,
    NodeView, RATE_FRESH_MS, SAMPLE_EVERY_MS, SharedAggregator, start_sampling,
};
