//! Writes seed corpora for every fuzz target from valid encodings, then runs each seed
//! through its harness and fails unless the valid ones are accepted (so a harness or an
//! encoding change that makes the fuzzers start from garbage is caught at once).
//!
//! `cargo run --example seeds -- [CORPUS_DIR]` (default `corpus`): writes
//! `CORPUS_DIR/<target>/seed-<name>`.

use std::path::{Path, PathBuf};

use blobswarm_core::codec;
use blobswarm_core::wire::{
    ErrorCode, HaveUpdate, MAX_CLAIM_INDICES, MAX_NODE_NAME, MAX_REASON, MAX_REPORT_RELEASES,
    PeerRecord, ProgressReport, ProgressState, ReleaseProgress, Request, Response, SwarmNotice,
};
use blobswarm_core::{
    Bitfield, ChunkMap, Digest, Document, MIN_CHUNK_SIZE, Release, SignedRelease, chunk_map_of,
    release_blob,
};
use blobswarm_fuzz::{NOW_UNIX_MS, seeder_key, sign_body};
use libp2p_identity::Keypair;

/// Seed files for one target: (name, bytes, whether the harness must accept it).
type Seeds = Vec<(String, Vec<u8>, bool)>;
/// A target's harness: returns whether it accepted the input.
type Harness = fn(&[u8]) -> bool;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let targets: [(&str, Seeds, Harness); 7] = [
        (
            "wire_request",
            request_seeds(),
            blobswarm_fuzz::wire_request,
        ),
        (
            "wire_response",
            response_seeds(),
            blobswarm_fuzz::wire_response,
        ),
        (
            "signed_release",
            release_seeds(),
            blobswarm_fuzz::signed_release,
        ),
        ("chunk_map", chunk_map_seeds(), blobswarm_fuzz::chunk_map),
        ("swarm_notice", notice_seeds(), blobswarm_fuzz::swarm_notice),
        (
            "progress_report",
            report_seeds(),
            blobswarm_fuzz::progress_report,
        ),
        ("node_haves", have_seeds(), blobswarm_fuzz::node_haves),
    ];
    for (target, seeds, harness) in targets {
        let n = seeds.len();
        for (name, bytes, valid) in seeds {
            let accepted = harness(&bytes);
            assert_eq!(
                accepted, valid,
                "{target}/{name}: harness accepted={accepted}, expected {valid}"
            );
            write(&dir.join(target), &format!("seed-{name}"), &bytes);
        }
        println!("{target}: {n} seeds in {}", dir.join(target).display());
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// Blob sizes around the chunk boundaries (T4 in the style notes), kept small.
fn maps() -> Vec<(String, Vec<u8>, ChunkMap)> {
    let c = MIN_CHUNK_SIZE as usize;
    [0, 1, 100, c - 1, c, c + 1, 3 * c + 5]
        .into_iter()
        .map(|n| {
            let blob: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let map = chunk_map_of(&blob, MIN_CHUNK_SIZE).expect("valid size");
            (format!("{n}"), blob, map)
        })
        .collect()
}

fn frame<T: serde::Serialize>(header: &T, payload: &[u8]) -> Vec<u8> {
    codec::encode_frame(header, payload).expect("seed encodes")
}

fn request_seeds() -> Seeds {
    let blob = Digest::of(b"blob");
    let mut reqs = vec![
        ("releases".to_owned(), Request::Releases),
        ("peers".to_owned(), Request::Peers),
        ("chunk-map".to_owned(), Request::ChunkMap { blob }),
        ("chunk".to_owned(), Request::Chunk { blob, index: 3 }),
        (
            "have-added".to_owned(),
            Request::Have {
                blob,
                update: HaveUpdate::Added(vec![0, 1, 2, 300, 70_000]),
            },
        ),
    ];
    for len in [0u32, 1, 7, 8, 9, 13, 1000] {
        let mut b = Bitfield::new(len);
        for i in (0..len).step_by(3) {
            b.set(i);
        }
        reqs.push((
            format!("have-full-{len}"),
            Request::Have {
                blob,
                update: HaveUpdate::Full(b),
            },
        ));
    }
    let mut seeds: Seeds = reqs
        .into_iter()
        .map(|(n, r)| (n, frame(&r, &[]), true))
        .collect();
    // A request with a payload is refused by the request prefix check.
    seeds.push((
        "with-payload".into(),
        frame(&Request::Releases, b"x"),
        false,
    ));
    seeds
}

fn response_seeds() -> Seeds {
    let key = seeder_key();
    let other = Keypair::ed25519_from_bytes([9u8; 32]).expect("key");
    let mut seeds: Seeds = vec![
        ("ack".into(), frame(&Response::Ack, &[]), true),
        (
            "error".into(),
            frame(&Response::Error(ErrorCode::Overloaded), &[]),
            true,
        ),
        (
            "chunk".into(),
            frame(
                &Response::Chunk {
                    blob: Digest::of(b"b"),
                    index: 0,
                },
                b"chunk bytes",
            ),
            true,
        ),
        (
            "peers".into(),
            frame(
                &Response::Peers(vec![PeerRecord {
                    peer: key.public().to_peer_id().to_bytes(),
                    addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1]],
                }]),
                &[],
            ),
            true,
        ),
        (
            "releases".into(),
            frame(
                &Response::Releases(vec![
                    signed(&sample_release(&key, 2, 0), &key),
                    signed(&sample_release(&other, 1, 0), &other),
                ]),
                &[],
            ),
            true,
        ),
        // Only chunk responses may carry a payload.
        (
            "ack-with-payload".into(),
            frame(&Response::Ack, b"x"),
            false,
        ),
        // Regression input for the allocation bound: 65,000 empty addresses (1 byte each
        // on the wire, 24 in memory), refused from the list's length prefix.
        (
            "peers-many-addrs".into(),
            frame(
                &Response::Peers(vec![PeerRecord {
                    peer: vec![],
                    addrs: vec![vec![]; 65_000],
                }]),
                &[],
            ),
            false,
        ),
    ];
    for (name, _, map) in maps() {
        seeds.push((
            format!("chunk-map-{name}"),
            frame(&Response::ChunkMap(map), &[]),
            true,
        ));
    }
    seeds
}

