//! Signed releases: the seeder's statement "this image reference is these digests, cut
//! into chunks whose maps hash to these values". Everything a peer downloads is trusted
//! only through a release signed by a seeder key the operator configured.

use std::collections::HashSet;

use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::chunk_limits::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::codec::{self, CodecError};
use crate::oci::Document;
use crate::{ChunkMap, Digest, chunk_count};

/// Largest encoded release body; manifests are embedded, so this bounds them too.
pub const MAX_RELEASE_BYTES: usize = 4 << 20;
/// Most manifests (platforms) in one release.
pub const MAX_MANIFESTS: usize = 64;
/// Most blobs (configs and layers) in one release.
pub const MAX_BLOBS: usize = 10_000;
/// Longest image reference accepted.
pub const MAX_REFERENCE_LEN: usize = 1024;
/// Domain separation: a signature over a release can never be replayed as anything else.
const SIGNING_CONTEXT: &[u8] = b"blobswarm release v1\0";

/// A config or layer blob of the image, with the digest of its chunk map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseBlob {
    /// The blob's registry digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
    /// Chunk size used for this blob.
    pub chunk_size: u32,
    /// Digest of the blob's [`ChunkMap`].
    pub chunk_map: Digest,
}

/// The content of a release; becomes trustworthy only via [`SignedRelease::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The image reference as the operator gave it, resolved once at the seeder.
    pub reference: String,
    /// What the reference resolved to: an image index or an image manifest, embedded so
    /// peers need not fetch it.
    pub root: Document,
    /// Child manifests when `root` is an index.
    pub manifests: Vec<Document>,
    /// Configs and layers, deduplicated.
    pub blobs: Vec<ReleaseBlob>,
    /// The seeder's peer id bytes; must match the signing key.
    pub seeder: Vec<u8>,
    /// Increases with every release a seeder signs; lets nodes refuse replays.
    pub sequence: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// After this time nodes refuse the release (0 = no expiry).
    pub expires_unix_ms: u64,
}

/// Identifies a release: the digest of its signed body.
pub type ReleaseId = Digest;

/// A release body with the seeder's signature and public key, as carried on the wire.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRelease {
    body: Vec<u8>,
    public_key: Vec<u8>,
    signature: Vec<u8>,
}

/// Why a release was refused; each names what an operator would check.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The release body or signed envelope is larger than allowed.
    #[error("release of {0} bytes exceeds {MAX_RELEASE_BYTES} bytes")]
    TooLarge(usize),
    /// The public key does not decode.
    #[error("release carries an undecodable public key")]
    BadKey,
    /// The signer is not a configured trusted seeder.
    #[error("release signed by untrusted seeder {0}")]
    Untrusted(PeerId),
    /// The signature does not verify.
    #[error("release signature by {0} does not verify")]
    BadSignature(PeerId),
    /// The body does not decode.
    #[error("release body is malformed: {0}")]
    Codec(#[from] CodecError),
    /// The body names a different seeder than the key that signed it.
    #[error("release names seeder bytes that differ from its signer {0}")]
    SeederMismatch(PeerId),
    /// The release has expired.
    #[error("release for {reference} expired at {expires_unix_ms} ms (now {now_unix_ms} ms)")]
    Expired {
        /// Image reference.
        reference: String,
        /// Expiry.
        expires_unix_ms: u64,
        /// Current time.
        now_unix_ms: u64,
    },
    /// An older release (lower sequence) of a seeder and reference than one already
    /// accepted, or a different release with the same sequence; see [`crate::replay`].
    #[error(
        "release for {reference} replays sequence {sequence}: this node already accepted \
         sequence {newest} from the same seeder"
    )]
    Replayed {
        /// Image reference (possibly truncated).
        reference: String,
        /// Sequence of the refused release.
        sequence: u64,
        /// Newest sequence accepted for this seeder and reference.
        newest: u64,
    },
    /// The body breaks a structural rule.
    #[error("release for {reference} is invalid: {reason}")]
    Invalid {
        /// Image reference (possibly truncated).
        reference: String,
        /// What was wrong.
        reason: String,
    },
    /// Signing failed (local key problem).
    #[error("cannot sign release: {0}")]
    Signing(String),
}

/// The set of seeder identities whose releases a node accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustedSeeders(HashSet<PeerId>);

impl TrustedSeeders {
    /// Trusts exactly these seeders.
    pub fn new(peers: impl IntoIterator<Item = PeerId>) -> Self {
        Self(peers.into_iter().collect())
    }

