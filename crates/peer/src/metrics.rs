//! Prometheus metrics of an agent or seeder, fed from the agent's status snapshots so the
//! event loop carries no metric code: the core counts, this module turns the counts into
//! exported counters, gauges and a histogram.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the ban counter, in the order of [`BanCounts`]' fields.
const BAN_REASONS: [&str; 4] = ["bad_chunk", "bad_frame", "request_rate", "banned_address"];
/// Labels of the denied-connection counter.
const DENY_REASONS: [&str; 3] = ["limit", "banned_peer", "banned_address"];

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

/// Which gossip topic, and why a message on it was rejected.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GossipLabel {
    topic: String,
    reason: String,
}

/// Release state bucket.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

use observe::Last;

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
    gossip_rejected: Family<GossipLabel, Counter>,
    serves_cut: Family<ReasonLabel, Counter>,
    connections_denied: Family<ReasonLabel, Counter>,
    herd_claims_void: Family<ReasonLabel, Counter>,
    store_bytes: Gauge,
    store_max_bytes: Gauge,
    pending_bytes: Gauge,
    published_bytes: Counter,
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

/// Registers a metric and hands it back (metrics are shared handles).
fn reg<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Creates the labelled series that must be visible at zero from the start.
fn preset<L: EncodeLabelSet + Clone + Eq + std::hash::Hash, M: Default>(
    family: &Family<L, M>,
    labels: impl IntoIterator<Item = L>,
) {
    for l in labels {
        let _ = family.get_or_create(&l);
    }
}

fn reason(r: &str) -> ReasonLabel {
    ReasonLabel { reason: r.into() }
}

