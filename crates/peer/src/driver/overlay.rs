//! Keeps a node's neighbour set bounded when more peers dial it than it wants.
//!
//! Agents dial at most `max_peers` others, but nothing stops a thousand agents from
//! dialling the seeder's address at once. A node whose neighbour set is full treats
//! any new connection (almost always an inbound one) as *bootstrap-only*: it answers that peer's peer-exchange and
//! release-sync requests, so the newcomer learns whom to dial instead, and closes the
//! connection after a grace period. The core scheduler never sees such a peer, so no
//! chunk is scheduled to or from it. When a neighbour leaves, the longest-waiting
//! bootstrap-only peer takes its place.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use blobswarm_core::wire::Request;

/// How long a bootstrap-only peer may stay connected: enough for identify, peer
/// exchange and release sync to finish on a busy node.
pub(crate) const SHED_GRACE: Duration = Duration::from_secs(5);

/// Peers connected beyond the neighbour bound, each with the time it is disconnected.
#[derive(Debug)]
pub(crate) struct BootstrapOnly<P> {
    deadlines: HashMap<P, Instant>,
}

impl<P> Default for BootstrapOnly<P> {
    fn default() -> Self {
        Self {
            deadlines: HashMap::new(),
        }
    }
}

impl<P: Copy + Hash + Eq> BootstrapOnly<P> {
    /// Takes `peer` in as bootstrap-only until `now + SHED_GRACE`.
    pub(crate) fn admit(&mut self, peer: P, now: Instant) {
        self.deadlines.insert(peer, now + SHED_GRACE);
    }

    /// Whether `peer` is bootstrap-only (not a neighbour).
    pub(crate) fn contains(&self, peer: &P) -> bool {
        self.deadlines.contains_key(peer)
    }

    /// Forgets `peer` (it disconnected); true if it was bootstrap-only.
    pub(crate) fn remove(&mut self, peer: &P) -> bool {
        self.deadlines.remove(peer).is_some()
    }

    /// Removes and returns the peers whose grace has run out.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<P> {
        let due: Vec<P> = self
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &due {
            self.deadlines.remove(p);
        }
        due
    }

    /// Removes and returns the peer admitted longest ago, to become a neighbour.
    pub(crate) fn promote(&mut self) -> Option<P> {
        let peer = self
            .deadlines
            .iter()
            .min_by_key(|(_, d)| **d)
            .map(|(p, _)| *p)?;
        self.deadlines.remove(&peer);
        Some(peer)
    }
}

/// Whether a bootstrap-only peer gets an answer to `request`: only what helps it find
/// neighbours and releases; chunk traffic is for neighbours.
pub(crate) fn answered_when_bootstrap_only(request: &Request) -> bool {
    matches!(
        request,
        Request::Peers | Request::Releases | Request::ChunkMap { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_peers_leave_and_the_oldest_is_promoted_first() {
        let mut b = BootstrapOnly::default();
        let t = Instant::now();
        let (p1, p2) = (1u32, 2u32);
        b.admit(p1, t);
        b.admit(p2, t + Duration::from_secs(1));
        assert!(b.contains(&p1) && b.contains(&p2));
        assert!(
            b.take_due(t + SHED_GRACE - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(b.promote(), Some(p1));
        assert_eq!(
            b.take_due(t + SHED_GRACE + Duration::from_secs(1)),
            vec![p2]
        );
        assert!(!b.contains(&p1));
        assert!(!b.remove(&p2));
    }

    #[test]
    fn only_discovery_requests_are_answered() {
        assert!(answered_when_bootstrap_only(&Request::Peers));
        assert!(answered_when_bootstrap_only(&Request::Releases));
        assert!(!answered_when_bootstrap_only(&Request::Chunk {
            blob: blobswarm_core::Digest::of(b"x"),
            index: 0
        }));
    }
}
