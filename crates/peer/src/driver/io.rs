//! The driver's inputs and outputs: everything that crosses between it and an adapter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use blobswarm_core::node::{self, ChunkOutcome, RequestId};
use blobswarm_core::wire::{ProgressReport, Request, Response};
use blobswarm_core::{Bitfield, ChunkMap, Digest, Release, ReleaseId, SignedRelease};
use bytes::Bytes;

use super::{GossipId, OutId, ReplyId, Topic, Verdict};
use crate::status::{BanCounts, ReleaseStatus};

/// An input to the driver.
#[derive(Debug)]
pub(crate) enum Event<P> {
    /// The first connection to a peer is up (the peer may be banned or over the bound).
    Connected(P),
    /// The last connection to a peer closed.
    Disconnected(P),
    /// Addresses a peer listens on (bounded and filtered by the adapter), as bytes.
    PeerAddrs {
        /// The peer.
        peer: P,
        /// Its addresses.
        addrs: Vec<Vec<u8>>,
        /// The IP and port of those that name one (the address-ban key).
        listen: Vec<SocketAddr>,
    },
    /// A connection to a peer is up (each one, after [`Event::Connected`] for the first).
    Endpoint {
        /// The peer.
        peer: P,
        /// Its IP and port on this connection.
        remote: SocketAddr,
        /// We dialled `remote`, so the peer listens there.
        dialled: bool,
    },
    /// A connection was refused by a connection limit.
    ConnectionDenied,
    /// A gossip message on one of the agent's topics; answer it with
    /// [`Output::GossipVerdict`] (gossipsub holds it, unforwarded, until then).
    Gossip {
        /// Names the message for the verdict.
        id: GossipId,
        /// Its topic.
        topic: Topic,
        /// Its signed author, when the message carries one.
        source: Option<P>,
        /// The encoded message.
        data: Vec<u8>,
    },
    /// An inbound request; it must be answered through `reply`.
    Request {
        /// Who asks.
        peer: P,
        /// Where the answer goes.
        reply: ReplyId,
        /// The request.
        request: Request,
    },
    /// The answer to an outbound request.
    Response {
        /// Which request.
        out: OutId,
        /// The answer.
        response: Response,
        /// Chunk bytes, for a chunk answer.
        payload: Bytes,
    },
    /// An outbound request failed in transport.
    RequestFailed {
        /// Which request, when the adapter still knew it.
        out: Option<OutId>,
        /// To whom it went.
        peer: P,
        /// The transport's error, for the log.
        error: String,
        /// The peer sent a frame our codec refuses (malformed or oversized).
        violation: bool,
    },
    /// An inbound request failed before its answer was sent.
    InboundFailed {
        /// Who asked.
        peer: P,
        /// The request, when the adapter still knew it.
        reply: Option<ReplyId>,
        /// The transport's error, for the log.
        error: String,
        /// The peer sent a frame our codec refuses.
        violation: bool,
        /// The answer was cut off: the peer read it below the minimum rate.
        slow_reader: bool,
    },
    /// An answer was sent, or could not be (the requester is gone): either way it ended.
    ReplyEnded(ReplyId),
    /// The result of [`Output::ReadChunk`]: the bytes, or None when the store has none.
    ChunkRead {
        /// The request it answers.
        reply: ReplyId,
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// The bytes read.
        bytes: Option<Vec<u8>>,
    },
    /// The result of [`Output::VerifyAndStore`].
    ChunkDone {
        /// The node's request.
        id: RequestId,
        /// The blob.
        blob: Digest,
        /// Verified and stored, corrupt, or not storable (disk full).
        outcome: ChunkOutcome,
    },
    /// The result of [`Output::FetchRegistry`].
    RegistryChunk {
        /// The node's request.
        id: RequestId,
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// The bytes, or the registry's one-line error.
        result: Result<Bytes, String>,
    },
    /// The result of [`Output::Import`].
    ImportDone {
        /// The release.
        id: ReleaseId,
        /// Success, or the import error as text (shown in status and reports).
        result: Result<(), String>,
    },
    /// The last [`Output::Checkpoint`] pass finished.
    CheckpointDone,
    /// The deadline from [`Driver::poll_timeout`] passed.
    Timer,
    /// The agent stops: flush what must survive a restart.
    Shutdown,
}

/// One blob's checkpoint in an [`Output::Checkpoint`] pass.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointBlob {
    /// Its chunk map, the first time the blob is checkpointed (saved before the bits).
    pub(crate) map: Option<ChunkMap>,
    /// The blob.
    pub(crate) blob: Digest,
    /// Chunks verified and stored when the pass was planned.
    pub(crate) have: Bitfield,
}

