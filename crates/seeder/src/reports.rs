//! The receiving side of progress reports: agents gossip where each release stands on
//! their node (`blobswarm_peer`'s reporter), the seeder's agent hands every report it
//! receives to this aggregator (through [`blobswarm_peer::ReportSink`]), which keeps the
//! newest report per enrolled node (bounded) so `blobswarm status`, the CI wait gate and
//! the dashboard can say which nodes have an image and why the others do not.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobswarm_core::enroll::EnrollmentKeys;
use blobswarm_core::wire::{ProgressReport, ProgressState, ReportedBan};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::admission::{Admission, Admit, IgnoredReport};
use crate::rollout::BanView;

/// Nodes a seeder tracks at most; the least recently heard one is dropped beyond it.
pub const MAX_TRACKED_NODES: usize = 10_000;
/// Throughput samples kept for the dashboard's chart (one per [`SAMPLE_EVERY_MS`]).
pub const MAX_RATE_SAMPLES: usize = 300;
/// Spacing of throughput samples.
pub const SAMPLE_EVERY_MS: u64 = 2_000;
/// A node not heard from for this long is shown as lost: agents report every 3 s, so
/// three reports in a row went missing.
pub const LOST_AFTER_MS: u64 = 10_000;
/// A node lost for this long is dropped from the aggregate (default of
/// [`Aggregator::set_drop_after`]).
pub const DROP_AFTER_MS: u64 = 600_000;
/// A report's rate counts towards the swarm's throughput for this long (two report
/// intervals and a margin): a node that stopped reporting stops adding to it.
pub const RATE_FRESH_MS: u64 = 7_000;

/// Receiver side: the newest report of each node, bounded, plus a short throughput history.
#[derive(Debug)]
pub struct Aggregator {
    nodes: HashMap<PeerId, (ProgressReport, u64)>,
    samples: VecDeque<(u64, u64)>,
    drop_after_ms: u64,
    admission: Admission,
    /// Nodes evicted at [`MAX_TRACKED_NODES`] since start.
    dropped: u64,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self {
            nodes: HashMap::new(),
            samples: VecDeque::new(),
            drop_after_ms: DROP_AFTER_MS,
            admission: Admission::default(),
            dropped: 0,
        }
    }
}

/// Shared handle to a seeder's aggregator.
pub type SharedAggregator = Arc<Mutex<Aggregator>>;

impl Aggregator {
    /// Keeps `report` from `peer` (the gossip message's signed author) unless an
    /// equally new or newer one is held; evicts the least recently heard node when full.
    /// Only enrolled nodes' reports are kept (`admission`); the others are
    /// listed by [`Aggregator::ignored`].
    pub fn insert(&mut self, peer: PeerId, report: ProgressReport, received_ms: u64) {
        if let Some((old, _)) = self.nodes.get(&peer)
            && old.sent_ms >= report.sent_ms
        {
            return;
        }
        match self.admission.admit(peer, &report, received_ms) {
            Admit::Ignore => return,
            Admit::Count { evict } => {
                if let Some(old) = evict {
                    self.nodes.remove(&old);
                }
            }
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
            self.admission.forget(&oldest);
            self.dropped += 1;
        }
        self.nodes.insert(peer, (report, received_ms));
        self.sample(received_ms);
    }

    /// How long a node may stay lost before it is dropped (`seed --drop-lost-after`).
    pub fn set_drop_after(&mut self, after: Duration) {
        self.drop_after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    }

    /// Forgets nodes lost for longer than the drop bound.
    pub fn prune(&mut self, now_ms: u64) {
        let bound = LOST_AFTER_MS.saturating_add(self.drop_after_ms);
        let admission = &mut self.admission;
        self.nodes.retain(|peer, (_, at)| {
            let keep = now_ms.saturating_sub(*at) <= bound;
            if !keep {
                admission.forget(peer);
            }
            keep
        });
    }

    /// Trusts enrolment certificates issued by `keys` (`seed --enroll-pubkey`); with none,
    /// no report counts. Nodes admitted under earlier keys are dropped.
    pub fn set_enrollment(&mut self, keys: EnrollmentKeys) {
        self.admission.set_keys(keys);
        self.nodes.clear();
    }

    /// Reports that did not count and why, newest first (bounded).
    pub fn ignored(&self) -> Vec<IgnoredReport> {
        self.admission.ignored()
    }

    /// Reports ignored since start.
    pub fn ignored_total(&self) -> u64 {
        self.admission.ignored_total()
    }

