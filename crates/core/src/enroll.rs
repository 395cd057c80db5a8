//! Node enrolment: which progress reports the CI gate may count.
//!
//! Progress reports are gossiped and signed by the sending node's libp2p key, but any key
//! can sign: a node inside the swarm that mints fresh identities could report "done" once
//! per identity and pass `seed --wait --expect N` with no real node done (issue #18,
//! finding 2). A report therefore counts only when it carries a [`NodeCert`]: a statement,
//! signed by an **enrolment key** the operator holds, that one libp2p key is one named node
//! until a time. The seeder trusts a set of enrolment public keys ([`EnrollmentKeys`]);
//! [`NodeCert::verify`] checks the issuer, the signature, that the certificate names the
//! very key that signed the gossip message and the node name in the report, and the
//! validity window. Binding one node name to one key at a time is the aggregator's job
//! (it sees every report); this module only says whether one certificate holds.
//!
//! Two ways to issue certificates, both with `blobswarm`:
//! - per node, offline (`blobswarm enroll`): the enrolment key never reaches a node, so a
//!   compromised node can report only as itself;
//! - at agent start from an enrolment key mounted into the agent DaemonSet only
//!   (`agent --enrollment-key`): simpler, but a node holding that key can enrol other
//!   names; the README's threat model says so.

use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};

/// Domain separation: a certificate signature can never be replayed as a release
/// signature or anything else the same key signs.
const CERT_CONTEXT: &[u8] = b"blobswarm node certificate v1\0";
/// Largest encoded certificate; a real one is about 250 bytes.
pub const MAX_CERT_BYTES: usize = 1024;
/// Largest certificate body (node name up to 253 bytes, a peer id, two times).
const MAX_CERT_BODY: usize = 512;
/// A certificate issued this far in the future is refused: clocks of nodes and seeder may
/// differ, by less than this.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// An enrolment certificate as carried in a progress report: the encoded
/// [`CertBody`], the issuer's public key and its signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCert {
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, MAX_CERT_BODY>")]
    body: Vec<u8>,
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, 128>")]
    issuer: Vec<u8>,
    #[serde(deserialize_with = "codec::bounded_vec::<_, _, 128>")]
    signature: Vec<u8>,
}

/// What a certificate states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertBody {
    /// The node's name, as its reports carry it (at most [`crate::wire::MAX_NODE_NAME`]).
    pub node_name: String,
    /// The node's libp2p key, as peer id bytes.
    pub peer: Vec<u8>,
    /// When it was issued, ms since the Unix epoch; of two certificates for one name the
    /// later one wins.
    pub issued_unix_ms: u64,
    /// Not valid after this time, ms since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// The enrolment public keys a seeder trusts, by their peer ids.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentKeys(Vec<PeerId>);

impl EnrollmentKeys {
    /// Trusts certificates issued by exactly these keys.
    pub fn new(keys: impl IntoIterator<Item = PeerId>) -> Self {
        Self(keys.into_iter().collect())
    }

    /// True when no key is configured: then no report can count.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether certificates by `issuer` are trusted.
    pub fn contains(&self, issuer: &PeerId) -> bool {
        self.0.contains(issuer)
    }
}

/// Why a certificate does not count; each names what an operator would check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// The report carries no certificate.
    #[error("no enrolment certificate")]
    Missing,
    /// The seeder has no enrolment key configured, so nothing can count.
    #[error("the seeder trusts no enrolment key (seed --enroll-pubkey)")]
    NoKeys,
    /// The certificate or its parts do not decode.
    #[error("malformed enrolment certificate: {0}")]
    Malformed(String),
    /// Signed by a key that is not a trusted enrolment key.
    #[error("certificate issued by {0}, which is not a trusted enrolment key")]
    UnknownIssuer(PeerId),
    /// The signature does not verify.
    #[error("certificate signature by {0} does not verify")]
    BadSignature(PeerId),
    /// The certificate is for another key than the one that sent the report.
    #[error("certificate is for key {cert}, but the report was signed by {sender}")]
    WrongKey {
        /// The key the certificate names.
        cert: String,
        /// The key that signed the report.
        sender: PeerId,
    },
    /// The certificate is for another node name than the report carries.
    #[error("certificate is for node {cert:?}, but the report says {report:?}")]
    WrongName {
        /// The name in the certificate.
        cert: String,
        /// The name in the report.
        report: String,
    },
    /// Outside its validity window.
    #[error("certificate valid {issued_unix_ms}..{expires_unix_ms} ms, now {now_unix_ms} ms")]
    NotValidNow {
        /// Issue time.
        issued_unix_ms: u64,
        /// Expiry.
        expires_unix_ms: u64,
        /// The verifier's clock.
        now_unix_ms: u64,
    },
    /// Signing failed (local key problem).
    #[error("cannot sign certificate: {0}")]
    Signing(String),
}

