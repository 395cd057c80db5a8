//! Harness logic for blobswarm's fuzz targets, shared by the targets in `fuzz_targets/`
//! and by the seed generator in `examples/seeds.rs` (which runs every seed through the
//! same functions, so a harness that rejects valid input is caught before a campaign).
//!
//! Each entry point mirrors what a node does with bytes from the network, then checks
//! invariants that must hold for anything the decoders accept: a decoded message
//! re-encodes and decodes to itself, an accepted length stays within its limit, and the
//! accessors of a validated structure never panic. Every decode of untrusted bytes also
//! goes through [`decode`], which fails the run when the decoder's peak heap use exceeds
//! [`decode_budget`] for the input's length: an allocation bound, independent of the
//! sanitizer, that catches a message making a node hold many times its size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use blobswarm_core::codec::{self, PREFIX_LEN};
use blobswarm_core::wire::{
    HaveUpdate, MAX_REPORT_BYTES, ProgressReport, ProgressState, Request, Response, SwarmNotice,
};
use blobswarm_core::{ChunkMap, Digest, Release, SignedRelease, TrustedSeeders, chunk_count};
use libp2p_identity::Keypair;
use serde::Serialize;

/// Counts live heap bytes and their peak, for the allocation bound.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters change.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if old and new blocks were both live for a moment (a moving realloc).
        grow(new_size);
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Most heap a decode of `len` bytes may use at its peak: serde reserves up to 1 MiB for
/// a list ahead of its elements, and no type on the wire takes more than 4 bytes of memory
/// per byte of encoding once list caps are enforced while decoding (a `Document` is
/// 80 bytes for at least 34 encoded; uncapped lists of 24-byte `Vec`s, 1 byte each
/// encoded, were the bug this bound found).
pub fn decode_budget(len: usize) -> usize {
    (1 << 20) + (256 << 10) + 4 * len
}

/// Most heap decoding a release *body* of `len` bytes may use at its peak. bincode reads a
/// string into a buffer of its declared length before it checks that the bytes are there,
/// so a few bytes can make it allocate up to its limit ([`codec::MAX_HEADER`], 9 MiB),
/// once per decode (the limit counts every claim). Wire messages hold no strings; a
/// release body does, and a node decodes one only after a trusted seeder's signature on
/// it verifies. So the body gets this larger budget, and everything else the tight one.
pub fn trusted_body_budget(len: usize) -> usize {
    codec::MAX_HEADER + decode_budget(len)
}

/// Runs `f`, a decode of untrusted bytes, and fails unless its peak heap use stays
/// within `budget` bytes.
///
/// # Panics
/// When the peak heap use during `f` exceeds `budget`.
pub fn bounded<R>(budget: usize, what: impl Fn() -> String, f: impl FnOnce() -> R) -> R {
    let start = LIVE.load(Relaxed);
    PEAK.store(start, Relaxed);
    let out = f();
    let used = PEAK.load(Relaxed).saturating_sub(start);
    assert!(
        used <= budget,
        "decoding {} took {used} bytes of heap at its peak (budget {budget})",
        what()
    );
    out
}

/// `codec::decode` of untrusted bytes under [`decode_budget`].
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, codec::CodecError> {
    let what = || format!("{} bytes as {}", bytes.len(), std::any::type_name::<T>());
    bounded(decode_budget(bytes.len()), what, || codec::decode(bytes))
}

/// "Now" for expiry checks: 2027-01-15, fixed so runs are reproducible.
pub const NOW_UNIX_MS: u64 = 1_800_000_000_000;

/// Must equal `SIGNING_CONTEXT` in crates/core/src/release.rs; the seed generator checks
/// that seeds signed here verify in core, so a change there fails loudly.
const SIGNING_CONTEXT: &[u8] = b"blobswarm release v1\0";

/// The seeder key every harness trusts: fixed, so seeds signed by the generator verify.
pub fn seeder_key() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).expect("32 bytes are an ed25519 secret")
}

/// The trusted set containing [`seeder_key`].
pub fn trusted() -> TrustedSeeders {
    TrustedSeeders::new([seeder_key().public().to_peer_id()])
}