fn notice_seeds() -> Seeds {
    let enc = |n: &SwarmNotice| codec::encode(n).expect("seed encodes");
    let claim = |n: u32| SwarmNotice::Claim {
        blob: Digest::of(b"blob"),
        indices: (0..n).map(|i| i * 7).collect(),
    };
    vec![
        ("alive".into(), enc(&SwarmNotice::SeederAlive), true),
        ("claim-1".into(), enc(&claim(1)), true),
        (
            "claim-max".into(),
            enc(&claim(MAX_CLAIM_INDICES as u32)),
            true,
        ),
        // Over the cap: refused from the list's length prefix.
        (
            "claim-over".into(),
            enc(&claim(MAX_CLAIM_INDICES as u32 + 1)),
            false,
        ),
    ]
}

fn report_seeds() -> Seeds {
    let enc = |r: &ProgressReport| codec::encode(r).expect("seed encodes");
    let states = [
        ProgressState::Waiting,
        ProgressState::Downloading,
        ProgressState::Verifying,
        ProgressState::Importing,
        ProgressState::Done,
        ProgressState::Failed("x".repeat(MAX_REASON)),
    ];
    let report = |n: usize, name: &str| ProgressReport {
        node_name: name.into(),
        sent_ms: NOW_UNIX_MS,
        peers: 3,
        releases: (0..n)
            .map(|i| ReleaseProgress {
                release: Digest::of(&[i as u8]),
                state: states[i % states.len()].clone(),
                have_bytes: i as u64 * 1000,
                total_bytes: 100_000,
                rate: 4096,
            })
            .collect(),
        cert: None,
        bans: Vec::new(),
    };
    let mut enrolled = report(2, "node-1");
    enrolled.cert = Some(
        blobswarm_core::enroll::NodeCert::issue(
            &seeder_key(),
            &blobswarm_core::enroll::CertBody {
                node_name: "node-1".into(),
                peer: seeder_key().public().to_peer_id().to_bytes(),
                issued_unix_ms: NOW_UNIX_MS,
                expires_unix_ms: NOW_UNIX_MS + 1000,
            },
        )
        .expect("seed certificate signs"),
    );
    let mut long_name = enc(&report(1, "n"));
    // The name's length prefix (after nothing: it is the first field) claims 8 MB: a
    // decoder that allocates the claim before reading would hold 1,000x the message.
    long_name.splice(0..1, [0xFC, 0x00, 0x12, 0x7A, 0x00]);
    vec![
        ("empty".into(), enc(&report(0, "node-0")), true),
        ("one".into(), enc(&report(1, "node-1")), true),
        ("enrolled".into(), enc(&enrolled), true),
        (
            "max".into(),
            enc(&report(MAX_REPORT_RELEASES, &"n".repeat(MAX_NODE_NAME))),
            true,
        ),
        // Over the caps: refused (the release list while decoding).
        (
            "too-many".into(),
            enc(&report(MAX_REPORT_RELEASES + 1, "n")),
            false,
        ),
        (
            "long-name".into(),
            enc(&report(1, &"n".repeat(MAX_NODE_NAME + 1))),
            false,
        ),
        ("name-claim".into(), long_name, false),
    ]
}

fn chunk_map_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    for (name, blob, map) in maps() {
        let first = map
            .range(0)
            .map_or(0..0, |r| r.start as usize..r.end as usize);
        seeds.push((format!("{name}-chunk0"), frame(&map, &blob[first]), true));
        seeds.push((format!("{name}-nopayload"), frame(&map, &[]), true));
    }
    seeds
}

