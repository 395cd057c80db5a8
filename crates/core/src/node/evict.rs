//! Dropping complete releases, so a driver can keep its store under a size cap.
//!
//! The node decides nothing here about *which* release goes (that policy, least recently
//! used among complete, unpinned releases, lives with the driver, which knows the disk
//! and the imports); it only forgets a release consistently: the release, the blobs no
//! other release lists, and what neighbours told us about those blobs. The driver then
//! deletes the returned blobs' files.

use std::collections::BTreeSet;

use super::{Node, PeerKey};
use crate::{Digest, ReleaseId};

impl<P: PeerKey> Node<P> {
    /// Forgets a **complete** release and returns the blobs no remaining release lists
    /// (the driver deletes their files). An unknown or incomplete release is left alone
    /// and nothing is returned: in-flight downloads are never evicted.
    pub fn remove_release(&mut self, id: &ReleaseId) -> Vec<Digest> {
        if !self.releases.get(id).is_some_and(|r| r.complete) {
            return Vec::new();
        }
        let Some(gone) = self.releases.remove(id) else {
            return Vec::new();
        };
        let kept: BTreeSet<Digest> = self
            .releases
            .values()
            .flat_map(|r| r.release.blobs.iter().map(|b| b.digest))
            .collect();
        let mut freed = Vec::new();
        for blob in gone.release.blobs.iter().map(|b| b.digest) {
            if kept.contains(&blob) || self.blobs.remove(&blob).is_none() {
                continue;
            }
            for p in self.peers.values_mut() {
                p.haves.remove(&blob);
                p.sent_full.remove(&blob);
                p.declined.retain(|(d, _), _| *d != blob);
            }
            self.new_haves.remove(&blob);
            self.resumable.remove(&blob);
            // Late duplicates of already-stored chunks may still be outstanding; their
            // answers find no blob and are dropped (see `chunk_stored`).
            freed.push(blob);
        }
        freed
    }
}
