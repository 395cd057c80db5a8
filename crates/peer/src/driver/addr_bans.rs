//! Bans that survive identity churn: a banned peer's listen addresses (IP and port) are
//! banned with it, so the same process coming back under a fresh identity is banned
//! again at once.
//!
//! Only addresses the peer has shown to be its own count: the address we dialled it at,
//! and listen addresses it announces (identify) on the IP its connection comes from.
//! An announced address on another IP is never kept, so a hostile peer cannot get an
//! honest one banned by claiming its address, and a loopback listen address (which
//! every node of a cluster announces with the same port) counts only for a peer that
//! really connects from loopback. Bare IPs are never banned: agents share one IP on
//! loopback in tests and behind SNAT in some clusters (see the README's Security
//! section); the per-IP connection limit bounds what one IP can hold instead.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Driver, PeerIdentity};
use crate::status::BanKind;

/// Addresses remembered per connected peer, and banned addresses kept at most.
const MAX_ADDRS_PER_PEER: usize = 16;
const MAX_BANNED_ADDRS: usize = 4096;

/// What the driver knows of a connected peer's addresses.
#[derive(Debug, Default)]
struct Known {
    /// IPs its connections come from.
    ips: BTreeSet<IpAddr>,
    /// Listen addresses shown to be its own.
    listen: BTreeSet<SocketAddr>,
}

/// Listen addresses of banned peers, until when.
pub(super) struct AddrBans<P> {
    known: HashMap<P, Known>,
    until: HashMap<SocketAddr, Instant>,
    duration: Duration,
}

impl<P: Copy + Hash + Eq> AddrBans<P> {
    pub(super) fn new(duration: Duration) -> Self {
        Self {
            known: HashMap::new(),
            until: HashMap::new(),
            duration,
        }
    }

    /// A connection of `peer` is up from `remote`; `dialled` when we dialled that
    /// address (then it is a listen address the peer answered on).
    pub(super) fn connection(&mut self, peer: P, remote: SocketAddr, dialled: bool) {
        let k = self.known.entry(peer).or_default();
        if k.ips.len() < MAX_ADDRS_PER_PEER {
            k.ips.insert(remote.ip());
        }
        if dialled && k.listen.len() < MAX_ADDRS_PER_PEER {
            k.listen.insert(remote);
        }
    }

    /// Listen addresses `peer` announces; kept only on an IP it connects from.
    pub(super) fn announced(&mut self, peer: P, addrs: &[SocketAddr]) {
        let Some(k) = self.known.get_mut(&peer) else {
            return;
        };
        for a in addrs {
            if k.listen.len() >= MAX_ADDRS_PER_PEER {
                break;
            }
            if k.ips.contains(&a.ip()) {
                k.listen.insert(*a);
            }
        }
    }

    /// The peer disconnected: forget its addresses (a ban took them already).
    pub(super) fn forget(&mut self, peer: &P) {
        self.known.remove(peer);
    }

    /// A banned listen address `peer` holds at `now`, if any.
    pub(super) fn banned_address(&self, peer: &P, now: Instant) -> Option<SocketAddr> {
        let k = self.known.get(peer)?;
        k.listen
            .iter()
            .find(|a| self.until.get(a).is_some_and(|t| *t > now))
            .copied()
    }

    /// Bans every listen address known of `peer` from `now`.
    pub(super) fn ban(&mut self, peer: &P, now: Instant) {
        let Some(k) = self.known.get(peer) else {
            return;
        };
        if self.until.len() + k.listen.len() > MAX_BANNED_ADDRS {
            self.until.retain(|_, t| *t > now);
        }
        for a in &k.listen {
            if self.until.len() >= MAX_BANNED_ADDRS {
                break;
            }
            self.until.insert(*a, now + self.duration);
        }
    }
}

impl<P: PeerIdentity> Driver<P> {
    /// A connection of `peer` is up from `remote`: refuse it at once when it shows a
    /// banned address.
    pub(super) fn on_endpoint(&mut self, peer: P, remote: SocketAddr, dialled: bool, now: Instant) {
        self.addr_bans.connection(peer, remote, dialled);
        self.refuse_banned_address(peer, now);
    }

    /// `peer` announced its listen addresses.
    pub(super) fn on_listen_addrs(&mut self, peer: P, addrs: &[SocketAddr], now: Instant) {
        self.addr_bans.announced(peer, addrs);
        self.refuse_banned_address(peer, now);
    }

    /// Bans `peer` (a new identity on a banned address) and counts the denial.
    fn refuse_banned_address(&mut self, peer: P, now: Instant) {
        if self.bans.is_banned(&peer, now) {
            return;
        }
        let Some(addr) = self.addr_bans.banned_address(&peer, now) else {
            return;
        };
        warn!(%peer, %addr, "peer listens at the address of a banned peer");
        self.count_denied("banned_address");
        let reason = format!("listens at {addr}, the address of a banned peer");
        self.ban_peer(peer, BanKind::BannedAddress, &reason, now);
    }

    /// Counts one refused connection under a `blobswarm_connections_denied_total` label.
    pub(super) fn count_denied(&mut self, reason: &'static str) {
        *self.connections_denied.entry(reason).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_addresses_a_peer_shows_are_its_own_are_banned_with_it() {
        let t0 = Instant::now();
        let mut b = AddrBans::new(Duration::from_secs(60));
        let (bad, framed, honest) = (1u32, 2u32, 3u32);
        // `bad` connects in from 10.0.0.9 and announces its listen address there, plus
        // an honest node's address and a loopback one: only the first is kept.
        b.connection(bad, sa("10.0.0.9:51234"), false);
        b.announced(
            bad,
            &[
                sa("10.0.0.9:4001"),
                sa("10.0.0.5:4001"),
                sa("127.0.0.1:4001"),
            ],
        );
        b.ban(&bad, t0);
        b.forget(&bad);
        // A new identity dialled at the banned address is caught...
        b.connection(framed, sa("10.0.0.9:4001"), true);
        assert_eq!(b.banned_address(&framed, t0), Some(sa("10.0.0.9:4001")));
        // ...while an honest node on the claimed address, or on the same IP with another
        // port, or on loopback with the same port, is not.
        b.connection(honest, sa("10.0.0.5:60000"), false);
        b.announced(honest, &[sa("10.0.0.5:4001")]);
        assert_eq!(b.banned_address(&honest, t0), None);
        b.connection(4, sa("10.0.0.9:4002"), true);
        assert_eq!(b.banned_address(&4, t0), None);
        b.connection(5, sa("127.0.0.1:50000"), false);
        b.announced(5, &[sa("127.0.0.1:4001")]);
        assert_eq!(b.banned_address(&5, t0), None);
        // The address ban ends with the ban.
        assert_eq!(
            b.banned_address(&framed, t0 + Duration::from_secs(60)),
            None
        );
    }
}
