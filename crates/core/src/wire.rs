//! The blobswarm wire protocol.
//!
//! # Streams
//! One request-response protocol, [`PROTOCOL`] (`/blobswarm/chunk/1`), carries every
//! peer-to-peer exchange; releases are also announced on the gossipsub topic
//! [`RELEASE_TOPIC`]. Every message is one [`codec`](crate::codec) frame: a bincode header
//! and, for chunks only, a raw payload.
//!
//! | request | response | why |
//! |---|---|---|
//! | `Releases` | `Releases(Vec<SignedRelease>)` | a node that joins late learns current releases from its first neighbour |
//! | `Peers` | `Peers(Vec<PeerRecord>)` | peer exchange: a node bootstraps from the seeder and finds other peers |
//! | `ChunkMap { blob }` | `ChunkMap(ChunkMap)` | any node holding a blob serves its map; the receiver checks it against the digest in the signed release |
//! | `Chunk { blob, index }` | `Chunk { blob, index }` + payload | the payload is verified against the chunk map before it is stored or served on |
//! | `Have { blob, update }` | `Ack` | push of have-information to neighbours: full bitfield once, then added indices |
//!
//! A second topic, [`SWARM_TOPIC`], carries [`SwarmNotice`]s: seeders say they are alive,
//! and when no seeder has been heard of for a while, nodes claim chunks nobody around them
//! holds before fetching them from the registry (the herd guard; see `node::herd`).
//!
//! # Limits
//! Headers are at most [`crate::codec::MAX_HEADER`] bytes, payloads at most one chunk
//! ([`crate::codec::MAX_PAYLOAD`]); lists in messages are capped by the constants here.
//! The caps are enforced while decoding (a longer list is refused from its length
//! prefix), and again, with the structural checks, by [`Request::validate`] /
//! [`Response::validate`] after decoding.
//!
//! # Versioning
//! A change to any message bumps the protocol name's version; libp2p's multistream
//! negotiation then keeps old and new nodes from misreading each other.

use serde::{Deserialize, Serialize};

use crate::{Bitfield, ChunkMap, Digest, SignedRelease, codec};

/// Request-response protocol name for all peer-to-peer exchanges.
pub const PROTOCOL: &str = "/blobswarm/chunk/1";
/// Gossipsub topic on which seeders announce signed releases.
pub const RELEASE_TOPIC: &str = "blobswarm/releases/1";
/// Gossipsub topic for swarm-wide notices: seeder liveness and registry-fetch claims.
pub const SWARM_TOPIC: &str = "blobswarm/swarm/1";
/// Most chunk indices claimed in one notice.
pub const MAX_CLAIM_INDICES: usize = 4096;
/// Most releases returned in one `Releases` response.
pub const MAX_RELEASES: usize = 64;
/// Most peers returned in one `Peers` response.
pub const MAX_PEER_RECORDS: usize = 64;
/// Most addresses per peer record.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Most indices in one incremental `Have` update.
pub const MAX_HAVE_INDICES: usize = 4096;

/// What a node asks of a neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The signed releases the neighbour currently carries.
    Releases,
    /// Other peers the neighbour knows, for peer exchange.
    Peers,
    /// The chunk map of a blob.
    ChunkMap {
        /// The blob.
        blob: Digest,
    },
    /// One chunk of a blob.
    Chunk {
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
    },
    /// Have-information pushed to a neighbour.
    Have {
        /// The blob.
        blob: Digest,
        /// Full bitfield or added indices.
        update: HaveUpdate,
    },
}

/// A change in what a node holds of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaveUpdate {
    /// Everything the node holds of the blob.
    Full(Bitfield),
    /// Chunks verified since the last update.
    Added(#[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_HAVE_INDICES>")] Vec<u32>),
}

/// A peer's identity and dial addresses, as raw bytes so core needs no multiaddr parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer id's bytes.
    pub peer: Vec<u8>,
    /// Multiaddrs' bytes.
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_ADDRS_PER_PEER>")]
    pub addrs: Vec<Vec<u8>>,
}

/// What a neighbour answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Signed releases.
    Releases(
        #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_RELEASES>")] Vec<SignedRelease>,
    ),
    /// Known peers.
    Peers(
        #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_PEER_RECORDS>")] Vec<PeerRecord>,
    ),
    /// A chunk map.
    ChunkMap(ChunkMap),
    /// A chunk header; the chunk bytes follow as the frame payload.
    Chunk {
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
    },
    /// Acknowledges a `Have`.
    Ack,
    /// The request could not be served.
    Error(ErrorCode),
}

