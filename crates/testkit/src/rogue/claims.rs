//! Finding 8 on its own: a node that behaves in every other way but claims every chunk of
//! the given blobs for the herd guard, again each time its claim goes void, and never
//! fetches one. Honest agents must not stall waiting for it once the seeder is gone.
//! It is kept apart from [`super::Attacks`] because those attacks get the rogue scored
//! down and dropped from the gossip mesh, and then its claims would never arrive.

use blobswarm_core::wire::SwarmNotice;
use blobswarm_core::{Digest, codec};
use blobswarm_peer::{Hooks, Topic};
use libp2p::PeerId;

/// Chunk indices claimed per blob, from 0 (more than any test blob has).
const CLAIMED: u32 = 256;

/// Status ticks between two rounds of claims (one a second, far below any gossip limit).
const CLAIM_EVERY: u64 = 5;

/// The claiming hooks: a claim per blob once a second.
#[derive(Debug)]
pub struct Claims {
    gossip: Vec<(Topic, Vec<u8>)>,
    ticks: u64,
}

impl Claims {
    /// Claims on every chunk of `blobs`.
    ///
    /// # Panics
    /// When a claim cannot be encoded (a bug in this test code).
    pub fn new(blobs: &[Digest]) -> Self {
        let gossip = blobs
            .iter()
            .map(|blob| {
                let claim = SwarmNotice::Claim {
                    blob: *blob,
                    indices: (0..CLAIMED).collect(),
                };
                (
                    Topic::Notice,
                    codec::encode(&claim).expect("encoding a claim"),
                )
            })
            .collect();
        Self { gossip, ticks: 0 }
    }
}

impl Hooks<PeerId> for Claims {
    fn gossip(&mut self) -> Vec<(Topic, Vec<u8>)> {
        self.ticks += 1;
        if self.ticks % CLAIM_EVERY != 1 {
            return Vec::new();
        }
        self.gossip.clone()
    }
}
