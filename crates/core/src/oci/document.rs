//! A manifest or index together with its digest and exact bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// A manifest or image index, kept as the exact bytes its digest is over.
///
/// Embedded in signed releases (so its serde shape is part of the wire format: digest,
/// media type, bytes, in that order) and produced by the seeder's sources, so both ends
/// handle the same value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Digest of `bytes`.
    pub digest: Digest,
    /// OCI or Docker media type (see [`super::media_type`]).
    pub media_type: String,
    /// The exact bytes the registry served (digests are over these bytes).
    pub bytes: Vec<u8>,
}

impl Document {
    /// A document whose digest is computed from `bytes`: for documents made here (minimal
    /// releases, tests), not for ones received with a digest, which must be checked.
    pub fn of(media_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            digest: Digest::of(&bytes),
            media_type: media_type.into(),
            bytes,
        }
    }
}

impl fmt::Debug for Document {
    /// Prints the length instead of the bytes: documents can be megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("digest", &self.digest)
            .field("media_type", &self.media_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}
