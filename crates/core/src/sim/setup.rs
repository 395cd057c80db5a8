//! What a simulation starts from: a synthetic image (chunk maps of made-up digests and
//! a release signed by the seeder's real key) and a random overlay of bounded degree.

use std::collections::BTreeSet;

use libp2p_identity::Keypair;
use rand::Rng;
use rand::rngs::StdRng;

use super::{SimConfig, SimError};
use crate::{ChunkMap, Digest, Release, SignedRelease, release_blob};

fn fake_digest(tag: u8, a: u64, b: u64) -> Digest {
    let mut d = [0u8; 32];
    d[0] = tag;
    d[1..9].copy_from_slice(&a.to_be_bytes());
    d[9..17].copy_from_slice(&b.to_be_bytes());
    Digest::from_bytes(d)
}

/// Layer shares of the image, like a typical base + app image.
const LAYER_SHARES: [u64; 4] = [20, 480, 350, 150];

pub(super) fn build_image(
    cfg: &SimConfig,
    key: &Keypair,
) -> Result<(Vec<ChunkMap>, SignedRelease), SimError> {
    let mut maps = Vec::new();
    for (i, share) in LAYER_SHARES.iter().enumerate() {
        let size = cfg.image_size * share / 1000;
        let n = crate::chunk_count(size, cfg.chunk_size)
            .map_err(|e| SimError::Config(e.to_string()))?;
        let blob = fake_digest(1, i as u64, 0);
        let chunks = (0..n)
            .map(|c| fake_digest(2, i as u64, u64::from(c)))
            .collect();
        maps.push(
            ChunkMap::new(blob, size, cfg.chunk_size, chunks)
                .map_err(|e| SimError::Config(e.to_string()))?,
        );
    }
    let blobs = maps
        .iter()
        .map(|m| release_blob(m, "application/vnd.oci.image.layer.v1.tar"))
        .collect();
    let release = Release::minimal("sim.local/image:latest", blobs, &key.public().to_peer_id());
    let signed = SignedRelease::sign(&release, key).map_err(|e| SimError::Config(e.to_string()))?;
    Ok((maps, signed))
}

/// A random overlay: every node links to `degree / 2` random others, links are symmetric.
pub(super) fn overlay(n: usize, degree: usize, rng: &mut StdRng) -> Vec<BTreeSet<u32>> {
    let mut adj = vec![BTreeSet::new(); n];
    let half = (degree / 2).max(1).min(n.saturating_sub(1));
    for i in 0..n {
        let mut tries = 0;
        while adj[i].len() < half && tries < 10 * half {
            tries += 1;
            let j = rng.gen_range(0..n);
            if j != i {
                adj[i].insert(j as u32);
                adj[j].insert(i as u32);
            }
        }
    }
    adj
}
