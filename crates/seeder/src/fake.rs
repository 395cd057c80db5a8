//! An in-memory [`Backend`] for the service and API tests: images are a table, publishing
//! records the reference. No registry, no swarm, no socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Aggregator, SharedAggregator};
use blobswarm_core::enroll::{CertBody, EnrollmentKeys, NodeCert};
use blobswarm_core::wire::{ProgressReport, ProgressState, ReleaseProgress};
use blobswarm_core::{Digest, ReleaseId};
use libp2p_identity::Keypair;
use tokio::sync::{Semaphore, mpsc};

use crate::service::{Backend, Resolution, SeedError};
use crate::source::SourceError;

/// One image the fake registry knows: its reference and content.
#[derive(Debug, Clone)]
pub(crate) struct FakeImage {
    pub(crate) reference: String,
    pub(crate) content: &'static str,
    pub(crate) total_bytes: u64,
}

/// Resolves the images it was given, fails every other one as unreachable.
pub(crate) struct FakeBackend {
    images: HashMap<String, FakeImage>,
    /// Every image asked to resolve, in order (the test side of the channel).
    resolved: mpsc::Sender<String>,
    /// References published, in order.
    pub(crate) published: Arc<Mutex<Vec<String>>>,
    /// Publishing waits for a permit, so a test can hold a job in "seeding".
    pub(crate) gate: Arc<Semaphore>,
    /// The bans the seeder's agent would hold.
    pub(crate) banned: Arc<Mutex<Vec<blobswarm_peer::Ban>>>,
}

impl FakeBackend {
    /// A backend knowing `images` (image as asked → what it resolves to); the receiver
    /// sees every `resolve` call. Publishing is not gated.
    pub(crate) fn new(images: &[(&str, FakeImage)]) -> (Self, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(64);
        let backend = Self {
            images: images
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            resolved: tx,
            published: Arc::default(),
            gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            banned: Arc::default(),
        };
        (backend, rx)
    }
}

impl Backend for FakeBackend {
    type Plan = FakeImage;

    async fn resolve(&self, image: &str) -> Result<Resolution<FakeImage>, SeedError> {
        // Never blocks: a test that does not read the calls must not stall seeding.
        let _ = self.resolved.try_send(image.to_owned());
        let found = self.images.get(image).ok_or_else(|| SeedError::Resolve {
            image: image.to_owned(),
            source: SourceError::Unreachable {
                registry: "fake".into(),
                cause: "connection refused".into(),
            },
        })?;
        Ok(Resolution {
            reference: found.reference.clone(),
            root: Digest::of(found.content.as_bytes()),
            total_bytes: found.total_bytes,
            blobs: 1,
            plan: found.clone(),
        })
    }

    fn banned(&self) -> Vec<blobswarm_peer::Ban> {
        self.banned.lock().expect("not poisoned").clone()
    }

    async fn publish(&self, plan: FakeImage) -> Result<ReleaseId, SeedError> {
        let _permit = self.gate.acquire().await.expect("gate never closed");
        let mut published = self.published.lock().expect("not poisoned");
        published.push(plan.reference.clone());
        // A fresh id per publish, as a real seeder's release (signed at another time) has.
        Ok(Digest::of(
            format!("{}#{}", plan.content, published.len()).as_bytes(),
        ))
    }
}

/// An image `reference` with `content` (distinct content → distinct root digest).
pub(crate) fn image(reference: &str, content: &'static str) -> FakeImage {
    FakeImage {
        reference: reference.to_owned(),
        content,
        total_bytes: 100,
    }
}

/// The enrolment key the test aggregator trusts.
fn issuer() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).expect("32 bytes")
}

/// An empty report aggregator trusting [`issuer`]'s certificates, as a seeder's agent
/// with `--enroll-pubkey` starts with.
pub(crate) fn aggregator() -> SharedAggregator {
    let mut agg = Aggregator::default();
    agg.set_enrollment(EnrollmentKeys::new([issuer().public().to_peer_id()]));
    Arc::new(Mutex::new(agg))
}

/// Files a report from a new, enrolled node `name` holding `release` in `state` with
/// `have` bytes, received `age_ms` ago.
pub(crate) fn report(
    agg: &SharedAggregator,
    name: &str,
    release: ReleaseId,
    state: ProgressState,
    have: u64,
    age_ms: u64,
) {
    file_report(agg, name, progress(release, state, have), age_ms, true);
}

/// Files a report from a new node `name` that has no enrolment certificate.
pub(crate) fn report_unenrolled(agg: &SharedAggregator, name: &str, release: ReleaseId) {
    let done = progress(release, ProgressState::Done, 100);
    file_report(agg, name, done, 0, false);
}

/// A node's progress on `release` of 100 bytes: in `state`, `have` bytes held.
fn progress(release: ReleaseId, state: ProgressState, have: u64) -> ReleaseProgress {
    ReleaseProgress {
        release,
        state,
        have_bytes: have,
        total_bytes: 100,
        rate: 7,
    }
}

/// Files `progress` as the report of a new node `name` (enrolled or not), sent
/// `age_ms` ago.
fn file_report(
    agg: &SharedAggregator,
    name: &str,
    progress: ReleaseProgress,
    age_ms: u64,
    enrolled: bool,
) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        - age_ms;
    let peer = Keypair::generate_ed25519().public().to_peer_id();
    let cert = enrolled.then(|| {
        let body = CertBody {
            node_name: name.to_owned(),
            peer: peer.to_bytes(),
            issued_unix_ms: 0,
            expires_unix_ms: u64::MAX,
        };
        NodeCert::issue(&issuer(), &body).expect("issues")
    });
    let report = ProgressReport {
        node_name: name.to_owned(),
        sent_ms: now_ms,
        peers: 2,
        releases: vec![progress],
        cert,
        bans: Vec::new(),
    };
    agg.lock()
        .expect("not poisoned")
        .insert(peer, report, now_ms);
}
