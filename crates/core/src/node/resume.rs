//! Restart: blobs whose chunks are already verified on disk from a previous run.
//!
//! The driver scans its store at start (see [`crate::store::FsStore::scan_resumable`])
//! and hands each blob to [`Node::resume_blob`]. The node holds it until a signed release
//! lists that blob, and uses it only if the saved chunk map hashes to the digest the
//! release signs, exactly as it would check a map received from a peer. From then on the
//! blob downloads only the chunks it lacks.

use std::time::Instant;

use super::{Action, Node, PeerKey};
use crate::{Bitfield, ChunkMap, Digest};

/// Blobs held for resuming are bounded like the blobs of a release, against a store
/// directory filled with junk.
const MAX_RESUMABLE: usize = 4 * crate::MAX_BLOBS;

impl<P: PeerKey> Node<P> {
    /// Start-up: `have` names the chunks of `map` the driver holds verified on disk. Used
    /// once a release lists the blob and signs this map; until then only remembered.
    pub fn resume_blob(&mut self, map: ChunkMap, have: Bitfield, now: Instant) {
        if have.len() != map.count() || have.validate().is_err() || map.validate().is_err() {
            return;
        }
        if self.resumable.len() >= MAX_RESUMABLE {
            return;
        }
        let blob = map.blob();
        self.resumable.insert(blob, (map, have));
        self.apply_resumable(blob);
        self.after_input(now);
    }

    /// Installs a remembered blob if a release lists it with the same chunk map.
    pub(super) fn apply_resumable(&mut self, blob: Digest) {
        let Some(state) = self.blobs.get_mut(&blob) else {
            return;
        };
        let Some((map, have)) = self.resumable.remove(&blob) else {
            return;
        };
        if state.map.is_some() || map.digest() != state.entry.chunk_map {
            return;
        }
        Self::install_map(state, map);
        let mut bytes = 0;
        if let Some(map) = state.map.clone() {
            for i in have.ones() {
                if state.have.set(i) {
                    bytes += map.range(i).map_or(0, |r| r.end - r.start);
                }
            }
        }
        self.stats.bytes_resumed += bytes;
        if state.have.is_full() && !state.complete {
            state.complete = true;
            self.actions.push_back(Action::BlobComplete(blob));
        }
        self.announce_full = true;
        self.rebuild_availability(blob);
    }

    /// The verified chunks of a blob, for the driver's checkpoints.
    pub fn have(&self, blob: &Digest) -> Option<&Bitfield> {
        self.blobs
            .get(blob)
            .filter(|b| b.map.is_some())
            .map(|b| &b.have)
    }
}
