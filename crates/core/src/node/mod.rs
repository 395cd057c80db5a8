//! The per-node state machine: which releases a node carries, which chunks it holds,
//! what it asks of whom, and when.
//!
//! # Driving a `Node`
//! Feed every input through a `handle_*` method, passing the current time; then drain
//! [`Node::poll_action`] until it returns `None`, and arm a timer for
//! [`Node::poll_timeout`], calling [`Node::handle_timeout`] when it fires. Time must never
//! go backwards between calls. Chunk bytes never enter the node: the driver verifies them
//! against [`Node::chunk_target`] (off its async threads), stores them, and reports the
//! outcome with [`Node::handle_chunk`].
//!
//! The node is generic over the peer identity `P` so the libp2p agent uses `PeerId`
//! and tests and the simulator can use whatever identity type suits them.

mod config;
mod evict;
mod fetch;
#[cfg(test)]
mod have_tests;
mod haves;
mod herd;
mod pick;
mod queries;
mod resume;
mod serve;
mod state;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, HashMap, VecDeque};

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

pub use config::{Config, ConfigError};
use herd::HerdState;
pub use herd::{HerdConfig, MAX_YIELDS, claim_score};
use state::{BlobState, Outstanding, PeerState, ReleaseState};
pub use types::{Action, BlobProgress, ChunkOutcome, Inbound, PeerKey, RequestId, Stats};

use crate::rate::TokenBucket;
use crate::replay::ReplayGuard;
use crate::wire::{HaveUpdate, Request};
use crate::{
    Bitfield, ChunkMap, Digest, Release, ReleaseError, ReleaseId, SignedRelease, TrustedSeeders,
};

/// One node of the swarm; see the module docs for the calling protocol.
pub struct Node<P> {
    config: Config,
    trusted: TrustedSeeders,
    rng: StdRng,
    peers: BTreeMap<P, PeerState>,
    blobs: BTreeMap<Digest, BlobState>,
    releases: BTreeMap<ReleaseId, ReleaseState>,
    requests: HashMap<RequestId, Outstanding<P>>,
    /// Request deadlines in the order sent, which is deadline order (one timeout for all);
    /// entries of answered requests are skipped and dropped lazily.
    deadlines: VecDeque<(Instant, RequestId)>,
    /// Expiry of every `Busy` back-off, in order; stale entries only cause a spare wake-up.
    decline_expiries: VecDeque<Instant>,
    next_id: u64,
    chunks_inflight: usize,
    /// Chunks being served right now.
    uploads: usize,
    /// Peers refused an upload slot, oldest first: freed slots go to them in turn.
    upload_waiting: VecDeque<P>,
    /// Freed slots held for a waiting peer until the given time.
    upload_reserved: Vec<(P, Instant)>,
    actions: VecDeque<Action<P>>,
    new_haves: BTreeMap<Digest, Vec<u32>>,
    /// A peer or a chunk map appeared: some peer may be owed a full bitfield.
    announce_full: bool,
    /// When have-updates were last sent, and when the held-back ones are due
    /// ([`Config::have_batch`]).
    last_have_flush: Option<Instant>,
    have_flush_due: Option<Instant>,
    /// Outstanding requests per chunk: one normally, two in endgame.
    chunk_requests: BTreeMap<(Digest, u32), Vec<RequestId>>,
    seeder_keys: Vec<Vec<u8>>,
    /// Newest accepted sequence per (seeder, reference): refuses replays.
    replay: ReplayGuard,
    stats: Stats,
    herd: HerdState,
    up_rate: Option<TokenBucket>,
    down_rate: Option<TokenBucket>,
    /// The download cap stopped scheduling until then.
    down_blocked_until: Option<Instant>,
    /// This node published a release: it is a seeder and sends heartbeats.
    published: bool,
    next_heartbeat: Option<Instant>,
    /// Blobs verified on disk by a previous run, waiting for a release that lists them.
    resumable: BTreeMap<Digest, (ChunkMap, Bitfield)>,
}

