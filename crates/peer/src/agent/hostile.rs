//! Hostile peers: who is banned, for how long, and why.
//!
//! The core node already refuses data from a peer that served a chunk failing its hash
//! (`Action::Misbehaved`); here the agent makes that stick: the peer is disconnected,
//! its reconnections are dropped until the ban ends, and peer exchange does not dial it.
//! The agent adds the offences only it can see: frames its codec refuses (malformed or
//! oversized, `InvalidData` from the stream) and inbound requests above a rate limit.
//! Every ban is one `warn` line naming the peer and the reason.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use blobswarm_core::ReleaseId;
use blobswarm_core::rate::TokenBucket;
use blobswarm_core::wire::{Request, Response};
use bytes::Bytes;
use libp2p::PeerId;
use tracing::warn;

use super::{EventLoop, Origin, ServeFault};
use crate::status::{BanCounts, BanKind};

/// Inbound requests per second one peer may send (have-updates included); a honest
/// peer sends a few dozen at most.
const REQUESTS_PER_SEC: u64 = 200;
/// Requests a peer may send at once after being quiet.
const REQUEST_BURST: u64 = 400;
/// Requests a flooding test agent keeps in flight per neighbour.
const FLOOD_CHAINS: usize = 16;
/// Releases a replaying test agent keeps to hand out again.
const MAX_REPLAYED: usize = 8;
/// Bans and per-peer request buckets remembered at most, against identity floods.
const MAX_TRACKED: usize = 4096;

/// Banned peers and their inbound request rates.
pub(super) struct Bans {
    until: HashMap<PeerId, Instant>,
    /// Bans since start, by offence (exported as a metric).
    counts: BanCounts,
    rates: HashMap<PeerId, TokenBucket>,
    duration: Duration,
}

impl Bans {
    pub(super) fn new(duration: Duration) -> Self {
        Self {
            until: HashMap::new(),
            counts: BanCounts::default(),
            rates: HashMap::new(),
            duration,
        }
    }

    pub(super) fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|t| *t > now)
    }

    /// Bans `peer` from `now`; false if it already was.
    fn ban(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.is_banned(&peer, now) {
            return false;
        }
        if self.until.len() >= MAX_TRACKED {
            self.until.retain(|_, t| *t > now);
        }
        if self.until.len() >= MAX_TRACKED
            && let Some(oldest) = self.until.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
        {
            self.until.remove(&oldest);
        }
        self.until.insert(peer, now + self.duration);
        true
    }

    /// Counts one inbound request; false when `peer` is over its rate.
    fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        if !self.rates.contains_key(&peer) && self.rates.len() >= MAX_TRACKED {
            self.rates.clear();
        }
        let bucket = self
            .rates
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(REQUESTS_PER_SEC, REQUEST_BURST));
        bucket.try_take(1, now).is_ok()
    }

    /// Peers currently banned.
    pub(super) fn banned(&self, now: Instant) -> usize {
        self.until.values().filter(|t| **t > now).count()
    }

    /// Bans by offence since start, and those in force at `now`.
    pub(super) fn counts(&self, now: Instant) -> BanCounts {
        BanCounts {
            active: self.banned(now),
            ..self.counts
        }
    }
}

