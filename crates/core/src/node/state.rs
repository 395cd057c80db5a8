//! Per-peer, per-blob and per-request bookkeeping of a [`super::Node`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::{Bitfield, ChunkMap, Digest, Release, ReleaseBlob, SignedRelease};

/// What we know about one connected neighbour.
#[derive(Debug, Default)]
pub(super) struct PeerState {
    /// Have-information per blob, as last announced.
    pub(super) haves: BTreeMap<Digest, Bitfield>,
    /// Chunk requests in flight to this peer.
    pub(super) inflight: usize,
    /// Chunks being served to this peer.
    pub(super) uploads: usize,
    /// Not asked again before this time (failure back-off or ban).
    pub(super) unavailable_until: Option<Instant>,
    /// Signed a release we accepted: holds everything, asked only as a last resort.
    pub(super) is_seeder: bool,
    /// Blobs for which this peer was sent our full bitfield.
    pub(super) sent_full: BTreeSet<Digest>,
    /// Chunks this peer answered `Busy` for, not asked again before the given time.
    pub(super) declined: BTreeMap<(Digest, u32), Instant>,
    /// Unique per connection (a reconnect gets a new one): who a super-seeder handed a
    /// chunk to, and whether that connection is still up.
    pub(super) session: u64,
}

impl PeerState {
    pub(super) fn available(&self, now: Instant) -> bool {
        self.unavailable_until.is_none_or(|t| t <= now)
    }

    pub(super) fn declined(&self, blob: &Digest, index: u32, now: Instant) -> bool {
        self.declined.get(&(*blob, index)).is_some_and(|t| *t > now)
    }

    pub(super) fn has(&self, blob: &Digest, index: u32) -> bool {
        self.is_seeder || self.haves.get(blob).is_some_and(|b| b.get(index))
    }

    pub(super) fn has_complete(&self, blob: &Digest) -> bool {
        self.is_seeder || self.haves.get(blob).is_some_and(|b| b.is_full())
    }
}

/// Download state of one blob, shared by every release that lists it.
#[derive(Debug)]
pub(super) struct BlobState {
    pub(super) entry: ReleaseBlob,
    pub(super) map: Option<Arc<ChunkMap>>,
    /// Verified and stored chunks.
    pub(super) have: Bitfield,
    /// Chunks requested and not yet answered.
    pub(super) pending: Bitfield,
    /// Number of non-seeder neighbours holding each chunk.
    pub(super) availability: Vec<u16>,
    pub(super) map_request: bool,
    /// Peers that already failed to give us the chunk map.
    pub(super) map_tried: BTreeSet<Vec<u8>>,
    pub(super) complete: bool,
    /// Super-seeding: how often and when each chunk was last handed out.
    pub(super) served: Vec<(u32, Option<Instant>)>,
    /// Super-seeding: how many chunks were handed out exactly `n` times, at index `n`, so
    /// the least-served count is known without a scan per request.
    pub(super) served_levels: Vec<u32>,
    /// Super-seeding: the least number of times any chunk was handed out.
    pub(super) served_least: u32,
    /// Upload-once: the connection (`PeerState::session`) each chunk was last handed
    /// to; 0 for none.
    pub(super) served_to: Vec<u64>,
}

impl BlobState {
    pub(super) fn new(entry: ReleaseBlob) -> Self {
        Self {
            entry,
            map: None,
            have: Bitfield::new(0),
            pending: Bitfield::new(0),
            availability: Vec::new(),
            map_request: false,
            map_tried: BTreeSet::new(),
            complete: false,
            served: Vec::new(),
            served_levels: Vec::new(),
            served_least: 0,
            served_to: Vec::new(),
        }
    }

    pub(super) fn downloading(&self) -> bool {
        self.map.is_some() && !self.complete
    }

    /// Super-seeding rule: decline a chunk already handed out more often than the least
    /// handed-out chunk, if that happened within `window`; otherwise count it as served.
    ///
    /// Upload-once (`once` = the requesting connection's session and whether a session
    /// is still connected): also decline a chunk handed out within `window` to another
    /// connection that is still up, and remember who gets it.
    pub(super) fn super_seed_admit(
        &mut self,
        index: u32,
        now: Instant,
        window: std::time::Duration,
        once: Option<(u64, &dyn Fn(u64) -> bool)>,
    ) -> bool {
        if self.served.len() != self.have.len() as usize {
            self.served = vec![(0, None); self.have.len() as usize];
            self.served_levels = vec![self.have.len()];
            self.served_least = 0;
            self.served_to = vec![0; self.have.len() as usize];
        }
        let Some(&(count, last)) = self.served.get(index as usize) else {
            return false;
        };
        let recent = last.is_some_and(|t| now < t + window);
        if recent && let Some((session, up)) = once {
            let holder = self.served_to[index as usize];
            if holder != 0 && holder != session && up(holder) {
                return false;
            }
        }
        if count > self.served_least && recent {
            return false;
        }
        self.served[index as usize] = (count + 1, Some(now));
        if let Some((session, _)) = once {
            self.served_to[index as usize] = session;
        }
        let (from, to) = (count as usize, count as usize + 1);
        if self.served_levels.len() <= to {
            self.served_levels.resize(to + 1, 0);
        }
        self.served_levels[from] -= 1;
        self.served_levels[to] += 1;
        if count == self.served_least && self.served_levels[from] == 0 {
            self.served_least += 1;
        }
        true
    }
}

/// One accepted release.
#[derive(Debug)]
pub(super) struct ReleaseState {
    pub(super) signed: SignedRelease,
    pub(super) release: Arc<Release>,
    pub(super) complete: bool,
}

/// What an outstanding request was for, so its answer or failure can be applied.
#[derive(Debug, Clone)]
pub(super) enum Outstanding<P> {
    Chunk {
        peer: P,
        blob: Digest,
        index: u32,
        deadline: Instant,
    },
    ChunkMap {
        peer: P,
        blob: Digest,
        deadline: Instant,
    },
    Releases {
        peer: P,
        deadline: Instant,
    },
    /// A herd-guard fetch from the registry.
    Registry {
        blob: Digest,
        index: u32,
        deadline: Instant,
    },
}

impl<P> Outstanding<P> {
    pub(super) fn deadline(&self) -> Instant {
        match self {
            Self::Chunk { deadline, .. }
            | Self::ChunkMap { deadline, .. }
            | Self::Releases { deadline, .. }
            | Self::Registry { deadline, .. } => *deadline,
        }
    }

    /// The peer asked; `None` for the registry.
    pub(super) fn peer(&self) -> Option<&P> {
        match self {
            Self::Chunk { peer, .. }
            | Self::ChunkMap { peer, .. }
            | Self::Releases { peer, .. } => Some(peer),
            Self::Registry { .. } => None,
        }
    }
}
