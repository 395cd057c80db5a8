//! Gossip validation: every message gossipsub receives is judged here before it is
//! forwarded. The verdict goes back to the adapter, which reports it to gossipsub:
//! `Accept` lets the message travel on, `Reject` drops it and counts against the
//! relaying peer's score (so a peer that keeps sending invalid messages is graylisted),
//! `Ignore` drops it without a penalty (stale, already known, or not ours to judge).

use blobswarm_core::codec;
use blobswarm_core::wire::{MAX_REPORT_BYTES, ProgressReport, SwarmNotice};
use blobswarm_core::{MAX_RELEASE_BYTES, ReleaseError, SignedRelease};
use tracing::{debug, warn};

use super::{Driver, GossipId, Now, Output, PeerIdentity, Topic};

/// Largest encoded swarm notice: a herd-guard claim of `MAX_CLAIM_INDICES` indices
/// (at most 5 bytes each) on one digest fits with room to spare (see the test below).
pub(crate) const MAX_NOTICE_BYTES: usize = 32 << 10;

/// What the driver decided about one gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop, do not forward, and penalise the peer that sent it.
    Reject(RejectReason),
    /// Not worth forwarding but no offence (stale, already known): drop quietly.
    Ignore,
}

/// Why a gossip message was rejected; the `reason` label of
/// `blobswarm_gossip_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RejectReason {
    /// Larger than its topic allows.
    TooLarge,
    /// Does not decode as its topic's message type.
    Undecodable,
    /// Decodes but breaks a rule (a cap, a signature that does not verify, no author).
    Invalid,
    /// A release signed by a key this node does not trust. Counted like the others, but
    /// the adapter reports it to gossipsub as ignored, not rejected: during a seeder key
    /// rotation honest nodes may trust different keys, and must not score each other down.
    Untrusted,
}

impl RejectReason {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Undecodable => "undecodable",
            Self::Invalid => "invalid",
            Self::Untrusted => "untrusted",
        }
    }
}

impl Topic {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Notice => "notice",
            Self::Report => "report",
        }
    }
}

/// Every (topic, reason) label pair of `blobswarm_gossip_rejected_total`, so the
/// metrics can show each series at zero from the start: a series that appears only with
/// its first rejection hides that rejection from `rate()` and from dashboards.
pub(crate) fn rejection_labels() -> impl Iterator<Item = (&'static str, &'static str)> {
    let reasons = [
        RejectReason::TooLarge,
        RejectReason::Undecodable,
        RejectReason::Invalid,
        RejectReason::Untrusted,
    ];
    [Topic::Release, Topic::Notice, Topic::Report]
        .into_iter()
        .flat_map(move |t| reasons.map(|r| (t.label(), r.label())))
}

/// Largest message accepted per topic: releases are up to [`MAX_RELEASE_BYTES`] plus
/// their signed envelope, notices and reports are small.
pub(crate) fn max_gossip_bytes(topic: Topic) -> usize {
    match topic {
        Topic::Release => MAX_RELEASE_BYTES + (64 << 10),
        Topic::Notice => MAX_NOTICE_BYTES,
        Topic::Report => MAX_REPORT_BYTES,
    }
}

impl<P: PeerIdentity> Driver<P> {
    /// Judges one gossip message, acts on it when valid, and hands the verdict to the
    /// adapter.
    pub(super) fn on_gossip(
        &mut self,
        id: GossipId,
        topic: Topic,
        source: Option<P>,
        data: &[u8],
        now: Now,
    ) {
        let verdict = if data.len() > max_gossip_bytes(topic) {
            Verdict::Reject(RejectReason::TooLarge)
        } else {
            match topic {
                Topic::Notice => self.judge_notice(source, data, now),
                Topic::Report => self.judge_report(source, data),
                Topic::Release => match codec::decode::<SignedRelease>(data) {
                    Ok(signed) => self.judge_release(signed, now),
                    Err(e) => {
                        debug!(source = ?source.map(|p| p.to_string()), error = %e, "malformed release on gossip");
                        Verdict::Reject(RejectReason::Undecodable)
                    }
                },
            }
        };
        if let Verdict::Reject(reason) = verdict {
            *self.gossip_rejected.entry((topic, reason)).or_default() += 1;
            warn!(
                source = ?source.map(|p| p.to_string()),
                topic = topic.label(),
                reason = reason.label(),
                bytes = data.len(),
                "gossip message rejected"
            );
        }
        self.outputs
            .push_back(Output::GossipVerdict { id, verdict });
    }

