//! Neighbours' have-information: what each one announced, bounded, and checked against
//! the chunk count a blob is known to have before any of it is counted.
//!
//! Haves come off the wire, so nothing in them is trusted: a bitfield is kept only when
//! its length is the blob's chunk count (from the chunk map, or from the signed release
//! entry before the map arrives), and haves for blobs this node knows nothing about yet
//! are kept for at most [`MAX_UNKNOWN_HAVES`] blobs per neighbour, each at most
//! [`crate::MAX_CHUNKS`] long. Every time a blob becomes known or gets its map, stored
//! bitfields of the wrong length are dropped before availability is counted, and every
//! index into `availability` is checked, so no count from the wire can index past it.

use super::{Node, PeerKey};
use crate::wire::HaveUpdate;
use crate::{Digest, MAX_CHUNKS, chunk_count};

/// Blobs per neighbour whose haves are kept before any release names them: a release
/// announced by gossip may arrive after the haves for its blobs, but a neighbour must not
/// fill this node's memory with made-up digests (32 KiB at most each, 2 MiB per peer).
pub(crate) const MAX_UNKNOWN_HAVES: usize = 64;

impl<P: PeerKey> Node<P> {
    /// The chunk count `blob` must have, when known: its chunk map's, or before the map
    /// arrives, the count the signed release entry implies.
    fn expected_chunks(&self, blob: &Digest) -> Option<u32> {
        let state = self.blobs.get(blob)?;
        match &state.map {
            Some(map) => Some(map.count()),
            None => chunk_count(state.entry.size, state.entry.chunk_size).ok(),
        }
    }

    /// `blob` became known or got its map: drops every stored bitfield whose length is
    /// not the blob's chunk count, then counts the rest into `availability` (when the map
    /// is there).
    pub(super) fn rebuild_availability(&mut self, blob: Digest) {
        let expected = self.expected_chunks(&blob);
        for p in self.peers.values_mut() {
            if p.haves
                .get(&blob)
                .is_some_and(|b| Some(b.len()) != expected)
            {
                p.haves.remove(&blob);
            }
        }
        let Some(state) = self.blobs.get_mut(&blob).filter(|s| s.map.is_some()) else {
            return;
        };
        state.availability.iter_mut().for_each(|a| *a = 0);
        for p in self.peers.values().filter(|p| !p.is_seeder) {
            if let Some(bits) = p.haves.get(&blob) {
                for i in bits.ones() {
                    if let Some(a) = state.availability.get_mut(i as usize) {
                        *a = a.saturating_add(1);
                    }
                }
            }
        }
    }

    /// A neighbour's `Have` for `blob`: stored when it fits what is known of the blob,
    /// counted into availability when the blob's map is there, dropped otherwise.
    pub(super) fn apply_have(&mut self, from: &P, blob: Digest, update: HaveUpdate) {
        let expected = self.expected_chunks(&blob);
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        if peer.is_seeder {
            return;
        }
        let room_for_unknown = expected.is_none()
            && (peer.haves.contains_key(&blob)
                || peer
                    .haves
                    .keys()
                    .filter(|d| !self.blobs.contains_key(*d))
                    .count()
                    < MAX_UNKNOWN_HAVES);
        let mut track = self
            .blobs
            .get_mut(&blob)
            .filter(|s| s.map.is_some())
            .map(|s| &mut s.availability);
        match update {
            HaveUpdate::Full(bits) => {
                let fits = match expected {
                    Some(n) => bits.len() == n,
                    None => bits.len() <= MAX_CHUNKS && room_for_unknown,
                };
                if bits.validate().is_err() || !fits {
                    return;
                }
                let old = peer.haves.insert(blob, bits);
                if let Some(avail) = track.as_deref_mut() {
                    for i in old.iter().flat_map(|o| o.ones()) {
                        if let Some(a) = avail.get_mut(i as usize) {
                            *a = a.saturating_sub(1);
                        }
                    }
                    for i in peer.haves[&blob].ones() {
                        if let Some(a) = avail.get_mut(i as usize) {
                            *a = a.saturating_add(1);
                        }
                    }
                }
            }
            HaveUpdate::Added(indices) => {
                let Some(bits) = peer.haves.get_mut(&blob) else {
                    return;
                };
                for i in indices {
                    if bits.set(i)
                        && let Some(a) = track.as_deref_mut().and_then(|t| t.get_mut(i as usize))
                    {
                        *a = a.saturating_add(1);
                    }
                }
            }
        }
    }
}
