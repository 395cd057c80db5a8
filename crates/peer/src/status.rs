//! Snapshots of an agent's state for progress bars, summaries and (later) status reports.

use std::time::{Duration, Instant};

use blobswarm_core::ReleaseId;
use blobswarm_core::node::Stats;
use blobswarm_core::wire::ProgressState;
use libp2p::{Multiaddr, PeerId};

/// A point-in-time view of one agent, published on a watch channel.
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    /// This agent's identity.
    pub peer_id: Option<PeerId>,
    /// Addresses the agent listens on (with `/p2p/<id>` appended).
    pub listen_addrs: Vec<Multiaddr>,
    /// Connected neighbours.
    pub peers: usize,
    /// Releases the agent carries.
    pub releases: Vec<ReleaseStatus>,
    /// Download counters from the core node.
    pub stats: Stats,
    /// Chunk bytes served to other peers.
    pub uploaded_bytes: u64,
    /// Chunks served.
    pub chunks_served: u64,
    /// Chunks verified and stored.
    pub chunks_verified: u64,
    /// Whether completed releases are imported somewhere (containerd or an OCI layout).
    pub import_target: bool,
    /// When the event loop last published this snapshot: `/healthz` fails when it stalls.
    pub updated: Option<Instant>,
}

/// Where one release stands on this agent.
#[derive(Debug, Clone)]
pub struct ReleaseStatus {
    /// Release id.
    pub id: ReleaseId,
    /// Image reference.
    pub reference: String,
    /// Bytes of all blobs.
    pub total_bytes: u64,
    /// Bytes verified and stored.
    pub have_bytes: u64,
    /// Every blob verified and stored.
    pub complete: bool,
    /// Written to the runtime target (OCI layout).
    pub imported: bool,
    /// Import failure, if any.
    pub import_error: Option<String>,
    /// From acceptance to completion.
    pub download_time: Option<Duration>,
    /// How long the import took, once it succeeded.
    pub import_time: Option<Duration>,
}

impl ReleaseStatus {
    /// The state operators see: in reports, `blobswarm status`, the dashboard and metrics.
    pub fn state(&self, import_target: bool) -> ProgressState {
        if let Some(e) = &self.import_error {
            ProgressState::Failed(e.clone())
        } else if self.imported || (self.complete && !import_target) {
            ProgressState::Done
        } else if self.complete {
            ProgressState::Importing
        } else if self.have_bytes == 0 {
            ProgressState::Waiting
        } else if self.have_bytes >= self.total_bytes {
            ProgressState::Verifying
        } else {
            ProgressState::Downloading
        }
    }
}
