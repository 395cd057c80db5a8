//! Gossip validation verdicts: what is forwarded, rejected (and so penalised by
//! gossipsub's peer score) or ignored, and the rejection counter.

use blobswarm_core::wire::{MAX_REPORT_BYTES, ProgressReport, SwarmNotice};

use super::*;
use crate::driver::{MAX_NOTICE_BYTES, RejectReason, Verdict, max_gossip_bytes};

impl Sim {
    /// Hands one gossip message to the driver and returns its verdict.
    fn gossip(&mut self, topic: Topic, source: Option<PeerId>, data: Vec<u8>) -> Verdict {
        let id = GossipId(self.now.unix_ms + self.log.len() as u64);
        self.handle(Event::Gossip {
            id,
            topic,
            source,
            data,
        });
        let verdicts: Vec<Verdict> = self
            .log
            .iter()
            .filter_map(|o| match o {
                Output::GossipVerdict { id: v, verdict } if *v == id => Some(*verdict),
                _ => None,
            })
            .collect();
        assert_eq!(verdicts.len(), 1, "exactly one verdict per message");
        verdicts[0]
    }

    fn rejected(&self, topic: &str, reason: &str) -> u64 {
        self.status()
            .gossip_rejected
            .get(&(topic, reason))
            .copied()
            .unwrap_or(0)
    }
}

fn report() -> ProgressReport {
    ProgressReport {
        node_name: "node-1".into(),
        sent_ms: 1,
        peers: 2,
        releases: Vec::new(),
        cert: None,
        bans: Vec::new(),
    }
}

#[test]
fn releases_are_accepted_once_and_forged_ones_rejected_before_forwarding() {
    let data = blob(2 * CHUNK, 40);
    let (mut s, signed) = Sim::new(&[&data]);
    let seeder = Some(s.seeder);
    let enc = codec::encode(&signed).unwrap();
    assert_eq!(
        s.gossip(Topic::Release, seeder, enc.clone()),
        Verdict::Accept
    );
    assert_eq!(s.status().releases.len(), 1);
    // Known already: not forwarded again, no offence.
    assert_eq!(s.gossip(Topic::Release, seeder, enc), Verdict::Ignore);
    // Signed by a key nobody here trusts.
    let rogue = release(&key(9), "test/image:1", 5, &[&data]);
    let enc = codec::encode(&rogue).unwrap();
    assert_eq!(
        s.gossip(Topic::Release, None, enc),
        Verdict::Reject(RejectReason::Untrusted)
    );
    // A trusted seeder's release with its signature broken.
    let mut forged = codec::encode(&release(&key(1), "test/image:2", 2, &[&data])).unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(matches!(
        s.gossip(Topic::Release, None, forged),
        Verdict::Reject(RejectReason::Invalid | RejectReason::Undecodable)
    ));
    assert_eq!(
        s.gossip(Topic::Release, None, vec![0xff; 64]),
        Verdict::Reject(RejectReason::Undecodable)
    );
    let huge = vec![0u8; max_gossip_bytes(Topic::Release) + 1];
    assert_eq!(
        s.gossip(Topic::Release, None, huge),
        Verdict::Reject(RejectReason::TooLarge)
    );
    // An older release of the same image: stale, not an offence.
    let old = release(&key(1), "test/image:1", 0, &[&data]);
    assert_eq!(
        s.gossip(Topic::Release, None, codec::encode(&old).unwrap()),
        Verdict::Ignore
    );
    assert_eq!(s.rejected("release", "untrusted"), 1);
    assert_eq!(s.rejected("release", "too_large"), 1);
    assert_eq!(
        s.rejected("release", "invalid") + s.rejected("release", "undecodable"),
        2
    );
    assert_eq!(s.status().releases.len(), 1, "nothing refused was kept");
}

#[test]
fn notices_need_an_author_a_small_size_and_a_valid_body() {
    let (mut s, _) = Sim::new(&[&blob(CHUNK, 41)]);
    let seeder = Some(s.seeder);
    let alive = codec::encode(&SwarmNotice::SeederAlive).unwrap();
    assert_eq!(
        s.gossip(Topic::Notice, seeder, alive.clone()),
        Verdict::Accept
    );
    assert_eq!(
        s.gossip(Topic::Notice, None, alive),
        Verdict::Reject(RejectReason::Invalid)
    );
    assert_eq!(
        s.gossip(Topic::Notice, seeder, vec![0xff; 16]),
        Verdict::Reject(RejectReason::Undecodable)
    );
    // Before this change a notice could be as large as a release (4 MiB).
    assert_eq!(
        s.gossip(Topic::Notice, seeder, vec![0u8; MAX_NOTICE_BYTES + 1]),
        Verdict::Reject(RejectReason::TooLarge)
    );
    assert_eq!(s.rejected("notice", "too_large"), 1);
    assert_eq!(s.rejected("notice", "undecodable"), 1);
    assert_eq!(s.rejected("notice", "invalid"), 1);
}

#[test]
fn every_node_checks_reports_before_relaying_them_and_only_seeders_keep_them() {
    let (mut agent, _) = Sim::new(&[&blob(CHUNK, 42)]);
    let from = Some(PeerId::random());
    let good = codec::encode(&report()).unwrap();
    assert_eq!(
        agent.gossip(Topic::Report, from, good.clone()),
        Verdict::Accept
    );
    assert!(
        !agent
            .log
            .iter()
            .any(|o| matches!(o, Output::KeepReport { .. })),
        "an agent relays reports but does not keep them"
    );
    assert_eq!(
        agent.gossip(Topic::Report, from, vec![0xff; 32]),
        Verdict::Reject(RejectReason::Undecodable)
    );
    assert_eq!(
        agent.gossip(Topic::Report, from, vec![0u8; MAX_REPORT_BYTES + 1]),
        Verdict::Reject(RejectReason::TooLarge)
    );
    assert_eq!(agent.rejected("report", "undecodable"), 1);
    assert_eq!(agent.rejected("report", "too_large"), 1);

    let (mut seeder, _) = Sim::with(
        &[&blob(CHUNK, 42)],
        |c| c.collect_reports = true,
        Startup::default(),
    );
    assert_eq!(seeder.gossip(Topic::Report, from, good), Verdict::Accept);
    assert!(
        seeder
            .log
            .iter()
            .any(|o| matches!(o, Output::KeepReport { .. }))
    );
}
