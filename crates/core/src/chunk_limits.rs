//! The chunk-size limits of the protocol. A leaf module: chunk maps are checked against
//! them and the frame codec sizes its payload limit by them, and the codec must not
//! depend on chunk maps (whose digest is computed through the codec).

/// Default chunk size: 4 MiB, large enough that per-chunk overhead is small and small
/// enough that a 64 MiB layer comes from many peers at once.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Smallest chunk size a release may declare.
pub const MIN_CHUNK_SIZE: u32 = 16 << 10;
/// Largest chunk size a release may declare; bounds the memory one chunk request can take.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Largest number of chunks in one blob; bounds chunk-map size (8 MiB of digests).
pub const MAX_CHUNKS: u32 = 1 << 18;
