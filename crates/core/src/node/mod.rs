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
#[cfg(test)]
mod have_tests;
mod haves;
mod herd;
mod pick;
mod resume;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

pub use config::{Config, ConfigError};
use herd::HerdState;
pub use herd::{HerdConfig, MAX_YIELDS, claim_score};
use state::{BlobState, Outstanding, PeerState, ReleaseState};

use crate::rate::TokenBucket;
use crate::replay::ReplayGuard;
use crate::wire::{ErrorCode, HaveUpdate, Request, Response, SwarmNotice};
use crate::{
    Bitfield, ChunkError, ChunkMap, Digest, Release, ReleaseError, ReleaseId, SignedRelease,
    TrustedSeeders,
};

/// A peer identity the node can compare with the seeder bytes inside a release.
pub trait PeerKey: Clone + Ord + Debug {
    /// The identity as bytes, in the form releases name their seeder.
    fn key_bytes(&self) -> Vec<u8>;
}

impl PeerKey for libp2p_identity::PeerId {
    fn key_bytes(&self) -> Vec<u8> {
        self.to_bytes()
    }
}

/// Matches a request with its answer, failure or timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Something the driver must do.
#[derive(Debug, Clone)]
pub enum Action<P> {
    /// Send `request` to `peer`; report its answer with the same id.
    Send {
        /// Destination.
        peer: P,
        /// Id to report the outcome under.
        id: RequestId,
        /// The request.
        request: Request,
    },
    /// Announce a release on gossip (seeders only).
    Publish(SignedRelease),
    /// Gossip this notice on the swarm topic.
    Notice(SwarmNotice),
    /// Fetch this byte range of the blob from the registry (herd guard: this node won the
    /// claim), verify it like a chunk from a peer, and report it with
    /// [`Node::handle_chunk`] under `id` (or [`Node::handle_failure`]).
    FetchRegistry {
        /// Id to report the outcome under.
        id: RequestId,
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// Byte range within the blob.
        range: Range<u64>,
    },
    /// A release was accepted and its download starts.
    ReleaseAccepted(ReleaseId),
    /// A release was refused (untrusted, bad signature, expired, replayed, malformed);
    /// drivers log it, since a release from a peer's sync answer is refused silently
    /// otherwise.
    ReleaseRefused {
        /// The refused release.
        id: ReleaseId,
        /// The [`ReleaseError`], as text.
        reason: String,
    },
    /// Every chunk of a blob is verified and stored; the driver can finalize it.
    BlobComplete(Digest),
    /// Every blob of a release is complete; the driver hands it to the importer.
    ReleaseComplete(ReleaseId),
    /// A peer broke the protocol or served bad data and is now ignored.
    Misbehaved {
        /// The peer.
        peer: P,
        /// What it did.
        reason: String,
    },
}

/// How to answer an inbound request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Answer with this response.
    Respond(Response),
    /// Read this byte range of the blob from the store and answer with it as a chunk.
    ServeChunk {
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// Byte range within the blob.
        range: Range<u64>,
    },
    /// Answer with the driver's known peers (the node holds no addresses).
    Peers,
}

/// What became of a chunk the driver received.
#[derive(Debug, Clone)]
pub enum ChunkOutcome {
    /// Verified against the chunk map and stored.
    Stored,
    /// Failed verification: the sender is banned.
    Corrupt(ChunkError),
    /// Could not be stored locally (disk); not the sender's fault.
    LocalError(String),
}

