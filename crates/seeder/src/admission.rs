//! Which progress reports a seeder counts (issue #18, finding 2).
//!
//! A report counts only when it carries an enrolment certificate ([`NodeCert`]) from a
//! key the operator trusts, naming the key that signed the gossip message and the node
//! name in the report. One node name is bound to one key at a time: of two keys with
//! valid certificates for one name, the later-issued certificate wins and the other key's
//! reports are ignored, so minting identities gains nothing. Every report that does not
//! count is kept, bounded, in an ignored list with its reason, which `blobswarm status`,
//! the dashboard and the CI gate print: the gate fails closed and says why.

use std::collections::{HashMap, VecDeque};

use blobswarm_core::enroll::{EnrollError, EnrollmentKeys, NodeCert};
use blobswarm_core::escape::printable;
use blobswarm_core::wire::ProgressReport;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

/// Ignored reports remembered (one entry per sending key, the newest reason): enough to
/// name every rogue in a cluster, bounded against a flood of minted identities.
pub const MAX_IGNORED: usize = 256;

/// A report that did not count, as the API and `blobswarm status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredReport {
    /// The key that sent it.
    pub peer: String,
    /// The node name it claimed, with control characters escaped.
    pub node: String,
    /// Why it did not count.
    pub reason: String,
    /// When it arrived, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The verdict on one report.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Counts; `evict` names a key whose binding to the same node name it replaced.
    Count { evict: Option<PeerId> },
    /// Does not count (recorded in the ignored list).
    Ignore,
}

/// The enrolment keys, the name-to-key bindings and the ignored list.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    keys: EnrollmentKeys,
    /// node name -> (key, issue time of its certificate)
    names: HashMap<String, (PeerId, u64)>,
    ignored: VecDeque<IgnoredReport>,
    ignored_total: u64,
}

impl Admission {
    /// Trusts certificates by `keys` from now on; bindings made under other keys go.
    pub(crate) fn set_keys(&mut self, keys: EnrollmentKeys) {
        self.keys = keys;
        self.names.clear();
    }

    /// Decides whether `report` from `peer` counts at `now_ms`.
    pub(crate) fn admit(&mut self, peer: PeerId, report: &ProgressReport, now_ms: u64) -> Admit {
        let verified = report
            .cert
            .as_ref()
            .ok_or(EnrollError::Missing)
            .and_then(|c| NodeCert::verify(c, &self.keys, &peer, &report.node_name, now_ms));
        let body = match verified {
            Ok(body) => body,
            Err(e) => {
                self.ignore(peer, &report.node_name, e.to_string(), now_ms);
                return Admit::Ignore;
            }
        };
        // A key that changed its name (a new certificate) gives up the old binding.
        self.names
            .retain(|name, (key, _)| *key != peer || *name == body.node_name);
        match self.names.get(&body.node_name).copied() {
            Some((key, _)) if key == peer => Admit::Count { evict: None },
            Some((key, issued)) if issued >= body.issued_unix_ms => {
                let reason = format!(
                    "node name is bound to key {key}, whose certificate was issued later \
                     ({issued} ms, this one {} ms)",
                    body.issued_unix_ms
                );
                self.ignore(peer, &report.node_name, reason, now_ms);
                Admit::Ignore
            }
            bound => {
                self.names
                    .insert(body.node_name.clone(), (peer, body.issued_unix_ms));
                let evict = bound.map(|(key, _)| key);
                if let Some(old) = evict {
                    let reason = format!("node name re-enrolled by key {peer}");
                    self.ignore(old, &report.node_name, reason, now_ms);
                }
                Admit::Count { evict }
            }
        }
    }