    /// Whether releases signed by `peer` are accepted.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.0.contains(peer)
    }
}

impl Release {
    /// A release of `blobs` under `reference`, signed later by `seeder`, whose root is a
    /// minimal image manifest (`{"schemaVersion":2}`): what the simulator, benchmarks and
    /// tests carry, having no real image. Sequence 1, created at 0, never expires; change
    /// the fields before signing where that matters.
    pub fn minimal(reference: &str, blobs: Vec<ReleaseBlob>, seeder: &PeerId) -> Self {
        let manifest = br#"{"schemaVersion":2}"#.to_vec();
        Self {
            reference: reference.into(),
            root: Document::of(crate::oci::media_type::OCI_MANIFEST, manifest),
            manifests: vec![],
            blobs,
            seeder: seeder.to_bytes(),
            sequence: 1,
            created_unix_ms: 0,
            expires_unix_ms: 0,
        }
    }

    /// Checks structure: digests of embedded documents, counts, chunk sizes and lengths.
    ///
    /// # Errors
    /// [`ReleaseError::Invalid`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        let invalid = |reason: String| ReleaseError::Invalid {
            reference: self.reference.chars().take(200).collect(),
            reason,
        };
        if self.reference.is_empty() || self.reference.len() > MAX_REFERENCE_LEN {
            return Err(invalid(format!(
                "reference length {} outside 1..={MAX_REFERENCE_LEN}",
                self.reference.len()
            )));
        }
        if self.manifests.len() > MAX_MANIFESTS {
            return Err(invalid(format!(
                "{} manifests, at most {MAX_MANIFESTS}",
                self.manifests.len()
            )));
        }
        if self.blobs.len() > MAX_BLOBS {
            return Err(invalid(format!(
                "{} blobs, at most {MAX_BLOBS}",
                self.blobs.len()
            )));
        }
        for doc in std::iter::once(&self.root).chain(&self.manifests) {
            let actual = Digest::of(&doc.bytes);
            if actual != doc.digest {
                return Err(invalid(format!(
                    "document {} hashes to {actual}",
                    doc.digest
                )));
            }
        }
        let mut seen = HashSet::new();
        for b in &self.blobs {
            if !seen.insert(b.digest) {
                return Err(invalid(format!("blob {} listed twice", b.digest)));
            }
            if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&b.chunk_size) {
                return Err(invalid(format!(
                    "blob {} has chunk size {}",
                    b.digest, b.chunk_size
                )));
            }
            chunk_count(b.size, b.chunk_size).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// The blob entry for `digest`, if the release lists it.
    pub fn blob(&self, digest: &Digest) -> Option<&ReleaseBlob> {
        self.blobs.iter().find(|b| &b.digest == digest)
    }

    /// Total bytes of all blobs: what a node downloads for this release.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

impl SignedRelease {
    /// Signs a release with the seeder's identity key.
    ///
    /// # Errors
    /// [`ReleaseError`] when the release is invalid, too large, or signing fails.
    pub fn sign(release: &Release, key: &Keypair) -> Result<Self, ReleaseError> {
        release.validate()?;
        if release.seeder != key.public().to_peer_id().to_bytes() {
            return Err(ReleaseError::SeederMismatch(key.public().to_peer_id()));
        }
        let body = codec::encode(release)?;
        if body.len() > MAX_RELEASE_BYTES {
            return Err(ReleaseError::TooLarge(body.len()));
        }
        let signature = key
            .sign(&signed_bytes(&body))
            .map_err(|e| ReleaseError::Signing(e.to_string()))?;
        Ok(Self {
            body,
            public_key: key.public().encode_protobuf(),
            signature,
        })
    }

    /// The release id (digest of the signed body); stable across re-announcements.
    pub fn id(&self) -> ReleaseId {
        Digest::of(&self.body)
    }

    /// Verifies signer trust, signature, structure and expiry, and returns the release.
    ///
    /// # Errors
    /// [`ReleaseError`] naming the first check that failed.
    pub fn verify(
        &self,
        trusted: &TrustedSeeders,
        now_unix_ms: u64,
    ) -> Result<Release, ReleaseError> {
        if self.body.len() > MAX_RELEASE_BYTES {
            return Err(ReleaseError::TooLarge(self.body.len()));
        }
        let key =
            PublicKey::try_decode_protobuf(&self.public_key).map_err(|_| ReleaseError::BadKey)?;
        let signer = key.to_peer_id();
        if !trusted.contains(&signer) {
            return Err(ReleaseError::Untrusted(signer));
        }
        if !key.verify(&signed_bytes(&self.body), &self.signature) {
            return Err(ReleaseError::BadSignature(signer));
        }
        let release: Release = codec::decode(&self.body)?;
        if release.seeder != signer.to_bytes() {
            return Err(ReleaseError::SeederMismatch(signer));
        }
        release.validate()?;
        if release.expires_unix_ms != 0 && now_unix_ms > release.expires_unix_ms {
            return Err(ReleaseError::Expired {
                reference: release.reference,
                expires_unix_ms: release.expires_unix_ms,
                now_unix_ms,
            });
        }
        Ok(release)
    }
}

