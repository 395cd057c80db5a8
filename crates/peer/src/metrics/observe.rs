//! Bringing the metrics up to date from the agent's status snapshots: counters advance by
//! the difference to the snapshot seen before.

use std::collections::{BTreeMap, HashSet};

use blobswarm_core::ReleaseId;
use blobswarm_core::node::Stats;
use blobswarm_core::wire::ProgressState;

use super::{BAN_REASONS, GossipLabel, Metrics, ReasonLabel, StateLabel, reason};
use crate::status::{AgentStatus, BanCounts};

/// Import durations remembered so each release is observed once; bounded.
const MAX_OBSERVED_IMPORTS: usize = 1024;

#[derive(Default)]
pub(super) struct Last {
    stats: Stats,
    uploaded: u64,
    chunks_verified: u64,
    bans: BanCounts,
    evicted: u64,
    imports_seen: HashSet<ReleaseId>,
    gossip_rejected: BTreeMap<(&'static str, &'static str), u64>,
    serves_cut: u64,
    connections_denied: BTreeMap<&'static str, u64>,
}

impl Metrics {
    /// Brings the metrics up to date with a status snapshot; counters advance by the
    /// difference to the previous snapshot, so calling it often costs nothing extra.
    pub fn observe(&self, s: &AgentStatus) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.observe_stats(&s.stats, &last.stats);
        let d = |now: u64, before: u64| now.saturating_sub(before);
        self.bytes_up.inc_by(d(s.uploaded_bytes, last.uploaded));
        self.chunks_verified
            .inc_by(d(s.chunks_verified, last.chunks_verified));
        for (reason, now, before) in [
            (BAN_REASONS[0], s.bans.bad_chunk, last.bans.bad_chunk),
            (BAN_REASONS[1], s.bans.bad_frame, last.bans.bad_frame),
            (BAN_REASONS[2], s.bans.request_rate, last.bans.request_rate),
            (
                BAN_REASONS[3],
                s.bans.banned_address,
                last.bans.banned_address,
            ),
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
        self.observe_edge(s, &mut last);
        self.observe_releases(s, &mut last);
    }

    /// The gauges of the store and of the releases carried, and the import durations.
    fn observe_releases(&self, s: &AgentStatus, last: &mut Last) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.store_bytes.set(gauge(s.store_bytes));
        self.store_max_bytes
            .set(gauge(s.store_max_bytes.unwrap_or(0)));
        let pending = s
            .releases
            .iter()
            .filter(|r| !r.complete)
            .map(|r| r.total_bytes.saturating_sub(r.have_bytes))
            .sum();
        self.pending_bytes.set(gauge(pending));
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

    /// The counters kept in the node's [`Stats`]: advance each by what it grew since
    /// `last`.
    fn observe_stats(&self, s: &Stats, last: &Stats) {
        let d = |now: u64, before: u64| now.saturating_sub(before);
        self.down("peer", d(s.bytes_from_peers, last.bytes_from_peers));
        self.down("seeder", d(s.bytes_from_seeders, last.bytes_from_seeders));
        self.down(
            "registry",
            d(s.bytes_from_registry, last.bytes_from_registry),
        );
        for (counter, now, before) in [
            (
                &self.registry_fetches,
                s.registry_fetches,
                last.registry_fetches,
            ),
            (
                &self.chunks_rejected,
                s.chunks_rejected,
                last.chunks_rejected,
            ),
            (
                &self.requests_failed,
                s.requests_failed,
                last.requests_failed,
            ),
            (
                &self.releases_rejected,
                s.releases_rejected,
                last.releases_rejected,
            ),
            (
                &self.releases_replayed,
                s.releases_replayed,
                last.releases_replayed,
            ),
            (&self.haves_refused, s.haves_refused, last.haves_refused),
        ] {
            counter.inc_by(d(now, before));
        }
        for (why, now, before) in [
            ("expired", s.herd_claims_expired, last.herd_claims_expired),
            (
                "overridden",
                s.herd_claims_overridden,
                last.herd_claims_overridden,
            ),
        ] {
            self.herd_claims_void
                .get_or_create(&reason(why))
                .inc_by(d(now, before));
        }
    }

    /// The network-edge counters: gossip rejected, serves cut, connections denied.
    fn observe_edge(&self, s: &AgentStatus, last: &mut Last) {
        for (&(topic, why), &n) in &s.gossip_rejected {
            let before = last
                .gossip_rejected
                .get(&(topic, why))
                .copied()
                .unwrap_or(0);
            let label = GossipLabel {
                topic: topic.into(),
                reason: why.into(),
            };
            self.gossip_rejected
                .get_or_create(&label)
                .inc_by(n.saturating_sub(before));
        }
        last.gossip_rejected.clone_from(&s.gossip_rejected);
        self.serves_cut
            .get_or_create(&reason("slow_reader"))
            .inc_by(s.serves_cut.saturating_sub(last.serves_cut));
        last.serves_cut = s.serves_cut;
        for (&why, &n) in &s.connections_denied {
            let before = last.connections_denied.get(why).copied().unwrap_or(0);
            self.connections_denied
                .get_or_create(&reason(why))
                .inc_by(n.saturating_sub(before));
        }
        last.connections_denied.clone_from(&s.connections_denied);
    }
}
