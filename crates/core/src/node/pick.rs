//! Choosing what to ask of whom: chunk maps first, then chunks rarest-first.

use std::borrow::Cow;
use std::time::Instant;

use rand::Rng;
use rand::seq::SliceRandom;

use super::state::Outstanding;
use super::{Action, Node, PeerKey};
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
            self.requests.insert(
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
    /// non-seeders first.
    pub(super) fn schedule_chunks(&mut self, now: Instant) {
        if self.chunks_inflight >= self.config.max_requests_total
            || !self.blobs.values().any(|b| b.downloading())
        {
            return;
        }
        let mut order: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, p)| p.available(now) && p.inflight < self.config.max_requests_per_peer)
            .map(|(k, _)| k.clone())
            .collect();
        order.shuffle(&mut self.rng);
        order.sort_by_key(|k| self.peers[k].is_seeder);
        let deadline = now + self.config.request_timeout;
        loop {
            let mut progressed = false;
            for peer in &order {
                if self.chunks_inflight >= self.config.max_requests_total {
                    return;
                }
                if self.peers[peer].inflight >= self.config.max_requests_per_peer {
                    continue;
                }
                let Some((blob, index)) = self
                    .pick_chunk(peer, now)
                    .or_else(|| self.pick_endgame(peer, now))
                else {
                    continue;
                };
                progressed = true;
                self.blobs
                    .get_mut(&blob)
                    .expect("picked")
                    .pending
                    .set(index);
                self.peers.get_mut(peer).expect("ordered").inflight += 1;
                self.chunks_inflight += 1;
                let id = self.next_request_id();
                self.chunk_requests
                    .entry((blob, index))
                    .or_default()
                    .push(id);
                self.requests.insert(
                    id,
                    Outstanding::Chunk {
                        peer: peer.clone(),
                        blob,
                        index,
                        deadline,
                    },
                );
                self.actions.push_back(Action::Send {
                    peer: peer.clone(),
                    id,
                    request: Request::Chunk { blob, index },
                });
            }
            if !progressed {
                return;
            }
        }
    }

    /// Endgame: once every missing chunk is already requested, an idle peer holding one of
    /// them gets a duplicate request (at most [`ENDGAME_COPIES`] per chunk), so the last
    /// chunks do not wait on the slowest peer. The first verified copy wins.
    fn pick_endgame(&mut self, peer: &P, now: Instant) -> Option<(Digest, u32)> {
        let in_endgame = self
            .blobs
            .values()
            .filter(|b| b.downloading())
            .all(|b| b.have.count() + b.pending.count() == b.have.len());
        if !in_endgame {
            return None;
        }
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

    /// The rarest chunk `peer` holds that we neither have nor have asked for, ties broken
    /// at random. A seeder is asked only for chunks no available neighbour holds, so its
    /// upload stays close to one copy of the image.
    fn pick_chunk(&mut self, peer: &P, now: Instant) -> Option<(Digest, u32)> {
        let p = &self.peers[peer];
        let mut best: Option<(u16, u32, Digest, u32)> = None;
        for (digest, b) in &self.blobs {
            if !b.downloading() {
                continue;
            }
            // What this peer offers, as packed bits: its announced haves, or for a seeder
            // everything no available non-seeder neighbour holds.
            let offer: Cow<'_, Bitfield> = if p.is_seeder {
                let mut held = Bitfield::new(b.have.len());
                for q in self
                    .peers
                    .values()
                    .filter(|q| !q.is_seeder && q.available(now))
                {
                    if let Some(bits) = q.haves.get(digest) {
                        held.union_with(bits);
                    }
                }
                Cow::Owned(held)
            } else {
                match p.haves.get(digest) {
                    Some(bits) if bits.len() == b.have.len() => Cow::Borrowed(bits),
                    _ => continue,
                }
            };
            let len = b.have.len();
            let (have, pending, offer) =
                (b.have.as_bytes(), b.pending.as_bytes(), offer.as_bytes());
            for k in 0..have.len() {
                let offered = if p.is_seeder { !offer[k] } else { offer[k] };
                let mut cand = offered & !have[k] & !pending[k];
                if k == have.len() - 1 && len % 8 != 0 {
                    cand &= 0xffu8 << (8 - len % 8);
                }
                while cand != 0 {
                    let bit = cand.leading_zeros();
                    cand &= !(0x80u8 >> bit);
                    let i = k as u32 * 8 + bit;
                    if p.declined(digest, i, now) {
                        continue;
                    }
                    let avail = b.availability[i as usize];
                    let tie: u32 = self.rng.r#gen();
                    if best.is_none_or(|(a, t, _, _)| (avail, tie) < (a, t)) {
                        best = Some((avail, tie, *digest, i));
                    }
                }
            }
        }
        best.map(|(_, _, d, i)| (d, i))
    }
}