    /// `peer` was dropped from the aggregate: its name binding goes with it.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.names.retain(|_, (key, _)| key != peer);
    }

    fn ignore(&mut self, peer: PeerId, node: &str, reason: String, now_ms: u64) {
        self.ignored_total += 1;
        let peer = peer.to_string();
        self.ignored.retain(|i| i.peer != peer);
        if self.ignored.len() >= MAX_IGNORED {
            self.ignored.pop_front();
        }
        self.ignored.push_back(IgnoredReport {
            peer,
            node: printable(node),
            reason,
            at_ms: now_ms,
        });
    }

    /// The ignored reports, newest first.
    pub(crate) fn ignored(&self) -> Vec<IgnoredReport> {
        self.ignored.iter().rev().cloned().collect()
    }

    /// Reports ignored since start (a counter for metrics).
    pub(crate) fn ignored_total(&self) -> u64 {
        self.ignored_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobswarm_core::enroll::CertBody;
    use libp2p_identity::Keypair;

    const NOW: u64 = 1_800_000_000_000;

    fn report(name: &str, cert: Option<NodeCert>) -> ProgressReport {
        ProgressReport {
            node_name: name.into(),
            sent_ms: NOW,
            peers: 1,
            releases: vec![],
            cert,
            bans: Vec::new(),
        }
    }

    fn cert(issuer: &Keypair, name: &str, peer: &PeerId, issued: u64) -> NodeCert {
        let body = CertBody {
            node_name: name.into(),
            peer: peer.to_bytes(),
            issued_unix_ms: issued,
            expires_unix_ms: NOW + 60_000,
        };
        NodeCert::issue(issuer, &body).unwrap()
    }

    fn admission() -> (Keypair, Admission) {
        let issuer = Keypair::generate_ed25519();
        let mut a = Admission::default();
        a.set_keys(EnrollmentKeys::new([issuer.public().to_peer_id()]));
        (issuer, a)
    }

    #[test]
    fn without_enrolment_keys_nothing_counts_and_the_reason_is_named() {
        let mut a = Admission::default();
        let issuer = Keypair::generate_ed25519();
        let p = PeerId::random();
        let r = report("node-1", Some(cert(&issuer, "node-1", &p, NOW)));
        assert_eq!(a.admit(p, &r, NOW), Admit::Ignore);
        assert!(
            a.ignored()[0].reason.contains("enroll-pubkey"),
            "{:?}",
            a.ignored()
        );
    }

    #[test]
    fn minted_identities_do_not_count_and_are_listed_once_each() {
        let (issuer, mut a) = admission();
        let real = PeerId::random();
        let good = cert(&issuer, "node-1", &real, NOW);
        assert_eq!(
            a.admit(real, &report("node-1", Some(good.clone())), NOW),
            Admit::Count { evict: None }
        );
        for i in 0..MAX_IGNORED + 10 {
            let minted = PeerId::random();
            // No certificate, a copied certificate, and a self-signed one.
            let cert = match i % 3 {
                0 => None,
                1 => Some(good.clone()),
                _ => {
                    let own = Keypair::generate_ed25519();
                    Some(cert(&own, "node-1", &minted, NOW))
                }
            };
            assert_eq!(a.admit(minted, &report("node-1", cert), NOW), Admit::Ignore);
        }
        assert_eq!(a.ignored().len(), MAX_IGNORED);
        assert_eq!(a.ignored_total(), (MAX_IGNORED + 10) as u64);
        let reasons: Vec<_> = a.ignored().iter().map(|i| i.reason.clone()).collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("no enrolment certificate"))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("but the report was signed by"))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("not a trusted enrolment key"))
        );
    }

    #[test]
    fn one_name_is_bound_to_one_key_the_later_certificate_wins() {
        let (issuer, mut a) = admission();
        let (old, new) = (PeerId::random(), PeerId::random());
        let first = report("node-1", Some(cert(&issuer, "node-1", &old, NOW - 10)));
        assert_eq!(a.admit(old, &first, NOW), Admit::Count { evict: None });
        // An older certificate for the same name from another key does not count.
        let stale = report("node-1", Some(cert(&issuer, "node-1", &new, NOW - 20)));
        assert_eq!(a.admit(new, &stale, NOW), Admit::Ignore);
        assert!(a.ignored()[0].reason.contains("bound to key"));
        // A newer one re-binds the name and evicts the old key.
        let newer = report("node-1", Some(cert(&issuer, "node-1", &new, NOW)));
        assert_eq!(a.admit(new, &newer, NOW), Admit::Count { evict: Some(old) });
        assert_eq!(a.admit(old, &first, NOW), Admit::Ignore);
    }
}