impl<P: PeerKey> Node<P> {
    /// A node that accepts releases signed by `trusted`.
    ///
    /// # Errors
    /// [`ConfigError`] when the config is invalid.
    pub fn new(config: Config, trusted: TrustedSeeders) -> Result<Self, ConfigError> {
        config.validate()?;
        // A tenth of a second's worth of bytes (at least 1 MiB) may be saved up.
        let bucket = |rate: u64| TokenBucket::new(rate, (rate / 10).max(1 << 20));
        let (up_rate, down_rate) = (
            config.max_upload_rate.map(bucket),
            config.max_download_rate.map(bucket),
        );
        Ok(Self {
            rng: StdRng::seed_from_u64(config.rng_seed),
            config,
            trusted,
            peers: BTreeMap::new(),
            blobs: BTreeMap::new(),
            releases: BTreeMap::new(),
            requests: HashMap::new(),
            deadlines: VecDeque::new(),
            decline_expiries: VecDeque::new(),
            next_id: 0,
            chunks_inflight: 0,
            uploads: 0,
            upload_waiting: VecDeque::new(),
            upload_reserved: Vec::new(),
            actions: VecDeque::new(),
            new_haves: BTreeMap::new(),
            announce_full: false,
            last_have_flush: None,
            have_flush_due: None,
            chunk_requests: BTreeMap::new(),
            seeder_keys: Vec::new(),
            replay: ReplayGuard::new(),
            stats: Stats::default(),
            herd: HerdState::default(),
            up_rate,
            down_rate,
            down_blocked_until: None,
            published: false,
            next_heartbeat: None,
            resumable: BTreeMap::new(),
        })
    }

    // ---- inputs ----------------------------------------------------------------------

    /// A connection to `peer` is up: exchange releases and have-information.
    pub fn handle_peer_connected(&mut self, peer: P, now: Instant) {
        if self.peers.contains_key(&peer) {
            return;
        }
        let is_seeder = self.seeder_keys.contains(&peer.key_bytes());
        self.announce_full = true;
        self.next_id += 1;
        self.peers.insert(
            peer.clone(),
            PeerState {
                is_seeder,
                session: self.next_id,
                ..PeerState::default()
            },
        );
        let deadline = now + self.config.request_timeout;
        let id = self.next_request_id();
        self.track(
            id,
            Outstanding::Releases {
                peer: peer.clone(),
                deadline,
            },
        );
        self.actions.push_back(Action::Send {
            peer,
            id,
            request: Request::Releases,
        });
        self.after_input(now);
    }

