//! The fetching side: answers to this node's requests (chunk maps, chunks, release
//! syncs, failures), the outcome of verifying and storing a chunk, and the bookkeeping
//! that frees request slots and re-queues what failed.

use std::sync::Arc;
use std::time::Instant;

use super::state::Outstanding;
use super::{Action, ChunkOutcome, Node, PeerKey, RequestId};
use crate::wire::{ErrorCode, Response};
use crate::{ChunkMap, Digest};

impl<P: PeerKey> Node<P> {
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
                Response::Error(code @ (ErrorCode::Busy | ErrorCode::Overloaded)),
            ) => {
                self.release_slot(id, Some(&peer), &blob, index);
                self.chunk_declined(&peer, blob, index, code, now);
            }
            (out @ Outstanding::Chunk { .. }, _) => {
                // A chunk answer without a payload (e.g. NotFound): try elsewhere.
                self.fail_outstanding(id, &out, now, true);
            }
            _ => {}
        }
        self.after_input(now);
    }

    /// `peer` declined a chunk request without failing it: `Busy` means it wants this
    /// chunk fetched elsewhere (super-seeding), `Overloaded` that it is at its upload
    /// limit, so it is given a moment.
    fn chunk_declined(
        &mut self,
        peer: &P,
        blob: Digest,
        index: u32,
        code: ErrorCode,
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if code == ErrorCode::Busy {
            let until = now + self.config.busy_backoff;
            p.declined.insert((blob, index), until);
            self.decline_expiries.push_back(until);
        } else {
            let until = now + self.config.overload_backoff;
            p.unavailable_until = Some(p.unavailable_until.map_or(until, |t| t.max(until)));
        }
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

    pub(super) fn accept_chunk_map(&mut self, peer: &P, blob: Digest, map: ChunkMap, now: Instant) {
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

    pub(super) fn chunk_stored(&mut self, peer: Option<&P>, blob: Digest, index: u32) {
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
    pub(super) fn release_slot(
        &mut self,
        id: RequestId,
        peer: Option<&P>,
        blob: &Digest,
        index: u32,
    ) {
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
    pub(super) fn drop_duplicates(&mut self, blob: Digest, index: u32) {
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

    pub(super) fn fail_request(&mut self, id: RequestId, now: Instant, penalize: bool) {
        if let Some(out) = self.requests.remove(&id) {
            self.fail_outstanding(id, &out, now, penalize);
        }
    }

    /// Undoes what request `id` (already removed from `requests`) holds, and backs its peer
    /// off if `penalize`.
    pub(super) fn fail_outstanding(
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
}
