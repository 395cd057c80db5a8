//! Chunk-map segments: the first increment of streaming releases (issue #19).
//!
//! Today a release lists each blob's chunk-map digest, so the seeder must read a whole
//! blob before it can publish. With streaming, the seeder publishes the release once the
//! manifests are resolved and then, as it hashes each blob, signed [`Segment`]s: "chunks
//! `first..first + n` of blob B in release R hash to these values". A peer that holds a
//! segment can fetch, verify and serve those chunks before the seeder has finished the
//! blob. A [`SegmentAssembler`] collects the segments of one blob and, once every chunk is
//! known, yields the ordinary content-addressed [`ChunkMap`], so nodes that join after the
//! read finishes need no segments at all.
//!
//! Rules (each refusal is a [`SegmentError`] naming release, blob and indices, so the
//! caller can score down or ban the sender):
//! - a segment must be signed by the key that signed its release ([`Release::seeder`]),
//!   under its own signing context, so release and segment signatures never cross over;
//! - it must name the assembler's release and blob, and cover a non-empty index range
//!   inside the blob;
//! - it must not conflict with a hash already known for the same index. Overlaps and
//!   duplicates with equal hashes are fine.
//!
//! Nothing here is wired into the wire protocol, the seeder or the node yet; the
//! whole-blob digest from the manifest still has to be checked before import.
//!
//! Fuzzing note: [`SignedSegment`] is decoded from peer bytes; a fuzz target should feed
//! arbitrary bytes to `codec::decode::<SignedSegment>` and `SignedSegment::verify`, and
//! random segment sequences to a [`SegmentAssembler`].

use std::ops::Range;

use libp2p_identity::{Keypair, PeerId, PublicKey, SigningError};
use serde::{Deserialize, Serialize};

use crate::chunk_map::{check_chunk, chunk_range};
use crate::codec::{self, CodecError};
use crate::{Bitfield, ChunkError, ChunkMap, Digest, Release, ReleaseBlob, ReleaseId, chunk_count};

/// Most chunk hashes in one segment: 32 KiB of hashes, i.e. 4 GiB of blob at the default
/// 4 MiB chunk size, and small enough for a gossip message.
pub const MAX_SEGMENT_CHUNKS: usize = 1024;
/// Largest encoded segment body: the hashes plus release id, blob digest and index.
pub const MAX_SEGMENT_BYTES: usize = MAX_SEGMENT_CHUNKS * 32 + 1024;
/// Largest public key or signature accepted in a signed segment (ed25519 needs 36 and 64).
const MAX_KEY_OR_SIGNATURE: usize = 128;
/// Domain separation: a segment signature can never verify as a release or certificate
/// signature by the same key, nor the other way round.
const SIGNING_CONTEXT: &[u8] = b"blobswarm segment v1\0";

/// The hashes of a run of consecutive chunks of one blob of one release, as the seeder
/// computes them while it reads the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The release this segment belongs to; a segment is worthless outside it.
    pub release: ReleaseId,
    /// The blob whose chunks are described.
    pub blob: Digest,
    /// Index of the first chunk described.
    pub first: u32,
    /// SHA-256 of chunks `first..first + hashes.len()`, in order.
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_SEGMENT_CHUNKS>")]
    pub hashes: Vec<[u8; 32]>,
}

/// A segment body with the seeder's public key and signature, as it would travel between
/// peers; trustworthy only through [`SignedSegment::verify`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSegment {
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_SEGMENT_BYTES>")]
    body: Vec<u8>,
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_KEY_OR_SIGNATURE>")]
    public_key: Vec<u8>,
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_KEY_OR_SIGNATURE>")]
    signature: Vec<u8>,
}