impl From<CodecError> for EnrollError {
    fn from(e: CodecError) -> Self {
        Self::Malformed(e.to_string())
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    [CERT_CONTEXT, body].concat()
}

impl NodeCert {
    /// Issues a certificate with the enrolment key `issuer`.
    ///
    /// # Errors
    /// [`EnrollError::Signing`] when the key cannot sign or the body is too large.
    pub fn issue(issuer: &Keypair, body: &CertBody) -> Result<Self, EnrollError> {
        let bytes = codec::encode(body)?;
        if bytes.len() > MAX_CERT_BODY {
            return Err(EnrollError::Signing(format!(
                "certificate body of {} bytes exceeds {MAX_CERT_BODY}",
                bytes.len()
            )));
        }
        let signature = issuer
            .sign(&signed_bytes(&bytes))
            .map_err(|e| EnrollError::Signing(e.to_string()))?;
        Ok(Self {
            body: bytes,
            issuer: issuer.public().encode_protobuf(),
            signature,
        })
    }

    /// Checks that this certificate lets `sender`'s report for `node_name` count at
    /// `now_unix_ms`, and returns what it states.
    ///
    /// # Errors
    /// The first [`EnrollError`] that applies.
    pub fn verify(
        &self,
        trusted: &EnrollmentKeys,
        sender: &PeerId,
        node_name: &str,
        now_unix_ms: u64,
    ) -> Result<CertBody, EnrollError> {
        if trusted.is_empty() {
            return Err(EnrollError::NoKeys);
        }
        let key = self.issuer_key()?;
        let issuer = key.to_peer_id();
        if !trusted.contains(&issuer) {
            return Err(EnrollError::UnknownIssuer(issuer));
        }
        if !key.verify(&signed_bytes(&self.body), &self.signature) {
            return Err(EnrollError::BadSignature(issuer));
        }
        let body: CertBody = codec::decode_limited::<_, MAX_CERT_BODY>(&self.body)?;
        if body.peer != sender.to_bytes() {
            let cert = PeerId::from_bytes(&body.peer)
                .map_or_else(|_| "<malformed>".to_owned(), |p| p.to_string());
            return Err(EnrollError::WrongKey {
                cert,
                sender: *sender,
            });
        }
        if body.node_name != node_name {
            return Err(EnrollError::WrongName {
                cert: body.node_name,
                report: node_name.to_owned(),
            });
        }
        if body.issued_unix_ms > now_unix_ms.saturating_add(MAX_CLOCK_SKEW_MS)
            || now_unix_ms > body.expires_unix_ms
        {
            return Err(EnrollError::NotValidNow {
                issued_unix_ms: body.issued_unix_ms,
                expires_unix_ms: body.expires_unix_ms,
                now_unix_ms,
            });
        }
        Ok(body)
    }

    /// The enrolment key that signed this certificate (trusted or not: that is the
    /// verifier's call).
    ///
    /// # Errors
    /// [`EnrollError::Malformed`] when the issuer key does not decode.
    pub fn issuer(&self) -> Result<PeerId, EnrollError> {
        self.issuer_key().map(|k| k.to_peer_id())
    }

    fn issuer_key(&self) -> Result<PublicKey, EnrollError> {
        PublicKey::try_decode_protobuf(&self.issuer)
            .map_err(|_| EnrollError::Malformed("undecodable issuer key".into()))
    }

    /// The certificate as one line of text (hex), for a file or a Secret.
    ///
    /// # Errors
    /// Only if encoding fails, which a certificate made by [`NodeCert::issue`] never does.
    pub fn to_text(&self) -> Result<String, EnrollError> {
        Ok(hex::encode(codec::encode(self)?))
    }