    fn judge_notice(&mut self, source: Option<P>, data: &[u8], now: Now) -> Verdict {
        let Ok(notice) = codec::decode::<SwarmNotice>(data) else {
            return Verdict::Reject(RejectReason::Undecodable);
        };
        if notice.validate().is_err() {
            return Verdict::Reject(RejectReason::Invalid);
        }
        // Notices speak for their signed author; one without an author means nothing.
        let Some(from) = source else {
            return Verdict::Reject(RejectReason::Invalid);
        };
        self.node.handle_notice(&from, notice, now.at);
        Verdict::Accept
    }

    /// Every node checks that a report decodes before relaying it; seeders also keep it.
    /// Enrolment is judged where reports are counted (`admission`), not here: a report
    /// from an unenrolled node is listed as ignored there, which operators want to see.
    fn judge_report(&mut self, source: Option<P>, data: &[u8]) -> Verdict {
        let Ok(report) = ProgressReport::decode(data) else {
            return Verdict::Reject(RejectReason::Undecodable);
        };
        let Some(from) = source else {
            return Verdict::Reject(RejectReason::Invalid);
        };
        if self.config.collect_reports {
            self.outputs.push_back(Output::KeepReport { from, report });
        }
        Verdict::Accept
    }

    /// A release already held or already refused is ignored; otherwise the node's
    /// verification decides.
    fn judge_release(&mut self, signed: SignedRelease, now: Now) -> Verdict {
        let id = signed.id();
        if self.refused.contains(&id) || self.node.release_ids().any(|r| *r == id) {
            return Verdict::Ignore;
        }
        // A refusal is logged when the node's `ReleaseRefused` action is drained.
        match self.node.handle_release(signed, now.at, now.unix_ms) {
            Ok(_) => Verdict::Accept,
            Err(e) => release_verdict(&e),
        }
    }
}

/// Forged, malformed or untrusted releases are offences; stale ones (expired, replayed
/// older sequences) are ignored, since an honest node may still carry them.
fn release_verdict(e: &ReleaseError) -> Verdict {
    match e {
        ReleaseError::TooLarge(_) => Verdict::Reject(RejectReason::TooLarge),
        ReleaseError::BadKey | ReleaseError::Codec(_) => Verdict::Reject(RejectReason::Undecodable),
        ReleaseError::BadSignature(_)
        | ReleaseError::SeederMismatch(_)
        | ReleaseError::Invalid { .. } => Verdict::Reject(RejectReason::Invalid),
        ReleaseError::Untrusted(_) => Verdict::Reject(RejectReason::Untrusted),
        ReleaseError::Expired { .. } | ReleaseError::Replayed { .. } | ReleaseError::Signing(_) => {
            Verdict::Ignore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobswarm_core::Digest;
    use blobswarm_core::wire::MAX_CLAIM_INDICES;

    #[test]
    fn the_largest_valid_claim_fits_the_notice_limit() {
        let claim = SwarmNotice::Claim {
            blob: Digest::of(b"x"),
            indices: vec![u32::MAX; MAX_CLAIM_INDICES],
        };
        let bytes = codec::encode(&claim).unwrap();
        assert!(bytes.len() <= MAX_NOTICE_BYTES, "{}", bytes.len());
    }
}
