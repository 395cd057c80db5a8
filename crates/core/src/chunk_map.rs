//! Chunk maps: the per-blob list of chunk digests that lets a node verify every chunk
//! the moment it arrives, before storing or serving it.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Digest;
use crate::chunk_limits::{MAX_CHUNK_SIZE, MAX_CHUNKS, MIN_CHUNK_SIZE};

/// The list of SHA-256 digests of every chunk of one blob, in order.
///
/// A chunk map is trusted because its own digest is listed in a signed release; each
/// chunk is then trusted because its digest is in the map.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMap {
    blob: Digest,
    size: u64,
    chunk_size: u32,
    chunks: Vec<Digest>,
}

/// Why a chunk map or a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk size is outside [`MIN_CHUNK_SIZE`, `MAX_CHUNK_SIZE`].
    #[error("chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// A blob would need more than [`MAX_CHUNKS`] chunks.
    #[error("blob of {size} bytes needs more than {MAX_CHUNKS} chunks of {chunk_size} bytes")]
    TooManyChunks {
        /// Blob size in bytes.
        size: u64,
        /// Chunk size in bytes.
        chunk_size: u32,
    },
    /// The number of digests does not match the blob size.
    #[error("chunk map for {blob} lists {actual} chunks, its size needs {expected}")]
    ChunkCount {
        /// The blob described.
        blob: Digest,
        /// Chunks required by size and chunk size.
        expected: u32,
        /// Chunks listed.
        actual: usize,
    },
    /// A chunk index past the end of the blob.
    #[error("chunk {index} is out of range for {blob} ({count} chunks)")]
    Index {
        /// The blob.
        blob: Digest,
        /// Requested index.
        index: u32,
        /// Number of chunks in the blob.
        count: u32,
    },
    /// A chunk's length differs from what its position requires.
    #[error("chunk {index} of {blob} is {actual} bytes, expected {expected}")]
    Length {
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// Required length.
        expected: u32,
        /// Received length.
        actual: usize,
    },
    /// A chunk's bytes do not hash to the digest in the chunk map.
    #[error("chunk {index} of {blob} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The blob.
        blob: Digest,
        /// Chunk index.
        index: u32,
        /// Digest from the chunk map.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },
    /// A whole blob's bytes do not hash to its digest (checked by the seeder on ingest).
    #[error(
        "blob has digest {actual} and {actual_size} bytes, expected {expected} and {expected_size} bytes"
    )]
    BlobMismatch {
        /// Digest the source promised.
        expected: Digest,
        /// Digest of the bytes read.
        actual: Digest,
        /// Size the source promised.
        expected_size: u64,
        /// Bytes read.
        actual_size: u64,
    },
}

/// Number of chunks a blob of `size` bytes splits into; zero for an empty blob.
pub fn chunk_count(size: u64, chunk_size: u32) -> Result<u32, ChunkError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(ChunkError::ChunkSize(chunk_size));
    }
    let n = size.div_ceil(u64::from(chunk_size));
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_CHUNKS)
        .ok_or(ChunkError::TooManyChunks { size, chunk_size })
}

/// Byte range of chunk `index` of a blob of `size` bytes in `count` chunks of
/// `chunk_size`; shared by [`ChunkMap`] and the segment assembler, which knows a blob's
/// geometry before it has its whole map.
pub(crate) fn chunk_range(
    blob: Digest,
    size: u64,
    chunk_size: u32,
    count: u32,
    index: u32,
) -> Result<Range<u64>, ChunkError> {
    if index >= count {
        return Err(ChunkError::Index { blob, index, count });
    }
    let start = u64::from(index) * u64::from(chunk_size);
    let end = (start + u64::from(chunk_size)).min(size);
    Ok(start..end)
}

/// Checks a chunk's length against its byte range and its bytes against `expected`.
pub(crate) fn check_chunk(
    blob: Digest,
    index: u32,
    range: Range<u64>,
    expected: Digest,
    bytes: &[u8],
) -> Result<(), ChunkError> {
    let expected_len = (range.end - range.start) as u32;
    if bytes.len() != expected_len as usize {
        return Err(ChunkError::Length {
            blob,
            index,
            expected: expected_len,
            actual: bytes.len(),
        });
    }
    let actual = Digest::of(bytes);
    if actual != expected {
        return Err(ChunkError::DigestMismatch {
            blob,
            index,
            expected,
            actual,
        });
    }
    Ok(())
}

impl ChunkMap {
    /// Builds a map from parts, checking that the digest count matches the size.
    ///
    /// # Errors
    /// [`ChunkError`] when chunk size, count or size disagree.
    pub fn new(
        blob: Digest,
        size: u64,
        chunk_size: u32,
        chunks: Vec<Digest>,
    ) -> Result<Self, ChunkError> {
        let map = Self {
            blob,
            size,
            chunk_size,
            chunks,
        };
        map.validate()?;
        Ok(map)
    }