impl Metrics {
    /// Registers every metric under the `blobswarm_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("blobswarm");
        let r = &mut registry;
        let mut metrics = Self {
            bytes_down: reg(
                r,
                "bytes_down",
                "Chunk bytes verified and stored, by source (peer, seeder, registry)",
                Family::default(),
            ),
            bytes_up: reg(
                r,
                "bytes_up",
                "Chunk bytes served to other nodes",
                Counter::default(),
            ),
            chunks_verified: reg(
                r,
                "chunks_verified",
                "Chunks whose SHA-256 matched their chunk map and were stored",
                Counter::default(),
            ),
            chunks_rejected: reg(
                r,
                "chunks_rejected",
                "Chunks that failed verification and were dropped",
                Counter::default(),
            ),
            requests_failed: reg(
                r,
                "requests_failed",
                "Requests to peers that failed or timed out",
                Counter::default(),
            ),
            releases_rejected: reg(
                r,
                "releases_rejected",
                "Releases refused (untrusted, bad signature, expired, malformed, replayed)",
                Counter::default(),
            ),
            haves_refused: reg(
                r,
                "haves_refused",
                "Have-information from neighbours refused (wrong length, malformed, over the \
                 per-neighbour bound for unknown blobs)",
                Counter::default(),
            ),
            releases_replayed: reg(
                r,
                "releases_replayed",
                "Of the releases refused, older releases of an image offered after a newer one",
                Counter::default(),
            ),
            peers: reg(
                r,
                "peers_connected",
                "Connected neighbours",
                Gauge::default(),
            ),
            releases: reg(
                r,
                "releases",
                "Releases on this node by state (in_progress, complete, failed)",
                Family::default(),
            ),
            // 0.1 s .. ~410 s.
            import_seconds: reg(
                r,
                "import_duration_seconds",
                "Time to import a completed release into the runtime",
                Histogram::new(exponential_buckets(0.1, 2.0, 13)),
            ),
            last: Mutex::new(Last::default()),
            ..Self::new_cluster(r)
        };
        metrics.registry = registry;
        preset(
            &metrics.releases,
            ["in_progress", "complete", "failed"].map(|s| StateLabel { state: s.into() }),
        );
        preset(
            &metrics.bytes_down,
            ["peer", "seeder", "registry"].map(|s| SourceLabel { source: s.into() }),
        );
        metrics
    }

    /// The metrics about other nodes: reports, bans, gossip and connections refused.
    /// The transfer metrics are placeholders for [`Metrics::new`] to fill.
    fn new_cluster(r: &mut Registry) -> Self {
        let m = Self {
            registry_fetches: reg(
                r,
                "registry_fetches",
                "Fetches from the registry (seeder: blobs; agent: herd-guard chunks)",
                Counter::default(),
            ),
            nodes_reporting: reg(
                r,
                "nodes_reporting",
                "Nodes whose progress reports this seeder holds",
                Gauge::default(),
            ),
            // A gauge fed from the aggregator's own running count (it only grows).
            reports_ignored: reg(
                r,
                "reports_ignored",
                "Progress reports not counted since start (no or a bad enrolment certificate, \
                 node name held by another key)",
                Gauge::default(),
            ),
            report_nodes_dropped: reg(
                r,
                "report_nodes_dropped",
                "Nodes the seeder forgot to stay within its bound of tracked nodes",
                Counter::default(),
            ),
            peers_banned: reg(
                r,
                "peers_banned",
                "Peers banned for misbehaving, by reason (bad_chunk, bad_frame, request_rate, \
                 banned_address)",
                Family::default(),
            ),
            peers_banned_now: reg(r, "peers_banned_now", "Bans in force now", Gauge::default()),
            releases_evicted: reg(
                r,
                "releases_evicted",
                "Superseded releases evicted to keep the chunk store under its cap",
                Counter::default(),
            ),
            gossip_rejected: reg(
                r,
                "gossip_rejected",
                "Gossip messages rejected before forwarding, by topic (release, notice, \
                 report) and reason (too_large, undecodable, invalid, untrusted)",
                Family::default(),
            ),
            serves_cut: reg(
                r,
                "serves_cut",
                "Chunk answers cut off before they were sent, by reason (slow_reader: the \
                 requester read below the minimum rate)",
                Family::default(),
            ),
            connections_denied: reg(
                r,
                "connections_denied",
                "Connections refused or closed at once, by reason (limit, banned_peer, \
                 banned_address)",
                Family::default(),
            ),
            herd_claims_void: reg(
                r,
                "herd_claims_void",
                "Other nodes' herd-guard claims that came to nothing, by reason (expired: \
                 waited for and the chunk never came; overridden: gone past after claims on \
                 the chunk had gone void too often)",
                Family::default(),
            ),
            ..Self::new_store(r)
        };
        preset(
            &m.herd_claims_void,
            [reason("expired"), reason("overridden")],
        );
        preset(&m.peers_banned, BAN_REASONS.map(reason));
        preset(&m.serves_cut, [reason("slow_reader")]);
        preset(&m.connections_denied, DENY_REASONS.map(reason));
        preset(
            &m.gossip_rejected,
            crate::driver::rejection_labels().map(|(topic, reason)| GossipLabel {
                topic: topic.into(),
                reason: reason.into(),
            }),
        );
        m
    }

    /// The metrics of the store and of rollout progress: how full the store is against
    /// its cap, the bytes still to fetch, and (seeder) the image bytes published, the
    /// denominator of "registry bytes ÷ image".
    fn new_store(r: &mut Registry) -> Self {
        Self {
            store_bytes: reg(
                r,
                "store_bytes",
                "Bytes of the distinct blobs of the releases this node carries (those still \
                 downloading at full size): what --store-max-size bounds",
                Gauge::default(),
            ),
            store_max_bytes: reg(
                r,
                "store_max_bytes",
                "The chunk store's cap (agent --store-max-size); 0 when there is none",
                Gauge::default(),
            ),
            pending_bytes: reg(
                r,
                "pending_bytes",
                "Bytes still to fetch for the releases this node is downloading (0 once \
                 every release it carries is complete)",
                Gauge::default(),
            ),
            published_bytes: reg(
                r,
                "published_bytes",
                "Image bytes (all blobs) of each release this seeder published, counted \
                 once per release: the denominator of registry bytes per image",
                Counter::default(),
            ),
            ..Self::placeholder()
        }
    }

    /// Unregistered metrics, overwritten field by field by the constructors above.
    fn placeholder() -> Self {
        Self {
            registry: Registry::default(),
            bytes_down: Family::default(),
            bytes_up: Counter::default(),
            chunks_verified: Counter::default(),
            chunks_rejected: Counter::default(),
            requests_failed: Counter::default(),
            releases_rejected: Counter::default(),
            releases_replayed: Counter::default(),
            haves_refused: Counter::default(),
            peers: Gauge::default(),
            releases: Family::default(),
            import_seconds: Histogram::new(exponential_buckets(0.1, 2.0, 1)),
            registry_fetches: Counter::default(),
            nodes_reporting: Gauge::default(),
            reports_ignored: Gauge::default(),
            report_nodes_dropped: Counter::default(),
            peers_banned: Family::default(),
            peers_banned_now: Gauge::default(),
            releases_evicted: Counter::default(),
            gossip_rejected: Family::default(),
            serves_cut: Family::default(),
            connections_denied: Family::default(),
            herd_claims_void: Family::default(),
            store_bytes: Gauge::default(),
            store_max_bytes: Gauge::default(),
            pending_bytes: Gauge::default(),
            published_bytes: Counter::default(),
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

    /// Seeder side: a release of `bytes` image bytes (all its blobs) was published.
    pub fn release_published(&self, bytes: u64) {
        self.published_bytes.inc_by(bytes);
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

mod observe;
#[cfg(test)]
mod tests;
