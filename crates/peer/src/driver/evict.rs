//! Keeps the chunk store under `AgentConfig::store_max_bytes` by evicting complete,
//! imported, superseded releases, least recently used first (policy in `store_cap`).
//! The driver decides; the adapter deletes the saved release and the blobs.

use std::collections::HashMap;
use std::time::Instant;

use blobswarm_core::Digest;
use tracing::{info, warn};

use super::{Driver, Output, PeerIdentity};
use crate::store_cap::{Candidate, distinct_bytes, plan};

/// When each blob was last served, and what eviction did so far.
#[derive(Default)]
pub(super) struct StoreCap {
    last_served: HashMap<Digest, Instant>,
    /// The over-cap amount last warned about, so the warning is not repeated each tick.
    warned_over: Option<u64>,
    /// Releases evicted since start.
    pub(super) evicted: u64,
}

impl StoreCap {
    /// A chunk of `blob` was served: the releases listing it were used just now.
    pub(super) fn served(&mut self, blob: Digest, now: Instant) {
        self.last_served.insert(blob, now);
    }
}

impl<P: PeerIdentity> Driver<P> {
    /// Bytes of the distinct blobs of every release this node carries (those still
    /// downloading at their full size): the figure the cap bounds, exported so operators
    /// see how near the cap the store is.
    pub(super) fn store_bytes(&self) -> u64 {
        distinct_bytes(
            self.node
                .release_ids()
                .filter_map(|id| self.node.release(id))
                .flat_map(|r| r.blobs.iter().map(|b| (b.digest, b.size))),
        )
    }

    /// Evicts what the policy says, if a cap is set and the store is over it.
    pub(super) fn enforce_store_cap(&mut self, now: Instant) {
        let Some(cap) = self.config.store_max_bytes else {
            return;
        };
        let import_target = self.config.import_target;
        let cands: Vec<Candidate> = self
            .node
            .release_ids()
            .filter_map(|id| {
                let r = self.node.release(id)?;
                let t = self.releases.get(id);
                let settled = self.node.release_complete(id)
                    && (!import_target || t.is_some_and(|t| t.imported));
                let done = t.and_then(|t| t.accepted.map(|a| a + t.completed.unwrap_or_default()));
                let last_used = r
                    .blobs
                    .iter()
                    .filter_map(|b| self.store_cap.last_served.get(&b.digest).copied())
                    .chain(done)
                    .max()
                    .unwrap_or(now);
                Some(Candidate {
                    id: *id,
                    lineage: (r.seeder.clone(), r.reference.clone()),
                    sequence: r.sequence,
                    settled,
                    last_used,
                    blobs: r.blobs.iter().map(|b| (b.digest, b.size)).collect(),
                })
            })
            .collect();
        let p = plan(&cands, cap);
        for id in &p.evict {
            let reference = self.node.release(id).map(|r| r.reference.clone());
            let freed = self.node.remove_release(id);
            self.releases.remove(id);
            self.outputs.push_back(Output::ForgetRelease(*id));
            self.store_cap.evicted += 1;
            for blob in &freed {
                self.store_cap.last_served.remove(blob);
            }
            let bytes: u64 = cands
                .iter()
                .filter(|c| c.id == *id)
                .flat_map(|c| c.blobs.iter())
                .filter(|(d, _)| freed.contains(d))
                .map(|(_, n)| n)
                .sum();
            info!(
                release = %id.short(),
                reference = reference.as_deref().unwrap_or("?"),
                blobs = freed.len(),
                bytes,
                cap,
                "evicted a superseded release to keep the store under its cap"
            );
            self.outputs.push_back(Output::RemoveBlobs(freed));
        }
        let over = p.used_after.checked_sub(cap).filter(|o| *o > 0);
        if over.is_some() && over != self.store_cap.warned_over {
            warn!(
                used = p.used_after,
                cap,
                "store over its cap: what is left is in flight or the newest release of its image"
            );
        }
        self.store_cap.warned_over = over;
    }
}