/// Whether a stream error means the peer sent bytes our codec refuses (malformed or
/// oversized frame), as opposed to a network or timeout problem.
pub(super) fn is_protocol_violation(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

impl EventLoop {
    /// Bans and disconnects `peer`, with one log line naming it and the reason.
    pub(super) fn ban_peer(&mut self, peer: PeerId, kind: BanKind, reason: &str) {
        let now = Instant::now();
        if self.bans.ban(peer, now) {
            self.bans.counts.add(kind);
            warn!(
                %peer,
                %reason,
                secs = self.bans.duration.as_secs(),
                banned = self.bans.banned(now),
                "banning peer"
            );
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Drops a connection from a banned peer; true if it was one.
    pub(super) fn refuse_banned(&mut self, peer: PeerId) -> bool {
        if !self.bans.is_banned(&peer, Instant::now()) {
            return false;
        }
        let _ = self.swarm.disconnect_peer_id(peer);
        true
    }

    /// Rate-checks an inbound request; bans the peer and returns false when it is over.
    pub(super) fn admit_request(&mut self, peer: PeerId) -> bool {
        if self.bans.admit(peer, Instant::now()) {
            return true;
        }
        let reason = format!("more than {REQUESTS_PER_SEC} requests per second");
        self.ban_peer(peer, BanKind::RequestRate, &reason);
        false
    }

    /// Test-only hostile modes that act on their own rather than when serving.
    pub(super) fn misbehave(&mut self) {
        // Floods only once it holds an image, so it first downloads like anyone else.
        let holds_one = || {
            self.node
                .release_ids()
                .any(|id| self.node.release_complete(id))
        };
        if self.config.serve_fault != Some(ServeFault::Flood) || !holds_one() {
            return;
        }
        // Keeps FLOOD_CHAINS requests in flight per neighbour, each answer sending the
        // next: as fast as the connection allows, yet under libp2p's stream cap (which
        // would drop a plain burst before the victim ever counted it).
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let in_flight = self
                .outbound
                .values()
                .filter(|o| matches!(o, Origin::Flood(p) if *p == peer))
                .count();
            self.flood(peer, FLOOD_CHAINS.saturating_sub(in_flight));
        }
    }

    /// Sends `n` flood requests to `peer` (test-only hostile mode).
    pub(super) fn flood(&mut self, peer: PeerId, n: usize) {
        for _ in 0..n {
            let out = self
                .swarm
                .behaviour_mut()
                .rr
                .send_request(&peer, Request::Peers);
            self.outbound.insert(out, Origin::Flood(peer));
        }
    }

    /// Test-only replay mode: remembers an accepted release to hand out again later,
    /// even after a newer one supersedes it.
    pub(super) fn keep_for_replay(&mut self, id: ReleaseId) {
        if !self.config.replay_old_releases {
            return;
        }
        if let Some(signed) = self.node.signed_release(&id) {
            if self.replay_stash.len() >= MAX_REPLAYED {
                self.replay_stash.remove(0);
            }
            self.replay_stash.push(signed.clone());
        }
    }

    /// Test-only replay mode: answers a release sync with every release this agent
    /// ever accepted, oldest first, instead of only the newest of each image.
    pub(super) fn fault_releases(&self, response: &mut Response) {
        if self.config.replay_old_releases
            && let Response::Releases(list) = response
        {
            *list = self.replay_stash.clone();
        }
    }

    /// Test-only hostile modes that change a chunk answer.
    pub(super) fn fault_chunk(&self, response: &mut (Response, Bytes)) {
        match self.config.serve_fault {
            None | Some(ServeFault::Flood) => {}
            Some(ServeFault::FlipByte) => {
                let mut bytes = response.1.to_vec();
                if let Some(b) = bytes.get_mut(response.1.len() / 2) {
                    *b ^= 0x01;
                }
                response.1 = Bytes::from(bytes);
            }
            Some(ServeFault::Oversized) => {
                // Longer than the chunk map says: fails verification like a wrong hash.
                let mut bytes = response.1.to_vec();
                bytes.resize(bytes.len() + (1 << 20), 0xAA);
                response.1 = Bytes::from(bytes);
            }
            Some(ServeFault::Malformed) => {
                // A payload on a response that must not carry one: the codec refuses it.
                *response = (Response::Ack, response.1.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_and_rates_refill() {
        let mut b = Bans::new(Duration::from_secs(10));
        let (p, q) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(b.ban(p, t0));
        assert!(!b.ban(p, t0 + Duration::from_secs(1)), "already banned");
        assert!(b.is_banned(&p, t0 + Duration::from_secs(9)));
        assert!(!b.is_banned(&p, t0 + Duration::from_secs(10)));
        assert!(!b.is_banned(&q, t0));
        let admitted = (0..1000).filter(|_| b.admit(q, t0)).count() as u64;
        assert!(
            (REQUEST_BURST..=REQUEST_BURST + 1).contains(&admitted),
            "{admitted}"
        );
        assert!(b.admit(q, t0 + Duration::from_secs(1)), "refilled");
    }

    #[test]
    fn only_refused_frames_count_as_violations() {
        assert!(is_protocol_violation(&io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large"
        )));
        assert!(!is_protocol_violation(&io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed"
        )));
    }
}
