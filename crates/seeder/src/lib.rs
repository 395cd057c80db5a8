//! The seeder: turns a container image (in a registry or an OCI layout) into
//! immutable digests and streams each of its blobs exactly once.
//!
//! The seeder is a peer with a different starting point, not a second network stack:
//! it ingests the image into its chunk store ([`ingest`]), signs a release
//! ([`sign_release`]) and hands both to an agent, which serves chunks like any peer.

mod ingest;
mod publish;
pub mod source;

pub use ingest::{IngestError, IngestedBlob, ingest};
pub use publish::sign_release;
