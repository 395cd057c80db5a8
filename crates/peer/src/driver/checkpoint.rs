//! When to checkpoint partial downloads: about once a second for the blobs that gained
//! chunks, one pass at a time so an older snapshot never lands after a newer one, and a
//! last pass at shutdown. The store does the durable part (`FsStore::checkpoint`); the
//! adapter runs each pass off its event loop.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use blobswarm_core::Digest;
use blobswarm_core::node::{Node, PeerKey};

use super::CheckpointBlob;

/// How often a blob that gained chunks is checkpointed: each pass costs one fsync per
/// such blob, and a crash loses at most this much work.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// Which blobs changed since their last checkpoint, and whether a pass is running.
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    dirty: BTreeSet<Digest>,
    maps_saved: HashSet<Digest>,
    running: bool,
    last: Option<Instant>,
}

impl Checkpoints {
    /// A verified chunk of `blob` was written to the store.
    pub(super) fn chunk_stored(&mut self, blob: Digest) {
        self.dirty.insert(blob);
    }

    /// The pass to run now, if one is due and none is running.
    pub(super) fn tick<P: PeerKey>(
        &mut self,
        node: &Node<P>,
        now: Instant,
    ) -> Option<Vec<CheckpointBlob>> {
        if self.dirty.is_empty() || self.running || self.last.is_some_and(|t| now < t + INTERVAL) {
            return None;
        }
        self.last = Some(now);
        self.running = true;
        Some(self.plan(node))
    }

    /// The last pass before the agent stops: every blob not yet checkpointed, due or
    /// not. The adapter runs it after any pass still running.
    pub(super) fn flush<P: PeerKey>(&mut self, node: &Node<P>) -> Option<Vec<CheckpointBlob>> {
        if self.dirty.is_empty() {
            return None;
        }
        self.running = true;
        Some(self.plan(node))
    }

    /// The running pass finished.
    pub(super) fn done(&mut self) {
        self.running = false;
    }

    /// Snapshots the node's bits now: every set bit's chunk was written before its
    /// `Stored` outcome reached the node, so the pass's fsync covers it.
    fn plan<P: PeerKey>(&mut self, node: &Node<P>) -> Vec<CheckpointBlob> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|blob| {
                let map = node.chunk_map(&blob)?;
                let have = node.have(&blob)?.clone();
                let map = self.maps_saved.insert(blob).then(|| (**map).clone());
                Some(CheckpointBlob { map, blob, have })
            })
            .collect()
    }
}