fn release_seeds() -> Seeds {
    let key = seeder_key();
    let other = Keypair::ed25519_from_bytes([9u8; 32]).expect("key");
    let with_mode = |mode: u8, bytes: Vec<u8>| {
        let mut v = vec![mode];
        v.extend(bytes);
        v
    };
    let bodies = [
        ("single", sample_release(&key, 1, 0)),
        ("index", sample_release(&key, 3, NOW_UNIX_MS + 1000)),
    ];
    let mut seeds = Seeds::new();
    for (name, r) in &bodies {
        let body = codec::encode(r).expect("encodes");
        let gossip = codec::encode(&signed(r, &key)).expect("encodes");
        assert_eq!(gossip, sign_body(&body, &key), "envelope layout drifted");
        seeds.push((format!("gossip-{name}"), with_mode(0, gossip), true));
        seeds.push((format!("body-{name}"), with_mode(1, body), true));
    }
    let untrusted = codec::encode(&signed(&sample_release(&other, 1, 0), &other)).expect("enc");
    seeds.push(("gossip-untrusted".into(), with_mode(0, untrusted), false));
    let expired = sample_release(&key, 1, NOW_UNIX_MS - 1);
    seeds.push((
        "gossip-expired".into(),
        with_mode(0, codec::encode(&signed(&expired, &key)).expect("enc")),
        false,
    ));
    seeds
}

fn signed(r: &Release, key: &Keypair) -> SignedRelease {
    SignedRelease::sign(r, key).expect("sample release signs")
}

/// A release with `manifests` child manifests (0 = a single-manifest image).
fn sample_release(key: &Keypair, manifests: usize, expires_unix_ms: u64) -> Release {
    let doc = |text: &str, media_type: &str| Document {
        digest: Digest::of(text.as_bytes()),
        media_type: media_type.into(),
        bytes: text.as_bytes().to_vec(),
    };
    let blobs = maps()
        .into_iter()
        .take(4)
        .skip(1)
        .map(|(_, _, m)| release_blob(&m, "application/vnd.oci.image.layer.v1.tar+gzip"))
        .collect();
    let (root, children) = if manifests <= 1 {
        (
            doc(
                r#"{"schemaVersion":2}"#,
                "application/vnd.oci.image.manifest.v1+json",
            ),
            vec![],
        )
    } else {
        (
            doc(
                r#"{"schemaVersion":2,"manifests":[]}"#,
                "application/vnd.oci.image.index.v1+json",
            ),
            (0..manifests)
                .map(|i| {
                    doc(
                        &format!(r#"{{"schemaVersion":2,"n":{i}}}"#),
                        "application/vnd.oci.image.manifest.v1+json",
                    )
                })
                .collect(),
        )
    };
    Release {
        reference: "registry.example/app:v1".into(),
        root,
        manifests: children,
        blobs,
        seeder: key.public().to_peer_id().to_bytes(),
        sequence: 42,
        created_unix_ms: NOW_UNIX_MS - 60_000,
        expires_unix_ms,
    }
}

/// Operation lists for `node_haves` (see its doc for the encoding): the attack from issue
/// #18 finding 1 (haves of a wrong length stored before the blob is known, then used once
/// its map arrives), in each of the three ways a blob becomes known.
fn have_seeds() -> Seeds {
    let (connect, full, added, local, release, resume) = (0u8, 3u8, 4u8, 5u8, 6u8, 7u8);
    let (sel_local, sel_listed, sel_empty) = (0u8, 1u8, 2u8);
    let wire_full = |len: u32| {
        let have = Request::Have {
            blob: blobswarm_fuzz_listed_digest(),
            update: HaveUpdate::Full(Bitfield::full(len)),
        };
        let bytes = codec::encode(&have).expect("seed encodes");
        let mut op = vec![2u8, 0];
        op.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
        op.extend_from_slice(&bytes);
        op
    };
    let local_first = [
        vec![connect, 0, full, 0, sel_local, 0x03, 0xe8, 0x00, local, 0],
        vec![added, 0, sel_local, 2, 0, 0, 3, 0xe7, 0, 0, 0, 3],
        vec![
            full, 0, sel_local, 0x03, 0xe8, 0xff, full, 0, sel_local, 0, 4, 0xff, 1, 0,
        ],
    ]
    .concat();
    let release_first = [
        vec![connect, 1],
        wire_full(77),
        vec![
            release, 1, resume, 0, added, 1, sel_listed, 1, 0, 0, 0, 76, 1, 1,
        ],
    ]
    .concat();
    let empty_blob = vec![
        connect, 2, full, 2, sel_empty, 0, 5, 0x00, release, 2, added, 2, sel_empty, 2, 0, 0, 0, 0,
        0, 0, 0, 4, full, 2, sel_empty, 0, 0, 0, resume, 1, 1, 2,
    ];
    vec![
        ("local-blob-after-long-haves".into(), local_first, true),
        ("release-after-long-haves".into(), release_first, true),
        ("empty-blob".into(), empty_blob, true),
    ]
}

/// The blob the `node_haves` fixture's release lists (3 chunks and 1 byte of 2s).
fn blobswarm_fuzz_listed_digest() -> Digest {
    let cs = MIN_CHUNK_SIZE as usize;
    Digest::of(&vec![2u8; 3 * cs + 1])
}
