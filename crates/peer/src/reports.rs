//! Progress reports: agents gossip where each release stands on their node, seeders keep
//! the newest report per node (bounded) so `blobswarm status`, the CI wait gate and the
//! dashboard can say which nodes have an image and why the others do not.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use blobswarm_core::ReleaseId;
use blobswarm_core::wire::{
    MAX_NODE_NAME, MAX_REASON, MAX_REPORT_RELEASES, ProgressReport, ProgressState, ReleaseProgress,
    truncate_utf8,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::status::AgentStatus;

/// Nodes a seeder tracks at most; the least recently heard one is dropped beyond it.
pub const MAX_TRACKED_NODES: usize = 10_000;
/// Throughput samples kept for the dashboard's chart (one per [`SAMPLE_EVERY_MS`]).
pub(crate) const MAX_RATE_SAMPLES: usize = 300;
/// Spacing of throughput samples.
pub(crate) const SAMPLE_EVERY_MS: u64 = 2_000;

/// Sender side: turns status snapshots into reports with a per-release download rate.
#[derive(Debug)]
pub(crate) struct Reporter {
    node_name: String,
    last: HashMap<ReleaseId, (u64, Instant)>,
}

impl Reporter {
    pub(crate) fn new(node_name: &str) -> Self {
        Self {
            node_name: truncate_utf8(node_name, MAX_NODE_NAME),
            last: HashMap::new(),
        }
    }

    /// The report for `s`: the newest [`MAX_REPORT_RELEASES`] releases not yet done come
    /// first, then done ones, so a node with many old releases still reports the current.
    pub(crate) fn report(&mut self, s: &AgentStatus, now: Instant, unix_ms: u64) -> ProgressReport {
        let mut releases: Vec<ReleaseProgress> = s
            .releases
            .iter()
            .map(|r| {
                let rate = match self.last.get(&r.id) {
                    Some((bytes, at)) if now > *at => {
                        let secs = now.duration_since(*at).as_secs_f64();
                        (r.have_bytes.saturating_sub(*bytes) as f64 / secs) as u64
                    }
                    _ => 0,
                };
                self.last.insert(r.id, (r.have_bytes, now));
                let state = match r.state(s.import_target) {
                    ProgressState::Failed(reason) => {
                        ProgressState::Failed(truncate_utf8(&reason, MAX_REASON))
                    }
                    other => other,
                };
                ReleaseProgress {
                    release: r.id,
                    state,
                    have_bytes: r.have_bytes,
                    total_bytes: r.total_bytes,
                    rate,
                }
            })
            .collect();
        self.last
            .retain(|id, _| s.releases.iter().any(|r| r.id == *id));
        releases.sort_by_key(|r| matches!(r.state, ProgressState::Done));
        releases.truncate(MAX_REPORT_RELEASES);
        ProgressReport {
            node_name: self.node_name.clone(),
            sent_ms: unix_ms,
            peers: u32::try_from(s.peers).unwrap_or(u32::MAX),
            releases,
        }
    }
}

/// Receiver side: the newest report of each node, bounded, plus a short throughput history.
#[derive(Debug, Default)]
pub struct Aggregator {
    nodes: HashMap<PeerId, (ProgressReport, u64)>,
    samples: VecDeque<(u64, u64)>,
}

/// Shared handle to a seeder's aggregator.
pub type SharedAggregator = Arc<Mutex<Aggregator>>;

impl Aggregator {
    /// Keeps `report` from `peer` (the gossip message's signed author) unless an
    /// equally new or newer one is held; evicts the least recently heard node when full.
    pub fn insert(&mut self, peer: PeerId, report: ProgressReport, received_ms: u64) {
        if let Some((old, _)) = self.nodes.get(&peer)
            && old.sent_ms >= report.sent_ms
        {
            return;
        }
        if !self.nodes.contains_key(&peer)
            && self.nodes.len() >= MAX_TRACKED_NODES
            && let Some(oldest) = self
                .nodes
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p)
        {
            self.nodes.remove(&oldest);
        }
        self.nodes.insert(peer, (report, received_ms));
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| received_ms >= at + SAMPLE_EVERY_MS)
        {
            let rate = self.total_rate();
            if self.samples.len() >= MAX_RATE_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back((received_ms, rate));
        }
    }

    fn total_rate(&self) -> u64 {
        self.nodes
            .values()
            .flat_map(|(r, _)| r.releases.iter().map(|p| p.rate))
            .sum()
    }

    /// Nodes held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node has reported.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's newest report as JSON-ready views, sorted by node name.
    pub fn nodes(&self, now_ms: u64) -> Vec<NodeView> {
        let mut out: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|(peer, (r, at))| NodeView {
                node: r.node_name.clone(),
                peer: peer.to_string(),
                age_ms: now_ms.saturating_sub(*at),
                peers: r.peers,
                releases: r
                    .releases
                    .iter()
                    .map(|p| NodeRelease {
                        release: p.release.to_string(),
                        state: p.state.name().to_owned(),
                        reason: match &p.state {
                            ProgressState::Failed(reason) => Some(reason.clone()),
                            _ => None,
                        },
                        have_bytes: p.have_bytes,
                        total_bytes: p.total_bytes,
                        rate: p.rate,
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node).then(a.peer.cmp(&b.peer)));
        out
    }

    /// The throughput history: (unix ms, swarm-wide bytes per second).
    pub fn samples(&self) -> Vec<(u64, u64)> {
        self.samples.iter().copied().collect()
    }
}

