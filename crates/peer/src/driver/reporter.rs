//! The sender side of progress reports: every agent gossips where each release stands
//! on its node, built here from the driver's status snapshots with a per-release rate.

use std::collections::HashMap;
use std::time::Instant;

use blobswarm_core::ReleaseId;
use blobswarm_core::codec;
use blobswarm_core::enroll::NodeCert;
use blobswarm_core::wire::{
    MAX_BANNED_PEER, MAX_NODE_NAME, MAX_REASON, MAX_REPORT_BANS, MAX_REPORT_RELEASES,
    ProgressReport, ProgressState, ReleaseProgress, ReportedBan, truncate_utf8,
};

use super::Snapshot;

/// Sender side: turns status snapshots into reports with a per-release download rate.
#[derive(Debug)]
pub(crate) struct Reporter {
    node_name: String,
    cert: Option<NodeCert>,
    last: HashMap<ReleaseId, (u64, Instant)>,
}

impl Reporter {
    /// Reports as `node_name`, with the node's enrolment certificate when it has one
    /// (without, the seeder lists its reports as ignored).
    pub(crate) fn new(node_name: &str, cert: Option<NodeCert>) -> Self {
        Self {
            node_name: truncate_utf8(node_name, MAX_NODE_NAME),
            cert,
            last: HashMap::new(),
        }
    }

    /// The report for `s`: the newest [`MAX_REPORT_RELEASES`] releases not yet done come
    /// first, then done ones, so a node with many old releases still reports the current.
    pub(crate) fn report(&mut self, s: &Snapshot, now: Instant, unix_ms: u64) -> ProgressReport {
        let mut releases: Vec<ReleaseProgress> = s
            .releases
            .iter()
            .map(|r| {
                let rate = match self.last.get(&r.id) {
                    Some((bytes, at)) if now > *at => {
                        let secs = now.duration_since(*at).as_secs_f64();
                        (r.have_bytes.saturating_sub(*bytes) as f64 / secs) as u64
                    }
                    _ => 0,
                };
                self.last.insert(r.id, (r.have_bytes, now));
                let state = match r.state(s.import_target) {
                    ProgressState::Failed(reason) => {
                        ProgressState::Failed(truncate_utf8(&reason, MAX_REASON))
                    }
                    other => other,
                };
                ReleaseProgress {
                    release: r.id,
                    state,
                    have_bytes: r.have_bytes,
                    total_bytes: r.total_bytes,
                    rate,
                }
            })
            .collect();
        self.last
            .retain(|id, _| s.releases.iter().any(|r| r.id == *id));
        releases.sort_by_key(|r| matches!(r.state, ProgressState::Done));
        releases.truncate(MAX_REPORT_RELEASES);
        let bans = s
            .banned
            .iter()
            .filter(|b| b.peer.len() <= MAX_BANNED_PEER)
            .take(MAX_REPORT_BANS)
            .map(|b| ReportedBan {
                peer: b.peer.clone(),
                offence: b.kind,
                remaining_secs: u32::try_from(b.remaining.as_secs()).unwrap_or(u32::MAX),
            })
            .collect();
        fit(ProgressReport {
            node_name: self.node_name.clone(),
            sent_ms: unix_ms,
            peers: u32::try_from(s.peers).unwrap_or(u32::MAX),
            releases,
            cert: self.cert.clone(),
            bans,
        })
    }
}

/// Failure reasons no report cuts below, so the operator still reads what went wrong.
const MIN_REASON: usize = 64;

