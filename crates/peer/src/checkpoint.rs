//! Crash safety, the file side: scan the store for resumable downloads at start, and run
//! the checkpoint passes the driver plans (`driver::checkpoint` decides when).
//!
//! The store does the durable part (fsync of the partial file, then an atomic rename of
//! the bitfield; see `FsStore::checkpoint`).

use std::sync::Arc;

use blobswarm_core::store::{FsStore, Resumed};
use tracing::warn;

use crate::driver::CheckpointBlob;

/// Start-up: the blobs the store holds verified chunks of. Blocking: call off the loop.
pub(crate) fn scan(store: &FsStore) -> Vec<Resumed> {
    let scan = store.scan_resumable();
    for e in &scan.problems {
        warn!(error = %e, "discarding unusable download state");
    }
    scan.blobs
}

/// Runs one checkpoint pass: each blob's map the first time, then its bits. Blocking.
pub(crate) fn run_pass(store: &Arc<FsStore>, work: Vec<CheckpointBlob>) {
    for CheckpointBlob { map, blob, have } in work {
        let saved = map.map_or(Ok(()), |m| store.save_map(&m));
        if let Err(e) = saved.and_then(|()| store.checkpoint(&blob, &have)) {
            // Not fatal: a restart re-fetches what the checkpoint misses.
            warn!(blob = %blob.short(), error = %e, "cannot checkpoint download");
        }
    }
}
