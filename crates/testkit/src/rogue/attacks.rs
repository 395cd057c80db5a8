//! The rogue node's attacks from inside the swarm (issue #18, findings 1-5, 8 and 10), as
//! [`Hooks`] on a real agent: what it sends is what a compromised node or a leaked swarm
//! key could send, through the same libp2p stack an honest agent uses.
//!
//! - 1: full have-bitfields of the wrong length for the release's blobs, sent before the
//!   seeder publishes (so before any neighbour knows their chunk maps);
//! - 2: progress reports under an honest node's name with its stolen certificate (no
//!   certificate, an untrusted issuer's, and a fresh identity per report are
//!   [`super::churn`]);
//! - 3: haves for endless made-up digests;
//! - 4: undecodable, oversized and badly signed messages on every topic;
//! - 5: many node names ([`super::churn`] sends one per fresh identity);
//! - 8: herd-guard claims on every chunk of the release's blobs, never fetched;
//! - 10: node names and strings with ANSI escapes and newlines.

use blobswarm_core::enroll::NodeCert;
use blobswarm_core::wire::{
    HaveUpdate, MAX_REPORT_BYTES, ProgressReport, ProgressState, ReleaseProgress, Request,
    SwarmNotice,
};
use blobswarm_core::{Bitfield, Digest, MAX_RELEASE_BYTES, Release, SignedRelease, codec};
use blobswarm_peer::{Hooks, Topic};
use libp2p::PeerId;
use libp2p::identity::Keypair;

/// Made-up digests announced to each neighbour per status tick (5 ticks a second): 100
/// a second, under the 200 requests a second that get a neighbour banned, and past the
/// bound on haves kept for unknown blobs (1,024 per neighbour) in about ten seconds.
const MADE_UP_PER_TICK: usize = 20;
/// Chunks claimed wrongly in a have-bitfield for a real blob (no test blob has this many).
const WRONG_LENGTH: u32 = 7_777;
/// Status ticks between two rounds of forged gossip (one a second).
const GOSSIP_EVERY: u64 = 5;
/// A node name with a terminal escape and a line break (finding 10).
pub const HOSTILE_NAME: &str = "rogue\u{1b}[31m\nFAKE: node-0 done";

/// What the attack hooks need to know at start.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The rogue's own identity (reports must name the key that signs the gossip).
    pub key: Keypair,
    /// Digests of the release's blobs, known before the release is published.
    pub blobs: Vec<Digest>,
    /// An honest node's certificate text and its node name, sent as the rogue's own.
    pub stolen: Option<(String, String)>,
}

/// The attack hooks; see the module doc.
pub struct Attacks {
    blobs: Vec<Digest>,
    /// Forged reports' names and certificates (finding 2).
    senders: Vec<(String, Option<NodeCert>)>,
    /// Releases accepted so far: the forged reports claim them done.
    releases: Vec<Digest>,
    /// Pre-built gossip sent every [`GOSSIP_EVERY`] ticks.
    gossip: Vec<(Topic, Vec<u8>)>,
    ticks: u64,
    made_up: u64,
}

impl Attacks {
    /// Builds every forged message once.
    ///
    /// # Panics
    /// When a forged message cannot be encoded (a bug in this test code).
    pub fn new(plan: &Plan) -> Self {
        let mut gossip = bad_gossip(&plan.key);
        gossip.extend(plan.blobs.iter().map(|blob| {
            let claim = SwarmNotice::Claim {
                blob: *blob,
                indices: (0..64).collect(),
            };
            (
                Topic::Notice,
                codec::encode(&claim).expect("encoding a claim"),
            )
        }));
        Self {
            blobs: plan.blobs.clone(),
            senders: forged_senders(plan),
            releases: Vec::new(),
            gossip,
            ticks: 0,
            made_up: 0,
        }
    }

    /// A digest nobody holds.
    fn made_up(&mut self) -> Digest {
        self.made_up += 1;
        Digest::of(format!("made-up blob {}", self.made_up).as_bytes())
    }
}

