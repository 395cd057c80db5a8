//! Replay protection: an old release, validly signed, must not win over a newer one.
//!
//! # The rule
//! Releases are ordered per **(seeder key, image reference)** by their signed
//! `sequence`. A node remembers, for each such pair, the newest release it accepted
//! (its sequence and its id) and then:
//! - accepts a release whose sequence is **higher** (and remembers it as the newest);
//! - accepts the **same** release again (same sequence, same id: a re-announcement);
//! - refuses a release whose sequence is **lower** ([`ReleaseError::Replayed`]), and
//!   one with the **same** sequence but a different body (the seeder never signs two
//!   releases with one sequence, so one of them is forged or replayed).
//!
//! Expiry is the other half: [`crate::SignedRelease::verify`] refuses a release after
//! its `expires_unix_ms`, so an old release cannot be replayed to a node that never saw
//! the newer one once its time-to-live is over.
//!
//! The seeder signs with `sequence` = Unix time in milliseconds at signing, so the
//! order survives seeder restarts without state (as long as its clock does not step
//! back by more than the time between two releases of one reference).
//!
//! The guard lives in memory; a driver that keeps releases across restarts re-feeds
//! them through [`crate::node::Node::handle_release`], which rebuilds it.

use std::collections::HashMap;

use crate::{Release, ReleaseError, ReleaseId};

/// The newest accepted release per (seeder key, image reference). Entries are only
/// created for releases that already passed signature checks by a trusted seeder, so
/// its size is bounded by what trusted seeders sign.
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    newest: HashMap<(Vec<u8>, String), (u64, ReleaseId)>,
}

impl ReplayGuard {
    /// An empty guard: every first release of a (seeder, reference) pair is accepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `release` (with id `id`) may be accepted under the rule in the module docs.
    ///
    /// # Errors
    /// [`ReleaseError::Replayed`] naming the reference, the refused sequence and the
    /// newest accepted one.
    pub fn check(&self, release: &Release, id: ReleaseId) -> Result<(), ReleaseError> {
        let key = (release.seeder.clone(), release.reference.clone());
        match self.newest.get(&key) {
            Some(&(newest, newest_id))
                if release.sequence < newest || (release.sequence == newest && id != newest_id) =>
            {
                Err(ReleaseError::Replayed {
                    reference: release.reference.chars().take(200).collect(),
                    sequence: release.sequence,
                    newest,
                })
            }
            _ => Ok(()),
        }
    }

    /// Records an accepted release; a lower sequence than the one remembered is ignored.
    pub fn record(&mut self, release: &Release, id: ReleaseId) {
        let key = (release.seeder.clone(), release.reference.clone());
        let entry = self.newest.entry(key).or_insert((release.sequence, id));
        if release.sequence > entry.0 {
            *entry = (release.sequence, id);
        }
    }

    /// [`ReplayGuard::check`], then [`ReplayGuard::record`] when it passes.
    ///
    /// # Errors
    /// As [`ReplayGuard::check`]; nothing is recorded then.
    pub fn admit(&mut self, release: &Release, id: ReleaseId) -> Result<(), ReleaseError> {
        self.check(release, id)?;
        self.record(release, id);
        Ok(())
    }

    /// The newest sequence accepted from `seeder` (peer id bytes) for `reference`.
    pub fn newest(&self, seeder: &[u8], reference: &str) -> Option<u64> {
        self.newest
            .get(&(seeder.to_vec(), reference.to_owned()))
            .map(|&(s, _)| s)
    }

    /// Whether `id` is the newest accepted release of its (seeder, reference) pair,
    /// i.e. not superseded by a higher sequence.
    pub fn is_newest(&self, release: &Release, id: ReleaseId) -> bool {
        self.newest
            .get(&(release.seeder.clone(), release.reference.clone()))
            .is_some_and(|&(_, newest_id)| newest_id == id)
    }
}

#[cfg(test)]
mod tests {
    use libp2p_identity::Keypair;

    use super::*;
    use crate::{SignedRelease, TrustedSeeders};

