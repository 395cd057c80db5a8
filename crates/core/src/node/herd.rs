//! The herd guard: what a swarm does when its seeder is gone.
//!
//! Chunks the seeder never handed out exist nowhere in the swarm once it is gone. Rather
//! than have every node fall back to the registry (the thundering herd blobswarm exists
//! to prevent), exactly one node fetches each such chunk and the swarm spreads it:
//!
//! 1. Seeders gossip [`SwarmNotice::SeederAlive`] every [`HerdConfig::heartbeat`]. While
//!    one was heard within [`HerdConfig::after`], or a seeder is a neighbour, nothing
//!    below happens.
//! 2. Otherwise a node scans for *orphans*: chunks it lacks, has not requested, and no
//!    neighbour announces.
//! 3. Each orphan gets a rendezvous score, `SHA-256(node key ‖ blob ‖ index)`, the same
//!    on every node for a given (node, chunk). The node waits [`HerdConfig::grace`] (the
//!    chunk may still be spreading) plus [`HerdConfig::spread`] × (1 − score): across the
//!    swarm the highest-scoring orphaned node is the first to be due.
//! 4. When due, if nobody has claimed the chunk, the node gossips a
//!    [`SwarmNotice::Claim`]; if someone has, it waits for them for
//!    [`HerdConfig::claim_ttl`].
//! 5. [`HerdConfig::settle`] after claiming, the node fetches the chunk from the registry
//!    unless a claim with a higher score arrived meanwhile, in which case it yields. Claims
//!    cross only within the gossip delay, far below the settle time, so one node fetches.
//! 6. The fetched chunk is verified against the signed chunk map like any other and
//!    announced; the rest of the swarm takes it from there.
//!
//! Claims are gossip from any key, and a node inside the swarm can mint keys until its
//! scores beat everyone's, then claim and never fetch (issue #18, finding 8). So a node
//! waits for other nodes' claims on one orphan at most [`MAX_YIELDS`] times: after that
//! many claims went void without the chunk appearing, it ignores claims on that chunk and
//! fetches it itself when due. An honest swarm yields once (to the best claimant); an
//! attack delays an orphan by at most `MAX_YIELDS` × [`HerdConfig::claim_ttl`] and costs
//! at most one extra registry read per honest node that gets there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::state::Outstanding;
use super::{Action, Node, PeerKey};
use crate::Digest;
use crate::wire::SwarmNotice;

/// Timings of the herd guard; present only on nodes that can reach the registry.
#[derive(Debug, Clone)]
pub struct HerdConfig {
    /// This node's key bytes (as releases name peers), for its own rendezvous score.
    pub identity: Vec<u8>,
    /// Seeder silence before the guard wakes up: several missed heartbeats.
    pub after: Duration,
    /// How long a chunk must stay an orphan before anyone is due to claim it.
    pub grace: Duration,
    /// The window claim times are spread over by score: wider means fewer racing claims
    /// in big swarms, narrower a faster recovery in small ones.
    pub spread: Duration,
    /// Time between claiming and fetching, during which a better claim wins.
    pub settle: Duration,
    /// A claim not followed by the chunk within this time is void; others may claim.
    pub claim_ttl: Duration,
    /// How often orphans are looked for while the guard is awake.
    pub scan_interval: Duration,
}

impl HerdConfig {
    /// Defaults for a node identified by `identity`.
    pub fn new(identity: Vec<u8>) -> Self {
        Self {
            identity,
            after: Duration::from_secs(10),
            grace: Duration::from_secs(3),
            spread: Duration::from_secs(10),
            settle: Duration::from_secs(2),
            claim_ttl: Duration::from_secs(60),
            scan_interval: Duration::from_secs(1),
        }
    }
}

/// Other nodes' claims a node waits for on one orphan before it ignores them.
pub const MAX_YIELDS: u8 = 2;

/// A chunk nobody around this node holds.
#[derive(Debug)]
struct Orphan {
    due: Instant,
    claimed: bool,
    /// Other nodes' claims waited for on this chunk (see [`MAX_YIELDS`]).
    yielded: u8,
    /// Due because a claim this node yielded to expired: if the chunk is still an
    /// orphan then, that claim went void ([`crate::node::Stats::herd_claims_expired`]).
    waiting: bool,
}

