//! Choosing what to ask of whom: chunk maps first, then chunks rarest-first.

use std::borrow::Cow;
use std::time::Instant;

use rand::Rng;
use rand::seq::SliceRandom;

use super::state::Outstanding;
use super::{Action, Node, PeerKey, RequestId};
use crate::wire::Request;
use crate::{Bitfield, Digest};

/// Most outstanding requests for one chunk in endgame.
const ENDGAME_COPIES: usize = 2;

impl<P: PeerKey> Node<P> {
    /// Asks one peer per blob for the chunk map: a peer that announced the blob first,
    /// then a seeder, then anyone; a peer that failed to answer is not asked again until
    /// every candidate has been tried.
    pub(super) fn request_chunk_maps(&mut self, now: Instant) {
        let deadline = now + self.config.request_timeout;
        let mut sends = Vec::new();
        for (digest, b) in &mut self.blobs {
            if b.map.is_some() || b.map_request {
                continue;
            }
            let mut best: Option<(u8, &P)> = None;
            for (peer, p) in &self.peers {
                if !p.available(now) || b.map_tried.contains(&peer.key_bytes()) {
                    continue;
                }
                let rank = if p.haves.contains_key(digest) {
                    0
                } else if p.is_seeder {
                    1
                } else {
                    2
                };
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, peer));
                }
            }
            match best {
                Some((_, peer)) => {
                    b.map_request = true;
                    sends.push((peer.clone(), *digest));
                }
                // Everyone was tried: start over on the next input.
                None => b.map_tried.clear(),
            }
        }
        for (peer, blob) in sends {
            let id = self.next_request_id();
            self.track(
                id,
                Outstanding::ChunkMap {
                    peer: peer.clone(),
                    blob,
                    deadline,
                },
            );
            self.actions.push_back(Action::Send {
                peer,
                id,
                request: Request::ChunkMap { blob },
            });
        }
    }

    /// Fills free request slots, one request per peer per round so every neighbour is used,
    /// non-seeders first. With `only`, just that peer is considered: a have-update changes
    /// what one neighbour offers and nothing else, and is by far the most frequent input.
    pub(super) fn schedule_chunks(&mut self, now: Instant, only: Option<&P>) {
        if self.chunks_inflight >= self.config.max_requests_total
            || self.down_blocked_until.is_some_and(|t| t > now)
            || !self.blobs.values().any(|b| b.downloading())
        {
            return;
        }
        let per_peer = self.config.max_requests_per_peer;
        let mut order: Vec<P> = match only {
            Some(peer) => self
                .peers
                .get(peer)
                .filter(|p| p.available(now) && p.inflight < per_peer)
                .map(|_| vec![peer.clone()])
                .unwrap_or_default(),
            None => {
                let mut order: Vec<(bool, P)> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.available(now) && p.inflight < per_peer)
                    .map(|(k, p)| (p.is_seeder, k.clone()))
                    .collect();
                order.shuffle(&mut self.rng);
                // Stable: peers stay shuffled within each group.
                order.sort_by_key(|(seeder, _)| *seeder);
                order.into_iter().map(|(_, k)| k).collect()
            }
        };
        let deadline = now + self.config.request_timeout;
        // Endgame starts once every missing chunk is requested; checked once per call (a
        // pick made below can only bring it closer, and the next input sees that).
        let endgame = self
            .blobs
            .values()
            .filter(|b| b.downloading())
            .all(|b| b.have.count() + b.pending.count() == b.have.len());
        while !order.is_empty() {
            // A peer that offers nothing now offers nothing later in this call (picks only
            // shrink what is missing), so it leaves the rotation.
            let mut i = 0;
            while i < order.len() {
                if self.chunks_inflight >= self.config.max_requests_total {
                    return;
                }
                let peer = &order[i];
                if self.peers[peer].inflight >= per_peer {
                    order.swap_remove(i);
                    continue;
                }
                let picked = match self.pick_chunk(peer, now) {
                    None if endgame => self.pick_endgame(peer, now),
                    picked => picked,
                };
                let Some((blob, index)) = picked else {
                    order.swap_remove(i);
                    continue;
                };
                if let Some(rate) = self.down_rate.as_mut() {
                    if !rate.ready(now) {
                        // Over the download cap: stop until the bucket refills.
                        self.down_blocked_until = Some(rate.ready_at(now));
                        return;
                    }
                    let len = self.blobs[&blob]
                        .map
                        .as_ref()
                        .and_then(|m| m.range(index).ok())
                        .map_or(0, |r| r.end - r.start);
                    rate.take(len);
                }
                let peer = peer.clone();
                self.send_chunk_request(peer, blob, index, deadline);
                i += 1;
            }
        }
    }

    fn send_chunk_request(&mut self, peer: P, blob: Digest, index: u32, deadline: Instant) {
        self.peers.get_mut(&peer).expect("ordered").inflight += 1;
        let id = self.open_chunk_request(
            blob,
            index,
            Outstanding::Chunk {
                peer: peer.clone(),
                blob,
                index,
                deadline,
            },
        );
        self.actions.push_back(Action::Send {
            peer,
            id,
            request: Request::Chunk { blob, index },
        });
    }

    /// Books a request for a chunk (from a peer or the registry): pending, counted in
    /// flight, listed among the chunk's requests, and tracked until answered.
    pub(super) fn open_chunk_request(
        &mut self,
        blob: Digest,
        index: u32,
        out: Outstanding<P>,
    ) -> RequestId {
        if let Some(b) = self.blobs.get_mut(&blob) {
            b.pending.set(index);
        }
        self.chunks_inflight += 1;
        let id = self.next_request_id();
        self.chunk_requests
            .entry((blob, index))
            .or_default()
            .push(id);
        self.track(id, out);
        id
    }

    /// Endgame: once every missing chunk is already requested, an idle peer holding one of
    /// them gets a duplicate request (at most [`ENDGAME_COPIES`] per chunk), so the last
    /// chunks do not wait on the slowest peer. The first verified copy wins.
    fn pick_endgame(&mut self, peer: &P, now: Instant) -> Option<(Digest, u32)> {
        let p = &self.peers[peer];
        let mut best: Option<(u32, Digest, u32)> = None;
        for ((blob, index), ids) in &self.chunk_requests {
            if ids.len() >= ENDGAME_COPIES
                || !p.has(blob, *index)
                || p.declined(blob, *index, now)
                || ids.iter().any(|id| {
                    matches!(self.requests.get(id), Some(Outstanding::Chunk { peer: q, .. }) if q == peer)
                })
            {
                continue;
            }
            let tie: u32 = self.rng.r#gen();
            if best.is_none_or(|(t, _, _)| tie < t) {
                best = Some((tie, *blob, *index));
            }
        }
        best.map(|(_, b, i)| (b, i))
    }

    /// Chunks of `blob` (of `len` chunks) that some available non-seeder neighbour
    /// announces: what a seeder need not be asked for, and what is not an orphan.
    pub(super) fn held_by_neighbours(&self, blob: &Digest, len: u32, now: Instant) -> Bitfield {
        let mut held = Bitfield::new(len);
        for q in self
            .peers
            .values()
            .filter(|q| !q.is_seeder && q.available(now))
        {
            if let Some(bits) = q.haves.get(blob) {
                held.union_with(bits);
            }
        }
        held
    }

    /// The rarest chunk `peer` holds that we neither have nor have asked for. The scan
    /// starts at a random blob and byte and keeps the first rarest chunk it meets, so ties
    /// fall at random without a random draw per candidate, and it stops early at a chunk
    /// no rarer one can beat. A seeder is asked only for chunks no available neighbour
    /// holds, so its upload stays close to one copy of the image.
    fn pick_chunk(&mut self, peer: &P, now: Instant) -> Option<(Digest, u32)> {
        let p = &self.peers[peer];
        // Availability counts non-seeder neighbours holding a chunk: a neighbour's own
        // chunks count at least 1, a seeder-only chunk 0. Nothing can beat that floor.
        let floor = u16::from(!p.is_seeder);
        let check_declined = !p.declined.is_empty();
        let mut best: Option<(u16, Digest, u32)> = None;
        let nblobs = self.blobs.len();
        let first_blob = if nblobs > 1 {
            self.rng.gen_range(0..nblobs)
        } else {
            0
        };
        // With a cap on blobs at once, started blobs come first and new ones start only
        // while fewer than the cap are under way.
        let mut may_start = self.config.max_active_blobs.map(|cap| {
            let started = self
                .blobs
                .values()
                .filter(|b| b.downloading() && b.have.count() + b.pending.count() > 0)
                .count();
            cap.saturating_sub(started)
        });
        for (digest, b) in self.blobs.iter().cycle().skip(first_blob).take(nblobs) {
            if !b.downloading() {
                continue;
            }
            if let Some(left) = may_start.as_mut()
                && b.have.count() + b.pending.count() == 0
            {
                if *left == 0 {
                    continue;
                }
                *left -= 1;
            }
            // What this peer offers, as packed bits: its announced haves, or for a seeder
            // everything no available non-seeder neighbour holds.
            let offer: Cow<'_, Bitfield> = if p.is_seeder {
                Cow::Owned(self.held_by_neighbours(digest, b.have.len(), now))
            } else {
                match p.haves.get(digest) {
                    Some(bits) if bits.len() == b.have.len() => Cow::Borrowed(bits),
                    _ => continue,
                }
            };
            let len = b.have.len() as usize;
            let nwords = len.div_ceil(64);
            if nwords == 0 {
                continue;
            }
            let start = self.rng.gen_range(0..nwords);
            for step in 0..nwords {
                let w = if start + step < nwords {
                    start + step
                } else {
                    start + step - nwords
                };
                let offered = offer.word(w);
                let offered = if p.is_seeder { !offered } else { offered };
                let mut cand = offered & !b.have.word(w) & !b.pending.word(w);
                if w == nwords - 1 && !len.is_multiple_of(64) {
                    cand &= !(u64::MAX >> (len % 64));
                }
                while cand != 0 {
                    let bit = cand.leading_zeros();
                    cand &= !(1u64 << 63 >> bit);
                    let i = (w * 64) as u32 + bit;
                    if check_declined && p.declined(digest, i, now) {
                        continue;
                    }
                    let avail = b.availability[i as usize];
                    if best.is_none_or(|(a, _, _)| avail < a) {
                        best = Some((avail, *digest, i));
                        if avail <= floor {
                            return Some((*digest, i));
                        }
                    }
                }
            }
        }
        best.map(|(_, d, i)| (d, i))
    }
}