    fn release(key: &Keypair, reference: &str, sequence: u64) -> (Release, ReleaseId) {
        let r = Release {
            sequence,
            created_unix_ms: sequence,
            ..Release::minimal(reference, vec![], &key.public().to_peer_id())
        };
        let id = SignedRelease::sign(&r, key).unwrap().id();
        (r, id)
    }

    #[test]
    fn newer_is_accepted_older_is_refused() {
        let k = Keypair::generate_ed25519();
        let mut g = ReplayGuard::new();
        let (v1, id1) = release(&k, "r/app:v1", 100);
        let (v2, id2) = release(&k, "r/app:v1", 200);
        g.admit(&v1, id1).unwrap();
        g.admit(&v2, id2).unwrap();
        assert_eq!(g.newest(&v1.seeder, "r/app:v1"), Some(200));
        let err = g.admit(&v1, id1).unwrap_err();
        assert!(
            matches!(
                &err,
                ReleaseError::Replayed { reference, sequence: 100, newest: 200 } if reference == "r/app:v1"
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("r/app:v1") && text.contains("100") && text.contains("200"));
        assert!(g.is_newest(&v2, id2) && !g.is_newest(&v1, id1));
    }

    #[test]
    fn the_same_release_again_is_accepted() {
        let k = Keypair::generate_ed25519();
        let mut g = ReplayGuard::new();
        let (v, id) = release(&k, "r/app:v1", 5);
        g.admit(&v, id).unwrap();
        g.admit(&v, id).unwrap();
        assert_eq!(g.newest(&v.seeder, "r/app:v1"), Some(5));
    }

    #[test]
    fn a_different_body_with_the_same_sequence_is_refused() {
        let k = Keypair::generate_ed25519();
        let mut g = ReplayGuard::new();
        let (a, ida) = release(&k, "r/app:v1", 7);
        let (mut b, _) = release(&k, "r/app:v1", 7);
        b.created_unix_ms = 8;
        let idb = SignedRelease::sign(&b, &k).unwrap().id();
        assert_ne!(ida, idb);
        g.admit(&a, ida).unwrap();
        assert!(matches!(
            g.admit(&b, idb),
            Err(ReleaseError::Replayed {
                sequence: 7,
                newest: 7,
                ..
            })
        ));
    }

    #[test]
    fn order_is_per_seeder_and_per_reference() {
        let k1 = Keypair::generate_ed25519();
        let k2 = Keypair::generate_ed25519();
        let mut g = ReplayGuard::new();
        let (a, ida) = release(&k1, "r/app:v1", 200);
        g.admit(&a, ida).unwrap();
        // Another reference of the same seeder, and the same reference of another seeder,
        // have their own order.
        let (b, idb) = release(&k1, "r/other:v1", 100);
        g.admit(&b, idb).unwrap();
        let (c, idc) = release(&k2, "r/app:v1", 100);
        g.admit(&c, idc).unwrap();
        assert_eq!(g.newest(&a.seeder, "r/app:v1"), Some(200));
        assert_eq!(g.newest(&c.seeder, "r/app:v1"), Some(100));
    }

    #[test]
    fn a_refused_release_is_not_recorded() {
        let k = Keypair::generate_ed25519();
        let mut g = ReplayGuard::new();
        let (v2, id2) = release(&k, "r/app:v1", 2);
        let (v1, id1) = release(&k, "r/app:v1", 1);
        g.admit(&v2, id2).unwrap();
        assert!(g.admit(&v1, id1).is_err());
        assert!(g.is_newest(&v2, id2));
        // Recording an older one directly never lowers the newest.
        g.record(&v1, id1);
        assert_eq!(g.newest(&v2.seeder, "r/app:v1"), Some(2));
    }

    #[test]
    fn expired_replay_is_refused_even_without_a_newer_release() {
        // A node that never saw the newer release falls back on expiry.
        let k = Keypair::generate_ed25519();
        let (mut old, _) = release(&k, "r/app:v1", 1);
        old.expires_unix_ms = 10_000;
        let signed = SignedRelease::sign(&old, &k).unwrap();
        let trusted = TrustedSeeders::new([k.public().to_peer_id()]);
        assert!(matches!(
            signed.verify(&trusted, 10_001),
            Err(ReleaseError::Expired { .. })
        ));
    }
}