/// A swarm-wide notice on [`SWARM_TOPIC`]; the sender is the gossip message's signed
/// author, never a field of the notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwarmNotice {
    /// A seeder is up and serving: while this is heard, nobody falls back to the registry.
    SeederAlive,
    /// The sender will fetch these chunks from the registry unless a claim with a higher
    /// rendezvous score arrives within the settle time; everyone else waits for them.
    Claim {
        /// The blob.
        blob: Digest,
        /// Chunk indices claimed.
        #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_CLAIM_INDICES>")]
        indices: Vec<u32>,
    },
}

impl SwarmNotice {
    /// Checks list caps after decoding.
    ///
    /// # Errors
    /// [`MessageError`] naming the offending field.
    pub fn validate(&self) -> Result<(), MessageError> {
        match self {
            Self::SeederAlive => Ok(()),
            Self::Claim { indices, .. } => cap("claimed indices", indices.len(), MAX_CLAIM_INDICES),
        }
    }
}

/// Gossipsub topic on which agents publish [`ProgressReport`]s; seeders aggregate them.
pub const REPORT_TOPIC: &str = "blobswarm/reports/1";
/// Largest encoded progress report; refused before decoding when longer.
pub const MAX_REPORT_BYTES: usize = 8 << 10;
/// Most releases in one progress report (the newest ones when an agent holds more).
pub const MAX_REPORT_RELEASES: usize = 16;
/// Longest node name in bytes (a Kubernetes node name is a DNS subdomain: 253).
pub const MAX_NODE_NAME: usize = 253;
/// Longest failure reason in bytes; longer reasons are cut by the sender.
pub const MAX_REASON: usize = 512;
/// Most bans one progress report lists: the newest the node holds.
pub const MAX_REPORT_BANS: usize = 8;
/// Longest banned peer id in a report, in bytes of its text form (an Ed25519 peer id
/// is 52 characters).
pub const MAX_BANNED_PEER: usize = 64;

/// An agent's bounded account of where each release stands on its node, gossiped on
/// [`REPORT_TOPIC`] so the seeder (and through it `blobswarm status`, the CI wait gate and
/// the dashboard) can tell which nodes have an image and why the others do not. The
/// sender is the gossip message's signed author; `node_name` is what operators read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// The node's name (Kubernetes node name or hostname), at most [`MAX_NODE_NAME`] bytes.
    pub node_name: String,
    /// Sender's wall clock in ms since the epoch; a receiver keeps the newest per sender.
    pub sent_ms: u64,
    /// Connected neighbours.
    pub peers: u32,
    /// Per-release progress, at most [`MAX_REPORT_RELEASES`].
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_REPORT_RELEASES>")]
    pub releases: Vec<ReleaseProgress>,
    /// The node's enrolment certificate: without one from a key the seeder trusts, the
    /// report is shown as ignored and never counts towards the CI gate
    /// ([`crate::enroll`]).
    pub cert: Option<crate::enroll::NodeCert>,
    /// Bans the node holds now, newest first, at most [`MAX_REPORT_BANS`]: so operators
    /// see a misbehaving peer whichever node caught it, not only the seeder's catches.
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_REPORT_BANS>")]
    pub bans: Vec<ReportedBan>,
}

/// One ban in a progress report. Only enrolled nodes' reports are shown, and each line
/// says which node banned, so a report cannot pass off a ban as the seeder's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedBan {
    /// The banned peer's id as text, at most [`MAX_BANNED_PEER`] bytes.
    pub peer: String,
    /// What it did.
    pub offence: Offence,
    /// Seconds until the ban ends, when the report was sent.
    pub remaining_secs: u32,
}

/// Why a node banned a peer (the offences an agent bans for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Offence {
    /// Served a chunk failing its hash or length.
    BadChunk,
    /// Sent a frame the codec refuses.
    BadFrame,
    /// Sent requests above the rate limit.
    RequestRate,
    /// Came back under a new identity at a banned peer's listen address.
    BannedAddress,
}

impl Offence {
    /// The label operators read, the same as the ban metric's.
    pub const fn label(self) -> &'static str {
        match self {
            Self::BadChunk => "bad_chunk",
            Self::BadFrame => "bad_frame",
            Self::RequestRate => "request_rate",
            Self::BannedAddress => "banned_address",
        }
    }

    /// What the offence was, in words, for views that have no driver account of it.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::BadChunk => "served a chunk failing its hash or length",
            Self::BadFrame => "sent a frame the codec refuses",
            Self::RequestRate => "sent requests above the rate limit",
            Self::BannedAddress => "came back under a new identity from a banned address",
        }
    }
}

/// One release on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseProgress {
    /// The release.
    pub release: Digest,
    /// Where it stands.
    pub state: ProgressState,
    /// Bytes verified and stored.
    pub have_bytes: u64,
    /// Bytes of all its blobs.
    pub total_bytes: u64,
    /// Download rate over the last report interval, bytes per second.
    pub rate: u64,
}