/// Why a segment or a chunk checked against segments was refused. Every variant that a
/// peer can cause names the release, blob or index involved, so the sender can be scored.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The segment holds no hashes or more than [`MAX_SEGMENT_CHUNKS`]; refused at signing.
    #[error("segment of blob {blob} with {len} hashes is outside 1..={MAX_SEGMENT_CHUNKS}")]
    Length {
        /// The blob named.
        blob: Digest,
        /// Hashes in the segment.
        len: usize,
    },
    /// The encoded body is larger than [`MAX_SEGMENT_BYTES`].
    #[error("segment body of {0} bytes exceeds {MAX_SEGMENT_BYTES} bytes")]
    TooLarge(usize),
    /// The public key does not decode.
    #[error("segment carries an undecodable public key")]
    BadKey,
    /// The signer is not the seeder that signed the release.
    #[error("segment signed by {signer}, not by the release's seeder")]
    WrongSigner {
        /// Who signed the segment.
        signer: PeerId,
    },
    /// The signature does not verify.
    #[error("segment signature by {0} does not verify")]
    BadSignature(PeerId),
    /// The body does not decode.
    #[error("segment body is malformed: {0}")]
    Codec(#[from] CodecError),
    /// Signing failed (local key problem).
    #[error("cannot sign segment: {0}")]
    Signing(#[from] SigningError),
    /// The segment belongs to another release.
    #[error("segment names release {actual}, expected {expected}")]
    WrongRelease {
        /// The assembler's release.
        expected: ReleaseId,
        /// The release the segment names.
        actual: ReleaseId,
    },
    /// The segment describes another blob.
    #[error("segment in release {release} names blob {actual}, expected {expected}")]
    WrongBlob {
        /// The release.
        release: ReleaseId,
        /// The assembler's blob.
        expected: Digest,
        /// The blob the segment names.
        actual: Digest,
    },
    /// The segment is empty or covers indices past the end of the blob.
    #[error(
        "segment of blob {blob} in release {release} covers chunks {first}+{len}, \
         the blob has {count} (an empty segment is refused too)"
    )]
    OutOfRange {
        /// The release.
        release: ReleaseId,
        /// The blob.
        blob: Digest,
        /// First index covered.
        first: u32,
        /// Hashes in the segment.
        len: usize,
        /// Chunks in the blob.
        count: u32,
    },
    /// A hash differs from the one an earlier segment gave for the same chunk. Both are
    /// signed by the seeder, so this means a seeder bug or a stolen seeder key.
    #[error("segment of blob {blob} in release {release} conflicts at chunk {index}")]
    Conflict {
        /// The release.
        release: ReleaseId,
        /// The blob.
        blob: Digest,
        /// The first index whose hash differs.
        index: u32,
    },
    /// A chunk arrived whose hash no segment has given yet.
    #[error("chunk {index} of blob {blob} has no known hash yet")]
    Unknown {
        /// The blob.
        blob: Digest,
        /// The chunk index.
        index: u32,
    },
    /// The chunk map was asked for before every chunk hash was known.
    #[error("chunk map of blob {blob} is incomplete: {missing} of {count} hashes missing")]
    Incomplete {
        /// The blob.
        blob: Digest,
        /// Hashes still missing.
        missing: u32,
        /// Chunks in the blob.
        count: u32,
    },
    /// The blob's size and chunk size break the chunk-map limits, or a chunk is wrong.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

impl SignedSegment {
    /// Signs a segment with the seeder's identity key (the key that signed its release).
    ///
    /// # Errors
    /// [`SegmentError::Length`] for an empty or oversized segment, or a signing failure.
    pub fn sign(segment: &Segment, key: &Keypair) -> Result<Self, SegmentError> {
        let len = segment.hashes.len();
        if !(1..=MAX_SEGMENT_CHUNKS).contains(&len) {
            return Err(SegmentError::Length {
                blob: segment.blob,
                len,
            });
        }
        let body = codec::encode(segment)?;
        let signature = key.sign(&signed_bytes(&body))?;
        Ok(Self {
            body,
            public_key: key.public().encode_protobuf(),
            signature,
        })
    }

    /// Checks that the key that signed `release` signed this segment, and returns it.
    /// Whether it names that release and fits the blob is the assembler's check.
    ///
    /// # Errors
    /// [`SegmentError`] naming the first check that failed.
    pub fn verify(&self, release: &Release) -> Result<Segment, SegmentError> {
        if self.body.len() > MAX_SEGMENT_BYTES {
            return Err(SegmentError::TooLarge(self.body.len()));
        }
        let key =
            PublicKey::try_decode_protobuf(&self.public_key).map_err(|_| SegmentError::BadKey)?;
        let signer = key.to_peer_id();
        if signer.to_bytes() != release.seeder {
            return Err(SegmentError::WrongSigner { signer });
        }
        if !key.verify(&signed_bytes(&self.body), &self.signature) {
            return Err(SegmentError::BadSignature(signer));
        }
        Ok(codec::decode_limited::<Segment, MAX_SEGMENT_BYTES>(
            &self.body,
        )?)
    }
}

impl std::fmt::Debug for SignedSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedSegment({} bytes)", self.body.len())
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, body].concat()
}

/// Collects the verified segments of one blob of one release until every chunk hash is
/// known, then yields the blob's [`ChunkMap`]. Memory is 32 bytes per chunk plus one bit,
/// and the chunk count is bounded by [`crate::MAX_CHUNKS`].
#[derive(Debug, Clone)]
pub struct SegmentAssembler {
    release: ReleaseId,
    blob: Digest,
    size: u64,
    chunk_size: u32,
    count: u32,
    hashes: Vec<[u8; 32]>,
    known: Bitfield,
}