    /// The last connection to `peer` closed: forget its haves, re-queue its requests.
    pub fn handle_peer_disconnected(&mut self, peer: &P, now: Instant) {
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        self.upload_waiting.retain(|p| p != peer);
        self.upload_reserved.retain(|(p, _)| p != peer);
        if !state.is_seeder {
            for (blob, bits) in &state.haves {
                if let Some(b) = self.blobs.get_mut(blob) {
                    for i in bits.ones() {
                        if let Some(a) = b.availability.get_mut(i as usize) {
                            *a = a.saturating_sub(1);
                        }
                    }
                }
            }
        }
        let ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, o)| o.peer() == Some(peer))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail_request(id, now, false);
        }
        self.after_input(now);
    }

    /// A signed release arrived (gossip, sync response, or a local publish).
    ///
    /// # Errors
    /// The [`ReleaseError`] that made the node refuse it (counted in [`Stats`]).
    pub fn handle_release(
        &mut self,
        signed: SignedRelease,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<ReleaseId, ReleaseError> {
        let id = signed.id();
        if self.releases.contains_key(&id) {
            return Ok(id);
        }
        let release = match signed
            .verify(&self.trusted, now_unix_ms)
            .and_then(|r| self.replay.admit(&r, id).map(|()| r))
        {
            Ok(r) => r,
            Err(e) => {
                self.stats.releases_rejected += 1;
                if matches!(e, ReleaseError::Replayed { .. }) {
                    self.stats.releases_replayed += 1;
                }
                self.actions.push_back(Action::ReleaseRefused {
                    id,
                    reason: e.to_string(),
                });
                return Err(e);
            }
        };
        self.add_release(id, signed, release);
        self.actions.push_back(Action::ReleaseAccepted(id));
        self.after_input(now);
        Ok(id)
    }

    /// Seeder side: registers a blob whose bytes are already stored and verified locally.
    pub fn add_local_blob(&mut self, map: ChunkMap, media_type: &str, now: Instant) {
        let entry = crate::release_blob(&map, media_type);
        let count = map.count();
        let state = self
            .blobs
            .entry(map.blob())
            .or_insert_with(|| BlobState::new(entry));
        state.have = Bitfield::full(count);
        state.pending = Bitfield::new(count);
        state.availability = vec![0; count as usize];
        let blob = map.blob();
        state.map = Some(Arc::new(map));
        state.complete = true;
        self.announce_full = true;
        self.rebuild_availability(blob);
        self.after_input(now);
    }

    /// Seeder side: starts carrying and announcing a release signed by this node.
    ///
    /// # Errors
    /// [`ReleaseError`] when the release does not verify against the trust set (the
    /// seeder must trust its own key).
    pub fn publish_release(
        &mut self,
        signed: SignedRelease,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<ReleaseId, ReleaseError> {
        let id = self.handle_release(signed.clone(), now, now_unix_ms)?;
        self.actions.push_back(Action::Publish(signed));
        self.published = true;
        self.heartbeat(now);
        Ok(id)
    }

    /// Advances timers: expires requests and ends back-offs.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.front()
            && deadline <= now
        {
            self.deadlines.pop_front();
            self.fail_request(id, now, true);
        }
        while self.decline_expiries.front().is_some_and(|t| *t <= now) {
            self.decline_expiries.pop_front();
        }
        if self.down_blocked_until.is_some_and(|t| t <= now) {
            self.down_blocked_until = None;
        }
        self.heartbeat(now);
        self.herd_tick(now);
        for p in self.peers.values_mut() {
            if p.unavailable_until.is_some_and(|t| t <= now) {
                p.unavailable_until = None;
            }
            p.declined.retain(|_, t| *t > now);
        }
        self.after_input(now);
    }

    // ---- outputs ---------------------------------------------------------------------

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// When [`Node::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let request = self
            .deadlines
            .iter()
            .find(|(_, id)| self.requests.contains_key(id))
            .map(|(t, _)| *t);
        let backoffs = self.peers.values().filter_map(|p| p.unavailable_until);
        // `next_heartbeat` is only ever set on a node that published a release.
        request
            .into_iter()
            .chain(self.decline_expiries.front().copied())
            .chain(self.next_heartbeat)
            .chain(self.down_blocked_until)
            .chain(self.have_flush_due)
            .chain(self.herd_timeout())
            .chain(backoffs)
            .min()
    }

    // ---- getters ---------------------------------------------------------------------

    // ---- internals -------------------------------------------------------------------

    /// Records an outstanding request and its deadline.
    fn track(&mut self, id: RequestId, out: Outstanding<P>) {
        self.deadlines.push_back((out.deadline(), id));
        self.requests.insert(id, out);
    }

    fn next_request_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    fn add_release(&mut self, id: ReleaseId, signed: SignedRelease, release: Release) {
        if !self.seeder_keys.contains(&release.seeder) {
            self.seeder_keys.push(release.seeder.clone());
            for (peer, state) in &mut self.peers {
                if peer.key_bytes() == release.seeder {
                    state.is_seeder = true;
                }
            }
        }
        for entry in &release.blobs {
            let known = self.blobs.contains_key(&entry.digest);
            let state = self
                .blobs
                .entry(entry.digest)
                .or_insert_with(|| BlobState::new(entry.clone()));
            if !known && self.resumable.contains_key(&entry.digest) {
                self.apply_resumable(entry.digest);
                continue;
            }
            if state.map.is_none() && entry.size == 0 {
                // An empty blob has an empty chunk map; trust it only if it hashes as signed.
                if let Ok(map) = ChunkMap::new(entry.digest, 0, entry.chunk_size, vec![])
                    && map.digest() == entry.chunk_map
                {
                    Self::install_map(state, map);
                    state.complete = true;
                    self.announce_full = true;
                    self.actions.push_back(Action::BlobComplete(entry.digest));
                }
            }
        }
        // Haves stored before these blobs were known must now fit their chunk counts.
        for entry in &release.blobs {
            self.rebuild_availability(entry.digest);
        }
        self.releases.insert(
            id,
            ReleaseState {
                signed,
                release: Arc::new(release),
                complete: false,
            },
        );
    }

    fn install_map(state: &mut BlobState, map: ChunkMap) {
        // Callers set `announce_full`; this is an associated fn to borrow only the blob.
        let n = map.count();
        state.have = Bitfield::new(n);
        state.pending = Bitfield::new(n);
        state.availability = vec![0; n as usize];
        state.map = Some(Arc::new(map));
        state.map_request = false;
    }

    fn ban(&mut self, peer: &P, now: Instant, reason: String) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.unavailable_until = Some(now + self.config.ban_duration);
        }
        self.actions.push_back(Action::Misbehaved {
            peer: peer.clone(),
            reason,
        });
    }

    fn after_input(&mut self, now: Instant) {
        self.herd_arm(now);
        while let Some((_, id)) = self.deadlines.front()
            && !self.requests.contains_key(id)
        {
            self.deadlines.pop_front();
        }
        self.complete_releases();
        self.flush_haves(now);
        self.request_chunk_maps(now);
        self.schedule_chunks(now, None);
    }

    fn complete_releases(&mut self) {
        for (id, r) in &mut self.releases {
            if !r.complete
                && r.release
                    .blobs
                    .iter()
                    .all(|b| self.blobs.get(&b.digest).is_some_and(|s| s.complete))
            {
                r.complete = true;
                self.actions.push_back(Action::ReleaseComplete(*id));
            }
        }
    }

    fn flush_haves(&mut self, now: Instant) {
        // Most inputs (an incoming Have, above all) give nothing new to announce.
        if self.new_haves.is_empty() && !self.announce_full {
            return;
        }
        // New chunks wait for the batch window, so one update carries several of them;
        // a full bitfield owed to a new neighbour goes at once.
        if !self.announce_full
            && let Some(last) = self.last_have_flush
            && now < last + self.config.have_batch
        {
            self.have_flush_due = Some(last + self.config.have_batch);
            return;
        }
        self.have_flush_due = None;
        self.announce_full = false;
        let new = std::mem::take(&mut self.new_haves);
        let mut sends = Vec::new();
        for (peer, p) in &mut self.peers {
            if p.is_seeder {
                continue;
            }
            for (digest, b) in &self.blobs {
                if b.map.is_none() || p.has_complete(digest) {
                    continue;
                }
                if !p.sent_full.contains(digest) {
                    if b.have.count() > 0 {
                        p.sent_full.insert(*digest);
                        sends.push((peer.clone(), *digest, HaveUpdate::Full(b.have.clone())));
                    }
                } else if let Some(idx) = new.get(digest) {
                    sends.push((peer.clone(), *digest, HaveUpdate::Added(idx.clone())));
                }
            }
        }
        // The window runs from the last update actually sent.
        if !sends.is_empty() {
            self.last_have_flush = Some(now);
        }
        // Have-updates are fire-and-forget: nothing waits on the acknowledgement, so they
        // are not tracked (answers and failures for their ids are ignored). A lost update
        // only makes a neighbour ask elsewhere; a reconnect resends the full bitfield.
        for (peer, blob, update) in sends {
            let id = self.next_request_id();
            self.actions.push_back(Action::Send {
                peer,
                id,
                request: Request::Have { blob, update },
            });
        }
    }
}