/// The wire layout of `SignedRelease` (bincode encodes a struct as its fields in order),
/// so a harness can build a correctly signed envelope around fuzzed body bytes.
#[derive(Serialize)]
pub struct Envelope {
    /// Release body bytes.
    pub body: Vec<u8>,
    /// Protobuf-encoded public key.
    pub public_key: Vec<u8>,
    /// Signature over the domain-separated body.
    pub signature: Vec<u8>,
}

/// Signs arbitrary body bytes with `key` the way a seeder does, returning the encoded
/// `SignedRelease` (gossip message bytes).
pub fn sign_body(body: &[u8], key: &Keypair) -> Vec<u8> {
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(body);
    let env = Envelope {
        body: body.to_vec(),
        public_key: key.public().encode_protobuf(),
        signature: key.sign(&msg).expect("ed25519 signing cannot fail"),
    };
    codec::encode(&env).expect("an envelope of a small body encodes")
}

/// Target `wire_request`: one inbound request stream, exactly as
/// `crates/peer/src/protocol.rs` `read_request` reads it (prefix, bound, header, decode,
/// validate). Returns whether the request was accepted.
pub fn wire_request(data: &[u8]) -> bool {
    let Some((prefix, rest)) = data.split_first_chunk::<PREFIX_LEN>() else {
        return false;
    };
    let Ok(len) = codec::parse_request_prefix(*prefix) else {
        return false;
    };
    assert!(len <= codec::MAX_REQUEST_HEADER);
    let Some(header) = rest.get(..len) else {
        return false;
    };
    let Ok(req) = decode::<Request>(header) else {
        return false;
    };
    round_trip(&req, header.len());
    if req.validate().is_err() {
        return false;
    }
    if let Request::Have {
        update: HaveUpdate::Full(b),
        ..
    } = &req
    {
        // Accessors of a validated bitfield must stay in range.
        let ones = b.ones().count() as u32;
        assert_eq!(ones, b.count());
        assert!(b.count() <= b.len());
        assert_eq!(b.is_full(), b.count() == b.len());
        if !b.is_empty() {
            let _ = b.get(b.len() - 1);
        }
        assert!(!b.get(b.len()));
        assert!(!b.get(u32::MAX));
    }
    true
}

/// Target `wire_response`: one response stream as `read_response` reads it (prefix,
/// header, payload, decode, validate, payload only on chunks), plus `decode_frame` on
/// the whole input. Accepted releases are verified and accepted chunk maps are used
/// against the payload. Returns whether the response was accepted.
pub fn wire_response(data: &[u8]) -> bool {
    // The single-buffer decoder must agree with the streaming read below when the input
    // is exactly one frame.
    let whole = bounded(
        decode_budget(data.len()),
        || "a Response frame".into(),
        || codec::decode_frame::<Response>(data),
    );
    let Some((prefix, rest)) = data.split_first_chunk::<PREFIX_LEN>() else {
        assert!(whole.is_err());
        return false;
    };
    let Ok((h, p)) = codec::parse_prefix(*prefix) else {
        assert!(whole.is_err());
        return false;
    };
    assert!(h <= codec::MAX_HEADER && p <= codec::MAX_PAYLOAD);
    let (Some(header), Some(payload)) = (rest.get(..h), rest.get(h..h + p)) else {
        assert!(whole.is_err());
        return false;
    };
    let streamed = decode::<Response>(header);
    if let Ok((resp, pl)) = &whole {
        assert_eq!(Some(resp), streamed.as_ref().ok());
        assert_eq!(*pl, payload);
    }
    let Ok(resp) = streamed else {
        return false;
    };
    round_trip(&resp, header.len());
    if resp.validate().is_err() {
        return false;
    }
    if !payload.is_empty() && !matches!(resp, Response::Chunk { .. }) {
        return false;
    }
    match &resp {
        Response::Releases(releases) => {
            let trusted = trusted();
            for r in releases {
                let _ = r.id();
                if let Ok(release) = r.verify(&trusted, NOW_UNIX_MS) {
                    check_release(&release);
                }
            }
        }
        Response::ChunkMap(m) => check_chunk_map(m, payload),
        _ => {}
    }
    true
}

