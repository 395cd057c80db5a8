//! What a driver may read of a node: counters, releases and their state, per-blob
//! progress, chunk maps.

use std::sync::Arc;

use super::{BlobProgress, Node, PeerKey, Stats};
use crate::replay::ReplayGuard;
use crate::{ChunkMap, Digest, Release, ReleaseId, SignedRelease};

impl<P: PeerKey> Node<P> {
    /// Counters for metrics and summaries.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The replay guard: the newest accepted sequence per seeder and reference.
    pub fn replay_guard(&self) -> &ReplayGuard {
        &self.replay
    }

    /// An accepted release.
    pub fn release(&self, id: &ReleaseId) -> Option<&Arc<Release>> {
        self.releases.get(id).map(|r| &r.release)
    }

    /// The signed form of an accepted release, as received: what a driver saves so that
    /// after a restart it re-verifies the release and rebuilds the replay guard.
    pub fn signed_release(&self, id: &ReleaseId) -> Option<&SignedRelease> {
        self.releases.get(id).map(|r| &r.signed)
    }

    /// Ids of all accepted releases.
    pub fn release_ids(&self) -> impl Iterator<Item = &ReleaseId> {
        self.releases.keys()
    }

    /// Whether release `id` was accepted and a newer release of the same image (same
    /// seeder, same reference, higher sequence) has been accepted since: a driver does
    /// not import it, as the newer one would replace it at once.
    pub fn is_superseded(&self, id: &ReleaseId) -> bool {
        self.releases
            .get(id)
            .is_some_and(|r| !self.replay.is_newest(&r.release, *id))
    }

    /// Whether every blob of release `id` is complete.
    pub fn release_complete(&self, id: &ReleaseId) -> bool {
        self.releases.get(id).is_some_and(|r| r.complete)
    }

    /// Progress of every blob the node carries.
    pub fn progress(&self) -> Vec<BlobProgress> {
        self.blobs
            .values()
            .map(|b| BlobProgress {
                blob: b.entry.digest,
                size: b.entry.size,
                have_bytes: b.map.as_ref().map_or(0, |m| {
                    b.have
                        .ones()
                        .map(|i| m.range(i).map_or(0, |r| r.end - r.start))
                        .sum()
                }),
                complete: b.complete,
            })
            .collect()
    }

    /// The chunk map of a blob, once known.
    pub fn chunk_map(&self, blob: &Digest) -> Option<&Arc<ChunkMap>> {
        self.blobs.get(blob)?.map.as_ref()
    }

    /// Number of connected neighbours.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}
