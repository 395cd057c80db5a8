//! Neighbours' have-information: what each one announced, bounded, and checked against
//! the chunk count a blob is known to have before any of it is counted.
//!
//! Haves come off the wire, so nothing in them is trusted: a bitfield is kept only when
//! its length is the blob's chunk count (from the chunk map, or from the signed release
//! entry before the map arrives), and haves for blobs this node knows nothing about yet
//! are kept for at most [`MAX_UNKNOWN_HAVES`] blobs and [`MAX_UNKNOWN_HAVE_BYTES`] of
//! bitfields per neighbour, each at most [`crate::MAX_CHUNKS`] long. Every time a blob becomes known or gets its map, stored
//! bitfields of the wrong length are dropped before availability is counted, and every
//! index into `availability` is checked, so no count from the wire can index past it.

use super::{Node, PeerKey};
use crate::wire::HaveUpdate;
use crate::{Digest, MAX_CHUNKS, chunk_count};

/// Blobs per neighbour whose haves are kept before any release names them. A release
/// may arrive after the haves for its blobs, and a neighbour announces every blob it
/// stores (old images too), so the bound is generous; a neighbour still cannot fill this
/// node's memory with made-up digests: with [`MAX_UNKNOWN_HAVE_BYTES`] about 1.2 MiB per
/// neighbour at most, 40 MiB over the 32 neighbours a node keeps.
pub(crate) const MAX_UNKNOWN_HAVES: usize = 1024;
/// Bitfield bytes per neighbour for blobs no release names yet (a real blob needs
/// 1 bit per chunk: 32 bytes for a 1 GiB layer at 4 MiB chunks).
pub(crate) const MAX_UNKNOWN_HAVE_BYTES: usize = 1 << 20;

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
        // Blobs and bitfield bytes this neighbour already holds for unknown blobs, `blob`
        // itself left out (its entry is replaced). Only counted when `blob` is unknown.
        let (mut unknown_count, mut unknown_bytes) = (0usize, 0usize);
        if expected.is_none() {
            for (d, b) in &peer.haves {
                if *d != blob && !self.blobs.contains_key(d) {
                    unknown_count += 1;
                    unknown_bytes += b.len().div_ceil(8) as usize;
                }
            }
        }
        let mut track = self
            .blobs
            .get_mut(&blob)
            .filter(|s| s.map.is_some())
            .map(|s| &mut s.availability);
        match update {
            HaveUpdate::Full(bits) => {
                let fits = match expected {
                    Some(n) => bits.len() == n,
                    None => {
                        bits.len() <= MAX_CHUNKS
                            && unknown_count < MAX_UNKNOWN_HAVES
                            && unknown_bytes + bits.len().div_ceil(8) as usize
                                <= MAX_UNKNOWN_HAVE_BYTES
                    }
                };
                if bits.validate().is_err() || !fits {
                    self.stats.haves_refused += 1;
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