    /// Nodes forgotten since start because [`MAX_TRACKED_NODES`] others were heard from
    /// more recently (`blobswarm_report_nodes_dropped_total`).
    pub fn dropped_total(&self) -> u64 {
        self.dropped
    }

    /// Takes a throughput sample at `now_ms` unless one was taken less than
    /// [`SAMPLE_EVERY_MS`] ago. Called on a timer as well as on each report, so the chart
    /// and the current figure fall to 0 when the swarm goes quiet or nodes stop reporting.
    pub fn sample(&mut self, now_ms: u64) {
        if self
            .samples
            .back()
            .is_some_and(|(at, _)| now_ms < at + SAMPLE_EVERY_MS)
        {
            return;
        }
        self.prune(now_ms);
        let rate = self.current_rate(now_ms);
        if self.samples.len() >= MAX_RATE_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now_ms, rate));
    }

    /// Swarm-wide bytes per second: the rates of reports younger than [`RATE_FRESH_MS`].
    pub fn current_rate(&self, now_ms: u64) -> u64 {
        self.nodes
            .values()
            .filter(|(_, at)| now_ms.saturating_sub(*at) <= RATE_FRESH_MS)
            .flat_map(|(r, _)| r.releases.iter().map(|p| p.rate))
            .sum()
    }

    /// Nodes held (reporting or lost, not yet dropped).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes heard from within [`LOST_AFTER_MS`].
    pub fn reporting(&self, now_ms: u64) -> usize {
        self.nodes
            .values()
            .filter(|(_, at)| now_ms.saturating_sub(*at) <= LOST_AFTER_MS)
            .count()
    }

    /// True when no node has reported.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's newest report as JSON-ready views, sorted by node name.
    pub fn nodes(&self, now_ms: u64) -> Vec<NodeView> {
        let bound = LOST_AFTER_MS.saturating_add(self.drop_after_ms);
        let mut out: Vec<NodeView> = self
            .nodes
            .iter()
            .filter(|(_, (_, at))| now_ms.saturating_sub(*at) <= bound)
            .map(|(peer, (r, at))| NodeView {
                node: r.node_name.clone(),
                peer: peer.to_string(),
                age_ms: now_ms.saturating_sub(*at),
                lost: now_ms.saturating_sub(*at) > LOST_AFTER_MS,
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

    /// The bans enrolled nodes reported, one line per banned peer naming the nodes that
    /// hold it, most reporters first, at most [`blobswarm_peer::MAX_SHOWN_BANS`]. A ban
    /// ends for the view when its reported time is up or its node got lost.
    pub fn reported_bans(&self, now_ms: u64) -> Vec<BanView> {
        let mut by_peer: BTreeMap<&str, (Vec<&str>, &ReportedBan, u64)> = BTreeMap::new();
        for (r, at) in self.nodes.values() {
            let age = now_ms.saturating_sub(*at);
            if age > LOST_AFTER_MS {
                continue;
            }
            for b in &r.bans {
                let left = u64::from(b.remaining_secs).saturating_sub(age / 1000);
                if left == 0 {
                    continue;
                }
                let e = by_peer.entry(&b.peer).or_insert((Vec::new(), b, left));
                e.0.push(&r.node_name);
                e.2 = e.2.max(left);
            }
        }
        let mut out: Vec<(usize, BanView)> = by_peer
            .into_iter()
            .map(|(peer, (mut nodes, b, left))| {
                nodes.sort_unstable();
                let by = match nodes.len() {
                    1 => nodes[0].to_owned(),
                    n => format!("{} (+{} more)", nodes[0], n - 1),
                };
                let view = BanView {
                    by,
                    peer: peer.to_owned(),
                    kind: b.offence.label().into(),
                    reason: b.offence.describe().into(),
                    remaining_secs: left,
                };
                (nodes.len(), view)
            })
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.peer.cmp(&b.1.peer)));
        out.into_iter()
            .take(blobswarm_peer::MAX_SHOWN_BANS)
            .map(|(_, v)| v)
            .collect()
    }

    /// The throughput history: (unix ms, swarm-wide bytes per second).
    pub fn samples(&self) -> Vec<(u64, u64)> {
        self.samples.iter().copied().collect()
    }
}

/// Samples the aggregator's throughput every [`SAMPLE_EVERY_MS`] for as long as it exists
/// (on the current tokio runtime), so the chart falls to 0 when reports stop.
pub fn start_sampling(agg: &SharedAggregator) {
    let weak = Arc::downgrade(agg);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(SAMPLE_EVERY_MS));
        loop {
            tick.tick().await;
            let Some(agg) = weak.upgrade() else {
                return;
            };
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            agg.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .sample(now_ms);
        }
    });
}