impl std::fmt::Debug for SignedRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedRelease({}, {} bytes)", self.id(), self.body.len())
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    v.extend_from_slice(SIGNING_CONTEXT);
    v.extend_from_slice(body);
    v
}

/// Builds the release entry for a blob from its chunk map.
pub fn release_blob(map: &ChunkMap, media_type: &str) -> ReleaseBlob {
    ReleaseBlob {
        digest: map.blob(),
        size: map.size(),
        media_type: media_type.to_owned(),
        chunk_size: map.chunk_size(),
        chunk_map: map.digest(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair) -> Release {
        let map = crate::chunk_map_of(b"layer bytes", MIN_CHUNK_SIZE).unwrap();
        let manifest = br#"{"schemaVersion":2}"#.to_vec();
        Release {
            reference: "registry.local/app:v1".into(),
            root: Document {
                digest: Digest::of(&manifest),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: manifest,
            },
            manifests: vec![],
            blobs: vec![release_blob(&map, "application/vnd.oci.image.layer.v1.tar")],
            seeder: key.public().to_peer_id().to_bytes(),
            sequence: 1,
            created_unix_ms: 1000,
            expires_unix_ms: 0,
        }
    }

    #[test]
    fn trusted_signature_verifies() {
        let key = Keypair::generate_ed25519();
        let r = sample(&key);
        let s = SignedRelease::sign(&r, &key).unwrap();
        let trusted = TrustedSeeders::new([key.public().to_peer_id()]);
        assert_eq!(s.verify(&trusted, 0).unwrap(), r);
    }

    #[test]
    fn untrusted_key_is_refused() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let s = SignedRelease::sign(&sample(&key), &key).unwrap();
        let trusted = TrustedSeeders::new([other.public().to_peer_id()]);
        assert!(
            matches!(s.verify(&trusted, 0), Err(ReleaseError::Untrusted(p)) if p == key.public().to_peer_id())
        );
    }

    #[test]
    fn tampered_body_or_signature_is_refused() {
        let key = Keypair::generate_ed25519();
        let trusted = TrustedSeeders::new([key.public().to_peer_id()]);
        let s = SignedRelease::sign(&sample(&key), &key).unwrap();
        let mut t = s.clone();
        let last = t.body.len() - 1;
        t.body[last] ^= 1;
        assert!(matches!(
            t.verify(&trusted, 0),
            Err(ReleaseError::BadSignature(_))
        ));
        let mut t = s.clone();
        t.signature[0] ^= 1;
        assert!(matches!(
            t.verify(&trusted, 0),
            Err(ReleaseError::BadSignature(_))
        ));
        let mut t = s;
        t.public_key = vec![1, 2, 3];
        assert!(matches!(t.verify(&trusted, 0), Err(ReleaseError::BadKey)));
    }

    #[test]
    fn signing_for_another_seeder_is_refused() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        assert!(matches!(
            SignedRelease::sign(&sample(&other), &key),
            Err(ReleaseError::SeederMismatch(_))
        ));
    }

    #[test]
    fn expired_release_is_refused() {
        let key = Keypair::generate_ed25519();
        let mut r = sample(&key);
        r.expires_unix_ms = 5000;
        let s = SignedRelease::sign(&r, &key).unwrap();
        let trusted = TrustedSeeders::new([key.public().to_peer_id()]);
        assert!(s.verify(&trusted, 4999).is_ok());
        assert!(matches!(
            s.verify(&trusted, 5001),
            Err(ReleaseError::Expired { .. })
        ));
    }

    #[test]
    fn document_digest_mismatch_is_invalid() {
        let key = Keypair::generate_ed25519();
        let mut r = sample(&key);
        r.root.bytes.push(b' ');
        assert!(matches!(
            SignedRelease::sign(&r, &key),
            Err(ReleaseError::Invalid { .. })
        ));
    }
}
