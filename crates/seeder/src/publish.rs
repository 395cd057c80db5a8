//! Assembling and signing the release that tells peers what to fetch and how to verify it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobswarm_core::{Release, ReleaseError, SignedRelease, release_blob};
use libp2p_identity::Keypair;

use crate::ingest::IngestedBlob;
use crate::source::ResolvedImage;

/// Builds and signs the release for an ingested image.
///
/// `sequence` must grow with every release this seeder key signs; the current time in
/// milliseconds is a simple choice that survives restarts. `ttl` bounds how long peers
/// accept the release (replays of old releases are refused after it).
///
/// # Errors
/// [`ReleaseError`] when the release breaks a structural limit.
pub fn sign_release(
    image: &ResolvedImage,
    blobs: &[IngestedBlob],
    key: &Keypair,
    sequence: u64,
    ttl: Option<Duration>,
) -> Result<SignedRelease, ReleaseError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let release = Release {
        reference: image.reference.clone(),
        root: image.root.clone(),
        manifests: image.manifests.clone(),
        blobs: blobs
            .iter()
            .map(|b| release_blob(&b.map, &b.media_type))
            .collect(),
        seeder: key.public().to_peer_id().to_bytes(),
        sequence,
        created_unix_ms: now,
        expires_unix_ms: ttl.map_or(0, |t| now + t.as_millis() as u64),
    };
    SignedRelease::sign(&release, key)
}