    /// Re-checks invariants of a map decoded from the network.
    ///
    /// # Errors
    /// [`ChunkError`] when chunk size, count or size disagree.
    pub fn validate(&self) -> Result<(), ChunkError> {
        let expected = chunk_count(self.size, self.chunk_size)?;
        if self.chunks.len() != expected as usize {
            return Err(ChunkError::ChunkCount {
                blob: self.blob,
                expected,
                actual: self.chunks.len(),
            });
        }
        Ok(())
    }

    /// The blob this map describes.
    pub fn blob(&self) -> Digest {
        self.blob
    }

    /// Blob size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Chunk size in bytes (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    pub fn count(&self) -> u32 {
        self.chunks.len() as u32
    }

    /// Byte range of chunk `index` within the blob.
    ///
    /// # Errors
    /// [`ChunkError::Index`] when `index` is past the last chunk.
    pub fn range(&self, index: u32) -> Result<Range<u64>, ChunkError> {
        chunk_range(self.blob, self.size, self.chunk_size, self.count(), index)
    }

    /// Checks received bytes against the map; this is the one place chunks are hashed on a peer.
    ///
    /// # Errors
    /// [`ChunkError::Index`], [`ChunkError::Length`] or [`ChunkError::DigestMismatch`].
    pub fn verify(&self, index: u32, bytes: &[u8]) -> Result<(), ChunkError> {
        let range = self.range(index)?;
        check_chunk(self.blob, index, range, self.chunks[index as usize], bytes)
    }

    /// The map's own digest, listed in the release so peers can trust a map fetched from anyone.
    pub fn digest(&self) -> Digest {
        Digest::of(&crate::codec::encode_unbounded(self))
    }
}

impl std::fmt::Debug for ChunkMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChunkMap({}, {} bytes, {} x {})",
            self.blob,
            self.size,
            self.count(),
            self.chunk_size
        )
    }
}

/// Hashes the chunks of a blob as it streams in (not the whole-blob digest).
///
/// Split from [`BlobHasher`] so an ingest can run the chunk hashes and the whole-blob
/// SHA-256 on two threads over the same buffers: each is a full pass over the bytes.
pub struct ChunkHasher {
    chunk_size: u32,
    current: Sha256,
    current_len: u32,
    chunks: Vec<Digest>,
    size: u64,
}

impl ChunkHasher {
    /// Starts hashing chunks of `chunk_size` bytes.
    ///
    /// # Errors
    /// [`ChunkError::ChunkSize`] when the chunk size is out of bounds.
    pub fn new(chunk_size: u32) -> Result<Self, ChunkError> {
        chunk_count(0, chunk_size)?;
        Ok(Self {
            chunk_size,
            current: Sha256::new(),
            current_len: 0,
            chunks: Vec::new(),
            size: 0,
        })
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = (self.chunk_size - self.current_len) as usize;
            let take = room.min(bytes.len());
            self.current.update(&bytes[..take]);
            self.current_len += take as u32;
            bytes = &bytes[take..];
            if self.current_len == self.chunk_size {
                let done = std::mem::replace(&mut self.current, Sha256::new());
                self.chunks.push(Digest::from_bytes(done.finalize().into()));
                self.current_len = 0;
            }
        }
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes into a chunk map for `blob`, whose whole digest the caller has checked.
    ///
    /// # Errors
    /// [`ChunkError`] when the blob needs too many chunks.
    pub fn finish(mut self, blob: Digest) -> Result<ChunkMap, ChunkError> {
        if self.current_len > 0 {
            self.chunks
                .push(Digest::from_bytes(self.current.finalize().into()));
        }
        ChunkMap::new(blob, self.size, self.chunk_size, self.chunks)
    }
}

/// Hashes a blob as it streams in, producing its digest and chunk map in one pass over the
/// bytes on one thread; the simple form of an ingest, used for in-memory blobs and tests.
pub struct BlobHasher {
    whole: Sha256,
    chunks: ChunkHasher,
}

impl BlobHasher {
    /// Starts hashing a blob cut into `chunk_size` chunks.
    ///
    /// # Errors
    /// [`ChunkError::ChunkSize`] when the chunk size is out of bounds.
    pub fn new(chunk_size: u32) -> Result<Self, ChunkError> {
        Ok(Self {
            whole: Sha256::new(),
            chunks: ChunkHasher::new(chunk_size)?,
        })
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, bytes: &[u8]) {
        self.whole.update(bytes);
        self.chunks.update(bytes);
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.chunks.size()
    }

