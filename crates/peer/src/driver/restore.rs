//! Start-up: resume verified chunks the store holds, then feed the newest saved release
//! of each image back through the node, so every check a gossiped release gets applies
//! again and the replay guard is rebuilt. Older releases of an image with a newer one
//! saved, and releases the node refuses now (expired, no longer trusted), are deleted.

use tracing::{info, warn};

use super::{Driver, Now, Output, PeerIdentity, Startup};
use crate::saved_releases::{Keep, newest_per_image};

impl<P: PeerIdentity> Driver<P> {
    /// Hands the store's verified chunks, then the saved releases, to the node.
    pub(super) fn resume(&mut self, startup: Startup, now: Now) {
        for r in startup.resumed {
            if r.dropped > 0 {
                warn!(blob = %r.map.blob().short(), dropped = r.dropped, "checkpointed chunks failed their hash on disk; fetching them again");
            }
            if r.have.count() > 0 {
                info!(blob = %r.map.blob().short(), have = r.have.count(), chunks = r.map.count(), "resuming from verified chunks on disk");
            }
            self.node.resume_blob(r.map, r.have, now.at);
        }
        let restored = self.restore(startup.saved, now);
        if restored > 0 {
            info!(restored, "releases restored from disk");
        }
    }

    /// Feeds the newest saved release of each image to the node; returns how many it took.
    fn restore(&mut self, saved: Vec<blobswarm_core::SignedRelease>, now: Now) -> usize {
        let mut restored = 0;
        for keep in newest_per_image(saved, &self.config.trusted) {
            let signed = match keep {
                Keep::Newest(signed) => signed,
                Keep::Superseded(id) => {
                    info!(release = %id.short(), "saved release superseded by a newer one; not restored");
                    self.outputs.push_back(Output::ForgetRelease(id));
                    continue;
                }
            };
            let id = signed.id();
            match self.node.handle_release(signed, now.at, now.unix_ms) {
                Ok(_) => restored += 1,
                Err(e) => {
                    info!(release = %id.short(), reason = %e, "saved release not restored");
                    self.outputs.push_back(Output::ForgetRelease(id));
                }
            }
        }
        restored
    }
}