    /// Reads [`NodeCert::to_text`]'s form (surrounding whitespace ignored), bounded.
    ///
    /// # Errors
    /// [`EnrollError::Malformed`] naming what was wrong.
    pub fn from_text(text: &str) -> Result<Self, EnrollError> {
        let text = text.trim();
        if text.len() > 2 * MAX_CERT_BYTES {
            return Err(EnrollError::Malformed(format!(
                "{} characters, more than a certificate can have",
                text.len()
            )));
        }
        let bytes = hex::decode(text).map_err(|e| EnrollError::Malformed(e.to_string()))?;
        Ok(codec::decode_limited::<_, MAX_CERT_BYTES>(&bytes)?)
    }
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeCert({} bytes)", self.body.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn body(name: &str, peer: &PeerId) -> CertBody {
        CertBody {
            node_name: name.into(),
            peer: peer.to_bytes(),
            issued_unix_ms: NOW - 1000,
            expires_unix_ms: NOW + 1000,
        }
    }

    fn setup() -> (Keypair, EnrollmentKeys, PeerId) {
        let issuer = Keypair::generate_ed25519();
        let keys = EnrollmentKeys::new([issuer.public().to_peer_id()]);
        (issuer, keys, PeerId::random())
    }

    #[test]
    fn a_certificate_counts_for_its_key_and_name_only() {
        let (issuer, keys, node) = setup();
        let cert = NodeCert::issue(&issuer, &body("node-1", &node)).unwrap();
        assert_eq!(
            cert.verify(&keys, &node, "node-1", NOW).unwrap().node_name,
            "node-1"
        );
        // A fresh identity presenting a real node's certificate.
        let minted = PeerId::random();
        assert!(matches!(
            cert.verify(&keys, &minted, "node-1", NOW),
            Err(EnrollError::WrongKey { .. })
        ));
        // The right key claiming another node's name.
        assert!(matches!(
            cert.verify(&keys, &node, "node-2", NOW),
            Err(EnrollError::WrongName { .. })
        ));
    }

    #[test]
    fn certificates_from_untrusted_keys_or_with_bad_signatures_are_refused() {
        let (issuer, keys, node) = setup();
        let rogue = Keypair::generate_ed25519();
        let forged = NodeCert::issue(&rogue, &body("node-1", &node)).unwrap();
        assert!(matches!(
            forged.verify(&keys, &node, "node-1", NOW),
            Err(EnrollError::UnknownIssuer(p)) if p == rogue.public().to_peer_id()
        ));
        let mut tampered = NodeCert::issue(&issuer, &body("node-1", &node)).unwrap();
        let other = NodeCert::issue(&issuer, &body("node-2", &node)).unwrap();
        tampered.body = other.body;
        assert!(matches!(
            tampered.verify(&keys, &node, "node-2", NOW),
            Err(EnrollError::BadSignature(_))
        ));
        let cert = NodeCert::issue(&issuer, &body("node-1", &node)).unwrap();
        assert_eq!(
            cert.verify(&EnrollmentKeys::default(), &node, "node-1", NOW),
            Err(EnrollError::NoKeys)
        );
    }

    #[test]
    fn certificates_count_only_inside_their_validity_window() {
        let (issuer, keys, node) = setup();
        let cert = NodeCert::issue(&issuer, &body("n", &node)).unwrap();
        assert!(cert.verify(&keys, &node, "n", NOW + 1000).is_ok());
        assert!(matches!(
            cert.verify(&keys, &node, "n", NOW + 1001),
            Err(EnrollError::NotValidNow { .. })
        ));
        let mut early = body("n", &node);
        early.issued_unix_ms = NOW + MAX_CLOCK_SKEW_MS + 1;
        early.expires_unix_ms = NOW + 2 * MAX_CLOCK_SKEW_MS;
        let early = NodeCert::issue(&issuer, &early).unwrap();
        assert!(matches!(
            early.verify(&keys, &node, "n", NOW),
            Err(EnrollError::NotValidNow { .. })
        ));
    }

    #[test]
    fn the_text_form_round_trips_and_is_bounded() {
        let (issuer, keys, node) = setup();
        let cert = NodeCert::issue(&issuer, &body(&"x".repeat(253), &node)).unwrap();
        let text = cert.to_text().unwrap();
        assert!(text.len() <= 2 * MAX_CERT_BYTES, "{} chars", text.len());
        let back = NodeCert::from_text(&format!("  {text}\n")).unwrap();
        assert!(back.verify(&keys, &node, &"x".repeat(253), NOW).is_ok());
        assert!(matches!(
            NodeCert::from_text(&"ab".repeat(MAX_CERT_BYTES + 1)),
            Err(EnrollError::Malformed(_))
        ));
        assert!(matches!(
            NodeCert::from_text("not hex"),
            Err(EnrollError::Malformed(_))
        ));
        let name = "y".repeat(600);
        assert!(NodeCert::issue(&issuer, &body(&name, &node)).is_err());
    }
}