impl SegmentAssembler {
    /// An empty assembler for `blob` of `release`.
    ///
    /// # Errors
    /// [`SegmentError::Chunk`] when size and chunk size break the chunk-map limits.
    pub fn new(release: ReleaseId, blob: &ReleaseBlob) -> Result<Self, SegmentError> {
        let count = chunk_count(blob.size, blob.chunk_size)?;
        Ok(Self {
            release,
            blob: blob.digest,
            size: blob.size,
            chunk_size: blob.chunk_size,
            count,
            hashes: vec![[0; 32]; count as usize],
            known: Bitfield::new(count),
        })
    }

    /// Adds a verified segment and returns the indices it made known, in order. A segment
    /// is taken whole or not at all: on a conflict nothing of it is kept, and the earlier
    /// hashes stay (the first signed value wins).
    ///
    /// # Errors
    /// [`SegmentError::WrongRelease`], [`SegmentError::WrongBlob`],
    /// [`SegmentError::OutOfRange`] or [`SegmentError::Conflict`].
    pub fn accept(&mut self, segment: &Segment) -> Result<Vec<u32>, SegmentError> {
        let range = self.check(segment)?;
        let mut added = Vec::new();
        for (index, hash) in range.zip(&segment.hashes) {
            if self.known.set(index) {
                self.hashes[index as usize] = *hash;
                added.push(index);
            }
        }
        Ok(added)
    }

    /// Everything [`Self::accept`] refuses, without changing the assembler.
    fn check(&self, segment: &Segment) -> Result<Range<u32>, SegmentError> {
        if segment.release != self.release {
            return Err(SegmentError::WrongRelease {
                expected: self.release,
                actual: segment.release,
            });
        }
        if segment.blob != self.blob {
            return Err(SegmentError::WrongBlob {
                release: self.release,
                expected: self.blob,
                actual: segment.blob,
            });
        }
        let len = segment.hashes.len();
        let end = u64::from(segment.first) + len as u64;
        if len == 0 || end > u64::from(self.count) {
            return Err(SegmentError::OutOfRange {
                release: self.release,
                blob: self.blob,
                first: segment.first,
                len,
                count: self.count,
            });
        }
        let range = segment.first..end as u32;
        for (index, hash) in range.clone().zip(&segment.hashes) {
            if self.known.get(index) && self.hashes[index as usize] != *hash {
                return Err(SegmentError::Conflict {
                    release: self.release,
                    blob: self.blob,
                    index,
                });
            }
        }
        Ok(range)
    }

    /// The hash of chunk `index`, once a segment has given it.
    pub fn known(&self, index: u32) -> Option<[u8; 32]> {
        self.known.get(index).then(|| self.hashes[index as usize])
    }

    /// Checks a received chunk's length and SHA-256 against its known hash, so a chunk can
    /// be stored and served before the whole chunk map exists.
    ///
    /// # Errors
    /// [`SegmentError::Chunk`] for an index past the end, a wrong length or a wrong hash;
    /// [`SegmentError::Unknown`] when no segment has given the chunk's hash yet.
    pub fn verify_chunk(&self, index: u32, bytes: &[u8]) -> Result<(), SegmentError> {
        let range = chunk_range(self.blob, self.size, self.chunk_size, self.count, index)?;
        let expected = self.known(index).ok_or(SegmentError::Unknown {
            blob: self.blob,
            index,
        })?;
        check_chunk(self.blob, index, range, Digest::from_bytes(expected), bytes)?;
        Ok(())
    }

    /// Whether every chunk hash is known (at once for an empty blob).
    pub fn is_complete(&self) -> bool {
        self.known.is_full()
    }

    /// Number of chunks in the blob.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The complete chunk map, equal to the one the seeder would have built from the whole
    /// blob, so its [`ChunkMap::digest`] is the usual content address.
    ///
    /// # Errors
    /// [`SegmentError::Incomplete`] while hashes are missing.
    pub fn into_chunk_map(self) -> Result<ChunkMap, SegmentError> {
        if !self.is_complete() {
            return Err(SegmentError::Incomplete {
                blob: self.blob,
                missing: self.count - self.known.count(),
                count: self.count,
            });
        }
        let chunks = self.hashes.into_iter().map(Digest::from_bytes).collect();
        Ok(ChunkMap::new(
            self.blob,
            self.size,
            self.chunk_size,
            chunks,
        )?)
    }
}

#[cfg(test)]
mod tests;
