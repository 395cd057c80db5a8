//! Building the simulated nodes, and the figures of a finished run.

use std::time::Duration;

use serde::Serialize;

use super::{SimConfig, SimError, SimPeer, World, percentile};
use crate::node::{self, Node, PeerKey};
use crate::{ChunkMap, TrustedSeeders};

/// What a simulation measured; serializes to the JSON the CLI prints.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Peers simulated.
    pub nodes: usize,
    /// Image bytes.
    pub image_bytes: u64,
    /// Peers killed by churn.
    pub killed: usize,
    /// Surviving peers that did not complete.
    pub incomplete: usize,
    /// Lower bound on time to complete, seconds.
    pub lower_bound_secs: f64,
    /// Median completion time of surviving peers, seconds.
    pub p50_secs: f64,
    /// 99th percentile completion time, seconds.
    pub p99_secs: f64,
    /// Slowest surviving peer, seconds.
    pub max_secs: f64,
    /// p99 divided by the lower bound.
    pub p99_over_lower_bound: f64,
    /// Bytes the seeder uploaded, divided by the image size.
    pub seeder_upload_over_image: f64,
    /// When the seeder had sent every chunk at least once, seconds after the release: the
    /// swarm cannot finish before, so this over the lower bound shows how much of the
    /// total the seeder's own pace explains.
    pub seeder_injected_all_secs: f64,
    /// Whole-blob registry reads per blob: the seeder's single ingest.
    pub registry_fetches_per_blob: f64,
    /// Chunks the seeder had never sent when it left (0 if it stayed).
    pub chunks_missing_when_seeder_left: usize,
    /// Chunk ranges fetched from the registry by the herd guard.
    pub registry_chunk_fetches: u64,
    /// Most registry fetches of any one chunk (the herd guard's goal: at most 1).
    pub registry_fetches_max_per_chunk: u32,
    /// Mean control (non-chunk) bytes sent and received per node.
    pub control_bytes_per_node: f64,
    /// Events processed.
    pub events: u64,
    /// With a registry read modelled: seconds the seeder's read of the image takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_read_secs: Option<f64>,
    /// With a registry read modelled: the slowest peer's time (from the read's start)
    /// divided by `max(registry read, lower bound)`, the benchmark's headline ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_over_read_or_bound: Option<f64>,
}

/// The seeder (index 0, super-seeding) and the peers (herd guard on), each with its own
/// RNG seed derived from the run's.
pub(super) fn make_nodes(
    cfg: &SimConfig,
    peers: &[SimPeer],
    seeder_id: libp2p_identity::PeerId,
) -> Result<Vec<Node<SimPeer>>, SimError> {
    let mut nodes = Vec::with_capacity(peers.len());
    for (i, peer) in peers.iter().enumerate() {
        let mut c = cfg
            .node
            .clone()
            .with_rng_seed(cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if i == 0 {
            c = c.with_super_seed(true);
        } else {
            c.herd = Some(node::HerdConfig::new(peer.key_bytes()));
        }
        nodes.push(
            Node::new(c, TrustedSeeders::new([seeder_id]))
                .map_err(|e| SimError::Config(e.to_string()))?,
        );
    }
    Ok(nodes)
}

impl World {
    /// The figures of a finished run, times counted from `start` (the release, or the
    /// start of the seeder's registry read); `missing_at_kill` is set when the seeder left.
    pub(super) fn report(
        &self,
        maps: &[ChunkMap],
        killed: usize,
        start: Duration,
        lower_bound: f64,
        missing_at_kill: Option<usize>,
    ) -> SimReport {
        let (w, cfg, n) = (self, &self.cfg, self.nodes.len());
        let mut times: Vec<f64> = (1..n)
            .filter(|&i| !w.dead[i])
            .filter_map(|i| w.done_at[i].map(|t| (t - start).as_secs_f64()))
            .collect();
        times.sort_by(f64::total_cmp);
        let survivors = (1..n).filter(|&i| !w.dead[i]).count();
        let p99 = percentile(&times, 0.99);
        SimReport {
            nodes: cfg.nodes,
            image_bytes: maps.iter().map(ChunkMap::size).sum(),
            killed,
            incomplete: survivors - times.len(),
            lower_bound_secs: lower_bound,
            p50_secs: percentile(&times, 0.5),
            p99_secs: p99,
            max_secs: times.last().copied().unwrap_or(f64::NAN),
            p99_over_lower_bound: p99 / lower_bound,
            seeder_upload_over_image: w.seeder_upload as f64 / cfg.image_size as f64,
            seeder_injected_all_secs: w
                .injected_all_at
                .map_or(f64::NAN, |t| (t - start).as_secs_f64()),
            registry_fetches_per_blob: 1.0,
            chunks_missing_when_seeder_left: missing_at_kill.unwrap_or(0),
            registry_chunk_fetches: w.registry_fetches.values().map(|n| u64::from(*n)).sum(),
            registry_fetches_max_per_chunk: w.registry_fetches.values().copied().max().unwrap_or(0),
            control_bytes_per_node: w.control_bytes as f64 / n as f64,
            events: w.events,
            registry_read_secs: None,
            max_over_read_or_bound: None,
        }
    }
}
