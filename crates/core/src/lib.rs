//! The sans-IO heart of blobswarm.
//!
//! Digests, chunk maps, signed releases and chunk-map segments, the wire codec, the
//! piece scheduler and the chunk store live here as plain data and state machines. Nothing in this
//! crate opens a socket, reads the clock or spawns a task: time comes in as an
//! argument, so the libp2p agent, the unit tests and the simulator drive the very
//! same code. (The chunk store does file I/O, synchronously, and is called by
//! drivers from blocking threads.)

mod bitfield;
mod chunk_limits;
mod chunk_map;
pub mod codec;
mod digest;
pub mod enroll;
mod error_chain;
pub mod escape;
pub mod node;
pub mod oci;
pub mod rate;
mod release;
pub mod replay;
mod segment;
pub mod sim;
pub mod store;
pub mod wire;

pub use bitfield::{Bitfield, BitfieldError};
pub use chunk_limits::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_CHUNKS, MIN_CHUNK_SIZE};
pub use chunk_map::{
    BlobHasher, ChunkError, ChunkHasher, ChunkMap, check_blob, chunk_count, chunk_map_of,
};
pub use digest::{Digest, DigestParseError};
pub use error_chain::error_chain;
pub use oci::Document;
pub use release::{
    MAX_BLOBS, MAX_MANIFESTS, MAX_REFERENCE_LEN, MAX_RELEASE_BYTES, Release, ReleaseBlob,
    ReleaseError, ReleaseId, SignedRelease, TrustedSeeders, release_blob,
};
pub use segment::{
    MAX_SEGMENT_BYTES, MAX_SEGMENT_CHUNKS, Segment, SegmentAssembler, SegmentError, SignedSegment,
};