/// The states an operator sees per node and release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgressState {
    /// Accepted, nothing fetched yet.
    Waiting,
    /// Chunks arriving.
    Downloading,
    /// All bytes present, last chunks being verified and blobs finalised.
    Verifying,
    /// Complete, being handed to the runtime.
    Importing,
    /// Imported (or complete, when the node has no import target).
    Done,
    /// Import failed; the reason is at most [`MAX_REASON`] bytes.
    Failed(String),
}

impl ProgressState {
    /// The lowercase name used in JSON, tables and metrics labels.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Downloading => "downloading",
            Self::Verifying => "verifying",
            Self::Importing => "importing",
            Self::Done => "done",
            Self::Failed(_) => "failed",
        }
    }
}

impl ProgressReport {
    /// Decodes gossip bytes: refuses anything over [`MAX_REPORT_BYTES`] before decoding
    /// (so a report never allocates more than its small frame), then checks every cap.
    ///
    /// # Errors
    /// [`ReportError`] naming what was wrong: the size, the encoding or the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge { len: bytes.len() });
        }
        // Limited to the message size: a string's length field cannot make the decoder
        // allocate more than the report could hold (found by the progress_report fuzzer).
        let report: Self = codec::decode_limited::<Self, MAX_REPORT_BYTES>(bytes)?;
        report.validate()?;
        Ok(report)
    }

    /// Checks list and string caps after decoding.
    ///
    /// # Errors
    /// [`MessageError`] naming the offending field.
    pub fn validate(&self) -> Result<(), MessageError> {
        cap("node name bytes", self.node_name.len(), MAX_NODE_NAME)?;
        cap("report releases", self.releases.len(), MAX_REPORT_RELEASES)?;
        cap("report bans", self.bans.len(), MAX_REPORT_BANS)?;
        self.bans
            .iter()
            .try_for_each(|b| cap("banned peer id bytes", b.peer.len(), MAX_BANNED_PEER))?;
        self.releases.iter().try_for_each(|r| match &r.state {
            ProgressState::Failed(reason) => cap("failure reason bytes", reason.len(), MAX_REASON),
            _ => Ok(()),
        })
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary (names and reasons in reports).
pub fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Why a request was not served; lets the requester pick another peer at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The node does not hold what was asked for.
    NotFound,
    /// The node is at its upload limit; ask someone else or later.
    Busy,
    /// The request was malformed or out of range.
    BadRequest,
    /// All upload slots are taken; ask this peer again a little later.
    Overloaded,
}

/// Why gossip bytes are not a progress report ([`ProgressReport::decode`]).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Larger than any report may be; refused before decoding.
    #[error("progress report of {len} bytes exceeds the limit of {MAX_REPORT_BYTES} bytes")]
    TooLarge {
        /// The message's size.
        len: usize,
    },
    /// Not a valid encoding of a report.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// Decodes, but breaks a cap.
    #[error(transparent)]
    Invalid(#[from] MessageError),
}

/// A decoded message that breaks a protocol limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A list is longer than its cap.
    #[error("{what} lists {len} entries, at most {limit} allowed")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Entries received.
        len: usize,
        /// The cap.
        limit: usize,
    },
    /// A bitfield is inconsistent.
    #[error(transparent)]
    Bitfield(#[from] crate::BitfieldError),
    /// A chunk map is inconsistent.
    #[error(transparent)]
    ChunkMap(#[from] crate::ChunkError),
}

fn cap(what: &'static str, len: usize, limit: usize) -> Result<(), MessageError> {
    if len > limit {
        return Err(MessageError::TooMany { what, len, limit });
    }
    Ok(())
}

impl Request {
    /// Checks list caps and bitfield shape after decoding.
    ///
    /// # Errors
    /// [`MessageError`] naming the offending field.
    pub fn validate(&self) -> Result<(), MessageError> {
        match self {
            Self::Have {
                update: HaveUpdate::Full(b),
                ..
            } => Ok(b.validate()?),
            Self::Have {
                update: HaveUpdate::Added(v),
                ..
            } => cap("have indices", v.len(), MAX_HAVE_INDICES),
            _ => Ok(()),
        }
    }
}

impl Response {
    /// Checks list caps and embedded structures after decoding.
    ///
    /// # Errors
    /// [`MessageError`] naming the offending field.
    pub fn validate(&self) -> Result<(), MessageError> {
        match self {
            Self::Releases(r) => cap("releases", r.len(), MAX_RELEASES),
            Self::Peers(p) => {
                cap("peer records", p.len(), MAX_PEER_RECORDS)?;
                p.iter()
                    .try_for_each(|r| cap("peer addresses", r.addrs.len(), MAX_ADDRS_PER_PEER))
            }
            Self::ChunkMap(m) => Ok(m.validate()?),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
