//! Prometheus metrics of an agent or seeder, fed from the agent's status snapshots so the
//! event loop carries no metric code: the core counts, this module turns the counts into
//! exported counters, gauges and a histogram.

use std::collections::HashSet;
use std::sync::Mutex;

use blobswarm_core::ReleaseId;
use blobswarm_core::node::Stats;
use blobswarm_core::wire::ProgressState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::status::{AgentStatus, BanCounts};

/// Labels of the ban counter, in the order of [`BanCounts`]' fields.
const BAN_REASONS: [&str; 3] = ["bad_chunk", "bad_frame", "request_rate"];

/// Where downloaded bytes came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// Why a peer was banned.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Release state bucket.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Import durations remembered so each release is observed once; bounded.
const MAX_OBSERVED_IMPORTS: usize = 1024;

#[derive(Default)]
struct Last {
    stats: Stats,
    uploaded: u64,
    chunks_verified: u64,
    bans: BanCounts,
    evicted: u64,
    imports_seen: HashSet<ReleaseId>,
}

/// The exported metrics; one per process, shared with the HTTP endpoint.
pub struct Metrics {
    registry: Registry,
    bytes_down: Family<SourceLabel, Counter>,
    bytes_up: Counter,
    chunks_verified: Counter,
    chunks_rejected: Counter,
    requests_failed: Counter,
    releases_rejected: Counter,
    releases_replayed: Counter,
    haves_refused: Counter,
    peers: Gauge,
    releases: Family<StateLabel, Gauge>,
    import_seconds: Histogram,
    registry_fetches: Counter,
    nodes_reporting: Gauge,
    reports_ignored: Gauge,
    report_nodes_dropped: Counter,
    peers_banned: Family<ReasonLabel, Counter>,
    peers_banned_now: Gauge,
    releases_evicted: Counter,
    last: Mutex<Last>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `blobswarm_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("blobswarm");
        let bytes_down = Family::<SourceLabel, Counter>::default();
        registry.register(
            "bytes_down",
            "Chunk bytes verified and stored, by source (peer, seeder, registry)",
            bytes_down.clone(),
        );
        let bytes_up = Counter::default();
        registry.register(
            "bytes_up",
            "Chunk bytes served to other nodes",
            bytes_up.clone(),
        );
        let chunks_verified = Counter::default();
        registry.register(
            "chunks_verified",
            "Chunks whose SHA-256 matched their chunk map and were stored",
            chunks_verified.clone(),
        );
        let chunks_rejected = Counter::default();
        registry.register(
            "chunks_rejected",
            "Chunks that failed verification and were dropped",
            chunks_rejected.clone(),
        );
        let requests_failed = Counter::default();
        registry.register(
            "requests_failed",
            "Requests to peers that failed or timed out",
            requests_failed.clone(),
        );
        let releases_rejected = Counter::default();
        registry.register(
            "releases_rejected",
            "Releases refused (untrusted, bad signature, expired, malformed, replayed)",
            releases_rejected.clone(),
        );
        let haves_refused = Counter::default();
        registry.register(
            "haves_refused",
            "Have-information from neighbours refused (wrong length, malformed, over the \
             per-neighbour bound for unknown blobs)",
            haves_refused.clone(),
        );
        let releases_replayed = Counter::default();
        registry.register(
            "releases_replayed",
            "Of the releases refused, older releases of an image offered after a newer one",
            releases_replayed.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers_connected", "Connected neighbours", peers.clone());
        let releases = Family::<StateLabel, Gauge>::default();
        registry.register(
            "releases",
            "Releases on this node by state (in_progress, complete, failed)",
            releases.clone(),
        );
        // 0.1 s .. ~410 s.
        let import_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 13));
        registry.register(
            "import_duration_seconds",
            "Time to import a completed release into the runtime",
            import_seconds.clone(),
        );
        let registry_fetches = Counter::default();
        registry.register(
            "registry_fetches",
            "Fetches from the registry (seeder: blobs; agent: herd-guard chunks)",
            registry_fetches.clone(),
        );
        let nodes_reporting = Gauge::default();
        registry.register(
            "nodes_reporting",
            "Nodes whose progress reports this seeder holds",
            nodes_reporting.clone(),
        );
        // A gauge fed from the aggregator's own running count (it only grows).
        let reports_ignored = Gauge::default();
        registry.register(
            "reports_ignored",
            "Progress reports not counted since start (no or a bad enrolment certificate, \
             node name held by another key)",
            reports_ignored.clone(),
        );
        let report_nodes_dropped = Counter::default();
        registry.register(
            "report_nodes_dropped",
            "Nodes the seeder forgot to stay within its bound of tracked nodes",
            report_nodes_dropped.clone(),
        );
        let peers_banned = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "peers_banned",
            "Peers banned for misbehaving, by reason (bad_chunk, bad_frame, request_rate)",
            peers_banned.clone(),
        );
        let peers_banned_now = Gauge::default();
        registry.register(
            "peers_banned_now",
            "Bans in force now",
            peers_banned_now.clone(),
        );
        let releases_evicted = Counter::default();
        registry.register(
            "releases_evicted",
            "Superseded releases evicted to keep the chunk store under its cap",
            releases_evicted.clone(),
        );
        for reason in BAN_REASONS {
            let _ = peers_banned.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for state in ["in_progress", "complete", "failed"] {
            let _ = releases.get_or_create(&StateLabel {
                state: state.into(),
            });
        }
        for source in ["peer", "seeder", "registry"] {
            let _ = bytes_down.get_or_create(&SourceLabel {
                source: source.into(),
            });
        }
        Self {
            registry,
            bytes_down,
            bytes_up,
            chunks_verified,
            chunks_rejected,
            requests_failed,
            releases_rejected,
            releases_replayed,
            haves_refused,
            peers,
            releases,
            import_seconds,
            registry_fetches,
            nodes_reporting,
            reports_ignored,
            report_nodes_dropped,
            peers_banned,
            peers_banned_now,
            releases_evicted,
            last: Mutex::new(Last::default()),
        }
    }

    fn down(&self, source: &str, n: u64) {
        if n > 0 {
            self.bytes_down
                .get_or_create(&SourceLabel {
                    source: source.into(),
                })
                .inc_by(n);
        }
    }

    /// Seeder side: a blob read from the registry (or OCI layout) while ingesting.
    pub fn registry_blob_read(&self, bytes: u64) {
        self.down("registry", bytes);
        self.registry_fetches.inc();
    }

    /// Seeder side: how many nodes' reports are held.
    pub fn set_nodes_reporting(&self, n: usize) {
        self.nodes_reporting
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Seeder side: progress reports ignored since start (see the seeder's `admission`).
    pub fn set_reports_ignored(&self, n: u64) {
        self.reports_ignored
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Seeder side: nodes forgotten since start at the tracked-node bound (a running
    /// count from the aggregator; the counter advances by the difference).
    pub fn set_report_nodes_dropped(&self, n: u64) {
        let seen = self.report_nodes_dropped.get();
        self.report_nodes_dropped.inc_by(n.saturating_sub(seen));
    }

    /// Brings the metrics up to date with a status snapshot; counters advance by the
    /// difference to the previous snapshot, so calling it often costs nothing extra.
    pub fn observe(&self, s: &AgentStatus) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let d = |now: u64, before: u64| now.saturating_sub(before);
        self.down(
            "peer",
            d(s.stats.bytes_from_peers, last.stats.bytes_from_peers),
        );
        self.down(
            "seeder",
            d(s.stats.bytes_from_seeders, last.stats.bytes_from_seeders),
        );
        self.down(
            "registry",
            d(s.stats.bytes_from_registry, last.stats.bytes_from_registry),
        );
        self.registry_fetches
            .inc_by(d(s.stats.registry_fetches, last.stats.registry_fetches));
        self.chunks_rejected
            .inc_by(d(s.stats.chunks_rejected, last.stats.chunks_rejected));
        self.requests_failed
            .inc_by(d(s.stats.requests_failed, last.stats.requests_failed));
        self.releases_rejected
            .inc_by(d(s.stats.releases_rejected, last.stats.releases_rejected));
        self.releases_replayed
            .inc_by(d(s.stats.releases_replayed, last.stats.releases_replayed));
        self.haves_refused
            .inc_by(d(s.stats.haves_refused, last.stats.haves_refused));
        self.bytes_up.inc_by(d(s.uploaded_bytes, last.uploaded));
        self.chunks_verified
            .inc_by(d(s.chunks_verified, last.chunks_verified));
        for (reason, now, before) in [
            (BAN_REASONS[0], s.bans.bad_chunk, last.bans.bad_chunk),
            (BAN_REASONS[1], s.bans.bad_frame, last.bans.bad_frame),
            (BAN_REASONS[2], s.bans.request_rate, last.bans.request_rate),
        ] {
            self.peers_banned
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .inc_by(d(now, before));
        }
        self.peers_banned_now
            .set(i64::try_from(s.bans.active).unwrap_or(i64::MAX));
        last.bans = s.bans;
        self.releases_evicted
            .inc_by(d(s.releases_evicted, last.evicted));
        last.evicted = s.releases_evicted;
        last.stats = s.stats.clone();
        last.uploaded = s.uploaded_bytes;
        last.chunks_verified = s.chunks_verified;

        self.peers.set(i64::try_from(s.peers).unwrap_or(i64::MAX));
        let (mut in_progress, mut complete, mut failed) = (0, 0, 0);
        for r in &s.releases {
            match r.state(s.import_target) {
                ProgressState::Done => complete += 1,
                ProgressState::Failed(_) => failed += 1,
                _ => in_progress += 1,
            }
            if let Some(t) = r.import_time
                && !last.imports_seen.contains(&r.id)
            {
                if last.imports_seen.len() >= MAX_OBSERVED_IMPORTS {
                    last.imports_seen.clear();
                }
                last.imports_seen.insert(r.id);
                self.import_seconds.observe(t.as_secs_f64());
            }
        }
        for (state, n) in [
            ("in_progress", in_progress),
            ("complete", complete),
            ("failed", failed),
        ] {
            self.releases
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_snapshots_by_difference() {
        let m = Metrics::new();
        let mut s = AgentStatus::default();
        s.stats.bytes_from_peers = 100;
        s.stats.bytes_from_seeders = 10;
        s.uploaded_bytes = 7;
        s.chunks_verified = 3;
        s.peers = 2;
        s.bans.request_rate = 1;
        s.bans.active = 1;
        m.observe(&s);
        m.observe(&s);
        s.stats.bytes_from_peers = 150;
        m.observe(&s);
        m.registry_blob_read(42);
        let text = m.encode();
        assert!(
            text.contains("blobswarm_bytes_down_total{source=\"peer\"} 150"),
            "{text}"
        );
        assert!(text.contains("blobswarm_bytes_down_total{source=\"seeder\"} 10"));
        assert!(text.contains("blobswarm_bytes_down_total{source=\"registry\"} 42"));
        assert!(text.contains("blobswarm_registry_fetches_total 1"));
        assert!(text.contains("blobswarm_bytes_up_total 7"));
        assert!(text.contains("blobswarm_chunks_verified_total 3"));
        assert!(text.contains("blobswarm_peers_connected 2"));
        assert!(text.contains("blobswarm_releases{state=\"failed\"} 0"));
        assert!(text.contains("blobswarm_peers_banned_total{reason=\"request_rate\"} 1"));
        assert!(text.contains("blobswarm_peers_banned_total{reason=\"bad_chunk\"} 0"));
        assert!(text.contains("blobswarm_peers_banned_now 1"));
    }
}
