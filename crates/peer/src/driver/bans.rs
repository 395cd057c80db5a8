//! Hostile peers: who is banned, for how long, and why.
//!
//! The core node already refuses data from a peer that served a chunk failing its hash
//! (`Action::Misbehaved`); here the driver makes that stick: the peer is disconnected,
//! its reconnections are dropped until the ban ends, and peer exchange does not dial it.
//! The driver adds the offences only it can see: frames the codec refuses (malformed or
//! oversized, reported by the adapter) and inbound requests above a rate limit. Every ban
//! is one `warn` line naming the peer and the reason.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::time::{Duration, Instant};

use blobswarm_core::rate::TokenBucket;
use tracing::warn;

use super::{Driver, Output, PeerIdentity};
use crate::status::{Ban, BanCounts, BanKind, MAX_SHOWN_BANS};

/// Inbound requests per second one peer may send (have-updates included); a honest
/// peer sends a few dozen at most.
pub(crate) const REQUESTS_PER_SEC: u64 = 200;
/// Requests a peer may send at once after being quiet.
pub(crate) const REQUEST_BURST: u64 = 400;
/// Bans and per-peer request buckets remembered at most, against identity floods.
const MAX_TRACKED: usize = 4096;
/// Longest ban reason kept for the status list (reasons are the driver's own texts).
const MAX_BAN_REASON: usize = 200;

/// Banned peers and their inbound request rates.
pub(super) struct Bans<P> {
    until: HashMap<P, Instant>,
    /// Why each peer in `until` was banned (for the status list).
    why: HashMap<P, (BanKind, String)>,
    /// Bans since start, by offence (exported as a metric).
    counts: BanCounts,
    rates: HashMap<P, TokenBucket>,
    duration: Duration,
}

impl<P: Copy + Hash + Eq> Bans<P> {
    pub(super) fn new(duration: Duration) -> Self {
        Self {
            until: HashMap::new(),
            why: HashMap::new(),
            counts: BanCounts::default(),
            rates: HashMap::new(),
            duration,
        }
    }

    pub(super) fn is_banned(&self, peer: &P, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|t| *t > now)
    }

    /// Bans `peer` from `now`; false if it already was.
    fn ban(&mut self, peer: P, now: Instant) -> bool {
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

    /// Remembers why `peer` was banned; entries of bans forgotten go with it.
    fn record(&mut self, peer: P, kind: BanKind, reason: &str) {
        let until = &self.until;
        self.why.retain(|p, _| until.contains_key(p));
        let reason = blobswarm_core::wire::truncate_utf8(reason, MAX_BAN_REASON);
        self.why.insert(peer, (kind, reason));
    }

    /// The bans in force at `now`, newest first, at most [`MAX_SHOWN_BANS`].
    pub(super) fn list(&self, now: Instant) -> Vec<Ban>
    where
        P: Display,
    {
        let mut live: Vec<(&P, &Instant)> = self.until.iter().filter(|(_, t)| **t > now).collect();
        live.sort_unstable_by(|a, b| b.1.cmp(a.1));
        live.into_iter()
            .take(MAX_SHOWN_BANS)
            .map(|(p, t)| {
                let (kind, reason) = self
                    .why
                    .get(p)
                    .cloned()
                    .unwrap_or((BanKind::BadFrame, String::new()));
                Ban {
                    peer: p.to_string(),
                    kind,
                    reason,
                    remaining: t.saturating_duration_since(now),
                }
            })
            .collect()
    }

    /// Counts one inbound request; false when `peer` is over its rate.
    fn admit(&mut self, peer: P, now: Instant) -> bool {
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

impl<P: PeerIdentity> Driver<P> {
    /// Bans and disconnects `peer`, with one log line naming it and the reason.
    pub(super) fn ban_peer(&mut self, peer: P, kind: BanKind, reason: &str, now: Instant) {
        self.addr_bans.ban(&peer, now);
        if self.bans.ban(peer, now) {
            self.bans.counts.add(kind);
            self.bans.record(peer, kind, reason);
            warn!(
                %peer,
                %reason,
                secs = self.bans.duration.as_secs(),
                banned = self.bans.banned(now),
                "banning peer"
            );
        }
        self.outputs.push_back(Output::Disconnect(peer));
    }

    /// Drops a connection from a banned peer; true if it was one.
    pub(super) fn refuse_banned(&mut self, peer: P, now: Instant) -> bool {
        if !self.bans.is_banned(&peer, now) {
            return false;
        }
        self.count_denied("banned_peer");
        self.outputs.push_back(Output::Disconnect(peer));
        true
    }

    /// Rate-checks an inbound request; bans the peer and returns false when it is over.
    pub(super) fn admit_request(&mut self, peer: P, now: Instant) -> bool {
        if self.bans.admit(peer, now) {
            return true;
        }
        let reason = format!("more than {REQUESTS_PER_SEC} requests per second");
        self.ban_peer(peer, BanKind::RequestRate, &reason, now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_and_rates_refill() {
        let mut b = Bans::new(Duration::from_secs(10));
        let (p, q) = (1u32, 2u32);
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
    fn the_status_lists_bans_in_force_newest_first_and_bounded() {
        let mut b = Bans::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for p in 0..40u32 {
            let at = t0 + Duration::from_millis(u64::from(p));
            assert!(b.ban(p, at));
            b.record(p, BanKind::BadChunk, &format!("chunk {p} failed its hash"));
        }
        let now = t0 + Duration::from_millis(100);
        let list = b.list(now);
        assert_eq!(list.len(), MAX_SHOWN_BANS);
        assert_eq!(list[0].peer, "39");
        assert_eq!(list[0].kind, BanKind::BadChunk);
        assert_eq!(list[0].reason, "chunk 39 failed its hash");
        assert_eq!(list[0].remaining, Duration::from_millis(9_939));
        assert!(b.list(t0 + Duration::from_secs(11)).is_empty(), "expired");
    }
}