/// Counters a driver exposes as metrics and the demo prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunk bytes verified from seeders.
    pub bytes_from_seeders: u64,
    /// Chunk bytes verified from other peers.
    pub bytes_from_peers: u64,
    /// Chunks that failed verification.
    pub chunks_rejected: u64,
    /// Requests that failed or timed out.
    pub requests_failed: u64,
    /// Releases refused (untrusted, bad signature, expired, malformed, replayed).
    pub releases_rejected: u64,
    /// Of those, releases refused as replays of an older sequence ([`crate::replay`]).
    pub releases_replayed: u64,
    /// Chunk bytes verified from the registry (herd guard).
    pub bytes_from_registry: u64,
    /// Chunks this node fetched from the registry (herd guard).
    pub registry_fetches: u64,
    /// Chunk bytes found verified on disk at start (see [`Node::resume_blob`]).
    pub bytes_resumed: u64,
    /// Verified chunks the driver could not store (disk full, I/O error); each one
    /// pauses downloads for `Config::store_error_pause`.
    pub store_errors: u64,
    /// Have-information refused: a bitfield of the wrong length for a known blob, a
    /// malformed one, or one over the per-neighbour bound for unknown blobs.
    pub haves_refused: u64,
}

/// Progress of one blob, for progress bars and status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProgress {
    /// The blob.
    pub blob: Digest,
    /// Its size.
    pub size: u64,
    /// Bytes verified and stored.
    pub have_bytes: u64,
    /// Whether it is complete.
    pub complete: bool,
}

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

    /// Answers an inbound request from `from`.
    pub fn handle_request(&mut self, from: &P, request: Request, now: Instant) -> Inbound {
        let inbound = match request {
            // Only the newest release of each image: a superseded one is no use to a
            // joining node, and offering it would make every node download it first.
            Request::Releases => Inbound::Respond(Response::Releases(
                self.releases
                    .iter()
                    .filter(|(id, r)| self.replay.is_newest(&r.release, **id))
                    .take(crate::wire::MAX_RELEASES)
                    .map(|(_, r)| r.signed.clone())
                    .collect(),
            )),
            Request::Peers => Inbound::Peers,
            Request::ChunkMap { blob } => {
                match self.blobs.get(&blob).and_then(|b| b.map.as_ref()) {
                    Some(map) => Inbound::Respond(Response::ChunkMap((**map).clone())),
                    None => Inbound::Respond(Response::Error(ErrorCode::NotFound)),
                }
            }
            Request::Chunk { blob, index } => self.serve_chunk(from, blob, index, now),
            Request::Have { blob, update } => {
                self.apply_have(from, blob, update);
                // Only what `from` offers changed: schedule just that peer.
                self.request_chunk_maps(now);
                self.schedule_chunks(now, Some(from));
                return Inbound::Respond(Response::Ack);
            }
        };
        self.after_input(now);
        inbound
    }

    fn serve_chunk(&mut self, from: &P, blob: Digest, index: u32, now: Instant) -> Inbound {
        let (super_seed, window) = (self.config.super_seed, self.config.super_seed_window);
        let Some(b) = self.blobs.get_mut(&blob).filter(|b| b.have.get(index)) else {
            return Inbound::Respond(Response::Error(ErrorCode::NotFound));
        };
        let Some(Ok(range)) = b.map.as_ref().map(|m| m.range(index)) else {
            return Inbound::Respond(Response::Error(ErrorCode::BadRequest));
        };
        let peer_uploads = self.peers.get(from).map_or(0, |p| p.uploads);
        self.upload_reserved.retain(|(_, until)| *until > now);
        let mine = self.upload_reserved.iter().position(|(p, _)| p == from);
        let held_for_others = self.upload_reserved.len() - usize::from(mine.is_some());
        if self.uploads + held_for_others >= self.config.max_uploads
            || peer_uploads >= self.config.max_uploads_per_peer
        {
            if peer_uploads < self.config.max_uploads_per_peer
                && !self.upload_waiting.contains(from)
                && mine.is_none()
            {
                self.upload_waiting.push_back(from.clone());
            }
            return Inbound::Respond(Response::Error(ErrorCode::Overloaded));
        }
        if self.up_rate.as_mut().is_some_and(|r| !r.ready(now)) {
            return Inbound::Respond(Response::Error(ErrorCode::Overloaded));
        }
        let peers = &self.peers;
        let connected = |session: u64| peers.values().any(|p| p.session == session);
        let once = self.config.upload_once.then(|| {
            let session = peers.get(from).map_or(0, |p| p.session);
            (session, &connected as &dyn Fn(u64) -> bool)
        });
        if super_seed && !b.super_seed_admit(index, now, window, once) {
            return Inbound::Respond(Response::Error(ErrorCode::Busy));
        }
        if let Some(r) = self.up_rate.as_mut() {
            r.take(range.end - range.start);
        }
        if let Some(i) = mine {
            self.upload_reserved.swap_remove(i);
        }
        self.uploads += 1;
        if let Some(p) = self.peers.get_mut(from) {
            p.uploads += 1;
        }
        Inbound::ServeChunk { blob, index, range }
    }

    /// A chunk handed out with [`Inbound::ServeChunk`] was sent, or could not be: frees
    /// its upload slot, which is held briefly for the peer refused longest ago (fair
    /// rotation). The driver must report every `ServeChunk` exactly once.
    pub fn handle_upload_done(&mut self, to: &P, now: Instant) {
        self.uploads = self.uploads.saturating_sub(1);
        if let Some(p) = self.peers.get_mut(to) {
            p.uploads = p.uploads.saturating_sub(1);
        }
        self.upload_reserved.retain(|(_, until)| *until > now);
        while let Some(next) = self.upload_waiting.pop_front() {
            if self.peers.contains_key(&next) {
                let until = now + self.config.slot_reservation;
                self.upload_reserved.push((next, until));
                break;
            }
        }
    }

    /// The answer to request `id` arrived (for chunks use [`Node::handle_chunk`]).
    pub fn handle_response(
        &mut self,
        id: RequestId,
        response: Response,
        now: Instant,
        now_unix_ms: u64,
    ) {
        let Some(out) = self.requests.remove(&id) else {
            return;
        };
        match (out, response) {
            (Outstanding::Releases { .. }, Response::Releases(list)) => {
                for signed in list {
                    // Refusals are counted in stats; a neighbour relaying an untrusted
                    // release is not itself misbehaving.
                    let _ = self.handle_release(signed, now, now_unix_ms);
                }
            }
            (Outstanding::ChunkMap { peer, blob, .. }, Response::ChunkMap(map)) => {
                self.accept_chunk_map(&peer, blob, map, now);
            }
            (Outstanding::ChunkMap { peer, blob, .. }, _) => {
                if let Some(b) = self.blobs.get_mut(&blob) {
                    b.map_request = false;
                    b.map_tried.insert(peer.key_bytes());
                }
            }
            (
                Outstanding::Chunk {
                    peer, blob, index, ..
                },
                Response::Error(ErrorCode::Busy),
            ) => {
                // Not a failure: the peer wants this chunk fetched elsewhere (super-seeding).
                self.release_slot(id, Some(&peer), &blob, index);
                let until = now + self.config.busy_backoff;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.declined.insert((blob, index), until);
                    self.decline_expiries.push_back(until);
                }
            }
            (
                Outstanding::Chunk {
                    peer, blob, index, ..
                },
                Response::Error(ErrorCode::Overloaded),
            ) => {
                // Not a failure: the peer is at its upload limit; give it a moment.
                self.release_slot(id, Some(&peer), &blob, index);
                let until = now + self.config.overload_backoff;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.unavailable_until = Some(p.unavailable_until.map_or(until, |t| t.max(until)));
                }
            }
            (out @ Outstanding::Chunk { .. }, _) => {
                // A chunk answer without a payload (e.g. NotFound): try elsewhere.
                self.fail_outstanding(id, &out, now, true);
            }
            _ => {}
        }
        self.after_input(now);
    }

    /// Which chunk request `id` is for, so the driver can verify the payload.
    pub fn chunk_target(&self, id: RequestId) -> Option<(Arc<ChunkMap>, u32)> {
        match self.requests.get(&id)? {
            Outstanding::Chunk { blob, index, .. } | Outstanding::Registry { blob, index, .. } => {
                Some((self.blobs.get(blob)?.map.clone()?, *index))
            }
            _ => None,
        }
    }

    /// The outcome of a chunk the driver received for request `id`.
    pub fn handle_chunk(&mut self, id: RequestId, outcome: ChunkOutcome, now: Instant) {
        let (peer, blob, index) = match self.requests.remove(&id) {
            Some(Outstanding::Chunk {
                peer, blob, index, ..
            }) => (Some(peer), blob, index),
            Some(Outstanding::Registry { blob, index, .. }) => (None, blob, index),
            Some(other) => {
                self.requests.insert(id, other);
                return;
            }
            None => return,
        };
        self.release_slot(id, peer.as_ref(), &blob, index);
        match (outcome, peer) {
            (ChunkOutcome::Stored, peer) => {
                self.chunk_stored(peer.as_ref(), blob, index);
                self.drop_duplicates(blob, index);
            }
            (ChunkOutcome::Corrupt(err), Some(peer)) => {
                self.stats.chunks_rejected += 1;
                self.ban(&peer, now, err.to_string());
            }
            // A registry chunk that fails its hash: counted; the herd guard finds the
            // chunk orphaned again and a later claim retries it.
            (ChunkOutcome::Corrupt(_), None) => self.stats.chunks_rejected += 1,
            (ChunkOutcome::LocalError(_), _) => {
                self.stats.store_errors += 1;
                let until = now + self.config.store_error_pause;
                self.down_blocked_until =
                    Some(self.down_blocked_until.map_or(until, |t| t.max(until)));
            }
        }
        self.after_input(now);
    }

    /// Request `id` failed in transport (connection lost, stream error, remote timeout).
    pub fn handle_failure(&mut self, id: RequestId, now: Instant) {
        self.fail_request(id, now, true);
        self.after_input(now);
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

    /// Counters for metrics and summaries.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The replay guard: the newest accepted sequence per seeder and reference.
    pub fn replay_guard(&self) -> &ReplayGuard {
        &self.replay
    }

    /// An accepted release.
    pub fn release(&self, id: &ReleaseId) -> Option<&Arc<Release>> {
        self.releases.get(id).map(|r| &r.release)
    }

    /// The signed form of an accepted release, as received: what a driver saves so that
    /// after a restart it re-verifies the release and rebuilds the replay guard.
    pub fn signed_release(&self, id: &ReleaseId) -> Option<&SignedRelease> {
        self.releases.get(id).map(|r| &r.signed)
    }

    /// Ids of all accepted releases.
    pub fn release_ids(&self) -> impl Iterator<Item = &ReleaseId> {
        self.releases.keys()
    }

    /// Whether release `id` was accepted and a newer release of the same image (same
    /// seeder, same reference, higher sequence) has been accepted since: a driver does
    /// not import it, as the newer one would replace it at once.
    pub fn is_superseded(&self, id: &ReleaseId) -> bool {
        self.releases
            .get(id)
            .is_some_and(|r| !self.replay.is_newest(&r.release, *id))
    }

    /// Whether every blob of release `id` is complete.
    pub fn release_complete(&self, id: &ReleaseId) -> bool {
        self.releases.get(id).is_some_and(|r| r.complete)
    }

    /// Progress of every blob the node carries.
    pub fn progress(&self) -> Vec<BlobProgress> {
        self.blobs
            .values()
            .map(|b| BlobProgress {
                blob: b.entry.digest,
                size: b.entry.size,
                have_bytes: b.map.as_ref().map_or(0, |m| {
                    b.have
                        .ones()
                        .map(|i| m.range(i).map_or(0, |r| r.end - r.start))
                        .sum()
                }),
                complete: b.complete,
            })
            .collect()
    }

    /// The chunk map of a blob, once known.
    pub fn chunk_map(&self, blob: &Digest) -> Option<&Arc<ChunkMap>> {
        self.blobs.get(blob)?.map.as_ref()
    }

    /// Number of connected neighbours.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

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

    fn accept_chunk_map(&mut self, peer: &P, blob: Digest, map: ChunkMap, now: Instant) {
        let Some(state) = self.blobs.get_mut(&blob) else {
            return;
        };
        state.map_request = false;
        if state.map.is_some() {
            return;
        }
        if map.validate().is_err() || map.blob() != blob || map.digest() != state.entry.chunk_map {
            state.map_tried.insert(peer.key_bytes());
            let reason = format!("served a chunk map for {blob} that does not match the release");
            self.stats.chunks_rejected += 1;
            self.ban(peer, now, reason);
            return;
        }
        Self::install_map(state, map);
        self.announce_full = true;
        self.rebuild_availability(blob);
    }

    fn chunk_stored(&mut self, peer: Option<&P>, blob: Digest, index: u32) {
        let from_seeder =
            peer.is_some_and(|peer| self.peers.get(peer).is_some_and(|p| p.is_seeder));
        let Some(state) = self.blobs.get_mut(&blob) else {
            return;
        };
        if !state.have.set(index) {
            return;
        }
        let len = state
            .map
            .as_ref()
            .and_then(|m| m.range(index).ok())
            .map_or(0, |r| r.end - r.start);
        if peer.is_none() {
            self.stats.bytes_from_registry += len;
        } else if from_seeder {
            self.stats.bytes_from_seeders += len;
        } else {
            self.stats.bytes_from_peers += len;
        }
        self.new_haves.entry(blob).or_default().push(index);
        if state.have.is_full() && !state.complete {
            state.complete = true;
            self.actions.push_back(Action::BlobComplete(blob));
        }
    }

    /// Frees the request slot of chunk request `id`; the chunk stops being pending once no
    /// request for it (an endgame duplicate may remain) is outstanding.
    fn release_slot(&mut self, id: RequestId, peer: Option<&P>, blob: &Digest, index: u32) {
        self.chunks_inflight = self.chunks_inflight.saturating_sub(1);
        if let Some(p) = peer.and_then(|peer| self.peers.get_mut(peer)) {
            p.inflight = p.inflight.saturating_sub(1);
        }
        let key = (*blob, index);
        let still_requested = self.chunk_requests.get_mut(&key).is_some_and(|ids| {
            ids.retain(|i| *i != id);
            !ids.is_empty()
        });
        if !still_requested {
            self.chunk_requests.remove(&key);
            if let Some(b) = self.blobs.get_mut(blob) {
                b.pending.clear(index);
            }
        }
    }

    /// A chunk arrived: forget the other (endgame) requests for it, so their answers are
    /// dropped unhashed and their slots serve other chunks.
    fn drop_duplicates(&mut self, blob: Digest, index: u32) {
        let ids = self
            .chunk_requests
            .remove(&(blob, index))
            .unwrap_or_default();
        for id in ids {
            if let Some(out) = self.requests.remove(&id) {
                self.chunks_inflight = self.chunks_inflight.saturating_sub(1);
                if let Some(p) = out.peer().and_then(|peer| self.peers.get_mut(peer)) {
                    p.inflight = p.inflight.saturating_sub(1);
                }
            }
        }
    }

    fn fail_request(&mut self, id: RequestId, now: Instant, penalize: bool) {
        if let Some(out) = self.requests.remove(&id) {
            self.fail_outstanding(id, &out, now, penalize);
        }
    }

    /// Undoes what request `id` (already removed from `requests`) holds, and backs its peer
    /// off if `penalize`.
    fn fail_outstanding(
        &mut self,
        id: RequestId,
        out: &Outstanding<P>,
        now: Instant,
        penalize: bool,
    ) {
        match out {
            Outstanding::Chunk { blob, index, .. } | Outstanding::Registry { blob, index, .. } => {
                self.stats.requests_failed += 1;
                self.release_slot(id, out.peer(), blob, *index);
            }
            Outstanding::ChunkMap { peer, blob, .. } => {
                if let Some(b) = self.blobs.get_mut(blob) {
                    b.map_request = false;
                    b.map_tried.insert(peer.key_bytes());
                }
            }
            Outstanding::Releases { .. } => return,
        }
        if penalize {
            let backoff = self.config.failure_backoff;
            if let Some(p) = out.peer().and_then(|peer| self.peers.get_mut(peer)) {
                let until = now + backoff;
                p.unavailable_until = Some(p.unavailable_until.map_or(until, |t| t.max(until)));
            }
        }
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