/// Target `signed_release`. The first byte picks what the rest is:
/// - even: gossip message bytes, decoded as a `SignedRelease` and verified, as an agent
///   does with every gossip message (mutations mostly stop at the signature);
/// - odd: a release body. When it decodes as a `Release` (checked first, because the
///   signatures below dominate the cost of a run, and a body that does not decode can
///   never verify), the harness signs it with the trusted key and verifies the envelope,
///   so the seeder check, validation and expiry run behind a valid signature; the
///   outcome must agree with checking the body directly. A valid body naming the
///   trusted seeder must also sign with `SignedRelease::sign` and verify back to itself.
///
/// Returns whether a release was accepted.
pub fn signed_release(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let trusted = trusted();
    if mode % 2 == 0 {
        let Ok(signed) = decode::<SignedRelease>(rest) else {
            return false;
        };
        let _ = signed.id();
        return match signed.verify(&trusted, NOW_UNIX_MS) {
            Ok(release) => {
                check_release(&release);
                true
            }
            Err(_) => false,
        };
    }
    let Ok(release) = bounded(
        trusted_body_budget(rest.len()),
        || "a release body".into(),
        || codec::decode::<Release>(rest),
    ) else {
        return false;
    };
    round_trip(&release, rest.len());
    let key = seeder_key();
    let ours = release.seeder == key.public().to_peer_id().to_bytes();
    let valid = release.validate().is_ok();
    let expected = ours
        && valid
        && rest.len() <= blobswarm_core::MAX_RELEASE_BYTES
        && (release.expires_unix_ms == 0 || NOW_UNIX_MS <= release.expires_unix_ms);
    let msg = sign_body(rest, &key);
    let signed: SignedRelease =
        codec::decode(&msg).expect("an envelope the harness encoded decodes");
    let verified = signed.verify(&trusted, NOW_UNIX_MS);
    match &verified {
        Ok(back) => {
            assert!(
                expected,
                "verify accepted a release the direct checks refuse"
            );
            assert_eq!(back, &release);
            check_release(back);
        }
        Err(e) => assert!(
            !expected,
            "verify refused a release the direct checks accept: {e}"
        ),
    }
    if valid && ours {
        let signed = SignedRelease::sign(&release, &key).expect("a valid release signs");
        let back = signed
            .verify(&trusted, 0)
            .expect("a release signed by a trusted key verifies");
        assert_eq!(back, release);
    }
    verified.is_ok()
}

/// Target `chunk_map`: a frame whose header is an encoded chunk map (the body of a
/// `ChunkMap` response) and whose payload is offered as chunk 0 and as the last chunk,
/// the way an agent checks a received chunk with `ChunkMap::verify`. Returns whether the
/// map was accepted.
pub fn chunk_map(data: &[u8]) -> bool {
    let Ok((map, payload)) = bounded(
        decode_budget(data.len()),
        || "a ChunkMap frame".into(),
        || codec::decode_frame::<ChunkMap>(data),
    ) else {
        return false;
    };
    round_trip(&map, data.len() - PREFIX_LEN - payload.len());
    if map.validate().is_err() {
        return false;
    }
    check_chunk_map(&map, payload);
    true
}

/// Target `swarm_notice`: gossip message bytes on the swarm topic, decoded as a
/// `SwarmNotice` and validated, as the agent does with every such message. Returns
/// whether the notice was accepted.
pub fn swarm_notice(data: &[u8]) -> bool {
    let Ok(notice) = decode::<SwarmNotice>(data) else {
        return false;
    };
    round_trip(&notice, data.len());
    notice.validate().is_ok()
}

