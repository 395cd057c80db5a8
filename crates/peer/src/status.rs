//! Snapshots of an agent's state for progress bars, summaries and (later) status reports.

use std::collections::BTreeMap;
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
    /// Peers banned for misbehaving, so operators can see an attack or a broken node.
    pub bans: BanCounts,
    /// The bans in force, newest first (at most [`MAX_SHOWN_BANS`]): who and why.
    pub banned: Vec<Ban>,
    /// Releases evicted to keep the store under its cap.
    pub releases_evicted: u64,
    /// Bytes of the distinct blobs of the releases carried, those still downloading at
    /// their full size: what `agent --store-max-size` bounds; exported as
    /// `blobswarm_store_bytes`.
    pub store_bytes: u64,
    /// The store cap (`agent --store-max-size`), if any; exported as
    /// `blobswarm_store_max_bytes` (0 without a cap).
    pub store_max_bytes: Option<u64>,
    /// Gossip messages rejected by validation since start, by (topic, reason) label;
    /// exported as `blobswarm_gossip_rejected_total`.
    pub gossip_rejected: BTreeMap<(&'static str, &'static str), u64>,
    /// Chunk answers cut off because the requester read too slowly (upload slot freed);
    /// exported as `blobswarm_serves_cut_total{reason="slow_reader"}`.
    pub serves_cut: u64,
    /// Connections refused or closed at once since start, by reason label (`limit`,
    /// `banned_peer`, `banned_address`); exported as `blobswarm_connections_denied_total`.
    pub connections_denied: BTreeMap<&'static str, u64>,
}

/// Bans since start by offence, and how many are in force now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BanCounts {
    /// Served a chunk failing its hash or length.
    pub bad_chunk: u64,
    /// Sent a frame the codec refuses (oversized or malformed).
    pub bad_frame: u64,
    /// Sent requests above the rate limit.
    pub request_rate: u64,
    /// A new identity at the listen address of a banned peer.
    pub banned_address: u64,
    /// Bans in force now.
    pub active: usize,
}

/// Bans listed at most in a status (newest first): an operator sees who misbehaves,
/// while a flood of identities cannot make the status, the API or the dashboard grow.
pub const MAX_SHOWN_BANS: usize = 16;

/// One ban in force, as `blobswarm status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned peer's id.
    pub peer: String,
    /// The offence.
    pub kind: BanKind,
    /// The driver's account of it (e.g. which chunk failed its hash).
    pub reason: String,
    /// Until the ban ends.
    pub remaining: Duration,
}

/// Why a peer was banned; the label of the ban metric. The wire's [`Offence`], so the
/// bans an agent reports to the seeder name the same offences its metrics count.
///
/// [`Offence`]: blobswarm_core::wire::Offence
pub type BanKind = blobswarm_core::wire::Offence;

impl BanCounts {
    /// Counts one new ban.
    pub fn add(&mut self, kind: BanKind) {
        match kind {
            BanKind::BadChunk => self.bad_chunk += 1,
            BanKind::BadFrame => self.bad_frame += 1,
            BanKind::RequestRate => self.request_rate += 1,
            BanKind::BannedAddress => self.banned_address += 1,
        }
    }
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
