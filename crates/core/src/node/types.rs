//! The node's vocabulary with its driver: peer identities, request ids, the actions a
//! node asks for, how it answers inbound requests, chunk outcomes and its counters.

use std::fmt::Debug;
use std::ops::Range;

use crate::wire::{Request, Response, SwarmNotice};
use crate::{ChunkError, ChunkMap, Digest, ReleaseId, SignedRelease};

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

impl ChunkOutcome {
    /// Verifies `payload` as chunk `index` of `map` and only then stores it with `store`:
    /// the one order every driver follows, so unverified bytes never reach a store.
    pub fn verify_then_store<E: std::fmt::Display>(
        map: &ChunkMap,
        index: u32,
        payload: &[u8],
        store: impl FnOnce() -> Result<(), E>,
    ) -> Self {
        match map.verify(index, payload) {
            Err(e) => Self::Corrupt(e),
            Ok(()) => match store() {
                Ok(()) => Self::Stored,
                Err(e) => Self::LocalError(e.to_string()),
            },
        }
    }
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
    /// Herd guard: other nodes' claims this node waited for that expired without the
    /// chunk appearing (an honest claimant died, or a rogue claims and never fetches).
    pub herd_claims_expired: u64,
    /// Herd guard: live claims this node went past because claims on that chunk had
    /// already gone void [`crate::node::MAX_YIELDS`] times (issue #18, finding 8).
    pub herd_claims_overridden: u64,
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