/// Target `progress_report`: gossip message bytes on the report topic, decoded with
/// `ProgressReport::decode` (size bound, decode, caps) as a seeder does with every report.
/// Returns whether the report was accepted.
pub fn progress_report(data: &[u8]) -> bool {
    let Ok(report) = bounded(
        decode_budget(data.len().min(MAX_REPORT_BYTES)),
        || format!("{} bytes as a ProgressReport", data.len()),
        || ProgressReport::decode(data),
    ) else {
        return false;
    };
    assert!(data.len() <= MAX_REPORT_BYTES);
    report
        .validate()
        .expect("a decoded report is within its caps");
    round_trip(&report, data.len());
    for r in &report.releases {
        let _ = r.state.name();
        if let ProgressState::Failed(reason) = &r.state {
            assert!(reason.len() <= blobswarm_core::wire::MAX_REASON);
        }
    }
    true
}

/// A decoded value re-encodes to at most the bytes it came from (the encoder is minimal)
/// and decodes back to itself.
fn round_trip<T>(value: &T, decoded_from: usize)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(value).expect("a decoded value re-encodes");
    assert!(
        bytes.len() <= decoded_from,
        "re-encoding grew from {decoded_from} to {} bytes",
        bytes.len()
    );
    let back: T = codec::decode(&bytes).expect("a re-encoded value decodes");
    assert_eq!(&back, value);
}

/// Invariants of a validated release.
fn check_release(r: &Release) {
    r.validate().expect("checked releases stay valid");
    let mut total: u64 = 0;
    for b in &r.blobs {
        assert_eq!(r.blob(&b.digest).map(|x| x.digest), Some(b.digest));
        chunk_count(b.size, b.chunk_size).expect("validated blobs have a chunk count");
        total = total.checked_add(b.size).expect("total size fits in u64");
    }
    assert_eq!(r.total_bytes(), total);
    for d in std::iter::once(&r.root).chain(&r.manifests) {
        assert_eq!(Digest::of(&d.bytes), d.digest);
    }
}

/// Invariants of a validated chunk map; `payload` is offered as chunk 0.
fn check_chunk_map(m: &ChunkMap, payload: &[u8]) {
    let count = chunk_count(m.size(), m.chunk_size()).expect("validated maps have a count");
    assert_eq!(m.count(), count);
    assert_eq!(m.digest(), Digest::of(&codec::encode(m).expect("encodes")));
    if count == 0 {
        assert_eq!(m.size(), 0);
        assert!(m.range(0).is_err());
        assert!(m.verify(0, payload).is_err());
        return;
    }
    let chunk = u64::from(m.chunk_size());
    let first = m.range(0).expect("chunk 0 exists");
    assert_eq!(first.start, 0);
    assert!(first.end <= chunk && first.end > 0);
    let last = m.range(count - 1).expect("last chunk exists");
    assert_eq!(last.end, m.size());
    assert!(last.start < last.end && last.end - last.start <= chunk);
    assert!(m.range(count).is_err());
    assert!(m.range(u32::MAX).is_err());
    for (index, range) in [(0, first), (count - 1, last)] {
        if m.verify(index, payload).is_ok() {
            assert_eq!(payload.len() as u64, range.end - range.start);
        }
    }
    assert!(m.verify(count, payload).is_err());
}

/// Fixed blobs and a release for [`node_haves`]: built once, since hashing and signing on
/// every input would cost most of the run.
struct HaveFixture {
    /// Registered by the seeder side with `add_local_blob` (4 chunks).
    local: ChunkMap,
    /// Listed by the release (4 chunks, short last one); its map arrives by `resume_blob`.
    listed: ChunkMap,
    /// The empty blob the release also lists (0 chunks).
    empty: ChunkMap,
    release: SignedRelease,
    peers: Vec<libp2p_identity::PeerId>,
}