/// The seeder's agent hands each report it receives here (the agent owns no aggregation).
impl blobswarm_peer::ReportSink for Aggregator {
    fn insert(&mut self, from: PeerId, report: ProgressReport, received_ms: u64) {
        Self::insert(self, from, report, received_ms);
    }

    fn reporting(&self, now_ms: u64) -> usize {
        Self::reporting(self, now_ms)
    }

    fn ignored_total(&self) -> u64 {
        Self::ignored_total(self)
    }

    fn nodes_dropped_total(&self) -> u64 {
        Self::dropped_total(self)
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
    /// Not heard from for longer than [`LOST_AFTER_MS`] (dead, partitioned or stuck).
    #[serde(default)]
    pub lost: bool,
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
    use blobswarm_core::Digest;
    use blobswarm_core::enroll::{CertBody, NodeCert};
    use blobswarm_core::wire::ReleaseProgress;
    use libp2p_identity::Keypair;

    /// An aggregator trusting a fresh enrolment key, and that key.
    fn enrolled() -> (Aggregator, Keypair) {
        let issuer = Keypair::generate_ed25519();
        let mut agg = Aggregator::default();
        agg.set_enrollment(EnrollmentKeys::new([issuer.public().to_peer_id()]));
        (agg, issuer)
    }

    /// `report` as `peer` sends it when enrolled by `issuer` under the report's name.
    fn signed(issuer: &Keypair, peer: &PeerId, mut report: ProgressReport) -> ProgressReport {
        let body = CertBody {
            node_name: report.node_name.clone(),
            peer: peer.to_bytes(),
            issued_unix_ms: 0,
            expires_unix_ms: u64::MAX,
        };
        report.cert = Some(NodeCert::issue(issuer, &body).unwrap());
        report
    }

    /// A report from node `name` holding `have` of 1000 bytes of one release, sent at
    /// `sent_ms` (what an agent's reporter sends for that state).
    fn progress(name: &str, have: u64, sent_ms: u64) -> ProgressReport {
        ProgressReport {
            node_name: name.into(),
            sent_ms,
            peers: 2,
            releases: vec![ReleaseProgress {
                release: Digest::of(b"r"),
                state: if have >= 1000 {
                    ProgressState::Importing
                } else {
                    ProgressState::Downloading
                },
                have_bytes: have,
                total_bytes: 1000,
                rate: 0,
            }],
            cert: None,
            bans: Vec::new(),
        }
    }

    #[test]
    fn aggregator_keeps_newest_and_is_bounded() {
        let (mut agg, issuer) = enrolled();
        let peer = PeerId::random();
        let mut newer = signed(&issuer, &peer, progress("n", 10, 10));
        let older = signed(&issuer, &peer, progress("n", 5, 5));
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
            let p = PeerId::random();
            let report = progress(&format!("n{i}"), 1, 1);
            agg.insert(p, signed(&issuer, &p, report), 1000 + i as u64);
        }
        assert_eq!(agg.len(), MAX_TRACKED_NODES);
        assert_eq!(agg.dropped_total(), 6, "every node forgotten is counted");
    }

    #[test]
    fn reports_without_a_trusted_certificate_are_listed_not_counted() {
        let (mut agg, k) = enrolled();
        let real = PeerId::random();
        agg.insert(real, report_at(&k, &real, 0, 1), 1_000);
        // A node minting identities: each reports done, none carries a certificate.
        for i in 0..20 {
            let mut fake = progress(&format!("fake-{i}"), 1000, 1);
            fake.releases[0].state = ProgressState::Done;
            agg.insert(PeerId::random(), fake, 1_000);
        }
        assert_eq!(agg.len(), 1);
        assert_eq!(agg.nodes(1_000)[0].peer, real.to_string());
        assert_eq!(agg.ignored().len(), 20);
        assert_eq!(agg.ignored_total(), 20);
        assert_eq!(agg.ignored()[0].node, "fake-19");
        assert_eq!(agg.ignored()[0].reason, "no enrolment certificate");
    }

    /// A report from `peer` (named after it), enrolled by `issuer`.
    fn report_at(issuer: &Keypair, peer: &PeerId, rate: u64, sent_ms: u64) -> ProgressReport {
        let mut r = progress(&peer.to_string(), 10, sent_ms);
        r.releases[0].rate = rate;
        signed(issuer, peer, r)
    }