/// One node as the API and `blobswarm status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node name (hostname or Kubernetes node name).
    pub node: String,
    /// Its peer id.
    pub peer: String,
    /// Milliseconds since its newest report arrived.
    pub age_ms: u64,
    /// Its connected neighbours.
    pub peers: u32,
    /// Its releases.
    pub releases: Vec<NodeRelease>,
}

/// One release on one node, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRelease {
    /// Release id (`sha256:…`).
    pub release: String,
    /// waiting, downloading, verifying, importing, done or failed.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes verified.
    pub have_bytes: u64,
    /// Bytes in the release.
    pub total_bytes: u64,
    /// Bytes per second over the last report interval.
    pub rate: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ReleaseStatus;
    use blobswarm_core::Digest;
    use std::time::Duration;

    fn status(have: u64, error: Option<&str>) -> AgentStatus {
        AgentStatus {
            peers: 2,
            import_target: true,
            releases: vec![ReleaseStatus {
                id: Digest::of(b"r"),
                reference: "img".into(),
                total_bytes: 1000,
                have_bytes: have,
                complete: have == 1000,
                imported: false,
                import_error: error.map(str::to_owned),
                download_time: None,
                import_time: None,
            }],
            ..AgentStatus::default()
        }
    }

    #[test]
    fn reporter_computes_rate_and_states() {
        let mut r = Reporter::new("node-a");
        let t0 = Instant::now();
        let a = r.report(&status(0, None), t0, 1);
        assert_eq!(a.releases[0].state, ProgressState::Waiting);
        let b = r.report(&status(500, None), t0 + Duration::from_secs(2), 2);
        assert_eq!(b.releases[0].state, ProgressState::Downloading);
        assert_eq!(b.releases[0].rate, 250);
        let c = r.report(&status(1000, None), t0 + Duration::from_secs(3), 3);
        assert_eq!(c.releases[0].state, ProgressState::Importing);
        let long = "e".repeat(MAX_REASON * 2);
        let d = r.report(&status(1000, Some(&long)), t0 + Duration::from_secs(4), 4);
        assert!(d.validate().is_ok(), "reasons are cut to the cap");
    }

    #[test]
    fn aggregator_keeps_newest_and_is_bounded() {
        let mut agg = Aggregator::default();
        let peer = PeerId::random();
        let mut r = Reporter::new("n");
        let t = Instant::now();
        let mut newer = r.report(&status(10, None), t, 10);
        let older = r.report(&status(5, None), t, 5);
        agg.insert(peer, newer.clone(), 100);
        agg.insert(peer, older, 101);
        assert_eq!(agg.nodes(200)[0].releases[0].have_bytes, 10);
        newer.sent_ms = 20;
        newer.releases[0].state = ProgressState::Failed("disk full".into());
        agg.insert(peer, newer, 102);
        let v = agg.nodes(200);
        assert_eq!(v[0].releases[0].state, "failed");
        assert_eq!(v[0].releases[0].reason.as_deref(), Some("disk full"));
        for i in 0..MAX_TRACKED_NODES + 5 {
            agg.insert(
                PeerId::random(),
                r.report(&status(1, None), t, 1),
                1000 + i as u64,
            );
        }
        assert_eq!(agg.len(), MAX_TRACKED_NODES);
    }
}