    /// Finishes and checks the blob against the digest and size its source promised.
    ///
    /// # Errors
    /// [`ChunkError::BlobMismatch`] when digest or size differ, or a size error when
    /// the blob needs too many chunks.
    pub fn finish(self, expected: Digest, expected_size: u64) -> Result<ChunkMap, ChunkError> {
        let actual = Digest::from_bytes(self.whole.finalize().into());
        check_blob(expected, expected_size, actual, self.chunks.size())?;
        self.chunks.finish(expected)
    }
}

/// Compares a blob's computed digest and size with what its source promised.
///
/// # Errors
/// [`ChunkError::BlobMismatch`] when either differs.
pub fn check_blob(
    expected: Digest,
    expected_size: u64,
    actual: Digest,
    actual_size: u64,
) -> Result<(), ChunkError> {
    if actual != expected || actual_size != expected_size {
        return Err(ChunkError::BlobMismatch {
            expected,
            actual,
            expected_size,
            actual_size,
        });
    }
    Ok(())
}

/// Builds the chunk map of an in-memory blob; convenient for tests and the demo generator.
///
/// # Errors
/// [`ChunkError`] when the chunk size or count is out of bounds.
pub fn chunk_map_of(bytes: &[u8], chunk_size: u32) -> Result<ChunkMap, ChunkError> {
    let mut h = BlobHasher::new(chunk_size)?;
    h.update(bytes);
    h.finish(Digest::of(bytes), bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: u32 = MIN_CHUNK_SIZE;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Boundary sizes, each hitting a different path of the chunker.
    #[test]
    fn boundary_sizes() {
        let cs = CS as usize;
        let cases = [
            (0, 0),           // empty blob: no chunks, complete at once
            (1, 1),           // one byte: one short chunk
            (cs - 1, 1),      // just under one chunk
            (cs, 1),          // exactly one chunk, no trailing partial
            (cs + 1, 2),      // one full chunk and a 1-byte tail
            (3 * cs, 3),      // exact multiple
            (3 * cs + 17, 4), // trailing partial chunk
        ];
        for (len, chunks) in cases {
            let data = blob(len);
            let map = chunk_map_of(&data, CS).unwrap();
            assert_eq!(map.count(), chunks, "len {len}");
            assert_eq!(map.size(), len as u64);
            let mut total = 0;
            for i in 0..map.count() {
                let r = map.range(i).unwrap();
                let piece = &data[r.start as usize..r.end as usize];
                map.verify(i, piece).unwrap();
                total += piece.len();
            }
            assert_eq!(total, len);
            assert!(map.range(map.count()).is_err());
        }
    }

    #[test]
    fn streaming_in_odd_pieces_matches_one_shot() {
        let data = blob(5 * CS as usize + 123);
        let one = chunk_map_of(&data, CS).unwrap();
        let mut h = BlobHasher::new(CS).unwrap();
        for piece in data.chunks(7919) {
            h.update(piece);
        }
        let two = h.finish(Digest::of(&data), data.len() as u64).unwrap();
        assert_eq!(one, two);
        assert_eq!(one.digest(), two.digest());
    }

    #[test]
    fn flipped_byte_is_a_digest_mismatch() {
        let data = blob(2 * CS as usize);
        let map = chunk_map_of(&data, CS).unwrap();
        let mut bad = data[..CS as usize].to_vec();
        bad[100] ^= 1;
        assert!(matches!(
            map.verify(0, &bad),
            Err(ChunkError::DigestMismatch { index: 0, .. })
        ));
        assert!(matches!(
            map.verify(1, &bad[..10]),
            Err(ChunkError::Length { index: 1, .. })
        ));
    }

    #[test]
    fn wrong_blob_digest_or_size_is_refused() {
        let data = blob(1000);
        let mut h = BlobHasher::new(CS).unwrap();
        h.update(&data);
        let err = h.finish(Digest::of(b"other"), 1000).unwrap_err();
        assert!(matches!(err, ChunkError::BlobMismatch { .. }));
        let mut h = BlobHasher::new(CS).unwrap();
        h.update(&data);
        assert!(h.finish(Digest::of(&data), 999).is_err());
    }

    #[test]
    fn inconsistent_maps_and_chunk_sizes_are_refused() {
        assert!(matches!(chunk_count(1, 1), Err(ChunkError::ChunkSize(1))));
        assert!(matches!(
            chunk_count(u64::MAX, MIN_CHUNK_SIZE),
            Err(ChunkError::TooManyChunks { .. })
        ));
        let err = ChunkMap::new(Digest::of(b""), 10, CS, vec![]).unwrap_err();
        assert!(matches!(
            err,
            ChunkError::ChunkCount {
                expected: 1,
                actual: 0,
                ..
            }
        ));
    }
}