    #[test]
    fn bans_enrolled_nodes_report_are_shown_per_banned_peer() {
        // Issue #18: status and the dashboard show peers the agents banned, not only
        // the seeder's own catches; an unenrolled report cannot add a ban to the view.
        use blobswarm_core::wire::{Offence, ReportedBan};
        let (mut agg, k) = enrolled();
        let ban = |peer: &str, secs| ReportedBan {
            peer: peer.into(),
            offence: Offence::BadChunk,
            remaining_secs: secs,
        };
        for (name, bans) in [
            ("node-b", vec![ban("rogue", 300), ban("other", 5)]),
            ("node-a", vec![ban("rogue", 200)]),
        ] {
            let p = PeerId::random();
            let mut r = progress(name, 1, 1);
            r.bans = bans;
            agg.insert(p, signed(&k, &p, r), 1_000);
        }
        let mut framed = progress("outsider", 1, 1);
        framed.bans = vec![ban("honest", 300)];
        agg.insert(PeerId::random(), framed, 1_000);

        let view = agg.reported_bans(3_000);
        assert_eq!(view.len(), 2, "{view:?}");
        assert_eq!(view[0].peer, "rogue");
        assert_eq!(view[0].by, "node-a (+1 more)");
        assert_eq!(view[0].kind, "bad_chunk");
        assert_eq!(
            view[0].remaining_secs, 298,
            "the longest ban, less the report's age"
        );
        assert_eq!(
            (view[1].peer.as_str(), view[1].by.as_str()),
            ("other", "node-b")
        );
        assert!(
            !view.iter().any(|b| b.peer == "honest"),
            "an ignored report's ban"
        );
        // A ban whose time is up, and a node that got lost, leave the view.
        assert_eq!(agg.reported_bans(7_000).len(), 1);
        assert!(agg.reported_bans(1_000 + LOST_AFTER_MS + 1).is_empty());
    }

    #[test]
    fn silent_nodes_are_lost_then_dropped() {
        let (mut agg, k) = enrolled();
        agg.set_drop_after(Duration::from_secs(60));
        let (a, b) = (PeerId::random(), PeerId::random());
        agg.insert(a, report_at(&k, &a, 0, 1), 1_000);
        agg.insert(b, report_at(&k, &b, 0, 1), 1_000);
        agg.insert(b, report_at(&k, &b, 0, 2), 11_000);
        // At 11.000 s `a` was last heard 10.000 s ago: still within the bound.
        assert!(agg.nodes(11_000).iter().all(|n| !n.lost));
        let v = agg.nodes(11_001);
        let lost: Vec<_> = v
            .iter()
            .filter(|n| n.lost)
            .map(|n| n.peer.clone())
            .collect();
        assert_eq!(lost, vec![a.to_string()]);
        assert_eq!(agg.reporting(11_001), 1);
        assert_eq!(v.iter().find(|n| n.lost).unwrap().age_ms, 10_001);
        // A new report brings it back.
        agg.insert(a, report_at(&k, &a, 0, 3), 12_000);
        assert!(agg.nodes(12_000).iter().all(|n| !n.lost));
        // Lost for longer than the drop bound: gone from views, then from memory.
        let gone = 12_000 + LOST_AFTER_MS + 60_000 + 1;
        agg.insert(b, report_at(&k, &b, 0, 4), gone);
        let v = agg.nodes(gone);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].peer, b.to_string());
        assert_eq!(agg.len(), 1, "pruned when the report arrived");
        assert_eq!(agg.reporting(gone), 1);
    }

    #[test]
    fn throughput_decays_to_zero_when_reports_stop_or_go_idle() {
        let (mut agg, k) = enrolled();
        let (a, b) = (PeerId::random(), PeerId::random());
        agg.insert(a, report_at(&k, &a, 100, 1), 1_000);
        agg.insert(b, report_at(&k, &b, 50, 1), 1_500);
        assert_eq!(agg.current_rate(1_500), 150);
        // `b` goes quiet after its rollout (rate 0); `a` stops reporting at all.
        agg.insert(b, report_at(&k, &b, 0, 2), 4_000);
        assert_eq!(agg.samples().last(), Some(&(4_000, 100)));
        agg.sample(8_000);
        assert_eq!(
            agg.samples().last(),
            Some(&(8_000, 100)),
            "a's report is 7 s old"
        );
        agg.sample(9_000); // less than SAMPLE_EVERY_MS after the last one: skipped
        agg.sample(10_001);
        assert_eq!(agg.samples().last(), Some(&(10_001, 0)));
        assert_eq!(agg.samples().len(), 4);
    }
}