/// Shrinks `report` until receivers accept it ([`ProgressReport::decode`], within
/// [`blobswarm_core::wire::MAX_REPORT_BYTES`]): every receiver refuses a larger one (and scores its sender
/// down), so the node would vanish from the gate.
/// Sixteen failed releases with full-length reasons do not fit; their reasons are halved
/// (to [`MIN_REASON`]), then bans and finally the oldest releases dropped.
fn fit(mut report: ProgressReport) -> ProgressReport {
    // The receivers' own check: their decoder also counts what a report's lists and
    // strings claim in memory, so an encoding just under the byte limit can be refused.
    let too_big =
        |r: &ProgressReport| codec::encode(r).map_or(true, |b| ProgressReport::decode(&b).is_err());
    while too_big(&report) {
        let longest = report
            .releases
            .iter_mut()
            .filter_map(|r| match &mut r.state {
                ProgressState::Failed(reason) => Some(reason),
                _ => None,
            })
            .max_by_key(|reason| reason.len())
            .filter(|reason| reason.len() > MIN_REASON);
        if let Some(reason) = longest {
            *reason = truncate_utf8(reason, (reason.len() / 2).max(MIN_REASON));
        } else if report.bans.pop().is_none() && report.releases.pop().is_none() {
            break;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ReleaseStatus;
    use blobswarm_core::Digest;
    use std::time::Duration;

    fn status(have: u64, error: Option<&str>) -> Snapshot {
        Snapshot {
            peers: 2,
            import_target: true,
            releases: vec![ReleaseStatus {
                id: Digest::of(b"r"),
                reference: "img".into(),
                total_bytes: 1000,
                have_bytes: have,
                complete: have == 1000,
                imported: false,
                import_error: error.map(str::to_owned),
                download_time: None,
                import_time: None,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_largest_report_an_agent_can_build_still_fits_the_gossip_limit() {
        // Sixteen failed releases with full-length reasons, the longest name, a
        // certificate-sized blob of bans: every receiver would refuse it unshrunk.
        let mut snap = status(10, Some(&"é".repeat(MAX_REASON)));
        let one = snap.releases[0].clone();
        snap.releases = (0..MAX_REPORT_RELEASES + 4)
            .map(|i| ReleaseStatus {
                id: Digest::of(format!("r{i}").as_bytes()),
                ..one.clone()
            })
            .collect();
        snap.banned = (0..MAX_REPORT_BANS + 3)
            .map(|i| crate::status::Ban {
                peer: format!("12D3KooW{i:0>44}"),
                kind: crate::BanKind::RequestRate,
                reason: "flood".into(),
                remaining: Duration::from_secs(300),
            })
            .collect();
        let mut r = Reporter::new(&"n".repeat(MAX_NODE_NAME + 10), None);
        let report = r.report(&snap, Instant::now(), 1);
        let bytes = codec::encode(&report).unwrap();
        let limit = blobswarm_core::wire::MAX_REPORT_BYTES;
        assert!(bytes.len() <= limit, "{} bytes", bytes.len());
        let back = ProgressReport::decode(&bytes).expect("receivers accept it");
        assert_eq!(
            back.releases.len(),
            MAX_REPORT_RELEASES,
            "no release dropped"
        );
        assert_eq!(back.bans.len(), MAX_REPORT_BANS);
        assert_eq!(back.bans[0].offence, crate::BanKind::RequestRate);
        assert!(back.releases.iter().all(|p| match &p.state {
            ProgressState::Failed(reason) => reason.len() >= MIN_REASON,
            _ => false,
        }));
    }

    #[test]
    fn reporter_computes_rate_and_states() {
        let mut r = Reporter::new("node-a", None);
        let t0 = Instant::now();
        let a = r.report(&status(0, None), t0, 1);
        assert_eq!(a.releases[0].state, ProgressState::Waiting);
        let b = r.report(&status(500, None), t0 + Duration::from_secs(2), 2);
        assert_eq!(b.releases[0].state, ProgressState::Downloading);
        assert_eq!(b.releases[0].rate, 250);
        let c = r.report(&status(1000, None), t0 + Duration::from_secs(3), 3);
        assert_eq!(c.releases[0].state, ProgressState::Importing);
        let long = "e".repeat(MAX_REASON * 2);
        let d = r.report(&status(1000, Some(&long)), t0 + Duration::from_secs(4), 4);
        assert!(d.validate().is_ok(), "reasons are cut to the cap");
    }
}
