//! Which complete releases to evict so the chunk store stays under its size cap.
//!
//! The store is a serving cache: every completed release is already imported into the
//! node's runtime, and it is kept only so neighbours can fetch from this node. With a
//! cap (`agent --store-max-size`), the agent evicts **complete, imported** releases,
//! least recently used first (last chunk served, or completion), until the bytes of the
//! blobs it carries fit. Never evicted:
//! - releases still downloading or importing (in flight);
//! - **pinned** releases: the newest release of each (seeder, image reference), i.e. what
//!   this node is meant to run and what late joiners will ask for. An older release of a
//!   reference, once superseded, is fair game; and because it is older, the replay guard
//!   refuses it if it is ever announced again, so an eviction never triggers a download.
//!
//! If what remains is still over the cap (every release pinned or in flight), the agent
//! says so in a log line and downloads anyway: the cap bounds the cache, it never stops a
//! rollout. The disk itself is guarded by the pause-on-write-error path.
//!
//! Pure policy over a snapshot, so it is tested without a node or a disk.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use blobswarm_core::{Digest, ReleaseId};

/// One release as the policy sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) id: ReleaseId,
    /// (seeder key, image reference): releases of one key supersede each other.
    pub(crate) lineage: (Vec<u8>, String),
    pub(crate) sequence: u64,
    /// Complete and imported (or nothing to import into): safe to drop.
    pub(crate) settled: bool,
    pub(crate) last_used: Instant,
    /// Its blobs and their sizes.
    pub(crate) blobs: Vec<(Digest, u64)>,
}

/// Bytes of the distinct blobs of `cands`.
fn used_bytes<'a>(cands: impl IntoIterator<Item = &'a Candidate>) -> u64 {
    distinct_bytes(cands.into_iter().flat_map(|c| c.blobs.iter().copied()))
}

/// Bytes of the distinct blobs among `blobs` (digest, size): a blob shared by several
/// releases is stored once, so it counts once. The store's usage, which the cap bounds
/// and `blobswarm_store_bytes` exports.
pub(crate) fn distinct_bytes(blobs: impl IntoIterator<Item = (Digest, u64)>) -> u64 {
    let sizes: HashMap<Digest, u64> = blobs.into_iter().collect();
    sizes.values().sum()
}

/// What to evict, in order, and the bytes the remaining releases would still use.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) evict: Vec<ReleaseId>,
    pub(crate) used_after: u64,
}

/// Least recently used settled, unpinned releases until the rest fits `cap`.
pub(crate) fn plan(cands: &[Candidate], cap: u64) -> Plan {
    let mut used = used_bytes(cands);
    if used <= cap {
        return Plan {
            evict: Vec::new(),
            used_after: used,
        };
    }
    let mut newest: BTreeMap<&(Vec<u8>, String), u64> = BTreeMap::new();
    for c in cands {
        let e = newest.entry(&c.lineage).or_insert(c.sequence);
        *e = (*e).max(c.sequence);
    }
    let mut order: Vec<&Candidate> = cands
        .iter()
        .filter(|c| c.settled && newest.get(&c.lineage).is_some_and(|n| c.sequence < *n))
        .collect();
    order.sort_by_key(|c| c.last_used);
    let mut left: Vec<&Candidate> = cands.iter().collect();
    let mut evict = Vec::new();
    for c in order {
        if used <= cap {
            break;
        }
        left.retain(|l| l.id != c.id);
        evict.push(c.id);
        used = used_bytes(left.iter().copied());
    }
    Plan {
        evict,
        used_after: used,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cand(
        n: u8,
        reference: &str,
        seq: u64,
        settled: bool,
        age: u64,
        blobs: &[(u8, u64)],
    ) -> Candidate {
        let t0 = Instant::now();
        Candidate {
            id: Digest::of(&[n]),
            lineage: (vec![1], reference.into()),
            sequence: seq,
            settled,
            last_used: t0 + Duration::from_secs(100 - age),
            blobs: blobs
                .iter()
                .map(|(d, s)| (Digest::of(&[100 + d]), *s))
                .collect(),
        }
    }

    /// The plan that evicts nothing and leaves `used_after` bytes in use.
    fn nothing_evicted(used_after: u64) -> Plan {
        Plan {
            evict: vec![],
            used_after,
        }
    }

    #[test]
    fn under_the_cap_nothing_goes() {
        let c = [
            cand(1, "a", 1, true, 50, &[(1, 10)]),
            cand(2, "a", 2, true, 0, &[(2, 10)]),
        ];
        assert_eq!(plan(&c, 20), nothing_evicted(20));
    }

    #[test]
    fn oldest_superseded_settled_releases_go_first_and_shared_blobs_count_once() {
        let c = [
            cand(1, "a", 1, true, 90, &[(1, 10), (9, 5)]), // superseded, least recent
            cand(2, "a", 2, true, 40, &[(2, 10), (9, 5)]), // superseded
            cand(3, "a", 3, true, 10, &[(3, 10), (9, 5)]), // newest of "a": pinned
            cand(4, "b", 1, true, 99, &[(4, 10)]),         // newest of "b": pinned
        ];
        // 45 bytes in use (the shared blob once); a cap of 35 drops release 1 only.
        let p = plan(&c, 35);
        assert_eq!(p.evict, vec![c[0].id]);
        assert_eq!(p.used_after, 35);
        // A tighter cap drops release 2 as well, never the pinned ones.
        let p = plan(&c, 1);
        assert_eq!(p.evict, vec![c[0].id, c[1].id]);
        assert_eq!(p.used_after, 25);
    }

    #[test]
    fn in_flight_releases_are_never_evicted() {
        let c = [
            cand(1, "a", 1, false, 90, &[(1, 10)]), // superseded but still importing
            cand(2, "a", 2, false, 0, &[(2, 10)]),
        ];
        assert_eq!(plan(&c, 0), nothing_evicted(20));
    }
}
