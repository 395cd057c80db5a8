//! Crash safety on the agent side: resume from the store at start, and checkpoint the
//! verified chunks of partial blobs about once a second while downloading.
//!
//! The store does the durable part (fsync of the partial file, then an atomic rename of
//! the bitfield; see `FsStore::checkpoint`); this module decides when, and runs it off
//! the event loop, one checkpoint pass at a time so an older snapshot never lands after a
//! newer one.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blobswarm_core::node::Node;
use blobswarm_core::store::FsStore;
use blobswarm_core::{Bitfield, ChunkMap, Digest};
use libp2p::PeerId;
use tracing::{info, warn};

/// How often a blob that gained chunks is checkpointed: each pass costs one fsync per
/// such blob, and a crash loses at most this much work.
const INTERVAL: Duration = Duration::from_secs(1);

/// Which blobs changed since their last checkpoint, and whether a pass is running.
pub(crate) struct Checkpoints {
    dirty: BTreeSet<Digest>,
    maps_saved: HashSet<Digest>,
    running: Arc<AtomicBool>,
    last: Option<Instant>,
}

impl Checkpoints {
    pub(crate) fn new() -> Self {
        Self {
            dirty: BTreeSet::new(),
            maps_saved: HashSet::new(),
            running: Arc::new(AtomicBool::new(false)),
            last: None,
        }
    }

    /// A verified chunk of `blob` was written to the store.
    pub(crate) fn chunk_stored(&mut self, blob: Digest) {
        self.dirty.insert(blob);
    }

    /// Starts a checkpoint pass if one is due and none is running.
    pub(crate) fn tick(&mut self, node: &Node<PeerId>, store: &Arc<FsStore>, now: Instant) {
        if self.dirty.is_empty()
            || self.last.is_some_and(|t| now < t + INTERVAL)
            || self.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.last = Some(now);
        // Snapshot the node's bits now: every set bit's chunk was written before its
        // `Stored` outcome reached the node, so the fsync below covers it.
        let work: Vec<(Option<ChunkMap>, Digest, Bitfield)> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|blob| {
                let map = node.chunk_map(&blob)?;
                let have = node.have(&blob)?.clone();
                let unsaved = self.maps_saved.insert(blob).then(|| (**map).clone());
                Some((unsaved, blob, have))
            })
            .collect();
        let (store, running) = (store.clone(), self.running.clone());
        tokio::task::spawn_blocking(move || {
            for (map, blob, have) in work {
                let saved = map.map_or(Ok(()), |m| store.save_map(&m));
                if let Err(e) = saved.and_then(|()| store.checkpoint(&blob, &have)) {
                    // Not fatal: a restart re-fetches what the checkpoint misses.
                    warn!(blob = %blob.short(), error = %e, "cannot checkpoint download");
                }
            }
            running.store(false, Ordering::Release);
        });
    }
}

/// Start-up: hands every blob the store holds verified chunks of to the node.
///
/// # Errors
/// When the scan task panics.
pub(crate) async fn resume(store: &Arc<FsStore>, node: &mut Node<PeerId>) -> anyhow::Result<()> {
    let store = store.clone();
    let scan = tokio::task::spawn_blocking(move || store.scan_resumable()).await?;
    for e in &scan.problems {
        warn!(error = %e, "discarding unusable download state");
    }
    let now = Instant::now();
    for r in scan.blobs {
        if r.dropped > 0 {
            warn!(blob = %r.map.blob().short(), dropped = r.dropped, "checkpointed chunks failed their hash on disk; fetching them again");
        }
        if r.have.count() > 0 {
            info!(blob = %r.map.blob().short(), have = r.have.count(), chunks = r.map.count(), "resuming from verified chunks on disk");
        }
        node.resume_blob(r.map, r.have, now);
    }
    Ok(())
}