/// The best live claim known for a chunk (ours included).
#[derive(Debug, Clone, Copy)]
struct Claim {
    score: u64,
    at: Instant,
    ours: bool,
}

/// Herd-guard bookkeeping of one node.
#[derive(Debug, Default)]
pub(super) struct HerdState {
    orphans: BTreeMap<(Digest, u32), Orphan>,
    agenda: BTreeSet<(Instant, Digest, u32)>,
    claims: HashMap<(Digest, u32), Claim>,
    next_scan: Option<Instant>,
    /// When a seeder was last heard of (gossip or a live connection).
    seeder_seen: Option<Instant>,
}

/// The rendezvous score of node `key` for a chunk: uniform, and the same on every node.
pub fn claim_score(key: &[u8], blob: &Digest, index: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(key);
    h.update(blob.as_bytes());
    h.update(index.to_be_bytes());
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("8 bytes"))
}

impl<P: PeerKey> Node<P> {
    /// A notice from the swarm topic, sent by `from` (the gossip message's signed author).
    pub fn handle_notice(&mut self, from: &P, notice: SwarmNotice, now: Instant) {
        match notice {
            SwarmNotice::SeederAlive => {
                if self.seeder_keys.contains(&from.key_bytes()) {
                    self.herd.seeder_seen = Some(now);
                }
            }
            SwarmNotice::Claim { blob, indices } => {
                let Some(cfg) = self.config.herd.as_ref() else {
                    return;
                };
                // Only claims on chunks this node is still missing are kept, so a node
                // gossiping claims on made-up blobs cannot grow the table.
                let Some(b) = self.blobs.get(&blob).filter(|b| b.downloading()) else {
                    return;
                };
                let count = b.have.len();
                let key = from.key_bytes();
                for index in indices.into_iter().filter(|i| *i < count) {
                    let score = claim_score(&key, &blob, index);
                    let live = |c: &Claim| now < c.at + cfg.claim_ttl;
                    let replace = self
                        .herd
                        .claims
                        .get(&(blob, index))
                        .is_none_or(|c| !live(c) || score > c.score);
                    if replace {
                        self.herd.claims.insert(
                            (blob, index),
                            Claim {
                                score,
                                at: now,
                                ours: false,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Starts the periodic scan once something is downloading. A node that never heard
    /// of a seeder counts its silence from now, so it too waits [`HerdConfig::after`]
    /// before claiming anything.
    pub(super) fn herd_arm(&mut self, now: Instant) {
        if let Some(cfg) = &self.config.herd
            && self.herd.next_scan.is_none()
            && self.blobs.values().any(|b| b.downloading())
        {
            self.herd.next_scan = Some(now + cfg.scan_interval);
            self.herd.seeder_seen.get_or_insert(now);
        }
    }

    /// Claims remembered, for tests of the table's bound.
    #[cfg(test)]
    pub(super) fn claims_known(&self) -> usize {
        self.herd.claims.len()
    }

    /// When the herd guard next needs [`Node::handle_timeout`], if it is awake.
    pub(super) fn herd_timeout(&self) -> Option<Instant> {
        self.config.herd.as_ref()?;
        let agenda = self.herd.agenda.first().map(|(t, _, _)| *t);
        agenda.into_iter().chain(self.herd.next_scan).min()
    }

    /// Seeder side: the next liveness notice.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        if self.published
            && let Some(every) = self.config.heartbeat
            && self.next_heartbeat.is_none_or(|t| t <= now)
        {
            self.actions
                .push_back(Action::Notice(SwarmNotice::SeederAlive));
            self.next_heartbeat = Some(now + every);
        }
    }

    /// Runs the guard: re-scans for orphans when due and acts on due claims.
    pub(super) fn herd_tick(&mut self, now: Instant) {
        if self.config.herd.is_none() {
            return;
        }
        if !self.blobs.values().any(|b| b.downloading()) {
            // Nothing left to guard; only when a seeder was last heard still matters.
            self.herd = HerdState {
                seeder_seen: self.herd.seeder_seen,
                ..HerdState::default()
            };
            return;
        }
        let scan_due = self.herd.next_scan.is_none_or(|t| t <= now);
        let agenda_due = self.herd.agenda.first().is_some_and(|(t, _, _)| *t <= now);
        if !scan_due && !agenda_due {
            return;
        }
        let cfg = self.config.herd.clone().expect("checked above");
        if scan_due {
            self.herd.next_scan = Some(now + cfg.scan_interval);
            self.scan_orphans(&cfg, now);
        }
        let mut claims: BTreeMap<Digest, Vec<u32>> = BTreeMap::new();
        while let Some(&(due, blob, index)) = self.herd.agenda.first()
            && due <= now
        {
            self.herd.agenda.pop_first();
            let key = (blob, index);
            let Some(orphan) = self.herd.orphans.get_mut(&key) else {
                continue;
            };
            if std::mem::take(&mut orphan.waiting) {
                // The claim waited for is over and the chunk is still nowhere around.
                self.stats.herd_claims_expired += 1;
            }
            let mine = claim_score(&cfg.identity, &blob, index);
            let other = self
                .herd
                .claims
                .get(&key)
                .filter(|c| !c.ours && now < c.at + cfg.claim_ttl)
                .copied();
            if let Some(c) = other
                && (!orphan.claimed || c.score > mine)
            {
                if orphan.yielded < MAX_YIELDS {
                    // Someone else claimed first, or out-scored our claim: wait for them.
                    orphan.claimed = false;
                    orphan.yielded += 1;
                    orphan.waiting = true;
                    orphan.due = c.at + cfg.claim_ttl;
                    self.herd.agenda.insert((orphan.due, blob, index));
                    continue;
                }
                // Claims on this chunk went void MAX_YIELDS times: go ahead regardless.
                self.stats.herd_claims_overridden += 1;
            }
            if !orphan.claimed {
                orphan.claimed = true;
                orphan.due = now + cfg.settle;
                self.herd.agenda.insert((orphan.due, blob, index));
                self.herd.claims.insert(
                    key,
                    Claim {
                        score: mine,
                        at: now,
                        ours: true,
                    },
                );
                claims.entry(blob).or_default().push(index);
                continue;
            }
            self.herd.orphans.remove(&key);
            self.fetch_from_registry(blob, index, now);
        }
        for (blob, indices) in claims {
            for part in indices.chunks(crate::wire::MAX_CLAIM_INDICES) {
                self.actions.push_back(Action::Notice(SwarmNotice::Claim {
                    blob,
                    indices: part.to_vec(),
                }));
            }
        }
    }

    fn scan_orphans(&mut self, cfg: &HerdConfig, now: Instant) {
        if self.peers.values().any(|p| p.is_seeder) {
            self.herd.seeder_seen = Some(now);
        }
        if self.herd.seeder_seen.is_some_and(|t| now < t + cfg.after) {
            self.herd.orphans.clear();
            self.herd.agenda.clear();
            return;
        }
        let mut found = BTreeSet::new();
        for (digest, b) in &self.blobs {
            if !b.downloading() {
                continue;
            }
            let held = self.held_by_neighbours(digest, b.have.len(), now);
            for i in 0..b.have.len() {
                if !b.have.get(i) && !b.pending.get(i) && !held.get(i) {
                    found.insert((*digest, i));
                }
            }
        }
        let HerdState {
            orphans, agenda, ..
        } = &mut self.herd;
        orphans.retain(|key, o| {
            let keep = found.contains(key);
            if !keep {
                agenda.remove(&(o.due, key.0, key.1));
            }
            keep
        });
        for (blob, index) in found {
            if orphans.contains_key(&(blob, index)) {
                continue;
            }
            let score = claim_score(&cfg.identity, &blob, index);
            let rank = 1.0 - (score as f64 / u64::MAX as f64);
            let due = now + cfg.grace + cfg.spread.mul_f64(rank);
            orphans.insert(
                (blob, index),
                Orphan {
                    due,
                    claimed: false,
                    yielded: 0,
                    waiting: false,
                },
            );
            agenda.insert((due, blob, index));
        }
    }

    fn fetch_from_registry(&mut self, blob: Digest, index: u32, now: Instant) {
        let Some(range) = self
            .blobs
            .get(&blob)
            .and_then(|b| b.map.as_ref())
            .and_then(|m| m.range(index).ok())
        else {
            return;
        };
        let deadline = now + self.config.request_timeout;
        let id = self.open_chunk_request(
            blob,
            index,
            Outstanding::Registry {
                blob,
                index,
                deadline,
            },
        );
        self.stats.registry_fetches += 1;
        self.actions.push_back(Action::FetchRegistry {
            id,
            blob,
            index,
            range,
        });
    }
}