impl Hooks<PeerId> for Attacks {
    fn release_accepted(&mut self, signed: &SignedRelease) {
        if !self.releases.contains(&signed.id()) {
            self.releases.push(signed.id());
        }
    }

    fn tick(&mut self, connected: &[PeerId], _holds_release: bool) -> Vec<(PeerId, Request)> {
        self.ticks += 1;
        let mut out = Vec::new();
        for peer in connected {
            for blob in self.blobs.clone() {
                let update = HaveUpdate::Full(Bitfield::full(WRONG_LENGTH));
                out.push((*peer, Request::Have { blob, update }));
            }
            for _ in 0..MADE_UP_PER_TICK {
                let blob = self.made_up();
                let update = HaveUpdate::Full(Bitfield::full(64));
                out.push((*peer, Request::Have { blob, update }));
            }
        }
        out
    }

    fn gossip(&mut self) -> Vec<(Topic, Vec<u8>)> {
        if self.ticks % GOSSIP_EVERY != 1 {
            return Vec::new();
        }
        let mut out = self.gossip.clone();
        for (name, cert) in &self.senders {
            let r = report(name, cert.clone(), &self.releases);
            out.push((Topic::Report, codec::encode(&r).expect("encoding a report")));
        }
        out
    }
}

/// A report from `name` with `cert`: every release in `releases` done, and one failed
/// with an error string holding terminal escapes and line breaks (finding 10).
pub(super) fn report(name: &str, cert: Option<NodeCert>, releases: &[Digest]) -> ProgressReport {
    let done = releases.iter().take(8).map(|r| ReleaseProgress {
        release: *r,
        state: ProgressState::Done,
        have_bytes: 1,
        total_bytes: 1,
        rate: 0,
    });
    let failed = ReleaseProgress {
        release: Digest::of(b"a release that never was"),
        state: ProgressState::Failed("\u{1b}[2J\u{1b}[Himport ok\r\nall nodes done".into()),
        have_bytes: 0,
        total_bytes: 1,
        rate: 0,
    };
    ProgressReport {
        node_name: name.to_owned(),
        sent_ms: unix_ms(),
        peers: 1,
        releases: done.chain([failed]).collect(),
        cert,
        bans: Vec::new(),
    }
}

/// Finding 2: the name and certificate of the rogue's own reports: an honest node's
/// certificate (it names another key) under that node's name, else none. Minted
/// identities ([`super::churn`]) send the others, one reason per key, since the seeder
/// keeps one ignored entry per key.
fn forged_senders(plan: &Plan) -> Vec<(String, Option<NodeCert>)> {
    match &plan.stolen {
        Some((text, name)) => {
            let cert = NodeCert::from_text(text).expect("a certificate file");
            vec![(name.clone(), Some(cert))]
        }
        None => vec![(HOSTILE_NAME.to_owned(), None)],
    }
}

/// Finding 4: undecodable, oversized and badly signed messages on every topic.
fn bad_gossip(key: &Keypair) -> Vec<(Topic, Vec<u8>)> {
    let garbage = vec![0xff; 300];
    let mut out: Vec<(Topic, Vec<u8>)> = [Topic::Release, Topic::Notice, Topic::Report]
        .into_iter()
        .map(|t| (t, garbage.clone()))
        .collect();
    // Over each topic's limit: reports are small, notices and releases are not.
    out.push((Topic::Report, vec![0; MAX_REPORT_BYTES + 1024]));
    out.push((Topic::Notice, vec![0; 64 << 10]));
    out.push((Topic::Release, vec![0; MAX_RELEASE_BYTES + (128 << 10)]));
    // A release whose signature does not verify: the last byte of the encoding is the
    // last byte of the signature.
    let release = Release::minimal("rogue/forged:1", Vec::new(), &key.public().to_peer_id());
    let signed = SignedRelease::sign(&release, key).expect("signing a release");
    let mut bytes = codec::encode(&signed).expect("encoding a release");
    if let Some(last) = bytes.last_mut() {
        *last ^= 0x55;
    }
    out.push((Topic::Release, bytes));
    out
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