/// Something the adapter must do.
#[derive(Debug)]
pub(crate) enum Output<P> {
    /// Send `request` to `peer`; report its answer or failure under `out`.
    Send {
        /// Destination.
        peer: P,
        /// Id for the answer.
        out: OutId,
        /// The request.
        request: Request,
    },
    /// Answer an inbound request.
    Respond {
        /// The request.
        reply: ReplyId,
        /// The answer.
        response: Response,
        /// Chunk bytes (empty otherwise).
        payload: Bytes,
    },
    /// Drop an inbound request unanswered (its sender was just banned).
    DropReply(ReplyId),
    /// Read a chunk from the store (blocking) and report [`Event::ChunkRead`].
    ReadChunk {
        /// The request it answers.
        reply: ReplyId,
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// Byte range within the blob.
        range: Range<u64>,
    },
    /// Verify `payload` as chunk `index` of `map`, store it only if it matches, and report
    /// [`Event::ChunkDone`]. Unverified bytes never reach the store.
    VerifyAndStore {
        /// The node's request.
        id: RequestId,
        /// The blob's chunk map.
        map: Arc<ChunkMap>,
        /// Chunk index.
        index: u32,
        /// The bytes received.
        payload: Bytes,
    },
    /// Read a chunk from the registry (herd guard) and report [`Event::RegistryChunk`].
    FetchRegistry {
        /// The node's request.
        id: RequestId,
        /// The image reference of a release listing the blob.
        reference: String,
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// Byte range within the blob.
        range: Range<u64>,
    },
    /// Report the verdict on a received gossip message to gossipsub.
    GossipVerdict {
        /// The message.
        id: GossipId,
        /// Accept (forward), reject (drop, penalise its sender) or ignore (drop).
        verdict: Verdict,
    },
    /// Publish `data` on `topic`.
    Gossip {
        /// The topic.
        topic: Topic,
        /// The encoded message.
        data: Vec<u8>,
    },
    /// Keep a neighbour's progress report (seeders).
    KeepReport {
        /// Its signed author.
        from: P,
        /// The report.
        report: ProgressReport,
    },
    /// Dial a peer learnt from peer exchange at these addresses (bytes as exchanged).
    Dial {
        /// The peer.
        peer: P,
        /// Its addresses.
        addrs: Vec<Vec<u8>>,
    },
    /// Dial the configured bootstrap peers (the node is alone).
    DialBootstrap,
    /// Close every connection to a peer.
    Disconnect(P),
    /// Save an accepted release for a restart (blocking file I/O).
    SaveRelease(SignedRelease),
    /// Delete the saved copy of a release.
    ForgetRelease(ReleaseId),
    /// Save the blob's map, then finalize the blob (every chunk is stored).
    FinalizeBlob(Arc<ChunkMap>),
    /// Delete blobs evicted from the store.
    RemoveBlobs(Vec<Digest>),
    /// Checkpoint these blobs (blocking), then report [`Event::CheckpointDone`].
    Checkpoint(Vec<CheckpointBlob>),
    /// Import a complete release into the targets and report [`Event::ImportDone`].
    Import {
        /// The release id.
        id: ReleaseId,
        /// The release.
        release: Arc<Release>,
    },
    /// A fresh status snapshot to publish.
    Status(Box<Snapshot>),
}

/// The driver's part of `AgentStatus` (the adapter adds identity and addresses).
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Connected neighbours.
    pub(crate) peers: usize,
    /// Releases the agent carries.
    pub(crate) releases: Vec<ReleaseStatus>,
    /// Download counters from the core node.
    pub(crate) stats: node::Stats,
    /// Chunk bytes served.
    pub(crate) uploaded_bytes: u64,
    /// Chunks served.
    pub(crate) chunks_served: u64,
    /// Chunks verified and stored.
    pub(crate) chunks_verified: u64,
    /// Whether completed releases are imported somewhere.
    pub(crate) import_target: bool,
    /// Bans by offence.
    pub(crate) bans: BanCounts,
    /// Bans in force, newest first (bounded).
    pub(crate) banned: Vec<crate::status::Ban>,
    /// Releases evicted to keep the store under its cap.
    pub(crate) releases_evicted: u64,
    /// Bytes of the distinct blobs of the releases carried (what the cap bounds).
    pub(crate) store_bytes: u64,
    /// The store cap, if any.
    pub(crate) store_max_bytes: Option<u64>,
    /// Gossip messages rejected since start, by (topic, reason) label.
    pub(crate) gossip_rejected: BTreeMap<(&'static str, &'static str), u64>,
    /// Chunk answers cut off for a slow reader.
    pub(crate) serves_cut: u64,
    /// Connections refused since start, by reason label.
    pub(crate) connections_denied: BTreeMap<&'static str, u64>,
}