fn have_fixture() -> &'static HaveFixture {
    static FIXTURE: std::sync::OnceLock<HaveFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let cs = blobswarm_core::MIN_CHUNK_SIZE;
        let local = blobswarm_core::chunk_map_of(&vec![1u8; 4 * cs as usize], cs).unwrap();
        let listed = blobswarm_core::chunk_map_of(&vec![2u8; 3 * cs as usize + 1], cs).unwrap();
        let empty = blobswarm_core::chunk_map_of(&[], cs).unwrap();
        let manifest = b"{}".to_vec();
        let body = Release {
            reference: "fuzz/image:1".into(),
            root: blobswarm_core::Document {
                digest: Digest::of(&manifest),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: manifest,
            },
            manifests: vec![],
            blobs: [&listed, &empty]
                .iter()
                .map(|m| blobswarm_core::release_blob(m, "application/octet-stream"))
                .collect(),
            seeder: seeder_key().public().to_peer_id().to_bytes(),
            sequence: 1,
            created_unix_ms: 0,
            expires_unix_ms: 0,
        };
        let release = SignedRelease::sign(&body, &seeder_key()).unwrap();
        let peers = (1u8..=4)
            .map(|i| {
                Keypair::ed25519_from_bytes([i; 32])
                    .unwrap()
                    .public()
                    .to_peer_id()
            })
            .collect();
        HaveFixture {
            local,
            listed,
            empty,
            release,
            peers,
        }
    })
}

/// `peer` tells `node` it has `update` of `blob`; what the node answers is not checked.
fn have_from(
    node: &mut blobswarm_core::node::Node<libp2p_identity::PeerId>,
    peer: &libp2p_identity::PeerId,
    blob: Digest,
    update: HaveUpdate,
    now: std::time::Instant,
) {
    let _ = node.handle_request(peer, Request::Have { blob, update }, now);
}

/// Target `node_haves` (issue #18, finding 1): a node fed neighbours' have-information
/// in any order with the moments its blobs become known: a local blob registered, a
/// release accepted, a chunk map installed. The input is a list of operations, each one
/// byte and its operands: connect/disconnect neighbour `k`; a request from `k` decoded
/// from the wire (2-byte length, then the header bytes, as `read_request` takes it); a
/// full bitfield or added indices for one of the fixed blobs or a made-up one. Checks:
/// no panic whatever the order and lengths. Always returns true.
pub fn node_haves(data: &[u8]) -> bool {
    let fx = have_fixture();
    let now = std::time::Instant::now();
    let config = blobswarm_core::node::Config::default();
    let mut node = blobswarm_core::node::Node::new(config, trusted()).expect("default config");
    let mut input = data;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = input.split_at_checked(n)?;
        input = rest;
        Some(head)
    };
    let blob_of = |sel: u8| match sel % 4 {
        0 => fx.local.blob(),
        1 => fx.listed.blob(),
        2 => fx.empty.blob(),
        _ => Digest::of(&[sel]),
    };
    while let Some(&[op, k]) = take(2) {
        let peer = &fx.peers[usize::from(k) % fx.peers.len()];
        match op % 8 {
            0 => node.handle_peer_connected(*peer, now),
            1 => node.handle_peer_disconnected(peer, now),
            2 => {
                let Some(len) = take(2) else { break };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let Some(bytes) = take(len) else { break };
                if let Ok(req) = decode::<Request>(bytes)
                    && req.validate().is_ok()
                {
                    let _ = node.handle_request(peer, req, now);
                }
            }
            3 => {
                let Some(&[sel, hi, lo, fill]) = take(4) else {
                    break;
                };
                let len = u32::from(u16::from_be_bytes([hi, lo]));
                let mut bits = blobswarm_core::Bitfield::new(len);
                (0..len)
                    .filter(|i| fill & (1 << (i % 8)) != 0)
                    .for_each(|i| {
                        bits.set(i);
                    });
                have_from(&mut node, peer, blob_of(sel), HaveUpdate::Full(bits), now);
            }
            4 => {
                let Some(&[sel, n]) = take(2) else { break };
                let Some(raw) = take(4 * usize::from(n % 8)) else {
                    break;
                };
                let indices = raw
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                have_from(
                    &mut node,
                    peer,
                    blob_of(sel),
                    HaveUpdate::Added(indices),
                    now,
                );
            }
            5 => node.add_local_blob(fx.local.clone(), "application/octet-stream", now),
            6 => {
                let _ = node.handle_release(fx.release.clone(), now, NOW_UNIX_MS);
            }
            _ => {
                let map = if k % 2 == 0 { &fx.listed } else { &fx.empty };
                node.resume_blob(map.clone(), blobswarm_core::Bitfield::new(map.count()), now);
            }
        }
        while node.poll_action().is_some() {}
    }
    true
}
